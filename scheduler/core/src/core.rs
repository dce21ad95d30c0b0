//! The state machine's data and shared machinery: [`Core`] (node table through its [`PersistedState`],
//! sidecar view, held offers, reconciliation, timers, the command queue), construction and restore,
//! `poll_*`, the invariant checker, and the launch/prepare steps. The event handlers live beside it:
//! `mesos_events`, `sidecar_events`, `admin` and `placement`.

use crate::command::{Command, MesosCommand, Reason, SidecarCommand, WatchEvent};
use crate::config::{Config, Strategy};
use crate::domain::{Offer, TaskState, VolumeReport};
use crate::error::CoreError;
use crate::ids::{AgentId, Hostname, Millis, NodeId, OfferId, TaskId, VolumeName};
use crate::state::{PersistedState, SlotRecord, StateWrite};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

/// The largest desired count the core accepts in one cluster (a guard against typos, not a design limit).
pub const MAX_NODES: u64 = 1_000_000;

/// In-memory, non-durable facts about one slot.
#[derive(Debug, Clone)]
pub(crate) struct SlotRuntime {
    pub(crate) preparing: Option<Preparing>,
    /// Consecutive failures, for the backoff. A task reaching RUNNING does not clear it (Elasticsearch
    /// fails its bootstrap checks after the container runs): only one that ran [`Core::stable_run_ms`].
    pub(crate) failures: u32,
    /// No placement before this time.
    pub(crate) not_before: Millis,
    /// When the current task last got any status (reconciliation answers included).
    pub(crate) last_status_at: Option<Millis>,
    /// When the current task was launched by this process.
    pub(crate) launched_at: Option<Millis>,
    /// Health of the current task, when reported.
    pub(crate) healthy: Option<bool>,
    /// Since when the current task is RUNNING as this process saw it.
    pub(crate) running_since: Option<Millis>,

    /// The agent where the node's last prepare failed or timed out: placed there only as a last resort.
    pub(crate) avoid_host: Option<Hostname>,
    /// Rendered attributes of the agent the node was placed on (for UNIQUE constraints).
    pub(crate) attributes: Vec<(String, String)>,
    /// Last reason the slot is waiting (not durable beyond `SlotRecord::last_reason`).
    pub(crate) reason: Option<Reason>,
    /// When the slot entered its current state.
    pub(crate) since: Millis,
    /// The `cluster_uuid` the current task last reported in `GET /` (`None`: not yet, or `_na_`).
    pub(crate) cluster_uuid: Option<String>,
    /// The current task reported a cluster UUID other than the stored one: it joined another cluster.
    pub(crate) foreign_cluster: Option<String>,
    /// Since when its task is UNREACHABLE as this process saw it (a restart starts the wait anew).
    pub(crate) unreachable_since: Option<Millis>,
    /// Since when Elasticsearch's elected master does not list the node (reset while no master answers).
    pub(crate) es_absent_since: Option<Millis>,
    /// Its pending placement replaces a storage-fenced task: launch only on a confirmed attachment.
    pub(crate) replacing_fenced: bool,
    /// This process's progress on the node's safe removal (`SlotRecord::removal` is the durable part).
    pub(crate) removal: crate::removal::RemovalRuntime,
}

/// The address a node on `offer` publishes: the agent's IP with `--use-ip-address` (when the offer
/// carries one), else its host name.
pub(crate) fn publish_address(cfg: &crate::config::Config, offer: &Offer) -> String {
    match (&offer.ip, cfg.use_ip_address) {
        (Some(ip), true) => ip.clone(),
        _ => offer.hostname.as_str().to_owned(),
    }
}

/// An offer held while the sidecar prepares the node's volumes.
#[derive(Debug, Clone)]
pub(crate) struct Preparing {
    pub(crate) offer: Offer,
    pub(crate) command_id: u64,
    #[allow(
        dead_code,
        reason = "kept for debugging output; the hold timer is in `timers`"
    )]
    pub(crate) deadline: Millis,
    pub(crate) http_port: u16,
    pub(crate) transport_port: u16,
    /// With security on: the identity the prepare asked for, and the InstallIdentity sent once its CSR
    /// came back (the launch waits for that command's answer).
    pub(crate) identity: Option<crate::domain::IdentityRequest>,
    pub(crate) install_id: Option<u64>,
}

/// A prepare the core gave up on before its answer came.
#[derive(Debug, Clone)]
pub(crate) struct Abandoned {
    pub(crate) node: NodeId,
    pub(crate) host: Hostname,
    pub(crate) volumes: Vec<VolumeName>,
    pub(crate) deadline: Millis,
}

