//! Node groups (`--group`): each group has its own Elasticsearch roles, resources, ids and volumes.
//!
//! A node's [`NodeId`] carries its group's index above its ordinal ([`NodeId::in_group`]); the default
//! group (a cluster without `--group`) is index 0, so its ids, names and volumes are those of a cluster
//! before groups existed, and every map keyed by `NodeId` keeps a group's nodes together. A named group's
//! index is persisted with it ([`GroupRecord`]) and never reused, so its nodes keep their volumes whatever
//! order the flags list the groups in.

use crate::alloc::IdAllocator;
use crate::config::{Config, GroupResources};
use crate::core::{Core, ScalePlan};
use crate::error::CoreError;
use crate::ids::{GroupName, Millis, NodeId, TaskId};
use crate::state::{GroupRecord, PersistedState};
use std::collections::BTreeMap;

/// One group as the core runs it.
#[derive(Debug, Clone)]
pub(crate) struct Group {
    /// `default` for index 0.
    pub(crate) name: GroupName,
    /// Roles and resources of its nodes.
    pub(crate) resources: GroupResources,
    /// Its allocated ids (ordinals from `first_id`, carrying the group's index).
    pub(crate) ids: IdAllocator,
}

/// Every group by index (0: the default group).
pub(crate) type GroupTable = BTreeMap<u16, Group>;

/// The group table for `config` and `state`, and the named groups `config` adds (to be written, with
/// their indexes and seed counts). Refuses a stored group that still wants nodes but is no longer
/// configured: its roles and resources would be guessed.
pub(crate) fn build(
    config: &Config,
    state: &PersistedState,
) -> Result<(GroupTable, Vec<(GroupName, GroupRecord)>), CoreError> {
    let group = |name: GroupName, index: u16| {
        let resources = config.resources_of(config.group_spec(&name));
        Group {
            name,
            resources,
            ids: IdAllocator::new(NodeId::in_group(index, config.first_id).0),
        }
    };
    let unconfigured = |name: &GroupName, desired: u64| {
        CoreError::InvalidConfig(format!(
            "the stored state wants {desired} node(s) in group {name}, which no --group names: add \
             --group {name}:{desired}[:roles=...] (the stored count wins over the flag's), or scale it to 0 \
             with `tetherctl scale --group {name} 0` before removing its flag"
        ))
    };
    let mut table = BTreeMap::new();
    let default = GroupName::default_group();
    if !config.groups.is_empty() && config.group_spec(&default).is_none() && state.desired > 0 {
        return Err(unconfigured(&default, state.desired));
    }
    table.insert(0, group(default, 0));
    for (name, rec) in &state.groups {
        if config.group_spec(name).is_none() && rec.desired > 0 {
            return Err(unconfigured(name, rec.desired));
        }
        table.insert(rec.index, group(name.clone(), rec.index));
    }
    let mut added = Vec::new();
    let mut next = state.groups.values().map(|r| r.index).max().unwrap_or(0);
    for spec in &config.groups {
        if spec.name.is_default() || state.groups.contains_key(&spec.name) {
            continue;
        }
        next = next.checked_add(1).ok_or_else(|| {
            CoreError::InvalidConfig("more than 65535 node groups were ever created".into())
        })?;
        table.insert(next, group(spec.name.clone(), next));
        added.push((
            spec.name.clone(),
            GroupRecord {
                index: next,
                desired: spec.count,
            },
        ));
    }
    Ok((table, added))
}

/// One group's line of `tetherctl status`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct GroupView {
    /// The group's name (`default` for a cluster without `--group`).
    pub name: String,
    /// Its desired node count.
    pub desired: u64,
    /// Its nodes with a RUNNING task.
    pub running: u64,
    /// Its nodes' `node.roles` (`None`: Elasticsearch's default, every role).
    pub roles: Option<Vec<String>>,
}

impl Core {
    /// The group of node `id` (`None` for the default group), as its names and volumes carry it.
    pub(crate) fn named_group(&self, id: NodeId) -> Option<&GroupName> {
        match id.group() {
            0 => None,
            g => self.groups.get(&g).map(|g| &g.name),
        }
    }

    /// The name of node `id`'s group (`default` for the default group).
    #[must_use]
    pub fn group_name(&self, id: NodeId) -> &str {
        self.groups
            .get(&id.group())
            .map_or(crate::ids::DEFAULT_GROUP, |g| g.name.as_str())
    }

    /// Whether node `id`'s group is master-eligible.
    pub(crate) fn master_eligible_node(&self, id: NodeId) -> bool {
        self.groups
            .get(&id.group())
            .is_none_or(|g| g.resources.master_eligible())
    }

    /// Whether some master-eligible node was ever launched (its address is a seed for the others).
    pub(crate) fn master_launched(&self) -> bool {
        self.groups
            .iter()
            .filter(|(_, g)| g.resources.master_eligible())
            .any(|(i, _)| {
                self.persisted
                    .slots
                    .range(NodeId::in_group(*i, 0)..=NodeId::in_group(*i, NodeId::MAX_ORDINAL))
                    .any(|(_, r)| !r.removed && r.task.is_some())
            })
    }

