//! Domain versions of what the peers tell the core: Mesos offers and task statuses, and the sidecar's
//! hello, report and command result. The shell converts wire messages into these (validating ids on the
//! way) and never passes wire types into the core.

use crate::ids::{AgentId, Hostname, OfferId, TaskId, VolumeName};
use serde::{Deserialize, Serialize};

/// An inclusive port range from a `ports` RANGES resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortRange {
    /// First port.
    pub begin: u64,
    /// Last port (inclusive).
    pub end: u64,
}

/// The value of an agent attribute.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum AttributeValue {
    /// TEXT attribute.
    Text(String),
    /// SCALAR attribute.
    Scalar(f64),
}

impl AttributeValue {
    /// The value as text, for equality and UNIQUE checks (scalars are rendered like Mesos renders them).
    #[must_use]
    pub fn render(&self) -> String {
        match self {
            AttributeValue::Text(t) => t.clone(),
            AttributeValue::Scalar(v) => format!("{v}"),
        }
    }
}

/// One Mesos offer, reduced to what placement needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Offer {
    /// Offer id.
    pub id: OfferId,
    /// The agent it is on.
    pub agent_id: AgentId,
    /// The agent's host name (`Offer.hostname`).
    pub hostname: Hostname,
    /// `domain.fault_domain.zone.name`, when set.
    pub zone: Option<String>,
    /// The agent's IP address (`Offer.url.address.ip`), when the master gave it.
    #[serde(default)]
    pub ip: Option<String>,
    /// Unreserved plus role-reserved cpus.
    pub cpus: f64,
    /// Memory, MB.
    pub mem_mb: f64,
    /// Disk, MB.
    pub disk_mb: f64,
    /// Offered port ranges.
    pub ports: Vec<PortRange>,
    /// Agent attributes (name, value).
    pub attributes: Vec<(String, AttributeValue)>,
    /// The allocation role of the offer.
    pub role: String,
    /// The parts of the totals above that are reserved (for the offer's role or an ancestor of it): a
    /// task taking them must name the same reservation or the master refuses the launch.
    #[serde(default)]
    pub reserved: Vec<ResourcePart>,
    /// Set while the agent's machine is scheduled for maintenance (`Offer.unavailability`): no node is
    /// placed there.
    #[serde(default)]
    pub unavailability: Option<Unavailability>,
}

/// A maintenance window (`mesos.v1.Unavailability`) on the core's clock: the shell converts the
/// master's epoch nanoseconds with the wall clock it reads when the event arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unavailability {
    /// When the machine may go down (`Millis(0)`: already started before this process did).
    pub start: crate::ids::Millis,
    /// How long it stays down; `None`: for good (no duration given).
    pub duration_ms: Option<u64>,
}

/// An inverse offer (`INVERSE_OFFERS`): the master asks for an agent back because its machine is
/// scheduled for maintenance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InverseOffer {
    /// Its id (answered with ACCEPT_INVERSE_OFFERS or DECLINE_INVERSE_OFFERS).
    pub id: OfferId,
    /// The agent under maintenance.
    pub agent_id: AgentId,
    /// The window.
    pub unavailability: Unavailability,
}

/// One reservation of a resource, in the post-refinement form (`Resource.reservations[]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reservation {
    /// DYNAMIC (made by RESERVE, with principal and labels) rather than STATIC (the agent's `--resources`).
    pub dynamic: bool,
    /// The role it is reserved for.
    pub role: String,
    /// Who reserved it (dynamic only).
    pub principal: Option<String>,
    /// Its labels (dynamic only), in order; `None` when the reservation has no `labels` field.
    pub labels: Option<Vec<(String, Option<String>)>>,
}

/// How much of a resource a part holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ResourceAmount {
    /// A SCALAR resource (cpus, mem, disk).
    Scalar(f64),
    /// A RANGES resource (ports).
    Ranges(Vec<PortRange>),
}

