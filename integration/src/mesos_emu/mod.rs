//! A Mesos master emulator speaking the real v1 scheduler HTTP API (JSON + RecordIO), faithful to the
//! checklist of `shared/protocols/mesos-v1-scheduler.md` §10: real id formats, the status-code ladder,
//! SUBSCRIBED + immediate HEARTBEAT, per-agent offers per allocation interval with decline filters and
//! SUPPRESS/REVIVE, ACCEPT validation with the real TASK_ERROR/TASK_DROPPED reasons, acknowledged and
//! resent status updates, reconciliation per the case table, failover timeout, TEARDOWN; the operator
//! API's MARK_AGENT_GONE (`POST /api/v1`); and faults, both as [`EmuHandle`] methods and as
//! `POST /emu/...` on the same port:
//!
//! | route | what happens (as on a real master, §5.4–5.6) |
//! |---|---|
//! | `agents/<id>/kill` | the machine dies: its tasks' processes die, nothing is reported until the ping timeout, then TASK_UNREACHABLE (REASON_AGENT_REMOVED, `unreachable_time`), and nothing more |
//! | `agents/<id>/restart` | a dead machine comes back: under its old id, its old tasks TASK_GONE; with `?wiped=true` (or body `wiped`), under a new id, the old tasks staying UNREACHABLE until the registry forgets the old agent (`registry_max_agent_age`; reconciliation then answers TASK_UNKNOWN). A removed or GONE agent always comes back under a new id. Answers the id. |
//! | `agents/<id>/partition` | the agent is cut off: UNREACHABLE after the ping timeout while its tasks keep running; with `?freeze=true` (or body `freeze`) their processes stop where they are (SIGSTOP, `docker pause`) |
//! | `agents/<id>/heal` | the partition ends: the tasks are reported again (REASON_AGENT_REREGISTERED), frozen ones continue; a GONE agent is shut down with what still ran there |
//! | `agents/<id>/gone` | the operator's MARK_AGENT_GONE (also `POST /api/v1`): TASK_GONE_BY_OPERATOR |
//! | `agents/<id>/remove` | maintenance: the agent is removed at once, its tasks killed and reported TASK_GONE (REASON_AGENT_REMOVED) |
//! | `tasks/<id>/fail`, `offers/<id>/rescind`, `master/restart`, `master/redirect`, `master/unavailable` | a task fails (body: message), an offer is rescinded, the master fails over, redirects (body: leader) or has no leader |

pub mod docker_launcher;
pub mod health;
mod http;
pub mod launcher;
mod master;
mod resources;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio_util::sync::CancellationToken;

pub use docker_launcher::DockerLauncher;
pub use launcher::{
    DirVolumeAttacher, LaunchSpec, Launcher, PluginVolumeAttacher, ProcessLauncher, Reporter,
    SimLauncher, TaskControl, VolumeAttacher, volume_env_name,
};
pub use master::Restart;

/// The version string `GET /version` and MasterInfo report.
pub const MESOS_VERSION: &str = "1.11.0";

/// Mesos' `--registry_max_agent_age` default: two weeks.
pub const REGISTRY_MAX_AGENT_AGE: Duration = Duration::from_secs(14 * 24 * 3600);

/// One emulated agent.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Defaults to the real format `<master id>-S<n>`.
    pub id: Option<String>,
    pub hostname: String,
    pub cpus: f64,
    /// MB.
    pub mem: f64,
    /// MB.
    pub disk: f64,
    /// Inclusive port range.
    pub ports: (u64, u64),
    /// TEXT attributes.
    pub attributes: Vec<(String, String)>,
    pub region: Option<String>,
    pub zone: Option<String>,
    /// Resources reserved on top of the unreserved ones above, in either form the master accepts
    /// (`role` with an optional `reservation`, or `reservations`), like `--resources=cpus(es):2` (STATIC)
    /// or a RESERVE (DYNAMIC): offered only to that role, with the reservation.
    pub reserved: Vec<tether_mesos::model::Resource>,
}

