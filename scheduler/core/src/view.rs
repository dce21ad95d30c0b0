//! Read-only views for the admin API: nodes, agents, volumes and a cluster summary. Built on demand from
//! the core's state; nothing here changes it.

use crate::command::Reason;
use crate::config::Strategy;
use crate::core::Core;
use crate::domain::TaskState;
use crate::ids::{AgentId, Hostname, Millis, NodeId, TaskId, VolumeName};
use serde::{Deserialize, Serialize};

/// Where a node is in its life.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodePhase {
    /// Waiting for an offer (possibly backing off).
    Pending,
    /// An offer is held while the sidecar prepares the volumes.
    Preparing,
    /// Launched; the last known Mesos state (`None`: no update yet, or restored and not reconciled).
    Task(Option<TaskState>),
    /// Scaled down; the task (if any) is being killed; volumes kept.
    Stopping,
    /// Scaled down, no live task; volumes kept.
    Stopped,
}

/// What Tether will do about a node whose task is UNREACHABLE.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum NextAction {
    /// Nothing to do (the task is not UNREACHABLE).
    None,
    /// Only an operator ends the wait, by marking the agent of `host` gone.
    WaitOperator {
        /// The UNREACHABLE task's host.
        host: Hostname,
        /// Why nothing is automatic.
        why: OperatorWait,
    },
    /// Replaced at this time, storage-fenced (unless the task or Elasticsearch say otherwise first).
    ReplaceAt {
        /// When.
        at: Millis,
    },
    /// Elasticsearch's elected master still lists the node: it is left alone.
    EsStillSeesIt {
        /// The elected master's node name.
        master: String,
    },
}

/// Why an UNREACHABLE node waits for an operator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum OperatorWait {
    /// Fencing is `none`.
    FencingOff,
    /// No recent answer from Elasticsearch.
    NoEsView,
    /// No Elasticsearch master answers (what the nodes said).
    NoEsMaster(String),
}

/// One node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeView {
    /// Node id.
    pub node_id: NodeId,
    /// The node's group (`default` for the nodes of no `--group`); `node_id.ordinal()` is its id there.
    pub group: String,
    /// Phase.
    pub phase: NodePhase,
    /// Current (or last) task.
    pub task_id: Option<TaskId>,
    /// Agent of the task or of the held offer.
    pub agent_id: Option<AgentId>,
    /// Host of the task or of the held offer.
    pub host: Option<Hostname>,
    /// (HTTP, transport) ports.
    pub ports: Option<(u16, u16)>,
    /// Volumes.
    pub volumes: Vec<VolumeName>,
    /// Health of the task.
    pub healthy: Option<bool>,
    /// The last reason it waited or ended.
    pub last_reason: Option<String>,
    /// Since when it is in this state (this process's clock).
    pub since: Millis,
    /// Placement not before (backoff).
    pub not_before: Millis,
    /// Replacement was forced.
    pub forced: bool,
    /// The cluster UUID its task reported in `GET /` (`None`: not yet, or none).
    pub cluster_uuid: Option<String>,
    /// It reported another cluster's UUID: it joined another cluster and does not count as running.
    pub foreign_cluster: bool,
    /// Since when its task is UNREACHABLE (this process's clock).
    pub unreachable_since: Option<Millis>,
    /// What Tether will do about it.
    pub next_action: NextAction,
    /// Elasticsearch's elected master lists it (in the last recent observation).
    pub es_joined: bool,
    /// Shard copies it holds, as `_cat/shards` last said (`None`: unknown).
    pub shards: Option<u64>,
    /// Its safe removal in progress (scale-down, replace).
    pub removal: Option<crate::removal::RemovalView>,
    /// The stored configuration generation it runs (or launches with next).
    pub config_generation: u64,
    /// When the certificate signed for its newest launch expires (Unix seconds; `None`: none recorded,
    /// security off or a launch by an older scheduler).
    pub certificate_not_after: Option<u64>,
}

