//! UNREACHABLE nodes: what ends their wait.
//!
//! An UNREACHABLE task is not terminal (invariant 2): it may still run behind a partition and write to
//! its volumes. Its node waits for a terminal state, and two things can give one:
//!
//! - **An operator** asserts the machine is off by marking its agent gone (the master then sends
//!   TASK_GONE_BY_OPERATOR). [`Core::gone_agents`] resolves what the operator named to the agent ids
//!   Tether knows UNREACHABLE, and refuses anything else: marking gone is irreversible.
//! - **Storage fencing** (`Fencing::Storage`): the operator stated that the volume driver attaches a
//!   volume in one place only and takes it over on Mount. Once the task has been UNREACHABLE for
//!   `unreachable_replace_after_ms` *and* Elasticsearch's elected master has not listed the node for as
//!   long (a Mesos partition is not an Elasticsearch partition: an agent process can die while its
//!   containers keep serving), the old task is dropped from the slot (killed wherever it shows up) and
//!   the node is placed again: the new agent's prepare force-detaches the volumes from the old agent, and
//!   the task is launched only when the driver confirms the attachment on the new agent. While
//!   Elasticsearch still lists the node, nothing happens; while no master answers, nothing is replaced.
//!
//! Everything here is driven by events and `now`: a task's state, an [`EsView`] from the shell's poller,
//! and the `Fence` timer.

use crate::command::{MesosCommand, Reason, WatchEvent};
use crate::config::Fencing;
use crate::core::{Core, Timer};
use crate::domain::{CommandResult, DriverAttachment, EsView, TaskState};
use crate::error::CoreError;
use crate::ids::{AgentId, Hostname, Millis, NodeId, TaskId};
use crate::view::{NextAction, OperatorWait};

/// An UNREACHABLE task left behind by a storage-fenced replacement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FencedTask {
    pub(crate) node: NodeId,
    pub(crate) agent_id: AgentId,
    pub(crate) host: Hostname,
}

impl Core {
    /// What Elasticsearch's elected master lists (or that no master answers), from the shell's poller.
    /// Absence is counted only while a master answers: without one, every node's absence clock stops.
    pub fn handle_es_view(&mut self, view: EsView, now: Millis) {
        let ids: Vec<NodeId> = self
            .persisted
            .slots
            .values()
            .filter(|r| Core::task_live(r))
            .map(|r| r.node_id)
            .collect();
        for id in ids {
            let name = self.node_name(id);
            let Some(rt) = self.slots.get_mut(&id) else {
                continue;
            };
            match &view {
                EsView::Master { nodes, .. } if !nodes.contains(&name) => {
                    rt.es_absent_since.get_or_insert(now);
                }
                _ => rt.es_absent_since = None,
            }
        }
        self.es = Some((now, view));
        let unreachable: Vec<NodeId> = self
            .slots
            .iter()
            .filter(|(_, rt)| rt.unreachable_since.is_some())
            .map(|(id, _)| *id)
            .collect();
        for id in unreachable {
            self.fence_check(id, now);
        }
        self.flush_interest();
    }

    /// Keeps the UNREACHABLE clock of node `id` after its task reported `state`, and arms the check.
    pub(crate) fn track_unreachable(&mut self, id: NodeId, state: TaskState, now: Millis) {
        let Some(rt) = self.slots.get_mut(&id) else {
            return;
        };
        if state == TaskState::Unreachable {
            rt.unreachable_since.get_or_insert(now);
            self.fence_check(id, now);
        } else {
            rt.unreachable_since = None;
        }
    }

    /// The last Elasticsearch view, unless it is too old to trust.
    fn fresh_es(&self, now: Millis) -> Option<&EsView> {
        self.es
            .as_ref()
            .filter(|(at, _)| now.since(*at) <= self.config.es_view_max_age_ms)
            .map(|(_, v)| v)
    }

    /// What Tether will do about node `id` (nothing unless its task is UNREACHABLE).
    pub(crate) fn next_action(&self, id: NodeId, now: Millis) -> NextAction {
        let (Some(rec), Some(rt)) = (self.record(id), self.slots.get(&id)) else {
            return NextAction::None;
        };
        let Some(task) = rec
            .task
            .as_ref()
            .filter(|t| t.state == Some(TaskState::Unreachable))
        else {
            return NextAction::None;
        };
        let Some(since) = rt.unreachable_since else {
            return NextAction::None;
        };
        let wait = |why| NextAction::WaitOperator {
            host: task.host.clone(),
            why,
        };
        if self.config.fencing == Fencing::None {
            return wait(OperatorWait::FencingOff);
        }
        match self.fresh_es(now) {
            None => wait(OperatorWait::NoEsView),
            Some(EsView::NoMaster { why }) => wait(OperatorWait::NoEsMaster(why.clone())),
            Some(EsView::Master { master, .. }) => match rt.es_absent_since {
                None => NextAction::EsStillSeesIt {
                    master: master.clone(),
                },
                Some(absent) => NextAction::ReplaceAt {
                    at: since
                        .max(absent)
                        .plus(self.config.unreachable_replace_after_ms),
                },
            },
        }
    }

    /// Replaces node `id` now if storage fencing allows it, else arms the timer for when it might.
    pub(crate) fn fence_check(&mut self, id: NodeId, now: Millis) {
        if let NextAction::ReplaceAt { at } = self.next_action(id, now) {
            if at <= now {
                self.fence_replace(id, now);
            } else {
                self.timers.insert((at, Timer::Fence(id)));
            }
        }
    }