/// What the core knows of one agent's sidecar.
#[derive(Debug, Clone)]
pub(crate) struct Sidecar {
    pub(crate) agent_id: Option<AgentId>,
    pub(crate) connected: bool,
    pub(crate) instance_id: String,
    pub(crate) zone: Option<String>,
    pub(crate) max_attachments: Option<u32>,
    /// Features the sidecar declared in its Hello.
    pub(crate) features: Vec<String>,
    pub(crate) driver_name: String,
    pub(crate) driver_scope: crate::domain::DriverScope,
    pub(crate) last_report_at: Option<Millis>,
    pub(crate) last_sequence: u64,
    pub(crate) driver_healthy: bool,
    pub(crate) driver_latency_micros: u64,
    pub(crate) driver_error: Option<String>,
    pub(crate) attachments_used: u32,
    pub(crate) volumes: BTreeMap<VolumeName, VolumeReport>,
}

/// Every sidecar's view of one volume, folded together.
#[derive(Debug, Clone, Default)]
pub(crate) struct VolumeAgg {
    /// How many sidecars' latest reports say the volume exists / does not exist (counts, not host sets:
    /// every sidecar reports every watched volume, so sets would cost agents x volumes).
    pub(crate) exists: u32,
    pub(crate) missing: u32,
    /// Hosts with a host-local driver on which the volume exists.
    pub(crate) local_hosts: BTreeSet<Hostname>,
    pub(crate) attached_hosts: BTreeSet<Hostname>,
    pub(crate) zone: Option<String>,
    pub(crate) size_bytes: Option<u64>,
    pub(crate) free_bytes: Option<u64>,
    pub(crate) last_error: Option<String>,
}

/// One explicit reconciliation in progress.
#[derive(Debug, Clone)]
pub(crate) struct Recon {
    pub(crate) started: Millis,
    pub(crate) remaining: BTreeSet<TaskId>,
    pub(crate) attempt: u32,
    pub(crate) next_at: Millis,
}

/// Timers kept in one ordered set; each is re-validated when it fires.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Timer {
    PrepareHold(NodeId, u64),
    GraceEnd,
    Backoff(NodeId),
    LaunchStatus(NodeId, TaskId),
    /// A storage-fenced replacement may be due.
    Fence(NodeId),
    /// An absent agent may be due to be forgotten (`forget.rs`).
    Forget,
    /// A safe removal's step may be overdue, or a failed call due again (`removal.rs`).
    Removal(NodeId),
    /// The rollout's step may be overdue, or a failed call due again (`rollout.rs`).
    Rollout,
}

/// The result of a scale request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScalePlan {
    /// Ids that will be started (lowest free first).
    pub start: Vec<NodeId>,
    /// Ids that will be stopped (highest first); their volumes are kept.
    pub stop: Vec<NodeId>,
}

/// The scheduling core. See the crate documentation for the contract with the shell.
#[derive(Debug)]
pub struct Core {
    pub(crate) config: Config,
    pub(crate) persisted: PersistedState,
    /// The node groups by index (0: the default group), each with its allocated ids.
    pub(crate) groups: BTreeMap<u16, crate::groups::Group>,
    pub(crate) slots: BTreeMap<NodeId, SlotRuntime>,
    pub(crate) tasks: HashMap<TaskId, NodeId>,
    pub(crate) sidecars: BTreeMap<Hostname, Sidecar>,
    pub(crate) volumes: foldhash::HashMap<VolumeName, VolumeAgg>,
    pub(crate) volume_owner: HashMap<VolumeName, NodeId>,
    // Looked up for every offer of every round (placement.rs): a fast hasher; nothing iterates them into
    // commands.
    pub(crate) agent_hosts: foldhash::HashMap<AgentId, Hostname>,
    /// Every host that offered, numbered, with its attributes and last decline (`placement.rs`).
    pub(crate) offered: crate::placement::OfferedHosts,
    pub(crate) subscribed_since: Option<Millis>,
    pub(crate) suppressed: bool,
    pub(crate) revive_wanted: bool,
    pub(crate) recon: Option<Recon>,
    pub(crate) next_implicit: Option<Millis>,
    /// Ordered: dropping every hold emits commands per hold, in this map's order.
    pub(crate) holds: BTreeMap<OfferId, NodeId>,
    /// Prepares given up on whose answer has not arrived: they may still mount until their deadline.
    /// Ordered by command id: a disconnect emits writes per abandoned prepare, in this map's order.
    pub(crate) abandoned_prepares: BTreeMap<u64, Abandoned>,
    /// Stray sidecar mounts already asked to be released (until a report shows them gone).
    pub(crate) stray_released: std::collections::HashSet<(Hostname, VolumeName)>,

