//! Rolling changes: the nodes whose configuration is older than their group's stored one
//! (`nodeconfig.rs`; `tetherctl update` or `restart`) are restarted on it one at a time, each step
//! gated on what Elasticsearch says, the whole rollout durable (`PersistedState::rollout`) so a new
//! leader carries on from the same step.
//!
//! Before a node (the gate): the cluster is green, or yellow with nothing initializing or relocating
//! while versions are mixed (replicas of a newer node's primaries cannot go to older nodes); never red;
//! no node of the cluster missing from Elasticsearch; no safe removal in progress. The order: nodes that
//! are not master-eligible first, the master-eligible ones after them (one master at a time: one node
//! at a time), and last the nodes holding the only copy of a shard of an index without replicas (their
//! restart makes that index red until they rejoin, which is then expected and the status says so); a
//! node holding the last started copy of a shard that has replicas waits for them. A group of several
//! nodes is never emptied (another member must be in the cluster).
//!
//! Per node ([`RolloutStep`]):
//! 1. **Prepare**: tell Elasticsearch: the node shutdown API with `restart` from 7.15.2 (the lowest
//!    version listed), else `cluster.routing.allocation.enable=primaries` and a flush. Done when the
//!    calls were accepted (and the shutdown record is COMPLETE).
//! 2. **Stop**: the slot's `config_generation` is set to the new one (durable, before the kill), then
//!    its task is killed (the shell adds the kill grace period); done when that task is terminal.
//!    Placement relaunches it on the new configuration, on its volumes.
//! 3. **Rejoin**: done when the task runs and the elected master lists the node (`joined`, durable:
//!    from then on `rollback` is refused, the node may have written data an older version cannot read).
//! 4. **Clear**: what was set is cleared (`DELETE` the shutdown record, allocation back to the default).
//! 5. **Green**: the health gate again; then the node is done and the next one starts.
//!
//! What may have been set in Elasticsearch is written before its call goes out, so a restart clears it.
//! A step not done within `Config::rollout_step_timeout_ms` pauses the rollout with the reason; nothing
//! is forced. `pause` stops moving on; `resume` goes on; `abort` stops after the current node (nodes
//! done stay on the new configuration); `rollback` sends the current node back to the configuration it
//! ran, only if it never joined on the new one, and then pauses.
//!
//! Certificate renewal (`renewal.rs`) uses this machinery: a running node whose certificate is due is
//! pending like an out-of-date one, restarted on the generation it runs. An idle, done or aborted
//! rollout is started for due nodes; a running one takes them in its turn; `pause` holds renewals too.
//!
//! Safe removals and rollouts do not overlap on a node: no rollout node starts while a removal runs, a
//! removal's stop waits while a rollout node is down, and the rollout's current node cannot be
//! scaled down or replaced (refused with the reason) except by a scale to 0 (a full stop), which ends
//! its step.

use crate::command::{AllocationEnable, Command, EsCall, MesosCommand, WatchEvent};
use crate::core::{Core, Timer};
use crate::domain::{EsCluster, EsHealth, EsVersion, ShutdownKind, ShutdownStatus, TaskState};
use crate::error::CoreError;
use crate::ids::{Millis, NodeId, TaskId};
use crate::step_calls::{Answer, StepCalls};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// Observations a step's gate waits for after the step began: the first may have been asked before.
const STEP_OBSERVATIONS: u32 = 2;

/// How long a restarted node waits for an offer of the agent it ran on before taking any.
pub const PREFER_HOST_MS: u64 = 60_000;

/// Where a rollout stands (`idle` is no rollout at all).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RolloutState {
    /// Moving on.
    Running,
    /// Stopped by the operator or by an overdue step; `resume` goes on.
    Paused,
    /// Every node runs its group's configuration.
    Done,
    /// Stopped for good after a node (`abort`); nodes done stay on the new configuration.
    Aborted,
}

impl RolloutState {
    /// The word of `rollout status`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            RolloutState::Running => "running",
            RolloutState::Paused => "paused",
            RolloutState::Done => "done",
            RolloutState::Aborted => "aborted",
        }
    }
}

/// A step of one node's restart, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum RolloutStep {
    /// Elasticsearch is told (shutdown record `restart`, or allocation `primaries` and a flush).
    Prepare,
    /// The task is killed; waits for it to end.
    Stop,
    /// Relaunched on the new configuration; waits until the elected master lists it.
    Rejoin,
    /// What was set in Elasticsearch is cleared.
    Clear,
    /// Waits for green (yellow with nothing moving while versions are mixed).
    Green,
}

impl RolloutStep {
    /// Words for views and events.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            RolloutStep::Prepare => "telling Elasticsearch",
            RolloutStep::Stop => "stopping",
            RolloutStep::Rejoin => "waiting for it to rejoin",
            RolloutStep::Clear => "clearing what was set in Elasticsearch",
            RolloutStep::Green => "waiting for green",
        }
    }
}

