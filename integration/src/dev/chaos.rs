//! `tether-dev --chaos`: faults at random against the running local cluster while a writer stores
//! documents on the nodes, then, after every fault, a check that nothing acknowledged was lost and that
//! the invariants hold.
//!
//! Each round picks one fault from a seeded RNG (so a seed replays the same choices): kill an agent (its
//! machine dies with its sidecar and plugin: its tasks are UNREACHABLE after the ping timeout, and storage
//! fencing or the machine's return under its old agent id, which reports them GONE, ends the wait),
//! partition an agent — its tasks running on, or frozen — until it is UNREACHABLE and then heal it (a
//! frozen one only after storage fencing had time to replace its node, whose old task must then be
//! killed) or kill its machine and mark it GONE (then replaced under a new agent id), kill a sidecar
//! then restart it, or SIGKILL the scheduler then restart it. The cluster must then settle within a bound
//! (every node RUNNING and serving its own data, every sidecar connected); the writer pauses while a
//! reader re-reads every acknowledged document, and a snapshot of the scheduler, the emulator and the
//! volume backend is checked: at most one writer per node's volumes (a second live task only where the
//! volumes were taken from it, UNREACHABLE or being killed), the scheduler's task is the emulator's, and
//! a running node's volumes are attached to its host and nowhere else. Writers are also sampled
//! continuously, since two must never exist even for a moment.
//!
//! The pure parts (fault choice, snapshot checks, the ledger tally, the summary line) are plain
//! functions; the rest drives the cluster through [`Cluster`] and the emulator's `/emu/` fault API.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::Method;
use rand::{Rng, SeedableRng as _};
use serde_json::{Value, json};
use tether_proto::v1::{Agent, ListAgentsRequest, ListNodesRequest, Node};
use tokio::sync::{RwLock, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::cluster::ZK_SESSION_TIMEOUT;
use super::status::admin_client;
use super::{AgentPlan, Args, Cluster, DevError, Options, Plan};
use crate::http_client::{self, Conn, EsAccess, Limits};

/// Index the writer stores its documents in.
const INDEX: &str = "chaos";
/// How often the observer samples the scheduler and the emulator.
const SAMPLE: Duration = Duration::from_millis(250);
/// How often the writer writes one document to each running node.
const WRITE_EVERY: Duration = Duration::from_millis(100);
/// Bound on reading every acknowledged document back once the cluster has settled.
const READ_BACK_BOUND: Duration = Duration::from_secs(60);
/// Bound on one HTTP exchange with a node (a stuck node must not stall the writer or the reader).
const HTTP_TIMEOUT: Duration = Duration::from_secs(3);

/// A kind of fault `--chaos` can pick.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, clap::ValueEnum)]
pub enum FaultKind {
    KillAgent,
    Partition,
    KillSidecar,
    KillScheduler,
    MasterFailover,
    HungPlugin,
    SlowPlugin,
    /// Only with `--zookeeper` (skipped otherwise).
    ZkLeaderLoss,
    SidecarImpostor,
}

impl FaultKind {
    /// Whether the fault acts on one agent's machine (and so needs one).
    fn needs_host(self) -> bool {
        matches!(
            self,
            FaultKind::KillAgent
                | FaultKind::Partition
                | FaultKind::KillSidecar
                | FaultKind::HungPlugin
                | FaultKind::SlowPlugin
                | FaultKind::SidecarImpostor
        )
    }
}

/// What ends a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterPartition {
    Heal,
    Gone,
}

/// One round's fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    KillAgent {
        host: String,
    },
    /// `frozen`: the agent's task processes stop where they are until it heals.
    Partition {
        host: String,
        then: AfterPartition,
        frozen: bool,
    },
    KillSidecar {
        host: String,
    },
    KillScheduler,
    /// The Mesos master fails over: a new leader, every stream cut, offers gone, agents re-registering.
    MasterFailover,
    /// The volume plugin of `host` stops answering (every call hangs) until it is restarted.
    HungPlugin {
        host: String,
    },
    /// Every call to the volume plugin of `host` takes [`SLOW_PLUGIN_LATENCY`].
    SlowPlugin {
        host: String,
    },
    /// The ZooKeeper holding the scheduler's state goes away for longer than the session timeout.
    ZkLeaderLoss,
    /// Something that is not `host`'s sidecar tries to take its stream for the hold: it must be refused.
    SidecarImpostor {
        host: String,
    },
}

impl Fault {
    /// Its kind in the summary.
    pub fn label(&self) -> &'static str {
        match self {
            Fault::KillAgent { .. } => "kill-agent",
            Fault::Partition {
                then: AfterPartition::Heal,
                frozen: false,
                ..
            } => "partition-heal",
            Fault::Partition {
                then: AfterPartition::Heal,
                frozen: true,
                ..
            } => "partition-freeze-heal",
            Fault::Partition {
                then: AfterPartition::Gone,
                ..
            } => "partition-gone",
            Fault::KillSidecar { .. } => "kill-sidecar",
            Fault::KillScheduler => "kill-scheduler",
            Fault::MasterFailover => "master-failover",
            Fault::HungPlugin { .. } => "hung-plugin",
            Fault::SlowPlugin { .. } => "slow-plugin",
            Fault::ZkLeaderLoss => "zk-leader-loss",
            Fault::SidecarImpostor { .. } => "sidecar-impostor",
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::KillAgent { host }
            | Fault::Partition { host, .. }
            | Fault::KillSidecar { host }
            | Fault::HungPlugin { host }
            | Fault::SlowPlugin { host }
            | Fault::SidecarImpostor { host } => write!(f, "{} {host}", self.label()),
            Fault::KillScheduler | Fault::MasterFailover | Fault::ZkLeaderLoss => {
                f.write_str(self.label())
            }
        }
    }
}

/// Picks a fault among `kinds` (duplicates ignored) against one of `hosts`. `None` when no kind is
/// usable (none given, only agent faults and no host, or only `zk-leader-loss` without `zookeeper`).
pub fn choose_fault<R: Rng + ?Sized>(
    rng: &mut R,
    kinds: &[FaultKind],
    hosts: &[String],
    zookeeper: bool,
) -> Option<Fault> {
    let usable: Vec<FaultKind> = kinds
        .iter()
        .copied()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .filter(|k| !k.needs_host() || !hosts.is_empty())
        .filter(|k| *k != FaultKind::ZkLeaderLoss || zookeeper)
        .collect();
    if usable.is_empty() {
        return None;
    }
    let kind = usable[rng.random_range(0..usable.len())];
    let mut host = || hosts[rng.random_range(0..hosts.len())].clone();
    Some(match kind {
        FaultKind::KillAgent => Fault::KillAgent { host: host() },
        FaultKind::Partition => {
            let host = host();
            let then = if rng.random_bool(0.5) {
                AfterPartition::Heal
            } else {
                AfterPartition::Gone
            };
            // A machine about to be marked gone is killed first: freezing it changes nothing.
            let frozen = then == AfterPartition::Heal && rng.random_bool(0.5);
            Fault::Partition { host, then, frozen }
        }
        FaultKind::KillSidecar => Fault::KillSidecar { host: host() },
        FaultKind::KillScheduler => Fault::KillScheduler,
        FaultKind::MasterFailover => Fault::MasterFailover,
        FaultKind::HungPlugin => Fault::HungPlugin { host: host() },
        FaultKind::SlowPlugin => Fault::SlowPlugin { host: host() },
        FaultKind::ZkLeaderLoss => Fault::ZkLeaderLoss,
        FaultKind::SidecarImpostor => Fault::SidecarImpostor { host: host() },
    })
}

/// A non-terminal task as the emulator sees it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct LiveTask {
    pub task_id: String,
    pub host: String,
    /// Its Mesos state (`TASK_RUNNING`, `TASK_UNREACHABLE`, ...).
    pub state: String,
}

/// The node id of a Tether task id (`<framework>-<node>.<generation>`).
pub fn node_of_task(task_id: &str) -> Option<u64> {
    task_id
        .rsplit_once('.')
        .and_then(|(h, _)| h.rsplit_once('-'))
        .and_then(|(_, n)| n.parse().ok())
}