    pub(crate) timers: BTreeSet<(Millis, Timer)>,
    pub(crate) commands: VecDeque<Command>,
    pub(crate) next_command_id: u64,
    pub(crate) watch: std::sync::Arc<Vec<VolumeName>>,
    /// No placement before this time (set at the first SUBSCRIBED of this process).
    pub(crate) placement_from: Option<Millis>,
    /// The last Elasticsearch view and when it came.
    pub(crate) es: Option<(Millis, crate::domain::EsView)>,
    /// The last whole observation of the Elasticsearch cluster and when it came.
    pub(crate) es_cluster: Option<(Millis, crate::domain::EsCluster)>,
    /// Elasticsearch calls sent and not yet answered, with the node whose removal sent them.
    pub(crate) es_calls: BTreeMap<u64, NodeId>,
    /// Agents Mesos says are scheduled for maintenance (`maintenance.rs`; learnt again after a restart
    /// from the inverse offers and offers the master sends).
    pub(crate) maintenance: crate::maintenance::MaintenanceState,
    /// UNREACHABLE tasks whose nodes were replaced under storage fencing: killed wherever they show up.
    pub(crate) fenced_tasks: BTreeMap<TaskId, crate::fencing::FencedTask>,
    /// Hosts nothing vouches for any more, since when (`forget.rs`).
    pub(crate) absent_since: BTreeMap<Hostname, Millis>,
    /// When the armed `Timer::Forget` fires.
    pub(crate) forget_at: Option<Millis>,
    /// Which `watch_delta` sidecar observes which volume (`observe.rs`).
    pub(crate) observe: crate::observe::Observation,
    /// This process's progress on the rollout's current step (`rollout.rs`).
    pub(crate) rollout_rt: crate::rollout::RolloutRuntime,
    /// Elasticsearch calls of the rollout sent and not yet answered.
    pub(crate) rollout_calls: BTreeSet<u64>,
    /// The wall-clock time the shell last gave (`renewal.rs`).
    pub(crate) wall: Option<crate::renewal::WallClock>,
}

pub(crate) fn new_runtime(now: Millis) -> SlotRuntime {
    SlotRuntime {
        preparing: None,
        failures: 0,
        not_before: now,
        last_status_at: None,
        launched_at: None,
        healthy: None,
        running_since: None,

        avoid_host: None,
        attributes: Vec::new(),
        reason: None,
        since: now,
        cluster_uuid: None,
        foreign_cluster: None,
        unreachable_since: None,
        es_absent_since: None,
        replacing_fenced: false,
        removal: crate::removal::RemovalRuntime::new(now),
    }
}

impl Core {
    /// Builds a core from the configuration and the state restored from the store (use
    /// `PersistedState::default()` on first start). Tasks restored with a non-terminal state are only
    /// beliefs: they fence their slot until reconciliation after the next SUBSCRIBED says otherwise. If a
    /// crash interrupted a scale change, the repairing writes are queued as the first commands.
    pub fn new(config: Config, state: PersistedState) -> Result<Core, CoreError> {
        config.validate()?;
        let (mut groups, added_groups) = crate::groups::build(&config, &state)?;
        let mut slots = BTreeMap::new();
        let mut tasks = HashMap::new();
        let mut volume_owner = HashMap::new();
        for (id, rec) in &state.slots {
            if *id != rec.node_id {
                return Err(CoreError::BadState(format!(
                    "slot key {id} holds node {}",
                    rec.node_id
                )));
            }
            if id.ordinal() < config.first_id {
                return Err(CoreError::BadState(format!(
                    "node {id} is below the first id {}",
                    config.first_id
                )));
            }
            let Some(group) = groups.get_mut(&id.group()) else {
                return Err(CoreError::BadState(format!(
                    "node {id} is of group index {}, which no group has",
                    id.group()
                )));
            };
            for v in &rec.volumes {
                if let Some(other) = volume_owner.insert(v.clone(), *id) {
                    return Err(CoreError::BadState(format!(
                        "volume {v} belongs to nodes {other} and {id}"
                    )));
                }
            }
            if !rec.removed {
                group.ids.claim(*id);
            }
            if let Some(t) = &rec.task {
                tasks.insert(t.task_id.clone(), *id);
            }
            slots.insert(*id, new_runtime(Millis(0)));
        }
        let mut core = Core {
            config,
            persisted: state,
            groups,
            slots,
            tasks,
            sidecars: BTreeMap::new(),
            volumes: foldhash::HashMap::default(),
            volume_owner,
            agent_hosts: foldhash::HashMap::default(),
            offered: crate::placement::OfferedHosts::default(),
            subscribed_since: None,
            suppressed: false,
            revive_wanted: false,
            recon: None,
            next_implicit: None,
            holds: BTreeMap::new(),
            abandoned_prepares: BTreeMap::new(),
            stray_released: std::collections::HashSet::new(),

            timers: BTreeSet::new(),
            commands: VecDeque::new(),
            next_command_id: 1,
            watch: std::sync::Arc::new(Vec::new()),
            placement_from: None,
            es: None,
            es_cluster: None,
            es_calls: BTreeMap::new(),
            maintenance: crate::maintenance::MaintenanceState::default(),
            fenced_tasks: BTreeMap::new(),
            absent_since: BTreeMap::new(),
            forget_at: None,
            observe: crate::observe::Observation::default(),
            rollout_rt: crate::rollout::RolloutRuntime::new(Millis(0)),
            rollout_calls: BTreeSet::new(),
            wall: None,
        };
        core.refresh_watch();
        // Groups first named by the flags start at the flags' counts; stored groups keep theirs.
        for (name, rec) in added_groups {
            core.write(crate::state::StateWrite::Group(name, rec));
        }
        let indexes: Vec<u16> = core.groups.keys().copied().collect();
        for index in indexes {
            let desired = core.desired_of(index);
            if core.groups[&index].ids.len() as u64 != desired {
                core.scale_group(index, desired, false, Millis(0))?;
            }
        }
        core.seed_node_config();
        if core.persisted.rollout.is_some() {
            // A rollout under way resumes at its step; the step's clock starts afresh.
            core.timers
                .insert((Millis(core.config.rollout_step_timeout_ms), Timer::Rollout));
        }
        Ok(core)
    }

