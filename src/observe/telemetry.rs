//! Logs and traces: the global `tracing` subscriber and the OTLP trace pipeline.
//!
//! [`init`] builds the global subscriber once, in `main`, and returns a
//! [`Telemetry`] guard that owns the tracer provider; `main` keeps it until the
//! command has returned and then calls [`Telemetry::shutdown`], which flushes
//! the spans of the last tasks. Library code only emits `tracing` events and
//! spans and never configures output itself.
//!
//! Traces are exported only when the `OTEL_*` variables name an endpoint
//! ([`super::otlp`]); otherwise there is no OpenTelemetry layer at all. Log
//! lines are JSON or pretty ([`super::logs`]).

use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::LogFormat;

use super::logs::install_panic_hook;
pub use super::logs::subscriber;
pub use super::otlp::{OtlpProtocol, OtlpSettings};

/// The environment variables telemetry reads (listed by `warden config env-keys`).
pub const ENV_KEYS: &[&str] = &[
    "RUST_LOG",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
    "OTEL_EXPORTER_OTLP_HEADERS",
    "OTEL_EXPORTER_OTLP_TIMEOUT",
    "OTEL_SERVICE_NAME",
    "OTEL_RESOURCE_ATTRIBUTES",
    "OTEL_TRACES_SAMPLER",
    "OTEL_TRACES_SAMPLER_ARG",
    "OTEL_TRACES_EXPORTER",
    "OTEL_SDK_DISABLED",
    "OTEL_BSP_SCHEDULE_DELAY",
    "OTEL_BSP_MAX_QUEUE_SIZE",
    "OTEL_BSP_MAX_EXPORT_BATCH_SIZE",
    "OTEL_BSP_EXPORT_TIMEOUT",
];

/// The longest [`Telemetry::shutdown`] waits for the last export.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// Owns the trace pipeline. Call [`Telemetry::shutdown`] when the work is done
/// so the last spans are exported; dropping it shuts down too, blocking briefly.
#[derive(Debug)]
#[must_use = "dropping the guard shuts the trace pipeline down"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Are traces being exported?
    #[must_use]
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }

    /// Flushes the spans still queued and stops the exporter, waiting at most a
    /// few seconds for an unresponsive collector.
    pub async fn shutdown(mut self) {
        if let Some(provider) = self.provider.take() {
            let (tx, rx) = tokio::sync::oneshot::channel();
            shutdown_on_thread(provider, move || {
                let _ = tx.send(());
            });
            let _ = tokio::time::timeout(FLUSH_TIMEOUT, rx).await;
        }
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            let (tx, rx) = std::sync::mpsc::channel();
            shutdown_on_thread(provider, move || {
                let _ = tx.send(());
            });
            let _ = rx.recv_timeout(FLUSH_TIMEOUT);
        }
    }
}

/// Shuts the provider down on a plain thread: its shutdown blocks until the
/// export task (on the tokio runtime) has flushed, which must not happen on a
/// runtime thread, and a stuck collector must not hold up the process's exit.
fn shutdown_on_thread(provider: SdkTracerProvider, done: impl FnOnce() + Send + 'static) {
    crate::observe::trace::install(None);
    let spawned = std::thread::Builder::new()
        .name("otel-shutdown".into())
        .spawn(move || {
            if let Err(e) = provider.shutdown() {
                eprintln!("warden: flushing traces failed: {e}");
            }
            done();
        });
    if let Err(e) = spawned {
        eprintln!("warden: cannot flush traces: {e}");
    }
}

/// Installs the global subscriber with traces exported as the `OTEL_*`
/// environment variables say (see the module documentation).
///
/// Logs go to stderr, so stdout stays for command output: JSON or pretty per
/// `format`, filtered by `RUST_LOG` (default `info`). Panics are routed through
/// `tracing`, so a handler panic is one structured line rather than a raw
/// backtrace in the middle of JSON logs.
pub fn init(format: LogFormat) -> Telemetry {
    let (otlp, warnings) = OtlpSettings::from_env();
    let telemetry = init_with(format, otlp.as_ref());
    for w in warnings {
        tracing::warn!("{w}");
    }
    telemetry
}

/// [`init`] with explicit trace settings (`None`: no export).
pub fn init_with(format: LogFormat, otlp: Option<&OtlpSettings>) -> Telemetry {
    let (provider, error) = match otlp.map(OtlpSettings::tracer_provider) {
        None => (None, None),
        Some(Ok(p)) => (Some(p), None),
        Some(Err(e)) => (None, Some(e)),
    };
    let tracer = provider.as_ref().map(|p| p.tracer("warden"));
    // Already initialised (a test calling twice) is fine.
    let installed = subscriber(format, std::io::stderr, tracer.clone())
        .try_init()
        .is_ok();
    if installed {
        if let Some(p) = &provider {
            opentelemetry::global::set_tracer_provider(p.clone());
            opentelemetry::global::set_text_map_propagator(
                opentelemetry_sdk::propagation::TraceContextPropagator::new(),
            );
        }
        crate::observe::trace::install(tracer);
    }
    if let Some(e) = error {
        tracing::warn!(error = %e, "cannot export traces; continuing without them");
    }
    install_panic_hook();
    Telemetry {
        provider: provider.filter(|_| installed),
    }
}