/// Live (non-terminal) tasks per node id in the emulator's `/state`.
pub fn live_tasks(state: &Value) -> BTreeMap<u64, Vec<LiveTask>> {
    let hosts: BTreeMap<&str, &str> = state["slaves"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| Some((a["id"].as_str()?, a["hostname"].as_str()?)))
        .collect();
    let mut by_node: BTreeMap<u64, Vec<LiveTask>> = BTreeMap::new();
    for f in state["frameworks"].as_array().into_iter().flatten() {
        for t in f["tasks"].as_array().into_iter().flatten() {
            let terminal = matches!(
                t["state"].as_str().unwrap_or(""),
                "TASK_FINISHED"
                    | "TASK_FAILED"
                    | "TASK_KILLED"
                    | "TASK_ERROR"
                    | "TASK_LOST"
                    | "TASK_DROPPED"
                    | "TASK_GONE"
                    | "TASK_GONE_BY_OPERATOR"
            );
            let id = t["id"].as_str().unwrap_or("");
            if let (false, Some(node)) = (terminal, node_of_task(id)) {
                let agent = t["agent_id"].as_str().unwrap_or("");
                by_node.entry(node).or_default().push(LiveTask {
                    task_id: id.to_owned(),
                    host: hosts.get(agent).copied().unwrap_or(agent).to_owned(),
                    state: t["state"].as_str().unwrap_or("").to_owned(),
                });
            }
        }
    }
    by_node
}

/// The id of the agent registered (not removed, not GONE) with `host`, and its state.
pub fn current_agent(state: &Value, host: &str) -> Option<(String, String)> {
    state["slaves"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|a| a["hostname"] == host)
        .filter_map(|a| Some((a["id"].as_str()?, a["state"].as_str()?)))
        .find(|(_, s)| !matches!(*s, "REMOVED" | "GONE"))
        .map(|(id, s)| (id.to_owned(), s.to_owned()))
}

/// A broken invariant (or a cluster that did not recover).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Violation {
    /// More than one writer for one node's volumes: several live tasks of the node that storage does
    /// not fence.
    DuplicateTasks { node: u64, tasks: Vec<LiveTask> },
    /// The scheduler says the node runs a task the emulator does not run (or runs elsewhere).
    TaskMismatch {
        node: u64,
        scheduler: LiveTask,
        emulator: Vec<LiveTask>,
    },
    /// A running node's volume is attached to another host, or to none.
    VolumeElsewhere {
        volume: String,
        node: u64,
        node_host: String,
        attached: Option<String>,
    },
    /// The cluster did not return to health within the bound.
    NotSettled { round: u64, why: String },
    /// The fault could not be injected or undone (the harness, not Tether, failed).
    Harness { round: u64, what: String },
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Violation::DuplicateTasks { node, tasks } => write!(
                f,
                "node {node} has {} live tasks not fenced by storage: {tasks:?}",
                tasks.len()
            ),
            Violation::TaskMismatch {
                node,
                scheduler,
                emulator,
            } => write!(
                f,
                "node {node}: the scheduler runs {} on {}, the emulator has {emulator:?}",
                scheduler.task_id, scheduler.host
            ),
            Violation::VolumeElsewhere {
                volume,
                node,
                node_host,
                attached,
            } => write!(
                f,
                "volume {volume} of node {node} (running on {node_host}) is attached to {}",
                attached.as_deref().unwrap_or("no host")
            ),
            Violation::NotSettled { round, why } => {
                write!(f, "round {round}: the cluster did not settle: {why}")
            }
            Violation::Harness { round, what } => write!(f, "round {round}: {what}"),
        }
    }
}

/// Invariant 1 in the form storage fencing gives it: at most one writer per node's volumes. A node may
/// have several live tasks only while storage fences all but one: each other one runs on a host its
/// volumes were taken from (the backend attaches them all to another host) and is UNREACHABLE or being
/// killed. `volumes`: each node's volume names; `attachments`: volume → the host the backend attaches it
/// to.
pub fn duplicate_tasks(
    live: &BTreeMap<u64, Vec<LiveTask>>,
    volumes: &BTreeMap<u64, Vec<String>>,
    attachments: &BTreeMap<String, Option<String>>,
) -> Vec<Violation> {
    live.iter()
        .filter(|(_, tasks)| tasks.len() > 1)
        .filter_map(|(node, tasks)| {
            let holders: BTreeSet<Option<&str>> = volumes
                .get(node)
                .into_iter()
                .flatten()
                .map(|v| attachments.get(v).and_then(|h| h.as_deref()))
                .collect();
            let holder = match holders.into_iter().collect::<Vec<_>>().as_slice() {
                [Some(h)] => Some(*h),
                _ => None,
            };
            let fenced = |t: &LiveTask| {
                holder.is_some_and(|h| h != t.host)
                    && matches!(t.state.as_str(), "TASK_UNREACHABLE" | "TASK_KILLING")
            };
            let writers = tasks.iter().filter(|t| !fenced(t)).count();
            (writers > 1).then(|| {
                let mut tasks = tasks.clone();
                tasks.sort();
                Violation::DuplicateTasks { node: *node, tasks }
            })
        })
        .collect()
}

/// Each node's volume names, from the scheduler's node list.
fn volumes_of(nodes: &[Node]) -> BTreeMap<u64, Vec<String>> {
    nodes.iter().map(|n| (n.id, n.volumes.clone())).collect()
}

/// What the scheduler, the emulator and the volume backend say at one moment.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// The scheduler's node list.
    pub nodes: Vec<Node>,
    pub live_tasks: BTreeMap<u64, Vec<LiveTask>>,
    /// Volume name → the host the backend says it is attached to.
    pub attachments: BTreeMap<String, Option<String>>,
}

/// Checks a snapshot taken while no fault is in progress.
pub fn check(s: &Snapshot) -> Vec<Violation> {
    let mut out = duplicate_tasks(&s.live_tasks, &volumes_of(&s.nodes), &s.attachments);
    for n in s.nodes.iter().filter(|n| n.state == "RUNNING") {
        let scheduler = LiveTask {
            task_id: n.task_id.clone(),
            host: n.host.clone(),
            state: "TASK_RUNNING".to_owned(),
        };
        let emulator: Vec<LiveTask> = s
            .live_tasks
            .get(&n.id)
            .cloned()
            .unwrap_or_default()
            .into_iter()
            // A fenced old task may linger UNREACHABLE (its machine never came back).
            .filter(|t| t.state != "TASK_UNREACHABLE")
            .collect();
        let same = |t: &LiveTask| t.task_id == scheduler.task_id && t.host == scheduler.host;
        // Two writers are reported above; here one task, and the scheduler's.
        if emulator.len() <= 1 && !(emulator.len() == 1 && same(&emulator[0])) {
            out.push(Violation::TaskMismatch {
                node: n.id,
                scheduler,
                emulator,
            });
        }
        for v in &n.volumes {
            let attached = s.attachments.get(v).cloned().flatten();
            if attached.as_deref() != Some(n.host.as_str()) {
                out.push(Violation::VolumeElsewhere {
                    volume: v.clone(),
                    node: n.id,
                    node_host: n.host.clone(),
                    attached,
                });
            }
        }
    }
    out
}

/// Whether the cluster is healthy again: `Err` says what is still missing.
pub fn settled(
    nodes: &[Node],
    expected: u64,
    agents: &[Agent],
    hosts: &[String],
) -> Result<(), String> {
    if nodes.len() as u64 != expected {
        return Err(format!("{} of {expected} nodes listed", nodes.len()));
    }
    let waiting: Vec<String> = nodes
        .iter()
        .filter(|n| n.state != "RUNNING")
        .map(|n| format!("node {} {} ({})", n.id, n.state, n.reason))
        .collect();
    if !waiting.is_empty() {
        return Err(waiting.join("; "));
    }
    let missing: Vec<&String> = hosts
        .iter()
        .filter(|h| !agents.iter().any(|a| a.host == **h && a.sidecar_connected))
        .collect();
    if !missing.is_empty() {
        return Err(format!("sidecars not connected on {missing:?}"));
    }
    Ok(())
}

/// One acknowledged document: stored on node `node` under `id`.
#[derive(Debug, Clone, PartialEq)]
pub struct Doc {
    pub node: u64,
    pub id: String,
    pub source: Value,
}