impl AgentConfig {
    /// Agent `n` of a default cluster: 4 cpus, 8 GiB, 100 GB, ports 31000-32000, zones a/b/c round robin.
    pub fn numbered(n: usize) -> Self {
        AgentConfig {
            id: None,
            hostname: format!("agent{n}.emu"),
            cpus: 4.0,
            mem: 8192.0,
            disk: 100_000.0,
            ports: (31000, 32000),
            attributes: vec![("rack".into(), format!("r{}", n % 2))],
            region: Some("region-1".into()),
            zone: Some(format!("zone-{}", ["a", "b", "c"][n % 3])),
            reserved: Vec::new(),
        }
    }
}

/// Emulator configuration; every interval is configurable so tests can run fast.
#[derive(Debug, Clone)]
pub struct EmuConfig {
    pub bind: SocketAddr,
    pub hostname: String,
    pub agents: Vec<AgentConfig>,
    pub allocation_interval: Duration,
    pub heartbeat_interval: Duration,
    pub status_resend_interval: Duration,
    /// How long a partitioned agent stays silent before its tasks become UNREACHABLE (15 s × 5 in Mesos).
    pub agent_ping_timeout: Duration,
    /// After a master restart, agents stay "recovered but not re-registered" this long.
    pub agent_reregister_delay: Duration,
    /// How long the registry remembers an UNREACHABLE or GONE agent (`--registry_max_agent_age`, 2 weeks
    /// in Mesos); a forgotten agent's tasks are TASK_UNKNOWN to reconciliation.
    pub registry_max_agent_age: Duration,
    /// When set, calls (scheduler and operator API) need HTTP basic auth with this (principal, secret).
    pub credentials: Option<(String, String)>,
    pub launcher: Arc<dyn Launcher>,
    /// Serve https with this PEM certificate chain and key, as a master started with `--ssl_*` would.
    pub tls: Option<EmuTls>,
}

/// A PEM certificate chain and private key for serving https.
#[derive(Debug, Clone)]
pub struct EmuTls {
    pub cert_pem: String,
    pub key_pem: String,
}

impl EmuTls {
    fn acceptor(&self) -> Result<tokio_rustls::TlsAcceptor, EmuError> {
        use rustls::pki_types::pem::PemObject as _;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let bad = |e: &dyn std::fmt::Display| EmuError::Tls(e.to_string());
        let certs = CertificateDer::pem_slice_iter(self.cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bad(&e))?;
        let key = PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes()).map_err(|e| bad(&e))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| bad(&e))?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| bad(&e))?;
        Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
    }
}

impl EmuConfig {
    /// Mesos' defaults (1 s allocation, 15 s heartbeat, 10 s resend, 75 s ping timeout, 2 weeks registry
    /// age) and `n` agents.
    pub fn with_agents(n: usize) -> Self {
        EmuConfig {
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            hostname: "localhost".into(),
            agents: (0..n).map(AgentConfig::numbered).collect(),
            allocation_interval: Duration::from_secs(1),
            heartbeat_interval: Duration::from_secs(15),
            status_resend_interval: Duration::from_secs(10),
            agent_ping_timeout: Duration::from_secs(75),
            agent_reregister_delay: Duration::from_secs(2),
            registry_max_agent_age: REGISTRY_MAX_AGENT_AGE,
            credentials: None,
            launcher: Arc::new(SimLauncher::default()),
            tls: None,
        }
    }