impl NodeView {
    /// Part of the Elasticsearch cluster, as far as the scheduler knows: its task runs and its last
    /// `GET /` named the cluster's UUID (not `_na_`, not another cluster's). A node that lost its master
    /// still names the UUID; a task that was replaced or restarted has not answered yet.
    #[must_use]
    pub fn joined(&self) -> bool {
        self.phase == NodePhase::Task(Some(TaskState::Running))
            && self.cluster_uuid.is_some()
            && !self.foreign_cluster
    }
}

/// One agent (as seen through its sidecar and offers).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentView {
    /// Host name.
    pub host: Hostname,
    /// Agent id, when known.
    pub agent_id: Option<AgentId>,
    /// The sidecar's stream is open.
    pub sidecar_connected: bool,
    /// The sidecar reported recently enough.
    pub sidecar_fresh: bool,
    /// Last report.
    pub last_report_at: Option<Millis>,
    /// The driver answered the sidecar's last call, and that report is fresh: a sidecar stuck on a hung
    /// driver stops reporting, and its last word must not keep saying "ok".
    pub driver_healthy: bool,
    /// Driver latency, µs.
    pub driver_latency_micros: u64,
    /// The driver's last error as the sidecar reported it, or why its health is unknown (no fresh
    /// report).
    pub driver_error: Option<String>,
    /// Zone.
    pub zone: Option<String>,
    /// Attach slots used.
    pub attachments_used: u32,
    /// Attach slots max (`None`: unlimited).
    pub attachments_max: Option<u32>,
    /// Volumes the sidecar reports.
    pub volumes_seen: Vec<VolumeName>,
    /// Why its last offer was declined.
    pub last_decline: Option<Reason>,
    /// Volumes its sidecar is assigned to observe (the whole watch set for a sidecar without
    /// `watch_delta`; 0 when disconnected).
    pub observes: u32,
    /// Mesos scheduled the agent's machine for maintenance: its window, whether it drains, and the
    /// nodes still on it.
    pub maintenance: Option<crate::maintenance::MaintenanceView>,
}

/// One volume of a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeView {
    /// Name.
    pub name: VolumeName,
    /// Owning node.
    pub node_id: NodeId,
    /// The owning node's group.
    pub group: String,
    /// Exists per some sidecar (`None`: no sidecar reported it).
    pub exists: Option<bool>,
    /// Size in bytes.
    pub size_bytes: Option<u64>,
    /// Free bytes.
    pub free_bytes: Option<u64>,
    /// Zone.
    pub zone: Option<String>,
    /// Hosts whose sidecar holds a mount.
    pub attached_to: Vec<Hostname>,
    /// Last driver error.
    pub last_error: Option<String>,
}

/// The cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterView {
    /// Framework id.
    pub framework_id: Option<String>,
    /// Subscribed since (None: not subscribed).
    pub subscribed_since: Option<Millis>,
    /// Desired node count, every group's together.
    pub desired: u64,
    /// Nodes with a RUNNING task.
    pub running: u64,
    /// `normal` or `external`.
    pub strategy: String,
    /// Offers suppressed.
    pub suppressed: bool,
    /// Explicit reconciliation running since.
    pub reconciling_since: Option<Millis>,
    /// The UUID the cluster bootstrapped with (`None` before bootstrap).
    pub cluster_uuid: Option<String>,
    /// `off`, `transport` or `full`.
    pub security: String,
    /// Elasticsearch's health (`Unknown` without a recent answer).
    pub health: crate::domain::EsHealth,
    /// Its shard counts, when known.
    pub shard_counts: Option<crate::domain::ShardCounts>,
    /// The elected master's node name, when one answered.
    pub es_master: Option<String>,
    /// Desired and running counts per node group.
    pub groups: Vec<crate::groups::GroupView>,
}

