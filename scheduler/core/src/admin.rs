//! Admin commands: scale (per group: lowest free ids up, highest ids down, volumes kept) and replace (refused while
//! the old task may live, unless forced).

use crate::command::{Command, MesosCommand, WatchEvent};
use crate::core::{Core, MAX_NODES, ScalePlan, new_runtime};
use crate::error::CoreError;
use crate::ids::{Hostname, Millis, NodeId, VolumeName};
use crate::state::{GroupRecord, RemovalKind, SlotRecord, StateWrite};
use std::collections::HashMap;

impl Core {
    // ----------------------------------------------------------------------------------------------
    // Admin
    // ----------------------------------------------------------------------------------------------

    /// Sets the desired node count of the default group (the nodes of a cluster without `--group`).
    pub fn handle_scale(&mut self, n: u64, now: Millis) -> Result<ScalePlan, CoreError> {
        self.scale_group(0, n, false, now)
    }

    /// [`Core::handle_scale`] with `allow_data_loss` (see [`Core::scale_group`]).
    pub fn handle_scale_with(
        &mut self,
        n: u64,
        allow_data_loss: bool,
        now: Millis,
    ) -> Result<ScalePlan, CoreError> {
        self.scale_group(0, n, allow_data_loss, now)
    }

    /// Sets the desired node count of the group with index `index`. Scale-up takes the group's lowest
    /// free ids (reusing the volumes of earlier scaled-down slots); scale-down stops its highest ids
    /// first and keeps their volumes. A node Elasticsearch knows is removed safely (`removal.rs`): its
    /// data moves away first, and removing the last copy of a shard (or the last master-eligible node)
    /// is refused unless `allow_data_loss` (which also lets an overdue data move go on). A scale to 0 is
    /// a full stop: every task of the group is killed at once, the volumes keep the data.
    pub(crate) fn scale_group(
        &mut self,
        index: u16,
        n: u64,
        allow_data_loss: bool,
        now: Millis,
    ) -> Result<ScalePlan, CoreError> {
        if n > MAX_NODES {
            return Err(CoreError::InvalidConfig(format!(
                "desired count {n} exceeds {MAX_NODES}"
            )));
        }
        let Some(group) = self.groups.get(&index) else {
            return Err(CoreError::Refused(format!(
                "there is no node group {index}"
            )));
        };
        let named = (index != 0).then(|| group.name.clone());
        let from = self.desired_of(index);
        let mut plan = ScalePlan {
            start: Vec::new(),
            stop: Vec::new(),
        };
        // Validate every new name before changing anything.
        let mut additions = Vec::new();
        let mut probe = group.ids.clone();
        while (probe.len() as u64) < n {
            let id = probe.allocate();
            if self.record(id).is_none() {
                let vols = self.config.group_volume_names(named.as_ref(), id)?;
                for v in &vols {
                    if let Some(owner) = self.volume_owner.get(v) {
                        return Err(CoreError::BadState(format!(
                            "volume {v} of node {id} already belongs to node {owner}"
                        )));
                    }
                }
                self.config.group_task_id(named.as_ref(), id, 1)?;
                additions.push((id, vols));
            }
        }
        let leaving: Vec<NodeId> = group
            .ids
            .iter()
            .filter(|id| id.ordinal() >= self.config.first_id.saturating_add(n))
            .filter(|id| self.known_to_es(*id, now))
            .collect();
        if n > 0 && !leaving.is_empty() {
            self.check_not_rolling(&leaving)?;
            self.check_removal(&leaving, n, allow_data_loss, now)?;
        }
        if allow_data_loss {
            // Repeating a scale-down with --allow-data-loss lets its overdue data moves go on.
            let draining: Vec<NodeId> = self
                .persisted
                .slots
                .values()
                .filter(|r| r.removal.as_ref().is_some_and(|m| !m.allow_data_loss))
                .map(|r| r.node_id)
                .collect();
            for id in draining {
                if let Some(mut rec) = self.record(id).cloned()
                    && let Some(m) = rec.removal.as_mut()
                {
                    m.allow_data_loss = true;
                    self.write_slot(rec);
                }
            }
        }
        if from != n {
            self.write(match &named {
                None => StateWrite::Desired(n),
                Some(name) => StateWrite::Group(name.clone(), GroupRecord { index, desired: n }),
            });
        }
        let mut new_vols: HashMap<NodeId, Vec<VolumeName>> = additions.into_iter().collect();
        while let Some(ids) = self
            .group_ids_mut(index)
            .filter(|ids| (ids.len() as u64) < n)
        {
            let id = ids.allocate();
            let group = self.group_key(id);
            let current = self.current_generation(&group);
            let rec = match self.record(id).cloned() {
                Some(mut rec) => {
                    // Back from a scale-down (or never launched): the group's newest configuration,
                    // unless it is still running on its old one (a cancelled removal).
                    if rec.removal.is_none() || !Core::task_live(&rec) {
                        rec.config_generation = current;
                    }
                    rec.removed = false;
                    rec
                }
                None => {
                    let volumes = new_vols.remove(&id).unwrap_or_default();
                    for v in &volumes {
                        self.volume_owner.insert(v.clone(), id);
                    }
                    SlotRecord {
                        node_id: id,
                        volumes,
                        generation: 0,
                        task: None,
                        removed: false,
                        forced: false,
                        fenced: false,
                        last_reason: None,
                        mount_host: None,
                        removal: None,
                        config_generation: current,
                        cert_not_after: None,
                    }
                }
            };
            let cancelled = rec.removal.is_some();
            self.write_slot(rec);
            if cancelled {
                // Wanted again while on its way out: what was set for it is cleared, it stays.
                self.cancel_removal(id, now);
            }
            let fence = self.prepare_fence(id);
            let rt = self.slots.entry(id).or_insert_with(|| new_runtime(now));
            rt.failures = 0;
            rt.not_before = fence.max(now);
            rt.since = now;
            self.revive_wanted = true;
            plan.start.push(id);
        }
        while let Some(ids) = self
            .group_ids_mut(index)
            .filter(|ids| (ids.len() as u64) > n)
        {
            let Some(id) = ids.highest() else { break };
            ids.release(id);
            let Some(mut rec) = self.record(id).cloned() else {
                continue;
            };
            rec.removed = true;
            self.write_slot(rec.clone());
            self.abandon_prepare(id, true);
            if n > 0 && leaving.contains(&id) {
                self.begin_removal(id, RemovalKind::ScaleDown, allow_data_loss, now);
            } else if let Some(t) = rec.task.as_ref().filter(|t| !t.is_terminal()) {
                self.mesos(MesosCommand::Kill {
                    task_id: t.task_id.clone(),
                    agent_id: Some(t.agent_id.clone()),
                });
            }
            plan.stop.push(id);
        }
        self.refresh_watch();
        if from != n {
            self.watch(WatchEvent::Scaled {
                group: named,
                from,
                to: n,
            });
            let hosts: Vec<Hostname> = self
                .sidecars
                .iter()
                .filter(|(h, s)| s.connected && !self.observes_by_delta(h))
                .map(|(h, _)| h.clone())
                .collect();
            // Sidecars observing by delta learn their new share from the next WatchDelta.
            for host in hosts {
                let command = self.welcome(&host);
                self.push(Command::Sidecar { host, command });
            }
        }
        self.flush_interest();
        Ok(plan)
    }