    /// Short intervals for tests.
    pub fn fast(n: usize) -> Self {
        EmuConfig {
            allocation_interval: Duration::from_millis(100),
            heartbeat_interval: Duration::from_millis(100),
            status_resend_interval: Duration::from_millis(200),
            agent_ping_timeout: Duration::from_millis(200),
            agent_reregister_delay: Duration::from_millis(200),
            ..EmuConfig::with_agents(n)
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EmuError {
    #[error("cannot bind {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot serve https: {0}")]
    Tls(String),
    #[error("agent {agent}: invalid reserved resources: {detail}")]
    Reserved { agent: String, detail: String },
}

/// A running emulator. Dropping it does not stop it; call [`EmuHandle::shutdown`].
#[derive(Debug, Clone)]
pub struct EmuHandle {
    shared: Arc<master::Shared>,
    addr: SocketAddr,
    scheme: &'static str,
    cancel: CancellationToken,
}

/// A snapshot of one task, for assertions.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskView {
    pub framework_id: String,
    pub task_id: String,
    pub agent_id: String,
    pub state: tether_mesos::model::TaskState,
    pub unacknowledged: usize,
}

/// The emulator.
#[derive(Debug)]
pub struct MesosEmu;

impl MesosEmu {
    /// Binds, then serves until [`EmuHandle::shutdown`].
    pub async fn start(config: EmuConfig) -> Result<EmuHandle, EmuError> {
        for a in &config.agents {
            resources::Res::from_resources(&a.reserved).map_err(|detail| EmuError::Reserved {
                agent: a.hostname.clone(),
                detail,
            })?;
        }
        let listener = tokio::net::TcpListener::bind(config.bind)
            .await
            .map_err(|source| EmuError::Bind {
                addr: config.bind,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| EmuError::Bind {
            addr: config.bind,
            source,
        })?;
        let acceptor = config.tls.as_ref().map(EmuTls::acceptor).transpose()?;
        let scheme = if acceptor.is_some() { "https" } else { "http" };
        let cfg = Arc::new(config);
        let shared = Arc::new_cyclic(|me| master::Shared {
            state: Mutex::new(master::State::new(cfg.clone(), addr.port(), me.clone())),
        });
        let cancel = CancellationToken::new();
        let tick = [
            cfg.allocation_interval,
            cfg.heartbeat_interval,
            cfg.status_resend_interval,
            cfg.agent_ping_timeout,
        ]
        .into_iter()
        .min()
        .unwrap_or(Duration::from_secs(1))
        .div_f64(5.0)
        .clamp(Duration::from_millis(5), Duration::from_millis(200));
        let (s, c) = (shared.clone(), cancel.clone());
        tokio::spawn(async move {
            let mut iv = tokio::time::interval(tick);
            iv.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = c.cancelled() => return,
                    _ = iv.tick() => s.lock().tick(tokio::time::Instant::now()),
                }
            }
        });
        let (s, c) = (shared.clone(), cancel.clone());
        tokio::spawn(async move {
            loop {
                let conn = tokio::select! {
                    _ = c.cancelled() => return,
                    a = listener.accept() => a,
                };
                let Ok((stream, _)) = conn else { continue };
                let _ = stream.set_nodelay(true);
                let s = s.clone();
                let c = c.clone();
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| http::handle(s.clone(), req));
                    let http = hyper::server::conn::http1::Builder::new();
                    let served = async {
                        match acceptor {
                            None => http.serve_connection(TokioIo::new(stream), svc).await,
                            Some(a) => match a.accept(stream).await {
                                Ok(tls) => http.serve_connection(TokioIo::new(tls), svc).await,
                                Err(e) => {
                                    tracing::debug!(error = %e, "TLS handshake failed");
                                    Ok(())
                                }
                            },
                        }
                    };
                    tokio::select! {
                        _ = c.cancelled() => {}
                        r = served => if let Err(e) = r { tracing::debug!(error = %e, "connection ended") },
                    }
                });
            }
        });
        tracing::info!(%addr, "mesos emulator listening");
        Ok(EmuHandle {
            shared,
            addr,
            scheme,
            cancel,
        })
    }
}