    /// The next command for the shell, in order.
    pub fn poll_command(&mut self) -> Option<Command> {
        self.flush_observation();
        self.commands.pop_front()
    }

    /// When the shell must call [`Core::handle_timeout`] next (possibly already past).
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Millis> {
        let mut next = self.timers.first().map(|(at, _)| *at);
        if self.subscribed_since.is_some() {
            let recon = self.recon.as_ref().map(|r| r.next_at);
            // Implicit reconciliation waits while an explicit one runs.
            let implicit = self.next_implicit.filter(|_| self.recon.is_none());
            for t in [recon, implicit].into_iter().flatten() {
                next = Some(next.map_or(t, |n| n.min(t)));
            }
        }
        next
    }

    /// The configuration.
    #[must_use]
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The durable state as the core believes it (equal to the initial state plus every emitted write).
    #[must_use]
    pub fn persisted(&self) -> &PersistedState {
        &self.persisted
    }

    /// Checks the core's own invariants (for tests and debug assertions); returns the first violation.
    /// * allocated ids are exactly `first_id .. first_id + desired` of each group and are the slots not
    ///   removed;
    /// * every slot's current task is indexed, and nothing else is;
    /// * at most one agent holds a node's volumes by the core's knowledge (a held offer, a sidecar mount,
    ///   a prepare that may still complete, a task that may be alive);
    /// * held offers and preparing slots agree.
    pub fn check_invariants(&self) -> Result<(), String> {
        let first = self.config.first_id;
        for (index, group) in &self.groups {
            let want: Vec<u64> = (first..first.saturating_add(self.desired_of(*index))).collect();
            let have: Vec<u64> = group.ids.iter().map(NodeId::ordinal).collect();
            if want != have {
                return Err(format!(
                    "allocated ids {have:?} of group {} are not the lowest {} ids",
                    group.name,
                    want.len()
                ));
            }
        }
        for (id, rec) in &self.persisted.slots {
            let allocated = self
                .groups
                .get(&id.group())
                .is_some_and(|g| g.ids.contains(*id));
            if rec.removed == allocated {
                return Err(format!(
                    "node {id}: removed={} disagrees with the allocator",
                    rec.removed
                ));
            }
            if !self.slots.contains_key(id) {
                return Err(format!("node {id} has no runtime state"));
            }
            if let Some(t) = &rec.task
                && self.tasks.get(&t.task_id) != Some(id)
            {
                return Err(format!("task {} of node {id} is not indexed", t.task_id));
            }
            let mut holders: BTreeSet<&Hostname> = BTreeSet::new();
            let rt = &self.slots[id];
            if let Some(p) = &rt.preparing {
                holders.insert(&p.offer.hostname);
                if self.holds.get(&p.offer.id) != Some(id) {
                    return Err(format!(
                        "node {id} prepares on offer {} that is not held",
                        p.offer.id
                    ));
                }
            }
            if let Some(h) = &rec.mount_host {
                holders.insert(h);
            }
            if let Some(t) = rec.task.as_ref().filter(|t| !t.is_terminal()) {
                holders.insert(&t.host);
            }
            for a in self.abandoned_prepares.values().filter(|a| a.node == *id) {
                holders.insert(&a.host);
            }

            if holders.len() > 1 {
                return Err(format!(
                    "node {id}'s volumes are held by several agents: {holders:?}"
                ));
            }
        }
        if self.tasks.len()
            != self
                .persisted
                .slots
                .values()
                .filter(|r| r.task.is_some())
                .count()
        {
            return Err("the task index holds tasks no slot owns".into());
        }
        if self.holds.len()
            != self
                .slots
                .values()
                .filter(|rt| rt.preparing.is_some())
                .count()
        {
            return Err("held offers and preparing nodes disagree".into());
        }
        for (host, rec) in self.offered.records() {
            let facts = self
                .sidecars
                .get(host)
                .map(crate::placement::SidecarFacts::of);
            if rec.sidecar != facts {
                return Err(format!(
                    "the round's copy of {host}'s sidecar facts is stale: {:?}, the sidecar says {facts:?}",
                    rec.sidecar
                ));
            }
            if let Some(a) = &rec.agent
                && self.agent_hosts.get(a) != Some(host)
            {
                return Err(format!(
                    "{host} is noted as agent {a}, which Mesos names {:?}",
                    self.agent_hosts.get(a)
                ));
            }
        }
        Ok(())
    }

