//! Prometheus metrics, served as text at `/metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Labels of a finished run.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RunLabels {
    /// `ok`, `exit`, `trap`, `limit_exceeded`, `rejected`, `aborted`.
    pub outcome: String,
    /// The inference backend (`portable`, `tract` or `onnxruntime`).
    pub backend: String,
}

/// A single `result` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    /// The result.
    pub result: String,
}

/// Every metric the service exports.
pub struct Metrics {
    registry: Registry,
    /// Runs by outcome and backend.
    pub runs: Family<RunLabels, Counter>,
    /// Fuel consumed by all runs.
    pub fuel: Counter,
    /// Runs queued or running.
    pub queue_depth: Gauge,
    /// Run latency, from submission to stored receipt.
    pub run_seconds: Histogram,
    /// Uploads by result (`stored`, `existing`, `rejected`).
    pub uploads: Family<ResultLabel, Counter>,
    /// Verifications by verdict (`verified`, `failed`).
    pub verifications: Family<ResultLabel, Counter>,
    /// Requests shed because the queue was full.
    pub shed: Counter,
}

impl Metrics {
    /// Registers every metric under the `tally_` prefix.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("tally");
        let m = Metrics {
            runs: Family::default(),
            fuel: Counter::default(),
            queue_depth: Gauge::default(),
            run_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
            uploads: Family::default(),
            verifications: Family::default(),
            shed: Counter::default(),
            registry: Registry::default(),
        };
        registry.register("runs", "Runs by outcome and backend", m.runs.clone());
        registry.register("fuel_consumed", "Fuel consumed by all runs", m.fuel.clone());
        registry.register(
            "queue_depth",
            "Runs and verifications queued or running",
            m.queue_depth.clone(),
        );
        registry.register(
            "run_duration_seconds",
            "Run latency, submission to stored receipt",
            m.run_seconds.clone(),
        );
        registry.register("uploads", "Package uploads by result", m.uploads.clone());
        registry.register(
            "verifications",
            "Verifications by verdict",
            m.verifications.clone(),
        );
        registry.register(
            "shed_requests",
            "Requests refused because the queue was full",
            m.shed.clone(),
        );
        Metrics { registry, ..m }
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut s = String::new();
        prometheus_client::encoding::text::encode(&mut s, &self.registry)
            .expect("writing to a String cannot fail");
        s
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
