//! A whole local cluster of real processes (the workspace's binaries, started by [`crate::dev`]'s
//! supervisor) in a temp dir, for end-to-end tests, and the loopback subnet plus port block each one
//! leases so that such tests run in parallel without sharing addresses.

use std::collections::BTreeMap;

use clap::Parser as _;
use tether_proto::v1::Node;

use super::scheduler::{AuthedAdmin, admin_client_at, poll_nodes_within};
use crate::dev::{AgentPlan, Args, Cluster, Components, DRIVER, Options, Plan};
use crate::http_client;
use crate::process::{bin_dir, free_port};

/// A local cluster in a temp dir with fast Mesos timers.
#[derive(Debug)]
pub struct E2eCluster {
    pub cluster: Cluster,
    pub options: Options,
    _subnet: SubnetLease,
    pub dir: tempfile::TempDir,
}

impl E2eCluster {
    /// Starts `agents` agents and `nodes` nodes with fast Mesos timers; `tune` may change the options.
    pub async fn start(agents: usize, nodes: u64, tune: impl FnOnce(&mut Options)) -> E2eCluster {
        E2eCluster::start_in_zones(agents, nodes, 2, tune).await
    }

    /// [`E2eCluster::start`] with the agents (and the nodes' volumes) in `zones` zones (1 or 2).
    pub async fn start_in_zones(
        agents: usize,
        nodes: u64,
        zones: u8,
        tune: impl FnOnce(&mut Options),
    ) -> E2eCluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let args = Args::try_parse_from([
            "tether-dev",
            "--agents",
            &agents.to_string(),
            "--zones",
            &zones.to_string(),
            "--nodes",
            &nodes.to_string(),
            "--state-dir",
            &dir.path().display().to_string(),
            "--admin-listen",
            &format!("127.0.0.1:{}", free_port()),
        ])
        .expect("dev flags");
        let subnet = SubnetLease::acquire();
        assert!(
            agents <= SubnetLease::AGENTS,
            "a test cluster's port block holds {} agents",
            SubnetLease::AGENTS
        );
        let plan = Plan::with_subnet(&args, &subnet.prefix);
        let mut options = Options::new(Components::Binaries(bin_dir()), nodes);
        options.allocation_interval = std::time::Duration::from_millis(200);
        options.agent_ping_timeout = std::time::Duration::from_secs(3);
        options.startup_grace = std::time::Duration::from_secs(2);
        options.ports_base = subnet.ports_base();
        options.port_stride = SubnetLease::PORT_STRIDE;
        options.prepare_timeout = std::time::Duration::from_secs(5);
        // Storage fencing (the REX-Ray doubles preempt): a dead agent's node comes back on its own.
        options.storage_fencing = Some(std::time::Duration::from_secs(3));
        tune(&mut options);
        let cluster = Cluster::start(plan, &options)
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
        admin_client_at(&plan.scheduler_url(), Some(&plan.tls_ca), &plan.admin_token).await
    }

    /// Waits until the node list satisfies `pred`; panics with the list and the scheduler's log tail.
    pub async fn wait_nodes(&self, what: &str, pred: impl Fn(&[Node]) -> bool) -> Vec<Node> {
        self.wait_nodes_within(what, super::DEADLINE, pred).await
    }

    /// [`E2eCluster::wait_nodes`] with a bound of its own.
    pub async fn wait_nodes_within(
        &self,
        what: &str,
        within: std::time::Duration,
        pred: impl Fn(&[Node]) -> bool,
    ) -> Vec<Node> {
        let mut admin = self.admin().await;
        poll_nodes_within(&mut admin, within, pred)
            .await
            .unwrap_or_else(|last| {
                panic!(
                    "gave up waiting for {what}; nodes: {last:#?}\nscheduler log tail:\n{}",
                    self.log_tail("tether-scheduler", 40)
                )
            })
    }

    /// How tetherctl reaches this cluster's scheduler: `TETHER_SCHEDULER`, `TETHER_CA_CERT` (its listener
    /// runs TLS) and `TETHER_ADMIN_TOKEN_FILE`.
    pub fn tetherctl_env(&self) -> Vec<(&'static str, String)> {
        let plan = &self.cluster.plan;
        vec![
            ("TETHER_SCHEDULER", plan.scheduler_url()),
            ("TETHER_CA_CERT", plan.tls_ca.display().to_string()),
            (
                "TETHER_ADMIN_TOKEN_FILE",
                plan.admin_token.display().to_string(),
            ),
        ]
    }

    /// How a test reaches the nodes' HTTP layer with the cluster's security (HTTPS trusting the cluster
    /// CA and the `elastic` password with `full`, the password alone with `transport`).
    pub async fn es(&self) -> crate::http_client::EsAccess {
        crate::dev::es_access(&self.cluster.plan)
            .await
            .unwrap_or_else(|e| panic!("how to reach the nodes: {e}"))
    }

    /// Waits until `count` nodes are RUNNING and every one of them has joined one Elasticsearch cluster
    /// of `count` nodes; returns the node list. A test must wait for this before it takes a node away:
    /// the voting configuration is bootstrapped from the nodes discovered first, with a placeholder for a
    /// node not found yet, and gains that node only when it joins. Until then the cluster is 2 of
    /// {2 nodes + placeholder}, and losing either node leaves it without a master for good — as real
    /// Elasticsearch does (never stop half or more of the voters at once).
    pub async fn wait_formed(&self, count: usize) -> Vec<Node> {
        let nodes = self
            .wait_nodes(
                &format!("{count} running nodes"),
                super::scheduler::all_running(count),
            )
            .await;
        let es = self.es().await;
        for n in &nodes {
            super::es::wait_es_nodes(&es, n, count).await;
        }
        nodes
    }

    /// Waits until the scheduler reports the cluster UUID a node gave it (the bootstrap is confirmed).
    pub async fn wait_cluster_uuid(&self) -> String {
        let mut admin = self.admin().await;
        let deadline = tokio::time::Instant::now() + super::DEADLINE;
        loop {
            if let Ok(c) = admin
                .get_cluster(tether_proto::v1::GetClusterRequest {})
                .await
                && let Some(uuid) = c.into_inner().cluster_uuid
            {
                return uuid;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the scheduler never confirmed the bootstrap\nscheduler log tail:\n{}",
                self.log_tail("tether-scheduler", 40)
            );
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    }

    /// The `tetherctl --output json` answer of `args` against this cluster.
    pub async fn ctl_json(&self, args: &[&str]) -> serde_json::Value {
        let env = self.tetherctl_env();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let mut all = vec!["--output", "json"];
        all.extend_from_slice(args);
        let out = super::ctl::tetherctl(&all, &env).await;
        assert!(out.ok, "tetherctl {args:?}: {}", out.stderr);
        serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", out.stdout))
    }

    /// The Mesos emulator's base URL (its maintenance and operator endpoints).
    pub fn emu_url(&self) -> String {
        format!("http://{}", self.cluster.plan.emu)
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
        let reply = http_client::request(http::Method::POST, &url, None)
            .await
            .expect("emulator reachable");
        assert!(
            reply.is_success(),
            "{url}: {} {}",
            reply.status,
            reply.text()
        );
    }

    /// Live (non-terminal) tasks per node id, as the Mesos emulator sees them, but for UNREACHABLE ones:
    /// the tasks that run or are being started as far as the master knows.
    pub async fn live_tasks_by_node(&self) -> BTreeMap<u64, Vec<String>> {
        let url = format!("http://{}/state", self.cluster.plan.emu);
        let (_, state) = http_client::get_json(&url).await.expect("emulator state");
        crate::dev::chaos::live_tasks(&state)
            .into_iter()
            .map(|(node, tasks)| {
                let ids = tasks
                    .into_iter()
                    .filter(|t| t.state != "TASK_UNREACHABLE")
                    .map(|t| t.task_id)
                    .collect();
                (node, ids)
            })
            .collect()
    }

    /// Checks for `window`, sampling every 250 ms, that node `id` runs no task but `allowed` (if any)
    /// and that no node ever has two writers.
    pub async fn assert_not_relaunched(
        &self,
        id: u64,
        window: std::time::Duration,
        allowed: Option<&str>,
    ) {
        let end = tokio::time::Instant::now() + window;
        while tokio::time::Instant::now() < end {
            let live = self.live_tasks_by_node().await;
            let tasks = live.get(&id).cloned().unwrap_or_default();
            assert!(
                tasks.iter().all(|t| Some(t.as_str()) == allowed),
                "node {id} was relaunched while it must not be: {tasks:?}"
            );
            assert_eq!(self.duplicate_writers().await, vec![]);
            tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        }
    }

    /// Nodes with more than one writer (invariant 1 as storage fencing gives it; see
    /// [`crate::dev::chaos::duplicate_tasks`]), from the emulator, the node list and the volume backend.
    pub async fn duplicate_writers(&self) -> Vec<crate::dev::chaos::Violation> {
        let url = format!("http://{}/state", self.cluster.plan.emu);
        let (_, state) = http_client::get_json(&url).await.expect("emulator state");
        let nodes = {
            let mut admin = self.admin().await;
            admin
                .list_nodes(tether_proto::v1::ListNodesRequest {})
                .await
                .expect("node list")
                .into_inner()
                .nodes
        };
        let volumes = nodes.iter().map(|n| (n.id, n.volumes.clone())).collect();
        crate::dev::chaos::duplicate_tasks(
            &crate::dev::chaos::live_tasks(&state),
            &volumes,
            &self.attachments().await,
        )
    }

    /// Volume name → the host the volume backend attaches it to.
    pub async fn attachments(&self) -> BTreeMap<String, Option<String>> {
        let backend = self.cluster.plan.backend.clone();
        tokio::task::spawn_blocking(move || crate::fake_rexray::backend::lock(&backend)?.list())
            .await
            .expect("backend read")
            .expect("backend readable")
            .into_iter()
            .map(|v| (v.name, v.attached_host))
            .collect()
    }

    /// Injects faults into the volume plugin of `host` (`/Fake.SetFaults` body).
    pub async fn plugin_faults(&self, host: &str, faults: serde_json::Value) {
        let socket = self.agent(host).dir.join(format!("{DRIVER}.sock"));
        let status = http_client::post_unix(&socket, "/Fake.SetFaults", &faults)
            .await
            .expect("plugin reachable");
        assert_eq!(status, 200, "fault injection accepted");
    }

    /// The agent plan of `host`.
    pub fn agent(&self, host: &str) -> AgentPlan {
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

    pub async fn stop(mut self) {
        self.cluster.stop().await;
    }

    /// What a failing test prints: the tail of every component's log and of every task's output (an
    /// es-standin that refuses to start says why on its stderr), oldest sandbox first.
    fn failure_report(&self) -> String {
        let plan = &self.cluster.plan;
        let mut files: Vec<std::path::PathBuf> = read_dir_sorted(&plan.logs);
        for sandbox in read_dir_sorted(&plan.state.join("emu").join("sandboxes")) {
            files.extend(["stdout", "stderr"].map(|f| sandbox.join(f)));
        }
        let mut out = format!(
            "=== the cluster in {} failed; its logs:\n",
            plan.state.display()
        );
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(FAILURE_TAIL_LINES)..];
            if !tail.is_empty() {
                out += &format!("--- {}\n{}\n", file.display(), tail.join("\n"));
            }
        }
        out
    }
}

