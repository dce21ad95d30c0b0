//! Docker tier, end to end: the repository's `compose.yaml` brought up with images from
//! `integration/docker/build.sh`. Three es-standin containers serve documents from volumes attached
//! through the agents' fake-rexray plugins; one agent dies (the emulator's fault API) and its plugin and
//! sidecar are stopped; its node comes back on the spare agent of its zone with its documents; then
//! everything is torn down and nothing of the run is left: containers, networks, volumes, images,
//! plugin sockets.
//!
//! The images are built from the workspace's normal build output (`cargo build --workspace --bins`):
//! build.sh copies the libraries `ldd` lists next to a dynamic binary, so no second (static) build is
//! needed here; `TETHER_COMPOSE_BIN_DIR=target/x86_64-unknown-linux-gnu/release` runs it on the static
//! build instead. Uses `docker compose` (the CLI plugin) where installed, else `docker-compose`. Skips
//! loudly without a Docker engine or either compose; fails instead when
//! TETHER_REQUIRE_DOCKER=1.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::json;
use tether_integration::dev::es_access_for;
use tether_integration::docker_engine::{DEFAULT_SOCKET, DockerEngine};
use tether_integration::http_client;
use tether_integration::mesos_emu::docker_launcher::LABEL_INSTANCE;
use tether_integration::process::bin_dir;
use tether_integration::testing::cluster::SubnetLease;
use tether_integration::testing::docker::{TestResult as R, docker_required, engine_available};
use tether_integration::testing::es::{get_doc, put_doc, wait_es};
use tether_integration::testing::scheduler::{AuthedAdmin, admin_client_at};
use tether_proto::v1::{ListNodesRequest, Node};

const BINS: [&str; 5] = [
    "mesos-emu",
    "fake-rexray",
    "es-standin",
    "tether-sidecar",
    "tether-scheduler",
];

/// Bound on the cluster reaching a state: containers start in about a second each, but the scheduler
/// waits out its startup grace and Mesos timers first.
const DEADLINE: Duration = Duration::from_secs(120);

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// One compose project of this test run.
struct Compose {
    /// `["docker", "compose"]` or `["docker-compose"]`.
    program: Vec<&'static str>,
    project: String,
    env: Vec<(String, String)>,
    tag: String,
    instance: String,
    torn_down: bool,
}

impl Compose {
    fn command(&self, args: &[&str]) -> std::process::Command {
        let mut c = std::process::Command::new(self.program[0]);
        c.args(&self.program[1..])
            .current_dir(repo_root())
            .args(["-p", &self.project, "-f", "compose.yaml"])
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        c
    }