impl Core {
    /// Every node, including scaled-down slots whose volumes are kept.
    #[must_use]
    pub fn nodes(&self, now: Millis) -> Vec<NodeView> {
        let cluster = self.fresh_cluster(now);
        let shards = self.shards_by_node(now);
        self.persisted
            .slots
            .values()
            .map(|rec| {
                let rt = self.slots.get(&rec.node_id);
                let prep = rt.and_then(|r| r.preparing.as_ref());
                let live = Core::task_live(rec);
                let phase = if rec.removed {
                    if live {
                        NodePhase::Stopping
                    } else {
                        NodePhase::Stopped
                    }
                } else if prep.is_some() {
                    NodePhase::Preparing
                } else if live {
                    NodePhase::Task(rec.task.as_ref().and_then(|t| t.state))
                } else {
                    NodePhase::Pending
                };
                let (agent_id, host, ports) = match (prep, &rec.task) {
                    (Some(p), _) => (
                        Some(p.offer.agent_id.clone()),
                        Some(p.offer.hostname.clone()),
                        Some((p.http_port, p.transport_port)),
                    ),
                    (None, Some(t)) => (
                        Some(t.agent_id.clone()),
                        Some(t.host.clone()),
                        Some((t.http_port, t.transport_port)),
                    ),
                    _ => (None, None, None),
                };
                NodeView {
                    node_id: rec.node_id,
                    group: self.group_name(rec.node_id).to_owned(),
                    phase,
                    task_id: rec.task.as_ref().map(|t| t.task_id.clone()),
                    agent_id,
                    host,
                    ports,
                    volumes: rec.volumes.clone(),
                    healthy: rt.and_then(|r| r.healthy),
                    last_reason: rt
                        .and_then(|r| r.reason.as_ref().map(ToString::to_string))
                        .or_else(|| rec.last_reason.clone()),
                    since: rt.map_or(Millis(0), |r| r.since),
                    not_before: rt.map_or(Millis(0), |r| r.not_before),
                    forced: rec.forced,
                    cluster_uuid: rt.and_then(|r| r.cluster_uuid.clone()),
                    foreign_cluster: rt.is_some_and(|r| r.foreign_cluster.is_some()),
                    unreachable_since: rt.and_then(|r| r.unreachable_since).filter(|_| {
                        rec.task
                            .as_ref()
                            .is_some_and(|t| t.state == Some(TaskState::Unreachable))
                    }),
                    next_action: self.next_action(rec.node_id, now),
                    es_joined: cluster
                        .is_some_and(|c| live && c.lists(&self.node_name(rec.node_id))),
                    shards: shards
                        .as_ref()
                        .map(|m| m.get(&self.node_name(rec.node_id)).copied().unwrap_or(0)),
                    removal: self.removal_view(rec.node_id),
                    config_generation: self.node_generation(rec.node_id),
                    certificate_not_after: rec.cert_not_after,
                }
            })
            .collect()
    }

    /// Every agent that has a sidecar or sent an offer.
    #[must_use]
    pub fn agents(&self, now: Millis) -> Vec<AgentView> {
        let mut hosts: std::collections::BTreeSet<Hostname> =
            self.sidecars.keys().cloned().collect();
        hosts.extend(self.offered.declined().cloned());
        // Agents known only from offers (all their offers used, none declined) are listed too.
        hosts.extend(self.agent_hosts.values().cloned());
        hosts
            .into_iter()
            .map(|host| {
                let s = self.sidecars.get(&host);
                // An agent re-registered under a new id keeps its host: name the lowest id rather than
                // whichever the map's hash order finds first, so the view is the same every time.
                let agent_id = s.and_then(|s| s.agent_id.clone()).or_else(|| {
                    self.agent_hosts
                        .iter()
                        .filter(|(_, h)| **h == host)
                        .map(|(a, _)| a)
                        .min()
                        .cloned()
                });
                AgentView {
                    sidecar_connected: s.is_some_and(|s| s.connected),
                    sidecar_fresh: s.is_some_and(|s| self.sidecar_fresh(s, now)),
                    last_report_at: s.and_then(|s| s.last_report_at),
                    driver_healthy: s
                        .is_some_and(|s| s.driver_healthy && self.sidecar_fresh(s, now)),
                    driver_latency_micros: s.map_or(0, |s| s.driver_latency_micros),
                    driver_error: s.and_then(|s| self.driver_error(s, now)),
                    zone: s.and_then(|s| s.zone.clone()),
                    attachments_used: s.map_or(0, |s| s.attachments_used),
                    attachments_max: s.and_then(|s| s.max_attachments),
                    volumes_seen: s
                        .map(|s| s.volumes.keys().cloned().collect())
                        .unwrap_or_default(),
                    last_decline: self
                        .offered
                        .get(&host)
                        .and_then(|h| h.decline.as_ref())
                        .map(|(r, _)| r.clone()),
                    observes: u32::try_from(self.observes(&host)).unwrap_or(u32::MAX),
                    maintenance: agent_id.as_ref().and_then(|a| self.maintenance_of(a)),
                    agent_id,
                    host,
                }
            })
            .collect()
    }

