//! Prometheus metrics, served as text at `/metrics`.

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use tally_sandbox::{KindStats, Sandbox};

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
    /// Connections open now.
    pub connections: Gauge,
    /// Connections closed at once because their client already had its
    /// share open.
    pub refused_connections: Counter,
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
            connections: Gauge::default(),
            refused_connections: Counter::default(),
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
        registry.register("connections", "Connections open now", m.connections.clone());
        registry.register(
            "refused_connections",
            "Connections closed at once because their client had its share open",
            m.refused_connections.clone(),
        );
        Metrics { registry, ..m }
    }

    /// [`Metrics::new`], plus the sandbox's caches, read at each scrape:
    /// `tally_cache_budget_bytes`, and per `cache` kind `tally_cache_bytes`,
    /// `tally_cache_entries` and the counters `tally_cache_hits`,
    /// `tally_cache_misses` and `tally_cache_evictions`.
    pub fn with_caches(sandbox: Arc<Sandbox>) -> Metrics {
        let mut m = Metrics::new();
        m.registry
            .register_collector(Box::new(CacheCollector(sandbox)));
        m
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut s = String::new();
        prometheus_client::encoding::text::encode(&mut s, &self.registry)
            .expect("writing to a String cannot fail");
        s
    }
}

/// A `cache` label: a [`tally_sandbox::CacheKind`]'s name.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CacheLabel {
    cache: &'static str,
}

/// Reads [`Sandbox::cache_stats`] at each scrape.
struct CacheCollector(Arc<Sandbox>);

impl std::fmt::Debug for CacheCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CacheCollector")
    }
}

impl Collector for CacheCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let stats = self.0.cache_stats();
        let gauge = |v: u64| ConstGauge::new(i64::try_from(v).unwrap_or(i64::MAX));
        let budget = gauge(stats.budget_bytes);
        budget.encode(encoder.encode_descriptor(
            "cache_budget_bytes",
            "Bytes the host may keep between requests",
            None,
            budget.metric_type(),
        )?)?;
        type Field = fn(&KindStats) -> u64;
        let gauges: [(&str, &str, Field); 2] = [
            ("cache_bytes", "Bytes held, per cache", |s| s.bytes),
            ("cache_entries", "Entries held, per cache", |s| s.entries),
        ];
        for (name, help, field) in gauges {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for (kind, s) in &stats.kinds {
                let label = CacheLabel { cache: kind.name() };
                gauge(field(s)).encode(family.encode_family(&label)?)?;
            }
        }
        let counters: [(&str, &str, Field); 3] = [
            ("cache_hits", "Lookups that found an entry", |s| s.hits),
            ("cache_misses", "Lookups that found none", |s| s.misses),
            (
                "cache_evictions",
                "Entries evicted to stay within the budget",
                |s| s.evictions,
            ),
        ];
        for (name, help, field) in counters {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (kind, s) in &stats.kinds {
                let label = CacheLabel { cache: kind.name() };
                ConstCounter::new(field(s)).encode(family.encode_family(&label)?)?;
            }
        }
        Ok(())
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