/// Set to a directory, a failing end-to-end test copies its cluster's state directory (logs, task
/// sandboxes, volumes) there, to `<dir>/<test>-<pid>`, before the temp dir is deleted.
pub const KEEP_LOGS_ENV: &str = "TETHER_KEEP_TEST_LOGS";

/// Lines of each log printed when a test fails.
const FAILURE_TAIL_LINES: usize = 25;

impl Drop for E2eCluster {
    /// A test that panics leaves its cluster diagnosable: the logs' tails go to stderr (nextest shows
    /// them with the failure) and, with [`KEEP_LOGS_ENV`], the whole state directory is kept.
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        eprintln!("{}", self.failure_report());
        if let Some(keep) = std::env::var_os(KEEP_LOGS_ENV) {
            let test = std::thread::current()
                .name()
                .unwrap_or("e2e")
                .replace("::", "-");
            let to = std::path::Path::new(&keep).join(format!("{test}-{}", std::process::id()));
            match copy_files(&self.cluster.plan.state, &to) {
                Ok(()) => eprintln!(
                    "=== {KEEP_LOGS_ENV}: the cluster's state is in {}",
                    to.display()
                ),
                Err(e) => eprintln!("=== {KEEP_LOGS_ENV}: cannot copy to {}: {e}", to.display()),
            }
        }
    }
}