    // ----------------------------------------------------------------------------------------------
    // Small helpers
    // ----------------------------------------------------------------------------------------------

    pub(crate) fn push(&mut self, c: Command) {
        self.commands.push_back(c);
    }

    pub(crate) fn mesos(&mut self, c: MesosCommand) {
        self.push(Command::Mesos(c));
    }

    pub(crate) fn watch(&mut self, e: WatchEvent) {
        self.push(Command::Watch(e));
    }

    /// Applies a durable change and queues it for the store, before whatever it allows.
    pub(crate) fn write(&mut self, w: StateWrite) {
        self.persisted.apply(&w);
        self.push(Command::Persist(w));
    }

    pub(crate) fn write_slot(&mut self, rec: SlotRecord) {
        // A node's holder and whether it waits for a launch decide who observes its volumes, and how often.
        self.observation_changed();
        self.write(StateWrite::Slot(rec));
    }

    /// Changes node `id`'s record in place and persists it: the same as [`Core::write_slot`] with a changed
    /// copy, with one copy (the write's) instead of two and no re-insertion.
    pub(crate) fn update_slot(&mut self, id: NodeId, change: impl FnOnce(&mut SlotRecord)) {
        let Some(rec) = self.persisted.slots.get_mut(&id) else {
            return;
        };
        change(rec);
        let write = StateWrite::Slot(rec.clone());
        self.observation_changed();
        self.push(Command::Persist(write));
    }

    pub(crate) fn record(&self, id: NodeId) -> Option<&SlotRecord> {
        self.persisted.slots.get(&id)
    }

    pub(crate) fn command_id(&mut self) -> u64 {
        let id = self.next_command_id;
        self.next_command_id += 1;
        id
    }

    /// The slot's newest task may still run (non-terminal or not yet heard of).
    pub(crate) fn task_live(rec: &SlotRecord) -> bool {
        rec.task.as_ref().is_some_and(|t| !t.is_terminal())
    }

    /// The slot wants a task and nothing is under way for it.
    pub(crate) fn needs_task(&self, id: NodeId) -> bool {
        match (self.record(id), self.slots.get(&id)) {
            (Some(rec), Some(rt)) => {
                !rec.removed
                    && rec.removal.is_none()
                    && !Self::task_live(rec)
                    && rt.preparing.is_none()
            }
            _ => false,
        }
    }

    pub(crate) fn backoff_ms(&self, failures: u32) -> u64 {
        let shift = failures.saturating_sub(1).min(32);
        self.config
            .backoff_initial_ms
            .saturating_mul(1u64 << shift)
            .min(
                self.config
                    .backoff_max_ms
                    .max(self.config.backoff_initial_ms),
            )
    }

    /// How long a task must have run for its end to count as a first failure again: as long as the
    /// longest backoff, so a node that fails at start-up every time backs off up to the cap instead of
    /// relaunching every second (each relaunch is a Prepare: volume attach calls on the driver's cloud).
    pub(crate) fn stable_run_ms(&self) -> u64 {
        self.config
            .backoff_max_ms
            .max(self.config.backoff_initial_ms)
    }

