//! Mesos events into the core: SUBSCRIBED, disconnection, RESCIND, agent FAILURE and status UPDATEs
//! (acknowledged exactly when they carry a uuid), plus explicit/implicit reconciliation and the timers.

use crate::command::{MesosCommand, Reason, WatchEvent};
use crate::config::Strategy;
use crate::core::{Core, Recon, Timer};
use crate::domain::{TaskReason, TaskState, TaskStatus};
use crate::ids::{AgentId, FrameworkId, Millis, NodeId, OfferId, TaskId};
use crate::state::StateWrite;
use std::collections::BTreeSet;

impl Core {
    // ----------------------------------------------------------------------------------------------
    // Mesos events
    // ----------------------------------------------------------------------------------------------

    /// SUBSCRIBED: stores a new framework id, drops every held offer (the master rescinds them), and
    /// starts explicit reconciliation of every task that may be alive.
    pub fn handle_subscribed(&mut self, framework_id: FrameworkId, now: Millis) {
        if self.persisted.framework_id.as_ref() != Some(&framework_id) {
            self.write(StateWrite::FrameworkId(framework_id.clone()));
        }
        self.drop_all_holds("resubscribed");
        self.subscribed_since = Some(now);
        if self.placement_from.is_none() {
            // After a (re)start, sidecars need time to reconnect and report the mounts they hold before
            // any node may be placed on the strength of their silence.
            let grace = match self.config.strategy {
                Strategy::External { .. } => self.config.startup_grace_ms,
                Strategy::Normal => 0,
            };
            let from = now.plus(grace);
            self.placement_from = Some(from);
            if grace > 0 {
                self.timers.insert((from, Timer::GraceEnd));
            }
        }
        self.watch(WatchEvent::Subscribed {
            framework_id: framework_id.clone(),
        });
        self.recon = None;
        self.next_implicit = None;
        self.maintenance_resubscribed(now);
        // A removal's KILL sent on the old subscription may never have reached the master: send it again.
        for rt in self.slots.values_mut() {
            rt.removal.kill_sent = false;
        }
        self.drive_removals(now);
        self.start_explicit(now, None);
        // The SUBSCRIBE call left us unsuppressed; say explicitly what we want.
        self.suppressed = false;
        self.revive_wanted = true;
        self.flush_interest();
    }

    /// The subscription stream ended (or the master sent ERROR): offers are void, timers of the
    /// subscription stop until the next SUBSCRIBED.
    pub fn handle_disconnected(&mut self, _now: Millis) {
        self.drop_all_holds("subscription lost");
        self.subscribed_since = None;
        self.recon = None;
        self.next_implicit = None;
        self.watch(WatchEvent::Disconnected);
    }

    pub(crate) fn drop_all_holds(&mut self, why: &str) {
        let held: Vec<NodeId> = self.holds.values().copied().collect();
        for id in held {
            self.abandon_prepare(id, false);
            if let Some(rt) = self.slots.get_mut(&id) {
                rt.reason = Some(Reason::OfferLost(why.to_owned()));
            }
        }
    }

    /// RESCIND: a held offer vanished while its node was being prepared; the node backs off and the
    /// sidecar's mount is released (no DECLINE: the offer no longer exists).
    pub fn handle_rescind(&mut self, offer_id: &OfferId, now: Millis) {
        if let Some(id) = self.holds.get(offer_id).copied() {
            self.abandon_prepare(id, false);
            self.fail_slot(id, Reason::OfferLost("rescinded".into()), now);
            self.flush_interest();
        }
    }