/// The node a rollout is restarting, durable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutNode {
    /// The node.
    pub node_id: NodeId,
    /// Where it stands.
    pub step: RolloutStep,
    /// The configuration generation it ran before.
    pub from_generation: u64,
    /// The one it is restarted on.
    pub to_generation: u64,
    /// A `restart` shutdown record was asked for this Elasticsearch node id.
    #[serde(default)]
    pub shutdown_node_id: Option<String>,
    /// `cluster.routing.allocation.enable` was set to `primaries`.
    #[serde(default)]
    pub allocation_set: bool,
    /// The task the Stop step kills (written before the kill).
    #[serde(default)]
    pub stopped_task: Option<TaskId>,
    /// The elected master listed it on the new configuration: a rollback is refused.
    #[serde(default)]
    pub joined: bool,
    /// `rollout rollback` sent it back to `to_generation` (its old one); the rollout pauses after it.
    #[serde(default)]
    pub rolled_back: bool,
}

/// A rolling change, durable (`PersistedState::rollout`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rollout {
    /// The newest configuration generation when it was last started or extended.
    pub generation: u64,
    /// Where it stands.
    pub state: RolloutState,
    /// Why it is paused or waiting, or how it ended.
    #[serde(default)]
    pub reason: Option<String>,
    /// Nodes restarted on their group's configuration, in order.
    #[serde(default)]
    pub done: Vec<NodeId>,
    /// The node being restarted.
    #[serde(default)]
    pub current: Option<RolloutNode>,
    /// `abort` was asked: it ends after the current node.
    #[serde(default)]
    pub abort_requested: bool,
}

/// A rollout as the admin API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutView {
    /// The newest configuration generation.
    pub config_generation: u64,
    /// `idle|running|paused|done|aborted`.
    pub state: String,
    /// Nodes done.
    pub done: Vec<NodeId>,
    /// The node being restarted.
    pub current: Option<NodeId>,
    /// Its step.
    pub step: Option<RolloutStep>,
    /// Nodes still on an older configuration, in the order they would go.
    pub pending: Vec<NodeId>,
    /// Why it is paused or what it waits for.
    pub reason: Option<String>,
}

/// This process's progress on the rollout's current step (reset with every step and every restart:
/// each call is idempotent and sent again).
#[derive(Debug, Clone)]
pub(crate) struct RolloutRuntime {
    pub(crate) since: Millis,
    pub(crate) calls: StepCalls,
    pub(crate) kill_sent: bool,
    pub(crate) waiting: String,
    /// Observations of the cluster delivered since the step began: a gate trusts only one that
    /// began after the step did (the first may have been under way already).
    pub(crate) observations: u32,
}

impl RolloutRuntime {
    pub(crate) fn new(now: Millis) -> RolloutRuntime {
        RolloutRuntime {
            since: now,
            calls: StepCalls::new(),
            kill_sent: false,
            waiting: String::new(),
            observations: 0,
        }
    }
}

/// What a step decided.
enum Next {
    Wait(String),
    Go(RolloutStep, String),
    /// The node is finished (restarted, or rolled back, or no longer wanted).
    Finished,
}

/// Whether the cluster's health lets a node go (or says the last one is settled): green, or yellow
/// with nothing initializing or relocating while versions are mixed.
pub(crate) fn health_gate(c: &EsCluster) -> Result<(), String> {
    match c.health {
        EsHealth::Green => Ok(()),
        EsHealth::Yellow => {
            let versions: BTreeSet<EsVersion> =
                c.nodes.values().filter_map(|n| n.version).collect();
            let mixed = versions.len() > 1;
            match c.shard_counts {
                Some(k) if mixed && k.initializing == 0 && k.relocating == 0 => Ok(()),
                Some(k) if mixed => Err(format!(
                    "the cluster is yellow with {} shards initializing and {} relocating",
                    k.initializing, k.relocating
                )),
                None => Err("the cluster is yellow and its shard counts are unknown".into()),
                Some(_) => Err(
                    "the cluster is yellow (all nodes on one version): waiting for green".into(),
                ),
            }
        }
        EsHealth::Red => Err("the cluster is red: some primary is unassigned".into()),
        EsHealth::NoMaster => Err("no elected master".into()),
        EsHealth::Unknown => Err("the cluster's health is unknown".into()),
    }
}

/// The shards whose only serving copy is on node `name`: `(with replicas, without replicas)`, by index.
fn sole_copies(c: &EsCluster, name: &str) -> (Vec<String>, Vec<String>) {
    let Some(shards) = &c.shards else {
        return (Vec::new(), Vec::new());
    };
    let mut by_shard: BTreeMap<(&str, u32), (usize, Vec<&str>)> = BTreeMap::new();
    for s in shards {
        let e = by_shard.entry((&s.index, s.shard)).or_default();
        e.0 += 1;
        if s.serving()
            && let Some(n) = &s.node
        {
            e.1.push(n);
        }
    }
    let mut with = BTreeSet::new();
    let mut without = BTreeSet::new();
    for ((index, _), (copies, serving)) in by_shard {
        if serving.as_slice() == [name] {
            if copies > 1 {
                with.insert(index.to_owned());
            } else {
                without.insert(index.to_owned());
            }
        }
    }
    (with.into_iter().collect(), without.into_iter().collect())
}

