//! Prometheus metrics, served on the plain-HTTP health port at `/metrics`.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReviewLabels {
    pub webhook: &'static str,
    /// `allowed`, `denied`, `patched` or `invalid`
    pub verdict: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WebhookLabels {
    pub webhook: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LoopLabels {
    /// The background loop's name, as its log lines carry it (`distributions`, `member-health`, …).
    pub task: &'static str,
}

#[derive(Debug)]
pub struct Metrics {
    pub requests: Family<ReviewLabels, Counter>,
    pub latency: Family<ReviewLabels, Histogram>,
    pub errors: Family<WebhookLabels, Counter>,
    /// Failed passes of each background loop (a reconcile that returned an error, a member that
    /// could not be read or written), so an alert can fire on a loop that keeps failing.
    pub loop_failures: Family<LoopLabels, Counter>,
    /// 1 while this replica holds the Lease (runs the background loops), else 0.
    pub leading: Gauge,
    registry: Registry,
}

impl Default for Metrics {
    fn default() -> Self {
        let requests = Family::<ReviewLabels, Counter>::default();
        // 50 µs … ~0.8 s: admission latency matters in the sub-millisecond range.
        let latency = Family::<ReviewLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
                0.00005, 2.0, 15,
            ))
        });
        let errors = Family::<WebhookLabels, Counter>::default();
        let mut registry = Registry::with_prefix("multicluster_webhook");
        registry.register(
            "admission_requests",
            "Admission reviews answered",
            requests.clone(),
        );
        registry.register(
            "admission_duration_seconds",
            "Time to answer an admission review",
            latency.clone(),
        );
        registry.register(
            "admission_errors",
            "Admission requests that could not be answered normally (malformed, lookup failures)",
            errors.clone(),
        );
        let loop_failures = Family::<LoopLabels, Counter>::default();
        registry.register(
            "loop_failures",
            "Failed passes of the hub's background loops, by loop",
            loop_failures.clone(),
        );
        let leading = Gauge::default();
        registry.register(
            "leading",
            "1 while this replica holds the Lease and runs the background loops",
            leading.clone(),
        );
        Self {
            requests,
            latency,
            errors,
            loop_failures,
            leading,
            registry,
        }
    }
}

impl Metrics {
    pub fn observe(&self, webhook: &'static str, verdict: &'static str, elapsed: Duration) {
        let labels = ReviewLabels { webhook, verdict };
        self.requests.get_or_create(&labels).inc();
        self.latency
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
    }

    /// The failure counter of the loop called `name`.
    pub fn loop_failures(&self, name: &'static str) -> Counter {
        self.loop_failures
            .get_or_create(&LoopLabels { task: name })
            .clone()
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
