//! A real tether-scheduler under test against the doubles: started in this process or as a child process
//! (for tests that kill -9 it or run several against one ZooKeeper), its admin API, and waiting for its
//! node list to reach a state.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use clap::Parser as _;
use tether_proto::v1::admin_client::AdminClient;
use tether_proto::v1::{ListNodesRequest, Node};
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint};

use super::DEADLINE;
use crate::process::{Proc, free_port};

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
        Self::start_with(master, state_dir, extra, true)
    }

    /// As [`Scheduler::start`], but without `--allow-shared-agent-token`: every sidecar must present a
    /// credential that names its host.
    pub fn start_strict(master: &str, state_dir: &Path, extra: &[&str]) -> Scheduler {
        Self::start_with(master, state_dir, extra, false)
    }

    fn start_with(master: &str, state_dir: &Path, extra: &[&str], allow_shared: bool) -> Scheduler {
        let listen: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let mut argv = test_argv(master, listen);
        if !allow_shared {
            argv.retain(|a| a != ALLOW_SHARED);
        }
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

const ALLOW_SHARED: &str = "--allow-shared-agent-token";

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
        // These schedulers run with simulated tasks or without sidecars that make node keys: security
        // needs the external strategy and the sidecars' `node_identity`. (The E2eCluster tests run `auto`.)
        "--es-security",
        "off",
        // Their sidecars (real or simulated) present no credential: these tests are about scheduling;
        // agent identity has its own (`tests/agent_identity.rs`), and the dev cluster mints tokens.
        ALLOW_SHARED,
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
    pub proc: Proc,
}

impl SchedulerProcess {
    /// Starts `tether-scheduler` for `master` with the test flags plus `extra`, logging to
    /// `<log_dir>/<label>.log`. An `--es-security` in `extra` replaces the test flags' `off`.
    pub fn spawn(label: &str, master: &str, extra: &[&str], log_dir: &Path) -> SchedulerProcess {
        let listen: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let mut argv = test_argv(master, listen);
        if extra.contains(&"--es-security")
            && let Some(i) = argv.iter().position(|a| a == "--es-security")
        {
            argv.drain(i..i + 2);
        }
        argv.extend(extra.iter().map(|s| s.to_string()));
        let env = [("RUST_LOG".to_owned(), "info".to_owned())];
        let proc = Proc::spawn("tether-scheduler", label, &argv, &env, log_dir)
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

/// An admin client sending the bearer token.
pub type AuthedAdmin =
    AdminClient<tonic::service::interceptor::InterceptedService<Channel, tetherctl::Auth>>;

/// The admin client of the scheduler at `addr` (plain gRPC), authenticated with the token in
/// `token_file`.
pub async fn admin_client(addr: SocketAddr, token_file: &Path) -> AuthedAdmin {
    admin_client_at(&format!("http://{addr}"), None, token_file).await
}

/// The admin client of the scheduler at `url` (`https://` trusting `ca`), authenticated with the token in
/// `token_file`.
pub async fn admin_client_at(url: &str, ca: Option<&Path>, token_file: &Path) -> AuthedAdmin {
    let token = std::fs::read_to_string(token_file).expect("admin token");
    let value = tether_proto::client::bearer(&token).expect("ascii token");
    let files = tether_proto::client::TlsFiles { ca, identity: None };
    let flags = tether_proto::client::TlsFlags {
        ca: "--ca-cert",
        cert: "--cert",
    };
    let channel = tether_proto::client::endpoint(url, files, flags)
        .expect("the scheduler's endpoint")
        .connect()
        .await
        .expect("admin API reachable");
    AdminClient::with_interceptor(channel, tetherctl::Auth::new(Some(value)))
}

/// Polls the node list (of any admin client, authenticated or not) until it satisfies `pred`: `Ok` with
/// it, or `Err` with the last list seen after [`DEADLINE`].
pub async fn poll_nodes<T>(
    admin: &mut AdminClient<T>,
    pred: impl Fn(&[Node]) -> bool,
) -> Result<Vec<Node>, Vec<Node>>
where
    T: tonic::client::GrpcService<tonic::body::Body>,
    T::Error: Into<tonic::codegen::StdError>,
    T::ResponseBody: tonic::codegen::Body<Data = bytes::Bytes> + Send + 'static,
    <T::ResponseBody as tonic::codegen::Body>::Error: Into<tonic::codegen::StdError> + Send,
{
    poll_nodes_within(admin, DEADLINE, pred).await
}

/// [`poll_nodes`] with a bound of its own, for a wait that Elasticsearch's own timers make long.
pub async fn poll_nodes_within<T>(
    admin: &mut AdminClient<T>,
    within: Duration,
    pred: impl Fn(&[Node]) -> bool,
) -> Result<Vec<Node>, Vec<Node>>
where
    T: tonic::client::GrpcService<tonic::body::Body>,
    T::Error: Into<tonic::codegen::StdError>,
    T::ResponseBody: tonic::codegen::Body<Data = bytes::Bytes> + Send + 'static,
    <T::ResponseBody as tonic::codegen::Body>::Error: Into<tonic::codegen::StdError> + Send,
{
    let mut last = Vec::new();
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Ok(resp) = admin.list_nodes(ListNodesRequest {}).await {
            last = resp.into_inner().nodes;
            if pred(&last) {
                return Ok(last);
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(last);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the node list satisfies `pred`, returning it; panics with the last list otherwise.
pub async fn wait_nodes<T>(
    admin: &mut AdminClient<T>,
    what: &str,
    pred: impl Fn(&[Node]) -> bool,
) -> Vec<Node>
where
    T: tonic::client::GrpcService<tonic::body::Body>,
    T::Error: Into<tonic::codegen::StdError>,
    T::ResponseBody: tonic::codegen::Body<Data = bytes::Bytes> + Send + 'static,
    <T::ResponseBody as tonic::codegen::Body>::Error: Into<tonic::codegen::StdError> + Send,
{
    poll_nodes(admin, pred)
        .await
        .unwrap_or_else(|last| panic!("gave up waiting for {what}; nodes: {last:#?}"))
}

/// All `n` nodes RUNNING.
pub fn all_running(n: usize) -> impl Fn(&[Node]) -> bool {
    move |nodes| nodes.len() == n && nodes.iter().all(|x| x.state == "RUNNING")
}
