//! Prometheus metrics, served as text at `/metrics`.
//!
//! Label values come only from bounded sets (registered task types, outcome and
//! reason names), never from producer input: an unknown task type is counted as
//! `unknown`, so a flood of garbage cannot explode the number of series.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// `type` + `outcome` labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TaskLabels {
    /// Registered task type, or `unknown`.
    pub r#type: String,
    /// `succeeded`, `retried`, `parked` or `dead`.
    pub outcome: &'static str,
}

/// A `type` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TypeLabel {
    /// Registered task type, or `unknown`.
    pub r#type: String,
}

/// A `tier` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TierLabel {
    /// The tier's delay, e.g. `4s`.
    pub tier: String,
}

/// A `reason` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// A dead-letter reason.
    pub reason: &'static str,
}

/// Every metric warden exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// `warden_tasks_total{type,outcome}`.
    pub tasks: Family<TaskLabels, Counter>,
    /// `warden_task_duration_seconds{type}`: handler time.
    pub task_duration: Family<TypeLabel, Histogram>,
    /// `warden_tasks_in_flight`.
    pub in_flight: Gauge,
    /// `warden_retries_total{tier}`.
    pub retries: Family<TierLabel, Counter>,
    /// `warden_dead_letters_total{reason}`.
    pub dead_letters: Family<ReasonLabel, Counter>,
    /// `warden_parked_total`.
    pub parked: Counter,
    /// `warden_broker_reconnects_total`.
    pub reconnects: Counter,
    /// `warden_consumer_up`: 1 while consuming.
    pub consumer_up: Gauge,
    /// `warden_token_store_errors_total`.
    pub token_store_errors: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates and registers every metric.
    #[must_use]
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("warden");
        let tasks = Family::<TaskLabels, Counter>::default();
        registry.register("tasks", "Tasks settled, by type and outcome", tasks.clone());
        let task_duration = Family::<TypeLabel, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0005, 4.0, 10))
        });
        registry.register_with_unit(
            "task_duration",
            "Handler run time",
            prometheus_client::registry::Unit::Seconds,
            task_duration.clone(),
        );
        let in_flight = Gauge::default();
        registry.register(
            "tasks_in_flight",
            "Tasks received and not yet settled",
            in_flight.clone(),
        );
        let retries = Family::<TierLabel, Counter>::default();
        registry.register(
            "retries",
            "Retry copies published, by delay tier",
            retries.clone(),
        );
        let dead_letters = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "dead_letters",
            "Tasks dead-lettered by warden, by reason",
            dead_letters.clone(),
        );
        let parked = Counter::default();
        registry.register(
            "parked",
            "Tasks parked while their channel re-authenticates",
            parked.clone(),
        );
        let reconnects = Counter::default();
        registry.register(
            "broker_reconnects",
            "Broker sessions rebuilt after a loss",
            reconnects.clone(),
        );
        let consumer_up = Gauge::default();
        registry.register(
            "consumer_up",
            "1 while the task consumer is running",
            consumer_up.clone(),
        );
        let token_store_errors = Counter::default();
        registry.register(
            "token_store_errors",
            "Token store operations that failed",
            token_store_errors.clone(),
        );
        Self {
            registry,
            tasks,
            task_duration,
            in_flight,
            retries,
            dead_letters,
            parked,
            reconnects,
            consumer_up,
            token_store_errors,
        }
    }

    /// The Prometheus text exposition.
    #[must_use]
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