/// Some of one named resource under one reservation stack (empty: unreserved).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResourcePart {
    /// `cpus`, `mem`, `disk` or `ports`.
    pub name: String,
    /// The reservation stack, outermost first; empty for unreserved resources.
    pub reservations: Vec<Reservation>,
    /// How much.
    pub amount: ResourceAmount,
}

/// Mesos keeps three decimal digits of a scalar; splitting in thousandths keeps each part exact.
fn milli(v: f64) -> i64 {
    (v * 1000.0).round() as i64
}

impl Offer {
    /// The first two offered ports (HTTP, transport), if the offer has two.
    #[must_use]
    pub fn two_ports(&self) -> Option<(u16, u16)> {
        // Ranges come from the master: clamp them to real ports so a bogus range cannot spin.
        // Asked of every offer of every round: two ports on the stack, no allocation.
        let mut found: Option<u16> = None;
        for r in &self.ports {
            let begin = r.begin.max(1);
            let end = r.end.min(u64::from(u16::MAX));
            let mut p = begin;
            while p <= end {
                if let Ok(port) = u16::try_from(p) {
                    match found {
                        None => found = Some(port),
                        Some(first) if first != port => return Some((first, port)),
                        Some(_) => {}
                    }
                }
                p += 1;
            }
        }
        None
    }

    /// Whether `port` is in one of the offered ranges.
    #[must_use]
    pub fn offers_port(&self, port: u16) -> bool {
        let p = u64::from(port);
        self.ports.iter().any(|r| r.begin <= p && p <= r.end)
    }

    /// The (HTTP, transport) ports a node takes from this offer: each pinned one must be offered (else
    /// the offer does not fit, naming the port), an unpinned one is the first offered port the other
    /// does not use.
    pub fn node_ports(
        &self,
        http: Option<u16>,
        transport: Option<u16>,
    ) -> Result<(u16, u16), crate::command::Reason> {
        use crate::command::Reason;
        for (name, pinned) in [("http", http), ("transport", transport)] {
            if let Some(port) = pinned
                && !self.offers_port(port)
            {
                return Err(Reason::PinnedPortNotOffered {
                    name: name.to_owned(),
                    port,
                });
            }
        }
        match (http, transport) {
            (Some(h), Some(t)) => Ok((h, t)),
            (None, None) => self.two_ports().ok_or(Reason::Ports),
            (Some(h), None) => self.first_port_but(h).map(|t| (h, t)).ok_or(Reason::Ports),
            (None, Some(t)) => self.first_port_but(t).map(|h| (h, t)).ok_or(Reason::Ports),
        }
    }

    /// The first offered port other than `taken`.
    fn first_port_but(&self, taken: u16) -> Option<u16> {
        self.ports.iter().find_map(|r| {
            let begin = r.begin.max(1);
            let end = r.end.min(u64::from(u16::MAX));
            (begin..=end)
                .filter_map(|p| u16::try_from(p).ok())
                .find(|p| *p != taken)
        })
    }

