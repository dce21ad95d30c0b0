//! `tether-dev`: the whole local cluster in one process tree, and the README's first command.
//!
//! One state directory holds everything: the Mesos emulator (agents on loopback addresses, two zones,
//! tasks run as local processes), one REX-Ray double per agent on a shared backend with the volumes an
//! operator would pre-create, one tether-sidecar per agent, and tether-scheduler with the external driver.
//! Each component is a real process: this same executable re-run as `tether-dev __run <component> ...`,
//! which calls the component's library `run` exactly as its own binary does — so `cargo run --bin
//! tether-dev` needs no other build step. Elasticsearch nodes are `es-standin` processes started by the
//! emulator's process launcher with volumes attached through the agent's plugin.
//!
//! Layout of `--state-dir`:
//! `admin.token`, `agent.token` (0600); `logs/<component>.log`; `scheduler/` (state store);
//! `rexray/` (the shared "cloud" backend); `agents/<host>/rexray.sock` and `agents/<host>/sidecar.json`;
//! `emu/` (task sandboxes).

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser as _;
use tether_proto::v1::admin_client::AdminClient;
use tether_proto::v1::{
    GetClusterRequest, ListAgentsRequest, ListNodesRequest, ListVolumesRequest,
};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

use crate::harness::{HarnessError, Proc, free_port};

pub mod chaos;

/// Zones of the local cluster's agents, assigned round robin.
pub const ZONES: [&str; 2] = ["zone-a", "zone-b"];
/// Driver name of the REX-Ray doubles.
pub const DRIVER: &str = "rexray";
/// Size of the pre-created volumes, GB.
const VOLUME_GB: u64 = 16;

/// Flags of tether-dev.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "tether-dev",
    version,
    about = "Run a whole Tether cluster locally: Mesos emulator, REX-Ray doubles, sidecars, scheduler, Elasticsearch stand-ins"
)]
pub struct Args {
    /// Number of Mesos agents (each with a REX-Ray double and a sidecar).
    #[arg(long, env = "TETHER_DEV_AGENTS", default_value_t = 3)]
    pub agents: usize,
    /// Number of Elasticsearch nodes.
    #[arg(long, env = "TETHER_DEV_NODES", default_value_t = 3)]
    pub nodes: u64,
    /// Directory for all state, tokens and logs (created; reused across runs).
    #[arg(long, env = "TETHER_DEV_STATE_DIR", default_value = "/tmp/tether-dev")]
    pub state_dir: PathBuf,
    /// Admin API (and sidecar channel) address of the scheduler.
    #[arg(
        long,
        env = "TETHER_DEV_ADMIN_LISTEN",
        default_value = "127.0.0.1:7070"
    )]
    pub admin_listen: SocketAddr,
    /// Kill and partition agents at random while writing and reading documents; report any lost one.
    #[arg(long, env = "TETHER_DEV_CHAOS")]
    pub chaos: bool,
    /// Rounds of `--chaos` (one fault, recovery, settling and checks each); 0 runs until Ctrl-C.
    #[arg(long, env = "TETHER_DEV_CHAOS_ROUNDS", default_value_t = 0)]
    pub chaos_rounds: u64,
    /// Seed of the fault sequence (printed; pass it again to replay the same choices). Random if unset.
    #[arg(long, env = "TETHER_DEV_CHAOS_SEED")]
    pub chaos_seed: Option<u64>,
    /// Kinds of faults `--chaos` picks from.
    #[arg(
        long,
        env = "TETHER_DEV_CHAOS_FAULTS",
        value_enum,
        value_delimiter = ',',
        default_value = "kill-agent,partition,kill-sidecar,kill-scheduler"
    )]
    pub chaos_faults: Vec<chaos::FaultKind>,
    /// How long a fault lasts before recovery starts (a partition lasts until the agent is UNREACHABLE).
    #[arg(long, env = "TETHER_DEV_CHAOS_HOLD", default_value = "3s", value_parser = humantime::parse_duration)]
    pub chaos_hold: Duration,
    /// Bound on the cluster's return to health after a fault (all nodes RUNNING and serving, every
    /// sidecar connected); a round that does not settle is a violation.
    #[arg(long, env = "TETHER_DEV_CHAOS_SETTLE_TIMEOUT", default_value = "90s", value_parser = humantime::parse_duration)]
    pub chaos_settle_timeout: Duration,
    /// Agents get the addresses `<subnet>.11`, `<subnet>.12`, ... (any 127/8 subnet).
    #[arg(long, env = "TETHER_DEV_AGENT_SUBNET", default_value = "127.0.0")]
    pub agent_subnet: String,
    /// First port of the agents' port ranges.
    #[arg(long, env = "TETHER_DEV_PORTS_BASE", default_value_t = 31000)]
    pub ports_base: u16,
    /// Size of each agent's port range.
    #[arg(long, env = "TETHER_DEV_PORT_STRIDE", default_value_t = 100)]
    pub port_stride: u16,
    /// The emulated Mesos master's allocation interval.
    #[arg(long, env = "TETHER_DEV_ALLOCATION_INTERVAL", default_value = "1s", value_parser = humantime::parse_duration)]
    pub allocation_interval: Duration,
    /// How long a partitioned agent stays silent before the master declares its tasks UNREACHABLE.
    #[arg(long, env = "TETHER_DEV_AGENT_PING_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub agent_ping_timeout: Duration,
    /// The scheduler's wait after subscribing before it places nodes.
    #[arg(long, env = "TETHER_DEV_STARTUP_GRACE", default_value = "5s", value_parser = humantime::parse_duration)]
    pub startup_grace: Duration,
    /// How often the live status is printed.
    #[arg(long, env = "TETHER_DEV_STATUS_INTERVAL", default_value = "3s", value_parser = humantime::parse_duration)]
    pub status_interval: Duration,
    /// Log format of tether-dev itself (components log to `<state-dir>/logs`).
    #[arg(long, env = "TETHER_LOG_FORMAT", value_enum, default_value_t)]
    pub log_format: tether_telemetry::LogFormat,
}