    /// Replaces a node: relaunches it (anywhere) as soon as possible. Without `force` this is refused
    /// while its task may be alive; with `force` the operator asserts the task is gone: it is killed
    /// (best effort) and the slot stops waiting for its terminal state.
    pub fn handle_replace(
        &mut self,
        id: NodeId,
        force: bool,
        now: Millis,
    ) -> Result<(), CoreError> {
        self.handle_replace_with(id, force, false, now)
    }

    /// [`Core::handle_replace`], where a RUNNING node is replaced safely without `force`: its data
    /// moves away first (`removal.rs`), it is stopped, and it is placed again once what was set for it
    /// is cleared. Removing the last copy of a shard that way is refused unless `allow_data_loss`.
    pub fn handle_replace_with(
        &mut self,
        id: NodeId,
        force: bool,
        allow_data_loss: bool,
        now: Millis,
    ) -> Result<(), CoreError> {
        let Some(rec) = self.record(id).cloned().filter(|r| !r.removed) else {
            return Err(CoreError::UnknownNode(id));
        };
        let running = rec
            .task
            .as_ref()
            .is_some_and(|t| t.state == Some(crate::domain::TaskState::Running));
        if !force && rec.removal.is_some() {
            return Err(CoreError::Refused(format!(
                "node {id} is already being removed; `tetherctl nodes` shows where it stands"
            )));
        }
        if !force && running {
            self.check_not_rolling(&[id])?;
            if self.known_to_es(id, now) {
                let remaining: u64 = self.groups.values().map(|g| g.ids.len() as u64).sum();
                self.check_removal(&[id], remaining, allow_data_loss, now)?;
            }
            self.begin_removal(id, RemovalKind::Replace, allow_data_loss, now);
            self.watch(WatchEvent::Replaced { node_id: id, force });
            self.flush_interest();
            return Ok(());
        }
        if force && rec.removal.is_some() {
            self.cancel_removal(id, now);
        }
        let rec = self.record(id).cloned().unwrap_or(rec);
        if let Some(t) = rec.task.as_ref().filter(|t| !t.is_terminal()) {
            if !force {
                return Err(CoreError::TaskMayBeAlive {
                    node: id,
                    task: t.task_id.clone(),
                    state: t
                        .state
                        .map_or("unknown".into(), |s| s.as_mesos().to_owned()),
                });
            }
            self.mesos(MesosCommand::Kill {
                task_id: t.task_id.clone(),
                agent_id: Some(t.agent_id.clone()),
            });
            self.tasks.remove(&t.task_id);
            if let Some(r) = self.recon.as_mut() {
                r.remaining.remove(&t.task_id);
            }
            let mut rec = rec.clone();
            rec.task = None;
            rec.forced = true;
            // The operator vouches that the old agent holds nothing any more (a stray mount there is
            // released when its sidecar reports it).
            rec.mount_host = None;
            self.write_slot(rec);
        }
        self.abandon_prepare(id, true);
        self.release_mount(id);
        let fence = self.prepare_fence(id);
        if let Some(rt) = self.slots.get_mut(&id) {
            rt.failures = 0;
            rt.not_before = fence.max(now);
            rt.healthy = None;
        }
        self.watch(WatchEvent::Replaced { node_id: id, force });
        self.revive_wanted = true;
        self.flush_interest();
        Ok(())
    }
}
