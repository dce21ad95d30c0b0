//! Test harness: a real standalone ZooKeeper server (from Debian's `zookeeper` package) on a free loopback
//! port in a temp dir, that a test can stop, restart and pause to simulate a crash or a partition. Used by
//! this crate's tests and by end-to-end tests elsewhere.
//!
//! When the package is missing the harness skips loudly (the test returns early); with
//! `TETHER_REQUIRE_ZK=1` (set by `.ci/run`) it fails instead.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::url::ZkUrl;

/// Env var that turns a skip (ZooKeeper not installed) into a failure.
pub const REQUIRE_ENV: &str = "TETHER_REQUIRE_ZK";

const ZK_JAR: &str = "/usr/share/java/zookeeper.jar";
// The jar's manifest carries its Class-Path; a logging binding keeps the server's log readable.
const LOG_JAR: &str = "/usr/share/java/slf4j-simple.jar";
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// A standalone ZooKeeper server owned by a test. Killed on drop.
#[derive(Debug)]
pub struct ZkServer {
    child: Option<Child>,
    port: u16,
    paused: bool,
    // Dropped last so the server is dead before its data dir goes.
    dir: tempfile::TempDir,
}

/// Why the server could not be started.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    /// Java or the ZooKeeper package is not installed.
    #[error("ZooKeeper is not available: {0} (apt-get install -y zookeeper)")]
    Unavailable(String),
    /// It is installed but did not come up.
    #[error("ZooKeeper did not start: {0}")]
    Start(String),
}

impl ZkServer {
    /// Starts a server, or returns `None` after a loud skip message when ZooKeeper is not installed and
    /// `TETHER_REQUIRE_ZK` is not `1`. Panics when it is required, or installed but broken.
    pub async fn start_or_skip(test: &str) -> Option<ZkServer> {
        match Self::start().await {
            Ok(s) => Some(s),
            Err(HarnessError::Unavailable(why))
                if std::env::var(REQUIRE_ENV).as_deref() != Ok("1") =>
            {
                eprintln!(
                    "\n!!! SKIPPING {test}: {why}. To run it, install ZooKeeper: on Debian or Ubuntu \
                     `sudo apt-get install -y zookeeper` (it brings Java; the tests start {ZK_JAR} \
                     themselves, no service needed). Set {REQUIRE_ENV}=1 to make this a failure.\n"
                );
                None
            }
            Err(e) => panic!("{test}: {e}"),
        }
    }

