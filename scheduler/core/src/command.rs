//! What the core asks the shell to do, in order: Mesos calls, sidecar commands, durable writes, and events
//! for watchers. [`LaunchSpec`] is complete enough for the shell to build a TaskInfo for either
//! containerizer without asking the core anything else.

use crate::config::Containerizer;
use crate::domain::{DriverAttachment, TaskReason, TaskState};
use crate::ids::{AgentId, FrameworkId, GroupName, Hostname, NodeId, OfferId, TaskId, VolumeName};
use crate::state::StateWrite;
use serde::{Deserialize, Serialize};
use std::fmt;

/// One command for the shell. Executed strictly in the order polled; a `Persist` must be durable before
/// any later command is executed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Command {
    /// A call to the Mesos master.
    Mesos(MesosCommand),
    /// A command for the sidecar of `host`.
    Sidecar {
        /// The agent whose sidecar gets it.
        host: Hostname,
        /// The command.
        command: SidecarCommand,
    },
    /// A durable state change.
    Persist(StateWrite),
    /// An event for `WatchEvents` and the logs.
    Watch(WatchEvent),
    /// A call to the Elasticsearch cluster, made through any node that serves; its outcome comes back
    /// as `Core::handle_es_call_result` with the same `call_id`.
    Elasticsearch {
        /// Unique per scheduler process.
        call_id: u64,
        /// The call.
        call: EsCall,
    },
}

/// A call that changes what the Elasticsearch cluster does (its answer is only success or the error);
/// what it then does, the core learns from the next [`crate::domain::EsCluster`]. Every call is
/// idempotent, so the core sends one again after a restart or a failure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum EsCall {
    /// `PUT _nodes/<node_id>/shutdown {"type", "reason"[, "target_node_name"]}` (7.15+).
    PutShutdown {
        /// Elasticsearch's node id (not its name).
        node_id: String,
        /// `restart`, `remove` or `replace`.
        kind: crate::domain::ShutdownKind,
        /// Why, for whoever reads `GET _nodes/shutdown`.
        reason: String,
        /// With `replace`: the node that takes the shards.
        target_node_name: Option<String>,
    },
    /// `DELETE _nodes/<node_id>/shutdown` (a record that is not there counts as cleared).
    DeleteShutdown {
        /// Elasticsearch's node id.
        node_id: String,
    },
    /// `PUT _cluster/settings` with persistent `cluster.routing.allocation.enable` (`None`: `null`,
    /// back to the default `all`).
    SetAllocationEnable(Option<AllocationEnable>),
    /// `PUT _cluster/settings` with persistent `cluster.routing.allocation.exclude._name` set to these
    /// node names, comma-separated (empty: `null`). The whole list each time: the setting is one value.
    SetAllocationExclude {
        /// Node names whose shards move away.
        names: Vec<String>,
    },
    /// `POST _flush`.
    Flush,
    /// `POST _cluster/voting_config_exclusions?node_names=a,b`: answers once the nodes left the voting
    /// configuration (or fails on its timeout).
    AddVotingExclusions {
        /// Node names.
        node_names: Vec<String>,
    },
    /// `DELETE _cluster/voting_config_exclusions?wait_for_removal=false`: clears every exclusion.
    ClearVotingExclusions,
}

/// `cluster.routing.allocation.enable`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AllocationEnable {
    /// `all`.
    All,
    /// `primaries`: during a restart, replicas are not rebuilt elsewhere.
    Primaries,
    /// `new_primaries`.
    NewPrimaries,
    /// `none`.
    None,
}

impl AllocationEnable {
    /// The setting's value.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            AllocationEnable::All => "all",
            AllocationEnable::Primaries => "primaries",
            AllocationEnable::NewPrimaries => "new_primaries",
            AllocationEnable::None => "none",
        }
    }
}

