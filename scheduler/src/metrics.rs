//! Prometheus metrics of the scheduler, served as text on `GET /metrics`.
//!
//! Label values are small fixed sets (the core's decline [`ReasonKind`]s, not free text) so the series
//! count stays bounded however many offers arrive.

use std::sync::Arc;

use tether_core::ReasonKind;
use tether_core::domain::{EsCluster, EsHealth, TaskState};
use tether_core::view::{NodePhase, NodeView, VolumeView};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// The label of `tether_offers_declined_total`: [`ReasonKind::label`].
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: &'static str,
}

/// The labels of the per-volume gauges: the node id and the volume's name.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VolumeLabels {
    pub node: String,
    pub volume: String,
}

/// The label of the per-node gauges: the node id (`<group>-<id>` for a named group's node).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NodeLabel {
    pub node: String,
}

/// The label value naming a node: the default group's nodes keep their plain id.
fn node_label(group: &str, id: tether_core::ids::NodeId) -> String {
    if group == tether_core::ids::DEFAULT_GROUP {
        id.ordinal().to_string()
    } else {
        format!("{group}-{}", id.ordinal())
    }
}

/// The label of `tether_es_shards`: `active`, `relocating`, `initializing` or `unassigned`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ShardStateLabel {
    pub state: &'static str,
}