/// Outcome of reading back every acknowledged document.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tally {
    pub verified: u64,
    /// Documents missing or different now and not reported lost before.
    pub newly_lost: Vec<String>,
}

/// Compares what was read (`None`: not found or unreadable) with what was acknowledged.
pub fn tally(
    acked: &[Doc],
    read: &BTreeMap<String, Option<Value>>,
    already_lost: &BTreeSet<String>,
) -> Tally {
    let mut t = Tally::default();
    for d in acked {
        if read
            .get(&d.id)
            .is_some_and(|r| r.as_ref() == Some(&d.source))
        {
            t.verified += 1;
        } else if !already_lost.contains(&d.id) {
            t.newly_lost.push(d.id.clone());
        }
    }
    t
}

/// The final, machine-readable result.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    pub seed: u64,
    pub rounds: u64,
    pub written: u64,
    pub verified: u64,
    pub lost: u64,
    pub violations: u64,
    /// Rounds per fault label.
    pub faults: BTreeMap<String, u64>,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let faults: Vec<String> = self
            .faults
            .iter()
            .map(|(k, n)| format!("{k}:{n}"))
            .collect();
        write!(
            f,
            "chaos summary: seed={} rounds={} written={} verified={} lost={} violations={} faults={}",
            self.seed,
            self.rounds,
            self.written,
            self.verified,
            self.lost,
            self.violations,
            faults.join(",")
        )
    }
}

impl Summary {
    /// Parses the line [`Summary`]'s `Display` prints.
    pub fn parse(line: &str) -> Option<Summary> {
        let rest = line.trim().strip_prefix("chaos summary:")?;
        let fields: BTreeMap<&str, &str> = rest
            .split_whitespace()
            .map(|kv| kv.split_once('='))
            .collect::<Option<_>>()?;
        let num = |k: &str| fields.get(k)?.parse::<u64>().ok();
        let faults = fields
            .get("faults")?
            .split(',')
            .filter(|s| !s.is_empty())
            .map(|kv| {
                let (k, n) = kv.split_once(':')?;
                Some((k.to_owned(), n.parse().ok()?))
            })
            .collect::<Option<_>>()?;
        Some(Summary {
            seed: num("seed")?,
            rounds: num("rounds")?,
            written: num("written")?,
            verified: num("verified")?,
            lost: num("lost")?,
            violations: num("violations")?,
            faults,
        })
    }
}

/// Which nodes run a new task, and where, for the round's line.
pub fn describe_moves(before: &[Node], after: &[Node]) -> String {
    let moved: Vec<String> = after
        .iter()
        .filter_map(|n| {
            let old = before.iter().find(|b| b.id == n.id)?;
            if old.host != n.host {
                Some(format!("node {} {} -> {}", n.id, old.host, n.host))
            } else if old.task_id != n.task_id {
                Some(format!("node {} relaunched on {}", n.id, n.host))
            } else {
                None
            }
        })
        .collect();
    if moved.is_empty() {
        "no node relaunched".to_owned()
    } else {
        moved.join(", ")
    }
}

/// A node the writer may write to.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Target {
    node: u64,
    task_id: String,
    host: String,
    port: u16,
}

fn targets(nodes: &[Node]) -> Vec<Target> {
    nodes
        .iter()
        .filter(|n| n.state == "RUNNING")
        .filter_map(|n| {
            Some(Target {
                node: n.id,
                task_id: n.task_id.clone(),
                host: n.host.clone(),
                port: u16::try_from(n.http_port).ok().filter(|p| *p != 0)?,
            })
        })
        .collect()
}

/// One keep-alive connection to a node's Elasticsearch, checked to be served by that node's data: every
/// answer on it comes from the process that accepted it, so an acknowledgement is never attributed to
/// another node that took over the address.
struct NodeConn {
    task_id: String,
    conn: Conn,
}

/// Connects to `host:port` and checks that the node answering is the one owning node `node`'s data.
async fn connect(es: &EsAccess, host: &str, port: u16, node: u64) -> Result<Conn, String> {
    let authority = format!("{host}:{port}");
    let mut conn = Conn::es(
        host,
        u32::from(port),
        es,
        Limits::with_timeout(HTTP_TIMEOUT),
    )
    .await
    .map_err(|e| e.to_string())?;
    let root = conn.get("/").await.map_err(|e| e.to_string())?;
    let owner = root.json()["data_created_by_node_id"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    if root.status != 200 || owner != node.to_string() {
        return Err(format!(
            "{authority} is not node {node}'s data ({}, owner {owner:?})",
            root.status
        ));
    }
    Ok(conn)
}

/// How the nodes' HTTP layer is reached, once the scheduler answers (it made its CA and password before
/// listening).
async fn wait_es_access(plan: &Plan, shutdown: &CancellationToken) -> Result<EsAccess, DevError> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match super::es_access(plan).await {
            Ok(es) => return Ok(es),
            Err(e) if Instant::now() >= deadline || shutdown.is_cancelled() => {
                return Err(DevError::Component {
                    component: "tether-scheduler".into(),
                    message: e,
                });
            }
            Err(_) => tokio::time::sleep(SAMPLE).await,
        }
    }
}