    /// What a task asking for `cpus`, `mem_mb`, `disk_mb` and `ports` takes from this offer: the
    /// reserved parts first (a reservation is there to be used), the rest unreserved. Each part keeps
    /// its reservation, since the master checks a task's resources against the offer's with their
    /// reservations, so reserved and unreserved amounts are never summed into one resource.
    #[must_use]
    pub fn take(&self, cpus: f64, mem_mb: f64, disk_mb: f64, ports: &[u16]) -> Vec<ResourcePart> {
        let mut out = Vec::new();
        for (name, want) in [("cpus", cpus), ("mem", mem_mb), ("disk", disk_mb)] {
            let mut left = milli(want);
            if left <= 0 {
                continue;
            }
            for part in self.reserved.iter().filter(|p| p.name == name) {
                let ResourceAmount::Scalar(have) = part.amount else {
                    continue;
                };
                let taken = left.min(milli(have));
                if taken > 0 {
                    left -= taken;
                    out.push(ResourcePart {
                        name: name.to_owned(),
                        reservations: part.reservations.clone(),
                        amount: ResourceAmount::Scalar(taken as f64 / 1000.0),
                    });
                }
            }
            if left > 0 {
                out.push(ResourcePart {
                    name: name.to_owned(),
                    reservations: Vec::new(),
                    amount: ResourceAmount::Scalar(left as f64 / 1000.0),
                });
            }
        }
        // Each port under the reservation of the reserved range holding it (unreserved otherwise), as
        // single-port ranges merged when adjacent.
        let mut ports: Vec<u16> = ports.to_vec();
        ports.sort_unstable();
        ports.dedup();
        let mut by_reservation: Vec<(Vec<Reservation>, Vec<PortRange>)> = Vec::new();
        for port in ports {
            let p = u64::from(port);
            let reservations = self
                .reserved
                .iter()
                .filter(|part| part.name == "ports")
                .find(|part| {
                    matches!(&part.amount, ResourceAmount::Ranges(rs)
                        if rs.iter().any(|r| r.begin <= p && p <= r.end))
                })
                .map(|part| part.reservations.clone())
                .unwrap_or_default();
            let i = match by_reservation.iter().position(|(r, _)| *r == reservations) {
                Some(i) => i,
                None => {
                    by_reservation.push((reservations, Vec::new()));
                    by_reservation.len() - 1
                }
            };
            let ranges = &mut by_reservation[i].1;
            match ranges.last_mut() {
                Some(last) if last.end + 1 == p => last.end = p,
                _ => ranges.push(PortRange { begin: p, end: p }),
            }
        }
        // Reserved parts first, as for the scalars.
        by_reservation.sort_by_key(|(r, _)| r.is_empty());
        out.extend(
            by_reservation
                .into_iter()
                .map(|(reservations, ranges)| ResourcePart {
                    name: "ports".to_owned(),
                    reservations,
                    amount: ResourceAmount::Ranges(ranges),
                }),
        );
        out
    }

    /// The value of attribute `name`, rendered.
    #[must_use]
    pub fn attribute(&self, name: &str) -> Option<String> {
        self.attributes
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.render())
    }
}

/// Mesos `TaskState`, every value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum TaskState {
    /// TASK_STAGING
    Staging,
    /// TASK_STARTING
    Starting,
    /// TASK_RUNNING
    Running,
    /// TASK_KILLING
    Killing,
    /// TASK_FINISHED
    Finished,
    /// TASK_FAILED
    Failed,
    /// TASK_KILLED
    Killed,
    /// TASK_ERROR
    Error,
    /// TASK_LOST
    Lost,
    /// TASK_DROPPED
    Dropped,
    /// TASK_UNREACHABLE
    Unreachable,
    /// TASK_GONE
    Gone,
    /// TASK_GONE_BY_OPERATOR
    GoneByOperator,
    /// TASK_UNKNOWN
    Unknown,
}

impl TaskState {
    /// Whether the task is known not to run any more, so its node may be relaunched. UNREACHABLE and
    /// UNKNOWN are not terminal: the task may still hold its volumes.
    #[must_use]
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            TaskState::Finished
                | TaskState::Failed
                | TaskState::Killed
                | TaskState::Error
                | TaskState::Lost
                | TaskState::Dropped
                | TaskState::Gone
                | TaskState::GoneByOperator
        )
    }

    /// The Mesos enum name (`TASK_RUNNING`).
    #[must_use]
    pub fn as_mesos(self) -> &'static str {
        match self {
            TaskState::Staging => "TASK_STAGING",
            TaskState::Starting => "TASK_STARTING",
            TaskState::Running => "TASK_RUNNING",
            TaskState::Killing => "TASK_KILLING",
            TaskState::Finished => "TASK_FINISHED",
            TaskState::Failed => "TASK_FAILED",
            TaskState::Killed => "TASK_KILLED",
            TaskState::Error => "TASK_ERROR",
            TaskState::Lost => "TASK_LOST",
            TaskState::Dropped => "TASK_DROPPED",
            TaskState::Unreachable => "TASK_UNREACHABLE",
            TaskState::Gone => "TASK_GONE",
            TaskState::GoneByOperator => "TASK_GONE_BY_OPERATOR",
            TaskState::Unknown => "TASK_UNKNOWN",
        }
    }

    /// Parses the Mesos enum name.
    #[must_use]
    pub fn from_mesos(name: &str) -> Option<TaskState> {
        ALL_STATES.iter().copied().find(|s| s.as_mesos() == name)
    }
}