/// Why the local cluster could not run.
#[derive(Debug, thiserror::Error)]
pub enum DevError {
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Spawn(#[from] HarnessError),
    #[error("unknown component {0:?} (expected one of {COMPONENTS:?})")]
    UnknownComponent(String),
    #[error("{component}: {message}")]
    Component { component: String, message: String },
    #[error("{0} did not come up: see {1}")]
    NotReady(String, PathBuf),
    #[error(
        "chaos: {lost} document(s) lost and {violations} invariant violation(s); see the lines above"
    )]
    ChaosFailed { lost: u64, violations: u64 },
}

/// What `tether-dev __run` can start.
pub const COMPONENTS: [&str; 5] = [
    "mesos-emu",
    "fake-rexray",
    "tether-sidecar",
    "tether-scheduler",
    "es-standin",
];

/// Runs one component in this process (the multi-call entry point): `argv[0]` is the component name.
pub async fn run_component(argv: Vec<OsString>) -> Result<(), DevError> {
    let name = argv
        .first()
        .map(|a| a.to_string_lossy().into_owned())
        .unwrap_or_default();
    let fail = |e: &dyn std::fmt::Display| DevError::Component {
        component: name.clone(),
        message: e.to_string(),
    };
    match name.as_str() {
        "mesos-emu" => {
            let args = crate::mesos_emu::Args::parse_from(&argv);
            tether_telemetry::init(args.log_format);
            let shutdown = tether_telemetry::shutdown_on_signals();
            crate::mesos_emu::run(args, shutdown)
                .await
                .map_err(|e| fail(&e))
        }
        "fake-rexray" => {
            let args = crate::fake_rexray::cli::Args::parse_from(&argv);
            tether_telemetry::init(args.log_format);
            let shutdown = tether_telemetry::shutdown_on_signals();
            crate::fake_rexray::cli::run(args, shutdown)
                .await
                .map_err(|e| fail(&e))
        }
        "tether-sidecar" => {
            let args = tether_sidecar::Args::parse_from(&argv);
            tether_telemetry::init(args.log_format);
            let shutdown = tether_telemetry::shutdown_on_signals();
            tether_sidecar::run(args, shutdown)
                .await
                .map_err(|e| fail(&e))
        }
        "tether-scheduler" => {
            let args = tether_scheduler::args::Args::parse_from(&argv);
            tether_telemetry::init(args.log_format);
            let shutdown = tether_telemetry::shutdown_on_signals();
            tether_scheduler::run::run(args, shutdown)
                .await
                .map_err(|e| fail(&e))
        }
        "es-standin" => {
            let args = crate::es_standin::Args::parse_from(&argv);
            tether_telemetry::init(args.log_format);
            let shutdown = tether_telemetry::shutdown_on_signals();
            crate::es_standin::run(args, shutdown, |_| {})
                .await
                .map_err(|e| fail(&e))
        }
        other => Err(DevError::UnknownComponent(other.to_owned())),
    }
}