impl fmt::Display for EsCall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EsCall::PutShutdown { node_id, kind, .. } => {
                write!(f, "PUT _nodes/{node_id}/shutdown ({})", kind.as_str())
            }
            EsCall::DeleteShutdown { node_id } => write!(f, "DELETE _nodes/{node_id}/shutdown"),
            EsCall::SetAllocationEnable(v) => write!(
                f,
                "cluster.routing.allocation.enable={}",
                v.map_or("null", AllocationEnable::as_str)
            ),
            EsCall::SetAllocationExclude { names } if names.is_empty() => {
                write!(f, "cluster.routing.allocation.exclude._name=null")
            }
            EsCall::SetAllocationExclude { names } => {
                write!(
                    f,
                    "cluster.routing.allocation.exclude._name={}",
                    names.join(",")
                )
            }
            EsCall::Flush => write!(f, "POST _flush"),
            EsCall::AddVotingExclusions { node_names } => write!(
                f,
                "POST _cluster/voting_config_exclusions?node_names={}",
                node_names.join(",")
            ),
            EsCall::ClearVotingExclusions => write!(f, "DELETE _cluster/voting_config_exclusions"),
        }
    }
}

/// Mesos scheduler calls.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum MesosCommand {
    /// ACCEPT with one LAUNCH.
    Accept {
        /// The offer.
        offer_id: OfferId,
        /// Its agent.
        agent_id: AgentId,
        /// The task to launch.
        launch: Box<LaunchSpec>,
        /// Filter for the unused remainder.
        refuse_seconds: f64,
    },
    /// DECLINE.
    Decline {
        /// Offers declined.
        offer_ids: Vec<OfferId>,
        /// Refuse filter.
        refuse_seconds: f64,
    },
    /// ACKNOWLEDGE an update that carried a uuid.
    Acknowledge {
        /// Agent of the update.
        agent_id: AgentId,
        /// Task of the update.
        task_id: TaskId,
        /// The uuid exactly as received.
        uuid: String,
    },
    /// RECONCILE; an empty list is implicit reconciliation.
    Reconcile {
        /// Tasks to reconcile explicitly.
        tasks: Vec<(TaskId, Option<AgentId>)>,
    },
    /// KILL.
    Kill {
        /// The task.
        task_id: TaskId,
        /// Its agent, when known.
        agent_id: Option<AgentId>,
    },
    /// ACCEPT_INVERSE_OFFERS: the agents of these inverse offers hold no Tether task (maintenance may go
    /// ahead).
    AcceptInverseOffers {
        /// The inverse offers.
        inverse_offer_ids: Vec<OfferId>,
        /// Not asked again for this long.
        refuse_seconds: f64,
    },
    /// DECLINE_INVERSE_OFFERS: a Tether node still runs on these agents (it is being moved, or cannot
    /// be moved safely).
    DeclineInverseOffers {
        /// The inverse offers.
        inverse_offer_ids: Vec<OfferId>,
        /// Not asked again for this long.
        refuse_seconds: f64,
    },
    /// SUPPRESS (all roles).
    Suppress,
    /// REVIVE (all roles).
    Revive,
}

/// Commands for a sidecar.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SidecarCommand {
    /// The answer to Hello, re-sent when the watch set changes (to sidecars without `watch_delta`).
    Welcome {
        /// Report interval asked of the sidecar.
        report_interval_ms: u64,
        /// Exact volume names to watch; `None` for a `watch_delta` sidecar, whose share follows as
        /// [`SidecarCommand::WatchDelta`].
        watch_names: Option<std::sync::Arc<Vec<VolumeName>>>,
    },
    /// Changes to the share of volumes a `watch_delta` sidecar observes.
    WatchDelta {
        /// Drop the whole share first (the first one after a Welcome).
        reset: bool,
        /// Volumes added, or whose urgency changed: (name, urgent: held or a launch is pending).
        add: Vec<(VolumeName, bool)>,
        /// Volumes removed from the share.
        remove: Vec<VolumeName>,
    },
    /// Attach a node's volumes on this agent.
    Prepare {
        /// Unique per scheduler process.
        command_id: u64,
        /// The node.
        node_id: NodeId,
        /// Its volumes.
        volumes: Vec<VolumeName>,
        /// Create volumes the driver does not know.
        create_missing: bool,
        /// `Create` options.
        create_options: Vec<(String, String)>,
        /// Give up after this long.
        deadline_ms: u64,
        /// Owner and mode for each volume's root (only sent to a sidecar declaring `volume_owner`).
        owner: Option<crate::config::VolumeOwner>,
        /// With security on: generate the node's key and answer with a CSR (sidecars declaring
        /// `node_identity` only).
        identity: Option<crate::domain::IdentityRequest>,
    },
    /// Install the node's signed certificate, the cluster CA and the password file beside the key the
    /// prepare generated. The core passes the CSR; the shell, which holds the cluster CA, signs it for
    /// exactly the names in `identity` and adds the CA and the password.
    InstallIdentity {
        /// Unique per scheduler process.
        command_id: u64,
        /// The Prepare whose key this identity is for (the sidecar refuses one it did not prepare).
        prepare_id: u64,
        /// The node.
        node_id: NodeId,
        /// Where the key is, and the names its certificate may carry.
        identity: crate::domain::IdentityRequest,
        /// The CSR the sidecar returned.
        csr_pem: String,
        /// Owner of the files.
        owner: Option<crate::config::VolumeOwner>,
    },
    /// Drop the sidecar's mounts of these volumes.
    Release {
        /// Unique per scheduler process.
        command_id: u64,
        /// The volumes.
        volumes: Vec<VolumeName>,
    },
}