/// What the background tasks share with the rounds.
struct Shared {
    /// How the nodes' HTTP layer is reached (HTTPS and the `elastic` password with security on).
    es: EsAccess,
    ledger: Mutex<Vec<Doc>>,
    /// Violations seen by the observer (a set: the same duplicate sampled twice is one violation).
    observed: Mutex<BTreeSet<Violation>>,
    /// The writer holds it shared while writing; the reader takes it exclusively.
    gate: RwLock<()>,
    round: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Samples the scheduler's nodes (for the writer) and the emulator's tasks (for duplicates).
async fn observe(
    plan: Plan,
    shared: Arc<Shared>,
    targets_tx: watch::Sender<Vec<Target>>,
    stop: CancellationToken,
) {
    let mut admin = None;
    let state_url = format!("http://{}/state", plan.emu);
    let mut volumes: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    // Two writers seen in the previous sample: one sample can fall between a healed old task's
    // reappearance and its kill; two in a row cannot.
    let mut suspects: BTreeSet<Violation> = BTreeSet::new();
    while !stop.is_cancelled() {
        if admin.is_none() {
            admin = admin_client(&plan).await;
        }
        if let Some(c) = admin.as_mut() {
            match c.list_nodes(ListNodesRequest {}).await {
                Ok(r) => {
                    volumes = volumes_of(&r.get_ref().nodes);
                    let t = targets(&r.get_ref().nodes);
                    targets_tx.send_if_modified(|old| {
                        let changed = *old != t;
                        *old = t;
                        changed
                    });
                }
                Err(_) => admin = None,
            }
        }
        if let (Ok((200, state)), Ok(attachments)) = (
            http_client::get_json(&state_url).await,
            attachments(&plan).await,
        ) {
            let now: BTreeSet<Violation> =
                duplicate_tasks(&live_tasks(&state), &volumes, &attachments)
                    .into_iter()
                    .collect();
            for v in now.intersection(&suspects) {
                if lock(&shared.observed).insert(v.clone()) {
                    println!("chaos VIOLATION: {v}");
                }
            }
            suspects = now;
        }
        tokio::select! {
            () = stop.cancelled() => {}
            () = tokio::time::sleep(SAMPLE) => {}
        }
    }
}

/// Writes one document to each running node every [`WRITE_EVERY`], recording what was acknowledged.
async fn write(
    shared: Arc<Shared>,
    targets_rx: watch::Receiver<Vec<Target>>,
    stop: CancellationToken,
) {
    let mut conns: BTreeMap<u64, NodeConn> = BTreeMap::new();
    let mut seq = 0u64;
    while !stop.is_cancelled() {
        {
            let _writing = shared.gate.read().await;
            let round = shared.round.load(Ordering::Relaxed);
            let current = targets_rx.borrow().clone();
            for t in current {
                if conns.get(&t.node).is_none_or(|c| c.task_id != t.task_id) {
                    conns.remove(&t.node);
                    if let Ok(conn) = connect(&shared.es, &t.host, t.port, t.node).await {
                        conns.insert(
                            t.node,
                            NodeConn {
                                task_id: t.task_id.clone(),
                                conn,
                            },
                        );
                    }
                }
                let Some(c) = conns.get_mut(&t.node) else {
                    continue;
                };
                seq += 1;
                let id = format!("r{round}-n{}-{seq}", t.node);
                let source = json!({ "node": t.node, "round": round, "seq": seq });
                let path = format!("/{INDEX}/_doc/{id}");
                match c.conn.send(Method::PUT, &path, Some(&source)).await {
                    Ok(r) if matches!(r.status, 200 | 201) => lock(&shared.ledger).push(Doc {
                        node: t.node,
                        id,
                        source,
                    }),
                    Ok(_) => {}
                    Err(_) => {
                        conns.remove(&t.node);
                    }
                }
            }
        }
        tokio::select! {
            () = stop.cancelled() => {}
            () = tokio::time::sleep(WRITE_EVERY) => {}
        }
    }
}

async fn emu_post(plan: &Plan, path: &str) -> Result<String, String> {
    let url = format!("http://{}/emu/{path}", plan.emu);
    let reply = http_client::request(Method::POST, &url, None)
        .await
        .map_err(|e| e.to_string())?;
    if reply.is_success() {
        Ok(url)
    } else {
        Err(format!("{url}: HTTP {} {}", reply.status, reply.text()))
    }
}

async fn emu_state(plan: &Plan) -> Result<Value, String> {
    let url = format!("http://{}/state", plan.emu);
    match http_client::get_json(&url)
        .await
        .map_err(|e| e.to_string())?
    {
        (200, v) => Ok(v),
        (s, _) => Err(format!("{url}: HTTP {s}")),
    }
}

async fn agent_id(plan: &Plan, host: &str) -> Result<(String, String), String> {
    current_agent(&emu_state(plan).await?, host)
        .ok_or_else(|| format!("no registered agent on {host}"))
}

fn agent_plan(plan: &Plan, host: &str) -> Result<AgentPlan, String> {
    plan.agents
        .iter()
        .find(|a| a.host == host)
        .cloned()
        .ok_or_else(|| format!("{host} is not an agent of this cluster"))
}

/// The machine of `host` comes back: its plugin, then the agent (new id), then its sidecar.
async fn restart_machine(
    cluster: &mut Cluster,
    options: &Options,
    host: &str,
    old_id: &str,
) -> Result<(), String> {
    let a = agent_plan(&cluster.plan, host)?;
    cluster
        .start_plugin(&a, options.preempt)
        .map_err(|e| e.to_string())?;
    cluster.wait_plugin(&a).await.map_err(|e| e.to_string())?;
    emu_post(&cluster.plan, &format!("agents/{old_id}/restart")).await?;
    cluster.start_sidecar(&a).map_err(|e| e.to_string())
}

/// Injects `fault`, lets it last, and undoes it.
async fn play(
    cluster: &mut Cluster,
    options: &Options,
    fault: &Fault,
    hold: Duration,
) -> Result<(), String> {
    match fault {
        Fault::KillAgent { host } => kill_agent(cluster, options, host, hold).await,
        Fault::Partition { host, then, frozen } => {
            partition(cluster, options, host, *then, *frozen, hold).await
        }
        Fault::KillSidecar { host } => kill_sidecar(cluster, host, hold).await,
        Fault::KillScheduler => kill_scheduler(cluster, options, hold).await,
        Fault::SidecarImpostor { host } => impostor(&cluster.plan, host, hold).await,
        Fault::MasterFailover => master_failover(cluster, hold).await,
        Fault::HungPlugin { host } => hung_plugin(cluster, options, host, hold).await,
        Fault::SlowPlugin { host } => slow_plugin(cluster, host, hold).await,
        Fault::ZkLeaderLoss => zk_leader_loss(cluster, options, hold).await,
    }
}

/// The machine dies — its tasks' processes, its sidecar and its plugin with it — and reboots after the
/// hold with its work directory: the same agent id, its old tasks GONE. Its volumes stay attached to it
/// meanwhile; its tasks become UNREACHABLE after the ping timeout.
async fn kill_agent(
    cluster: &mut Cluster,
    options: &Options,
    host: &str,
    hold: Duration,
) -> Result<(), String> {
    let (id, _) = agent_id(&cluster.plan, host).await?;
    emu_post(&cluster.plan, &format!("agents/{id}/kill")).await?;
    cluster.kill_sidecar(host);
    cluster.kill_plugin(host);
    tokio::time::sleep(hold).await;
    restart_machine(cluster, options, host, &id).await
}

/// The agent is cut off (its tasks running on, or frozen) until UNREACHABLE, then healed or killed and
/// marked gone.
async fn partition(
    cluster: &mut Cluster,
    options: &Options,
    host: &str,
    then: AfterPartition,
    frozen: bool,
    hold: Duration,
) -> Result<(), String> {
    let (id, _) = agent_id(&cluster.plan, host).await?;
    let freeze = if frozen { "?freeze=true" } else { "" };
    emu_post(&cluster.plan, &format!("agents/{id}/partition{freeze}")).await?;
    let deadline = Instant::now() + options.agent_ping_timeout * 3 + Duration::from_secs(10);
    loop {
        let state = emu_state(&cluster.plan).await?;
        if current_agent(&state, host).is_some_and(|(_, s)| s == "UNREACHABLE") {
            break;
        }
        if Instant::now() >= deadline {
            return Err(format!("agent {id} on {host} never became UNREACHABLE"));
        }
        tokio::time::sleep(SAMPLE).await;
    }
    match then {
        AfterPartition::Heal => {
            if let (true, Some(after)) = (frozen, options.storage_fencing) {
                // Long enough for storage fencing to replace the frozen node, whose old task then
                // shows up again when the partition heals and must be killed.
                tokio::time::sleep(after + Duration::from_secs(5)).await;
            }
            emu_post(&cluster.plan, &format!("agents/{id}/heal"))
                .await
                .map(drop)
        }
        AfterPartition::Gone => {
            // The operator makes sure the machine is off, marks its agent gone and replaces it:
            // everything on it goes, a new one comes up after the hold (so the node may first move to
            // another agent).
            emu_post(&cluster.plan, &format!("agents/{id}/kill")).await?;
            emu_post(&cluster.plan, &format!("agents/{id}/gone")).await?;
            cluster.kill_sidecar(host);
            cluster.kill_plugin(host);
            tokio::time::sleep(hold).await;
            restart_machine(cluster, options, host, &id).await
        }
    }
}

async fn kill_sidecar(cluster: &mut Cluster, host: &str, hold: Duration) -> Result<(), String> {
    if !cluster.kill_sidecar(host) {
        return Err(format!("no sidecar running on {host}"));
    }
    tokio::time::sleep(hold).await;
    let a = agent_plan(&cluster.plan, host)?;
    cluster.start_sidecar(&a).map_err(|e| e.to_string())
}

async fn kill_scheduler(
    cluster: &mut Cluster,
    options: &Options,
    hold: Duration,
) -> Result<(), String> {
    cluster.kill_scheduler();
    tokio::time::sleep(hold).await;
    cluster
        .start_scheduler(options)
        .await
        .map_err(|e| e.to_string())
}

/// A Mesos master failover as a framework sees it (`shared/protocols/mesos-v1-scheduler.md` §5.4-5.5):
/// the leading master is replaced by a new one (a new master id) that recovered the registry, so every
/// subscription stream is cut, outstanding offers vanish, and the agents are "recovered but not
/// re-registered" for a while (reconciliation answers nothing for their tasks) before they re-register
/// with their tasks. The scheduler must re-subscribe with its framework id (a new id would orphan every
/// task) and reconcile. The emulator's agents and their tasks live in its process, so the failover is
/// the emulator's own `master/restart`, not a restart of the process, which would take the tasks too.
async fn master_failover(cluster: &mut Cluster, hold: Duration) -> Result<(), String> {
    let before = framework_ids(&emu_state(&cluster.plan).await?);
    emu_post(&cluster.plan, "master/restart").await?;
    tokio::time::sleep(hold).await;
    // The same framework, re-subscribed: no second framework registered.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let state = emu_state(&cluster.plan).await?;
        let after = framework_ids(&state);
        if after != before {
            return Err(format!(
                "after the failover the master knows frameworks {after:?}, before {before:?}"
            ));
        }
        if active_frameworks(&state) == before.len() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err("the scheduler did not re-subscribe after the master failover".into());
        }
        tokio::time::sleep(SAMPLE).await;
    }
}