fn read_dir_sorted(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut entries: Vec<(std::time::SystemTime, std::path::PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| {
            let modified = e.metadata().and_then(|m| m.modified());
            (modified.unwrap_or(std::time::UNIX_EPOCH), e.path())
        })
        .collect();
    entries.sort();
    entries.into_iter().map(|(_, p)| p).collect()
}

/// Copies the directories and regular files under `from` into `to` (sockets and the like are skipped).
fn copy_files(from: &std::path::Path, to: &std::path::Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        if kind.is_dir() {
            copy_files(&entry.path(), &to.join(entry.file_name()))?;
        } else if kind.is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name()))?;
        }
    }
    Ok(())
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

/// Leases: `n` of `127.<n>.0` runs from `FIRST_SUBNET` over `SUBNETS` values.
const FIRST_SUBNET: usize = 20;
const SUBNETS: usize = 200;

impl SubnetLease {
    /// Ports per agent: a node needs 2.
    pub const PORT_STRIDE: u16 = 10;
    /// Agents per lease: one node runs per agent, and a rolling upgrade of two groups needs 5 nodes.
    pub const AGENTS: usize = 5;
    /// Ports per lease.
    const PORTS_PER_LEASE: u16 = Self::AGENTS as u16 * Self::PORT_STRIDE;
    /// First port of the first lease's block. Every block lies below Linux's ephemeral port range
    /// (`net.ipv4.ip_local_port_range`, 32768-60999 by default), as a Mesos agent's default `ports`
    /// resource (31000-32000) does: Elasticsearch binds `0.0.0.0`, and that bind fails (exit 1,
    /// `BindTransportException`) while any socket on the machine holds the port — the outgoing
    /// connections of every process here, their TIME_WAIT for 60 s after closing, and the listeners of
    /// [`crate::process::free_port`] all take ports from the ephemeral range.
    pub const PORTS_START: u16 = 20_000;