/// Every task state, for parsing and tests.
pub const ALL_STATES: [TaskState; 14] = [
    TaskState::Staging,
    TaskState::Starting,
    TaskState::Running,
    TaskState::Killing,
    TaskState::Finished,
    TaskState::Failed,
    TaskState::Killed,
    TaskState::Error,
    TaskState::Lost,
    TaskState::Dropped,
    TaskState::Unreachable,
    TaskState::Gone,
    TaskState::GoneByOperator,
    TaskState::Unknown,
];

/// Mesos `TaskStatus.Reason`: the values the shell's Mesos model knows, parsed once at the edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum TaskReason {
    /// REASON_COMMAND_EXECUTOR_FAILED
    CommandExecutorFailed,
    /// REASON_CONTAINER_LAUNCH_FAILED
    ContainerLaunchFailed,
    /// REASON_CONTAINER_LIMITATION
    ContainerLimitation,
    /// REASON_CONTAINER_LIMITATION_DISK
    ContainerLimitationDisk,
    /// REASON_CONTAINER_LIMITATION_MEMORY
    ContainerLimitationMemory,
    /// REASON_CONTAINER_PREEMPTED
    ContainerPreempted,
    /// REASON_EXECUTOR_TERMINATED
    ExecutorTerminated,
    /// REASON_EXECUTOR_UNREGISTERED
    ExecutorUnregistered,
    /// REASON_FRAMEWORK_REMOVED
    FrameworkRemoved,
    /// REASON_INVALID_OFFERS
    InvalidOffers,
    /// REASON_MASTER_DISCONNECTED
    MasterDisconnected,
    /// REASON_RECONCILIATION
    Reconciliation,
    /// REASON_AGENT_DISCONNECTED
    AgentDisconnected,
    /// REASON_AGENT_DRAINING (`DRAIN_AGENT`: the master kills the agent's tasks for maintenance)
    AgentDraining,
    /// REASON_AGENT_REMOVED
    AgentRemoved,
    /// REASON_AGENT_REMOVED_BY_OPERATOR
    AgentRemovedByOperator,
    /// REASON_AGENT_REREGISTERED
    AgentReregistered,
    /// REASON_AGENT_RESTARTED
    AgentRestarted,
    /// REASON_AGENT_UNKNOWN
    AgentUnknown,
    /// REASON_TASK_KILLED_DURING_LAUNCH
    TaskKilledDuringLaunch,
    /// REASON_TASK_CHECK_STATUS_UPDATED
    TaskCheckStatusUpdated,
    /// REASON_TASK_HEALTH_CHECK_STATUS_UPDATED
    TaskHealthCheckStatusUpdated,
    /// REASON_TASK_GROUP_INVALID
    TaskGroupInvalid,
    /// REASON_TASK_GROUP_UNAUTHORIZED
    TaskGroupUnauthorized,
    /// REASON_TASK_INVALID
    TaskInvalid,
    /// REASON_TASK_UNAUTHORIZED
    TaskUnauthorized,
    /// REASON_TASK_UNKNOWN
    TaskUnknown,
    /// A reason this build does not know (a newer master).
    Unrecognized,
}