/// The ids of the frameworks the master knows (active or not).
fn framework_ids(state: &Value) -> BTreeSet<String> {
    state["frameworks"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|f| f["id"].as_str().map(str::to_owned))
        .collect()
}

/// How many frameworks are subscribed.
fn active_frameworks(state: &Value) -> usize {
    state["frameworks"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|f| f["active"].as_bool().unwrap_or(false))
        .count()
}

/// How long every call to a slow plugin takes: well inside the sidecar's timeouts, far beyond a healthy
/// driver.
pub const SLOW_PLUGIN_LATENCY: Duration = Duration::from_millis(2500);

/// Sets the faults of `host`'s volume plugin (`/Fake.SetFaults`; `{}` clears them).
async fn plugin_faults(cluster: &Cluster, host: &str, faults: Value) -> Result<(), String> {
    let socket = Cluster::plugin_socket(&agent_plan(&cluster.plan, host)?);
    match http_client::post_unix(&socket, "/Fake.SetFaults", &faults).await {
        Ok(200) => Ok(()),
        Ok(status) => Err(format!(
            "{}: /Fake.SetFaults: HTTP {status}",
            socket.display()
        )),
        Err(e) => Err(format!("{}: /Fake.SetFaults: {e}", socket.display())),
    }
}

/// Every protocol method with the same fault.
fn every_method(fault: Value) -> Value {
    let methods: serde_json::Map<String, Value> = [
        "Activate",
        "Capabilities",
        "Create",
        "Get",
        "List",
        "Mount",
        "Path",
        "Remove",
        "Unmount",
    ]
    .iter()
    .map(|m| ((*m).to_owned(), fault.clone()))
    .collect();
    json!({ "methods": methods })
}

/// Fails the task running on `host`, if any, so its node is placed again while the fault lasts: its
/// Prepare (and the launcher's unmount of the failed task) go through the faulty plugin if it lands
/// there.
async fn fail_task_on(plan: &Plan, host: &str) -> Result<(), String> {
    let live = live_tasks(&emu_state(plan).await?);
    let task = live
        .values()
        .flatten()
        .find(|t| t.host == host && t.state == "TASK_RUNNING");
    if let Some(t) = task {
        emu_post(plan, &format!("tasks/{}/fail", t.task_id)).await?;
    }
    Ok(())
}

/// The plugin of `host` hangs: every call, the sidecar's reports and any Prepare sent there, waits for
/// the sidecar's timeout; the node that ran there is failed so it must be placed again meanwhile. After
/// the hold the plugin is restarted, as a watchdog or an operator would, which ends the hung calls.
async fn hung_plugin(
    cluster: &mut Cluster,
    options: &Options,
    host: &str,
    hold: Duration,
) -> Result<(), String> {
    plugin_faults(cluster, host, every_method(json!({ "hang": true }))).await?;
    fail_task_on(&cluster.plan, host).await?;
    tokio::time::sleep(hold).await;
    cluster.kill_plugin(host);
    let a = agent_plan(&cluster.plan, host)?;
    cluster
        .start_plugin(&a, options.preempt)
        .map_err(|e| e.to_string())?;
    cluster.wait_plugin(&a).await.map_err(|e| e.to_string())
}

/// The plugin of `host` answers every call after [`SLOW_PLUGIN_LATENCY`] for the hold, while the node
/// that ran there is placed again; then it is fast again.
async fn slow_plugin(cluster: &mut Cluster, host: &str, hold: Duration) -> Result<(), String> {
    let latency = u64::try_from(SLOW_PLUGIN_LATENCY.as_millis()).unwrap_or(u64::MAX);
    plugin_faults(
        cluster,
        host,
        every_method(json!({ "latency_ms": latency })),
    )
    .await?;
    fail_task_on(&cluster.plan, host).await?;
    // At least one report and one Prepare through the slow plugin.
    tokio::time::sleep(hold.max(SLOW_PLUGIN_LATENCY * 4)).await;
    plugin_faults(cluster, host, json!({})).await
}

/// The ZooKeeper holding the scheduler's state is lost (SIGKILL; a standalone server stands for the
/// ensemble losing its leader and quorum) for longer than the scheduler's session timeout, then comes
/// back with its data. The leader notices the disconnection, gives up leadership and exits non-zero;
/// it is started again, as systemd would, and must load the state from ZooKeeper and take over.
async fn zk_leader_loss(
    cluster: &mut Cluster,
    options: &Options,
    hold: Duration,
) -> Result<(), String> {
    let zk = cluster
        .zookeeper
        .as_mut()
        .ok_or("zk-leader-loss needs --zookeeper")?;
    zk.stop();
    tokio::time::sleep(hold.max(ZK_SESSION_TIMEOUT + Duration::from_secs(2))).await;
    zk.restart().await.map_err(|e| e.to_string())?;
    let exited = match cluster.scheduler.as_mut() {
        Some(s) => s.wait_exit(ZK_SESSION_TIMEOUT * 4).await.is_ok(),
        None => true,
    };
    if !exited {
        return Err("the scheduler kept running without its ZooKeeper session".into());
    }
    cluster.scheduler = None;
    cluster
        .start_scheduler(options)
        .await
        .map_err(|e| e.to_string())
}

/// The host an impostor holds a valid token for: a machine of the cluster's, but not any agent's.
const IMPOSTOR_HOST: &str = "chaos-impostor.invalid";

/// For `hold`, in a loop as the attacker did, something tries to take `host`'s sidecar stream:
/// with a valid token minted for another host (PERMISSION_DENIED expected), and with a bearer that
/// names no host, as the shared token did (UNAUTHENTICATED: the dev cluster does not pass
/// `--allow-shared-agent-token`). Any acceptance, or `host`'s own sidecar losing its stream, is an error.
async fn impostor(plan: &Plan, host: &str, hold: Duration) -> Result<(), String> {
    use tether_proto::v1::{
        AgentMessage, Hello, ListAgentsRequest, MintAgentTokenRequest, agent_message,
    };
    let mut admin = super::status::admin_client(plan)
        .await
        .ok_or("the admin API does not answer")?;
    let token = admin
        .mint_agent_token(MintAgentTokenRequest {
            host: IMPOSTOR_HOST.into(),
            ttl_seconds: 600,
        })
        .await
        .map_err(|s| format!("minting the impostor's token: {s}"))?
        .into_inner()
        .token;
    let attempts = [
        (format!("Bearer {token}"), tonic::Code::PermissionDenied),
        (
            "Bearer not-a-credential".to_owned(),
            tonic::Code::Unauthenticated,
        ),
    ];
    let deadline = Instant::now() + hold;
    let mut tries = 0u32;
    while tries == 0 || Instant::now() < deadline {
        for (authorization, expected) in &attempts {
            tries += 1;
            let channel = super::status::channel(plan)
                .await
                .ok_or("the impostor cannot reach the scheduler")?;
            let (up, rx) = tokio::sync::mpsc::channel(1);
            let _ = up.try_send(AgentMessage {
                body: Some(agent_message::Body::Hello(Hello {
                    hostname: host.to_owned(),
                    instance_id: "chaos-impostor".into(),
                    ..Default::default()
                })),
            });
            let mut req = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
            req.metadata_mut().insert(
                "authorization",
                authorization.parse().map_err(|_| "token is not ASCII")?,
            );
            match tether_proto::v1::agent_channel_client::AgentChannelClient::new(channel)
                .connect(req)
                .await
            {
                Ok(_) => {
                    return Err(format!(
                        "IMPOSTOR ACCEPTED: a stream for {host} was opened with a credential that \
                         does not name it (expected {expected:?})"
                    ));
                }
                Err(s) if s.code() == *expected => {}
                Err(s) => {
                    return Err(format!(
                        "the impostor for {host} was refused with {:?} ({}), expected {expected:?}",
                        s.code(),
                        s.message()
                    ));
                }
            }
        }
        tokio::time::sleep(SAMPLE).await;
    }
    let agents = admin
        .list_agents(ListAgentsRequest {})
        .await
        .map_err(|s| s.to_string())?
        .into_inner()
        .agents;
    if !agents.iter().any(|a| a.host == host && a.sidecar_connected) {
        return Err(format!(
            "{host}'s own sidecar lost its stream during {tries} refused impostor attempts"
        ));
    }
    println!("chaos: {tries} impostor attempts on {host} refused; its sidecar kept its stream");
    Ok(())
}