impl Core {
    /// Starts a rollout of the newest configuration, or extends the one under way (a paused one goes
    /// on: the operator asked for a change).
    pub(crate) fn start_rollout(&mut self, now: Millis) {
        let generation = self.config_generation();
        self.start_rollout_for(
            now,
            format!("rollout of configuration {generation} started"),
        );
    }

    /// [`Core::start_rollout`], the start announced with `message` (why it starts).
    pub(crate) fn start_rollout_for(&mut self, now: Millis, message: String) {
        let generation = self.config_generation();
        let rollout = match self.persisted.rollout.clone() {
            Some(mut r) if matches!(r.state, RolloutState::Running | RolloutState::Paused) => {
                r.generation = generation;
                r.state = RolloutState::Running;
                r.reason = None;
                r.abort_requested = false;
                r
            }
            _ => Rollout {
                generation,
                state: RolloutState::Running,
                reason: None,
                done: Vec::new(),
                current: None,
                abort_requested: false,
            },
        };
        self.write(crate::state::StateWrite::Rollout(Some(rollout)));
        self.rollout_rt = RolloutRuntime::new(now);
        // A configuration change changes nothing in the cluster: what it said last still holds.
        self.rollout_rt.observations = STEP_OBSERVATIONS;
        self.arm_rollout_timer(now);
        self.watch(WatchEvent::Rollout {
            node_id: None,
            state: "running".into(),
            message,
        });
        self.drive_rollout(now);
    }

    fn set_rollout(&mut self, f: impl FnOnce(&mut Rollout)) {
        if let Some(mut r) = self.persisted.rollout.clone() {
            let before = r.clone();
            f(&mut r);
            if r != before {
                self.write(crate::state::StateWrite::Rollout(Some(r)));
            }
        }
    }

    fn set_current(&mut self, f: impl FnOnce(&mut RolloutNode)) {
        self.set_rollout(|r| {
            if let Some(c) = r.current.as_mut() {
                f(c);
            }
        });
    }

    fn arm_rollout_timer(&mut self, now: Millis) {
        self.timers.insert((
            now.plus(self.config.rollout_step_timeout_ms),
            Timer::Rollout,
        ));
    }

    fn enter_rollout_step(&mut self, now: Millis) {
        self.rollout_rt = RolloutRuntime::new(now);
        self.rollout_calls.clear();
        self.arm_rollout_timer(now);
    }

    /// The nodes on an older configuration than their group's, or whose certificate is due for renewal
    /// (`renewal.rs`), in the order a rollout takes them (not master-eligible first, then
    /// master-eligible, then those holding the only copy of an index without replicas; ids ascending
    /// within each).
    pub(crate) fn rollout_pending(&self, now: Millis) -> Vec<NodeId> {
        let current = self
            .persisted
            .rollout
            .as_ref()
            .and_then(|r| r.current.as_ref())
            .map(|c| c.node_id);
        let cluster = self.fresh_cluster(now);
        let mut ids: Vec<(bool, bool, NodeId)> = self
            .persisted
            .slots
            .values()
            .filter(|r| !r.removed && Some(r.node_id) != current)
            .map(|r| r.node_id)
            .filter(|id| self.out_of_date(*id) || self.cert_due(*id, now))
            .map(|id| {
                let name = self.node_name(id);
                let unreplicated = cluster.is_some_and(|c| !sole_copies(c, &name).1.is_empty());
                (unreplicated, self.rollout_master(id, cluster), id)
            })
            .collect();
        ids.sort();
        ids.into_iter().map(|(_, _, id)| id).collect()
    }

    /// Whether node `id` is master-eligible: as Elasticsearch lists it, else as its group says.
    fn rollout_master(&self, id: NodeId, cluster: Option<&EsCluster>) -> bool {
        cluster
            .and_then(|c| c.nodes.get(&self.node_name(id)))
            .and_then(|n| n.master_eligible)
            .unwrap_or_else(|| self.master_eligible_node(id))
    }

    /// The last observation of the cluster if it is recent and was begun after the current step began
    /// (a gate must not pass on what the cluster said before the last change).
    fn step_cluster(&self, now: Millis) -> Option<&EsCluster> {
        (self.rollout_rt.observations >= STEP_OBSERVATIONS)
            .then(|| self.fresh_cluster(now))
            .flatten()
    }

