//! The `tether.v1.Admin` API and tetherctl against a running tether-scheduler (in-process) and the Mesos
//! emulator: every RPC, authentication, validation, health and reflection, and every tetherctl subcommand
//! through the real binary with its documented JSON field names.

use std::path::PathBuf;
use std::time::Duration;

use tether_integration::mesos_emu::{EmuConfig, EmuHandle, MesosEmu};
use tether_integration::process::{bin_path, free_port};
use tether_integration::testing::DEADLINE;
use tether_integration::testing::scheduler::{Scheduler, all_running, wait_nodes};
use tether_proto::v1::admin_client::AdminClient;
use tether_proto::v1::{
    GetClusterRequest, ListAgentsRequest, ListNodesRequest, ListVolumesRequest, Node,
    ReplaceNodeRequest, ScaleRequest, WatchEventsRequest,
};
use tokio::io::AsyncBufReadExt;
use tonic::Code;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

const TOKEN: &str = "admin-s3cret";

type Client = AdminClient<InterceptedService<Channel, tetherctl::Auth>>;

/// An emulator, a scheduler with an admin token, and the token file.
struct Setup {
    emu: EmuHandle,
    state: tempfile::TempDir,
    token_file: PathBuf,
    sched: Scheduler,
}

impl Setup {
    async fn start(agents: usize, nodes: u64, extra: &[&str]) -> Setup {
        let emu = MesosEmu::start(EmuConfig::fast(agents))
            .await
            .expect("emulator");
        let state = tempfile::tempdir().expect("tempdir");
        let token_file = state.path().join("admin-token");
        std::fs::write(&token_file, format!("{TOKEN}\n")).expect("token file");
        Setup::with_scheduler(emu, state, token_file, nodes, extra).await
    }

    /// Stops the scheduler and starts another on the same state directory with `--nodes nodes`.
    async fn restart(self, nodes: u64) -> Setup {
        let Setup {
            emu,
            state,
            token_file,
            sched,
        } = self;
        sched.stop().await;
        Setup::with_scheduler(emu, state, token_file, nodes, &[]).await
    }

    /// Starts a scheduler on `state` and waits until its listener answers (the plain client of the test
    /// helpers needs no token to connect).
    async fn with_scheduler(
        emu: EmuHandle,
        state: tempfile::TempDir,
        token_file: PathBuf,
        nodes: u64,
        extra: &[&str],
    ) -> Setup {
        let token = token_file.display().to_string();
        let nodes = nodes.to_string();
        let mut flags = vec!["--admin-token-file", &token, "--nodes", &nodes];
        flags.extend_from_slice(extra);
        let sched = Scheduler::start(&emu.url(), state.path(), &flags);
        let mut setup = Setup {
            emu,
            state,
            token_file,
            sched,
        };
        setup.sched.admin().await;
        setup
    }

    fn url(&self) -> String {
        format!("http://{}", self.sched.listen)
    }

    /// A client sending `token` (`None`: no authorization header).
    async fn client(&self, token: Option<&str>) -> Client {
        let channel = Endpoint::from_shared(self.url())
            .expect("url")
            .connect()
            .await
            .expect("admin API reachable");
        let value = token.map(|t| tether_proto::client::bearer(t).expect("ascii"));
        AdminClient::with_interceptor(channel, tetherctl::Auth::new(value))
    }

    async fn desired(&self) -> u64 {
        self.client(Some(TOKEN))
            .await
            .get_cluster(GetClusterRequest {})
            .await
            .expect("get cluster")
            .into_inner()
            .desired
    }

    /// Runs tetherctl against this scheduler with the token file and `args`.
    async fn ctl(&self, args: &[&str]) -> CtlOutput {
        let mut all = self.ctl_connection();
        all.extend(args.iter().map(|s| s.to_string()));
        tetherctl(&all).await
    }

    /// `tetherctl --output json <cmd>`: an array of `len` objects, each with every one of `fields`.
    async fn ctl_array(&self, cmd: &str, len: usize, fields: &[&str]) -> Vec<serde_json::Value> {
        let out = self.ctl(&["--output", "json", cmd]).await.json();
        let items = out.as_array().expect("array");
        assert_eq!(items.len(), len, "{out}");
        for item in items {
            has_fields(item, fields);
        }
        items.clone()
    }

