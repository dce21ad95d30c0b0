//! Helpers for tests that run a real tether-scheduler against the doubles: start one in-process, ask its
//! admin API, wait for the cluster to reach a state. One place, so tests read as scenarios.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use clap::Parser as _;
use tether_proto::v1::admin_client::AdminClient;
use tether_proto::v1::{ListNodesRequest, Node};
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint};

use crate::harness::free_port;

/// Generous deadline for a distributed condition in tests (never a timing assertion).
pub const DEADLINE: Duration = Duration::from_secs(60);

/// A scheduler running in this process.
#[derive(Debug)]
pub struct Scheduler {
    pub listen: SocketAddr,
    pub shutdown: CancellationToken,
    pub task: tokio::task::JoinHandle<Result<(), tether_scheduler::run::SchedulerError>>,
}

impl Scheduler {
    /// Starts a scheduler for `master` with state in `state_dir`, fast timers and `extra` flags.
    pub fn start(master: &str, state_dir: &Path, extra: &[&str]) -> Scheduler {
        let listen: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let mut argv = test_argv(master, listen);
        argv.push("--state-dir".into());
        argv.push(state_dir.display().to_string());
        argv.extend(extra.iter().map(|s| s.to_string()));
        argv.insert(0, "tether-scheduler".into());
        let args =
            tether_scheduler::args::Args::try_parse_from(argv).expect("valid scheduler flags");
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(tether_scheduler::run::run(args, shutdown.clone()));
        Scheduler {
            listen,
            shutdown,
            task,
        }
    }