/// One volume of a launch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LaunchVolume {
    /// Docker volume name.
    pub name: VolumeName,
    /// Mount point in the container.
    pub container_path: String,
    /// Volume driver (`None` with the `normal` strategy: the shell then uses a host path named like the volume).
    pub driver: Option<String>,
    /// Driver options (passed by the Mesos containerizer; the Docker containerizer ignores them).
    pub driver_options: Vec<(String, String)>,
}

/// Everything needed to build the TaskInfo of one node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LaunchSpec {
    /// The node.
    pub node_id: NodeId,
    /// The task id.
    pub task_id: TaskId,
    /// Task name (the Elasticsearch node name).
    pub name: String,
    /// Agent id (must equal the offer's).
    pub agent_id: AgentId,
    /// Agent host.
    pub host: Hostname,
    /// CPUs.
    pub cpus: f64,
    /// Memory, MB.
    pub mem_mb: f64,
    /// Disk, MB (0 with the external strategy: storage is external).
    pub disk_mb: f64,
    /// JVM heap, MB (already in `ES_JAVA_OPTS`).
    pub heap_mb: u64,
    /// Container image.
    pub image: String,
    /// Containerizer.
    pub containerizer: Containerizer,
    /// HTTP port (from the offer).
    pub http_port: u16,
    /// Transport port (from the offer).
    pub transport_port: u16,
    /// Volumes.
    pub volumes: Vec<LaunchVolume>,
    /// Environment, in order.
    pub env: Vec<(String, String)>,
    /// HTTP health check port.
    pub health_check_port: u16,
    /// HTTP health check path.
    pub health_check_path: String,
    /// The offer's role.
    pub role: String,
    /// The resources taken from the offer (the amounts above, ports included), each part with the
    /// reservation it was offered under.
    #[serde(default)]
    pub resources: Vec<crate::domain::ResourcePart>,
}

/// Environment variable names the core sets on every task.
pub mod env {
    /// The node id (the 2016 framework's variable).
    pub const NODE_ID: &str = "ELASTICSEARCH_NODE_ID";
    /// Elasticsearch node name.
    pub const NODE_NAME: &str = "node.name";
    /// Elasticsearch cluster name.
    pub const CLUSTER_NAME: &str = "cluster.name";
    /// HTTP port.
    pub const HTTP_PORT: &str = "http.port";
    /// Transport port.
    pub const TRANSPORT_PORT: &str = "transport.port";
    /// Address published to other nodes (the agent host).
    pub const PUBLISH_HOST: &str = "network.publish_host";
    /// Bind address.
    pub const BIND_HOST: &str = "network.host";
    /// Comma-separated `host:transport_port` of the other live nodes.
    pub const SEED_HOSTS: &str = "discovery.seed_hosts";
    /// Comma-separated node names, only while the cluster has never formed.
    pub const INITIAL_MASTER_NODES: &str = "cluster.initial_master_nodes";
    /// The node's roles, from its group (absent: Elasticsearch's default, every role).
    pub const NODE_ROLES: &str = "node.roles";
    /// Where Elasticsearch keeps its data: the data volume's container path.
    pub const PATH_DATA: &str = "path.data";
    /// Off only when the cluster runs without security (8.x turns it on by default).
    pub const SECURITY_ENABLED: &str = "xpack.security.enabled";
    /// The file holding the `elastic` user's password (never the password itself: TaskInfos are public).
    pub const PASSWORD_FILE: &str = "ELASTIC_PASSWORD_FILE";
    /// The agent's zone, for shard allocation awareness.
    pub const ZONE_ATTR: &str = "node.attr.zone";
    /// Spread copies of a shard across zones.
    pub const AWARENESS: &str = "cluster.routing.allocation.awareness.attributes";
    /// JVM options with the heap.
    pub const JAVA_OPTS: &str = "ES_JAVA_OPTS";
}