    /// FAILURE of a whole agent: nothing becomes terminal (updates decide that); its offers are void.
    pub fn handle_agent_lost(&mut self, agent_id: &AgentId, now: Millis) {
        let held: Vec<NodeId> = self
            .holds
            .iter()
            .filter(|(_, id)| {
                self.slots
                    .get(id)
                    .and_then(|rt| rt.preparing.as_ref())
                    .is_some_and(|p| &p.offer.agent_id == agent_id)
            })
            .map(|(_, id)| *id)
            .collect();
        for id in held {
            self.abandon_prepare(id, false);
            self.fail_slot(id, Reason::OfferLost(format!("agent {agent_id} lost")), now);
        }
        // Mesos no longer knows the agent: unless its host has another agent id (it re-registered), the
        // host must now be vouched for by its sidecar or a node, or it is forgotten in time.
        if let Some(host) = self.agent_hosts.remove(agent_id) {
            self.offered.forget_agent(&host, agent_id);
            if !self.agent_hosts.values().any(|h| *h == host) {
                self.mark_absent(&host, now);
            }
        }
        self.watch(WatchEvent::Warning {
            message: format!("agent {agent_id} lost"),
        });
        self.flush_interest();
    }

    /// UPDATE (or a reconciliation answer). Persists the change before acknowledging it; acknowledges
    /// exactly the updates that carry a uuid.
    pub fn handle_update(&mut self, status: TaskStatus, now: Millis) {
        if status.reason == Some(TaskReason::AgentDraining) {
            self.note_draining(&status, now);
        }
        match self.tasks.get(&status.task_id).copied() {
            Some(id) => self.update_known(id, &status, now),
            None => self.update_stray(&status),
        }
        self.drive_maintenance(now);
        if let Some(r) = self.recon.as_mut() {
            r.remaining.remove(&status.task_id);
        }
        if let Some(uuid) = status.uuid.clone() {
            match status.agent_id.clone() {
                Some(agent_id) => self.mesos(MesosCommand::Acknowledge {
                    agent_id,
                    task_id: status.task_id.clone(),
                    uuid,
                }),
                None => self.watch(WatchEvent::Warning {
                    message: format!(
                        "update for {} has a uuid but no agent id; cannot acknowledge",
                        status.task_id
                    ),
                }),
            }
        }
        self.finish_recon_if_done(now);
        self.flush_interest();
    }

    pub(crate) fn update_stray(&mut self, status: &TaskStatus) {
        self.fenced_task_seen(&status.task_id, status.state);
        // An UNREACHABLE task cannot be told anything: the master answers a KILL of it with UNREACHABLE
        // again (as by reconciliation), so killing it now would only loop. It is killed when it shows up.
        if status.state.is_terminal() || status.state == TaskState::Unreachable {
            return;
        }
        self.watch(WatchEvent::StrayTask {
            task_id: status.task_id.clone(),
            state: status.state,
        });
        self.mesos(MesosCommand::Kill {
            task_id: status.task_id.clone(),
            agent_id: status.agent_id.clone(),
        });
    }