/// Waits until the cluster is healthy again (see [`settled`]) and every node serves its own data.
async fn settle(
    plan: &Plan,
    es: &EsAccess,
    expected: u64,
    bound: Duration,
) -> Result<Duration, String> {
    let start = Instant::now();
    let hosts: Vec<String> = plan.agents.iter().map(|a| a.host.clone()).collect();
    let mut why = "the scheduler never answered".to_owned();
    while start.elapsed() < bound {
        if let Some(mut c) = admin_client(plan).await
            && let (Ok(nodes), Ok(agents)) = (
                c.list_nodes(ListNodesRequest {}).await,
                c.list_agents(ListAgentsRequest {}).await,
            )
        {
            let nodes = nodes.into_inner().nodes;
            match settled(&nodes, expected, &agents.into_inner().agents, &hosts) {
                Err(w) => why = w,
                Ok(()) => {
                    let mut serving = Vec::new();
                    for t in targets(&nodes) {
                        serving.push(connect(es, &t.host, t.port, t.node).await.map(drop));
                    }
                    match serving.into_iter().collect::<Result<Vec<()>, String>>() {
                        Ok(_) => return Ok(start.elapsed()),
                        Err(w) => why = w,
                    }
                }
            }
        }
        tokio::time::sleep(SAMPLE).await;
    }
    Err(format!("after {bound:?}: {why}"))
}

/// The scheduler's node list, through its admin API.
async fn list_nodes(plan: &Plan) -> Result<Vec<Node>, String> {
    let mut c = admin_client(plan)
        .await
        .ok_or("the scheduler's admin API does not answer")?;
    Ok(c.list_nodes(ListNodesRequest {})
        .await
        .map_err(|e| e.to_string())?
        .into_inner()
        .nodes)
}

/// Volume name → the host the REX-Ray backend attaches it to.
async fn attachments(plan: &Plan) -> Result<BTreeMap<String, Option<String>>, String> {
    let backend = plan.backend.clone();
    let volumes =
        tokio::task::spawn_blocking(move || crate::fake_rexray::backend::lock(&backend)?.list())
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("volume backend: {e}"))?;
    Ok(volumes
        .into_iter()
        .map(|v| (v.name, v.attached_host))
        .collect())
}

async fn snapshot(plan: &Plan) -> Result<Snapshot, String> {
    let nodes = list_nodes(plan).await?;
    let live_tasks = live_tasks(&emu_state(plan).await?);
    Ok(Snapshot {
        nodes,
        live_tasks,
        attachments: attachments(plan).await?,
    })
}

/// Reads back every acknowledged document from the node it was written to (wherever it runs now):
/// `None` for a document the node answers 404 for. A node that does not answer is retried until
/// [`READ_BACK_BOUND`], so only a definite "not found" counts as a loss.
async fn read_back(
    plan: &Plan,
    es: &EsAccess,
    docs: &[Doc],
) -> Result<BTreeMap<String, Option<Value>>, String> {
    let deadline = Instant::now() + READ_BACK_BOUND;
    let mut read = BTreeMap::new();
    loop {
        match read_back_once(plan, es, docs, &mut read).await {
            Ok(()) => return Ok(read),
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(_) => tokio::time::sleep(SAMPLE).await,
        }
    }
}

/// One pass over the documents not read yet.
async fn read_back_once(
    plan: &Plan,
    es: &EsAccess,
    docs: &[Doc],
    read: &mut BTreeMap<String, Option<Value>>,
) -> Result<(), String> {
    let nodes = list_nodes(plan).await?;
    let running = targets(&nodes);
    let pending: BTreeSet<u64> = docs
        .iter()
        .filter(|d| !read.contains_key(&d.id))
        .map(|d| d.node)
        .collect();
    for node in pending {
        let t = running
            .iter()
            .find(|t| t.node == node)
            .ok_or_else(|| format!("node {node} is not running"))?;
        let authority = format!("{}:{}", t.host, t.port);
        let mut conn = connect(es, &t.host, t.port, t.node).await?;
        for d in docs.iter().filter(|d| d.node == node) {
            if read.contains_key(&d.id) {
                continue;
            }
            let path = format!("/{INDEX}/_doc/{}", d.id);
            let reply = conn.get(&path).await.map_err(|e| e.to_string())?;
            let found = match reply.status {
                200 => Some(reply.json()["_source"].clone()),
                404 => None,
                status => {
                    return Err(format!("{authority}{path}: HTTP {status} {}", reply.text()));
                }
            };
            read.insert(d.id.clone(), found);
        }
    }
    Ok(())
}

fn report(v: Violation, all: &mut BTreeSet<Violation>) {
    println!("chaos VIOLATION: {v}");
    all.insert(v);
}