    /// tetherctl's flags naming this scheduler and the token file.
    fn ctl_connection(&self) -> Vec<String> {
        vec![
            "--scheduler".to_owned(),
            self.url(),
            "--token-file".to_owned(),
            self.token_file.display().to_string(),
        ]
    }
}

fn scale_to(nodes: i64) -> ScaleRequest {
    ScaleRequest {
        nodes,
        ..Default::default()
    }
}

fn replace(node_id: u64, force: bool) -> ReplaceNodeRequest {
    ReplaceNodeRequest {
        node_id,
        force,
        ..Default::default()
    }
}

/// Asserts that `c` may neither scale nor replace a node.
async fn assert_writes_unauthenticated(c: &mut Client) {
    let e = c.scale(scale_to(7)).await.expect_err("write");
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    let e = c.replace_node(replace(1, true)).await.expect_err("write");
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
}

async fn list_nodes(admin: &mut Client) -> Vec<Node> {
    admin
        .list_nodes(ListNodesRequest {})
        .await
        .expect("nodes")
        .into_inner()
        .nodes
}

#[derive(Debug)]
struct CtlOutput {
    ok: bool,
    stdout: String,
    stderr: String,
}

impl CtlOutput {
    fn json(&self) -> serde_json::Value {
        assert!(self.ok, "tetherctl failed: {}", self.stderr);
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.stdout))
    }
}

