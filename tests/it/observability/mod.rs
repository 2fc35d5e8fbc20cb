//! Observability against the real broker, the real binary and a real OTLP
//! collector: one trace across a retry, metrics that add up, readiness and
//! liveness that tell the truth, a dashboard that queries real metrics.

mod health;
mod metrics;
mod traces;

use std::time::Duration;

const READY: Duration = Duration::from_secs(20);