    /// Every volume of every slot.
    #[must_use]
    pub fn volumes(&self) -> Vec<VolumeView> {
        self.persisted
            .slots
            .values()
            .flat_map(|rec| rec.volumes.iter().map(move |v| (rec.node_id, v)))
            .map(|(node_id, name)| {
                let agg = self.volumes.get(name);
                VolumeView {
                    name: name.clone(),
                    node_id,
                    group: self.group_name(node_id).to_owned(),
                    exists: agg.and_then(|a| {
                        if a.exists > 0 {
                            Some(true)
                        } else if a.missing > 0 {
                            Some(false)
                        } else {
                            None
                        }
                    }),
                    size_bytes: agg.and_then(|a| a.size_bytes),
                    free_bytes: agg.and_then(|a| a.free_bytes),
                    zone: agg.and_then(|a| a.zone.clone()),
                    attached_to: agg
                        .map(|a| a.attached_hosts.iter().cloned().collect())
                        .unwrap_or_default(),
                    last_error: agg.and_then(|a| a.last_error.clone()),
                }
            })
            .collect()
    }

    /// The cluster summary.
    #[must_use]
    pub fn cluster(&self) -> ClusterView {
        self.cluster_at(None)
    }

    /// The cluster summary, with what Elasticsearch said if it said it recently before `now` (`None`:
    /// whatever it said last).
    #[must_use]
    pub fn cluster_at(&self, now: Option<Millis>) -> ClusterView {
        let es = match now {
            Some(now) => self.fresh_cluster(now),
            None => self.es_cluster.as_ref().map(|(_, c)| c),
        };
        let running = self
            .persisted
            .slots
            .values()
            .filter(|r| !r.removed && !self.in_foreign_cluster(r.node_id))
            .filter(|r| {
                r.task
                    .as_ref()
                    .is_some_and(|t| t.state == Some(TaskState::Running))
            })
            .count() as u64;
        ClusterView {
            framework_id: self
                .persisted
                .framework_id
                .as_ref()
                .map(ToString::to_string),
            subscribed_since: self.subscribed_since,
            desired: self.desired_total(),
            running,
            strategy: match self.config.strategy {
                Strategy::Normal => "normal".into(),
                Strategy::External { .. } => "external".into(),
            },
            suppressed: self.suppressed,
            reconciling_since: self.reconciling_since(),
            cluster_uuid: self
                .persisted
                .bootstrap
                .as_ref()
                .map(|b| b.cluster_uuid.clone()),
            security: self.security().as_str().to_owned(),
            health: es.map_or(crate::domain::EsHealth::Unknown, |c| c.health),
            shard_counts: es.and_then(|c| c.shard_counts),
            es_master: es.and_then(|c| match &c.view {
                crate::domain::EsView::Master { master, .. } => Some(master.clone()),
                crate::domain::EsView::NoMaster { .. } => None,
            }),
            groups: self.group_views(),
        }
    }
}
