//! Test support for the sidecar tests: an in-process fake scheduler (a real tonic server on 127.0.0.1)
//! that records everything sidecars send and lets a test send commands, plus helpers to run a sidecar and
//! a fake-rexray in a temp dir.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Parser;
use futures::Stream;
use tether_proto::v1::agent_channel_server::{AgentChannel, AgentChannelServer};
use tether_proto::v1::{
    AgentMessage, CommandResult, Hello, InstallIdentity, Prepare, Release, Report,
    SchedulerMessage, VolumeSelector, Welcome, agent_message, scheduler_message,
};
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

/// How long a test waits for a condition before failing.
pub const DEADLINE: Duration = Duration::from_secs(20);

type Outbound = mpsc::Sender<Result<SchedulerMessage, Status>>;

#[derive(Debug, Default)]
struct Inner {
    received: Mutex<Vec<AgentMessage>>,
    arrived: Notify,
    current: Mutex<Option<Outbound>>,
    welcome: Mutex<Welcome>,
    connections: AtomicU64,
    authorizations: Mutex<Vec<Option<String>>>,
    next_command: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[derive(Debug, Clone)]
struct Svc(Arc<Inner>);

#[tonic::async_trait]
impl AgentChannel for Svc {
    type ConnectStream = Pin<Box<dyn Stream<Item = Result<SchedulerMessage, Status>> + Send>>;