    /// The gate before the next node: `Ok((node, note))` or why none may go now.
    fn pick_next(
        &self,
        pending: &[NodeId],
        now: Millis,
    ) -> Result<(NodeId, Option<String>), String> {
        if let Some(r) = self.persisted.slots.values().find(|r| r.removal.is_some()) {
            return Err(format!(
                "the safe removal of node {} runs first (a rollout and a removal never take nodes down together)",
                r.node_id
            ));
        }
        let Some(c) = self.step_cluster(now) else {
            return Err("waiting for a recent answer from Elasticsearch".into());
        };
        health_gate(c)?;
        let Some(&id) = pending.first() else {
            return Err("no node to restart".into());
        };
        let group = id.group();
        let members: Vec<NodeId> = self
            .persisted
            .slots
            .values()
            .filter(|r| !r.removed && r.node_id != id && r.node_id.group() == group)
            .map(|r| r.node_id)
            .collect();
        if !members.is_empty() && !members.iter().any(|m| c.lists(&self.node_name(*m))) {
            return Err(format!(
                "node {id} is the last member of group {} in the cluster: a group is never emptied",
                self.group_name(id)
            ));
        }
        let missing: Vec<NodeId> = self
            .persisted
            .slots
            .values()
            .filter(|r| !r.removed)
            .map(|r| r.node_id)
            .filter(|id| !c.lists(&self.node_name(*id)))
            .collect();
        if let Some(id) = missing.first() {
            return Err(format!(
                "node {id} is not in the cluster: no node restarts while one is missing"
            ));
        }
        let name = self.node_name(id);
        let (with, without) = sole_copies(c, &name);
        if !with.is_empty() {
            return Err(format!(
                "node {id} holds the last started copy of a shard of {} (its replicas are not started yet)",
                with.join(", ")
            ));
        }
        let note = (!without.is_empty()).then(|| {
            format!(
                "node {id} holds the only copy of index(es) {} (no replicas): restarted last, those \
                 indices are red until it rejoins",
                without.join(", ")
            )
        });
        Ok((id, note))
    }

    /// Moves the rollout on as far as Elasticsearch allows now.
    pub(crate) fn drive_rollout(&mut self, now: Millis) {
        for _ in 0..8 {
            let Some(r) = self.persisted.rollout.clone() else {
                return;
            };
            let restoring = r.current.as_ref().is_some_and(|c| c.rolled_back);
            if r.state != RolloutState::Running && !(r.state == RolloutState::Paused && restoring) {
                return;
            }
            let next = match &r.current {
                None => {
                    if r.abort_requested {
                        self.end_rollout(RolloutState::Aborted, "aborted by the operator".into());
                        return;
                    }
                    let pending = self.rollout_pending(now);
                    if pending.is_empty() {
                        self.end_rollout(
                            RolloutState::Done,
                            format!("every node runs configuration {}", r.generation),
                        );
                        return;
                    }
                    match self.pick_next(&pending, now) {
                        Err(why) => {
                            self.rollout_wait(None, why, now);
                            return;
                        }
                        Ok((id, note)) => {
                            let note = match (note, self.renewal_note(id, now)) {
                                (Some(a), Some(b)) => Some(format!("{b}; {a}")),
                                (a, b) => a.or(b),
                            };
                            let node = RolloutNode {
                                node_id: id,
                                step: RolloutStep::Prepare,
                                from_generation: self.node_generation(id),
                                to_generation: self.current_generation(&self.group_key(id)),
                                shutdown_node_id: None,
                                allocation_set: false,
                                stopped_task: None,
                                joined: false,
                                rolled_back: false,
                            };
                            self.set_rollout(|r| {
                                r.current = Some(node);
                                r.reason = note.clone();
                            });
                            self.enter_rollout_step(now);
                            self.watch(WatchEvent::Rollout {
                                node_id: Some(id),
                                state: "running".into(),
                                message: note.unwrap_or_else(|| {
                                    format!(
                                        "restarting node {id}: {}",
                                        RolloutStep::Prepare.as_str()
                                    )
                                }),
                            });
                            continue;
                        }
                    }
                }
                Some(cur) => {
                    let cur = cur.clone();
                    if self.record(cur.node_id).is_none_or(|r| r.removed)
                        && cur.step < RolloutStep::Clear
                    {
                        Next::Go(RolloutStep::Clear, "it was scaled away".into())
                    } else {
                        match cur.step {
                            RolloutStep::Prepare => self.rollout_prepare(&cur, now),
                            RolloutStep::Stop => self.rollout_stop(&cur, now),
                            RolloutStep::Rejoin => self.rollout_rejoin(&cur, now),
                            RolloutStep::Clear => self.rollout_clear(&cur, now),
                            RolloutStep::Green => self.rollout_green(&cur, now),
                        }
                    }
                }
            };
            let id = r.current.as_ref().map(|c| c.node_id);
            match next {
                Next::Wait(why) => {
                    self.rollout_wait(id, why, now);
                    return;
                }
                Next::Go(step, why) => {
                    self.set_current(|c| c.step = step);
                    self.enter_rollout_step(now);
                    self.watch(WatchEvent::Rollout {
                        node_id: id,
                        state: "running".into(),
                        message: format!("{why}; now {}", step.as_str()),
                    });
                }
                Next::Finished => {
                    let Some(cur) = r.current.clone() else { return };
                    let wanted = self.record(cur.node_id).is_some_and(|r| !r.removed);
                    self.set_rollout(|r| {
                        r.current = None;
                        if !cur.rolled_back && wanted {
                            r.done.push(cur.node_id);
                        }
                        if cur.rolled_back && !r.abort_requested {
                            r.state = RolloutState::Paused;
                            r.reason = Some(format!(
                                "node {} was rolled back to configuration {}: fix the configuration \
                                 (`tetherctl update`) and resume, or abort",
                                cur.node_id, cur.to_generation
                            ));
                        } else {
                            r.reason = None;
                        }
                    });
                    // The observation that passed the last gate is one begun after the node's
                    // restart: the next node's gate may use it.
                    let seen = self.rollout_rt.observations;
                    self.enter_rollout_step(now);
                    self.rollout_rt.observations = seen;
                    self.watch(WatchEvent::Rollout {
                        node_id: Some(cur.node_id),
                        state: self.rollout_state_word(),
                        message: if cur.rolled_back {
                            format!(
                                "node {} is back on configuration {}",
                                cur.node_id, cur.to_generation
                            )
                        } else {
                            format!(
                                "node {} runs configuration {}",
                                cur.node_id, cur.to_generation
                            )
                        },
                    });
                }
            }
        }
    }