/// How the components are started.
#[derive(Debug, Clone)]
pub enum Components {
    /// This executable re-run as `__run <component>` (what `tether-dev` does).
    MultiCall(PathBuf),
    /// The workspace's own binaries in this directory (what the end-to-end tests do).
    Binaries(PathBuf),
}

impl Components {
    /// Program and leading arguments that start `component`.
    fn command(&self, component: &str) -> (PathBuf, Vec<String>) {
        match self {
            Components::MultiCall(exe) => {
                (exe.clone(), vec!["__run".to_owned(), component.to_owned()])
            }
            Components::Binaries(dir) => (dir.join(component), Vec::new()),
        }
    }

    fn spawn(
        &self,
        component: &str,
        label: &str,
        args: Vec<String>,
        logs: &Path,
    ) -> Result<Proc, DevError> {
        let (program, mut argv) = self.command(component);
        argv.extend(args);
        Ok(Proc::spawn_exe(&program, label, &argv, &[], logs)?)
    }
}

/// Knobs of a cluster beyond its size (tests turn timers down and inject missing volumes).
#[derive(Debug, Clone)]
pub struct Options {
    pub components: Components,
    pub nodes: u64,
    /// Mesos allocation interval.
    pub allocation_interval: Duration,
    /// How long a partitioned agent stays silent before its tasks are UNREACHABLE.
    pub agent_ping_timeout: Duration,
    /// The scheduler's wait after subscribing before it places nodes.
    pub startup_grace: Duration,
    /// How long the scheduler holds an offer while a sidecar prepares volumes.
    pub prepare_timeout: Duration,
    /// First port of the agents' port ranges, and the size of each agent's range. The agents share this
    /// machine and Elasticsearch binds `0.0.0.0`, so their ranges (and those of clusters running at the
    /// same time) must not overlap.
    pub ports_base: u16,
    pub port_stride: u16,
    /// The sidecars' timeout of one Create or Mount call (Docker's is 2 minutes).
    pub mount_timeout: Duration,
    /// Volumes an operator "forgot" to create.
    pub missing_volumes: Vec<String>,
    /// Volumes already attached to a host outside the cluster (another instance's EBS attachment).
    pub attached_elsewhere: Vec<(String, String)>,
    /// Run the REX-Ray doubles with `mount.preempt`, as operators do for failover: a dead agent cannot
    /// detach its volumes, so the next Mount must take them. Safe only because Tether mounts elsewhere
    /// after the old task is known terminal.
    pub preempt: bool,
}

impl Options {
    pub fn new(components: Components, nodes: u64) -> Options {
        Options {
            components,
            nodes,
            allocation_interval: Duration::from_secs(1),
            agent_ping_timeout: Duration::from_secs(10),
            startup_grace: Duration::from_secs(5),
            prepare_timeout: Duration::from_secs(15),
            ports_base: 31000,
            port_stride: 100,
            mount_timeout: Duration::from_secs(120),
            missing_volumes: Vec::new(),
            attached_elsewhere: Vec::new(),
            preempt: true,
        }
    }

    /// The options of `tether-dev`'s own flags.
    pub fn from_args(components: Components, args: &Args) -> Options {
        Options {
            allocation_interval: args.allocation_interval,
            agent_ping_timeout: args.agent_ping_timeout,
            startup_grace: args.startup_grace,
            ports_base: args.ports_base,
            port_stride: args.port_stride,
            ..Options::new(components, args.nodes)
        }
    }
}

