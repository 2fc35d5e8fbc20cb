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

use crate::outcome::DeadReason;

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

/// `result` + `mode` labels of a re-authentication attempt.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReauthLabels {
    /// [`REAUTH_SUCCEEDED`] or [`REAUTH_FAILED`].
    pub result: &'static str,
    /// [`REAUTH_REFRESH`] or [`REAUTH_BROWSER`].
    pub mode: &'static str,
}

/// A `mode` label of re-authentication.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModeLabel {
    /// [`REAUTH_REFRESH`] or [`REAUTH_BROWSER`].
    pub mode: &'static str,
}

/// A `why` label: why a re-auth request was acked without a login.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WhyLabel {
    /// One of [`REAUTH_IGNORED`]'s names.
    pub why: &'static str,
}

/// Why a re-auth request is ignored: the channel is not pending at the
/// request's version (healed, failed, or never revoked at it: a forged or
/// stale request), the channel is unknown to the store, or it is not
/// configured in this process.
pub const REAUTH_IGNORED: [&str; 3] = ["not_pending", "unknown_channel", "not_configured"];

/// Re-auth mode: the refresh-token grant.
pub const REAUTH_REFRESH: &str = "refresh";
/// Re-auth mode: a browser login.
pub const REAUTH_BROWSER: &str = "browser";
/// Re-auth result: a new token was stored.
pub const REAUTH_SUCCEEDED: &str = "succeeded";
/// Re-auth result: no new token.
pub const REAUTH_FAILED: &str = "failed";

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
    /// `warden_consumer_up`: 1 while consuming (tasks, or re-auth requests in
    /// `warden reauth`).
    pub consumer_up: Gauge,
    /// `warden_reauth_attempts_total{result,mode}`: re-authentication attempts.
    pub reauth_attempts: Family<ReauthLabels, Counter>,
    /// `warden_reauth_duration_seconds{mode}`: time of one re-authentication attempt.
    pub reauth_duration: Family<ModeLabel, Histogram>,
    /// `warden_browser_processes`: live browser processes of this replica.
    pub browser_processes: Gauge,
    /// `warden_token_store_errors_total`: failed token store operations.
    pub token_store_errors: Counter,
    /// `warden_reauth_requests_ignored_total{why}`: re-auth requests acked
    /// without a login.
    pub reauth_ignored: Family<WhyLabel, Counter>,
    /// `warden_reauth_retries_total`: re-auth tries that failed for a reason
    /// that is not the channel's and are tried again later.
    pub reauth_retries: Counter,
    /// `warden_sandbox_processes`: sandbox processes alive in this replica.
    pub sandbox_processes: Gauge,
    /// `warden_sandbox_starts_total`: sandbox processes started.
    pub sandbox_starts: Counter,
    /// `warden_sandbox_deaths_total`: sandbox processes that died, or were
    /// killed past a hard deadline, with tasks in them.
    pub sandbox_deaths: Counter,
    /// `warden_suspects_total`: deliveries run in the sandbox.
    pub suspects: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Registers `metric` under `name` and returns it, for the struct to keep.
fn registered<M>(registry: &mut Registry, name: &str, help: &str, metric: M) -> M
where
    M: prometheus_client::registry::Metric + Clone,
{
    registry.register(name, help, metric.clone());
    metric
}