    /// The admin client (waits until the listener answers; panics with the scheduler's error if it
    /// stopped instead).
    pub async fn admin(&mut self) -> AdminClient<Channel> {
        let url = format!("http://{}", self.listen);
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            if self.task.is_finished() {
                let result = (&mut self.task).await;
                panic!("the scheduler stopped before serving: {result:?}");
            }
            if let Ok(endpoint) = Endpoint::from_shared(url.clone())
                && let Ok(channel) = endpoint.connect().await
            {
                return AdminClient::new(channel);
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the scheduler's admin API never answered"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops it (SIGTERM-equivalent) and waits.
    pub async fn stop(self) {
        self.shutdown.cancel();
        let _ = tokio::time::timeout(DEADLINE, self.task).await;
    }
}

/// The flags every test scheduler gets: small resources, fast timers (without the program name).
fn test_argv(master: &str, listen: SocketAddr) -> Vec<String> {
    [
        "--master",
        master,
        "--listen",
        &listen.to_string(),
        "--cpus",
        "0.5",
        "--mem",
        "256",
        "--disk",
        "100",
        "--report-interval",
        "200ms",
        "--prepare-timeout",
        "10s",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// A tether-scheduler as a real child process (the built binary), for tests that kill -9 it or run
/// several against one ZooKeeper.
#[derive(Debug)]
pub struct SchedulerProcess {
    pub listen: SocketAddr,
    pub proc: crate::harness::Proc,
}

impl SchedulerProcess {
    /// Starts `tether-scheduler` for `master` with the test flags plus `extra`, logging to
    /// `<log_dir>/<label>.log`.
    pub fn spawn(label: &str, master: &str, extra: &[&str], log_dir: &Path) -> SchedulerProcess {
        let listen: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let mut argv = test_argv(master, listen);
        argv.extend(extra.iter().map(|s| s.to_string()));
        let env = [("RUST_LOG".to_owned(), "info".to_owned())];
        let proc = crate::harness::Proc::spawn("tether-scheduler", label, &argv, &env, log_dir)
            .unwrap_or_else(|e| panic!("{label}: {e} (build it: cargo build -p tether-scheduler)"));
        SchedulerProcess { listen, proc }
    }

    /// `host:port` of its admin API, as a standby names it.
    pub fn address(&self) -> String {
        self.listen.to_string()
    }

    /// The admin client (waits until the listener answers; panics with the log if the process exited).
    pub async fn admin(&mut self) -> AdminClient<Channel> {
        let url = format!("http://{}", self.listen);
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            if !self.proc.is_running() {
                panic!(
                    "{} exited before serving; log:\n{}",
                    self.proc.label(),
                    self.proc.log_text()
                );
            }
            if let Ok(endpoint) = Endpoint::from_shared(url.clone())
                && let Ok(channel) = endpoint.connect().await
            {
                return AdminClient::new(channel);
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{}'s admin API never answered",
                self.proc.label()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

pub use crate::dev::chaos::node_of_task;

/// Waits until the node list satisfies `pred`, returning it; panics with the last list otherwise.
pub async fn wait_nodes(
    admin: &mut AdminClient<Channel>,
    what: &str,
    pred: impl Fn(&[Node]) -> bool,
) -> Vec<Node> {
    let mut last = Vec::new();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        if let Ok(resp) = admin.list_nodes(ListNodesRequest {}).await {
            last = resp.into_inner().nodes;
            if pred(&last) {
                return last;
            }
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("gave up waiting for {what}; nodes: {last:#?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// All `n` nodes RUNNING.
pub fn all_running(n: usize) -> impl Fn(&[Node]) -> bool {
    move |nodes| nodes.len() == n && nodes.iter().all(|x| x.state == "RUNNING")
}

/// One plain HTTP/1 JSON request (tests talk to es-standin and the emulator's fault API with it).
/// Returns the status and the body parsed as JSON (`Null` when it is not JSON).
pub async fn http_json(
    method: &str,
    url: &str,
    body: Option<serde_json::Value>,
) -> Result<(u16, serde_json::Value), String> {
    use http_body_util::{BodyExt, Full};
    let uri: http::Uri = url.parse().map_err(|e| format!("{url}: {e}"))?;
    let authority = uri
        .authority()
        .ok_or_else(|| format!("{url}: no host"))?
        .to_string();
    let stream = tokio::net::TcpStream::connect(&authority)
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| format!("{url}: {e}"))?;
    tokio::spawn(conn);
    let req = http::Request::builder()
        .method(method)
        .uri(uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"))
        .header("host", authority)
        .header("content-type", "application/json")
        .body(Full::new(bytes::Bytes::from(
            body.map(|b| b.to_string()).unwrap_or_default(),
        )))
        .map_err(|e| format!("{url}: {e}"))?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    let status = resp.status().as_u16();
    let bytes = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("{url}: {e}"))?
        .to_bytes();
    Ok((
        status,
        serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
    ))
}

/// An admin client sending the bearer token.
pub type AuthedAdmin =
    AdminClient<tonic::service::interceptor::InterceptedService<Channel, tetherctl::Auth>>;

/// The admin client of the scheduler at `addr`, authenticated with the token in `token_file`.
pub async fn admin_client(addr: SocketAddr, token_file: &Path) -> AuthedAdmin {
    let token = std::fs::read_to_string(token_file).expect("admin token");
    let value = tether_proto::client::bearer(&token).expect("ascii token");
    let channel = Endpoint::from_shared(format!("http://{addr}"))
        .expect("url")
        .connect()
        .await
        .expect("admin API reachable");
    AdminClient::with_interceptor(channel, tetherctl::Auth::new(Some(value)))
}

/// Writes document `id` into index `docs` of `node` (through its Elasticsearch HTTP port).
pub async fn put_doc(node: &Node, id: &str, doc: serde_json::Value) {
    let url = format!("http://{}:{}/docs/_doc/{id}", node.host, node.http_port);
    let (status, body) = http_json("PUT", &url, Some(doc))
        .await
        .expect("node reachable");
    assert!(status == 200 || status == 201, "{url}: {status} {body}");
}

/// Waits until `node`'s Elasticsearch answers `GET /`, returning that answer (RUNNING only means the
/// process started; the listener follows).
pub async fn wait_es(node: &Node) -> serde_json::Value {
    let url = format!("http://{}:{}/", node.host, node.http_port);
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        if let Ok((200, body)) = http_json("GET", &url, None).await {
            return body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{url} never answered"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Reads document `id` of index `docs` from `node`: `Some(source)` when found.
pub async fn get_doc(node: &Node, id: &str) -> Option<serde_json::Value> {
    let url = format!("http://{}:{}/docs/_doc/{id}", node.host, node.http_port);
    let (status, body) = http_json("GET", &url, None).await.ok()?;
    (status == 200).then(|| body["_source"].clone())
}

/// A whole local cluster of real processes (the workspace's binaries) in a temp dir, for end-to-end tests.
#[derive(Debug)]
pub struct E2eCluster {
    pub cluster: crate::dev::Cluster,
    pub options: crate::dev::Options,
    _subnet: SubnetLease,
    pub dir: tempfile::TempDir,
}

impl E2eCluster {
    /// Starts `agents` agents and `nodes` nodes with fast Mesos timers; `tune` may change the options.
    pub async fn start(
        agents: usize,
        nodes: u64,
        tune: impl FnOnce(&mut crate::dev::Options),
    ) -> E2eCluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let args = crate::dev::Args::try_parse_from([
            "tether-dev",
            "--agents",
            &agents.to_string(),
            "--nodes",
            &nodes.to_string(),
            "--state-dir",
            &dir.path().display().to_string(),
            "--admin-listen",
            &format!("127.0.0.1:{}", free_port()),
        ])
        .expect("dev flags");
        let subnet = SubnetLease::acquire();
        assert!(agents <= 4, "a test cluster's port block holds 4 agents");
        let plan = crate::dev::Plan::with_subnet(&args, &subnet.prefix);
        let mut options = crate::dev::Options::new(
            crate::dev::Components::Binaries(crate::harness::bin_dir()),
            nodes,
        );
        options.allocation_interval = Duration::from_millis(200);
        options.agent_ping_timeout = Duration::from_secs(3);
        options.startup_grace = Duration::from_secs(2);
        // 40 ports per cluster (4 agents × 10; a node needs 2), disjoint between leases.
        options.ports_base = 40_000 + (subnet.index - 20) * 40;
        options.port_stride = 10;
        options.prepare_timeout = Duration::from_secs(5);
        tune(&mut options);
        let cluster = crate::dev::Cluster::start(plan, &options)
            .await
            .expect("cluster starts");
        E2eCluster {
            cluster,
            options,
            _subnet: subnet,
            dir,
        }
    }

    /// The admin client, authenticated with the cluster's admin token.
    pub async fn admin(&self) -> AuthedAdmin {
        let plan = &self.cluster.plan;
        admin_client(plan.admin, &plan.admin_token).await
    }

    /// Waits until the node list satisfies `pred`.
    pub async fn wait_nodes(&self, what: &str, pred: impl Fn(&[Node]) -> bool) -> Vec<Node> {
        let mut admin = self.admin().await;
        let mut last = Vec::new();
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            if let Ok(resp) = admin.list_nodes(ListNodesRequest {}).await {
                last = resp.into_inner().nodes;
                if pred(&last) {
                    return last;
                }
            }
            if tokio::time::Instant::now() >= deadline {
                panic!(
                    "gave up waiting for {what}; nodes: {last:#?}\nscheduler log tail:\n{}",
                    self.log_tail("tether-scheduler", 40)
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The last `n` lines of a component's log.
    pub fn log_tail(&self, label: &str, n: usize) -> String {
        let text = std::fs::read_to_string(self.cluster.plan.logs.join(format!("{label}.log")))
            .unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// POSTs a fault to the emulator's control API, e.g. `agents/<id>/kill`.
    pub async fn emu_fault(&self, path: &str) {
        let url = format!("http://{}/emu/{path}", self.cluster.plan.emu);
        let (status, body) = http_json("POST", &url, None)
            .await
            .expect("emulator reachable");
        assert!((200..300).contains(&status), "{url}: {status} {body}");
    }

    /// Writes document `id` into index `docs` of `node` (through its Elasticsearch HTTP port).
    pub async fn put_doc(&self, node: &Node, id: &str, doc: serde_json::Value) {
        put_doc(node, id, doc).await
    }

    /// Waits until `node`'s Elasticsearch answers `GET /`, returning that answer.
    pub async fn wait_es(&self, node: &Node) -> serde_json::Value {
        wait_es(node).await
    }

    /// Reads document `id` of index `docs` from `node`: `Some(source)` when found.
    pub async fn get_doc(&self, node: &Node, id: &str) -> Option<serde_json::Value> {
        get_doc(node, id).await
    }

    pub async fn stop(mut self) {
        self.cluster.stop().await;
    }
}

/// POSTs a JSON body to a path on a unix-socket HTTP server (e.g. a fake-rexray's `/Fake.SetFaults`).
pub async fn post_unix(socket: &Path, path: &str, body: serde_json::Value) -> Result<u16, String> {
    use http_body_util::{BodyExt, Full};
    let stream = tokio::net::UnixStream::connect(socket)
        .await
        .map_err(|e| format!("{}: {e}", socket.display()))?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let req = http::Request::builder()
        .method("POST")
        .uri(path)
        .header("host", "plugin")
        .body(Full::new(bytes::Bytes::from(body.to_string())))
        .map_err(|e| e.to_string())?;
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let _ = resp.into_body().collect().await;
    Ok(status)
}

impl E2eCluster {
    /// Live (non-terminal) tasks per node id, as the Mesos emulator sees them.
    pub async fn live_tasks_by_node(&self) -> std::collections::BTreeMap<u64, Vec<String>> {
        let url = format!("http://{}/state", self.cluster.plan.emu);
        let (_, state) = http_json("GET", &url, None).await.expect("emulator state");
        crate::dev::chaos::live_tasks(&state)
            .into_iter()
            .map(|(node, tasks)| (node, tasks.into_iter().map(|t| t.task_id).collect()))
            .collect()
    }

    /// Injects faults into the volume plugin of `host` (`/Fake.SetFaults` body).
    pub async fn plugin_faults(&self, host: &str, faults: serde_json::Value) {
        let socket = self
            .cluster
            .plan
            .state
            .join("agents")
            .join(host)
            .join(format!("{}.sock", crate::dev::DRIVER));
        let status = post_unix(&socket, "/Fake.SetFaults", faults)
            .await
            .expect("plugin reachable");
        assert_eq!(status, 200, "fault injection accepted");
    }

    /// The agent plan of `host`.
    pub fn agent(&self, host: &str) -> crate::dev::AgentPlan {
        self.cluster
            .plan
            .agents
            .iter()
            .find(|a| a.host == host)
            .cloned()
            .expect("known agent host")
    }

    /// Host names of the agents of `zone`.
    pub fn zone_hosts(&self, zone: &str) -> Vec<String> {
        self.cluster
            .plan
            .agents
            .iter()
            .filter(|a| a.zone == zone)
            .map(|a| a.host.clone())
            .collect()
    }
}

/// A loopback subnet (`127.<n>.0`) reserved for one test cluster by an exclusive lock on
/// `/tmp/tether-e2e-subnet-<n>.lock`: tests in other processes skip it, so their agents' addresses and
/// ports never collide. Released when dropped (or when the process dies).
#[derive(Debug)]
pub struct SubnetLease {
    pub prefix: String,
    /// `n` of `127.<n>.0`, 20 to 219.
    pub index: u16,
    _lock: std::fs::File,
}

impl SubnetLease {
    pub fn acquire() -> SubnetLease {
        let start = std::process::id() as usize;
        for i in 0..200 {
            let n = 20 + (start + i) % 200;
            let path = std::env::temp_dir().join(format!("tether-e2e-subnet-{n}.lock"));
            let Ok(file) = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
            else {
                continue;
            };
            if rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive)
                .is_ok()
            {
                return SubnetLease {
                    prefix: format!("127.{n}.0"),
                    index: n as u16,
                    _lock: file,
                };
            }
        }
        panic!("no free loopback subnet for a test cluster");
    }
}
