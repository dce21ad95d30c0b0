//! Safe removal of a node (scale-down, `replace`), gated on what Elasticsearch itself says, and the
//! observation that feeds it ([`Core::handle_es_cluster`]).
//!
//! A node Elasticsearch knows (its elected master lists it, or its task reported the cluster's UUID)
//! is not killed at once. Its removal is durable state (`SlotRecord::removal`) that walks these steps,
//! each only when Elasticsearch confirms the previous one:
//!
//! 1. **MoveData**: its shards move away. From 7.15.2 (the lowest version any listed node runs) through
//!    the node shutdown API (`PUT _nodes/<id>/shutdown`, type `remove`), before that through
//!    `cluster.routing.allocation.exclude._name` (ECK's rules). Done when it holds no shard copy and the
//!    shutdown record is COMPLETE (with the fallback: nothing unassigned or relocating).
//! 2. **ExcludeVoting**, for a master-eligible node: `POST _cluster/voting_config_exclusions` answers
//!    once the node left the voting configuration. One master at a time, and never the last one.
//! 3. **Stop**: its task is killed (the shell adds the kill grace period); one node at a time.
//! 4. **Clear**: once the master no longer lists it, what was set for it is cleared (shutdown record,
//!    exclusions, its name in the exclude list): its volumes keep its Elasticsearch identity, and it
//!    must not come back excluded. A replaced node is placed again only then.
//!
//! Each flag of what may have been set is written before its call goes out, so a scheduler killed
//! mid-step resumes from the same step and clears what it set. A step not done after
//! `Config::removal_step_timeout_ms` is reported (a watch event and the node's view), never forced; a
//! stalled data move proceeds only if the operator passed `--allow-data-loss`.
//!
//! A node Elasticsearch does not know (never joined, not running) holds no data the cluster counts on
//! and is stopped at once, as is every node of a scale to 0 (a full stop: nowhere to move data, and the
//! volumes keep it).

use crate::command::{Command, EsCall, MesosCommand, WatchEvent};
use crate::core::{Core, Timer};
use crate::domain::{EsCluster, EsVersion, EsView, ShutdownKind, ShutdownStatus, TaskState};
use crate::error::CoreError;
use crate::ids::{Millis, NodeId};
use crate::state::{Removal, RemovalKind, RemovalStep};
use crate::step_calls::{Answer, StepCalls};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// This process's progress on one node's removal step (reset with every step and every restart: each
/// call is idempotent and sent again).
#[derive(Debug, Clone)]
pub(crate) struct RemovalRuntime {
    /// When the current step began (as this process saw it).
    pub(crate) since: Millis,
    /// The step's Elasticsearch calls.
    pub(crate) calls: StepCalls,
    /// The kill of the Stop step went out.
    pub(crate) kill_sent: bool,
    /// What the step waits for, in words.
    pub(crate) waiting: String,
    /// The overdue step was reported.
    pub(crate) stalled: bool,
}

impl RemovalRuntime {
    pub(crate) fn new(now: Millis) -> RemovalRuntime {
        RemovalRuntime {
            since: now,
            calls: StepCalls::new(),
            kill_sent: false,
            waiting: String::new(),
            stalled: false,
        }
    }
}

/// A removal as the admin API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemovalView {
    /// Why.
    pub kind: RemovalKind,
    /// Where it stands.
    pub step: RemovalStep,
    /// What the step waits for.
    pub waiting: String,
    /// The step is overdue (`--removal-step-timeout`).
    pub stalled: bool,
}

impl RemovalStep {
    /// Words for views and events.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            RemovalStep::MoveData => "moving data away",
            RemovalStep::ExcludeVoting => "leaving the voting configuration",
            RemovalStep::Stop => "stopping",
            RemovalStep::Clear => "clearing what was set in Elasticsearch",
        }
    }
}

/// Whether a node is part of the Elasticsearch cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Membership {
    /// Its task reported the cluster's UUID, or the elected master lists it: it may hold data.
    In,
    /// Not running, or a recent answer says it is not in the cluster (or no cluster ever formed).
    Out,
    /// A cluster formed, but no recent answer says either way.
    Unknown,
}