/// Every metric the scheduler exports.
#[derive(Debug, Clone)]
pub struct Metrics {
    pub offers_received: Counter,
    pub offers_declined: Family<ReasonLabel, Counter>,
    pub launches: Counter,
    pub relaunches: Counter,
    pub fenced_slots: Gauge,
    pub nodes_desired: Gauge,
    pub nodes_running: Gauge,
    pub sidecar_reports: Counter,
    pub sidecars_connected: Gauge,
    pub sidecar_replacements: Counter,
    pub sidecar_replacements_refused: Counter,
    pub state_write_seconds: Histogram,
    /// 1 while this instance leads (always 1 without ZooKeeper), 0 on a standby.
    pub leader: Gauge,
    /// 1 while the Mesos subscription is up.
    pub mesos_subscribed: Gauge,
    /// Size and free bytes of each node's volumes, as the sidecars last reported them.
    pub volume_size_bytes: Family<VolumeLabels, Gauge>,
    pub volume_free_bytes: Family<VolumeLabels, Gauge>,
    /// When each node's certificate expires (nodes with a task and a recorded expiry).
    pub node_certificate_expiry: Family<NodeLabel, Gauge>,
    /// The labels of the certificate series exported now.
    certificate_labels: Arc<std::sync::Mutex<std::collections::HashSet<NodeLabel>>>,
    /// The labels of the volume series exported now.
    volume_labels: Arc<std::sync::Mutex<std::collections::HashSet<VolumeLabels>>>,
    /// `GET /_cluster/health`: see [`crate::elasticsearch::health_gauge`].
    pub es_health: Gauge,
    /// `GET /_cluster/health`'s shard counts (no series while unknown).
    pub es_shards: Family<ShardStateLabel, Gauge>,
    /// Nodes the elected master lists (0 without one).
    pub es_nodes: Gauge,
    /// Nodes being removed safely, and those whose step is overdue.
    pub node_removals: Gauge,
    pub node_removals_stalled: Gauge,
    /// The rollout's state and the newest stored configuration generation.
    pub rollout_state: Gauge,
    pub config_generation: Gauge,
    pub registry: Arc<Registry>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("tether");
        let offers_received = Counter::default();
        registry.register(
            "offers_received",
            "Mesos offers received",
            offers_received.clone(),
        );
        let offers_declined = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "offers_declined",
            "Mesos offers declined, by reason",
            offers_declined.clone(),
        );
        let launches = Counter::default();
        registry.register("launches", "Tasks launched", launches.clone());
        let relaunches = Counter::default();
        registry.register(
            "relaunches",
            "Tasks launched for a node that had run before",
            relaunches.clone(),
        );
        let fenced_slots = Gauge::default();
        registry.register(
            "fenced_slots",
            "Nodes waiting for their last task to be known terminal before a relaunch",
            fenced_slots.clone(),
        );
        let nodes_desired = Gauge::default();
        registry.register(
            "nodes_desired",
            "Desired Elasticsearch nodes",
            nodes_desired.clone(),
        );
        let nodes_running = Gauge::default();
        registry.register(
            "nodes_running",
            "Elasticsearch nodes whose task is running",
            nodes_running.clone(),
        );
        let sidecar_reports = Counter::default();
        registry.register(
            "sidecar_reports",
            "Reports received from sidecars",
            sidecar_reports.clone(),
        );
        let sidecars_connected = Gauge::default();
        registry.register(
            "sidecars_connected",
            "Sidecar streams open",
            sidecars_connected.clone(),
        );
        let sidecar_replacements = Counter::default();
        registry.register(
            "sidecar_stream_replacements",
            "Sidecar streams that replaced their host's open stream (same credential)",
            sidecar_replacements.clone(),
        );
        let sidecar_replacements_refused = Counter::default();
        registry.register(
            "sidecar_stream_replacements_refused",
            "Sidecar streams refused because their host has a stream under another credential",
            sidecar_replacements_refused.clone(),
        );
        let state_write_seconds = Histogram::new(exponential_buckets(0.0001, 2.0, 16));
        registry.register(
            "state_write_seconds",
            "Latency of durable state-store writes",
            state_write_seconds.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 while this scheduler instance leads, 0 while it stands by",
            leader.clone(),
        );
        let mesos_subscribed = Gauge::default();
        registry.register(
            "mesos_subscribed",
            "1 while the leading scheduler is subscribed to a Mesos master, else 0",
            mesos_subscribed.clone(),
        );
        let volume_size_bytes = Family::<VolumeLabels, Gauge>::default();
        registry.register(
            "volume_size_bytes",
            "Size of a node's volume, as its sidecar last reported it",
            volume_size_bytes.clone(),
        );
        let volume_free_bytes = Family::<VolumeLabels, Gauge>::default();
        registry.register(
            "volume_free_bytes",
            "Free bytes of a node's volume, as its sidecar last reported it",
            volume_free_bytes.clone(),
        );
        let node_certificate_expiry = Family::<NodeLabel, Gauge>::default();
        registry.register(
            "node_certificate_expiry_timestamp_seconds",
            "When the certificate signed for a node's newest launch expires (Unix seconds); a running \
             node is restarted for a new one --es-cert-renew-before (30 days) earlier",
            node_certificate_expiry.clone(),
        );
        let es_health = Gauge::default();
        es_health.set(crate::elasticsearch::health_gauge(EsHealth::Unknown));
        let es_shards = Family::<ShardStateLabel, Gauge>::default();
        registry.register(
            "es_shards",
            "Shard copies by state, as GET /_cluster/health counts them (no series while unknown)",
            es_shards.clone(),
        );
        let es_nodes = Gauge::default();
        registry.register(
            "es_nodes",
            "Nodes Elasticsearch's elected master lists (0 without an elected master)",
            es_nodes.clone(),
        );
        let node_removals = Gauge::default();
        registry.register(
            "node_removals",
            "Nodes being removed safely (scale-down, replace): data moving away, voting exclusion, stop, clean-up",
            node_removals.clone(),
        );
        let node_removals_stalled = Gauge::default();
        registry.register(
            "node_removals_stalled",
            "Safe removals whose current step is overdue (--removal-step-timeout); never forced",
            node_removals_stalled.clone(),
        );
        let rollout_state = Gauge::default();
        registry.register(
            "rollout_state",
            "The rolling change (tetherctl update/restart): 0 idle, 1 running, 2 paused, 3 done, 4 aborted",
            rollout_state.clone(),
        );
        let config_generation = Gauge::default();
        registry.register(
            "config_generation",
            "The newest stored node configuration generation",
            config_generation.clone(),
        );
        registry.register(
            "es_health",
            "Elasticsearch cluster health (GET /_cluster/health): 0 green, 1 yellow, 2 red, \
             3 no elected master, -1 no running node answered",
            es_health.clone(),
        );
        Metrics {
            leader,
            mesos_subscribed,
            volume_size_bytes,
            volume_free_bytes,
            volume_labels: Arc::default(),
            node_certificate_expiry,
            certificate_labels: Arc::default(),
            es_health,
            es_shards,
            es_nodes,
            node_removals,
            node_removals_stalled,
            rollout_state,
            config_generation,
            offers_received,
            offers_declined,
            launches,
            relaunches,
            fenced_slots,
            nodes_desired,
            nodes_running,
            sidecar_reports,
            sidecars_connected,
            sidecar_replacements,
            sidecar_replacements_refused,
            state_write_seconds,
            registry: Arc::new(registry),
        }
    }

    /// Counts `n` offers declined for `kind` of reason.
    pub fn declined(&self, kind: ReasonKind, n: usize) {
        self.offers_declined
            .get_or_create(&ReasonLabel {
                reason: kind.label(),
            })
            .inc_by(n as u64);
    }

    /// Sets the node gauges from the core's view of the nodes.
    pub fn set_nodes(&self, nodes: &[NodeView], desired: u64) {
        let state = |n: &&NodeView| match n.phase {
            NodePhase::Task(s) => s,
            _ => None,
        };
        let running = nodes
            .iter()
            .filter(|n| state(n) == Some(TaskState::Running))
            .count();
        // Waiting for their task to be known terminal before a relaunch.
        let fenced = nodes
            .iter()
            .filter(|n| matches!(state(n), Some(TaskState::Unreachable | TaskState::Unknown)))
            .count();
        self.nodes_running.set(running as i64);
        self.fenced_slots.set(fenced as i64);
        self.nodes_desired.set(desired as i64);
        let removals = nodes.iter().filter_map(|n| n.removal.as_ref());
        let (all, stalled) = removals.fold((0, 0), |(a, s), r| (a + 1, s + i64::from(r.stalled)));
        self.node_removals.set(all);
        self.node_removals_stalled.set(stalled);
        // A scaled-down node's last certificate is of no concern.
        self.set_certificate_expiries(nodes.iter().filter_map(|n| {
            match n.phase {
                NodePhase::Task(_) => n
                    .certificate_not_after
                    .map(|at| (n.group.as_str(), n.node_id, at)),
                _ => None,
            }
        }));
    }

    /// Sets `tether_node_certificate_expiry_timestamp_seconds` to exactly these nodes'
    /// `(group, node, not_after_unix_s)`: the series of any other node go.
    pub fn set_certificate_expiries<'a>(
        &self,
        expiries: impl IntoIterator<Item = (&'a str, tether_core::ids::NodeId, u64)>,
    ) {
        let mut now = std::collections::HashSet::new();
        for (group, id, at) in expiries {
            let label = NodeLabel {
                node: node_label(group, id),
            };
            self.node_certificate_expiry
                .get_or_create(&label)
                .set(i64::try_from(at).unwrap_or(i64::MAX));
            now.insert(label);
        }
        let mut exported = self
            .certificate_labels
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for gone in exported.difference(&now) {
            self.node_certificate_expiry.remove(gone);
        }
        *exported = now;
    }

    /// Sets the rollout gauges (`None`: no rollout ever ran).
    pub fn set_rollout(&self, state: Option<tether_core::rollout::RolloutState>, generation: u64) {
        use tether_core::rollout::RolloutState;
        self.rollout_state.set(match state {
            None => 0,
            Some(RolloutState::Running) => 1,
            Some(RolloutState::Paused) => 2,
            Some(RolloutState::Done) => 3,
            Some(RolloutState::Aborted) => 4,
        });
        self.config_generation
            .set(i64::try_from(generation).unwrap_or(i64::MAX));
    }

    /// Sets the Elasticsearch gauges from what the poller observed.
    pub fn set_es(&self, c: &EsCluster) {
        self.es_health
            .set(crate::elasticsearch::health_gauge(c.health));
        let nodes = match &c.view {
            tether_core::domain::EsView::Master { nodes, .. } => nodes.len(),
            tether_core::domain::EsView::NoMaster { .. } => 0,
        };
        self.es_nodes.set(nodes as i64);
        let gauge = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        let states = ["active", "relocating", "initializing", "unassigned"];
        match c.shard_counts {
            Some(k) => {
                for (state, n) in
                    states
                        .into_iter()
                        .zip([k.active, k.relocating, k.initializing, k.unassigned])
                {
                    self.es_shards
                        .get_or_create(&ShardStateLabel { state })
                        .set(gauge(n));
                }
            }
            None => {
                for state in states {
                    self.es_shards.remove(&ShardStateLabel { state });
                }
            }
        }
    }

    /// Sets the per-volume gauges from the core's volume view: a volume no sidecar reported (or one
    /// whose node is gone) has no series. Only series that went away are removed (never all then
    /// re-added), so a scrape never sees a volume missing for a moment, which would restart an alert's
    /// `for` clock.
    pub fn set_volumes(&self, volumes: &[VolumeView]) {
        let mut now = std::collections::HashSet::with_capacity(volumes.len());
        for v in volumes {
            let (Some(size), Some(free)) = (v.size_bytes, v.free_bytes) else {
                continue;
            };
            let labels = VolumeLabels {
                node: node_label(&v.group, v.node_id),
                volume: v.name.as_str().to_owned(),
            };
            let gauge = |b: u64| i64::try_from(b).unwrap_or(i64::MAX);
            self.volume_size_bytes
                .get_or_create(&labels)
                .set(gauge(size));
            self.volume_free_bytes
                .get_or_create(&labels)
                .set(gauge(free));
            now.insert(labels);
        }
        let mut exported = self
            .volume_labels
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for gone in exported.difference(&now) {
            self.volume_size_bytes.remove(gone);
            self.volume_free_bytes.remove(gone);
        }
        *exported = now;
    }

    /// The text exposition of every metric.
    pub fn encode(&self) -> String {
        tether_telemetry::encode(&self.registry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_names_every_metric_with_its_labels() {
        let m = Metrics::new();
        m.declined(ReasonKind::VolumeMissing, 1);
        m.declined(ReasonKind::VolumesSplitAcrossZones, 2);
        m.state_write_seconds.observe(0.002);
        let text = m.encode();
        assert!(
            text.contains("tether_offers_declined_total{reason=\"volume_missing\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("tether_offers_declined_total{reason=\"volumes_split_across_zones\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("tether_state_write_seconds_count 1"),
            "{text}"
        );
        assert!(text.contains("tether_launches_total 0"), "{text}");
        assert!(text.contains("tether_es_health -1"), "{text}");
    }

    #[test]
    fn volume_gauges_follow_the_reports_and_drop_what_is_gone() {
        use tether_core::ids::{NodeId, VolumeName};
        let view = |name: &str, size, free| VolumeView {
            name: VolumeName::new(name).expect("name"),
            node_id: NodeId(1),
            group: "default".into(),
            exists: Some(true),
            size_bytes: size,
            free_bytes: free,
            zone: None,
            attached_to: Vec::new(),
            last_error: None,
        };
        let m = Metrics::new();
        m.set_volumes(&[
            view("es1data", Some(100), Some(10)),
            view("es1config", None, None),
        ]);
        let text = m.encode();
        assert!(
            text.contains(r#"tether_volume_size_bytes{node="1",volume="es1data"} 100"#)
                && text.contains(r#"tether_volume_free_bytes{node="1",volume="es1data"} 10"#),
            "{text}"
        );
        assert!(!text.contains("es1config"), "unreported: no series\n{text}");
        m.set_volumes(&[]);
        assert!(
            !m.encode().contains("es1data"),
            "a removed volume keeps no series"
        );
    }

    #[test]
    fn certificate_expiries_are_one_series_per_node_and_gone_nodes_keep_none() {
        use tether_core::ids::NodeId;
        let m = Metrics::new();
        m.set_certificate_expiries([
            ("default", NodeId(1), 1_900_000_000),
            ("hot", NodeId::in_group(1, 2), 1_900_000_100),
        ]);
        let text = m.encode();
        assert!(
            text.contains(
                r#"tether_node_certificate_expiry_timestamp_seconds{node="1"} 1900000000"#
            ) && text.contains(
                r#"tether_node_certificate_expiry_timestamp_seconds{node="hot-2"} 1900000100"#
            ),
            "{text}"
        );
        m.set_certificate_expiries([("default", NodeId(1), 1_900_000_000)]);
        assert!(!m.encode().contains("hot-2"), "{}", m.encode());
    }
}