/// Why an offer was declined or a node could not be placed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Reason {
    /// No node waits for an offer.
    NothingPending,
    /// Not subscribed (offers from a stale stream).
    NotSubscribed,
    /// Too few cpus.
    Cpus {
        /// Offered.
        offered: f64,
        /// Needed.
        needed: f64,
    },
    /// Too little memory.
    Mem {
        /// Offered.
        offered: f64,
        /// Needed.
        needed: f64,
    },
    /// Too little disk (`normal` strategy).
    Disk {
        /// Offered.
        offered: f64,
        /// Needed.
        needed: f64,
    },
    /// Fewer than two ports.
    Ports,
    /// A port pinned by `--http-port`/`--transport-port` is not in the offer.
    PinnedPortNotOffered {
        /// `http` or `transport`.
        name: String,
        /// The pinned port.
        port: u16,
    },
    /// A Tether node already runs (or is being placed) on the agent.
    AgentBusy,
    /// The agent's machine is scheduled for Mesos maintenance (the offer carries `unavailability`).
    AgentUnderMaintenance,
    /// The node's agent is scheduled for maintenance, but the node is not moved away (yet): why.
    MaintenanceBlocked(String),
    /// `attr:UNIQUE` value already used by another node.
    ConstraintUnique {
        /// Attribute.
        attribute: String,
        /// Its value on this agent (`None`: the agent lacks it).
        value: Option<String>,
    },
    /// `attr:CLUSTER:value` mismatch.
    ConstraintEquals {
        /// Attribute.
        attribute: String,
        /// Wanted value.
        wanted: String,
        /// Value on the agent.
        found: Option<String>,
    },
    /// No sidecar has said hello for this host.
    SidecarMissing,
    /// The sidecar is disconnected.
    SidecarDisconnected,
    /// The sidecar's last report is too old (or it never reported).
    SidecarStale {
        /// Age of the last report, when there was one.
        age_ms: Option<u64>,
    },
    /// The node's task reported another cluster's UUID: it joined another cluster.
    ForeignCluster(String),
    /// The sidecar did not declare a feature this launch needs (an older sidecar would silently ignore it).
    SidecarLacksFeature(String),
    /// The volume driver is unhealthy.
    DriverUnhealthy(String),
    /// Not enough free attach slots.
    NoAttachSlots {
        /// In use.
        used: u32,
        /// Maximum.
        max: u32,
        /// Needed by one node.
        needed: u32,
    },
    /// A volume does not exist and auto-create is off.
    VolumeMissing(VolumeName),
    /// No sidecar has reported the volume yet and auto-create is off.
    VolumeNotReported(VolumeName),
    /// The volume lives in another zone than the agent (or no suitable offer came from its zone).
    VolumeZone {
        /// The volume.
        volume: VolumeName,
        /// Its zone.
        volume_zone: String,
        /// The zone of the agent that was refused (`None`: no suitable offer from the volume's zone).
        agent_zone: Option<String>,
    },
    /// The volume is held on another agent: attached by its live sidecar, host-local there, or a sidecar
    /// mount there not yet released.
    VolumeAttachedElsewhere {
        /// The volume.
        volume: VolumeName,
        /// Where it is attached.
        host: Hostname,
    },
    /// The node the rollout restarts waits (up to [`crate::rollout::PREFER_HOST_MS`]) for an offer from
    /// the agent it ran on; its volumes are not held anywhere.
    WaitingForPreviousAgent {
        /// The agent it ran on.
        host: Hostname,
    },
    /// The volumes of the node live in several zones.
    VolumesSplitAcrossZones,
    /// Every suitable offer went to a lower node id, or none was suitable.
    NoSuitableOffer,
    /// The offer was fine but no pending node could use it.
    Surplus,
    /// The node waits out a backoff.
    Backoff {
        /// Until when.
        until_ms: u64,
    },
    /// Just (re)started: waiting for sidecars to report before placing anything.
    StartupGrace {
        /// Until when.
        until_ms: u64,
    },
    /// The sidecar could not prepare the volumes.
    PrepareFailed(String),
    /// The held offer was rescinded, expired or lost with the subscription while preparing.
    OfferLost(String),
    /// The task ended.
    TaskEnded {
        /// Its final state.
        state: TaskState,
        /// Mesos reason.
        reason: Option<TaskReason>,
        /// Mesos message.
        message: Option<String>,
    },
    /// A storage-fenced replacement's prepare succeeded, but the driver does not say the volume is
    /// attached to the new agent: nothing is launched.
    AttachmentNotConfirmed {
        /// The volume.
        volume: VolumeName,
        /// What the driver said instead (`None`: the prepare reported nothing of the volume).
        seen: Option<DriverAttachment>,
    },
    /// A node that is not master-eligible waits until a master-eligible node was launched: it has no
    /// seed to discover the cluster through, and Elasticsearch's bootstrap checks refuse it without one.
    WaitingForMasters,
}