/// One agent of the local cluster.
#[derive(Debug, Clone)]
pub struct AgentPlan {
    /// A loopback address: resolvable and distinct, so Elasticsearch seed hosts work on one machine.
    pub host: String,
    pub zone: &'static str,
    pub dir: PathBuf,
}

/// Where everything lives, derived from the flags.
#[derive(Debug, Clone)]
pub struct Plan {
    pub state: PathBuf,
    pub logs: PathBuf,
    pub backend: PathBuf,
    pub agents: Vec<AgentPlan>,
    pub emu: SocketAddr,
    pub admin: SocketAddr,
    pub admin_token: PathBuf,
    pub agent_token: PathBuf,
}

impl Plan {
    pub fn new(args: &Args) -> Plan {
        Plan::with_subnet(args, &args.agent_subnet)
    }

    /// Agents on `<subnet>.11`, `<subnet>.12`, ... (any 127/8 address is loopback on Linux; separate
    /// subnets keep clusters that run at the same time apart).
    pub fn with_subnet(args: &Args, subnet: &str) -> Plan {
        let state = args.state_dir.clone();
        let agents = (0..args.agents)
            .map(|i| {
                let host = format!("{subnet}.{}", 11 + i);
                AgentPlan {
                    zone: ZONES[i % ZONES.len()],
                    dir: state.join("agents").join(&host),
                    host,
                }
            })
            .collect();
        Plan {
            logs: state.join("logs"),
            backend: state.join("rexray"),
            agents,
            emu: SocketAddr::from(([127, 0, 0, 1], free_port())),
            admin: args.admin_listen,
            admin_token: state.join("admin.token"),
            agent_token: state.join("agent.token"),
            state,
        }
    }

    /// The zone of node `id`'s volumes: round robin over the zones that have agents.
    pub fn volume_zone(&self, id: u64) -> &'static str {
        let zones = ZONES.len().min(self.agents.len()).max(1) as u64;
        ZONES[((id.saturating_sub(1)) % zones) as usize]
    }
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> DevError + 'a {
    move |source| DevError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// A random token, written with owner-only permissions (kept across runs so tetherctl keeps working).
fn ensure_token(path: &Path) -> Result<(), DevError> {
    use std::os::unix::fs::PermissionsExt as _;
    if path.exists() {
        return Ok(());
    }
    let token: String = (0..32)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect();
    std::fs::write(path, token + "\n").map_err(io("cannot write token", path))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(io("cannot protect token", path))
}

/// Creates the directories, tokens and the volumes an operator would pre-create (except `missing`).
pub fn prepare(plan: &Plan, nodes: u64, missing: &[String]) -> Result<(), DevError> {
    for dir in [&plan.state, &plan.logs, &plan.backend] {
        std::fs::create_dir_all(dir).map_err(io("cannot create", dir))?;
    }
    for a in &plan.agents {
        std::fs::create_dir_all(&a.dir).map_err(io("cannot create", &a.dir))?;
    }
    ensure_token(&plan.admin_token)?;
    ensure_token(&plan.agent_token)?;
    for id in 1..=nodes {
        for suffix in ["config", "data"] {
            let name = format!("elasticsearch{id}{suffix}");
            if missing.contains(&name) {
                continue;
            }
            crate::fake_rexray::create_volume(
                &plan.backend,
                &name,
                VOLUME_GB,
                plan.volume_zone(id),
            )
            .map_err(io("cannot create volume", &plan.backend))?;
        }
    }
    Ok(())
}