/// Runs the chaos rounds against a started cluster; `Err(ChaosFailed)` when anything was lost or broken.
pub async fn run(
    args: &Args,
    cluster: &mut Cluster,
    options: &Options,
    shutdown: CancellationToken,
) -> Result<(), DevError> {
    let seed = args.chaos_seed.unwrap_or_else(rand::random);
    let rounds = args.chaos_rounds;
    println!(
        "chaos: seed {seed} (replay with --chaos-seed {seed}), {}, faults {}, state and logs in {}",
        if rounds == 0 {
            "rounds until Ctrl-C".to_owned()
        } else {
            format!("{rounds} rounds")
        },
        args.chaos_faults
            .iter()
            .filter_map(clap::ValueEnum::to_possible_value)
            .map(|v| v.get_name().to_owned())
            .collect::<Vec<_>>()
            .join(","),
        cluster.plan.state.display()
    );
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let hosts: Vec<String> = cluster.plan.agents.iter().map(|a| a.host.clone()).collect();
    let es = wait_es_access(&cluster.plan, &shutdown).await?;
    let shared = Arc::new(Shared {
        es,
        ledger: Mutex::new(Vec::new()),
        observed: Mutex::new(BTreeSet::new()),
        gate: RwLock::new(()),
        round: AtomicU64::new(0),
    });
    let stop = CancellationToken::new();
    let (targets_tx, targets_rx) = watch::channel(Vec::new());
    let observer = tokio::spawn(observe(
        cluster.plan.clone(),
        shared.clone(),
        targets_tx,
        stop.clone(),
    ));
    let writer = tokio::spawn(write(shared.clone(), targets_rx, stop.clone()));

    let mut summary = Summary {
        seed,
        ..Summary::default()
    };
    let mut violations: BTreeSet<Violation> = BTreeSet::new();
    let mut lost: BTreeSet<String> = BTreeSet::new();

    let bound = args.chaos_settle_timeout;
    let first = tokio::select! {
        r = settle(&cluster.plan, &shared.es, options.nodes, bound) => Some(r),
        () = shutdown.cancelled() => None,
    };
    let mut healthy = match first {
        Some(Ok(t)) => {
            println!("chaos: cluster up in {t:.1?}; starting the rounds");
            true
        }
        Some(Err(why)) => {
            report(Violation::NotSettled { round: 0, why }, &mut violations);
            false
        }
        None => false,
    };
    let mut last_nodes = match snapshot(&cluster.plan).await {
        Ok(s) if healthy => s.nodes,
        _ => Vec::new(),
    };
    let mut round = 0u64;
    while healthy && !shutdown.is_cancelled() && (rounds == 0 || round < rounds) {
        round += 1;
        shared.round.store(round, Ordering::Relaxed);
        let zookeeper = cluster.zookeeper.is_some();
        let Some(fault) = choose_fault(&mut rng, &args.chaos_faults, &hosts, zookeeper) else {
            return Err(DevError::Component {
                component: "chaos".into(),
                message: "no usable fault kind".into(),
            });
        };
        let of = if rounds == 0 {
            String::new()
        } else {
            format!("/{rounds}")
        };
        println!("chaos round {round}{of}: {fault}");
        let interrupted = || println!("chaos: interrupted during round {round}; it is not counted");
        let played = tokio::select! {
            r = play(cluster, options, &fault, args.chaos_hold) => r,
            () = shutdown.cancelled() => { interrupted(); break }
        };
        let settled_in = match played {
            Err(what) => Err(Violation::Harness { round, what }),
            Ok(()) => tokio::select! {
                r = settle(&cluster.plan, &shared.es, options.nodes, bound) => {
                    r.map_err(|why| Violation::NotSettled { round, why })
                }
                () = shutdown.cancelled() => { interrupted(); break }
            },
        };
        summary.rounds = round;
        *summary.faults.entry(fault.label().to_owned()).or_default() += 1;
        let settled_in = match settled_in {
            Ok(t) => t,
            Err(v) => {
                report(v, &mut violations);
                healthy = false;
                continue;
            }
        };
        // Pause the writer, then read everything back and check a quiet snapshot.
        let reading = shared.gate.write().await;
        let docs = lock(&shared.ledger).clone();
        let verified = match read_back(&cluster.plan, &shared.es, &docs).await {
            Ok(read) => {
                let t = tally(&docs, &read, &lost);
                for id in &t.newly_lost {
                    println!("chaos LOST: document {id} (acknowledged, now missing or different)");
                }
                lost.extend(t.newly_lost);
                t.verified
            }
            Err(what) => {
                report(
                    Violation::Harness {
                        round,
                        what: format!("reading documents back: {what}"),
                    },
                    &mut violations,
                );
                0
            }
        };
        let mut moves = String::new();
        match snapshot(&cluster.plan).await {
            Ok(s) => {
                for v in check(&s) {
                    report(v, &mut violations);
                }
                moves = describe_moves(&last_nodes, &s.nodes);
                last_nodes = s.nodes;
            }
            Err(what) => report(
                Violation::Harness {
                    round,
                    what: format!("snapshot: {what}"),
                },
                &mut violations,
            ),
        }
        drop(reading);
        summary.written = docs.len() as u64;
        summary.verified = verified;
        let all_violations = violations.union(&lock(&shared.observed)).count();
        println!(
            "chaos round {round}{of}: {fault} | {moves} | settled in {settled_in:.1?} | written {} verified {verified} lost {} | violations {all_violations}",
            docs.len(),
            lost.len(),
        );
    }
    stop.cancel();
    let _ = observer.await;
    let _ = writer.await;
    violations.extend(lock(&shared.observed).iter().cloned());
    summary.lost = lost.len() as u64;
    summary.violations = violations.len() as u64;
    println!("{summary}");
    if summary.lost > 0 || summary.violations > 0 {
        Err(DevError::ChaosFailed {
            lost: summary.lost,
            violations: summary.violations,
        })
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts() -> Vec<String> {
        ["127.0.0.11", "127.0.0.12", "127.0.0.13"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    const ALL: [FaultKind; 9] = [
        FaultKind::KillAgent,
        FaultKind::Partition,
        FaultKind::KillSidecar,
        FaultKind::KillScheduler,
        FaultKind::MasterFailover,
        FaultKind::HungPlugin,
        FaultKind::SlowPlugin,
        FaultKind::ZkLeaderLoss,
        FaultKind::SidecarImpostor,
    ];

    fn sequence(seed: u64, kinds: &[FaultKind], n: usize) -> Vec<Fault> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        (0..n)
            .map(|_| choose_fault(&mut rng, kinds, &hosts(), true).expect("a fault"))
            .collect()
    }

    #[test]
    fn a_seed_replays_the_same_faults() {
        assert_eq!(sequence(42, &ALL, 50), sequence(42, &ALL, 50));
        assert_ne!(sequence(42, &ALL, 50), sequence(43, &ALL, 50));
    }

    #[test]
    fn every_kind_and_host_is_picked_and_only_those_enabled() {
        let all = sequence(7, &ALL, 400);
        let labels: BTreeSet<&str> = all.iter().map(Fault::label).collect();
        assert_eq!(
            labels,
            BTreeSet::from([
                "kill-agent",
                "kill-scheduler",
                "kill-sidecar",
                "master-failover",
                "hung-plugin",
                "slow-plugin",
                "zk-leader-loss",
                "partition-freeze-heal",
                "partition-gone",
                "partition-heal",
                "sidecar-impostor"
            ])
        );
        let picked: BTreeSet<String> = all
            .iter()
            .filter_map(|f| match f {
                Fault::KillAgent { host }
                | Fault::Partition { host, .. }
                | Fault::KillSidecar { host }
                | Fault::HungPlugin { host }
                | Fault::SlowPlugin { host }
                | Fault::SidecarImpostor { host } => Some(host.clone()),
                Fault::KillScheduler | Fault::MasterFailover | Fault::ZkLeaderLoss => None,
            })
            .collect();
        assert_eq!(picked, hosts().into_iter().collect());

        let sidecars = sequence(7, &[FaultKind::KillSidecar, FaultKind::KillSidecar], 50);
        assert!(sidecars.iter().all(|f| f.label() == "kill-sidecar"));
    }

    #[test]
    fn no_fault_without_a_usable_kind() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        assert_eq!(choose_fault(&mut rng, &[], &hosts(), true), None);
        assert_eq!(
            choose_fault(&mut rng, &[FaultKind::KillAgent], &[], true),
            None
        );
        let without_agents: BTreeSet<&str> = (0..100)
            .filter_map(|_| choose_fault(&mut rng, &ALL, &[], false))
            .map(|f| f.label())
            .collect();
        assert_eq!(
            without_agents,
            BTreeSet::from(["kill-scheduler", "master-failover"]),
            "only the scheduler and the master can be hit without agents or ZooKeeper"
        );
        assert_eq!(
            choose_fault(&mut rng, &[FaultKind::ZkLeaderLoss], &hosts(), false),
            None,
            "zk-leader-loss needs the cluster's ZooKeeper"
        );
    }

    #[test]
    fn a_failover_is_checked_on_the_frameworks_the_master_knows() {
        let state = json!({ "frameworks": [
            { "id": "fw-1", "active": true },
            { "id": "fw-2", "active": false },
        ]});
        assert_eq!(
            framework_ids(&state),
            BTreeSet::from(["fw-1".to_owned(), "fw-2".to_owned()])
        );
        assert_eq!(active_frameworks(&state), 1);
        assert_eq!(active_frameworks(&json!({})), 0);
    }

    #[test]
    fn a_plugin_fault_covers_every_method() {
        let faults = every_method(json!({ "hang": true }));
        let methods = faults["methods"].as_object().expect("methods");
        assert_eq!(methods.len(), 9);
        assert!(methods.values().all(|f| f["hang"] == true));
    }

    #[test]
    fn task_ids_name_their_node() {
        assert_eq!(node_of_task("3f1c-0001-12.4"), Some(12));
        assert_eq!(node_of_task("fw-7.1"), Some(7));
        assert_eq!(node_of_task("no-generation"), None);
        assert_eq!(node_of_task("fw-x.1"), None);
    }

    fn state() -> Value {
        json!({
            "slaves": [
                { "id": "M-S0", "hostname": "h1", "state": "REMOVED" },
                { "id": "M-S1", "hostname": "h2", "state": "ACTIVE" },
                { "id": "M-S3", "hostname": "h1", "state": "UNREACHABLE" },
            ],
            "frameworks": [{ "tasks": [
                { "id": "fw-1.1", "agent_id": "M-S0", "state": "TASK_GONE" },
                { "id": "fw-1.2", "agent_id": "M-S3", "state": "TASK_UNREACHABLE" },
                { "id": "fw-2.1", "agent_id": "M-S1", "state": "TASK_RUNNING" },
                { "id": "fw-2.2", "agent_id": "M-S1", "state": "TASK_STAGING" },
            ]}],
        })
    }

    fn task_in(id: &str, host: &str, state: &str) -> LiveTask {
        LiveTask {
            task_id: id.into(),
            host: host.into(),
            state: state.into(),
        }
    }

    fn task(id: &str, host: &str) -> LiveTask {
        task_in(id, host, "TASK_RUNNING")
    }

    #[test]
    fn live_tasks_skip_terminal_ones_and_name_their_host() {
        let live = live_tasks(&state());
        assert_eq!(live[&1], vec![task_in("fw-1.2", "h1", "TASK_UNREACHABLE")]);
        assert_eq!(live[&2].len(), 2);
        assert_eq!(
            duplicate_tasks(&live, &BTreeMap::new(), &BTreeMap::new()),
            vec![Violation::DuplicateTasks {
                node: 2,
                tasks: vec![
                    task("fw-2.1", "h2"),
                    task_in("fw-2.2", "h2", "TASK_STAGING")
                ]
            }]
        );
        assert_eq!(
            current_agent(&state(), "h1"),
            Some(("M-S3".into(), "UNREACHABLE".into()))
        );
        assert_eq!(current_agent(&state(), "h9"), None);
    }

    fn node(id: u64, state: &str, task_id: &str, host: &str) -> Node {
        Node {
            id,
            state: state.into(),
            task_id: task_id.into(),
            host: host.into(),
            http_port: 31000,
            volumes: vec![
                format!("elasticsearch{id}config"),
                format!("elasticsearch{id}data"),
            ],
            ..Node::default()
        }
    }

    fn healthy() -> Snapshot {
        let mut s = Snapshot::default();
        for (id, host) in [(1, "h1"), (2, "h2")] {
            let t = format!("fw-{id}.1");
            s.nodes.push(node(id, "RUNNING", &t, host));
            s.live_tasks.insert(id, vec![task(&t, host)]);
            for v in ["config", "data"] {
                s.attachments
                    .insert(format!("elasticsearch{id}{v}"), Some(host.to_owned()));
            }
        }
        s
    }

    #[test]
    fn a_healthy_snapshot_has_no_violation() {
        assert_eq!(check(&healthy()), vec![]);
    }

    #[test]
    fn a_duplicate_task_is_a_violation() {
        let mut s = healthy();
        s.live_tasks.get_mut(&2).unwrap().push(task("fw-2.2", "h3"));
        assert_eq!(
            check(&s),
            vec![Violation::DuplicateTasks {
                node: 2,
                tasks: vec![task("fw-2.1", "h2"), task("fw-2.2", "h3")]
            }]
        );
    }

    #[test]
    fn a_second_task_is_allowed_only_while_storage_fences_it() {
        // Node 2's old task on h3 is UNREACHABLE and its volumes are attached to h2: fenced.
        let mut s = healthy();
        s.live_tasks
            .get_mut(&2)
            .unwrap()
            .push(task_in("fw-2.0", "h3", "TASK_UNREACHABLE"));
        assert_eq!(check(&s), vec![]);
        // Being killed once it showed up again: still fenced.
        s.live_tasks.get_mut(&2).unwrap()[1].state = "TASK_KILLING".into();
        assert_eq!(check(&s), vec![]);
        // Seen RUNNING again: a second writer as far as the master knows.
        s.live_tasks.get_mut(&2).unwrap()[1].state = "TASK_RUNNING".into();
        assert!(matches!(
            check(&s).as_slice(),
            [Violation::DuplicateTasks { node: 2, .. }]
        ));
        // UNREACHABLE, but the volumes were never taken from it: not fenced.
        let mut s = healthy();
        s.live_tasks
            .get_mut(&2)
            .unwrap()
            .push(task_in("fw-2.0", "h3", "TASK_UNREACHABLE"));
        s.attachments
            .insert("elasticsearch2data".into(), Some("h3".into()));
        assert!(
            check(&s)
                .iter()
                .any(|v| matches!(v, Violation::DuplicateTasks { node: 2, .. }))
        );
    }

    #[test]
    fn a_volume_attached_to_another_host_is_a_violation() {
        let mut s = healthy();
        s.attachments
            .insert("elasticsearch1data".into(), Some("h2".into()));
        s.attachments.insert("elasticsearch2config".into(), None);
        assert_eq!(
            check(&s),
            vec![
                Violation::VolumeElsewhere {
                    volume: "elasticsearch1data".into(),
                    node: 1,
                    node_host: "h1".into(),
                    attached: Some("h2".into())
                },
                Violation::VolumeElsewhere {
                    volume: "elasticsearch2config".into(),
                    node: 2,
                    node_host: "h2".into(),
                    attached: None
                },
            ]
        );
    }

    #[test]
    fn the_scheduler_and_the_emulator_must_agree_on_a_running_node() {
        let mut s = healthy();
        s.live_tasks.remove(&1);
        s.live_tasks.insert(2, vec![task("fw-2.1", "h3")]);
        let v = check(&s);
        assert_eq!(v.len(), 2, "{v:?}");
        assert!(
            matches!(&v[0], Violation::TaskMismatch { node: 1, emulator, .. } if emulator.is_empty())
        );
        assert!(matches!(&v[1], Violation::TaskMismatch { node: 2, .. }));
        // A node that is not running is not checked against the emulator.
        let mut s = healthy();
        s.nodes[0].state = "PENDING".into();
        s.live_tasks.remove(&1);
        assert_eq!(check(&s), vec![]);
    }

    #[test]
    fn settled_needs_every_node_running_and_every_sidecar() {
        let nodes = healthy().nodes;
        let agents: Vec<Agent> = ["h1", "h2"]
            .iter()
            .map(|h| Agent {
                host: h.to_string(),
                sidecar_connected: true,
                ..Agent::default()
            })
            .collect();
        let hosts = vec!["h1".to_string(), "h2".to_string()];
        assert_eq!(settled(&nodes, 2, &agents, &hosts), Ok(()));
        assert!(settled(&nodes, 3, &agents, &hosts).is_err());
        let mut pending = nodes.clone();
        pending[1].state = "PENDING".into();
        pending[1].reason = "no offer".into();
        let why = settled(&pending, 2, &agents, &hosts).unwrap_err();
        assert!(why.contains("node 2 PENDING (no offer)"), "{why}");
        let mut down = agents.clone();
        down[0].sidecar_connected = false;
        assert!(
            settled(&nodes, 2, &down, &hosts)
                .unwrap_err()
                .contains("h1")
        );
    }

    #[test]
    fn moves_name_the_relaunched_nodes_and_where() {
        let before = healthy().nodes;
        assert_eq!(describe_moves(&before, &before), "no node relaunched");
        let mut after = before.clone();
        after[0].task_id = "fw-1.2".into();
        after[1].host = "h3".into();
        assert_eq!(
            describe_moves(&before, &after),
            "node 1 relaunched on h1, node 2 h2 -> h3"
        );
    }

    fn doc(node: u64, id: &str) -> Doc {
        Doc {
            node,
            id: id.into(),
            source: json!({ "id": id }),
        }
    }

    #[test]
    fn the_tally_counts_missing_and_changed_documents_once() {
        let acked = vec![doc(1, "a"), doc(1, "b"), doc(2, "c"), doc(2, "d")];
        let read = BTreeMap::from([
            ("a".to_string(), Some(json!({ "id": "a" }))),
            ("b".to_string(), None),
            ("c".to_string(), Some(json!({ "id": "other" }))),
        ]);
        let t = tally(&acked, &read, &BTreeSet::new());
        assert_eq!(t.verified, 1);
        assert_eq!(t.newly_lost, ["b", "c", "d"]);
        let again = tally(&acked, &read, &BTreeSet::from(["b".to_string()]));
        assert_eq!(again.newly_lost, ["c", "d"]);
    }

    #[test]
    fn the_summary_line_round_trips() {
        let s = Summary {
            seed: 9,
            rounds: 4,
            written: 120,
            verified: 118,
            lost: 2,
            violations: 1,
            faults: BTreeMap::from([("kill-agent".into(), 3), ("partition-gone".into(), 1)]),
        };
        let line = s.to_string();
        assert!(
            line.starts_with("chaos summary: seed=9 rounds=4 "),
            "{line}"
        );
        assert_eq!(Summary::parse(&line), Some(s));
        let none = Summary::default();
        assert_eq!(Summary::parse(&none.to_string()), Some(none));
        assert_eq!(Summary::parse("chaos summary: rounds=x"), None);
        assert_eq!(Summary::parse("something else"), None);
    }
}