    async fn connect(
        &self,
        req: Request<Streaming<AgentMessage>>,
    ) -> Result<Response<Self::ConnectStream>, Status> {
        let auth = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        lock(&self.0.authorizations).push(auth);
        self.0.connections.fetch_add(1, Ordering::SeqCst);
        let mut inbound = req.into_inner();
        let (tx, rx) = mpsc::channel(64);
        // The only strong sender lives in `current`: dropping it ends the stream (disconnect, outage).
        *lock(&self.0.current) = Some(tx.clone());
        let weak = tx.downgrade();
        drop(tx);
        let inner = self.0.clone();
        tokio::spawn(async move {
            while let Ok(Some(msg)) = inbound.message().await {
                if matches!(msg.body, Some(agent_message::Body::Hello(_)))
                    && let Some(tx) = weak.upgrade()
                {
                    let welcome = lock(&inner.welcome).clone();
                    let _ = tx
                        .send(Ok(SchedulerMessage {
                            body: Some(scheduler_message::Body::Welcome(welcome)),
                        }))
                        .await;
                }
                lock(&inner.received).push(msg);
                inner.arrived.notify_waiters();
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}

/// An in-process scheduler double.
#[derive(Debug)]
pub struct FakeScheduler {
    addr: SocketAddr,
    inner: Arc<Inner>,
    stop: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl FakeScheduler {
    /// Serves on a free loopback port; answers every Hello with `welcome`.
    pub async fn start(welcome: Welcome) -> std::io::Result<FakeScheduler> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let inner = Arc::new(Inner::default());
        *lock(&inner.welcome) = welcome;
        let mut s = FakeScheduler {
            addr,
            inner,
            stop: CancellationToken::new(),
            task: None,
        };
        s.serve(listener);
        Ok(s)
    }

    fn serve(&mut self, listener: tokio::net::TcpListener) {
        let stop = CancellationToken::new();
        self.stop = stop.clone();
        let svc = AgentChannelServer::new(Svc(self.inner.clone()));
        self.task = Some(tokio::spawn(async move {
            let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
            let _ = tonic::transport::Server::builder()
                .add_service(svc)
                .serve_with_incoming_shutdown(incoming, stop.cancelled())
                .await;
        }));
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops serving and drops every stream (a scheduler outage).
    pub async fn stop(&mut self) {
        *lock(&self.inner.current) = None;
        self.stop.cancel();
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }

    /// Serves again on the same port.
    pub async fn restart(&mut self) -> std::io::Result<()> {
        let listener = tokio::net::TcpListener::bind(self.addr).await?;
        self.serve(listener);
        Ok(())
    }

    /// Ends the current stream from the scheduler side.
    pub fn disconnect(&self) {
        *lock(&self.inner.current) = None;
    }

    pub fn set_welcome(&self, welcome: Welcome) {
        *lock(&self.inner.welcome) = welcome;
    }

    pub fn connections(&self) -> u64 {
        self.inner.connections.load(Ordering::SeqCst)
    }

    pub fn authorizations(&self) -> Vec<Option<String>> {
        lock(&self.inner.authorizations).clone()
    }

    pub fn received(&self) -> Vec<AgentMessage> {
        lock(&self.inner.received).clone()
    }

    pub fn hellos(&self) -> Vec<Hello> {
        self.received()
            .into_iter()
            .filter_map(|m| match m.body {
                Some(agent_message::Body::Hello(h)) => Some(h),
                _ => None,
            })
            .collect()
    }

    /// Sends a message on the current stream.
    pub async fn send(&self, body: scheduler_message::Body) -> Result<(), String> {
        let tx = lock(&self.inner.current)
            .clone()
            .ok_or("no sidecar connected")?;
        tx.send(Ok(SchedulerMessage { body: Some(body) }))
            .await
            .map_err(|_| "stream closed".to_string())
    }

    fn next_command_id(&self) -> u64 {
        self.inner.next_command.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// Sends `p` under a fresh command id (for the fields [`FakeScheduler::prepare`] leaves out);
    /// returns the id.
    pub async fn prepare_with(&self, p: Prepare) -> Result<u64, String> {
        let command_id = self.next_command_id();
        let p = Prepare { command_id, ..p };
        self.send(scheduler_message::Body::Prepare(p)).await?;
        Ok(command_id)
    }

    /// Sends `i` under a fresh command id; returns the id.
    pub async fn install_identity(&self, i: InstallIdentity) -> Result<u64, String> {
        let command_id = self.next_command_id();
        let i = InstallIdentity { command_id, ..i };
        self.send(scheduler_message::Body::InstallIdentity(i))
            .await?;
        Ok(command_id)
    }

    /// Sends a Prepare; returns its command id.
    pub async fn prepare(
        &self,
        node_id: u64,
        volumes: &[&str],
        create_missing: bool,
        options: &[(&str, &str)],
    ) -> Result<u64, String> {
        let command_id = self.next_command_id();
        let p = Prepare {
            command_id,
            node_id,
            volumes: volumes.iter().map(|v| v.to_string()).collect(),
            create_missing,
            create_options: options
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            deadline_ms: 0,
            ..Prepare::default()
        };
        self.send(scheduler_message::Body::Prepare(p)).await?;
        Ok(command_id)
    }

    /// Sends a Release; returns its command id.
    pub async fn release(&self, volumes: &[&str]) -> Result<u64, String> {
        let command_id = self.next_command_id();
        let r = Release {
            command_id,
            volumes: volumes.iter().map(|v| v.to_string()).collect(),
        };
        self.send(scheduler_message::Body::Release(r)).await?;
        Ok(command_id)
    }

    /// Waits until some received message satisfies `pick`.
    pub async fn wait_for<T>(
        &self,
        what: &str,
        mut pick: impl FnMut(&AgentMessage) -> Option<T>,
    ) -> Result<T, String> {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            let notified = self.inner.arrived.notified();
            if let Some(t) = self.received().iter().rev().find_map(&mut pick) {
                return Ok(t);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Err(format!("timed out waiting for {what}"));
            }
        }
    }

    /// Waits for the result of command `id`.
    pub async fn result(&self, id: u64) -> Result<CommandResult, String> {
        self.wait_for(&format!("result of command {id}"), |m| match &m.body {
            Some(agent_message::Body::Result(r)) if r.command_id == id => Some(r.clone()),
            _ => None,
        })
        .await
    }

    /// Waits for a received report satisfying `pred` (use [`FakeScheduler::clear`] to ignore older ones).
    pub async fn report(
        &self,
        what: &str,
        pred: impl Fn(&Report) -> bool,
    ) -> Result<Report, String> {
        self.wait_for(what, |m| match &m.body {
            Some(agent_message::Body::Report(r)) if pred(r) => Some(r.clone()),
            _ => None,
        })
        .await
    }

    /// Forgets everything received so far (so later waits see only newer messages).
    pub fn clear(&self) {
        lock(&self.inner.received).clear();
    }
}

impl Drop for FakeScheduler {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// A Welcome watching `names` and `prefixes` with a short report interval.
pub fn welcome(names: &[&str], prefixes: &[&str], interval_ms: u64) -> Welcome {
    Welcome {
        report_interval_ms: interval_ms,
        watch: Some(VolumeSelector {
            names: names.iter().map(|s| s.to_string()).collect(),
            prefixes: prefixes.iter().map(|s| s.to_string()).collect(),
        }),
    }
}

/// Sidecar args for tests: driver `driver` found in `plugin_dir`, short timeouts and backoff.
pub fn sidecar_args(
    scheduler: &str,
    driver: &str,
    plugin_dir: &Path,
    state_file: &Path,
    host: &str,
) -> tether_sidecar::Args {
    let dir = plugin_dir.display().to_string();
    let state = state_file.display().to_string();
    tether_sidecar::Args::parse_from([
        "tether-sidecar",
        "--scheduler",
        scheduler,
        "--driver",
        driver,
        "--plugin-dir",
        &dir,
        "--spec-dir",
        &dir,
        "--hostname",
        host,
        "--zone",
        "z1",
        "--max-attachments",
        "4",
        "--report-interval",
        "200ms",
        "--state-file",
        &state,
        "--mount-timeout",
        "3s",
        "--call-timeout",
        "2s",
        "--grace-period",
        "3s",
        "--reconnect-min",
        "50ms",
        "--reconnect-max",
        "300ms",
    ])
}

/// A sidecar running in-process.
#[derive(Debug)]
pub struct RunningSidecar {
    pub shutdown: CancellationToken,
    pub task: tokio::task::JoinHandle<Result<(), tether_sidecar::SidecarError>>,
}

impl RunningSidecar {
    pub fn spawn(args: tether_sidecar::Args) -> RunningSidecar {
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(tether_sidecar::run(args, shutdown.clone()));
        RunningSidecar { shutdown, task }
    }

    /// SIGTERM-like stop; returns what `run` returned.
    pub async fn stop(self) -> Result<(), String> {
        self.shutdown.cancel();
        match self.task.await {
            Ok(r) => r.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        }
    }

    /// A crash: the task is aborted without draining.
    pub async fn kill(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

/// Paths of one test's temp world.
#[derive(Debug)]
pub struct World {
    pub dir: tempfile::TempDir,
}

impl World {
    pub fn new() -> std::io::Result<World> {
        Ok(World {
            dir: tempfile::tempdir()?,
        })
    }
    pub fn plugins(&self) -> PathBuf {
        self.dir.path().join("plugins")
    }
    pub fn backend(&self) -> PathBuf {
        self.dir.path().join("backend")
    }
    pub fn socket(&self, driver: &str) -> PathBuf {
        self.plugins().join(format!("{driver}.sock"))
    }
    pub fn state(&self, host: &str) -> PathBuf {
        self.dir.path().join(format!("state-{host}.json"))
    }
    /// A fake-rexray for `host`, registered as driver `driver`.
    pub async fn rexray(
        &self,
        driver: &str,
        host: &str,
    ) -> std::io::Result<crate::fake_rexray::FakeRexray> {
        let mut cfg = crate::fake_rexray::Config::new(self.socket(driver), self.backend(), host);
        cfg.zone = "z1".into();
        crate::fake_rexray::FakeRexray::serve(cfg).await
    }
}

impl World {
    /// [`sidecar_args`] for `host` of this world: the driver `rexray` in its plugin dir, its state file.
    pub fn sidecar_args(&self, scheduler: &str, host: &str) -> tether_sidecar::Args {
        sidecar_args(
            scheduler,
            "rexray",
            &self.plugins(),
            &self.state(host),
            host,
        )
    }
}

/// One sidecar on host `h1` ([`World::sidecar_args`]) with a fake-rexray whose backend holds `volumes`
/// (1 GiB, zone `z1`), connected to a fake scheduler that sends it `welcome`.
#[derive(Debug)]
pub struct OneSidecar {
    pub world: World,
    pub fake: crate::fake_rexray::FakeRexray,
    pub sched: FakeScheduler,
    pub sidecar: RunningSidecar,
}

impl OneSidecar {
    /// Starts it all; returns once the scheduler has had a first report.
    pub async fn start(
        volumes: &[&str],
        welcome: Welcome,
    ) -> Result<OneSidecar, Box<dyn std::error::Error>> {
        OneSidecar::start_with(volumes, welcome, |_| {}).await
    }

    /// [`OneSidecar::start`] with the sidecar's arguments changed by `tune` first.
    pub async fn start_with(
        volumes: &[&str],
        welcome: Welcome,
        tune: impl FnOnce(&mut tether_sidecar::Args),
    ) -> Result<OneSidecar, Box<dyn std::error::Error>> {
        let world = World::new()?;
        let fake = world.rexray("rexray", "h1").await?;
        for v in volumes {
            crate::fake_rexray::create_volume(&world.backend(), v, 1, "z1")?;
        }
        let sched = FakeScheduler::start(welcome).await?;
        let mut args = world.sidecar_args(&sched.url(), "h1");
        tune(&mut args);
        let sidecar = RunningSidecar::spawn(args);
        sched.report("first report", |_| true).await?;
        Ok(OneSidecar {
            world,
            fake,
            sched,
            sidecar,
        })
    }
}
