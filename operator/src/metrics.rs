//! Prometheus metrics of the manager (`/metrics`, OpenMetrics text).
//!
//! | metric | labels |
//! |---|---|
//! | `capms_reconciles_total` | `kind` |
//! | `capms_reconcile_errors_total` | `kind`, `class` (conflict, not_found, invalid, kubernetes, auth, permanent) |
//! | `capms_reconcile_duration_seconds` | `kind` |
//! | `capms_metal_api_calls_total` | `operation`, `status_class` (2xx, 4xx, 5xx, other, transport) |
//! | `capms_metal_api_call_duration_seconds` | `operation` |
//! | `capms_allocations_total` | `kind` (machine, firewall), `outcome` (allocated, failed) |
//! | `capms_credentials_clients` | (gauge) metal-api clients built from credentials Secrets, cached |

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::fmt;
use std::sync::Mutex;
use std::time::Duration;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub kind: String,
    pub class: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabels {
    pub operation: String,
    pub status_class: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OperationLabels {
    pub operation: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AllocationLabels {
    pub kind: String,
    pub outcome: String,
}

fn duration_histogram() -> Histogram {
    // 1 ms .. ~33 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

/// Every metric of the manager, registered in one registry.
pub struct Metrics {
    pub reconciles: Family<KindLabels, Counter>,
    pub reconcile_errors: Family<ErrorLabels, Counter>,
    pub reconcile_duration: Family<KindLabels, Histogram>,
    pub metal_api_calls: Family<CallLabels, Counter>,
    pub metal_api_call_duration: Family<OperationLabels, Histogram>,
    pub allocations: Family<AllocationLabels, Counter>,
    pub credentials_clients: Gauge,
    registry: Mutex<Registry>,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let metrics = Metrics {
            reconciles: Family::default(),
            reconcile_errors: Family::default(),
            reconcile_duration: Family::new_with_constructor(duration_histogram),
            metal_api_calls: Family::default(),
            metal_api_call_duration: Family::new_with_constructor(duration_histogram),
            allocations: Family::default(),
            credentials_clients: Gauge::default(),
            registry: Mutex::new(Registry::with_prefix("capms")),
        };
        metrics.register();
        metrics
    }

    fn register(&self) {
        let Ok(mut registry) = self.registry.lock() else { return };
        registry.register("reconciles", "Reconciles run, by kind", self.reconciles.clone());
        registry.register(
            "reconcile_errors",
            "Reconciles that failed, by kind and error class",
            self.reconcile_errors.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Time of one reconcile",
            self.reconcile_duration.clone(),
        );
        registry.register(
            "metal_api_calls",
            "metal-api calls, by operation and status class",
            self.metal_api_calls.clone(),
        );
        registry.register(
            "metal_api_call_duration_seconds",
            "Latency of metal-api calls, by operation",
            self.metal_api_call_duration.clone(),
        );
        registry.register(
            "allocations",
            "Machine and firewall allocations, by outcome",
            self.allocations.clone(),
        );
        registry.register(
            "credentials_clients",
            "metal-api clients built from credentials Secrets, cached",
            self.credentials_clients.clone(),
        );
    }

    /// Counts one reconcile of `kind` that took `took`.
    pub fn reconciled(&self, kind: &str, took: Duration) {
        let labels = KindLabels { kind: kind.to_string() };
        self.reconciles.get_or_create(&labels).inc();
        self.reconcile_duration.get_or_create(&labels).observe(took.as_secs_f64());
    }

    /// Counts a failed reconcile of `kind` with an error of `class`.
    pub fn reconcile_failed(&self, kind: &str, class: &str) {
        let labels = ErrorLabels { kind: kind.to_string(), class: class.to_string() };
        self.reconcile_errors.get_or_create(&labels).inc();
    }

    /// Counts one metal-api call.
    pub fn metal_api_call(&self, operation: &str, status_class: &str, took: Duration) {
        let labels = CallLabels { operation: operation.to_string(), status_class: status_class.to_string() };
        self.metal_api_calls.get_or_create(&labels).inc();
        let labels = OperationLabels { operation: operation.to_string() };
        self.metal_api_call_duration.get_or_create(&labels).observe(took.as_secs_f64());
    }

    /// Counts one allocation attempt.
    pub fn allocation(&self, kind: &str, outcome: &str) {
        let labels = AllocationLabels { kind: kind.to_string(), outcome: outcome.to_string() };
        self.allocations.get_or_create(&labels).inc();
    }

    /// The OpenMetrics text of every metric.
    pub fn encode(&self) -> Result<String, fmt::Error> {
        let registry = self.registry.lock().map_err(|_| fmt::Error)?;
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry)?;
        Ok(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counted_calls_appear_in_the_text() {
        let metrics = Metrics::new();
        metrics.metal_api_call("allocateMachine", "2xx", Duration::from_millis(3));
        metrics.reconciled("MetalStackMachine", Duration::from_millis(10));
        metrics.reconcile_failed("MetalStackMachine", "capacity");
        let text = metrics.encode().unwrap_or_default();
        assert!(
            text.contains(r#"capms_metal_api_calls_total{operation="allocateMachine",status_class="2xx"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"capms_reconcile_errors_total{kind="MetalStackMachine",class="capacity"} 1"#),
            "{text}"
        );
        assert!(text.contains("capms_reconcile_duration_seconds_bucket"), "{text}");
    }
}