impl EmuHandle {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
    /// `http://127.0.0.1:<port>` (`https://` when serving TLS).
    pub fn url(&self) -> String {
        format!("{}://{}", self.scheme, self.addr)
    }
    pub fn shutdown(&self) {
        self.cancel.cancel();
        self.restart_master();
    }
    pub fn master_id(&self) -> String {
        self.shared.lock().master_id.clone()
    }
    /// Agent ids in configuration order.
    pub fn agent_ids(&self) -> Vec<String> {
        let st = self.shared.lock();
        let mut v: Vec<(usize, String)> = st
            .agents
            .values()
            .map(|a| {
                (
                    st.cfg
                        .agents
                        .iter()
                        .position(|c| c.hostname == a.cfg.hostname)
                        .unwrap_or(0),
                    a.id.value.clone(),
                )
            })
            .collect();
        v.sort();
        v.into_iter().map(|(_, id)| id).collect()
    }
    pub fn tasks(&self) -> Vec<TaskView> {
        let st = self.shared.lock();
        st.frameworks
            .values()
            .flat_map(|f| {
                f.tasks.values().map(|t| TaskView {
                    framework_id: f.id.value.clone(),
                    task_id: t.info.task_id.value.clone(),
                    agent_id: t.agent.value.clone(),
                    state: t.state,
                    unacknowledged: t.pending.len(),
                })
            })
            .collect()
    }
    /// Whether the framework has a live stream.
    pub fn framework_connected(&self, id: &str) -> bool {
        self.shared
            .lock()
            .frameworks
            .get(id)
            .is_some_and(|f| f.stream.is_some())
    }
    pub fn framework_removed(&self, id: &str) -> bool {
        self.shared.lock().removed.contains(id)
    }
    pub fn outstanding_offers(&self) -> usize {
        self.shared.lock().offers.len()
    }
    /// `GET /state` as JSON.
    pub fn state(&self) -> serde_json::Value {
        http::state_json(&self.shared)
    }
    /// The agent's machine dies (see the module's table); false for an unknown agent.
    pub fn kill_agent(&self, id: &str) -> bool {
        self.shared.lock().kill_agent(id).is_ok()
    }
    /// Maintenance: the agent is removed at once, its tasks TASK_GONE.
    pub fn remove_agent(&self, id: &str) -> bool {
        self.shared.lock().remove_agent(id).is_ok()
    }
    /// The agent is cut off while its tasks keep running.
    pub fn partition_agent(&self, id: &str) -> bool {
        self.shared.lock().partition_agent(id, false).is_ok()
    }
    /// The agent is cut off and its tasks' processes stop where they are until it heals.
    pub fn freeze_agent(&self, id: &str) -> bool {
        self.shared.lock().partition_agent(id, true).is_ok()
    }
    /// The partition ends; false for an unknown agent or a dead machine.
    pub fn heal_agent(&self, id: &str) -> bool {
        self.shared.lock().heal_agent(id).is_ok()
    }
    /// The operator's MARK_AGENT_GONE; false when the master does not know the agent.
    pub fn mark_agent_gone(&self, id: &str) -> bool {
        self.shared.lock().mark_gone(id).is_ok()
    }
    /// A dead, removed or GONE agent's machine comes back; returns the id it registers under (`None`:
    /// unknown, or up).
    pub fn restart_agent(&self, id: &str, how: Restart) -> Option<String> {
        self.shared.lock().restart_agent(id, how).ok()
    }
    pub fn fail_task(&self, task_id: &str) -> bool {
        self.shared
            .lock()
            .fail_task(task_id, "failed by fault injection")
    }
    pub fn rescind_offer(&self, offer_id: &str) -> bool {
        self.shared.lock().rescind_offer(offer_id)
    }
    pub fn restart_master(&self) {
        self.shared.lock().restart_master()
    }
    /// Makes this instance a non-leader that answers 307 to `host:port` (None: leader again).
    pub fn set_leader(&self, leader: Option<String>) {
        self.shared.lock().leader = leader;
    }
    /// Every event record written from now on (exact JSON bytes), for conformance checks.
    pub fn tap_events(&self) -> tokio::sync::mpsc::UnboundedReceiver<bytes::Bytes> {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        self.shared.lock().tap = Some(tx);
        rx
    }
    /// Stops (false) or resumes heartbeats, to exercise the client's liveness detection.
    pub fn set_heartbeats(&self, enabled: bool) {
        self.shared.lock().heartbeats_enabled = enabled;
    }
    /// Makes this instance answer 503 "No leader elected".
    pub fn set_unavailable(&self, unavailable: bool) {
        self.shared.lock().unavailable = unavailable;
    }
}

/// Which launcher the binary uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LauncherKind {
    Sim,
    Process,
    /// Containers through the Docker engine API.
    Docker,
}