    fn rollout_state_word(&self) -> String {
        self.persisted
            .rollout
            .as_ref()
            .map_or("idle", |r| r.state.as_str())
            .to_owned()
    }

    fn end_rollout(&mut self, state: RolloutState, reason: String) {
        self.set_rollout(|r| {
            r.state = state;
            r.reason = Some(reason.clone());
            r.abort_requested = false;
        });
        self.rollout_calls.clear();
        // Configurations no node runs any more can go.
        if let Some(mut table) = self.persisted.node_config.clone() {
            self.prune_configs(&mut table);
            if self.persisted.node_config.as_ref() != Some(&table) {
                self.write(crate::state::StateWrite::NodeConfig(table));
            }
        }
        self.watch(WatchEvent::Rollout {
            node_id: None,
            state: state.as_str().into(),
            message: reason,
        });
    }

    /// Records what the rollout waits for; an overdue step pauses it with the reason.
    fn rollout_wait(&mut self, id: Option<NodeId>, why: String, now: Millis) {
        self.rollout_rt.waiting = why.clone();
        let timeout = self.config.rollout_step_timeout_ms;
        if now.since(self.rollout_rt.since) < timeout {
            return;
        }
        let step = self
            .persisted
            .rollout
            .as_ref()
            .and_then(|r| r.current.as_ref())
            .map_or("the gate before the next node", |c| c.step.as_str());
        let what = id.map_or_else(String::new, |id| format!(" of node {id}"));
        let reason = format!(
            "paused: {step}{what} has not finished after {} s: {why}; nothing is forced: fix it and \
             `tetherctl rollout resume` (or `rollback` / `abort`)",
            timeout / 1000
        );
        self.set_rollout(|r| {
            r.state = RolloutState::Paused;
            r.reason = Some(reason.clone());
        });
        self.watch(WatchEvent::Rollout {
            node_id: id,
            state: "paused".into(),
            message: reason,
        });
    }

    /// Sends the step's calls unless sent, answered, or failed too recently; none to make: done.
    fn send_rollout_calls(&mut self, calls: Vec<EsCall>, now: Millis) {
        if !self.rollout_rt.calls.due(now) {
            return;
        }
        if calls.is_empty() {
            self.rollout_rt.calls.none_to_make();
            return;
        }
        for call in calls {
            let call_id = self.command_id();
            self.rollout_calls.insert(call_id);
            self.rollout_rt.calls.sent(call_id);
            self.push(Command::Elasticsearch { call_id, call });
        }
    }

    /// The outcome of a rollout call; `false`: not a rollout call.
    pub(crate) fn rollout_call_result(
        &mut self,
        call_id: u64,
        result: &Result<(), String>,
        now: Millis,
    ) -> bool {
        if !self.rollout_calls.remove(&call_id) {
            return false;
        }
        if let Answer::Failed { retry_at, error: e } =
            self.rollout_rt.calls.answer(call_id, result, now)
        {
            self.rollout_rt.waiting = format!("Elasticsearch refused a call (sent again): {e}");
            self.timers.insert((retry_at, Timer::Rollout));
        }
        self.drive_rollout(now);
        true
    }