    /// The first port of this lease's block, disjoint from every other lease's block.
    pub fn ports_base(&self) -> u16 {
        Self::PORTS_START + (self.index - FIRST_SUBNET as u16) * Self::PORTS_PER_LEASE
    }

    /// One past the last port any lease's block may use.
    pub fn ports_end() -> u32 {
        u32::from(Self::PORTS_START) + SUBNETS as u32 * u32::from(Self::PORTS_PER_LEASE)
    }

    pub fn acquire() -> SubnetLease {
        let start = std::process::id() as usize;
        for i in 0..SUBNETS {
            let n = FIRST_SUBNET + (start + i) % SUBNETS;
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

#[cfg(test)]
mod tests {
    use super::SubnetLease;

    /// Where a Mesos agent's default `ports` resource starts (31000-32000).
    const MESOS_AGENT_PORTS: u16 = 31_000;

    /// Every lease's port block lies outside this machine's ephemeral port range (see
    /// [`SubnetLease::PORTS_START`]); with the blocks inside it, a node's bind failed whenever some
    /// connection of another process happened to hold the port.
    #[test]
    fn port_blocks_lie_outside_the_ephemeral_port_range() {
        let text = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
            .expect("Linux publishes its ephemeral port range");
        let range: Vec<u32> = text
            .split_whitespace()
            .map(|p| p.parse().expect("a port"))
            .collect();
        let (low, high) = (range[0], range[1]);
        let (start, end) = (
            u32::from(SubnetLease::PORTS_START),
            SubnetLease::ports_end(),
        );
        assert!(
            end <= low || start > high,
            "test port blocks {start}..{end} overlap the ephemeral ports {low}-{high}"
        );
        assert!(
            end <= u32::from(MESOS_AGENT_PORTS),
            "and below the Mesos agents' 31000-"
        );
    }
}