    pub(crate) fn update_known(&mut self, id: NodeId, status: &TaskStatus, now: Millis) {
        let Some(mut rec) = self.record(id).cloned() else {
            return;
        };
        let Some(task) = rec.task.as_mut() else {
            return;
        };
        if task.task_id != status.task_id {
            return;
        }
        // A task alive on its agent is Mesos knowing the agent (after a restart, before any offer).
        if matches!(
            status.state,
            TaskState::Staging | TaskState::Starting | TaskState::Running | TaskState::Killing
        ) && status.agent_id.as_ref() == Some(&task.agent_id)
            && !self.agent_hosts.contains_key(&task.agent_id)
        {
            self.know_agent(&task.agent_id, &task.host);
        }
        if let Some(rt) = self.slots.get_mut(&id) {
            rt.last_status_at = Some(now);
            if status.healthy.is_some() {
                rt.healthy = status.healthy;
            }
        }
        // Terminal is final: a later non-terminal update is a duplicate or out of order.
        if task.is_terminal() {
            return;
        }
        let changed = task.state != Some(status.state);
        task.state = Some(status.state);
        if changed {
            let task_id = task.task_id.clone();
            self.write_slot(rec.clone());
            self.watch(WatchEvent::TaskState {
                node_id: id,
                task_id,
                state: status.state,
            });
        }
        self.track_unreachable(id, status.state, now);
        match status.state {
            TaskState::Running => {
                // Not proof the cluster bootstrapped: only a node reporting a real cluster UUID is
                // (see `handle_es_root`).
                if let Some(rt) = self.slots.get_mut(&id) {
                    rt.reason = None;
                    if changed {
                        rt.since = now;
                        rt.running_since = Some(now);
                    }
                }
                self.release_mount(id);
            }
            s if s.is_terminal() => {
                self.release_mount(id);
                let stable = self.stable_run_ms();
                if let Some(rt) = self.slots.get_mut(&id) {
                    rt.healthy = None;
                    if rt
                        .running_since
                        .take()
                        .is_some_and(|t| now.since(t) >= stable)
                    {
                        rt.failures = 0;
                    }
                }
                let stopped_by_rollout = self.rollout_stopped(id, &status.task_id);
                let reason = Reason::TaskEnded {
                    state: s,
                    reason: status.reason,
                    message: status.message.clone(),
                };
                if rec.removed {
                    self.set_reason(id, reason, now);
                } else if lost_with_its_agent(s, status.reason)
                    || rec.removal.is_some()
                    || stopped_by_rollout
                {
                    // The machine went away (or Tether itself stopped it to move or restart it), not the
                    // node: a backoff would only delay recovery (there is no crash loop to damp), so the
                    // node may be placed in this round.
                    self.set_reason(id, reason, now);
                    self.revive_wanted = true;
                } else {
                    self.fail_slot(id, reason, now);
                    self.revive_wanted = true;
                }
            }
            _ => {}
        }
        if rec.removal.is_some() && changed {
            // Another node's removal may wait for this one's stop.
            self.drive_removals(now);
        }
        if changed && self.rollout_node() == Some(id) {
            // The rollout's node stopped or runs again: its step may move on at once.
            self.drive_rollout(now);
        }
        let draining = rec
            .removal
            .as_ref()
            .is_some_and(|r| r.step < crate::state::RemovalStep::Stop);
        if rec.removed && !draining && !status.state.is_terminal() {
            // A scaled-down node's task is still alive (e.g. after a resubscription): kill it again
            // (unless its data is still being moved away: the removal stops it when that is done).
            if let Some(t) = &rec.task {
                self.mesos(MesosCommand::Kill {
                    task_id: t.task_id.clone(),
                    agent_id: Some(t.agent_id.clone()),
                });
            }
        }
    }

    // ----------------------------------------------------------------------------------------------
    // Reconciliation
    // ----------------------------------------------------------------------------------------------

    /// Starts (or extends) explicit reconciliation; `only` limits it to some tasks.
    pub(crate) fn start_explicit(&mut self, now: Millis, only: Option<Vec<TaskId>>) {
        let tasks: BTreeSet<TaskId> = match only {
            Some(list) => list.into_iter().collect(),
            None => self
                .persisted
                .slots
                .values()
                .filter_map(|r| r.task.as_ref())
                .filter(|t| !t.is_terminal())
                .map(|t| t.task_id.clone())
                .collect(),
        };
        if let Some(r) = self.recon.as_mut() {
            r.remaining.extend(tasks);
            return;
        }
        if tasks.is_empty() {
            self.next_implicit = Some(now.plus(self.config.implicit_reconcile_ms));
            return;
        }
        self.recon = Some(Recon {
            started: now,
            remaining: tasks,
            attempt: 0,
            next_at: now,
        });
        self.reconcile_round(now);
    }

    pub(crate) fn reconcile_round(&mut self, now: Millis) {
        // An empty list would be implicit reconciliation: never send it by accident.
        let Some(r) = self.recon.as_ref().filter(|r| !r.remaining.is_empty()) else {
            return;
        };
        let list: Vec<(TaskId, Option<AgentId>)> = r
            .remaining
            .iter()
            .map(|t| {
                let agent = self
                    .tasks
                    .get(t)
                    .and_then(|id| self.record(*id))
                    .and_then(|rec| rec.task.as_ref())
                    .map(|task| task.agent_id.clone());
                (t.clone(), agent)
            })
            .collect();
        let attempt = r.attempt;
        let delay = self
            .config
            .reconcile_initial_ms
            .saturating_mul(1u64 << attempt.min(32))
            .min(
                self.config
                    .reconcile_max_ms
                    .max(self.config.reconcile_initial_ms),
            );
        if let Some(r) = self.recon.as_mut() {
            r.attempt = attempt.saturating_add(1);
            r.next_at = now.plus(delay);
        }
        self.mesos(MesosCommand::Reconcile { tasks: list });
    }

