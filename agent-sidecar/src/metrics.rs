//! Prometheus metrics of the sidecar: latency and errors of every volume plugin call, by method.
//! Served on `--metrics-listen` (`GET /metrics`).

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::plugin::{CallObserver, Method};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabel {
    method: &'static str,
}

type HistogramFamily = Family<MethodLabel, Histogram, fn() -> Histogram>;

/// The sidecar's metrics; also the plugin client's call observer.
#[derive(Debug, Clone)]
pub struct SidecarMetrics {
    plugin_call_seconds: HistogramFamily,
    plugin_call_errors: Family<MethodLabel, Counter>,
    pub registry: Arc<Registry>,
}

fn latency_histogram() -> Histogram {
    // 100 µs to ~1.6 min: a healthy local call is sub-millisecond, an EBS attach takes tens of seconds.
    Histogram::new(exponential_buckets(0.0001, 2.0, 20))
}

impl SidecarMetrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("tether_sidecar");
        let plugin_call_seconds: HistogramFamily = Family::new_with_constructor(latency_histogram);
        registry.register(
            "plugin_call_seconds",
            "Latency of Docker volume plugin calls, by method",
            plugin_call_seconds.clone(),
        );
        let plugin_call_errors = Family::<MethodLabel, Counter>::default();
        registry.register(
            "plugin_call_errors",
            "Failed Docker volume plugin calls (any error, including the driver's own), by method",
            plugin_call_errors.clone(),
        );
        SidecarMetrics {
            plugin_call_seconds,
            plugin_call_errors,
            registry: Arc::new(registry),
        }
    }
}

impl Default for SidecarMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl CallObserver for SidecarMetrics {
    fn observe(&self, method: Method, elapsed: Duration, ok: bool) {
        let label = MethodLabel {
            method: method.name(),
        };
        self.plugin_call_seconds
            .get_or_create(&label)
            .observe(elapsed.as_secs_f64());
        if !ok {
            self.plugin_call_errors.get_or_create(&label).inc();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_are_counted_per_method() {
        let m = SidecarMetrics::new();
        m.observe(Method::Mount, Duration::from_millis(3), true);
        m.observe(Method::Mount, Duration::from_millis(5), false);
        let text = tether_telemetry::encode(&m.registry);
        assert!(
            text.contains(
                "tether_sidecar_plugin_call_seconds_count{method=\"VolumeDriver.Mount\"} 2"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "tether_sidecar_plugin_call_errors_total{method=\"VolumeDriver.Mount\"} 1"
            ),
            "{text}"
        );
    }
}