/// What kind of reason a [`Reason`] is, without its values: a small fixed set to count declines by (a
/// metric label) and to summarise a round of declines for watchers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ReasonKind {
    /// nothing pending
    NothingPending,
    /// not subscribed
    NotSubscribed,
    /// cpus
    Cpus,
    /// mem
    Mem,
    /// disk
    Disk,
    /// ports
    Ports,
    /// pinned port not offered
    PinnedPortNotOffered,
    /// agent busy
    AgentBusy,
    /// agent under maintenance
    AgentUnderMaintenance,
    /// maintenance move blocked
    MaintenanceBlocked,
    /// unique constraint
    ConstraintUnique,
    /// cluster constraint
    ConstraintEquals,
    /// sidecar missing
    SidecarMissing,
    /// sidecar disconnected
    SidecarDisconnected,
    /// sidecar stale
    SidecarStale,
    /// sidecar lacks a feature
    SidecarLacksFeature,
    /// joined another cluster
    ForeignCluster,
    /// driver unhealthy
    DriverUnhealthy,
    /// no attach slots
    NoAttachSlots,
    /// volume missing
    VolumeMissing,
    /// volume not reported
    VolumeNotReported,
    /// volume zone
    VolumeZone,
    /// volume attached elsewhere
    VolumeAttachedElsewhere,
    /// waiting for previous agent
    WaitingForPreviousAgent,
    /// volumes split across zones
    VolumesSplitAcrossZones,
    /// no suitable offer
    NoSuitableOffer,
    /// surplus
    Surplus,
    /// backoff
    Backoff,
    /// startup grace
    StartupGrace,
    /// prepare failed
    PrepareFailed,
    /// offer lost
    OfferLost,
    /// task ended
    TaskEnded,
    /// attachment not confirmed
    AttachmentNotConfirmed,
    /// waiting for masters
    WaitingForMasters,
}