impl TaskReason {
    /// The Mesos enum name (`REASON_AGENT_REMOVED`); `UNRECOGNIZED` for one this build does not know.
    #[must_use]
    pub fn as_mesos(self) -> &'static str {
        match self {
            TaskReason::CommandExecutorFailed => "REASON_COMMAND_EXECUTOR_FAILED",
            TaskReason::ContainerLaunchFailed => "REASON_CONTAINER_LAUNCH_FAILED",
            TaskReason::ContainerLimitation => "REASON_CONTAINER_LIMITATION",
            TaskReason::ContainerLimitationDisk => "REASON_CONTAINER_LIMITATION_DISK",
            TaskReason::ContainerLimitationMemory => "REASON_CONTAINER_LIMITATION_MEMORY",
            TaskReason::ContainerPreempted => "REASON_CONTAINER_PREEMPTED",
            TaskReason::ExecutorTerminated => "REASON_EXECUTOR_TERMINATED",
            TaskReason::ExecutorUnregistered => "REASON_EXECUTOR_UNREGISTERED",
            TaskReason::FrameworkRemoved => "REASON_FRAMEWORK_REMOVED",
            TaskReason::InvalidOffers => "REASON_INVALID_OFFERS",
            TaskReason::MasterDisconnected => "REASON_MASTER_DISCONNECTED",
            TaskReason::Reconciliation => "REASON_RECONCILIATION",
            TaskReason::AgentDisconnected => "REASON_AGENT_DISCONNECTED",
            TaskReason::AgentDraining => "REASON_AGENT_DRAINING",
            TaskReason::AgentRemoved => "REASON_AGENT_REMOVED",
            TaskReason::AgentRemovedByOperator => "REASON_AGENT_REMOVED_BY_OPERATOR",
            TaskReason::AgentReregistered => "REASON_AGENT_REREGISTERED",
            TaskReason::AgentRestarted => "REASON_AGENT_RESTARTED",
            TaskReason::AgentUnknown => "REASON_AGENT_UNKNOWN",
            TaskReason::TaskKilledDuringLaunch => "REASON_TASK_KILLED_DURING_LAUNCH",
            TaskReason::TaskCheckStatusUpdated => "REASON_TASK_CHECK_STATUS_UPDATED",
            TaskReason::TaskHealthCheckStatusUpdated => "REASON_TASK_HEALTH_CHECK_STATUS_UPDATED",
            TaskReason::TaskGroupInvalid => "REASON_TASK_GROUP_INVALID",
            TaskReason::TaskGroupUnauthorized => "REASON_TASK_GROUP_UNAUTHORIZED",
            TaskReason::TaskInvalid => "REASON_TASK_INVALID",
            TaskReason::TaskUnauthorized => "REASON_TASK_UNAUTHORIZED",
            TaskReason::TaskUnknown => "REASON_TASK_UNKNOWN",
            TaskReason::Unrecognized => "UNRECOGNIZED",
        }
    }

    /// Whether the reason says the task's agent went away (removed, disconnected or unknown to the
    /// master), rather than the task failing on it.
    #[must_use]
    pub fn agent_gone(self) -> bool {
        matches!(
            self,
            TaskReason::AgentRemoved
                | TaskReason::AgentDisconnected
                | TaskReason::AgentRemovedByOperator
                | TaskReason::AgentUnknown
        )
    }
}

/// `TaskStatus.source`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum StatusSource {
    /// SOURCE_MASTER
    Master,
    /// SOURCE_AGENT
    Agent,
    /// SOURCE_EXECUTOR
    Executor,
}

/// One status update (an UPDATE event, or a reconciliation answer).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskStatus {
    /// Task id.
    pub task_id: TaskId,
    /// Agent, when the master filled it.
    pub agent_id: Option<AgentId>,
    /// The state.
    pub state: TaskState,
    /// Why the update was sent, when the master or agent said.
    pub reason: Option<TaskReason>,
    /// Human message.
    pub message: Option<String>,
    /// Who generated the update.
    pub source: Option<StatusSource>,
    /// Present only when the update must be acknowledged; echoed back unchanged.
    pub uuid: Option<String>,
    /// Health check result, when the task has one.
    pub healthy: Option<bool>,
}

/// Scope of the sidecar's volume driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DriverScope {
    /// Not yet known.
    Unknown,
    /// Host-local volumes.
    Local,
    /// Cluster-wide volumes.
    Global,
}