    fn rollout_prepare(&mut self, cur: &RolloutNode, now: Millis) -> Next {
        let id = cur.node_id;
        let Some(rec) = self.record(id).cloned() else {
            return Next::Finished;
        };
        if !Core::task_live(&rec) {
            return Next::Go(RolloutStep::Stop, "its task is not running".into());
        }
        let name = self.node_name(id);
        let Some(c) = self.fresh_cluster(now).cloned() else {
            return Next::Wait("no recent answer from Elasticsearch".into());
        };
        if !c.lists(&name) && cur.shutdown_node_id.is_none() && !cur.allocation_set {
            return Next::Go(
                RolloutStep::Stop,
                "Elasticsearch does not list it: nothing to tell".into(),
            );
        }
        let use_shutdown = c
            .min_version()
            .is_some_and(|v| v >= EsVersion::SHUTDOWN_API);
        let es_id = cur.shutdown_node_id.clone().or_else(|| {
            use_shutdown
                .then(|| c.nodes.get(&name).map(|n| n.id.clone()))
                .flatten()
        });
        let calls = match &es_id {
            Some(es_id) => {
                let sid = es_id.clone();
                self.set_current(|c| c.shutdown_node_id = Some(sid));
                vec![EsCall::PutShutdown {
                    node_id: es_id.clone(),
                    kind: ShutdownKind::Restart,
                    reason: format!("tether: rolling restart of node {id}"),
                    target_node_name: None,
                }]
            }
            None => {
                self.set_current(|c| c.allocation_set = true);
                vec![
                    EsCall::SetAllocationEnable(Some(AllocationEnable::Primaries)),
                    EsCall::Flush,
                ]
            }
        };
        self.send_rollout_calls(calls, now);
        if !self.rollout_rt.calls.done() {
            return Next::Wait("waiting for Elasticsearch to accept the restart".into());
        }
        if let Some(sid) = &es_id {
            match c.shutdowns.as_ref().map(|m| m.get(sid).map(|s| s.status)) {
                None => return Next::Wait("Elasticsearch's shutdown records are unknown".into()),
                Some(None) => {
                    return Next::Wait("Elasticsearch lists no shutdown record for it yet".into());
                }
                Some(Some(ShutdownStatus::Complete)) => {}
                Some(Some(s)) => {
                    return Next::Wait(format!(
                        "its restart shutdown record is {s:?}, not COMPLETE"
                    ));
                }
            }
        }
        Next::Go(RolloutStep::Stop, "Elasticsearch knows it restarts".into())
    }

    fn rollout_stop(&mut self, cur: &RolloutNode, now: Millis) -> Next {
        let id = cur.node_id;
        let Some(mut rec) = self.record(id).cloned() else {
            return Next::Finished;
        };
        if rec.config_generation != cur.to_generation {
            // Durable before the kill: the relaunch takes the configuration from the slot.
            rec.config_generation = cur.to_generation;
            self.write_slot(rec.clone());
            self.clear_backoff(id, now);
        }
        let target = match &cur.stopped_task {
            Some(t) => Some(t.clone()),
            None => {
                let live = rec
                    .task
                    .as_ref()
                    .filter(|t| !t.is_terminal())
                    .map(|t| t.task_id.clone());
                if let Some(t) = &live {
                    let t = t.clone();
                    self.set_current(|c| c.stopped_task = Some(t));
                }
                live
            }
        };
        let Some(target) = target else {
            return Next::Go(RolloutStep::Rejoin, "its task is not running".into());
        };
        let still = rec
            .task
            .as_ref()
            .filter(|t| t.task_id == target && !t.is_terminal())
            .cloned();
        let Some(task) = still else {
            return Next::Go(RolloutStep::Rejoin, format!("task {target} ended"));
        };
        if !self.rollout_rt.kill_sent {
            self.mesos(MesosCommand::Kill {
                task_id: task.task_id.clone(),
                agent_id: Some(task.agent_id.clone()),
            });
            self.rollout_rt.kill_sent = true;
        }
        Next::Wait(format!("waiting for task {} to end", task.task_id))
    }

    fn rollout_rejoin(&mut self, cur: &RolloutNode, now: Millis) -> Next {
        let id = cur.node_id;
        let Some(rec) = self.record(id) else {
            return Next::Finished;
        };
        let task = rec.task.as_ref();
        let running = task.is_some_and(|t| {
            t.state == Some(TaskState::Running) && Some(&t.task_id) != cur.stopped_task.as_ref()
        });
        if !running {
            let why = match (task, &rec.last_reason) {
                (Some(t), Some(r)) if Some(&t.task_id) != cur.stopped_task.as_ref() => {
                    format!("task {} is not running ({r})", t.task_id)
                }
                (_, Some(r)) => format!("not relaunched yet ({r})"),
                _ => "not relaunched yet".into(),
            };
            return Next::Wait(why);
        }
        // The new process's own `GET /` named the cluster (reset at every launch): the master's listing
        // is of the node as it came back, not of the one stopped a moment ago.
        let reported = self
            .slots
            .get(&id)
            .is_some_and(|rt| rt.cluster_uuid.is_some() && rt.foreign_cluster.is_none());
        if !reported {
            return Next::Wait("its task runs; it has not reported the cluster's UUID yet".into());
        }
        let name = self.node_name(id);
        match self.step_cluster(now) {
            Some(c) if c.lists(&name) => {}
            Some(_) => {
                return Next::Wait("its task runs; the elected master does not list it yet".into());
            }
            None => return Next::Wait("waiting for a recent answer from Elasticsearch".into()),
        }
        if !cur.rolled_back {
            self.set_current(|c| c.joined = true);
        }
        Next::Go(RolloutStep::Clear, "it rejoined the cluster".into())
    }