impl ReasonKind {
    /// The words watchers read (`volume missing`), and the stable label metrics use (`volume_missing`).
    #[must_use]
    pub fn names(self) -> (&'static str, &'static str) {
        match self {
            ReasonKind::NothingPending => ("nothing pending", "nothing_pending"),
            ReasonKind::NotSubscribed => ("not subscribed", "not_subscribed"),
            ReasonKind::Cpus => ("cpus", "cpus"),
            ReasonKind::Mem => ("mem", "mem"),
            ReasonKind::Disk => ("disk", "disk"),
            ReasonKind::Ports => ("ports", "ports"),
            ReasonKind::PinnedPortNotOffered => {
                ("pinned port not offered", "pinned_port_not_offered")
            }
            ReasonKind::AgentBusy => ("agent busy", "agent_busy"),
            ReasonKind::AgentUnderMaintenance => {
                ("agent under maintenance", "agent_under_maintenance")
            }
            ReasonKind::MaintenanceBlocked => ("maintenance move blocked", "maintenance_blocked"),
            ReasonKind::ConstraintUnique => ("unique constraint", "unique_constraint"),
            ReasonKind::ConstraintEquals => ("cluster constraint", "cluster_constraint"),
            ReasonKind::SidecarMissing => ("sidecar missing", "sidecar_missing"),
            ReasonKind::SidecarDisconnected => ("sidecar disconnected", "sidecar_disconnected"),
            ReasonKind::SidecarStale => ("sidecar stale", "sidecar_stale"),
            ReasonKind::SidecarLacksFeature => ("sidecar lacks feature", "sidecar_lacks_feature"),
            ReasonKind::ForeignCluster => ("joined another cluster", "foreign_cluster"),
            ReasonKind::DriverUnhealthy => ("driver unhealthy", "driver_unhealthy"),
            ReasonKind::NoAttachSlots => ("no attach slots", "no_attach_slots"),
            ReasonKind::VolumeMissing => ("volume missing", "volume_missing"),
            ReasonKind::VolumeNotReported => ("volume not reported", "volume_not_reported"),
            ReasonKind::VolumeZone => ("volume zone", "volume_zone"),
            ReasonKind::VolumeAttachedElsewhere => {
                ("volume attached elsewhere", "volume_attached_elsewhere")
            }
            ReasonKind::WaitingForPreviousAgent => {
                ("waiting for previous agent", "waiting_for_previous_agent")
            }
            ReasonKind::VolumesSplitAcrossZones => {
                ("volumes split across zones", "volumes_split_across_zones")
            }
            ReasonKind::NoSuitableOffer => ("no suitable offer", "no_suitable_offer"),
            ReasonKind::Surplus => ("surplus", "surplus"),
            ReasonKind::Backoff => ("backoff", "backoff"),
            ReasonKind::StartupGrace => ("startup grace", "startup_grace"),
            ReasonKind::PrepareFailed => ("prepare failed", "prepare_failed"),
            ReasonKind::OfferLost => ("offer lost", "offer_lost"),
            ReasonKind::TaskEnded => ("task ended", "task_ended"),
            ReasonKind::AttachmentNotConfirmed => {
                ("attachment not confirmed", "attachment_not_confirmed")
            }
            ReasonKind::WaitingForMasters => ("waiting for masters", "waiting_for_masters"),
        }
    }

    /// The words watchers read (`volume missing`).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        self.names().0
    }

    /// The stable `snake_case` label for metrics (`volume_missing`).
    #[must_use]
    pub fn label(self) -> &'static str {
        self.names().1
    }
}