/// Hello feature: the sidecar applies `Prepare.owner` to each volume's root.
pub const FEATURE_VOLUME_OWNER: &str = "volume_owner";
/// Hello feature: the sidecar answers `Prepare.identity` with a CSR and understands `InstallIdentity`.
pub const FEATURE_NODE_IDENTITY: &str = "node_identity";
/// Hello feature: the sidecar observes the share assigned by `WatchDelta` and may send delta reports.
pub const FEATURE_WATCH_DELTA: &str = "watch_delta";

/// A sidecar's `Hello`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    /// The agent's host name (the sidecar's key).
    pub hostname: Hostname,
    /// The agent id, when the sidecar knows it.
    pub agent_id: Option<AgentId>,
    /// Sidecar version.
    pub sidecar_version: String,
    /// Volume driver name.
    pub driver_name: String,
    /// Driver scope.
    pub driver_scope: DriverScope,
    /// Agent zone, when known.
    pub zone: Option<String>,
    /// Attach slots of the agent; `None` means no limit.
    pub max_attachments: Option<u32>,
    /// Changes when the sidecar process restarts.
    pub instance_id: String,
    /// What the sidecar can do beyond the first version of the contract (`volume_owner`, `node_identity`).
    #[serde(default)]
    pub features: Vec<String>,
}

/// Where the volume driver itself says a volume is attached, relative to the reporting agent (libStorage's
/// `attachmentState`: 2, 3, 4). Drivers that do not say (REX-Ray's Docker plugin) report nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DriverAttachment {
    /// Attached to this agent.
    Here,
    /// Attached nowhere.
    Available,
    /// Attached to another agent.
    Elsewhere,
}

/// What a sidecar knows of one volume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeReport {
    /// Volume name.
    pub name: VolumeName,
    /// The driver knows it.
    pub exists: bool,
    /// Size in bytes.
    pub size_bytes: Option<u64>,
    /// Free bytes (when mounted).
    pub free_bytes: Option<u64>,
    /// Volume zone, when known.
    pub zone: Option<String>,
    /// The sidecar holds a mount of it on this agent.
    pub attached_here: bool,
    /// Where the driver says it is attached, when the driver says.
    pub driver_attachment: Option<DriverAttachment>,
    /// The driver's last error for it.
    pub last_error: Option<String>,
}

/// What Elasticsearch's elected master lists, as the shell last asked it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum EsView {
    /// A node answered for the elected master: the master's node name and every node name it lists.
    Master {
        /// The elected master's node name.
        master: String,
        /// Every node the master lists.
        nodes: std::collections::BTreeSet<String>,
    },
    /// No node could say (none answered, or no master is elected).
    NoMaster {
        /// What the nodes answered.
        why: String,
    },
}

/// The cluster's health as `GET /_cluster/health` gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum EsHealth {
    /// Every shard assigned.
    Green,
    /// Every primary assigned, some replica not.
    Yellow,
    /// Some primary unassigned: some data cannot be read or written.
    Red,
    /// The node asked knows no elected master (503 `master_not_discovered_exception`).
    NoMaster,
    /// No running node answered (or none runs), or the last answer is too old.
    Unknown,
}

impl EsHealth {
    /// The word of the admin API's `health` (`green|yellow|red|unknown`): without an elected master
    /// Elasticsearch gives no colour, so `unknown`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            EsHealth::Green => "green",
            EsHealth::Yellow => "yellow",
            EsHealth::Red => "red",
            EsHealth::NoMaster | EsHealth::Unknown => "unknown",
        }
    }
}

/// The shard counts of `GET /_cluster/health`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardCounts {
    /// `active_shards`.
    pub active: u64,
    /// `relocating_shards`.
    pub relocating: u64,
    /// `initializing_shards`.
    pub initializing: u64,
    /// `unassigned_shards`.
    pub unassigned: u64,
}

/// A node the elected master lists, by node name (Tether's node name, `node.name`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EsNode {
    /// Elasticsearch's persistent node id (the key of the cluster state's `nodes`; kept in the data
    /// path, so a node relaunched on its volumes keeps it). The node shutdown API's path takes it.
    pub id: String,
    /// `version` (`8.15.0`), when `_cat/nodes` said.
    pub version: Option<EsVersion>,
    /// Its roles include `master`, when `_cat/nodes` said (`None`: unknown; Elasticsearch's default
    /// roles include it).
    pub master_eligible: Option<bool>,
}