    async fn run(&self, args: &[&str]) -> Result<String, String> {
        let mut c = tokio::process::Command::from(self.command(args));
        let out = c
            .output()
            .await
            .map_err(|e| format!("{:?} {args:?}: {e}", self.program))?;
        if !out.status.success() {
            return Err(format!(
                "{:?} {args:?} failed: {}",
                self.program,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The last lines of the services' logs, for failure messages.
    fn logs(&self) -> String {
        self.command(&["logs", "--no-color", "--tail", "25"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }

    /// `down` (SIGTERM lets the emulator remove its task containers), then removes whatever is left by
    /// label, and the images of the run.
    fn teardown(&mut self) {
        if self.torn_down {
            return;
        }
        self.torn_down = true;
        let _ = self
            .command(&["down", "--volumes", "--remove-orphans", "--timeout", "20"])
            .output();
        for filter in [
            format!("label={LABEL_INSTANCE}={}", self.instance),
            format!("label=com.docker.compose.project={}", self.project),
        ] {
            if let Ok(o) = std::process::Command::new("docker")
                .args(["ps", "-aq", "--filter", &filter])
                .output()
            {
                for id in String::from_utf8_lossy(&o.stdout).split_whitespace() {
                    let _ = std::process::Command::new("docker")
                        .args(["rm", "-f", id])
                        .output();
                }
            }
        }
        for b in BINS {
            let _ = std::process::Command::new("docker")
                .args(["rmi", "-f", &format!("tether/{b}:{}", self.tag)])
                .output();
        }
    }
}

impl Drop for Compose {
    fn drop(&mut self) {
        self.teardown();
    }
}

/// The compose command installed here (the CLI plugin first); panics when Docker is required but there
/// is none.
async fn compose_program() -> Option<Vec<&'static str>> {
    for program in [vec!["docker", "compose"], vec!["docker-compose"]] {
        let ok = tokio::process::Command::new(program[0])
            .args(&program[1..])
            .arg("version")
            .output()
            .await
            .is_ok_and(|o| o.status.success());
        if ok {
            return Some(program);
        }
    }
    if docker_required() {
        panic!("TETHER_REQUIRE_DOCKER=1 but neither `docker compose` nor `docker-compose` runs");
    }
    eprintln!(
        "\n*** SKIPPING e2e_compose: neither `docker compose` nor `docker-compose` is installed ***\n"
    );
    None
}

async fn list_nodes(admin: &mut AuthedAdmin) -> Vec<Node> {
    admin
        .list_nodes(ListNodesRequest {})
        .await
        .map(|r| r.into_inner().nodes)
        .unwrap_or_default()
}

async fn wait_nodes(
    admin: &mut AuthedAdmin,
    compose: &Compose,
    what: &str,
    pred: impl Fn(&[Node]) -> bool,
) -> Vec<Node> {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let nodes = list_nodes(admin).await;
        if pred(&nodes) {
            return nodes;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!(
                "gave up after {DEADLINE:?} waiting for {what}; nodes: {nodes:#?}\nlogs:\n{}",
                compose.logs()
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Waits for the admin API to accept connections (the scheduler container is starting).
async fn connect_admin(addr: SocketAddr, token: &Path, compose: &Compose) -> AuthedAdmin {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        if tokio::time::Instant::now() >= deadline {
            panic!(
                "the scheduler never listened on {addr}\nlogs:\n{}",
                compose.logs()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let ca = token.with_file_name("tls").join("ca.crt");
    admin_client_at(&format!("https://{addr}"), Some(&ca), token).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compose_cluster_relaunches_a_dead_agents_node_with_its_documents() -> R {
    if !engine_available("e2e_compose").await {
        return Ok(());
    }
    let Some(program) = compose_program().await else {
        return Ok(());
    };
    let bins = std::env::var_os("TETHER_COMPOSE_BIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(bin_dir);
    for b in BINS {
        let p = bins.join(b);
        assert!(
            p.exists(),
            "{} is missing: run `cargo build --workspace --bins` first",
            p.display()
        );
    }
    let subnet = SubnetLease::acquire();
    let tag = uuid::Uuid::new_v4().simple().to_string()[..12].to_string();
    let tmp = tempfile::tempdir()?;
    let state = tmp.path().join("state");
    let instance = format!("tether-e2e-{tag}");
    let mut compose = Compose {
        program,
        project: format!("tethere2e{tag}"),
        env: vec![
            ("TETHER_TAG".into(), tag.clone()),
            ("TETHER_COMPOSE_DIR".into(), state.display().to_string()),
            ("TETHER_COMPOSE_SUBNET".into(), subnet.prefix.clone()),
            ("TETHER_COMPOSE_INSTANCE".into(), instance.clone()),
            // The lease's own block, as E2eCluster uses it: nodes bind 0.0.0.0.
            (
                "TETHER_COMPOSE_PORTS_BASE".into(),
                subnet.ports_base().to_string(),
            ),
        ],
        tag: tag.clone(),
        instance: instance.clone(),
        torn_down: false,
    };

    // The documented build step, from the normal build output.
    let out = tokio::process::Command::new(repo_root().join("integration/docker/build.sh"))
        .args(["--bin-dir", &bins.display().to_string(), "--tag", &tag])
        .envs(compose.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .output()
        .await?;
    assert!(
        out.status.success(),
        "build.sh failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    compose.run(&["up", "-d"]).await?;
    let admin_addr: SocketAddr = format!("{}.2:7070", subnet.prefix).parse()?;
    let mut admin = connect_admin(admin_addr, &state.join("admin.token"), &compose).await;
    let nodes = wait_nodes(&mut admin, &compose, "three running nodes", |ns| {
        ns.len() == 3 && ns.iter().all(|n| n.state == "RUNNING")
    })
    .await;
    // compose.yaml runs security `auto`: `full` with the stand-in's 8.x default.
    let security = admin
        .get_cluster(tether_proto::v1::GetClusterRequest {})
        .await?
        .into_inner()
        .security;
    assert_eq!(security, "full", "compose runs secure by default");
    let es = es_access_for(&security, &state.join("scheduler"))?;
    let engine = DockerEngine::new(DEFAULT_SOCKET);
    let tasks = engine
        .containers_labelled(LABEL_INSTANCE, &instance)
        .await?;
    assert_eq!(
        tasks.len(),
        3,
        "one es-standin container per node: {tasks:?}"
    );
    for n in &nodes {
        let root = wait_es(&es, n).await;
        assert_eq!(root["data_created_by_node_id"], n.id.to_string(), "{root}");
        put_doc(
            &es,
            n,
            &format!("doc-{}", n.id),
            json!({ "written_to": n.id }),
        )
        .await;
    }

    // Agents .11-.14 alternate zone-a, zone-b; the victim is the node whose zone has the spare agent.
    let zone_of = |host: &str| {
        let last: u32 = host
            .rsplit('.')
            .next()
            .and_then(|o| o.parse().ok())
            .unwrap_or(0);
        if last % 2 == 1 { "zone-a" } else { "zone-b" }
    };
    let used: Vec<&str> = nodes.iter().map(|n| n.host.as_str()).collect();
    let spare = (11..=14)
        .map(|o| format!("{}.{o}", subnet.prefix))
        .find(|h| !used.contains(&h.as_str()))
        .ok_or("no spare agent")?;
    let victim = nodes
        .iter()
        .find(|n| zone_of(&n.host) == zone_of(&spare))
        .ok_or("no node in the spare agent's zone")?
        .clone();
    let index = victim
        .host
        .rsplit('.')
        .next()
        .unwrap_or("11")
        .parse::<u32>()?
        - 11;

    let url = format!(
        "http://{}.2:5050/emu/agents/{}/kill",
        subnet.prefix, victim.agent_id
    );
    let (status, body) = http_client::post_json(&url, None).await?;
    assert!((200..300).contains(&status), "{url}: {status} {body}");
    compose
        .run(&[
            "stop",
            &format!("sidecar-{index}"),
            &format!("rexray-{index}"),
        ])
        .await?;

    let after = wait_nodes(
        &mut admin,
        &compose,
        "the victim's node running on the spare agent",
        |ns| {
            ns.iter()
                .any(|n| n.id == victim.id && n.state == "RUNNING" && n.host == spare)
        },
    )
    .await;
    let moved = after
        .iter()
        .find(|n| n.id == victim.id)
        .ok_or("victim vanished")?;
    assert_ne!(moved.task_id, victim.task_id, "a new task, same node id");
    assert_eq!(moved.volumes, victim.volumes, "same volumes");
    let root = wait_es(&es, moved).await;
    assert_eq!(
        root["data_created_by_node_id"],
        victim.id.to_string(),
        "{root}"
    );
    assert_eq!(
        get_doc(&es, moved, &format!("doc-{}", victim.id)).await,
        Some(json!({ "written_to": victim.id })),
        "the documents followed the node"
    );
    for n in after.iter().filter(|n| n.id != victim.id) {
        assert_eq!(
            get_doc(&es, n, &format!("doc-{}", n.id)).await,
            Some(json!({ "written_to": n.id }))
        );
    }
    let by_agent: BTreeMap<String, String> = engine
        .containers_labelled(LABEL_INSTANCE, &instance)
        .await?
        .into_iter()
        .map(|c| (c.id, c.state))
        .collect();
    assert_eq!(
        by_agent.len(),
        3,
        "the dead agent's container is gone: {by_agent:?}"
    );

    // Teardown: `down` must remove everything without the label sweep's help.
    compose
        .run(&["down", "--volumes", "--remove-orphans", "--timeout", "20"])
        .await?;
    assert_eq!(
        engine
            .containers_labelled(LABEL_INSTANCE, &instance)
            .await?,
        vec![],
        "task containers left"
    );
    assert_eq!(
        engine
            .containers_labelled("com.docker.compose.project", &compose.project)
            .await?,
        vec![],
        "service containers left"
    );
    for (what, args) in [
        ("networks", vec!["network", "ls", "-q", "--filter"]),
        ("volumes", vec!["volume", "ls", "-q", "--filter"]),
    ] {
        let filter = format!("label=com.docker.compose.project={}", compose.project);
        let mut args = args;
        args.push(&filter);
        let out = tether_integration::testing::docker::docker_ok(&args).await?;
        assert!(out.trim().is_empty(), "{what} left: {out}");
    }
    compose.teardown();
    let plugins = state.join("plugins");
    let sockets: Vec<_> = walk(&plugins)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "sock"))
        .collect();
    assert!(sockets.is_empty(), "plugin sockets left: {sockets:?}");
    Ok(())
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}