/// What a step decided after looking at the node and the cluster.
enum Next {
    /// Wait, for this reason.
    Wait(String),
    /// Go to this step, saying why.
    Go(RemovalStep, String),
    /// The removal is over.
    Done,
}

impl Core {
    /// What the scheduler's poller learnt from Elasticsearch: the elected master's view goes to storage
    /// fencing as before, and every removal in progress looks at the rest.
    pub fn handle_es_cluster(&mut self, cluster: EsCluster, now: Millis) {
        self.handle_es_view(cluster.view.clone(), now);
        self.es_cluster = Some((now, cluster));
        self.rollout_rt.observations = self.rollout_rt.observations.saturating_add(1);
        self.drive_removals(now);
        self.drive_rollout(now);
        self.drive_maintenance(now);
        self.flush_interest();
    }

    /// The outcome of the Elasticsearch call `call_id` (`Err`: Elasticsearch's refusal or why no node
    /// answered). A failed call is sent again after a pause.
    pub fn handle_es_call_result(&mut self, call_id: u64, result: Result<(), String>, now: Millis) {
        if self.rollout_call_result(call_id, &result, now) {
            self.flush_interest();
            return;
        }
        let Some(id) = self.es_calls.remove(&call_id) else {
            return;
        };
        let Some(rt) = self.slots.get_mut(&id) else {
            return;
        };
        match rt.removal.calls.answer(call_id, &result, now) {
            // A call of an earlier step (or of a cancelled removal): its step has moved on.
            Answer::Stale => return,
            Answer::Ok => {}
            Answer::Failed { retry_at, error: e } => {
                rt.removal.waiting = format!("Elasticsearch refused a call (sent again): {e}");
                self.timers.insert((retry_at, Timer::Removal(id)));
                self.watch(WatchEvent::Removal {
                    node_id: id,
                    message: format!("Elasticsearch call failed, sent again in a moment: {e}"),
                    stalled: false,
                });
            }
        }
        // Another node's removal may wait for this one's step, and a maintenance move for any removal.
        self.drive_removals(now);
        self.drive_maintenance(now);
        self.flush_interest();
    }

    /// The last observation of the cluster, unless too old to trust.
    pub(crate) fn fresh_cluster(&self, now: Millis) -> Option<&EsCluster> {
        self.es_cluster
            .as_ref()
            .filter(|(at, _)| now.since(*at) <= self.config.es_view_max_age_ms)
            .map(|(_, c)| c)
    }

    /// Whether Elasticsearch may know node `id`, so that stopping it could take data away: see
    /// [`Membership`].
    pub(crate) fn known_to_es(&self, id: NodeId, now: Millis) -> bool {
        self.membership(id, now) != Membership::Out
    }

    /// Whether node `id` is part of the Elasticsearch cluster, as far as the core can tell.
    pub(crate) fn membership(&self, id: NodeId, now: Millis) -> Membership {
        let running = self
            .record(id)
            .and_then(|r| r.task.as_ref())
            .is_some_and(|t| t.state == Some(TaskState::Running));
        if !running {
            return Membership::Out;
        }
        let reported = self
            .slots
            .get(&id)
            .is_some_and(|rt| rt.cluster_uuid.is_some() && rt.foreign_cluster.is_none());
        let name = self.node_name(id);
        match self.fresh_cluster(now) {
            _ if reported => Membership::In,
            Some(c) if c.lists(&name) => Membership::In,
            // The master answered without it, or nothing answers and no cluster ever formed.
            Some(c) if matches!(c.view, EsView::Master { .. }) => Membership::Out,
            _ if !self.persisted.cluster_formed => Membership::Out,
            // A formed cluster that has not answered yet (a scheduler just restarted, or Elasticsearch
            // unreachable from it): its running nodes may hold data.
            _ => Membership::Unknown,
        }
    }