/// Marks `volume` as attached to `host` in the shared backend, as if another instance had mounted it.
fn attach_elsewhere(backend: &Path, volume: &str, host: &str) -> Result<(), DevError> {
    let err = io("cannot attach volume", backend);
    let locked = crate::fake_rexray::backend::lock(backend).map_err(|e| DevError::Io {
        what: "cannot lock backend",
        path: backend.to_path_buf(),
        source: e,
    })?;
    let Some(mut meta) = locked.read(volume).map_err(err)? else {
        return Ok(());
    };
    meta.attached_host = Some(host.to_owned());
    locked
        .write(&meta)
        .map_err(io("cannot attach volume", backend))
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

/// Every process of the cluster, stopped in reverse dependency order on [`Cluster::stop`] (and killed
/// on drop).
#[derive(Debug)]
pub struct Cluster {
    pub plan: Plan,
    pub components: Components,
    pub scheduler: Option<Proc>,
    pub sidecars: Vec<Proc>,
    pub emu: Option<Proc>,
    pub plugins: Vec<Proc>,
    mount_timeout: Duration,
}

impl Cluster {
    /// Starts every component of `plan` as a child of this process.
    pub async fn start(plan: Plan, options: &Options) -> Result<Cluster, DevError> {
        prepare(&plan, options.nodes, &options.missing_volumes)?;
        for (volume, host) in &options.attached_elsewhere {
            attach_elsewhere(&plan.backend, volume, host)?;
        }
        let mut cluster = Cluster {
            plan,
            components: options.components.clone(),
            scheduler: None,
            sidecars: Vec::new(),
            emu: None,
            plugins: Vec::new(),
            mount_timeout: options.mount_timeout,
        };
        let agents = cluster.plan.agents.clone();
        for a in &agents {
            cluster.start_plugin(a, options.preempt)?;
        }
        for a in &agents {
            cluster.wait_plugin(a).await?;
        }
        cluster.start_emulator(options).await?;
        cluster.start_scheduler(options).await?;
        for a in &agents {
            cluster.start_sidecar(a)?;
        }
        Ok(cluster)
    }

    /// Starts (or restarts) the volume plugin of agent `a`.
    pub fn start_plugin(&mut self, a: &AgentPlan, preempt: bool) -> Result<(), DevError> {
        let socket = a.dir.join(format!("{DRIVER}.sock"));
        let _ = std::fs::remove_file(&socket);
        let mut args: Vec<String> = vec![
            "--socket".into(),
            socket.display().to_string(),
            "--backend".into(),
            self.plan.backend.display().to_string(),
            "--host".into(),
            a.host.clone(),
            "--zone".into(),
            a.zone.into(),
        ];
        if preempt {
            args.push("--preempt".into());
        }
        let label = format!("fake-rexray-{}", a.host);
        let proc = self
            .components
            .spawn("fake-rexray", &label, args, &self.plan.logs)?;
        self.plugins.push(proc);
        Ok(())
    }

    /// Waits until the volume plugin of `a` listens.
    pub async fn wait_plugin(&self, a: &AgentPlan) -> Result<(), DevError> {
        let socket = a.dir.join(format!("{DRIVER}.sock"));
        let log = self.plan.logs.join(format!("fake-rexray-{}.log", a.host));
        wait_for(&format!("fake-rexray on {}", a.host), &log, || {
            let s = socket.clone();
            async move { s.exists() }
        })
        .await
    }

    async fn start_emulator(&mut self, options: &Options) -> Result<(), DevError> {
        let p = &self.plan;
        let hostnames = p
            .agents
            .iter()
            .map(|a| a.host.clone())
            .collect::<Vec<_>>()
            .join(",");
        let zones = p
            .agents
            .iter()
            .map(|a| a.zone)
            .collect::<Vec<_>>()
            .join(",");
        let args = strings(&[
            "--listen",
            &p.emu.to_string(),
            "--agents",
            &p.agents.len().to_string(),
            "--hostnames",
            &hostnames,
            "--zones",
            &zones,
            "--ports-base",
            &options.ports_base.to_string(),
            "--port-stride",
            &options.port_stride.to_string(),
            "--launcher",
            "process",
            "--work-dir",
            &p.state.join("emu").display().to_string(),
            "--plugin-root",
            &p.state.join("agents").display().to_string(),
            "--agent-ping-timeout",
            &humantime::format_duration(options.agent_ping_timeout).to_string(),
            "--allocation-interval",
            &humantime::format_duration(options.allocation_interval).to_string(),
            "--heartbeat-interval",
            "5s",
        ]);
        self.emu = Some(
            self.components
                .spawn("mesos-emu", "mesos-emu", args, &p.logs)?,
        );
        let addr = p.emu;
        wait_for("mesos-emu", &p.logs.join("mesos-emu.log"), || async move {
            tokio::net::TcpStream::connect(addr).await.is_ok()
        })
        .await
    }

    /// Starts (or restarts, after [`Cluster::kill_scheduler`]) the scheduler and waits for its listener.
    pub async fn start_scheduler(&mut self, options: &Options) -> Result<(), DevError> {
        let nodes = options.nodes;
        let p = &self.plan;
        let (es_program, es_args) = self.components.command("es-standin");
        let mut args = strings(&[
            "--master",
            &format!("http://{}", p.emu),
            "--external-volume-driver",
            DRIVER,
            "--nodes",
            &nodes.to_string(),
            "--cpus",
            "0.5",
            "--mem",
            "512",
            "--image",
            "tether/es-standin",
            "--exec",
            &es_program.display().to_string(),
            "--state-dir",
            &p.state.join("scheduler").display().to_string(),
            "--listen",
            &p.admin.to_string(),
            "--agent-token-file",
            &p.agent_token.display().to_string(),
            "--admin-token-file",
            &p.admin_token.display().to_string(),
            "--report-interval",
            "1s",
            "--prepare-timeout",
            &humantime::format_duration(options.prepare_timeout).to_string(),
            "--startup-grace",
            &humantime::format_duration(options.startup_grace).to_string(),
            "--hostname",
            "127.0.0.1",
        ]);
        for a in es_args {
            args.push("--exec-arg".into());
            args.push(a);
        }
        self.scheduler =
            Some(
                self.components
                    .spawn("tether-scheduler", "tether-scheduler", args, &p.logs)?,
            );
        let admin = p.admin;
        wait_for(
            "tether-scheduler",
            &p.logs.join("tether-scheduler.log"),
            || async move { tokio::net::TcpStream::connect(admin).await.is_ok() },
        )
        .await
    }

    /// SIGKILLs the scheduler, as a crash would.
    pub fn kill_scheduler(&mut self) {
        if let Some(mut s) = self.scheduler.take() {
            s.kill9();
        }
    }

    /// Starts (or restarts) the sidecar of agent `a`.
    pub fn start_sidecar(&mut self, a: &AgentPlan) -> Result<(), DevError> {
        let p = &self.plan;
        let args = strings(&[
            "--scheduler",
            &format!("http://{}", p.admin),
            "--driver",
            DRIVER,
            "--plugin-dir",
            &a.dir.display().to_string(),
            "--spec-dir",
            &a.dir.join("spec").display().to_string(),
            "--hostname",
            &a.host,
            "--zone",
            a.zone,
            "--state-file",
            &a.dir.join("sidecar.json").display().to_string(),
            "--token-file",
            &p.agent_token.display().to_string(),
            "--report-interval",
            "1s",
            "--mount-timeout",
            &humantime::format_duration(self.mount_timeout).to_string(),
        ]);
        let label = format!("tether-sidecar-{}", a.host);
        let proc = self
            .components
            .spawn("tether-sidecar", &label, args, &p.logs)?;
        self.sidecars.retain(|s| s.label() != label);
        self.sidecars.push(proc);
        Ok(())
    }

    /// SIGKILLs the sidecar of `host` (returns false when it has none).
    pub fn kill_sidecar(&mut self, host: &str) -> bool {
        let label = format!("tether-sidecar-{host}");
        let Some(i) = self.sidecars.iter().position(|s| s.label() == label) else {
            return false;
        };
        self.sidecars.remove(i).kill9();
        true
    }

    /// SIGKILLs the volume plugin of `host`.
    pub fn kill_plugin(&mut self, host: &str) -> bool {
        let label = format!("fake-rexray-{host}");
        let Some(i) = self.plugins.iter().position(|s| s.label() == label) else {
            return false;
        };
        self.plugins.remove(i).kill9();
        true
    }

    /// SIGTERM to everything, scheduler first (it keeps the tasks; the emulator then stops them),
    /// waiting for each to exit.
    pub async fn stop(&mut self) {
        let grace = Duration::from_secs(15);
        let mut procs: Vec<Proc> = Vec::new();
        procs.extend(self.scheduler.take());
        procs.append(&mut self.sidecars);
        procs.extend(self.emu.take());
        procs.append(&mut self.plugins);
        for mut p in procs {
            if p.stop(grace).await.is_err() {
                tracing::warn!(component = p.label(), "did not stop in time; killing it");
                p.kill9();
            }
        }
    }
}

async fn wait_for<F, Fut>(what: &str, log: &Path, mut ready: F) -> Result<(), DevError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while tokio::time::Instant::now() < deadline {
        if ready().await {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(DevError::NotReady(what.to_owned(), log.to_path_buf()))
}

async fn admin_client(
    plan: &Plan,
) -> Option<AdminClient<tonic::service::interceptor::InterceptedService<Channel, tetherctl::Auth>>>
{
    let token = std::fs::read_to_string(&plan.admin_token).ok()?;
    let value = tether_proto::client::bearer(&token).ok()?;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", plan.admin))
        .ok()?
        .connect()
        .await
        .ok()?;
    Some(AdminClient::with_interceptor(
        channel,
        tetherctl::Auth::new(Some(value)),
    ))
}

/// Prints the cluster's state with tetherctl's own tables.
async fn print_status(plan: &Plan, out: &mut (dyn std::io::Write + Send)) {
    use tetherctl::output::{self, Format};
    let Some(mut c) = admin_client(plan).await else {
        let _ = writeln!(out, "(scheduler not answering yet)");
        return;
    };
    if let Ok(cluster) = c.get_cluster(GetClusterRequest {}).await {
        let _ = output::cluster(out, Format::Table, cluster.get_ref());
    }
    let _ = writeln!(out);
    if let Ok(nodes) = c.list_nodes(ListNodesRequest {}).await {
        let _ = output::nodes(out, Format::Table, &nodes.get_ref().nodes);
    }
    let _ = writeln!(out);
    if let Ok(agents) = c.list_agents(ListAgentsRequest {}).await {
        let _ = output::agents(out, Format::Table, &agents.get_ref().agents);
    }
    let _ = writeln!(out);
    if let Ok(volumes) = c.list_volumes(ListVolumesRequest {}).await {
        let _ = output::volumes(out, Format::Table, &volumes.get_ref().volumes);
    }
}

/// Runs the local cluster until `shutdown`, printing its status; stops every process it started.
pub async fn run(args: Args, shutdown: CancellationToken) -> Result<(), DevError> {
    let exe = std::env::current_exe().map_err(io(
        "cannot find this executable",
        Path::new("/proc/self/exe"),
    ))?;
    let plan = Plan::new(&args);
    let options = Options::from_args(Components::MultiCall(exe), &args);
    let mut cluster = Cluster::start(plan.clone(), &options).await?;
    if args.chaos {
        let result = chaos::run(&args, &mut cluster, &options, shutdown).await;
        println!("stopping the local cluster...");
        cluster.stop().await;
        return result;
    }
    let banner = format!(
        "Tether local cluster: {} agents, {} nodes; state and logs in {}\n\
         Try, in another terminal:\n  \
         cargo run -q --bin tetherctl -- --scheduler http://{} --token-file {} nodes\n\
         Ctrl-C stops everything.\n",
        plan.agents.len(),
        args.nodes,
        plan.state.display(),
        plan.admin,
        plan.admin_token.display(),
    );
    println!("{banner}");
    let mut tick = tokio::time::interval(args.status_interval);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            _ = tick.tick() => {
                let mut buf: Vec<u8> = Vec::new();
                print_status(&plan, &mut buf).await;
                println!("----- {} -----\n{}", humantime::format_rfc3339_seconds(std::time::SystemTime::now()), String::from_utf8_lossy(&buf));
            }
        }
    }
    println!("stopping the local cluster...");
    cluster.stop().await;
    println!("stopped; state kept in {}", plan.state.display());
    Ok(())
}
