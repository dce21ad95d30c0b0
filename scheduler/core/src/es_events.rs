//! What Elasticsearch itself says, into the core: the `cluster_uuid` a running node reports in `GET /` is
//! the only proof the cluster bootstrapped (a container reaching TASK_RUNNING is not), and the operator's
//! bootstrap reset.

use crate::command::{Reason, WatchEvent};
use crate::config::Security;
use crate::core::Core;
use crate::domain::TaskState;
use crate::error::CoreError;
use crate::ids::{Millis, NodeId, TaskId};
use crate::state::{Bootstrap, StateWrite};

/// What `GET /` answers before a node has joined a bootstrapped cluster.
pub const NO_CLUSTER_UUID: &str = "_na_";

impl Core {
    /// The security the cluster runs with: what its bootstrap stored, else what the configuration asks.
    #[must_use]
    pub fn security(&self) -> Security {
        self.persisted
            .bootstrap
            .as_ref()
            .map_or(self.config.security, |b| b.security)
    }

    /// Task `task_id` of node `node_id` answered `GET /` with `cluster_uuid`. The first real UUID
    /// bootstraps the cluster (stored with the security it runs with); a node reporting another UUID
    /// joined another cluster: it is flagged and not counted as running.
    pub fn handle_es_root(
        &mut self,
        node_id: NodeId,
        task_id: &TaskId,
        cluster_uuid: &str,
        now: Millis,
    ) {
        let current = self
            .record(node_id)
            .and_then(|r| r.task.as_ref())
            .is_some_and(|t| &t.task_id == task_id && t.state == Some(TaskState::Running));
        if !current {
            return;
        }
        let reported = (!cluster_uuid.is_empty() && cluster_uuid != NO_CLUSTER_UUID)
            .then(|| cluster_uuid.to_owned());
        let stored = self
            .persisted
            .bootstrap
            .as_ref()
            .map(|b| b.cluster_uuid.clone());
        let foreign = match (&reported, &stored) {
            (Some(r), Some(s)) => (r != s).then(|| r.clone()),
            _ => None,
        };
        if let (Some(uuid), None) = (&reported, &stored) {
            let security = self.security();
            self.write(StateWrite::Bootstrapped(Bootstrap {
                cluster_uuid: uuid.clone(),
                security,
            }));
            self.watch(WatchEvent::Bootstrap {
                node_id: Some(node_id),
                message: format!(
                    "cluster bootstrapped: uuid {uuid}, security {}",
                    security.as_str()
                ),
            });
        }
        let newly_foreign = {
            let Some(rt) = self.slots.get_mut(&node_id) else {
                return;
            };
            let newly = foreign.is_some() && rt.foreign_cluster != foreign;
            rt.cluster_uuid = reported;
            rt.foreign_cluster = foreign.clone();
            if foreign.is_some() {
                rt.since = now;
            }
            newly
        };
        if let (true, Some(uuid), Some(ours)) = (newly_foreign, foreign, stored) {
            let message = format!(
                "node {node_id} joined another cluster (uuid {uuid}; this cluster is {ours})"
            );
            if let Some(rt) = self.slots.get_mut(&node_id) {
                rt.reason = Some(Reason::ForeignCluster(uuid));
            }
            self.watch(WatchEvent::Bootstrap {
                node_id: Some(node_id),
                message,
            });
        }
    }

    /// `tetherctl bootstrap reset`: forget that the cluster bootstrapped, so the next launches carry
    /// `cluster.initial_master_nodes` again. Refused while a node still reports a cluster UUID, or while
    /// the volumes of a master-eligible node may hold data (a new cluster there would orphan the old
    /// data), unless `new_cluster`.
    pub fn handle_bootstrap_reset(
        &mut self,
        new_cluster: bool,
        now: Millis,
    ) -> Result<(), CoreError> {
        let _ = now;
        if !new_cluster {
            let reporting: Vec<String> = self
                .slots
                .iter()
                .filter(|(_, rt)| rt.cluster_uuid.is_some())
                .map(|(id, _)| id.to_string())
                .collect();
            if !reporting.is_empty() {
                return Err(CoreError::Refused(format!(
                    "node(s) {} still report a cluster UUID; stop them first, or pass --yes-new-cluster",
                    reporting.join(", ")
                )));
            }
            let used: Vec<String> = self
                .master_eligible()
                .into_iter()
                .filter(|id| self.record(*id).is_some_and(|r| r.generation > 0))
                .map(|id| id.to_string())
                .collect();
            if !used.is_empty() {
                return Err(CoreError::Refused(format!(
                    "the volumes of master-eligible node(s) {} have run Elasticsearch and may hold the old \
                     cluster's data; forming a new cluster there would orphan it. Pass --yes-new-cluster to do it anyway",
                    used.join(", ")
                )));
            }
        }
        if self.persisted.cluster_formed || self.persisted.bootstrap.is_some() {
            self.write(StateWrite::BootstrapReset);
        }
        self.watch(WatchEvent::Bootstrap {
            node_id: None,
            message: "bootstrap reset: the next launches bootstrap a cluster".to_owned(),
        });
        Ok(())
    }

    /// The nodes named in `cluster.initial_master_nodes`: the lowest (up to three) allocated ids of the
    /// master-eligible groups, the same list on every node.
    pub(crate) fn master_eligible(&self) -> Vec<NodeId> {
        self.bootstrap_masters()
    }

    /// The node reported another cluster's UUID.
    #[must_use]
    pub fn in_foreign_cluster(&self, node_id: NodeId) -> bool {
        self.slots
            .get(&node_id)
            .is_some_and(|rt| rt.foreign_cluster.is_some())
    }
}
