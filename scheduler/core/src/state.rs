//! The durable state: what must survive a scheduler kill -9 (framework id, desired count, node table).
//! The core owns one [`PersistedState`] and changes it only through [`StateWrite`] deltas, each of which it
//! also emits as `Command::Persist`; applying the emitted deltas in order to the state the core was built
//! from therefore reproduces exactly what the core believes.

use crate::config::Security;
use crate::domain::TaskState;
use crate::ids::{AgentId, FrameworkId, GroupName, Hostname, NodeId, TaskId, VolumeName};
pub use crate::nodeconfig::ConfigTable;
pub use crate::rollout::Rollout;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The last task launched for a slot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskRecord {
    /// Its id (`<framework>-<node>.<generation>`).
    pub task_id: TaskId,
    /// The agent it was launched on.
    pub agent_id: AgentId,
    /// That agent's host name.
    pub host: Hostname,
    /// HTTP port taken from the offer.
    pub http_port: u16,
    /// Transport port taken from the offer.
    pub transport_port: u16,
    /// The last state the core learnt; `None` before the first update. After a restart a non-terminal
    /// state is only a belief and is reconciled before anything relies on it.
    pub state: Option<TaskState>,
    /// The address the node publishes and others seed with (host name, or IP with `--use-ip-address`).
    #[serde(default)]
    pub publish_address: Option<String>,
}

impl TaskRecord {
    /// `address:transport_port`, as other nodes reach it.
    #[must_use]
    pub fn transport_address(&self) -> String {
        let host = self
            .publish_address
            .as_deref()
            .unwrap_or(self.host.as_str());
        format!("{host}:{}", self.transport_port)
    }
}

impl TaskRecord {
    /// Known not to run any more.
    #[must_use]
    pub fn is_terminal(&self) -> bool {
        self.state.is_some_and(TaskState::is_terminal)
    }
}

/// One node id and everything durable about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotRecord {
    /// The node id.
    pub node_id: NodeId,
    /// Its volumes (fixed for the life of the slot).
    pub volumes: Vec<VolumeName>,
    /// Generation of the newest task id handed out; the next launch uses `generation + 1`.
    pub generation: u64,
    /// The newest task, until a forced replacement drops it.
    pub task: Option<TaskRecord>,
    /// Scaled down: no task wanted, volumes kept for a later scale-up.
    pub removed: bool,
    /// An operator forced a replacement while the previous task was not known terminal.
    pub forced: bool,
    /// The previous task was UNREACHABLE and is fenced by storage: the replacement's prepare takes the
    /// volumes over, and the old task is killed wherever it shows up.
    #[serde(default)]
    pub fenced: bool,
    /// The last placement or task problem, for the admin API.
    pub last_reason: Option<String>,
    /// The sidecar of this agent may hold a mount of the node's volumes (written before the Prepare,
    /// cleared when the Release goes out). While set, the node can only be placed on that agent.
    #[serde(default)]
    pub mount_host: Option<Hostname>,
    /// A safe removal in progress (scale-down, replace): where it stands and what Tether set in
    /// Elasticsearch for it, so a restarted scheduler resumes it and clears what was set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub removal: Option<Removal>,
    /// The stored configuration generation its newest task was launched with (`nodeconfig.rs`); a
    /// slot written before configurations were stored ran the flags' configuration, generation 1.
    #[serde(default = "first_generation")]
    pub config_generation: u64,
    /// When the certificate the scheduler last signed for this node expires (Unix seconds, the exact
    /// `notAfter` written into it; security `transport`/`full` only). Signed for the newest launch
    /// just before it; `None` in a slot written before expiries were recorded, or with security off:
    /// such a node is never renewed (`renewal.rs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_not_after: Option<u64>,
}

fn first_generation() -> u64 {
    1
}

/// Why a node is being removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RemovalKind {
    /// Scaled down: not relaunched afterwards.
    ScaleDown,
    /// `tetherctl replace`: relaunched (anywhere, on its volumes) afterwards.
    Replace,
    /// Its agent is scheduled for Mesos maintenance (`maintenance.rs`): moved away as a replace is,
    /// relaunched on its volumes on an agent that is not under maintenance.
    Maintenance,
}