    /// Refuses removing `leaving` when Elasticsearch says that would remove the last copy of a shard
    /// (unless `allow_data_loss`) or the last master-eligible node while `remaining` nodes stay.
    pub(crate) fn check_removal(
        &self,
        leaving: &[NodeId],
        remaining: u64,
        allow_data_loss: bool,
        now: Millis,
    ) -> Result<(), CoreError> {
        let Some(c) = self.fresh_cluster(now) else {
            return Ok(());
        };
        let mut names: BTreeSet<String> = leaving.iter().map(|id| self.node_name(*id)).collect();
        // Nodes already on their way out count as gone.
        names.extend(
            self.persisted
                .slots
                .values()
                .filter(|r| r.removal.is_some())
                .map(|r| self.node_name(r.node_id)),
        );
        if !allow_data_loss {
            let indices = c.last_copies_on(&names);
            if !indices.is_empty() {
                return Err(CoreError::Refused(format!(
                    "removing node(s) {} would remove the last copy of a shard of index(es) {}: add \
                     replicas first, or pass --allow-data-loss",
                    leaving
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", "),
                    indices.join(", ")
                )));
            }
        }
        let masters_leaving = names.iter().any(|n| {
            c.nodes
                .get(n)
                .is_some_and(|n| n.master_eligible != Some(false))
        });
        let masters_staying = c
            .nodes
            .iter()
            .filter(|(n, node)| !names.contains(*n) && node.master_eligible != Some(false))
            .count();
        if remaining > 0 && masters_leaving && masters_staying == 0 {
            return Err(CoreError::Refused(
                "that would remove the last master-eligible node Elasticsearch lists: the cluster \
                 would lose its master"
                    .into(),
            ));
        }
        Ok(())
    }

    /// Starts the safe removal of node `id` (its record already says whether it is scaled down).
    pub(crate) fn begin_removal(
        &mut self,
        id: NodeId,
        kind: RemovalKind,
        allow_data_loss: bool,
        now: Millis,
    ) {
        let Some(mut rec) = self.record(id).cloned() else {
            return;
        };
        let step = if self.known_to_es(id, now) {
            RemovalStep::MoveData
        } else {
            RemovalStep::Stop
        };
        rec.removal = Some(Removal {
            kind,
            step,
            allow_data_loss,
            shutdown_node_id: None,
            allocation_excluded: false,
            voting_excluded: false,
        });
        self.write_slot(rec);
        if let Some(rt) = self.slots.get_mut(&id) {
            rt.removal = RemovalRuntime::new(now);
        }
        self.arm_step_timer(id, now);
        self.watch(WatchEvent::Removal {
            node_id: id,
            message: format!("removal started: {}", step.as_str()),
            stalled: false,
        });
        self.drive_removal(id, now);
    }

    /// A scaled-down node wanted again, or a replace forced: its removal skips to clearing what was
    /// set (the node keeps its task, or the force already dropped it).
    pub(crate) fn cancel_removal(&mut self, id: NodeId, now: Millis) {
        let Some(mut rec) = self.record(id).cloned() else {
            return;
        };
        let Some(removal) = rec.removal.as_mut() else {
            return;
        };
        if removal.step == RemovalStep::Clear {
            return;
        }
        removal.step = RemovalStep::Clear;
        self.write_slot(rec);
        self.enter_step(id, now);
        self.watch(WatchEvent::Removal {
            node_id: id,
            message: "removal cancelled: clearing what was set in Elasticsearch".into(),
            stalled: false,
        });
        self.drive_removal(id, now);
    }

    /// Moves every removal in progress on, the highest ids first (they go first, as scale-down says).
    pub(crate) fn drive_removals(&mut self, now: Millis) {
        let ids: Vec<NodeId> = self
            .persisted
            .slots
            .values()
            .rev()
            .filter(|r| r.removal.is_some())
            .map(|r| r.node_id)
            .collect();
        for id in ids {
            self.drive_removal(id, now);
        }
    }

    /// Moves node `id`'s removal on as far as Elasticsearch allows now.
    pub(crate) fn drive_removal(&mut self, id: NodeId, now: Millis) {
        // Bounded: each pass either waits, ends, or moves one step forward.
        for _ in 0..5 {
            let Some(removal) = self.record(id).and_then(|r| r.removal.clone()) else {
                return;
            };
            let next = match removal.step {
                RemovalStep::MoveData => self.move_data(id, &removal, now),
                RemovalStep::ExcludeVoting => self.exclude_voting(id, &removal, now),
                RemovalStep::Stop => self.stop(id, now),
                RemovalStep::Clear => self.clear(id, &removal, now),
            };
            match next {
                Next::Wait(why) => {
                    self.waiting(id, removal.step, &removal, why, now);
                    return;
                }
                Next::Go(step, why) => {
                    if let Some(mut rec) = self.record(id).cloned()
                        && let Some(r) = rec.removal.as_mut()
                    {
                        r.step = step;
                        self.write_slot(rec);
                    }
                    self.enter_step(id, now);
                    self.watch(WatchEvent::Removal {
                        node_id: id,
                        message: format!("{why}; now {}", step.as_str()),
                        stalled: false,
                    });
                }
                Next::Done => {
                    let Some(mut rec) = self.record(id).cloned() else {
                        return;
                    };
                    rec.removal = None;
                    self.write_slot(rec);
                    self.enter_step(id, now);
                    self.watch(WatchEvent::Removal {
                        node_id: id,
                        message: "removal done: nothing Tether set in Elasticsearch remains".into(),
                        stalled: false,
                    });
                    self.revive_wanted = true;
                    return;
                }
            }
        }
    }

    fn enter_step(&mut self, id: NodeId, now: Millis) {
        if let Some(rt) = self.slots.get_mut(&id) {
            rt.removal = RemovalRuntime::new(now);
        }
        self.es_calls.retain(|_, n| *n != id);
        self.arm_step_timer(id, now);
    }

    fn arm_step_timer(&mut self, id: NodeId, now: Millis) {
        self.timers.insert((
            now.plus(self.config.removal_step_timeout_ms),
            Timer::Removal(id),
        ));
    }

    /// Records what the step waits for; past the step timeout, reports it once.
    fn waiting(
        &mut self,
        id: NodeId,
        step: RemovalStep,
        removal: &Removal,
        why: String,
        now: Millis,
    ) {
        let timeout = self.config.removal_step_timeout_ms;
        let Some(rt) = self.slots.get_mut(&id) else {
            return;
        };
        rt.removal.waiting = why.clone();
        let overdue = now.since(rt.removal.since) >= timeout;
        if !overdue || rt.removal.stalled {
            return;
        }
        rt.removal.stalled = true;
        let mut message = format!(
            "{} has not finished after {} s: {why}",
            step.as_str(),
            timeout / 1000
        );
        if step == RemovalStep::MoveData && !removal.allow_data_loss {
            message.push_str(
                "; nothing is forced: fix what blocks it, scale back up to cancel, or repeat the \
                 request with --allow-data-loss to stop the node with its data",
            );
        }
        self.watch(WatchEvent::Removal {
            node_id: id,
            message,
            stalled: true,
        });
    }

    /// Sends `calls` for node `id`'s current step unless they were sent, answered, or failed too
    /// recently; with no call to make, the step's calls are done.
    fn send_step_calls(&mut self, id: NodeId, calls: Vec<EsCall>, now: Millis) {
        let Some(rt) = self.slots.get(&id) else {
            return;
        };
        if !rt.removal.calls.due(now) {
            return;
        }
        if calls.is_empty() {
            if let Some(rt) = self.slots.get_mut(&id) {
                rt.removal.calls.none_to_make();
            }
            return;
        }
        for call in calls {
            let call_id = self.command_id();
            self.es_calls.insert(call_id, id);
            if let Some(rt) = self.slots.get_mut(&id) {
                rt.removal.calls.sent(call_id);
            }
            self.push(Command::Elasticsearch { call_id, call });
        }
    }

    fn calls_done(&self, id: NodeId) -> bool {
        self.slots
            .get(&id)
            .is_some_and(|rt| rt.removal.calls.done())
    }

    /// Writes `f`'s change to node `id`'s removal record (before the call it announces goes out).
    fn update_removal(&mut self, id: NodeId, f: impl FnOnce(&mut Removal)) {
        if let Some(mut rec) = self.record(id).cloned()
            && let Some(r) = rec.removal.as_mut()
        {
            let before = r.clone();
            f(r);
            if *r != before {
                self.write_slot(rec);
            }
        }
    }

    /// The names of the nodes whose removal put them in the allocation exclude list, but `except`.
    fn excluded_names(&self, except: Option<NodeId>) -> Vec<String> {
        self.persisted
            .slots
            .values()
            .filter(|r| Some(r.node_id) != except)
            .filter(|r| r.removal.as_ref().is_some_and(|m| m.allocation_excluded))
            .map(|r| self.node_name(r.node_id))
            .collect()
    }

    /// Whether another node's removal holds the one-at-a-time slot: it asked to leave the voting
    /// configuration and has not cleared that yet, or it is stopping.
    fn other_node_leaving(&self, id: NodeId) -> Option<NodeId> {
        self.persisted
            .slots
            .values()
            .filter(|r| r.node_id != id)
            .find(|r| {
                r.removal.as_ref().is_some_and(|m| {
                    m.step == RemovalStep::Stop
                        || (m.voting_excluded
                            && matches!(m.step, RemovalStep::ExcludeVoting | RemovalStep::Clear))
                })
            })
            .map(|r| r.node_id)
    }

    fn move_data(&mut self, id: NodeId, removal: &Removal, now: Millis) -> Next {
        let name = self.node_name(id);
        let Some(rec) = self.record(id) else {
            return Next::Done;
        };
        if !Core::task_live(rec) {
            return Next::Go(RemovalStep::Clear, "its task already ended".into());
        }
        match self.membership(id, now) {
            Membership::Out => {
                return Next::Go(
                    RemovalStep::Stop,
                    "Elasticsearch does not know it: no data to move".into(),
                );
            }
            Membership::Unknown => {
                return Next::Wait("no recent answer from Elasticsearch (it may hold data)".into());
            }
            Membership::In => {}
        }
        let Some(c) = self.fresh_cluster(now) else {
            return Next::Wait("no recent answer from Elasticsearch".into());
        };
        let use_shutdown = c
            .min_version()
            .is_some_and(|v| v >= EsVersion::SHUTDOWN_API);
        let es_id = c.nodes.get(&name).map(|n| n.id.clone());
        let (calls, shutdown_id) = match (&removal.shutdown_node_id, use_shutdown, es_id.as_ref()) {
            // Once asked, the record is the path (a restart asks it again).
            (Some(es_id), _, _) | (None, true, Some(es_id)) => (
                vec![EsCall::PutShutdown {
                    node_id: es_id.clone(),
                    kind: ShutdownKind::Remove,
                    reason: format!("tether: {} node {id}", removal_reason(removal.kind)),
                    target_node_name: None,
                }],
                Some(es_id.clone()),
            ),
            _ => {
                let mut names = self.excluded_names(Some(id));
                names.push(name.clone());
                names.sort();
                (vec![EsCall::SetAllocationExclude { names }], None)
            }
        };
        let shards = c.shards_on(&name);
        let status = shutdown_id
            .as_ref()
            .and_then(|sid| c.shutdowns.as_ref().map(|m| m.get(sid).map(|s| s.status)));
        let counts = c.shard_counts;
        match &shutdown_id {
            Some(sid) => {
                let sid = sid.clone();
                self.update_removal(id, |r| r.shutdown_node_id = Some(sid));
            }
            None => self.update_removal(id, |r| r.allocation_excluded = true),
        }
        self.send_step_calls(id, calls, now);
        if !self.calls_done(id) {
            return Next::Wait("waiting for Elasticsearch to accept the data move".into());
        }
        let next = if self.is_master_eligible(&name, now) {
            RemovalStep::ExcludeVoting
        } else {
            RemovalStep::Stop
        };
        let overdue = self.slots.get(&id).is_some_and(|rt| rt.removal.stalled);
        if overdue && removal.allow_data_loss {
            return Next::Go(
                next,
                format!(
                    "data move overdue with {} shard copies left; going on as --allow-data-loss asks",
                    shards.map_or_else(|| "unknown".to_owned(), |n| n.to_string())
                ),
            );
        }
        match shards {
            None => return Next::Wait("Elasticsearch's shard table is unknown".into()),
            Some(n) if n > 0 => {
                return Next::Wait(format!("{n} shard copies still on it"));
            }
            Some(_) => {}
        }
        match (shutdown_id.is_some(), status) {
            (true, Some(None)) => {
                return Next::Wait("Elasticsearch lists no shutdown record for it yet".into());
            }
            (true, Some(Some(ShutdownStatus::Stalled))) => {
                return Next::Wait("Elasticsearch says its shutdown is STALLED".into());
            }
            (true, Some(Some(s))) if s != ShutdownStatus::Complete => {
                return Next::Wait("its shutdown record is not COMPLETE yet".into());
            }
            (false, _) => match counts {
                None => return Next::Wait("the cluster's shard counts are unknown".into()),
                Some(k) if k.unassigned > 0 || k.relocating > 0 => {
                    return Next::Wait(format!(
                        "{} shards unassigned, {} relocating",
                        k.unassigned, k.relocating
                    ));
                }
                Some(_) => {}
            },
            _ => {}
        }
        Next::Go(next, "its data moved away".into())
    }

    /// Master-eligible as far as Elasticsearch says (its default roles include `master`).
    fn is_master_eligible(&self, name: &str, now: Millis) -> bool {
        self.fresh_cluster(now)
            .and_then(|c| c.nodes.get(name))
            .is_none_or(|n| n.master_eligible != Some(false))
    }

    fn exclude_voting(&mut self, id: NodeId, removal: &Removal, now: Millis) -> Next {
        let name = self.node_name(id);
        if self.record(id).is_some_and(|r| !Core::task_live(r)) && !removal.voting_excluded {
            return Next::Go(RemovalStep::Clear, "its task already ended".into());
        }
        if let Some(other) = self.other_node_leaving(id) {
            return Next::Wait(format!(
                "node {other} leaves first (one master-eligible node at a time)"
            ));
        }
        let Some(c) = self.fresh_cluster(now) else {
            return Next::Wait("no recent answer from Elasticsearch".into());
        };
        let leaving: BTreeSet<String> = self
            .persisted
            .slots
            .values()
            .filter(|r| r.removal.is_some())
            .map(|r| self.node_name(r.node_id))
            .collect();
        let staying_masters = c
            .nodes
            .iter()
            .filter(|(n, node)| !leaving.contains(*n) && node.master_eligible != Some(false))
            .count();
        if staying_masters == 0 {
            return Next::Wait(
                "it is the last master-eligible node Elasticsearch lists: never removed".into(),
            );
        }
        let confirmed = c
            .voting_exclusions
            .as_ref()
            .is_none_or(|v| v.contains(&name));
        self.update_removal(id, |r| r.voting_excluded = true);
        self.send_step_calls(
            id,
            vec![EsCall::AddVotingExclusions {
                node_names: vec![name],
            }],
            now,
        );
        if !self.calls_done(id) {
            return Next::Wait(
                "waiting for Elasticsearch to confirm it left the voting configuration".into(),
            );
        }
        if !confirmed {
            return Next::Wait("Elasticsearch does not list its voting exclusion yet".into());
        }
        Next::Go(RemovalStep::Stop, "it left the voting configuration".into())
    }

    fn stop(&mut self, id: NodeId, now: Millis) -> Next {
        let _ = now;
        let Some(rec) = self.record(id).cloned() else {
            return Next::Done;
        };
        let Some(task) = rec.task.as_ref().filter(|t| !t.is_terminal()) else {
            return Next::Go(RemovalStep::Clear, "its task ended".into());
        };
        let stopping_other = self
            .persisted
            .slots
            .values()
            .filter(|r| r.node_id != id)
            .find(|r| {
                r.removal
                    .as_ref()
                    .is_some_and(|m| m.step == RemovalStep::Stop)
            })
            .map(|r| r.node_id);
        if let Some(other) = stopping_other
            && !self.slots.get(&id).is_some_and(|rt| rt.removal.kill_sent)
        {
            return Next::Wait(format!("node {other} stops first (one node at a time)"));
        }
        if let Some(other) = self.rollout_node_down().filter(|n| *n != id)
            && !self.slots.get(&id).is_some_and(|rt| rt.removal.kill_sent)
        {
            return Next::Wait(format!(
                "the rollout has node {other} down (one node at a time)"
            ));
        }
        if !self.slots.get(&id).is_some_and(|rt| rt.removal.kill_sent) {
            self.mesos(MesosCommand::Kill {
                task_id: task.task_id.clone(),
                agent_id: Some(task.agent_id.clone()),
            });
            if let Some(rt) = self.slots.get_mut(&id) {
                rt.removal.kill_sent = true;
            }
        }
        Next::Wait(format!("waiting for task {} to end", task.task_id))
    }

    fn clear(&mut self, id: NodeId, removal: &Removal, now: Millis) -> Next {
        let name = self.node_name(id);
        let live = self.record(id).is_some_and(Core::task_live);
        if !live {
            // Cleared only once the cluster let it go: an exclusion cleared while the master still
            // lists the stopped node could put it back in the voting configuration.
            match self.fresh_cluster(now) {
                None => return Next::Wait("no recent answer from Elasticsearch".into()),
                Some(c) if c.lists(&name) => {
                    return Next::Wait("Elasticsearch still lists the stopped node".into());
                }
                Some(_) => {}
            }
        }
        let mut calls = Vec::new();
        if let Some(es_id) = &removal.shutdown_node_id {
            calls.push(EsCall::DeleteShutdown {
                node_id: es_id.clone(),
            });
        }
        if removal.voting_excluded {
            calls.push(EsCall::ClearVotingExclusions);
        }
        if removal.allocation_excluded {
            calls.push(EsCall::SetAllocationExclude {
                names: self.excluded_names(Some(id)),
            });
        }
        self.send_step_calls(id, calls, now);
        if !self.calls_done(id) {
            return Next::Wait("waiting for Elasticsearch to clear what was set".into());
        }
        Next::Done
    }

    /// Node `id`'s removal as the admin API shows it.
    pub(crate) fn removal_view(&self, id: NodeId) -> Option<RemovalView> {
        let removal = self.record(id)?.removal.as_ref()?;
        let rt = self.slots.get(&id);
        Some(RemovalView {
            kind: removal.kind,
            step: removal.step,
            waiting: rt.map(|r| r.removal.waiting.clone()).unwrap_or_default(),
            stalled: rt.is_some_and(|r| r.removal.stalled),
        })
    }

    /// Shard copies per node name, from the fresh observation (for views and metrics).
    pub(crate) fn shards_by_node(&self, now: Millis) -> Option<BTreeMap<String, u64>> {
        let shards = self.fresh_cluster(now)?.shards.as_ref()?;
        let mut out = BTreeMap::new();
        for c in shards {
            if let Some(n) = &c.node {
                *out.entry(n.clone()).or_insert(0) += 1;
            }
        }
        Some(out)
    }
}

fn removal_reason(kind: RemovalKind) -> &'static str {
    match kind {
        RemovalKind::ScaleDown => "scale-down of",
        RemovalKind::Replace => "replacement of",
        RemovalKind::Maintenance => "maintenance move of",
    }
}