    /// Drops the UNREACHABLE task of node `id` (asked to die, killed wherever it shows up) and lets the
    /// node be placed again; its next prepare must take the volumes over.
    fn fence_replace(&mut self, id: NodeId, now: Millis) {
        let Some(mut rec) = self.record(id).cloned() else {
            return;
        };
        let Some(old) = rec.task.take() else {
            return;
        };
        // Best effort: the master cannot reach the agent (it answers as by reconciliation); the kill
        // that counts is the one sent when the task shows up again.
        self.mesos(MesosCommand::Kill {
            task_id: old.task_id.clone(),
            agent_id: Some(old.agent_id.clone()),
        });
        self.tasks.remove(&old.task_id);
        if let Some(r) = self.recon.as_mut() {
            r.remaining.remove(&old.task_id);
        }
        self.fenced_tasks.insert(
            old.task_id.clone(),
            FencedTask {
                node: id,
                agent_id: old.agent_id.clone(),
                host: old.host.clone(),
            },
        );
        rec.fenced = true;
        // A sidecar mount on the dead agent cannot be released; the takeover supersedes it.
        if rec.mount_host.as_ref() == Some(&old.host) {
            rec.mount_host = None;
        }
        self.write_slot(rec);
        let fence = self.prepare_fence(id);
        if let Some(rt) = self.slots.get_mut(&id) {
            rt.unreachable_since = None;
            rt.es_absent_since = None;
            rt.replacing_fenced = true;
            rt.failures = 0;
            rt.healthy = None;
            rt.not_before = fence.max(now);
            rt.since = now;
        }
        self.watch(WatchEvent::FencedReplacement {
            node_id: id,
            task_id: old.task_id,
            host: old.host,
        });
        self.revive_wanted = true;
    }

    /// Whether a successful prepare of a storage-fenced replacement may launch: every volume of the node
    /// mounted by the sidecar, and attached here as far as the driver says (a driver that says nothing,
    /// like REX-Ray's Docker plugin, is taken at its word that a successful preempting Mount attached it).
    pub(crate) fn confirm_fenced_attachment(
        &self,
        id: NodeId,
        result: &CommandResult,
    ) -> Result<(), Reason> {
        let Some(rec) = self.record(id) else {
            return Ok(());
        };
        for v in &rec.volumes {
            let report = result.volumes.iter().find(|r| &r.name == v);
            match report {
                Some(r) if r.attached_here && r.driver_attachment.is_none() => {}
                Some(r)
                    if r.attached_here && r.driver_attachment == Some(DriverAttachment::Here) => {}
                other => {
                    return Err(Reason::AttachmentNotConfirmed {
                        volume: v.clone(),
                        seen: other.and_then(|r| r.driver_attachment),
                    });
                }
            }
        }
        Ok(())
    }

    /// A task left behind by a storage-fenced replacement reported `state`: a live one is killed (the
    /// shell's stray handling sends the KILL), an ended one is forgotten.
    pub(crate) fn fenced_task_seen(&mut self, task_id: &TaskId, state: TaskState) {
        if state.is_terminal() {
            self.fenced_tasks.remove(task_id);
        }
    }

    /// The agents an operator may mark gone for `target` (an agent id, or a host name): those whose
    /// tasks Tether knows UNREACHABLE. An agent with a task in any other live state is refused (it is
    /// up: marking it gone would kill what runs there for good), and so is one Tether knows nothing of.
    pub fn gone_agents(&self, target: &str) -> Result<Vec<(AgentId, Hostname)>, CoreError> {
        let refuse = |why: String| CoreError::NotUnreachable {
            target: target.to_owned(),
            why,
        };
        // (agent, host, unreachable) of every task that may be alive, fenced ones included.
        let mut known: Vec<(AgentId, Hostname, bool)> = self
            .persisted
            .slots
            .values()
            .filter_map(|r| r.task.as_ref().filter(|t| !t.is_terminal()))
            .map(|t| {
                (
                    t.agent_id.clone(),
                    t.host.clone(),
                    t.state == Some(TaskState::Unreachable),
                )
            })
            .collect();
        known.extend(
            self.fenced_tasks
                .values()
                .map(|f| (f.agent_id.clone(), f.host.clone(), true)),
        );
        let active = |a: &AgentId| {
            known
                .iter()
                .any(|(k, _, unreachable)| k == a && !unreachable)
        };
        let by_agent = known.iter().any(|(a, _, _)| a.as_str() == target);
        let matching: Vec<&(AgentId, Hostname, bool)> = if by_agent {
            if let Some((a, _, _)) = known
                .iter()
                .find(|(a, _, _)| a.as_str() == target && active(a))
            {
                return Err(refuse(format!(
                    "agent {a} runs a task Tether does not know UNREACHABLE: it is up, and marking \
                     it gone is irreversible"
                )));
            }
            known
                .iter()
                .filter(|(a, _, _)| a.as_str() == target)
                .collect()
        } else {
            known
                .iter()
                .filter(|(a, h, _)| h.as_str() == target && !active(a))
                .collect()
        };
        if matching.is_empty() {
            let why = if known.iter().any(|(_, h, _)| h.as_str() == target) {
                "every agent Tether knows on this host runs a task it does not know UNREACHABLE: \
                 they are up, and marking an agent gone is irreversible"
            } else {
                "Tether knows no UNREACHABLE task there (it marks gone only agents whose tasks it \
                 knows UNREACHABLE)"
            };
            return Err(refuse(why.into()));
        }
        let mut agents: Vec<(AgentId, Hostname)> = matching
            .into_iter()
            .map(|(a, h, _)| (a.clone(), h.clone()))
            .collect();
        agents.sort();
        agents.dedup();
        Ok(agents)
    }
}