/// An Elasticsearch version, `major.minor.patch` (a `-SNAPSHOT` or other suffix ignored).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct EsVersion(pub u32, pub u32, pub u32);

impl EsVersion {
    /// The first version whose node shutdown API Tether uses (ECK's rule: 7.15.2).
    pub const SHUTDOWN_API: EsVersion = EsVersion(7, 15, 2);

    /// Parses `8.15.0`, `7.17.1-SNAPSHOT`; `None` for anything else.
    #[must_use]
    pub fn parse(text: &str) -> Option<EsVersion> {
        let core = text.trim().split(['-', '+']).next()?;
        let mut parts = core.split('.').map(|p| p.parse::<u32>().ok());
        let v = EsVersion(
            parts.next()??,
            parts.next()??,
            parts.next().unwrap_or(Some(0))?,
        );
        parts.next().is_none().then_some(v)
    }
}

impl std::fmt::Display for EsVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

/// A shard copy's `state` in `_cat/shards`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ShardState {
    /// STARTED: serving on its node.
    Started,
    /// RELOCATING: serving on its node while a copy is built elsewhere.
    Relocating,
    /// INITIALIZING: being built on its node (not a usable copy yet).
    Initializing,
    /// UNASSIGNED: on no node.
    Unassigned,
}

/// One shard copy (`_cat/shards?format=json&h=index,shard,prirep,state,node`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct EsShard {
    /// The index.
    pub index: String,
    /// The shard number.
    pub shard: u32,
    /// `prirep` is `p`.
    pub primary: bool,
    /// Its state.
    pub state: ShardState,
    /// The node name holding it (the source of a relocation); `None` when unassigned.
    pub node: Option<String>,
}

impl EsShard {
    /// A copy that serves reads on its node (STARTED, or RELOCATING away from it).
    #[must_use]
    pub fn serving(&self) -> bool {
        matches!(self.state, ShardState::Started | ShardState::Relocating)
    }
}

/// A node shutdown record's `type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ShutdownKind {
    /// `restart`: the node comes back; its shards are not moved.
    Restart,
    /// `remove`: the node leaves for good; its shards are moved away.
    Remove,
    /// `replace`: another node (`target_node_name`) takes its shards.
    Replace,
}

impl ShutdownKind {
    /// The API's word.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            ShutdownKind::Restart => "restart",
            ShutdownKind::Remove => "remove",
            ShutdownKind::Replace => "replace",
        }
    }
}

/// A node shutdown record's `status` (`GET _nodes/shutdown`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ShutdownStatus {
    /// NOT_STARTED.
    NotStarted,
    /// IN_PROGRESS.
    InProgress,
    /// STALLED: Elasticsearch cannot finish (e.g. a shard has nowhere to go).
    Stalled,
    /// COMPLETE: the node may be stopped.
    Complete,
}

/// One node shutdown record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeShutdown {
    /// Its type.
    pub kind: ShutdownKind,
    /// Its status.
    pub status: ShutdownStatus,
}

/// What the scheduler's poller last learnt from Elasticsearch, in one piece: who the elected master
/// lists (storage fencing reads only that), the health, the shards, the node shutdown records and the
/// voting configuration exclusions. A part the cluster did not answer is `None` (unknown), never empty.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EsCluster {
    /// The elected master and the node names it lists, or why no node could say.
    pub view: EsView,
    /// `_cluster/health`'s status.
    pub health: EsHealth,
    /// `_cluster/health`'s shard counts (`None`: not answered).
    pub shard_counts: Option<ShardCounts>,
    /// The nodes the elected master lists, by node name.
    pub nodes: std::collections::BTreeMap<String, EsNode>,
    /// Every shard copy (`None`: `_cat/shards` not answered).
    pub shards: Option<Vec<EsShard>>,
    /// Node shutdown records by Elasticsearch node id (`None`: not answered, e.g. before 7.15).
    pub shutdowns: Option<std::collections::BTreeMap<String, NodeShutdown>>,
    /// Node names in the voting configuration exclusions (`None`: not answered).
    pub voting_exclusions: Option<std::collections::BTreeSet<String>>,
}