    /// Starts a server on a free loopback port and waits until it answers `ruok`.
    pub async fn start() -> Result<ZkServer, HarnessError> {
        if !Path::new(ZK_JAR).exists() {
            return Err(HarnessError::Unavailable(format!("{ZK_JAR} not found")));
        }
        if Command::new("java")
            .arg("-version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_err()
        {
            return Err(HarnessError::Unavailable("no `java` on PATH".into()));
        }
        let dir = tempfile::Builder::new()
            .prefix("tether-zk-")
            .tempdir()
            .map_err(|e| HarnessError::Start(format!("temp dir: {e}")))?;
        let port = free_port().map_err(|e| HarnessError::Start(format!("free port: {e}")))?;
        let mut server = ZkServer {
            child: None,
            port,
            paused: false,
            dir,
        };
        server
            .write_config()
            .map_err(|e| HarnessError::Start(format!("config: {e}")))?;
        server.spawn_and_wait().await?;
        Ok(server)
    }

    /// The loopback port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:<port>`.
    pub fn connect_string(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `zk://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> ZkUrl {
        format!("zk://{}{}", self.connect_string(), path)
            .parse()
            .expect("harness builds valid URLs")
    }

    /// The server's log file (for debugging a failed test).
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("zookeeper.log")
    }

    /// Kills the server (SIGKILL) and waits for it; its data stays for [`Self::restart`].
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if self.paused {
                // A stopped process still dies of SIGKILL, but resuming first keeps `wait` prompt.
                let _ = signal(child.id(), "CONT");
                self.paused = false;
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Whether the server process is running (possibly paused).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Starts the server again on the same port with the same data (sessions survive if their timeout
    /// has not passed), and waits until it answers.
    pub async fn restart(&mut self) -> Result<(), HarnessError> {
        self.stop();
        self.spawn_and_wait().await
    }

    /// Freezes the server (SIGSTOP): connections stay open but nothing answers, like a partition.
    pub fn pause(&mut self) {
        if let Some(child) = &self.child
            && !self.paused
        {
            signal(child.id(), "STOP").expect("kill -STOP");
            self.paused = true;
        }
    }

    /// Thaws a paused server (SIGCONT).
    pub fn resume(&mut self) {
        if let Some(child) = &self.child
            && self.paused
        {
            signal(child.id(), "CONT").expect("kill -CONT");
            self.paused = false;
        }
    }

    fn write_config(&self) -> std::io::Result<()> {
        let data = self.dir.path().join("data");
        std::fs::create_dir_all(&data)?;
        // tickTime 200 ms lets tests ask for sessions of 0.4..4 s (the server clamps to [2, 20] ticks).
        let cfg = format!(
            "tickTime=200\ndataDir={}\nclientPort={}\nclientPortAddress=127.0.0.1\nmaxClientCnxns=0\n\
             admin.enableServer=false\n4lw.commands.whitelist=ruok,srvr,stat\n",
            data.display(),
            self.port
        );
        std::fs::write(self.dir.path().join("zoo.cfg"), cfg)
    }

    async fn spawn_and_wait(&mut self) -> Result<(), HarnessError> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .map_err(|e| HarnessError::Start(format!("log file: {e}")))?;
        let log2 = log
            .try_clone()
            .map_err(|e| HarnessError::Start(format!("log file: {e}")))?;
        let mut cp = ZK_JAR.to_owned();
        if Path::new(LOG_JAR).exists() {
            cp.push(':');
            cp.push_str(LOG_JAR);
        }
        let child = Command::new("java")
            .args([
                "-Xmx128m",
                "-XX:+UseSerialGC",
                "-XX:TieredStopAtLevel=1",
                "-Dzookeeper.jmx.log4j.disable=true",
            ])
            .arg("-cp")
            .arg(&cp)
            .arg("org.apache.zookeeper.server.ZooKeeperServerMain")
            .arg(self.dir.path().join("zoo.cfg"))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(|e| HarnessError::Unavailable(format!("cannot run java: {e}")))?;
        self.child = Some(child);
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                let tail = std::fs::read_to_string(self.log_path()).unwrap_or_default();
                let tail: String = tail
                    .lines()
                    .rev()
                    .take(20)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect::<Vec<_>>()
                    .join("\n");
                return Err(HarnessError::Start(format!(
                    "server exited with {status}; log tail:\n{tail}"
                )));
            }
            if ruok(self.port).await {
                return Ok(());
            }
            if Instant::now() > deadline {
                self.stop();
                return Err(HarnessError::Start(format!(
                    "no answer on port {} within {READY_TIMEOUT:?}; see {}",
                    self.port,
                    self.log_path().display()
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for ZkServer {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn ruok(port: u16) -> bool {
    let attempt = async {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()?;
        s.write_all(b"ruok").await.ok()?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.ok()?;
        Some(buf == b"imok")
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(2), attempt).await,
        Ok(Some(true))
    )
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn signal(pid: u32, sig: &str) -> std::io::Result<()> {
    let status = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()?;
    if status.success() {
        Ok(())
    } else {
        Err(std::io::Error::other(format!(
            "kill -{sig} {pid}: {status}"
        )))
    }
}

/// Registers like a Mesos master's contender: an ephemeral sequential `<dir>/json.info_` znode holding
/// MasterInfo JSON for `host:port` (world-readable, as Mesos creates it). Returns the znode's path; it
/// disappears when it is deleted or `session` ends, which is how a master abdicates.
pub async fn register_mesos_master(
    session: &crate::ZkSession,
    dir: &str,
    host: &str,
    port: u16,
) -> Result<String, zookeeper_client::Error> {
    let info = serde_json::json!({
        "address": {"hostname": host, "ip": "127.0.0.1", "port": port},
        "hostname": host, "id": format!("id-{host}-{port}"), "ip": 16777343,
        "pid": format!("master@127.0.0.1:{port}"), "port": port, "version": "1.11.0"
    });
    let opts = zookeeper_client::CreateMode::EphemeralSequential
        .with_acls(zookeeper_client::Acls::anyone_all());
    let prefix = format!("{dir}/json.info_");
    let data = serde_json::to_vec(&info).unwrap_or_default();
    let (_, seq) = session.client().create(&prefix, &data, &opts).await?;
    Ok(format!("{prefix}{seq}"))
}

/// Polls `cond` every 50 ms until it holds or `timeout` passes; returns whether it held. For integration
/// tests that wait for a condition (not a timing assertion).
pub async fn eventually<F, Fut>(timeout: Duration, mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if cond().await {
            return true;
        }
        if tokio::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A stand-in for a separate process inside one test: its own tokio runtime, so everything spawned in it
/// (ZooKeeper session pings, election watchers) dies at once on [`Self::kill`] without any goodbye to
/// the server, like `kill -9`. The server then notices only when the session times out.
#[derive(Debug)]
pub struct SimulatedProcess {
    rt: Option<tokio::runtime::Runtime>,
}

impl SimulatedProcess {
    /// A new "process" with a small multi-threaded runtime.
    pub fn new() -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("build a tokio runtime");
        Self { rt: Some(rt) }
    }

    /// Runs `fut` to completion inside this process (tasks it spawns keep running there afterwards).
    /// Awaitable from another runtime.
    pub async fn run<F>(&self, fut: F) -> F::Output
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let rt = self.rt.as_ref().expect("process already killed");
        rt.spawn(fut)
            .await
            .expect("simulated process task panicked")
    }

    /// Kills every task of this process abruptly.
    pub fn kill(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

impl Default for SimulatedProcess {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for SimulatedProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