impl fmt::Display for ReasonKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Reason {
    /// The kind of this reason.
    #[must_use]
    pub fn kind(&self) -> ReasonKind {
        match self {
            Reason::NothingPending => ReasonKind::NothingPending,
            Reason::NotSubscribed => ReasonKind::NotSubscribed,
            Reason::Cpus { .. } => ReasonKind::Cpus,
            Reason::Mem { .. } => ReasonKind::Mem,
            Reason::Disk { .. } => ReasonKind::Disk,
            Reason::Ports => ReasonKind::Ports,
            Reason::PinnedPortNotOffered { .. } => ReasonKind::PinnedPortNotOffered,
            Reason::AgentBusy => ReasonKind::AgentBusy,
            Reason::AgentUnderMaintenance => ReasonKind::AgentUnderMaintenance,
            Reason::MaintenanceBlocked(_) => ReasonKind::MaintenanceBlocked,
            Reason::ConstraintUnique { .. } => ReasonKind::ConstraintUnique,
            Reason::ConstraintEquals { .. } => ReasonKind::ConstraintEquals,
            Reason::SidecarMissing => ReasonKind::SidecarMissing,
            Reason::SidecarDisconnected => ReasonKind::SidecarDisconnected,
            Reason::SidecarStale { .. } => ReasonKind::SidecarStale,
            Reason::SidecarLacksFeature(_) => ReasonKind::SidecarLacksFeature,
            Reason::ForeignCluster(_) => ReasonKind::ForeignCluster,
            Reason::DriverUnhealthy(_) => ReasonKind::DriverUnhealthy,
            Reason::NoAttachSlots { .. } => ReasonKind::NoAttachSlots,
            Reason::VolumeMissing(_) => ReasonKind::VolumeMissing,
            Reason::VolumeNotReported(_) => ReasonKind::VolumeNotReported,
            Reason::VolumeZone { .. } => ReasonKind::VolumeZone,
            Reason::VolumeAttachedElsewhere { .. } => ReasonKind::VolumeAttachedElsewhere,
            Reason::WaitingForPreviousAgent { .. } => ReasonKind::WaitingForPreviousAgent,
            Reason::VolumesSplitAcrossZones => ReasonKind::VolumesSplitAcrossZones,
            Reason::NoSuitableOffer => ReasonKind::NoSuitableOffer,
            Reason::Surplus => ReasonKind::Surplus,
            Reason::Backoff { .. } => ReasonKind::Backoff,
            Reason::StartupGrace { .. } => ReasonKind::StartupGrace,
            Reason::PrepareFailed(_) => ReasonKind::PrepareFailed,
            Reason::OfferLost(_) => ReasonKind::OfferLost,
            Reason::TaskEnded { .. } => ReasonKind::TaskEnded,
            Reason::AttachmentNotConfirmed { .. } => ReasonKind::AttachmentNotConfirmed,
            Reason::WaitingForMasters => ReasonKind::WaitingForMasters,
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::NothingPending => write!(f, "no node is waiting for an offer"),
            Reason::NotSubscribed => write!(f, "not subscribed"),
            Reason::Cpus { offered, needed } => write!(f, "cpus {offered} < {needed}"),
            Reason::Mem { offered, needed } => write!(f, "mem {offered} MB < {needed} MB"),
            Reason::Disk { offered, needed } => write!(f, "disk {offered} MB < {needed} MB"),
            Reason::Ports => write!(f, "fewer than two ports offered"),
            Reason::PinnedPortNotOffered { name, port } => write!(
                f,
                "{name} port {port} (--{name}-port) is not among the offered ports"
            ),
            Reason::AgentBusy => write!(f, "a Tether node already runs on this agent"),
            Reason::AgentUnderMaintenance => {
                write!(f, "the agent is scheduled for Mesos maintenance")
            }
            Reason::MaintenanceBlocked(why) => write!(
                f,
                "its agent is scheduled for Mesos maintenance; not moved away: {why}"
            ),
            Reason::ConstraintUnique { attribute, value } => match value {
                Some(v) => write!(f, "{attribute}:UNIQUE: {v} already used"),
                None => write!(f, "{attribute}:UNIQUE: agent has no {attribute}"),
            },
            Reason::ConstraintEquals {
                attribute,
                wanted,
                found,
            } => {
                write!(f, "{attribute}:CLUSTER:{wanted}: agent has {found:?}")
            }
            Reason::SidecarMissing => write!(f, "no tether-sidecar has connected from this agent"),
            Reason::SidecarDisconnected => write!(f, "the agent's tether-sidecar is disconnected"),
            Reason::SidecarStale { age_ms: Some(a) } => {
                write!(f, "the sidecar's last report is {a} ms old")
            }
            Reason::SidecarStale { age_ms: None } => write!(f, "the sidecar has not reported yet"),
            Reason::ForeignCluster(uuid) => write!(f, "joined another cluster (uuid {uuid})"),
            Reason::SidecarLacksFeature(feature) => write!(
                f,
                "the agent's tether-sidecar does not declare feature {feature:?} (upgrade it)"
            ),
            Reason::DriverUnhealthy(e) => write!(f, "volume driver unhealthy: {e}"),
            Reason::NoAttachSlots { used, max, needed } => {
                write!(f, "attach slots {used}/{max} used, {needed} needed")
            }
            Reason::VolumeMissing(v) => {
                write!(f, "volume {v} does not exist and auto-create is off")
            }
            Reason::VolumeNotReported(v) => write!(f, "no sidecar has reported volume {v}"),
            Reason::VolumeZone {
                volume,
                volume_zone,
                agent_zone: Some(a),
            } => {
                write!(
                    f,
                    "volume {volume} is in zone {volume_zone}, the agent in {a}"
                )
            }
            Reason::VolumeZone {
                volume,
                volume_zone,
                agent_zone: None,
            } => {
                write!(
                    f,
                    "no suitable offer from zone {volume_zone}, where volume {volume} lives"
                )
            }
            Reason::VolumeAttachedElsewhere { volume, host } => {
                write!(
                    f,
                    "volume {volume} is held on agent {host} (attached, host-local, or not yet released)"
                )
            }
            Reason::WaitingForPreviousAgent { host } => {
                write!(
                    f,
                    "restarted by the rollout: waits up to {} s for an offer from agent {host}, where it ran",
                    crate::rollout::PREFER_HOST_MS / 1000
                )
            }
            Reason::VolumesSplitAcrossZones => {
                write!(f, "the node's volumes are in different zones")
            }
            Reason::NoSuitableOffer => write!(f, "no suitable offer"),
            Reason::Surplus => write!(f, "no pending node could use this offer"),
            Reason::Backoff { until_ms } => write!(f, "backing off until {until_ms} ms"),
            Reason::StartupGrace { until_ms } => {
                write!(
                    f,
                    "waiting until {until_ms} ms for sidecars to report after start"
                )
            }
            Reason::PrepareFailed(e) => write!(f, "prepare failed: {e}"),
            Reason::OfferLost(why) => write!(f, "held offer lost: {why}"),
            Reason::TaskEnded {
                state,
                reason,
                message,
            } => {
                write!(f, "task ended {}", state.as_mesos())?;
                if let Some(r) = reason {
                    write!(f, " ({})", r.as_mesos())?;
                }
                if let Some(m) = message {
                    write!(f, ": {m}")?;
                }
                Ok(())
            }
            Reason::WaitingForMasters => f.write_str(
                "waiting for a master-eligible node to be launched (the seed this node discovers the cluster through)",
            ),
            Reason::AttachmentNotConfirmed { volume, seen } => {
                let seen = match seen {
                    None => "reported nothing of it",
                    Some(DriverAttachment::Here) => "says it is attached here",
                    Some(DriverAttachment::Available) => "says it is attached nowhere",
                    Some(DriverAttachment::Elsewhere) => "says it is attached to another agent",
                };
                write!(
                    f,
                    "volume {volume} mounted for a storage-fenced replacement, but the driver {seen}: not launched"
                )
            }
        }
    }
}

