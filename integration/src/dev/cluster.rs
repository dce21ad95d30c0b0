//! The supervisor: every component of a local cluster as a child process (started in dependency order,
//! each waited for until it listens), restartable one by one for the faults of `--chaos` and the
//! end-to-end tests, stopped in reverse order.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::plan::{AgentPlan, DRIVER, Plan, attach_elsewhere, prepare};
use super::{Args, DevError};
use crate::process::Proc;
use tether_zk::testing::ZkServer;

/// The scheduler's state root in the cluster's ZooKeeper (`Options::zookeeper`).
const ZK_ROOT: &str = "/tether/dev";
/// Its ZooKeeper session timeout: short, so a lost ZooKeeper costs the leader its leadership in seconds.
pub const ZK_SESSION_TIMEOUT: Duration = Duration::from_secs(4);

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
    /// detach its volumes, so the next Mount must take them (a force-detach: the old holder loses them).
    pub preempt: bool,
    /// The scheduler's `--es-security`. The scheduler's default volume layout serves every setting: the
    /// config volume is mounted inside the image's config directory, where the node's key, certificates
    /// and password file go.
    pub es_security: String,
    /// The scheduler's `--fencing storage` with this `--unreachable-replace-after`; `None`: `--fencing
    /// none` (an UNREACHABLE node waits for `tetherctl agents gone`). Storage fencing is safe here
    /// because the REX-Ray doubles attach a volume in one place only and preempt.
    pub storage_fencing: Option<Duration>,
    /// Keep the scheduler's state in a standalone ZooKeeper the cluster starts (`--state zk://...`).
    pub zookeeper: bool,
    /// The scheduler's `--metrics-listen`, when a test scrapes it.
    pub scheduler_metrics: Option<std::net::SocketAddr>,
    /// The scheduler's `--group`s (empty: one group of `nodes`); their volumes are pre-created.
    pub groups: Vec<String>,
    /// The scheduler's `--image`: the stand-in plays the version its tag names (no tag: 8.x).
    pub image: String,
    /// More scheduler flags, after the ones the cluster sets (e.g. a test's `--rollout-step-timeout` or
    /// `--maintenance-answer-interval`).
    pub scheduler_args: Vec<String>,
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
            es_security: "auto".into(),
            attached_elsewhere: Vec::new(),
            preempt: true,
            storage_fencing: Some(Duration::from_secs(10)),
            zookeeper: false,
            scheduler_metrics: None,
            groups: Vec::new(),
            image: "tether/es-standin".into(),
            scheduler_args: Vec::new(),
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
            storage_fencing: (args.fencing == super::args::Fencing::Storage)
                .then_some(args.unreachable_replace_after),
            zookeeper: args.zookeeper,
            es_security: args.es_security.clone(),
            groups: args.groups.clone(),
            ..Options::new(components, args.nodes)
        }
    }
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
    /// The standalone ZooKeeper holding the scheduler's state, with `Options::zookeeper`.
    pub zookeeper: Option<ZkServer>,
    mount_timeout: Duration,
}