impl EsCluster {
    /// A cluster no node answered for.
    #[must_use]
    pub fn unanswered(why: String) -> EsCluster {
        EsCluster {
            view: EsView::NoMaster { why },
            health: EsHealth::Unknown,
            shard_counts: None,
            nodes: std::collections::BTreeMap::new(),
            shards: None,
            shutdowns: None,
            voting_exclusions: None,
        }
    }

    /// Whether the elected master lists node `name`.
    #[must_use]
    pub fn lists(&self, name: &str) -> bool {
        matches!(&self.view, EsView::Master { nodes, .. } if nodes.contains(name))
    }

    /// How many shard copies node `name` holds (`None`: shards unknown).
    #[must_use]
    pub fn shards_on(&self, name: &str) -> Option<u64> {
        self.shards
            .as_ref()
            .map(|s| s.iter().filter(|c| c.node.as_deref() == Some(name)).count() as u64)
    }

    /// The lowest version of the listed nodes, when every one is known.
    #[must_use]
    pub fn min_version(&self) -> Option<EsVersion> {
        let mut min: Option<EsVersion> = None;
        for n in self.nodes.values() {
            let v = n.version?;
            min = Some(min.map_or(v, |m| m.min(v)));
        }
        min
    }

    /// The indices with a shard whose only serving copy is on a node of `leaving` (sorted, each once):
    /// removing that node removes the last copy. A shard with two serving copies, even both on leaving
    /// nodes, is not one: the data move relocates them, and a relocating copy serves until its new
    /// copy has started.
    #[must_use]
    pub fn last_copies_on(&self, leaving: &std::collections::BTreeSet<String>) -> Vec<String> {
        let Some(shards) = &self.shards else {
            return Vec::new();
        };
        let mut copies: std::collections::BTreeMap<(&str, u32), Vec<&str>> =
            std::collections::BTreeMap::new();
        for c in shards.iter().filter(|c| c.serving()) {
            if let Some(n) = &c.node {
                copies.entry((&c.index, c.shard)).or_default().push(n);
            }
        }
        let indices: std::collections::BTreeSet<String> = copies
            .into_iter()
            .filter(|(_, nodes)| matches!(nodes.as_slice(), [n] if leaving.contains(*n)))
            .map(|((index, _), _)| index.to_owned())
            .collect();
        indices.into_iter().collect()
    }
}

/// A sidecar's periodic `Report`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// Strictly increasing per sidecar process.
    pub sequence: u64,
    /// The last driver call succeeded.
    pub driver_healthy: bool,
    /// Latency of the last driver call, µs.
    pub driver_latency_micros: u64,
    /// The driver's last error.
    pub driver_error: Option<String>,
    /// Watched volumes.
    pub volumes: Vec<VolumeReport>,
    /// Attach slots in use on the agent.
    pub attachments_used: u32,
}

/// What a node's certificate will name; the sidecar generates the key on `volume` and answers with a CSR.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityRequest {
    /// The volume holding the identity files.
    pub volume: VolumeName,
    /// Directory inside the volume's root (`""`: the root).
    pub dir: String,
    /// The node name.
    pub common_name: String,
    /// Host names the certificate names (the agent's, the node name).
    pub dns_names: Vec<String>,
    /// IP addresses the certificate names (the agent's, when known).
    pub ip_addresses: Vec<String>,
}

/// Outcome of a `Prepare` or `Release`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandResult {
    /// The command answered.
    pub command_id: u64,
    /// Every volume succeeded.
    pub ok: bool,
    /// The first error.
    pub error: Option<String>,
    /// Volumes touched, after the command.
    pub volumes: Vec<VolumeReport>,
    /// For a Prepare with an identity: the CSR of the key the sidecar generated.
    #[serde(default)]
    pub csr_pem: Option<String>,
}