    pub(crate) fn finish_recon_if_done(&mut self, now: Millis) {
        if self.recon.as_ref().is_some_and(|r| r.remaining.is_empty()) {
            self.recon = None;
            if self.next_implicit.is_none() {
                self.next_implicit = Some(now.plus(self.config.implicit_reconcile_ms));
            }
        }
    }

    /// Whether explicit reconciliation is running, and since when.
    #[must_use]
    pub fn reconciling_since(&self) -> Option<Millis> {
        self.recon.as_ref().map(|r| r.started)
    }

    // ----------------------------------------------------------------------------------------------
    // Timers
    // ----------------------------------------------------------------------------------------------

    /// Fires every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Millis) {
        while let Some((at, _)) = self.timers.first() {
            if *at > now {
                break;
            }
            let Some((_, timer)) = self.timers.pop_first() else {
                break;
            };
            match timer {
                Timer::PrepareHold(id, command_id) => {
                    let held = self
                        .slots
                        .get(&id)
                        .and_then(|rt| rt.preparing.as_ref())
                        .is_some_and(|p| p.command_id == command_id);
                    if held {
                        if let Some(rt) = self.slots.get_mut(&id) {
                            rt.avoid_host = rt.preparing.as_ref().map(|p| p.offer.hostname.clone());
                        }
                        self.abandon_prepare(id, true);
                        self.fail_slot(
                            id,
                            Reason::OfferLost("prepare outlasted the offer hold".into()),
                            now,
                        );
                    }
                    // Past its deadline the sidecar has given up on the prepare (and released it).
                    self.abandoned_prepares.remove(&command_id);
                    if self.needs_task(id) {
                        self.revive_wanted = true;
                    }
                }
                Timer::GraceEnd => self.revive_wanted = true,
                Timer::Backoff(id) => {
                    if self.needs_task(id) {
                        self.revive_wanted = true;
                    }
                }
                Timer::Fence(id) => self.fence_check(id, now),
                Timer::Forget => self.forget_absent(now),
                Timer::Removal(id) => self.drive_removal(id, now),
                Timer::Rollout => self.drive_rollout(now),
                Timer::LaunchStatus(id, task_id) => {
                    let silent = self.tasks.get(&task_id) == Some(&id)
                        && self
                            .slots
                            .get(&id)
                            .is_some_and(|rt| rt.last_status_at.is_none())
                        && self.record(id).is_some_and(Self::task_live);
                    if silent && self.subscribed_since.is_some() {
                        self.start_explicit(now, Some(vec![task_id]));
                    }
                }
            }
        }
        if self.subscribed_since.is_some() {
            // A forced replacement may have emptied the explicit set without an update.
            self.finish_recon_if_done(now);
            if self.recon.as_ref().is_some_and(|r| r.next_at <= now) {
                self.reconcile_round(now);
            }
            if self.recon.is_none() && self.next_implicit.is_some_and(|t| t <= now) {
                self.next_implicit = Some(now.plus(self.config.implicit_reconcile_ms));
                self.mesos(MesosCommand::Reconcile { tasks: Vec::new() });
            }
        }
        self.flush_interest();
    }
}

/// Whether a terminal update says the task ended because its agent was lost, removed or drained,
/// rather than because the task itself failed.
fn lost_with_its_agent(state: TaskState, reason: Option<TaskReason>) -> bool {
    matches!(state, TaskState::Gone | TaskState::GoneByOperator)
        || (matches!(state, TaskState::Lost | TaskState::Dropped)
            && reason.is_some_and(TaskReason::agent_gone))
        // DRAIN_AGENT: Mesos took the agent away for maintenance.
        || (state == TaskState::Killed && reason == Some(TaskReason::AgentDraining))
}