    /// Clears node `id`'s backoff: Tether itself changed what it runs, so its next task deserves a
    /// prompt try.
    pub(crate) fn clear_backoff(&mut self, id: NodeId, now: Millis) {
        if let Some(rt) = self.slots.get_mut(&id) {
            rt.failures = 0;
            rt.not_before = rt.not_before.min(now);
        }
    }

    /// Records a failure of the slot and arms its backoff.
    pub(crate) fn fail_slot(&mut self, id: NodeId, reason: Reason, now: Millis) {
        let failures = self
            .slots
            .get(&id)
            .map_or(1, |rt| rt.failures.saturating_add(1));
        let mut until = now.plus(self.backoff_ms(failures));
        if let Some(rt) = self.slots.get_mut(&id) {
            rt.failures = failures;
            until = until.max(rt.not_before);
            rt.not_before = until;
        }
        self.timers.insert((until, Timer::Backoff(id)));
        self.set_reason(id, reason, now);
    }

    /// Keeps the slot's last reason (in memory, durably when it changed) and tells watchers.
    pub(crate) fn set_reason(&mut self, id: NodeId, reason: Reason, now: Millis) {
        let text = reason.to_string();
        let Some(rt) = self.slots.get_mut(&id) else {
            return;
        };
        let changed = rt.reason.as_ref() != Some(&reason);
        if changed {
            rt.reason = Some(reason.clone());
            rt.since = now;
        }
        let durable_changed = self
            .record(id)
            .is_some_and(|r| r.last_reason.as_deref() != Some(&text));
        if durable_changed && let Some(mut rec) = self.record(id).cloned() {
            rec.last_reason = Some(text);
            self.write_slot(rec);
        }
        if changed {
            self.watch(WatchEvent::NodeWaiting {
                node_id: id,
                reason,
            });
        }
    }

    /// Sends a release of the volumes to the sidecar of `host`, if it is connected; returns whether it went.
    pub(crate) fn release(&mut self, host: &Hostname, volumes: Vec<VolumeName>) -> bool {
        if !self.sidecars.get(host).is_some_and(|s| s.connected) {
            return false;
        }
        if !volumes.is_empty() {
            let command_id = self.command_id();
            self.push(Command::Sidecar {
                host: host.clone(),
                command: SidecarCommand::Release {
                    command_id,
                    volumes,
                },
            });
        }
        true
    }

    /// Whether node `id` still needs the sidecar mount on `host`: it is preparing there, or its task there
    /// may still be starting on it.
    pub(crate) fn mount_needed(&self, id: NodeId, host: &Hostname) -> bool {
        if self
            .slots
            .get(&id)
            .and_then(|rt| rt.preparing.as_ref())
            .is_some_and(|p| &p.offer.hostname == host)
        {
            return true;
        }
        self.record(id)
            .and_then(|r| r.task.as_ref())
            .is_some_and(|t| {
                &t.host == host
                    && matches!(
                        t.state,
                        None | Some(TaskState::Staging) | Some(TaskState::Starting)
                    )
            })
    }

    /// Releases the slot's sidecar mount. While the sidecar is away the mount stays on record (and keeps
    /// the node pinned to that agent); the release goes out when it says hello again.
    pub(crate) fn release_mount(&mut self, id: NodeId) {
        let Some(rec) = self.record(id).cloned() else {
            return;
        };
        let Some(host) = rec.mount_host.clone() else {
            return;
        };
        if self.mount_needed(id, &host) {
            return;
        }
        if self.release(&host, rec.volumes.clone()) {
            let mut rec = rec;
            rec.mount_host = None;
            self.write_slot(rec);
        }
    }

    /// Abandons an in-flight prepare: the offer is declined unless it is already gone, the mount released.
    pub(crate) fn abandon_prepare(&mut self, id: NodeId, offer_still_valid: bool) {
        let Some(p) = self.slots.get_mut(&id).and_then(|rt| rt.preparing.take()) else {
            return;
        };
        self.holds.remove(&p.offer.id);
        self.observation_changed();
        if offer_still_valid {
            self.mesos(MesosCommand::Decline {
                offer_ids: vec![p.offer.id.clone()],
                refuse_seconds: self.config.decline_refuse_seconds,
            });
        }
        let vols = self
            .record(id)
            .map(|r| r.volumes.clone())
            .unwrap_or_default();
        self.abandoned_prepares.insert(
            p.command_id,
            Abandoned {
                node: id,
                host: p.offer.hostname.clone(),
                volumes: vols,
                deadline: p.deadline,
            },
        );
        // Until the prepare's deadline the sidecar may still mount: no placement elsewhere before then.
        if let Some(rt) = self.slots.get_mut(&id) {
            rt.not_before = rt.not_before.max(p.deadline);
        }
        self.release_mount(id);
        self.revive_wanted = true;
    }

