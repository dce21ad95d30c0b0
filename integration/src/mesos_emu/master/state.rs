//! What the emulated master knows, shared by its sections: agents, frameworks with their streams and
//! tasks, outstanding offers and decline filters, the fault switches; plus the shapes every section
//! builds (master-generated statuses, RecordIO event records) and the clock helpers.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use tether_mesos::model::*;
use tether_mesos::recordio;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::super::launcher::TaskControl;
use super::super::resources::Res;
use super::super::{AgentConfig, EmuConfig, MESOS_VERSION};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AgentStatus {
    Active,
    Unreachable,
    Removed,
    Gone,
}

#[derive(Debug)]
pub(crate) struct Agent {
    pub id: AgentID,
    pub cfg: AgentConfig,
    pub free: Res,
    pub status: AgentStatus,
    /// Since when the master has heard nothing from the agent (a partition, or its machine is down).
    pub partitioned_at: Option<Instant>,
    pub unreachable_ns: Option<i64>,
    /// After a master restart, until this instant the agent is "recovered but not re-registered".
    pub recovering_until: Option<Instant>,
    /// The machine is off (`kill`): silent, its tasks' processes gone; only a restart brings it back.
    pub down: bool,
    /// Its tasks' processes are stopped where they were (a partition with `freeze`) until it heals.
    pub frozen: bool,
    /// When it became UNREACHABLE or GONE: the registry forgets it `registry_max_agent_age` later.
    pub left_at: Option<Instant>,
    /// Tasks the master ended (marked gone) while their processes still ran behind a partition: the
    /// agent is shut down, and they with it, when it reconnects (or they die with its machine).
    pub orphans: Vec<mpsc::UnboundedSender<TaskControl>>,
    /// KILLs of its tasks sent while it was cut off (framework, call): the master re-sends them when it
    /// reconnects, unless it became UNREACHABLE meanwhile (the master then forgot them).
    pub killed: Vec<(String, Kill)>,
}

impl Agent {
    /// A freshly registered agent offering everything `cfg` has.
    pub(super) fn new(id: AgentID, cfg: AgentConfig) -> Agent {
        let mut free = Res::default()
            .scalar("cpus", cfg.cpus)
            .scalar("mem", cfg.mem)
            .scalar("disk", cfg.disk)
            .range("ports", cfg.ports.0, cfg.ports.1);
        // `MesosEmu::start` refused invalid reserved resources.
        free.add(&Res::from_resources(&cfg.reserved).unwrap_or_default());
        Agent {
            id,
            cfg,
            free,
            status: AgentStatus::Active,
            partitioned_at: None,
            unreachable_ns: None,
            recovering_until: None,
            down: false,
            frozen: false,
            left_at: None,
            orphans: Vec::new(),
            killed: Vec::new(),
        }
    }
    pub(super) fn reachable(&self, now: Instant) -> bool {
        self.status == AgentStatus::Active && self.partitioned_at.is_none() && !self.recovering(now)
    }
    pub(super) fn recovering(&self, now: Instant) -> bool {
        self.recovering_until.is_some_and(|t| now < t)
    }
}

#[derive(Debug)]
pub(crate) struct Task {
    pub info: TaskInfo,
    pub agent: AgentID,
    pub res: Res,
    /// Latest state reported by the agent (or set by the master).
    pub state: TaskState,
    /// State of the latest update sent to the framework.
    pub sent_state: Option<TaskState>,
    pub healthy: Option<bool>,
    /// Agent updates not yet acknowledged; the head is the one outstanding.
    pub pending: VecDeque<TaskStatus>,
    pub control: Option<mpsc::UnboundedSender<TaskControl>>,
    pub unreachable_ns: Option<i64>,
}

impl Task {
    /// Tells the launcher to stop the task at once (its agent or framework is gone).
    pub(super) fn kill_now(&self) {
        self.control_task(TaskControl::Kill {
            grace: Duration::ZERO,
        });
    }