    fn rollout_clear(&mut self, cur: &RolloutNode, now: Millis) -> Next {
        let mut calls = Vec::new();
        if let Some(sid) = &cur.shutdown_node_id {
            calls.push(EsCall::DeleteShutdown {
                node_id: sid.clone(),
            });
        }
        if cur.allocation_set {
            calls.push(EsCall::SetAllocationEnable(None));
        }
        self.send_rollout_calls(calls, now);
        if !self.rollout_rt.calls.done() {
            return Next::Wait("waiting for Elasticsearch to clear what was set".into());
        }
        self.set_current(|c| {
            c.shutdown_node_id = None;
            c.allocation_set = false;
        });
        if self.record(cur.node_id).is_none_or(|r| r.removed) {
            return Next::Finished;
        }
        Next::Go(RolloutStep::Green, "what was set is cleared".into())
    }

    fn rollout_green(&mut self, cur: &RolloutNode, now: Millis) -> Next {
        let _ = cur;
        let Some(c) = self.step_cluster(now) else {
            return Next::Wait("waiting for a recent answer from Elasticsearch".into());
        };
        match health_gate(c) {
            Ok(()) => Next::Finished,
            Err(why) => Next::Wait(why),
        }
    }

    // ------------------------------------------------------------------------------------------
    // Admin
    // ------------------------------------------------------------------------------------------

    /// The rollout as `tetherctl rollout status` shows it.
    #[must_use]
    pub fn rollout_view(&self, now: Millis) -> RolloutView {
        let r = self.persisted.rollout.as_ref();
        let waiting = r
            .filter(|r| r.state == RolloutState::Running)
            .map(|_| self.rollout_rt.waiting.clone())
            .filter(|w| !w.is_empty());
        let reason = match (r.and_then(|r| r.reason.clone()), waiting) {
            // Why this node (its certificate, an unreplicated index) and what it waits for now.
            (Some(why), Some(w)) => Some(format!("{why}; {w}")),
            (why, w) => why.or(w),
        };
        RolloutView {
            config_generation: self.config_generation(),
            state: r.map_or("idle", |r| r.state.as_str()).to_owned(),
            done: r.map(|r| r.done.clone()).unwrap_or_default(),
            current: r.and_then(|r| r.current.as_ref()).map(|c| c.node_id),
            step: r.and_then(|r| r.current.as_ref()).map(|c| c.step),
            pending: self.rollout_pending(now),
            reason,
        }
    }

    fn active_rollout(&self) -> Result<Rollout, CoreError> {
        match self.persisted.rollout.clone() {
            Some(r) if matches!(r.state, RolloutState::Running | RolloutState::Paused) => Ok(r),
            Some(r) => Err(CoreError::Refused(format!(
                "no rollout in progress (the last one is {})",
                r.state.as_str()
            ))),
            None => Err(CoreError::Refused("no rollout in progress".into())),
        }
    }

    /// `tetherctl rollout pause`: no step moves on until `resume`.
    pub fn handle_rollout_pause(&mut self, now: Millis) -> Result<(), CoreError> {
        let r = self.active_rollout()?;
        if r.state == RolloutState::Running {
            self.set_rollout(|r| {
                r.state = RolloutState::Paused;
                r.reason = Some("paused by the operator".into());
            });
            self.watch(WatchEvent::Rollout {
                node_id: r.current.as_ref().map(|c| c.node_id),
                state: "paused".into(),
                message: "paused by the operator".into(),
            });
        }
        self.drive_rollout(now);
        Ok(())
    }

    /// `tetherctl rollout resume`: goes on from where it stands, the step's timeout starting afresh.
    pub fn handle_rollout_resume(&mut self, now: Millis) -> Result<(), CoreError> {
        let r = self.active_rollout()?;
        if r.state == RolloutState::Paused {
            self.set_rollout(|r| {
                r.state = RolloutState::Running;
                r.reason = None;
            });
            // Keeps what the step already got (calls answered, the kill sent); restarts its clock.
            self.rollout_rt.since = now;
            self.arm_rollout_timer(now);
            self.watch(WatchEvent::Rollout {
                node_id: r.current.as_ref().map(|c| c.node_id),
                state: "running".into(),
                message: "resumed by the operator".into(),
            });
        }
        self.drive_rollout(now);
        Ok(())
    }

    /// `tetherctl rollout abort`: stops after the current node (at once with none); nodes done stay on
    /// the new configuration.
    pub fn handle_rollout_abort(&mut self, now: Millis) -> Result<(), CoreError> {
        let r = self.active_rollout()?;
        self.set_rollout(|r| {
            r.abort_requested = true;
            r.state = RolloutState::Running;
        });
        self.rollout_rt.since = now;
        self.arm_rollout_timer(now);
        self.watch(WatchEvent::Rollout {
            node_id: r.current.as_ref().map(|c| c.node_id),
            state: "running".into(),
            message: "abort asked: the rollout ends after the current node".into(),
        });
        self.drive_rollout(now);
        Ok(())
    }