    /// The time before which node `id` must not be placed because a prepare it abandoned may still mount.
    pub(crate) fn prepare_fence(&self, id: NodeId) -> Millis {
        self.abandoned_prepares
            .values()
            .filter(|a| a.node == id)
            .map(|a| a.deadline)
            .max()
            .unwrap_or(Millis(0))
    }

    /// Emits SUPPRESS or REVIVE when the wish for offers changed (or new work needs filters cleared).
    pub(crate) fn flush_interest(&mut self) {
        if self.subscribed_since.is_none() {
            return;
        }
        let wants = self.slots.keys().any(|id| self.needs_task(*id));
        if wants && (self.suppressed || self.revive_wanted) {
            self.suppressed = false;
            self.mesos(MesosCommand::Revive);
        } else if !wants && !self.suppressed {
            self.suppressed = true;
            self.mesos(MesosCommand::Suppress);
        }
        self.revive_wanted = false;
    }

    /// The exact volume names sidecars should watch: the volumes of every slot, scaled-down ones included
    /// (their volumes are kept, and a mount of them must still be seen).
    #[must_use]
    pub fn watch_names(&self) -> std::sync::Arc<Vec<VolumeName>> {
        std::sync::Arc::clone(&self.watch)
    }

    /// Recomputes the watch set after the node table changed (shared by every Welcome).
    pub(crate) fn refresh_watch(&mut self) {
        let names = self
            .persisted
            .slots
            .values()
            .flat_map(|r| r.volumes.iter().cloned())
            .collect();
        self.watch = std::sync::Arc::new(names);
        self.observation_changed();
    }

    /// The Welcome for the sidecar of `host`: the full watch set, or none for a `watch_delta` sidecar,
    /// whose share follows as a WatchDelta that starts over.
    pub(crate) fn welcome(&mut self, host: &Hostname) -> SidecarCommand {
        let by_delta = self.observes_by_delta(host);
        if by_delta {
            self.observe.reset.insert(host.clone());
            self.observation_changed();
        }
        SidecarCommand::Welcome {
            report_interval_ms: self.config.report_interval_ms,
            watch_names: (!by_delta).then(|| self.watch_names()),
        }
    }

    /// Whether the sidecar of `host` is connected and reported recently enough.
    pub(crate) fn sidecar_fresh(&self, s: &Sidecar, now: Millis) -> bool {
        s.connected && self.config.report_fresh(s.last_report_at, now)
    }

    /// What an operator reads about a connected sidecar's driver: the reported error, or, without a
    /// fresh report, why its health is unknown (a report waits on the driver, so a hung driver shows as
    /// silence).
    pub(crate) fn driver_error(&self, s: &Sidecar, now: Millis) -> Option<String> {
        if !s.connected {
            return None;
        }
        match s.last_report_at {
            None => Some("no report yet".to_owned()),
            Some(t) if now.since(t) > self.config.freshness_ms() => Some(format!(
                "no report for {} ms (fresh means within {} ms): the sidecar may be stuck on a hung \
                 driver call",
                now.since(t),
                self.config.freshness_ms()
            )),
            Some(_) => s.driver_error.clone().filter(|e| !e.is_empty()),
        }
    }

    // ----------------------------------------------------------------------------------------------
    // Launch
    // ----------------------------------------------------------------------------------------------