    /// The roles and resources of node `id`: its group's roles and disk, and the cpus, mem and heap of
    /// the stored configuration it launches with.
    pub(crate) fn resources(&self, id: NodeId) -> GroupResources {
        let mut r = self
            .groups
            .get(&id.group())
            .map_or_else(|| self.config.resources_of(None), |g| g.resources.clone());
        if self.persisted.node_config.is_some() {
            let node = self.node_config(id);
            r.cpus = node.cpus;
            r.mem_mb = node.mem_mb;
            r.heap_mb = node.heap_mb;
        }
        r
    }

    /// The Elasticsearch node name of node `id`.
    #[must_use]
    pub fn node_name(&self, id: NodeId) -> String {
        self.config.group_node_name(self.named_group(id), id)
    }

    /// The task id of generation `generation` of node `id`.
    pub(crate) fn task_id_of(&self, id: NodeId, generation: u64) -> Result<TaskId, CoreError> {
        self.config
            .group_task_id(self.named_group(id), id, generation)
    }

    /// The node of `group` with id `ordinal` (what an operator names), if the group exists.
    pub fn node_in_group(&self, group: &str, ordinal: u64) -> Result<NodeId, CoreError> {
        let index = self.group_index(group)?;
        Ok(NodeId::in_group(index, ordinal.min(NodeId::MAX_ORDINAL)))
    }

    /// The desired count of `group`.
    pub fn group_desired(&self, group: &str) -> Result<u64, CoreError> {
        Ok(self.desired_of(self.group_index(group)?))
    }

    fn group_index(&self, group: &str) -> Result<u16, CoreError> {
        self.groups
            .iter()
            .find(|(_, g)| g.name.as_str() == group)
            .map(|(i, _)| *i)
            .ok_or_else(|| {
                CoreError::Refused(format!(
                    "there is no node group {group:?} (groups: {})",
                    self.groups
                        .values()
                        .map(|g| g.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })
    }

    /// The allocator of the group with index `index`.
    pub(crate) fn group_ids_mut(&mut self, index: u16) -> Option<&mut crate::alloc::IdAllocator> {
        self.groups.get_mut(&index).map(|g| &mut g.ids)
    }

    /// The desired count of the group with index `index`.
    pub(crate) fn desired_of(&self, index: u16) -> u64 {
        match index {
            0 => self.persisted.desired,
            _ => self
                .persisted
                .groups
                .values()
                .find(|r| r.index == index)
                .map_or(0, |r| r.desired),
        }
    }

    /// The desired count of every group together.
    #[must_use]
    pub fn desired_total(&self) -> u64 {
        self.groups.keys().map(|i| self.desired_of(*i)).sum()
    }

    /// Every group: desired and running counts.
    #[must_use]
    pub fn group_views(&self) -> Vec<GroupView> {
        self.groups
            .iter()
            .filter(|(i, g)| {
                // The default group of a cluster that only has named groups is not shown once empty.
                **i != 0
                    || self.config.groups.is_empty()
                    || self.desired_of(0) > 0
                    || !g.ids.is_empty()
            })
            .map(|(i, g)| {
                let running = self
                    .persisted
                    .slots
                    .range(NodeId::in_group(*i, 0)..=NodeId::in_group(*i, NodeId::MAX_ORDINAL))
                    .filter(|(_, r)| !r.removed && !self.in_foreign_cluster(r.node_id))
                    .filter(|(_, r)| {
                        r.task
                            .as_ref()
                            .is_some_and(|t| t.state == Some(crate::domain::TaskState::Running))
                    })
                    .count() as u64;
                GroupView {
                    name: g.name.to_string(),
                    desired: self.desired_of(*i),
                    running,
                    roles: g.resources.roles.clone(),
                }
            })
            .collect()
    }

    /// The master-eligible nodes named in `cluster.initial_master_nodes`: the lowest (up to three)
    /// allocated ids of the master-eligible groups, in group order, the same list on every node.
    pub(crate) fn bootstrap_masters(&self) -> Vec<NodeId> {
        self.groups
            .values()
            .filter(|g| g.resources.master_eligible())
            .flat_map(|g| g.ids.iter())
            .take(3)
            .collect()
    }

    /// Sets the desired node count of group `group` (`default` for the nodes of no group); as
    /// [`Core::handle_scale_with`] within the group: its lowest free ids up, its highest ids down.
    pub fn handle_scale_group(
        &mut self,
        group: &str,
        n: u64,
        allow_data_loss: bool,
        now: Millis,
    ) -> Result<ScalePlan, CoreError> {
        let index = self.group_index(group)?;
        let configured = self.groups.get(&index).is_some_and(|g| {
            self.config.groups.is_empty() || self.config.group_spec(&g.name).is_some()
        });
        if n > 0 && !configured {
            return Err(CoreError::Refused(format!(
                "group {group} has no --group flag: its roles and resources are unknown; add \
                 --group {group}:{n}[:roles=...] and restart the scheduler"
            )));
        }
        self.scale_group(index, n, allow_data_loss, now)
    }
}
