//! Prometheus metrics of the scheduler, served as text on `GET /metrics`.
//!
//! Label values are small fixed sets (the core's decline [`ReasonKind`]s, not free text) so the series
//! count stays bounded however many offers arrive.

use std::sync::Arc;

use tether_core::ReasonKind;
use tether_core::domain::TaskState;
use tether_core::view::{NodePhase, NodeView};

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
        Metrics {
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
    }
}