    /// Hands `c` to the task's launcher, if it still runs the task.
    pub(super) fn control_task(&self, c: TaskControl) {
        if let Some(tx) = &self.control {
            let _ = tx.send(c);
        }
    }
}

#[derive(Debug)]
pub(crate) struct StreamConn {
    pub id: String,
    pub tx: mpsc::UnboundedSender<Bytes>,
    pub next_heartbeat: Instant,
}

#[derive(Debug)]
pub(crate) struct Framework {
    pub id: FrameworkID,
    pub info: FrameworkInfo,
    pub stream: Option<StreamConn>,
    pub suppressed: BTreeSet<String>,
    pub tasks: BTreeMap<String, Task>,
    pub failover_deadline: Option<Instant>,
}

impl Framework {
    fn aware(&self) -> bool {
        self.info.has_capability(CapabilityType::PartitionAware)
    }
    pub(super) fn multi_role(&self) -> bool {
        self.info.has_capability(CapabilityType::MultiRole)
    }
    pub(super) fn reservation_refinement(&self) -> bool {
        self.info
            .has_capability(CapabilityType::ReservationRefinement)
    }
    pub(super) fn roles(&self) -> Vec<String> {
        if self.multi_role() {
            self.info.roles.clone()
        } else {
            vec!["*".to_string()]
        }
    }
    /// Without PARTITION_AWARE, the partition states all read TASK_LOST.
    pub(super) fn map_state(&self, s: TaskState) -> TaskState {
        match s {
            TaskState::Dropped
            | TaskState::Unreachable
            | TaskState::Gone
            | TaskState::GoneByOperator
            | TaskState::Unknown
                if !self.aware() =>
            {
                TaskState::Lost
            }
            s => s,
        }
    }
}

#[derive(Debug)]
pub(crate) struct OfferRec {
    pub framework: String,
    pub agent: AgentID,
    pub role: String,
    pub res: Res,
}

/// A DECLINE (or the unused part of an ACCEPT): `framework`'s `role` gets no offer of `agent` whose
/// resources `refused` contains, until `until`.
#[derive(Debug)]
pub(super) struct Filter {
    pub framework: String,
    pub role: String,
    pub agent: String,
    pub until: Instant,
    pub refused: Res,
}

/// What the HTTP layer answers.
#[derive(Debug)]
pub(crate) enum Reply {
    Status(u16, String),
    Stream {
        stream_id: String,
        rx: mpsc::UnboundedReceiver<Bytes>,
    },
}

#[derive(Debug)]
pub(crate) struct State {
    pub cfg: Arc<EmuConfig>,
    pub master_id: String,
    pub port: u16,
    pub(super) next_fw: u32,
    pub(super) next_offer: u64,
    pub agents: BTreeMap<String, Agent>,
    pub frameworks: BTreeMap<String, Framework>,
    pub removed: BTreeSet<String>,
    pub offers: BTreeMap<String, OfferRec>,
    pub(super) filters: Vec<Filter>,
    /// The maintenance schedule as last posted (`/maintenance/schedule`).
    pub(super) schedule: MaintenanceSchedule,
    /// The allocator's maintenance of each agent in the schedule, by agent id.
    pub(super) maintenance: BTreeMap<String, super::maintenance::AgentMaintenance>,
    /// Outstanding inverse offers by id.
    pub(super) inverse_offers: BTreeMap<String, super::maintenance::InverseOfferRec>,
    /// When set, this master is not the leader: 307 to `//<leader>/api/v1/scheduler`.
    pub leader: Option<String>,
    /// When set, 503 (no leader elected).
    pub unavailable: bool,
    pub(super) next_allocation: Instant,
    pub(super) next_resend: Instant,
    pub(super) allocate_now: bool,
    pub(super) me: Option<Weak<Shared>>,
    /// Copy of every event record written, for conformance tests.
    pub tap: Option<mpsc::UnboundedSender<Bytes>>,
    pub heartbeats_enabled: bool,
}