    /// Persists the slot's next generation and task, then accepts the offer with the LAUNCH.
    pub(crate) fn launch(
        &mut self,
        id: NodeId,
        offer: &Offer,
        http_port: u16,
        transport_port: u16,
        now: Millis,
    ) {
        let Some(mut rec) = self.record(id).cloned() else {
            return;
        };
        let generation = rec.generation.saturating_add(1);
        let task_id = match self.task_id_of(id, generation) {
            Ok(t) => t,
            Err(e) => {
                self.abandon_prepare(id, true);
                self.watch(WatchEvent::Warning {
                    message: e.to_string(),
                });
                return;
            }
        };
        if let Some(old) = rec.task.as_ref() {
            self.tasks.remove(&old.task_id);
        }
        rec.config_generation = self.node_generation(id);
        rec.generation = generation;
        rec.task = Some(crate::state::TaskRecord {
            task_id: task_id.clone(),
            agent_id: offer.agent_id.clone(),
            host: offer.hostname.clone(),
            http_port,
            transport_port,
            state: None,
            publish_address: Some(publish_address(&self.config, offer)),
        });
        rec.forced = false;
        rec.fenced = false;
        rec.last_reason = None;
        self.write_slot(rec);
        self.tasks.insert(task_id.clone(), id);
        self.know_agent(&offer.agent_id, &offer.hostname);
        if let Some(rt) = self.slots.get_mut(&id) {
            rt.last_status_at = None;
            rt.launched_at = Some(now);
            rt.running_since = None;
            rt.avoid_host = None;
            rt.healthy = None;
            rt.reason = None;
            rt.since = now;
            rt.cluster_uuid = None;
            rt.foreign_cluster = None;
            rt.replacing_fenced = false;
            rt.unreachable_since = None;
            rt.es_absent_since = None;
            rt.attributes = offer
                .attributes
                .iter()
                .map(|(n, v)| (n.clone(), v.render()))
                .collect();
        }
        self.timers.insert((
            now.plus(self.config.launch_status_timeout_ms),
            Timer::LaunchStatus(id, task_id.clone()),
        ));
        let spec = crate::launch::build(self, id, &task_id, offer, http_port, transport_port);
        self.mesos(MesosCommand::Accept {
            offer_id: offer.id.clone(),
            agent_id: offer.agent_id.clone(),
            launch: Box::new(spec),
            refuse_seconds: self.config.decline_refuse_seconds,
        });
        self.watch(WatchEvent::Launched {
            node_id: id,
            task_id,
            host: offer.hostname.clone(),
        });
    }

    /// Starts preparing `id` on `offer` (external strategy).
    pub(crate) fn start_prepare(
        &mut self,
        id: NodeId,
        offer: Offer,
        http_port: u16,
        transport_port: u16,
        zone: Option<String>,
        now: Millis,
    ) {
        let Strategy::External {
            auto_create,
            create_options,
            ..
        } = &self.config.strategy
        else {
            return;
        };
        let mut options = create_options.clone();
        if let Some(z) = zone
            && !options.iter().any(|(k, _)| k == "availabilityZone")
        {
            options.push(("availabilityZone".into(), z));
        }
        let create_missing = *auto_create;
        let command_id = self.command_id();
        let deadline = now.plus(self.config.prepare_hold_ms);
        let host = offer.hostname.clone();
        let volumes = self
            .record(id)
            .map(|r| r.volumes.clone())
            .unwrap_or_default();
        let identity = self.identity_request(id, &offer, &volumes);
        self.holds.insert(offer.id.clone(), id);
        if let Some(rt) = self.slots.get_mut(&id) {
            rt.preparing = Some(Preparing {
                offer,
                command_id,
                deadline,
                http_port,
                transport_port,
                identity: identity.clone(),
                install_id: None,
            });
            rt.since = now;
        }
        self.update_slot(id, |rec| rec.mount_host = Some(host.clone()));
        self.timers
            .insert((deadline, Timer::PrepareHold(id, command_id)));
        self.push(Command::Sidecar {
            host: host.clone(),
            command: SidecarCommand::Prepare {
                command_id,
                node_id: id,
                volumes,
                create_missing,
                create_options: options,
                // Give the sidecar a little less than the hold so its failure arrives before we give up.
                deadline_ms: self.config.prepare_hold_ms.saturating_mul(9) / 10,
                owner: self.config.volume_owner,
                identity,
            },
        });
        self.watch(WatchEvent::Preparing { node_id: id, host });
    }

    /// With security on, what node `id`'s certificate names on `offer`'s agent, and where its key goes.
    fn identity_request(
        &self,
        id: NodeId,
        offer: &Offer,
        volumes: &[VolumeName],
    ) -> Option<crate::domain::IdentityRequest> {
        if !self.security().is_on() {
            return None;
        }
        let index = self
            .config
            .volumes
            .iter()
            .position(|v| v.suffix == self.config.identity_volume)?;
        let name = self.node_name(id);
        // An agent known by its address (no DNS name) is named by an IP SAN: a TLS client connecting to
        // an IP checks only those.
        let host = offer.hostname.as_str();
        let host_is_ip = host.parse::<std::net::IpAddr>().is_ok();
        let mut ip_addresses: Vec<String> = offer.ip.iter().cloned().collect();
        if host_is_ip && !ip_addresses.iter().any(|ip| ip == host) {
            ip_addresses.push(host.to_owned());
        }
        let mut dns_names = vec![name.clone()];
        if !host_is_ip {
            dns_names.insert(0, host.to_owned());
        }
        Some(crate::domain::IdentityRequest {
            volume: volumes.get(index)?.clone(),
            dir: String::new(),
            common_name: name,
            dns_names,
            ip_addresses,
        })
    }
}