    /// `tetherctl rollout rollback`: the current node goes back to the configuration it ran, only if
    /// it never joined the cluster on the new one; the rollout then pauses.
    pub fn handle_rollout_rollback(&mut self, now: Millis) -> Result<NodeId, CoreError> {
        let r = self.active_rollout()?;
        let Some(cur) = r.current.clone() else {
            return Err(CoreError::Refused(
                "no node is being restarted: nothing to roll back (nodes done stay on the new configuration)"
                    .into(),
            ));
        };
        if cur.rolled_back {
            return Err(CoreError::Refused(format!(
                "node {} is already being rolled back",
                cur.node_id
            )));
        }
        if cur.joined {
            return Err(CoreError::Refused(format!(
                "node {} already joined the cluster on configuration {}: it may have written data an \
                 older version cannot read, so it is not rolled back; `tetherctl update` it forward instead",
                cur.node_id, cur.to_generation
            )));
        }
        let id = cur.node_id;
        let step = if cur.step == RolloutStep::Prepare {
            // Not stopped yet: only what was set needs clearing.
            RolloutStep::Clear
        } else {
            RolloutStep::Stop
        };
        self.set_rollout(|r| {
            if let Some(c) = r.current.as_mut() {
                c.to_generation = c.from_generation;
                c.rolled_back = true;
                c.stopped_task = None;
                c.step = step;
            }
            r.state = RolloutState::Paused;
            r.reason = Some(format!(
                "rolling node {id} back to configuration {}",
                cur.from_generation
            ));
        });
        if let Some(mut rec) = self.record(id).cloned()
            && rec.config_generation != cur.from_generation
        {
            rec.config_generation = cur.from_generation;
            self.write_slot(rec);
            // The configuration it ran before gets a prompt try, whatever the new one's failures.
            self.clear_backoff(id, now);
        }
        self.enter_rollout_step(now);
        self.watch(WatchEvent::Rollout {
            node_id: Some(id),
            state: "paused".into(),
            message: format!(
                "rolling node {id} back to configuration {}",
                cur.from_generation
            ),
        });
        self.drive_rollout(now);
        self.flush_interest();
        Ok(id)
    }

    /// Refuses a removal (scale-down, replace) of the node the rollout is restarting.
    pub(crate) fn check_not_rolling(&self, ids: &[NodeId]) -> Result<(), CoreError> {
        let Some(cur) = self
            .persisted
            .rollout
            .as_ref()
            .filter(|r| matches!(r.state, RolloutState::Running | RolloutState::Paused))
            .and_then(|r| r.current.as_ref())
        else {
            return Ok(());
        };
        if ids.contains(&cur.node_id) {
            return Err(CoreError::Refused(format!(
                "node {} is being restarted by the rollout ({}): wait for it, or `tetherctl rollout \
                 rollback`/`abort` first",
                cur.node_id,
                cur.step.as_str()
            )));
        }
        Ok(())
    }

    /// The node the rollout is restarting.
    /// Whether `task` of node `id` is the one the rollout's Stop step killed.
    pub(crate) fn rollout_stopped(&self, id: NodeId, task: &TaskId) -> bool {
        self.persisted
            .rollout
            .as_ref()
            .and_then(|r| r.current.as_ref())
            .is_some_and(|c| c.node_id == id && c.stopped_task.as_ref() == Some(task))
    }

    pub(crate) fn rollout_node(&self) -> Option<NodeId> {
        self.persisted
            .rollout
            .as_ref()
            .and_then(|r| r.current.as_ref())
            .map(|c| c.node_id)
    }

    /// The agent node `id` ran on, while the rollout restarting it still waits for that agent's offer
    /// ([`PREFER_HOST_MS`] from the step's start; then any agent will do).
    pub(crate) fn rollout_prefers(&self, id: NodeId, now: Millis) -> Option<crate::ids::Hostname> {
        let cur = self.persisted.rollout.as_ref()?.current.as_ref()?;
        if cur.node_id != id
            || !matches!(cur.step, RolloutStep::Stop | RolloutStep::Rejoin)
            || now.since(self.rollout_rt.since) >= PREFER_HOST_MS
        {
            return None;
        }
        self.record(id)?.task.as_ref().map(|t| t.host.clone())
    }

    /// The node a rollout has down (stopping or relaunching), which a removal's stop waits for.
    pub(crate) fn rollout_node_down(&self) -> Option<NodeId> {
        self.persisted
            .rollout
            .as_ref()
            .and_then(|r| r.current.as_ref())
            .filter(|c| matches!(c.step, RolloutStep::Stop | RolloutStep::Rejoin))
            .map(|c| c.node_id)
    }
}