/// Events for the admin `WatchEvents` stream and the logs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum WatchEvent {
    /// Subscribed to the master.
    Subscribed {
        /// Framework id.
        framework_id: FrameworkId,
    },
    /// The subscription ended.
    Disconnected,
    /// A node was assigned an offer and its volumes are being prepared.
    Preparing {
        /// Node.
        node_id: NodeId,
        /// Agent host.
        host: Hostname,
    },
    /// A node's task was launched.
    Launched {
        /// Node.
        node_id: NodeId,
        /// Task.
        task_id: TaskId,
        /// Agent host.
        host: Hostname,
    },
    /// A node's task changed state.
    TaskState {
        /// Node.
        node_id: NodeId,
        /// Task.
        task_id: TaskId,
        /// New state.
        state: TaskState,
    },
    /// A node could not be placed this round, or its placement was abandoned.
    NodeWaiting {
        /// Node.
        node_id: NodeId,
        /// Why.
        reason: Reason,
    },
    /// Offers declined in one round, counted per kind of reason (sorted by the kind's words).
    OffersDeclined {
        /// (kind, count).
        by_reason: Vec<(ReasonKind, usize)>,
    },
    /// Desired count changed.
    Scaled {
        /// The group (`None`: the default group of a cluster without `--group`).
        group: Option<GroupName>,
        /// Before.
        from: u64,
        /// After.
        to: u64,
    },
    /// A replacement was requested.
    Replaced {
        /// Node.
        node_id: NodeId,
        /// With force.
        force: bool,
    },
    /// A node whose task stayed UNREACHABLE (and absent from Elasticsearch) is replaced; storage fences
    /// the old task, which is killed wherever it shows up.
    FencedReplacement {
        /// Node.
        node_id: NodeId,
        /// The UNREACHABLE task left behind.
        task_id: TaskId,
        /// Its agent's host.
        host: Hostname,
    },
    /// A task that no slot owns (or an old generation) reported a live state and is being killed.
    StrayTask {
        /// Task.
        task_id: TaskId,
        /// State reported.
        state: TaskState,
    },
    /// What Elasticsearch itself said about bootstrap: the cluster bootstrapped, a node joined another
    /// cluster, or the operator reset the bootstrap.
    Bootstrap {
        /// The node concerned, when one is.
        node_id: Option<NodeId>,
        /// What happened.
        message: String,
    },
    /// A node being removed safely (scale-down, replace) moved on a step, or a step is overdue.
    Removal {
        /// Node.
        node_id: NodeId,
        /// What happened, or what it waits for.
        message: String,
        /// The step did not finish within `--removal-step-timeout`: an operator should look.
        stalled: bool,
    },
    /// A rollout moved on, paused, or ended (`rollout.rs`).
    Rollout {
        /// The node concerned, when one is.
        node_id: Option<NodeId>,
        /// The rollout's state after it (`running|paused|done|aborted`).
        state: String,
        /// What happened.
        message: String,
    },
    /// An update could not be handled.
    Warning {
        /// What happened.
        message: String,
    },
}