/// `mesos-emu` flags.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "mesos-emu",
    about = "Mesos master emulator (v1 scheduler HTTP API) for tests and the local cluster"
)]
pub struct Args {
    /// Address to listen on.
    #[arg(
        long,
        env = "TETHER_MESOS_EMU_LISTEN",
        default_value = "127.0.0.1:5050"
    )]
    pub listen: SocketAddr,
    /// Hostname reported in MasterInfo.
    #[arg(long, env = "TETHER_MESOS_EMU_HOSTNAME", default_value = "localhost")]
    pub hostname: String,
    /// Number of emulated agents.
    #[arg(long, env = "TETHER_MESOS_EMU_AGENTS", default_value_t = 3)]
    pub agents: usize,
    /// cpus per agent.
    #[arg(long, env = "TETHER_MESOS_EMU_AGENT_CPUS", default_value_t = 4.0)]
    pub agent_cpus: f64,
    /// mem (MB) per agent.
    #[arg(long, env = "TETHER_MESOS_EMU_AGENT_MEM", default_value_t = 8192.0)]
    pub agent_mem: f64,
    /// Comma-separated host names of the agents, in order (default `agent<n>.emu`). Where every agent
    /// runs on this one machine, loopback addresses (`127.0.0.11,127.0.0.12,...`) make them resolvable.
    #[arg(long, env = "TETHER_MESOS_EMU_HOSTNAMES", value_delimiter = ',')]
    pub hostnames: Vec<String>,
    /// First port of the agents' `ports` resource.
    #[arg(long, env = "TETHER_MESOS_EMU_PORTS_BASE", default_value_t = 31000)]
    pub ports_base: u64,
    /// Give agent `i` the ports `base + i*stride ..= base + (i+1)*stride - 1` instead of one shared range
    /// (0 = every agent offers `base..=base+1000`, as separate real hosts would). Needed when the agents'
    /// tasks share one machine.
    #[arg(long, env = "TETHER_MESOS_EMU_PORT_STRIDE", default_value_t = 0)]
    pub port_stride: u64,
    /// Comma-separated zones assigned round robin to the agents.
    #[arg(
        long,
        env = "TETHER_MESOS_EMU_ZONES",
        value_delimiter = ',',
        default_value = "zone-a,zone-b,zone-c"
    )]
    pub zones: Vec<String>,
    /// Allocation interval (offers per agent per interval).
    #[arg(long, env = "TETHER_MESOS_EMU_ALLOCATION_INTERVAL", default_value = "1s", value_parser = humantime::parse_duration)]
    pub allocation_interval: Duration,
    /// Heartbeat interval on subscription streams.
    #[arg(long, env = "TETHER_MESOS_EMU_HEARTBEAT_INTERVAL", default_value = "15s", value_parser = humantime::parse_duration)]
    pub heartbeat_interval: Duration,
    /// Resend interval of unacknowledged status updates.
    #[arg(long, env = "TETHER_MESOS_EMU_RESEND_INTERVAL", default_value = "10s", value_parser = humantime::parse_duration)]
    pub resend_interval: Duration,
    /// Silence after which a partitioned agent is UNREACHABLE.
    #[arg(long, env = "TETHER_MESOS_EMU_AGENT_PING_TIMEOUT", default_value = "75s", value_parser = humantime::parse_duration)]
    pub agent_ping_timeout: Duration,
    /// How long the registry remembers an UNREACHABLE or GONE agent (Mesos' `--registry_max_agent_age`).
    #[arg(long, env = "TETHER_MESOS_EMU_REGISTRY_MAX_AGENT_AGE", default_value = "2weeks", value_parser = humantime::parse_duration)]
    pub registry_max_agent_age: Duration,
    /// How tasks run: scripted (sim), as local processes, or as containers of a Docker engine.
    #[arg(
        long,
        env = "TETHER_MESOS_EMU_LAUNCHER",
        value_enum,
        default_value = "sim"
    )]
    pub launcher: LauncherKind,
    /// Root of task sandboxes and directory-backed Docker volumes (process launcher).
    #[arg(
        long,
        env = "TETHER_MESOS_EMU_WORK_DIR",
        default_value = "/tmp/tether-mesos-emu"
    )]
    pub work_dir: PathBuf,
    /// Attach DOCKER_VOLUME volumes through each agent's volume plugin, found under `<DIR>/<agent host>/`.
    /// Without it the process launcher uses plain directories under the work dir and the docker launcher
    /// lets the engine mount volumes with the task's driver.
    #[arg(long, env = "TETHER_MESOS_EMU_PLUGIN_ROOT")]
    pub plugin_root: Option<PathBuf>,
    /// Docker engine socket (docker launcher).
    #[arg(
        long,
        env = "TETHER_MESOS_EMU_DOCKER_SOCKET",
        default_value = crate::docker_engine::DEFAULT_SOCKET
    )]
    pub docker_socket: PathBuf,
    /// Image of tasks that name none (docker launcher).
    #[arg(long, env = "TETHER_MESOS_EMU_DOCKER_IMAGE")]
    pub docker_image: Option<String>,
    /// Value of the `tether.mesos-emu.instance` label on this emulator's containers (docker launcher);
    /// containers carrying it are removed when the emulator starts and when it stops.
    #[arg(
        long,
        env = "TETHER_MESOS_EMU_DOCKER_INSTANCE",
        default_value = "mesos-emu"
    )]
    pub docker_instance: String,
    /// Require HTTP basic auth as `principal:secret` on the scheduler and operator APIs.
    #[arg(long, env = "TETHER_MESOS_EMU_CREDENTIAL")]
    pub credential: Option<String>,
    /// Serve https with this PEM certificate chain (needs `--tls-key`).
    #[arg(long, env = "TETHER_MESOS_EMU_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of `--tls-cert`.
    #[arg(long, env = "TETHER_MESOS_EMU_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Log format.
    #[arg(long, env = "TETHER_LOG_FORMAT", value_enum, default_value_t)]
    pub log_format: tether_telemetry::LogFormat,
}