impl Metrics {
    /// Creates and registers every metric.
    #[must_use]
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("warden");
        let tasks = registered(
            &mut registry,
            "tasks",
            "Tasks settled, by type and outcome",
            Family::<TaskLabels, Counter>::default(),
        );
        let task_duration = Family::<TypeLabel, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0005, 4.0, 10))
        });
        registry.register_with_unit(
            "task_duration",
            "Handler run time",
            prometheus_client::registry::Unit::Seconds,
            task_duration.clone(),
        );
        let in_flight = registered(
            &mut registry,
            "tasks_in_flight",
            "Tasks received and not yet settled",
            Gauge::default(),
        );
        let retries = registered(
            &mut registry,
            "retries",
            "Retry copies published, by delay tier",
            Family::<TierLabel, Counter>::default(),
        );
        let dead_letters = registered(
            &mut registry,
            "dead_letters",
            "Tasks dead-lettered by warden, by reason",
            Family::<ReasonLabel, Counter>::default(),
        );
        let parked = registered(
            &mut registry,
            "parked",
            "Tasks parked while their channel re-authenticates",
            Counter::default(),
        );
        let reconnects = registered(
            &mut registry,
            "broker_reconnects",
            "Broker sessions rebuilt after a loss",
            Counter::default(),
        );
        let consumer_up = registered(
            &mut registry,
            "consumer_up",
            "1 while the consumer (tasks, or re-auth requests) is running",
            Gauge::default(),
        );
        let reauth_attempts = registered(
            &mut registry,
            "reauth_attempts",
            "Re-authentication attempts, by result and mode (refresh or browser)",
            Family::<ReauthLabels, Counter>::default(),
        );
        // A refresh-token grant takes tens of milliseconds, a browser login
        // about half a second to a minute (its timeout): 10 ms to ~80 s.
        let reauth_duration = Family::<ModeLabel, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.01, 2.0, 14))
        });
        registry.register_with_unit(
            "reauth_duration",
            "Time of one re-authentication attempt, by mode",
            prometheus_client::registry::Unit::Seconds,
            reauth_duration.clone(),
        );
        let browser_processes = registered(
            &mut registry,
            "browser_processes",
            "Browser processes alive in this replica",
            Gauge::default(),
        );
        let token_store_errors = registered(
            &mut registry,
            "token_store_errors",
            "Token store operations that failed",
            Counter::default(),
        );
        let reauth_ignored = registered(
            &mut registry,
            "reauth_requests_ignored",
            "Re-auth requests acked without a login, by why",
            Family::<WhyLabel, Counter>::default(),
        );
        let reauth_retries = registered(
            &mut registry,
            "reauth_retries",
            "Re-auth tries that failed transiently (provider, token store, browser) and are tried again",
            Counter::default(),
        );
        for why in REAUTH_IGNORED {
            drop(reauth_ignored.get_or_create(&WhyLabel { why }));
        }
        let sandbox_processes = registered(
            &mut registry,
            "sandbox_processes",
            "Sandbox processes alive in this replica",
            Gauge::default(),
        );
        let sandbox_starts = registered(
            &mut registry,
            "sandbox_starts",
            "Sandbox processes started",
            Counter::default(),
        );
        let sandbox_deaths = registered(
            &mut registry,
            "sandbox_deaths",
            "Sandbox processes that died, or were killed past a hard deadline, with tasks in them",
            Counter::default(),
        );
        let suspects = registered(
            &mut registry,
            "suspects",
            "Deliveries run in the sandbox (redelivered, retried from it, or isolated by type)",
            Counter::default(),
        );
        // Series that exist from the start read as 0 on a dashboard, not as
        // "no data": every dead-letter reason and every re-auth result and mode.
        for reason in DeadReason::ALL {
            drop(dead_letters.get_or_create(&ReasonLabel {
                reason: reason.as_str(),
            }));
        }
        for mode in [REAUTH_REFRESH, REAUTH_BROWSER] {
            drop(reauth_duration.get_or_create(&ModeLabel { mode }));
            for result in [REAUTH_SUCCEEDED, REAUTH_FAILED] {
                drop(reauth_attempts.get_or_create(&ReauthLabels { result, mode }));
            }
        }
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
            reauth_attempts,
            reauth_duration,
            browser_processes,
            token_store_errors,
            reauth_ignored,
            reauth_retries,
            sandbox_processes,
            sandbox_starts,
            sandbox_deaths,
            suspects,
        }
    }

    /// Records one re-authentication attempt: `mode` is [`REAUTH_REFRESH`] or
    /// [`REAUTH_BROWSER`].
    pub fn reauth_attempt(&self, mode: &'static str, succeeded: bool, took: std::time::Duration) {
        let result = if succeeded {
            REAUTH_SUCCEEDED
        } else {
            REAUTH_FAILED
        };
        self.reauth_attempts
            .get_or_create(&ReauthLabels { result, mode })
            .inc();
        self.reauth_duration
            .get_or_create(&ModeLabel { mode })
            .observe(took.as_secs_f64());
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_names_follow_prometheus_conventions() {
        let m = Metrics::new();
        m.reauth_attempt(REAUTH_BROWSER, true, std::time::Duration::from_millis(400));
        m.token_store_errors.inc();
        // Families without a series yet are not exported at all.
        m.tasks
            .get_or_create(&TaskLabels {
                r#type: "builtin.noop".into(),
                outcome: "succeeded",
            })
            .inc();
        let noop = TypeLabel {
            r#type: "builtin.noop".into(),
        };
        m.task_duration.get_or_create(&noop).observe(0.001);
        m.retries
            .get_or_create(&TierLabel { tier: "1s".into() })
            .inc();
        let text = m.encode();
        for family in [
            "# TYPE warden_tasks counter",
            "# TYPE warden_task_duration_seconds histogram",
            "# TYPE warden_tasks_in_flight gauge",
            "# TYPE warden_retries counter",
            "# TYPE warden_dead_letters counter",
            "# TYPE warden_parked counter",
            "# TYPE warden_broker_reconnects counter",
            "# TYPE warden_consumer_up gauge",
            "# TYPE warden_reauth_attempts counter",
            "# TYPE warden_reauth_duration_seconds histogram",
            "# TYPE warden_browser_processes gauge",
            "# TYPE warden_token_store_errors counter",
        ] {
            assert!(text.contains(family), "{family} missing:\n{text}");
        }
        assert!(
            text.contains(r#"warden_reauth_attempts_total{result="succeeded",mode="browser"} 1"#)
        );
        assert!(text.contains(r#"warden_reauth_attempts_total{result="failed",mode="refresh"} 0"#));
        assert!(text.contains(r#"warden_reauth_duration_seconds_count{mode="browser"} 1"#));
        assert!(text.contains("warden_token_store_errors_total 1"));
        assert!(text.contains(r#"warden_dead_letters_total{reason="reauth_failed"} 0"#));
    }
}
