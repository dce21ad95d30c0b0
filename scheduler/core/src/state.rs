//! The durable state: what must survive a scheduler kill -9 (framework id, desired count, node table).
//! The core owns one [`PersistedState`] and changes it only through [`StateWrite`] deltas, each of which it
//! also emits as `Command::Persist`; applying the emitted deltas in order to the state the core was built
//! from therefore reproduces exactly what the core believes.

use crate::config::Security;
use crate::domain::TaskState;
use crate::ids::{AgentId, FrameworkId, Hostname, NodeId, TaskId, VolumeName};
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
        }
    }
}