impl Args {
    pub fn to_config(&self) -> EmuConfig {
        let mut agents: Vec<AgentConfig> = (0..self.agents).map(AgentConfig::numbered).collect();
        for (i, a) in agents.iter_mut().enumerate() {
            if let Some(h) = self.hostnames.get(i) {
                a.hostname = h.clone();
            }
            a.ports = if self.port_stride == 0 {
                (self.ports_base, self.ports_base + 1000)
            } else {
                let first = self.ports_base + i as u64 * self.port_stride;
                (first, first + self.port_stride - 1)
            };
            a.cpus = self.agent_cpus;
            a.mem = self.agent_mem;
            a.zone = (!self.zones.is_empty()).then(|| self.zones[i % self.zones.len()].clone());
        }
        let plugins = self
            .plugin_root
            .as_ref()
            .map(|root| -> Arc<dyn VolumeAttacher> {
                Arc::new(PluginVolumeAttacher { root: root.clone() })
            });
        let launcher: Arc<dyn Launcher> = match self.launcher {
            LauncherKind::Sim => Arc::new(SimLauncher::default()),
            LauncherKind::Process => Arc::new(ProcessLauncher {
                sandbox_root: self.work_dir.join("sandboxes"),
                volumes: plugins.unwrap_or_else(|| {
                    Arc::new(DirVolumeAttacher {
                        root: self.work_dir.join("volumes"),
                    })
                }),
            }),
            LauncherKind::Docker => Arc::new(DockerLauncher {
                engine: crate::docker_engine::DockerEngine::new(&self.docker_socket),
                instance: self.docker_instance.clone(),
                default_image: self.docker_image.clone(),
                volumes: plugins,
            }),
        };
        EmuConfig {
            bind: self.listen,
            hostname: self.hostname.clone(),
            agents,
            allocation_interval: self.allocation_interval,
            heartbeat_interval: self.heartbeat_interval,
            status_resend_interval: self.resend_interval,
            agent_ping_timeout: self.agent_ping_timeout,
            agent_reregister_delay: Duration::from_secs(2),
            registry_max_agent_age: self.registry_max_agent_age,
            credentials: self
                .credential
                .as_ref()
                .and_then(|c| c.split_once(':'))
                .map(|(p, s)| (p.to_string(), s.to_string())),
            launcher,
            tls: None,
        }
    }

    /// The certificate and key named by `--tls-cert`/`--tls-key`, read from disk.
    pub fn tls(&self) -> Result<Option<EmuTls>, EmuError> {
        let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) else {
            return Ok(None);
        };
        let read = |p: &PathBuf| {
            std::fs::read_to_string(p)
                .map_err(|e| EmuError::Tls(format!("cannot read {}: {e}", p.display())))
        };
        Ok(Some(EmuTls {
            cert_pem: read(cert)?,
            key_pem: read(key)?,
        }))
    }
}

/// Runs the emulator until `cancel` fires.
pub async fn run(args: Args, cancel: CancellationToken) -> Result<(), EmuError> {
    let mut config = args.to_config();
    config.tls = args.tls()?;
    let launcher = config.launcher.clone();
    // Containers of an earlier run of this instance that died without cleaning up.
    launcher.cleanup().await;
    let h = MesosEmu::start(config).await?;
    println!(
        "mesos-emu listening on {} with agents {:?}",
        h.url(),
        h.agent_ids()
    );
    cancel.cancelled().await;
    h.shutdown();
    launcher.cleanup().await;
    Ok(())
}
