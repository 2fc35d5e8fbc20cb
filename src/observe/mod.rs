//! What operators and Kubernetes see: health and metrics over HTTP, logs,
//! and OpenTelemetry traces carried in AMQP headers.

pub mod admin;
pub mod logs;
pub mod metrics;
pub mod otlp;
pub mod telemetry;
pub mod trace;