/// A step of a safe removal, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum RemovalStep {
    /// Its shards move to other nodes; waits until it holds none.
    MoveData,
    /// A master-eligible node leaves the voting configuration; waits for Elasticsearch's confirmation.
    ExcludeVoting,
    /// Its task is killed (with the kill grace period); waits for a terminal state.
    Stop,
    /// What was set in Elasticsearch for it is cleared (after it left the cluster).
    Clear,
}

/// One safe removal, durable (`SlotRecord::removal`). The flags say what *may* have been set in
/// Elasticsearch: each is written before its call goes out, so a crash never forgets what to clear.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Removal {
    /// Why.
    pub kind: RemovalKind,
    /// Where it stands.
    pub step: RemovalStep,
    /// The operator accepted losing the last copy of a shard (`--allow-data-loss`).
    pub allow_data_loss: bool,
    /// A node shutdown record was asked for this Elasticsearch node id.
    #[serde(default)]
    pub shutdown_node_id: Option<String>,
    /// Its name was put in `cluster.routing.allocation.exclude._name`.
    #[serde(default)]
    pub allocation_excluded: bool,
    /// A voting configuration exclusion was asked for it.
    #[serde(default)]
    pub voting_excluded: bool,
}

/// Everything the scheduler persists.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PersistedState {
    /// Framework id from the first SUBSCRIBED.
    pub framework_id: Option<FrameworkId>,
    /// Desired node count.
    pub desired: u64,
    /// A node reported a real cluster UUID: the cluster bootstrapped and no node may be given
    /// `cluster.initial_master_nodes` again.
    pub cluster_formed: bool,
    /// What bootstrapped: the cluster UUID and the security it runs with (`None` before bootstrap).
    #[serde(default)]
    pub bootstrap: Option<Bootstrap>,
    /// Node table, including scaled-down slots whose volumes are kept.
    pub slots: BTreeMap<NodeId, SlotRecord>,
    /// The named node groups (`--group`), each with the index its node ids carry and its desired count.
    /// The default group is not listed: its index is 0 and its count is `desired`, so a state written
    /// before groups existed is the default group unchanged (and is written back the same way).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub groups: BTreeMap<GroupName, GroupRecord>,
    /// The stored node configuration of every group (`tetherctl update`); absent in a state written
    /// before it existed, which the core seeds from the start-up flags as generation 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_config: Option<ConfigTable>,
    /// The rolling change in progress, or the last one (absent: none ever ran).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<Rollout>,
}

/// What is durable about one named group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupRecord {
    /// The index in its nodes' ids ([`NodeId::in_group`]); never 0 (the default group), never reused.
    pub index: u16,
    /// Desired node count of the group.
    pub desired: u64,
}

/// What a cluster's first bootstrap fixed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bootstrap {
    /// The `cluster_uuid` a node reported in `GET /`.
    pub cluster_uuid: String,
    /// The security decided at bootstrap (a later image change never flips it).
    pub security: Security,
}

/// One durable change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum StateWrite {
    /// The framework id.
    FrameworkId(FrameworkId),
    /// The desired node count.
    Desired(u64),
    /// The cluster formed once (written by versions that guessed it from TASK_RUNNING; read for old logs).
    ClusterFormed,
    /// A node reported the cluster's UUID for the first time.
    Bootstrapped(Bootstrap),
    /// The operator cleared the bootstrap (`tetherctl bootstrap reset`).
    BootstrapReset,
    /// Insert or replace a slot.
    Slot(SlotRecord),
    /// Forget a slot entirely (its volumes deleted).
    RemoveSlot(NodeId),
    /// Insert or replace a named group (its index and desired count).
    Group(GroupName, GroupRecord),
    /// Replace the stored node configuration.
    NodeConfig(ConfigTable),
    /// Replace (or, `None`, forget) the rollout.
    Rollout(Option<Rollout>),
}

impl PersistedState {
    /// Applies one delta.
    pub fn apply(&mut self, write: &StateWrite) {
        match write {
            StateWrite::FrameworkId(id) => self.framework_id = Some(id.clone()),
            StateWrite::Desired(n) => self.desired = *n,
            StateWrite::ClusterFormed => self.cluster_formed = true,
            StateWrite::Bootstrapped(b) => {
                self.cluster_formed = true;
                self.bootstrap = Some(b.clone());
            }
            StateWrite::BootstrapReset => {
                self.cluster_formed = false;
                self.bootstrap = None;
            }
            StateWrite::Slot(rec) => {
                self.slots.insert(rec.node_id, rec.clone());
            }
            StateWrite::RemoveSlot(id) => {
                self.slots.remove(id);
            }
            StateWrite::Group(name, rec) => {
                self.groups.insert(name.clone(), rec.clone());
            }
            StateWrite::NodeConfig(table) => self.node_config = Some(table.clone()),
            StateWrite::Rollout(r) => self.rollout = r.clone(),
        }
    }
}