impl Cluster {
    /// Starts every component of `plan` as a child of this process.
    pub async fn start(plan: Plan, options: &Options) -> Result<Cluster, DevError> {
        if options.groups.is_empty() {
            prepare(&plan, options.nodes, &options.missing_volumes)?;
        } else {
            prepare(&plan, 0, &options.missing_volumes)?;
            super::plan::prepare_groups(&plan, &options.groups)?;
        }
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
            zookeeper: None,
            mount_timeout: options.mount_timeout,
        };
        if options.zookeeper {
            let zk = ZkServer::start().await.map_err(|e| DevError::Component {
                component: "zookeeper".into(),
                message: e.to_string(),
            })?;
            cluster.zookeeper = Some(zk);
        }
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
            cluster.install_agent_token(a).await?;
            cluster.start_sidecar(a)?;
        }
        Ok(cluster)
    }

    /// Mints `a`'s own token through the scheduler's admin API, as an operator would (`tetherctl
    /// agent-token HOST`), and installs it as the sidecar's `--token-file` (0600). Tokens survive
    /// scheduler restarts: the secret is in its state directory.
    pub async fn install_agent_token(&self, a: &AgentPlan) -> Result<(), DevError> {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let log = self.plan.logs.join("tether-scheduler.log");
        // A bound for a scheduler starting on a loaded machine (with --zookeeper it is elected and loads
        // its state from a JVM ZooKeeper first): a clean CI run once saw 30 s pass.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
        let mut last = String::from("its admin API never answered");
        let token = loop {
            if let Some(mut admin) = super::status::admin_client(&self.plan).await {
                let minted = admin
                    .mint_agent_token(tether_proto::v1::MintAgentTokenRequest {
                        host: a.host.clone(),
                        ttl_seconds: 30 * 86_400,
                    })
                    .await;
                match minted {
                    Ok(r) => break r.into_inner().token,
                    Err(s) => last = format!("{}: {}", s.code(), s.message()),
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(DevError::Component {
                    component: "tether-scheduler".into(),
                    message: format!(
                        "minting the agent token of {} (last answer: {last}); see {}",
                        a.host,
                        log.display()
                    ),
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let path = a.token_file();
        let _ = std::fs::remove_file(&path);
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .and_then(|mut f| f.write_all(format!("{token}\n").as_bytes()))
            .map_err(|source| DevError::Io {
                what: "cannot write the agent token",
                path: path.clone(),
                source,
            })
    }

    /// Starts (or restarts) the volume plugin of agent `a`.
    pub fn start_plugin(&mut self, a: &AgentPlan, preempt: bool) -> Result<(), DevError> {
        let socket = Self::plugin_socket(a);
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
        let socket = Self::plugin_socket(a);
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
            &options.image,
            "--es-security",
            &options.es_security,
            "--exec",
            &es_program.display().to_string(),
            "--state-dir",
            &p.state.join("scheduler").display().to_string(),
            "--listen",
            &p.admin.to_string(),
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
            "--tls-cert",
            &p.tls_cert.display().to_string(),
            "--tls-key",
            &p.tls_key.display().to_string(),
        ]);
        for a in es_args {
            args.push("--exec-arg".into());
            args.push(a);
        }
        for g in &options.groups {
            args.push("--group".into());
            args.push(g.clone());
        }
        if let Some(zk) = &self.zookeeper {
            args.extend(strings(&[
                "--state",
                &zk.url(ZK_ROOT).to_string(),
                "--zk-session-timeout",
                &humantime::format_duration(ZK_SESSION_TIMEOUT).to_string(),
            ]));
            if options.es_security != "off" {
                let [cert, key, password] = super::plan::operator_es_secrets(&self.plan)?;
                for (flag, path) in [
                    ("--es-ca-cert", cert),
                    ("--es-ca-key", key),
                    ("--es-password-file", password),
                ] {
                    args.push(flag.into());
                    args.push(path.display().to_string());
                }
            }
        }
        if let Some(after) = options.storage_fencing {
            args.extend(strings(&[
                "--fencing",
                "storage",
                "--unreachable-replace-after",
                &humantime::format_duration(after).to_string(),
                "--es-poll-interval",
                "1s",
            ]));
        }
        if let Some(addr) = options.scheduler_metrics {
            args.extend(strings(&["--metrics-listen", &addr.to_string()]));
        }
        args.extend(options.scheduler_args.iter().cloned());
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
            &p.scheduler_url(),
            "--scheduler-ca",
            &p.tls_ca.display().to_string(),
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
            &a.token_file().display().to_string(),
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

    /// The socket of the volume plugin of `a` (also its `/Fake.*` fault API).
    pub fn plugin_socket(a: &AgentPlan) -> PathBuf {
        a.dir.join(format!("{DRIVER}.sock"))
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