/// Runs the real tetherctl binary with a clean environment.
async fn tetherctl(args: &[String]) -> CtlOutput {
    let bin = bin_path("tetherctl").unwrap_or_else(|e| panic!("{e}"));
    let out = tokio::process::Command::new(bin)
        .args(args)
        .env_clear()
        .output()
        .await
        .expect("tetherctl runs");
    CtlOutput {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Asserts `obj` has every documented field.
fn has_fields(obj: &serde_json::Value, fields: &[&str]) {
    let map = obj
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {obj}"));
    for f in fields {
        assert!(map.contains_key(*f), "field {f:?} missing in {obj}");
    }
}

fn live(n: &Node) -> bool {
    !matches!(n.state.as_str(), "PENDING" | "STOPPED")
        && !n.state.is_empty()
        && ![
            "FINISHED", "FAILED", "KILLED", "LOST", "ERROR", "DROPPED", "GONE",
        ]
        .contains(&n.state.as_str())
}

fn live_emu_tasks(emu: &EmuHandle) -> usize {
    emu.tasks()
        .iter()
        .filter(|t| !t.state.is_terminal())
        .count()
}

/// Waits until `n` agents are listed (an agent is known once it has offered).
async fn wait_agents(admin: &mut Client, n: usize) -> Vec<tether_proto::v1::Agent> {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let agents = admin
            .list_agents(ListAgentsRequest {})
            .await
            .expect("agents")
            .into_inner()
            .agents;
        if agents.len() == n {
            return agents;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "gave up waiting for {n} agents: {agents:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn wait_for(what: &str, mut cond: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !cond().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "gave up waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_answer_from_the_cluster_and_health_and_reflection_serve() {
    let s = Setup::start(3, 2, &[]).await;
    let mut admin = s.client(Some(TOKEN)).await;
    let nodes = wait_nodes(&mut admin, "two running nodes", all_running(2)).await;
    assert_eq!(nodes.iter().map(|n| n.id).collect::<Vec<_>>(), [1, 2]);
    assert!(
        nodes
            .iter()
            .all(|n| !n.task_id.is_empty() && !n.host.is_empty())
    );

    let c = admin
        .get_cluster(GetClusterRequest {})
        .await
        .expect("cluster")
        .into_inner();
    assert_eq!(c.desired, 2);
    assert_eq!(c.running, 2);
    assert!(!c.framework_id.is_empty(), "{c:?}");
    assert_eq!(c.framework_name, "elasticsearch");
    assert_eq!(c.strategy, "normal");
    assert!(c.leader);
    assert!(c.subscribed_since_unix_ms > 0, "{c:?}");

    let agents = wait_agents(&mut admin, 3).await;
    let mut ids: Vec<String> = agents.iter().map(|a| a.agent_id.clone()).collect();
    ids.sort();
    let mut emu_ids = s.emu.agent_ids();
    emu_ids.sort();
    assert_eq!(ids, emu_ids, "every offering agent is listed: {agents:#?}");

    let volumes = admin
        .list_volumes(ListVolumesRequest {})
        .await
        .expect("volumes")
        .into_inner()
        .volumes;
    let mut got: Vec<(u64, String)> = volumes
        .iter()
        .map(|v| (v.node_id, v.name.clone()))
        .collect();
    got.sort();
    let want: Vec<(u64, String)> = [1u64, 2]
        .iter()
        .flat_map(|id| ["config", "data"].map(|suffix| (*id, format!("elasticsearch{id}{suffix}"))))
        .collect();
    assert_eq!(got, want);

    // Health: the whole server and the admin service are SERVING.
    let channel = Endpoint::from_shared(s.url())
        .expect("url")
        .connect()
        .await
        .expect("connect");
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    for service in ["", "tether.v1.Admin"] {
        let status = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: service.to_owned(),
            })
            .await
            .unwrap_or_else(|e| panic!("health of {service:?}: {e}"))
            .into_inner()
            .status();
        assert_eq!(
            status,
            tonic_health::pb::health_check_response::ServingStatus::Serving,
            "{service:?}"
        );
    }

    // Reflection lists the services (what grpcurl relies on).
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    let mut reflection = ServerReflectionClient::new(channel);
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = reflection
        .server_reflection_info(tokio_stream::iter([req]))
        .await
        .expect("reflection")
        .into_inner();
    let answer = answers
        .message()
        .await
        .expect("reflection answer")
        .expect("one answer");
    let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response else {
        panic!("unexpected reflection answer: {answer:?}");
    };
    let names: Vec<&str> = list.service.iter().map(|s| s.name.as_str()).collect();
    assert!(names.contains(&"tether.v1.Admin"), "{names:?}");
    assert!(names.contains(&"tether.v1.AgentChannel"), "{names:?}");
    s.sched.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_is_durable_stops_the_highest_ids_and_is_watched() {
    let s = Setup::start(3, 2, &[]).await;
    let mut admin = s.client(Some(TOKEN)).await;
    wait_nodes(&mut admin, "two running nodes", all_running(2)).await;
    let mut events = admin
        .watch_events(WatchEventsRequest {})
        .await
        .expect("watch")
        .into_inner();

    let up = admin
        .scale(scale_to(3))
        .await
        .expect("scale up")
        .into_inner();
    assert_eq!((up.previous, up.desired), (2, 3));
    assert_eq!(up.start, [3]);
    assert!(up.stop.is_empty());
    // The watcher hears of it (events before the scale may come first).
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let event = tokio::time::timeout_at(deadline, events.message())
            .await
            .expect("a scale event before the deadline")
            .expect("stream healthy")
            .expect("stream open");
        assert!(event.at_unix_ms > 0);
        if event.kind == "scale" {
            assert!(event.message.contains("2 -> 3"), "{event:?}");
            break;
        }
    }
    wait_nodes(&mut admin, "three running nodes", all_running(3)).await;

    let down = admin
        .scale(scale_to(1))
        .await
        .expect("scale down")
        .into_inner();
    assert_eq!((down.previous, down.desired), (3, 1));
    let mut stop = down.stop.clone();
    stop.sort();
    assert_eq!(stop, [2, 3], "the highest ids stop");
    assert!(down.start.is_empty());
    let nodes = wait_nodes(&mut admin, "only node 1 live", |ns| {
        ns.iter()
            .filter(|n| live(n))
            .map(|n| n.id)
            .collect::<Vec<_>>()
            == [1]
            && ns.iter().any(|n| n.id == 1 && n.state == "RUNNING")
    })
    .await;
    assert!(nodes.iter().all(|n| n.id != 1 || n.state == "RUNNING"));
    wait_for("one live task in the emulator", async || {
        live_emu_tasks(&s.emu) == 1
    })
    .await;

    // Restart on the same state directory with a different --nodes: the persisted desired count holds.
    let s = s.restart(5).await;
    assert_eq!(s.desired().await, 1);
    let mut admin = s.client(Some(TOKEN)).await;
    wait_nodes(&mut admin, "node 1 running after restart", |ns| {
        ns.iter().any(|n| n.id == 1 && n.state == "RUNNING")
            && ns.iter().filter(|n| live(n)).count() == 1
    })
    .await;
    assert_eq!(live_emu_tasks(&s.emu), 1);
    s.sched.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replace_is_refused_while_the_task_may_be_alive_unless_forced() {
    let s = Setup::start(2, 1, &[]).await;
    let mut admin = s.client(Some(TOKEN)).await;
    let nodes = wait_nodes(&mut admin, "node 1 running", all_running(1)).await;
    let old = nodes[0].clone();

    assert!(
        s.emu.partition_agent(&old.agent_id),
        "partition {}",
        old.agent_id
    );
    wait_nodes(&mut admin, "node 1 unreachable", |ns| {
        ns.iter().any(|n| n.id == 1 && n.state == "UNREACHABLE")
    })
    .await;

    let refused = admin
        .replace_node(replace(1, false))
        .await
        .expect_err("refused without force");
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert!(
        refused.message().contains("may still be alive"),
        "{refused:?}"
    );
    let nodes = list_nodes(&mut admin).await;
    assert_eq!(nodes[0].task_id, old.task_id, "nothing changed");

    let unknown = admin
        .replace_node(replace(99, true))
        .await
        .expect_err("unknown node");
    assert_eq!(unknown.code(), Code::InvalidArgument, "{unknown:?}");
    assert!(unknown.message().contains("99"), "{unknown:?}");

    let forced = admin
        .replace_node(replace(1, true))
        .await
        .expect("forced replacement")
        .into_inner();
    assert_eq!(forced.node_id, 1);
    assert_eq!(forced.old_task_id, old.task_id);
    assert!(!forced.message.is_empty());
    let nodes = wait_nodes(&mut admin, "node 1 running elsewhere", |ns| {
        ns.iter()
            .any(|n| n.id == 1 && n.state == "RUNNING" && n.task_id != old.task_id)
    })
    .await;
    assert_ne!(
        nodes[0].agent_id, old.agent_id,
        "relaunched on the other agent"
    );
    s.sched.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_without_the_token_are_refused_and_change_nothing() {
    let s = Setup::start(1, 1, &["--max-nodes", "50"]).await;
    for token in [None, Some("wrong")] {
        let mut c = s.client(token).await;
        let e = c.get_cluster(GetClusterRequest {}).await.expect_err("read");
        assert_eq!(e.code(), Code::Unauthenticated, "{token:?}: {e:?}");
        let e = c.list_nodes(ListNodesRequest {}).await.expect_err("read");
        assert_eq!(e.code(), Code::Unauthenticated);
        let e = c
            .watch_events(WatchEventsRequest {})
            .await
            .expect_err("watch");
        assert_eq!(e.code(), Code::Unauthenticated);
        assert_writes_unauthenticated(&mut c).await;
    }
    assert_eq!(s.desired().await, 1, "the refused scale changed nothing");

    // Malformed requests: INVALID_ARGUMENT saying what is wrong, nothing changes.
    let mut admin = s.client(Some(TOKEN)).await;
    let e = admin.scale(scale_to(-1)).await.expect_err("negative");
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("zero or more"), "{e:?}");
    let e = admin.scale(scale_to(51)).await.expect_err("absurd");
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(
        e.message().contains("--max-nodes") && e.message().contains("50"),
        "{e:?}"
    );
    let e = admin
        .replace_node(replace(0, false))
        .await
        .expect_err("unknown node");
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("not part of the cluster"), "{e:?}");
    assert_eq!(s.desired().await, 1);
    s.sched.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_reads_let_anonymous_reads_through_but_not_writes() {
    let s = Setup::start(1, 1, &["--admin-open-reads"]).await;
    let mut anon = s.client(None).await;
    let c = anon
        .get_cluster(GetClusterRequest {})
        .await
        .expect("open read")
        .into_inner();
    assert_eq!(c.desired, 1);
    anon.list_nodes(ListNodesRequest {})
        .await
        .expect("open read");
    anon.list_agents(ListAgentsRequest {})
        .await
        .expect("open read");
    anon.list_volumes(ListVolumesRequest {})
        .await
        .expect("open read");
    anon.watch_events(WatchEventsRequest {})
        .await
        .expect("open watch");
    assert_writes_unauthenticated(&mut anon).await;
    // A wrong token is no better than none for a write.
    let e = s
        .client(Some("wrong"))
        .await
        .scale(scale_to(2))
        .await
        .expect_err("write");
    assert_eq!(e.code(), Code::Unauthenticated);
    assert_eq!(s.desired().await, 1);
    s.sched.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tetherctl_commands_print_the_documented_json() {
    let s = Setup::start(3, 2, &[]).await;
    let mut admin = s.client(Some(TOKEN)).await;
    wait_nodes(&mut admin, "two running nodes", all_running(2)).await;

    let status = s.ctl(&["--output", "json", "status"]).await.json();
    has_fields(
        &status,
        &[
            "framework_id",
            "framework_name",
            "master",
            "subscribed_since_unix_ms",
            "desired",
            "running",
            "strategy",
            "driver",
            "leader",
            "leader_address",
        ],
    );
    assert_eq!(status["desired"], 2);
    assert_eq!(status["running"], 2);

    let nodes = s
        .ctl_array(
            "nodes",
            2,
            &[
                "id",
                "state",
                "agent",
                "agent_id",
                "task_id",
                "http_port",
                "transport_port",
                "volumes",
                "reason",
                "since_unix_ms",
            ],
        )
        .await;
    for n in &nodes {
        assert_eq!(n["state"], "RUNNING");
        assert!(n["task_id"].is_string() && n["agent"].is_string(), "{n}");
    }

    wait_agents(&mut admin, 3).await;
    s.ctl_array(
        "agents",
        3,
        &[
            "host",
            "agent_id",
            "sidecar_connected",
            "last_report_age_ms",
            "driver_healthy",
            "driver_latency_micros",
            "driver_error",
            "zone",
            "attachments_used",
            "attachments_max",
            "volumes_seen",
            "last_decline_reason",
            "observes",
        ],
    )
    .await;

    s.ctl_array(
        "volumes",
        4,
        &[
            "name",
            "node_id",
            "exists",
            "size_bytes",
            "free_bytes",
            "zone",
            "attached_to",
            "last_error",
        ],
    )
    .await;

    // The table renderings work too (people read them; only success and non-emptiness are checked).
    for cmd in ["status", "nodes", "agents", "volumes"] {
        let out = s.ctl(&[cmd]).await;
        assert!(out.ok && !out.stdout.trim().is_empty(), "{cmd}: {out:?}");
    }

    // watch: the first event line after a change, as JSON.
    let bin = bin_path("tetherctl").unwrap_or_else(|e| panic!("{e}"));
    let mut watch = tokio::process::Command::new(bin)
        .args(s.ctl_connection())
        .args(["--output", "json", "watch"])
        .env_clear()
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("watch runs");
    let mut lines = tokio::io::BufReader::new(watch.stdout.take().expect("stdout")).lines();
    // The watcher subscribes asynchronously: keep making changes until it prints one.
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let mut desired = 2;
    let line = loop {
        desired = if desired == 2 { 3 } else { 2 };
        let out = s
            .ctl(&["--output", "json", "scale", &desired.to_string()])
            .await;
        assert!(out.ok, "{out:?}");
        if let Ok(line) = tokio::time::timeout(Duration::from_secs(1), lines.next_line()).await {
            break line.expect("read").expect("a line before watch exits");
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "watch printed nothing"
        );
    };
    watch.kill().await.expect("kill watch");
    let event: serde_json::Value = serde_json::from_str(&line).expect("JSON event line");
    has_fields(
        &event,
        &[
            "at_unix_ms",
            "kind",
            "node_id",
            "host",
            "task_id",
            "message",
        ],
    );

    // scale: settle at 3 and check the plan's fields.
    let plan = s.ctl(&["--output", "json", "scale", "3"]).await.json();
    has_fields(&plan, &["previous", "desired", "start", "stop"]);
    assert_eq!(plan["desired"], 3);
    wait_nodes(&mut admin, "three running nodes", all_running(3)).await;
    let plan = s.ctl(&["--output", "json", "scale", "2"]).await.json();
    assert_eq!(plan["previous"], 3);
    assert_eq!(plan["stop"], serde_json::json!([3]));
    assert_eq!(s.desired().await, 2);

    // replace --force.
    let before = list_nodes(&mut admin).await;
    let node1 = before.iter().find(|n| n.id == 1).expect("node 1");
    let replaced = s
        .ctl(&["--output", "json", "replace", "1", "--force"])
        .await
        .json();
    has_fields(&replaced, &["node_id", "old_task_id", "message"]);
    assert_eq!(replaced["node_id"], 1);
    assert_eq!(replaced["old_task_id"], node1.task_id.as_str());
    let old_task = node1.task_id.clone();
    wait_nodes(&mut admin, "node 1 running with a new task", |ns| {
        ns.iter()
            .any(|n| n.id == 1 && n.state == "RUNNING" && n.task_id != old_task)
    })
    .await;

    // Refusals: a bad scale is one line on stderr and a non-zero exit.
    let out = s.ctl(&["scale", "-3"]).await;
    assert!(!out.ok);
    assert_eq!(out.stderr.trim().lines().count(), 1, "{out:?}");
    assert!(out.stderr.contains("zero or more"), "{out:?}");

    // A wrong token: non-zero exit, one line, and nothing changed.
    let wrong = s.state.path().join("wrong-token");
    std::fs::write(&wrong, "nope").expect("write");
    let out = tetherctl(&[
        "--scheduler".into(),
        s.url(),
        "--token-file".into(),
        wrong.display().to_string(),
        "scale".into(),
        "9".into(),
    ])
    .await;
    assert!(!out.ok);
    assert_eq!(out.stderr.trim().lines().count(), 1, "{out:?}");
    assert!(out.stderr.contains("Unauthenticated"), "{out:?}");
    assert_eq!(s.desired().await, 2);

    // An unreachable scheduler: non-zero exit with one line naming it.
    let nowhere = format!("http://127.0.0.1:{}", free_port());
    let out = tetherctl(&[
        "--scheduler".into(),
        nowhere.clone(),
        "--timeout".into(),
        "2s".into(),
        "status".into(),
    ])
    .await;
    assert!(!out.ok);
    assert_eq!(out.stderr.trim().lines().count(), 1, "{out:?}");
    assert!(out.stderr.contains(&nowhere), "{out:?}");
    s.sched.stop().await;
}

/// `update`, `restart` and `rollout status|pause|resume|abort|rollback` through the real tetherctl, with
/// the documented JSON names. The emulator runs no Elasticsearch, so a rollout stops at its first gate
/// ("no recent answer from Elasticsearch"): what is checked here is the stored configuration, the
/// controls and their refusals, not the restarts (the core's unit tests and the end-to-end tests do those).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tetherctl_update_restart_and_rollout_print_the_documented_json() {
    let s = Setup::start(2, 2, &[]).await;
    let mut admin = s.client(Some(TOKEN)).await;
    wait_nodes(&mut admin, "two running nodes", all_running(2)).await;
    let rollout_fields = [
        "config_generation",
        "state",
        "done",
        "current",
        "pending",
        "reason",
    ];

    let idle = s
        .ctl(&["--output", "json", "rollout", "status"])
        .await
        .json();
    has_fields(&idle, &rollout_fields);
    assert_eq!(idle["state"], "idle");
    assert_eq!(idle["config_generation"], 1);
    assert_eq!(idle["current"], serde_json::Value::Null);
    let nodes = s.ctl(&["--output", "json", "nodes"]).await.json();
    for n in nodes.as_array().expect("array") {
        assert_eq!(n["config_generation"], 1, "{n}");
    }

    // Versions never go down, and a tag without a version needs the flag; neither stores anything.
    let down = s
        .ctl(&[
            "update",
            "--image",
            "docker.elastic.co/elasticsearch/elasticsearch:8.1.0",
        ])
        .await;
    assert!(!down.ok && down.stderr.contains("older than"), "{down:?}");
    let unknown = s.ctl(&["update", "--image", "es:latest"]).await;
    assert!(
        !unknown.ok && unknown.stderr.contains("--allow-unknown-version"),
        "{unknown:?}"
    );
    let nothing = s.ctl(&["update"]).await;
    assert!(!nothing.ok, "{nothing:?}");
    let owned = s.ctl(&["update", "--es-setting", "node.name=x"]).await;
    assert!(!owned.ok && owned.stderr.contains("node.name"), "{owned:?}");
    let owned_env = s.ctl(&["update", "--es-env", "node.name=x"]).await;
    assert!(
        !owned_env.ok && owned_env.stderr.contains("node.name"),
        "{owned_env:?}"
    );
    let not_stored = s.ctl(&["update", "--unset-es-env", "TZ"]).await;
    assert!(
        !not_stored.ok
            && not_stored
                .stderr
                .contains("no stored environment variable TZ"),
        "{not_stored:?}"
    );
    let both = s
        .ctl(&["update", "--es-env", "TZ=UTC", "--unset-es-env", "TZ"])
        .await;
    assert!(
        !both.ok && both.stderr.contains("both set and removed"),
        "{both:?}"
    );
    let malformed = s.ctl(&["update", "--es-env", "TZ"]).await;
    assert!(
        !malformed.ok && malformed.stderr.contains("expected KEY=VALUE"),
        "{malformed:?}"
    );

    let updated = s
        .ctl(&[
            "--output",
            "json",
            "update",
            "--image",
            "docker.elastic.co/elasticsearch/elasticsearch:8.15.0",
            "--es-setting",
            "indices.memory.index_buffer_size=20%",
            "--es-env",
            "TZ=UTC",
        ])
        .await
        .json();
    has_fields(&updated, &rollout_fields);
    assert_eq!(updated["config_generation"], 2);
    assert_eq!(updated["state"], "running");
    assert_eq!(updated["pending"], serde_json::json!([1, 2]));
    assert_eq!(updated["done"], serde_json::json!([]));
    // What the first gate waits for (no Elasticsearch answers here).
    assert!(
        updated["reason"].as_str().is_some_and(|r| !r.is_empty()),
        "{updated}"
    );
    // Nodes keep the configuration they run until the rollout restarts them.
    let nodes = s.ctl(&["--output", "json", "nodes"]).await.json();
    for n in nodes.as_array().expect("array") {
        assert_eq!(n["config_generation"], 1, "{n}");
    }

    let paused = s
        .ctl(&["--output", "json", "rollout", "pause"])
        .await
        .json();
    assert_eq!(paused["state"], "paused");
    assert!(
        paused["reason"]
            .as_str()
            .is_some_and(|r| r.contains("operator"))
    );
    let resumed = s
        .ctl(&["--output", "json", "rollout", "resume"])
        .await
        .json();
    assert_eq!(resumed["state"], "running");
    let rollback = s.ctl(&["rollout", "rollback"]).await;
    assert!(
        !rollback.ok && rollback.stderr.contains("nothing to roll back"),
        "{rollback:?}"
    );
    let restarted = s.ctl(&["--output", "json", "restart"]).await.json();
    assert_eq!(restarted["config_generation"], 3);
    assert_eq!(restarted["state"], "running");
    let aborted = s
        .ctl(&["--output", "json", "rollout", "abort"])
        .await
        .json();
    assert_eq!(aborted["state"], "aborted");
    assert_eq!(aborted["pending"], serde_json::json!([1, 2]));
    let again = s.ctl(&["rollout", "resume"]).await;
    assert!(!again.ok && again.stderr.contains("aborted"), "{again:?}");
    let bad_group = s.ctl(&["restart", "--group", "nope"]).await;
    assert!(!bad_group.ok, "{bad_group:?}");

    // The table renderings work too.
    let table = s.ctl(&["rollout", "status"]).await;
    assert!(
        table.ok && table.stdout.contains("rollout aborted (configuration 3)"),
        "{table:?}"
    );

    // The stored configuration survives a restart of the scheduler, and wins over the flags.
    let s = s.restart(2).await;
    let after = s
        .ctl(&["--output", "json", "rollout", "status"])
        .await
        .json();
    assert_eq!(after["config_generation"], 3);
    assert_eq!(after["state"], "aborted");
}