/// The shared core: state plus the handle launchers report through.
#[derive(Debug)]
pub(crate) struct Shared {
    pub state: Mutex<State>,
}

pub(super) fn now_secs() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

pub(super) fn now_ns() -> i64 {
    (now_secs() * 1e9) as i64
}

pub(super) fn new_uuid_b64() -> String {
    base64::engine::general_purpose::STANDARD.encode(uuid::Uuid::new_v4().as_bytes())
}

/// One event as a RecordIO record, copied to the conformance tap when one listens.
pub(super) fn encode(tap: Option<&mpsc::UnboundedSender<Bytes>>, ev: &Event) -> Bytes {
    // Serialising our own model cannot fail; an empty record would be skipped by clients anyway.
    let json = serde_json::to_vec(ev).unwrap_or_default();
    if let Some(t) = tap {
        let _ = t.send(Bytes::from(json.clone()));
    }
    recordio::encode(&json)
}

/// A status the master itself generates (no uuid: sent once, never acknowledged).
pub(super) fn master_status(
    task_id: &TaskID,
    state: TaskState,
    reason: Reason,
    message: Option<String>,
    agent: Option<&AgentID>,
) -> TaskStatus {
    let mut s = TaskStatus::new(task_id.clone(), state);
    s.message = message;
    s.source = Some(Source::SourceMaster);
    s.reason = Some(reason);
    s.agent_id = agent.cloned();
    s.timestamp = Some(now_secs());
    s
}

impl Shared {
    pub fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A status update from an agent's executor: gets a uuid and joins the task's delivery queue.
    pub fn agent_report(
        &self,
        fw: &FrameworkID,
        task_id: &str,
        state: TaskState,
        reason: Option<Reason>,
        message: Option<String>,
        healthy: Option<bool>,
    ) {
        let mut st = self.lock();
        st.report(fw, task_id, state, reason, message, healthy);
    }
}

impl State {
    pub fn new(cfg: Arc<EmuConfig>, port: u16, me: Weak<Shared>) -> State {
        let master_id = uuid::Uuid::new_v4().to_string();
        let now = Instant::now();
        let mut agents = BTreeMap::new();
        for (i, a) in cfg.agents.iter().enumerate() {
            let id = AgentID::new(a.id.clone().unwrap_or_else(|| format!("{master_id}-S{i}")));
            agents.insert(id.value.clone(), Agent::new(id, a.clone()));
        }
        State {
            cfg,
            master_id,
            port,
            next_fw: 0,
            next_offer: 0,
            agents,
            frameworks: BTreeMap::new(),
            removed: BTreeSet::new(),
            offers: BTreeMap::new(),
            filters: Vec::new(),
            schedule: MaintenanceSchedule::default(),
            maintenance: BTreeMap::new(),
            inverse_offers: BTreeMap::new(),
            leader: None,
            unavailable: false,
            next_allocation: now,
            next_resend: now,
            allocate_now: true,
            me: Some(me),
            tap: None,
            heartbeats_enabled: true,
        }
    }

    pub fn master_info(&self) -> MasterInfo {
        MasterInfo {
            id: self.master_id.clone(),
            ip: u32::from_le_bytes([127, 0, 0, 1]),
            port: u32::from(self.port),
            pid: Some(format!("master@127.0.0.1:{}", self.port)),
            hostname: Some(self.cfg.hostname.clone()),
            version: Some(MESOS_VERSION.into()),
            address: Some(Address {
                hostname: Some(self.cfg.hostname.clone()),
                ip: Some("127.0.0.1".into()),
                port: i32::from(self.port),
            }),
            domain: None,
        }
    }

    /// `(framework, task)` ids of every task on `agent`.
    pub(super) fn agent_tasks(&self, agent: &str) -> Vec<(String, String)> {
        self.frameworks
            .iter()
            .flat_map(|(f, fr)| {
                fr.tasks
                    .iter()
                    .filter(|(_, t)| t.agent.value == agent)
                    .map(move |(t, _)| (f.clone(), t.clone()))
            })
            .collect()
    }
}