impl PersistedState {
    /// The writes that rebuild this state in an empty store (a restore): applied in order to
    /// `PersistedState::default()` they give back `self`.
    #[must_use]
    pub fn writes(&self) -> Vec<StateWrite> {
        let mut writes = Vec::with_capacity(self.slots.len() + 3);
        if let Some(id) = &self.framework_id {
            writes.push(StateWrite::FrameworkId(id.clone()));
        }
        writes.push(StateWrite::Desired(self.desired));
        writes.extend(
            self.groups
                .iter()
                .map(|(name, rec)| StateWrite::Group(name.clone(), rec.clone())),
        );
        match &self.bootstrap {
            Some(b) => writes.push(StateWrite::Bootstrapped(b.clone())),
            None if self.cluster_formed => writes.push(StateWrite::ClusterFormed),
            None => {}
        }
        writes.extend(self.slots.values().cloned().map(StateWrite::Slot));
        if let Some(table) = &self.node_config {
            writes.push(StateWrite::NodeConfig(table.clone()));
        }
        if let Some(r) = &self.rollout {
            writes.push(StateWrite::Rollout(Some(r.clone())));
        }
        writes
    }

    /// The rules every state the core writes keeps, checked on a state from outside (a backup being
    /// restored) before anything is written: each slot under its own id, no volume of two nodes, no task
    /// id of two nodes, a bootstrap only on a formed cluster.
    pub fn check(&self) -> Result<(), String> {
        let mut indexes = BTreeMap::new();
        for (name, rec) in &self.groups {
            if rec.index == 0 || name.is_default() {
                return Err(format!(
                    "group {name} has index {}: index 0 and the name default are the default group's",
                    rec.index
                ));
            }
            if let Some(other) = indexes.insert(rec.index, name) {
                return Err(format!(
                    "groups {other} and {name} share index {}",
                    rec.index
                ));
            }
        }
        for id in self.slots.keys() {
            if id.group() != 0 && !indexes.contains_key(&id.group()) {
                return Err(format!(
                    "node {id} is of group index {}, which no group has",
                    id.group()
                ));
            }
        }
        let mut volumes = BTreeMap::new();
        let mut tasks = BTreeMap::new();
        for (id, rec) in &self.slots {
            if *id != rec.node_id {
                return Err(format!("slot {id} holds node {}", rec.node_id));
            }
            for v in &rec.volumes {
                if let Some(other) = volumes.insert(v.clone(), *id) {
                    return Err(format!("volume {v} belongs to nodes {other} and {id}"));
                }
            }
            if let Some(t) = &rec.task
                && let Some(other) = tasks.insert(t.task_id.clone(), *id)
            {
                return Err(format!(
                    "task {} belongs to nodes {other} and {id}",
                    t.task_id
                ));
            }
        }
        if self.bootstrap.is_some() && !self.cluster_formed {
            return Err("a bootstrap is recorded but the cluster is not marked formed".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::sample_state;

    #[test]
    fn writes_rebuild_the_state_in_an_empty_store() {
        let state = sample_state();
        let mut rebuilt = PersistedState::default();
        for w in state.writes() {
            rebuilt.apply(&w);
        }
        assert_eq!(rebuilt, state);
        assert_eq!(state.check(), Ok(()));
    }

    #[test]
    fn check_refuses_a_state_the_core_never_writes() {
        let good = sample_state();
        let mut moved = good.clone();
        let rec = moved.slots.values().next().cloned().expect("a slot");
        moved.slots.insert(NodeId(rec.node_id.0 + 100), rec);
        assert!(moved.check().unwrap_err().contains("holds node"));

        let mut shared = good.clone();
        let vol = shared.slots.values().next().expect("a slot").volumes[0].clone();
        shared.slots.values_mut().nth(1).expect("two slots").volumes[0] = vol;
        assert!(shared.check().unwrap_err().contains("belongs to nodes"));

        let mut unformed = good;
        unformed.cluster_formed = false;
        assert!(unformed.check().unwrap_err().contains("not marked formed"));
    }
}
