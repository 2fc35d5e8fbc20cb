//! Logs and traces: the global `tracing` subscriber and the OTLP trace pipeline.
//!
//! [`init`] builds the global subscriber once, in `main`, and returns a
//! [`Telemetry`] guard that owns the tracer provider; `main` keeps it until the
//! command has returned and then calls [`Telemetry::shutdown`], which flushes
//! the spans of the last tasks. Library code only emits `tracing` events and
//! spans and never configures output itself.
//!
//! Traces are exported only when `OTEL_EXPORTER_OTLP_ENDPOINT` or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is set; otherwise there is no
//! OpenTelemetry layer at all. The standard variables are honoured:
//! `OTEL_EXPORTER_OTLP_(TRACES_)PROTOCOL` (`grpc`, the default, or
//! `http/protobuf`), `OTEL_SERVICE_NAME` (default `warden`),
//! `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER`/`_ARG`, `OTEL_BSP_*`,
//! `OTEL_SDK_DISABLED` and `OTEL_TRACES_EXPORTER=none`.
//!
//! Log lines are JSON or pretty (`WARDEN_LOG_FORMAT`), filtered by `RUST_LOG`.
//! A JSON line written inside a span carries the span's `trace_id` and
//! `span_id` while traces are on, so logs and traces join up.

use std::fmt;
use std::io::IsTerminal;
use std::time::Duration;

use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry::{Key, KeyValue};
use opentelemetry_otlp::{Protocol, SpanExporter, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, SdkTracer, SdkTracerProvider, SpanData,
};
use tracing::{Event, Subscriber};
use tracing_subscriber::filter::{FilterExt, FilterFn, LevelFilter, Targets, filter_fn};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

use crate::config::LogFormat;

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

/// The log filter when `RUST_LOG` is unset.
const DEFAULT_FILTER: &str = "info,lapin=warn";

/// The most playwright-rs may ever log (see [`subscriber`]).
const PLAYWRIGHT_CAP: &str = "playwright_rs=debug";
/// `service.name` when neither `OTEL_SERVICE_NAME` nor `OTEL_RESOURCE_ATTRIBUTES` sets one.
const DEFAULT_SERVICE_NAME: &str = "warden";
/// The longest [`Telemetry::shutdown`] waits for the last export.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// The OTLP transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtlpProtocol {
    /// OTLP/gRPC (port 4317 by convention). The default.
    Grpc,
    /// OTLP/HTTP with protobuf bodies (port 4318, path `/v1/traces`).
    HttpProtobuf,
}

/// Where and how traces are exported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtlpSettings {
    /// A base endpoint, like `OTEL_EXPORTER_OTLP_ENDPOINT` (`/v1/traces` is
    /// appended for HTTP). `None` lets the exporter read the `OTEL_EXPORTER_OTLP_*`
    /// variables itself, signal-specific ones first.
    pub endpoint: Option<String>,
    /// The transport.
    pub protocol: OtlpProtocol,
}

impl OtlpSettings {
    /// Export to `endpoint` over gRPC, whatever the environment says; for tests
    /// and for programs that configure telemetry themselves.
    #[must_use]
    pub fn endpoint(endpoint: impl Into<String>) -> Self {
        Self {
            endpoint: Some(endpoint.into()),
            protocol: OtlpProtocol::Grpc,
        }
    }

    /// The settings the standard environment variables ask for, or `None`
    /// (export off) when no OTLP endpoint is set, the SDK is disabled or the
    /// traces exporter is `none`. Warnings about ignored values are returned so
    /// they can be logged once the subscriber exists.
    #[must_use]
    pub fn from_env() -> (Option<Self>, Vec<String>) {
        from_lookup(env_var)
    }

    /// Builds a tracer provider exporting in batches from the SDK's batch
    /// thread, each request running on the current tokio runtime. Sampler,
    /// span limits and batching follow the standard `OTEL_TRACES_SAMPLER*`,
    /// `OTEL_SPAN_*` and `OTEL_BSP_*` variables.
    ///
    /// # Errors
    /// The exporter cannot be built (a malformed endpoint, say) or there is no
    /// tokio runtime.
    pub fn tracer_provider(&self) -> anyhow::Result<SdkTracerProvider> {
        if tokio::runtime::Handle::try_current().is_err() {
            anyhow::bail!("the OTLP exporter needs a tokio runtime");
        }
        let exporter = match self.protocol {
            OtlpProtocol::Grpc => {
                let mut b = SpanExporter::builder().with_tonic();
                if let Some(e) = &self.endpoint {
                    b = b.with_endpoint(e.clone());
                }
                b.build()?
            }
            OtlpProtocol::HttpProtobuf => {
                let mut b = SpanExporter::builder()
                    .with_http()
                    .with_protocol(Protocol::HttpBinary);
                if let Some(e) = &self.endpoint {
                    b = b.with_endpoint(format!("{}/v1/traces", e.trim_end_matches('/')));
                }
                b.build()?
            }
        };
        let exporter = OnRuntime::new(exporter, export_timeout(env_var));
        let batch = BatchSpanProcessor::builder(exporter)
            .with_batch_config(BatchConfigBuilder::default().build())
            .build();
        Ok(SdkTracerProvider::builder()
            .with_span_processor(batch)
            .with_resource(resource())
            .build())
    }
}

/// An exporter whose requests run on the tokio runtime it was built on.
///
/// The SDK's batch processor keeps finished spans in a plain channel and wakes
/// its own thread once per batch (512 spans by default), where it blocks on
/// each export. The OTLP clients (hyper, tonic) need a tokio runtime, so the
/// export itself is handed to the runtime and awaited from that thread. The
/// processor built for async runtimes instead wakes its task once per span,
/// a thread hand-off on every task warden runs.
///
/// The SDK's thread ignores `OTEL_BSP_EXPORT_TIMEOUT`, so the limit is applied
/// here: an export that outlives it is dropped and reported as timed out.
#[derive(Debug)]
struct OnRuntime<E> {
    inner: std::sync::Arc<E>,
    runtime: tokio::runtime::Handle,
    timeout: Duration,
}

impl<E> OnRuntime<E> {
    /// Wraps `inner`; must be called on the runtime the exports should use.
    fn new(inner: E, timeout: Duration) -> Self {
        Self {
            inner: std::sync::Arc::new(inner),
            runtime: tokio::runtime::Handle::current(),
            timeout,
        }
    }
}

/// `OTEL_BSP_EXPORT_TIMEOUT` (milliseconds), 30 s by default as the
/// specification says; an unreadable value counts as unset, as in the SDK.
fn export_timeout(get: impl Fn(&str) -> Option<String>) -> Duration {
    get("OTEL_BSP_EXPORT_TIMEOUT")
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map_or(Duration::from_secs(30), Duration::from_millis)
}

impl<E: opentelemetry_sdk::trace::SpanExporter + 'static> opentelemetry_sdk::trace::SpanExporter
    for OnRuntime<E>
{
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let (inner, timeout) = (self.inner.clone(), self.timeout);
        // The timer belongs inside the task: this future is polled by the
        // SDK's thread, which has no tokio timer.
        let export = async move { tokio::time::timeout(timeout, inner.export(batch)).await };
        self.runtime
            .spawn(export)
            .await
            .map_err(|e| OTelSdkError::InternalFailure(format!("the export task failed: {e}")))?
            .map_err(|_| OTelSdkError::Timeout(timeout))?
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        // Called once, by the processor's thread, before any export: nothing
        // else holds the exporter yet.
        if let Some(inner) = std::sync::Arc::get_mut(&mut self.inner) {
            inner.set_resource(resource);
        }
    }
}

/// An environment variable, with an empty value counting as unset.
fn env_var(key: &str) -> Option<String> {
    std::env::var(key).ok().filter(|v| !v.trim().is_empty())
}

fn from_lookup(get: impl Fn(&str) -> Option<String>) -> (Option<OtlpSettings>, Vec<String>) {
    let mut warnings = Vec::new();
    let off = get("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"))
        || get("OTEL_TRACES_EXPORTER").is_some_and(|v| v.eq_ignore_ascii_case("none"));
    let endpoint_set = get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_some()
        || get("OTEL_EXPORTER_OTLP_ENDPOINT").is_some();
    if off || !endpoint_set {
        return (None, warnings);
    }
    let (var, value) = [
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        "OTEL_EXPORTER_OTLP_PROTOCOL",
    ]
    .into_iter()
    .find_map(|k| get(k).map(|v| (k, v)))
    .unwrap_or(("", String::new()));
    let protocol = match value.trim().to_ascii_lowercase().as_str() {
        "" | "grpc" => OtlpProtocol::Grpc,
        "http/protobuf" => OtlpProtocol::HttpProtobuf,
        "http/json" => {
            warnings.push(format!(
                "{var}=http/json is not supported; using http/protobuf on the same endpoint"
            ));
            OtlpProtocol::HttpProtobuf
        }
        other => {
            warnings.push(format!(
                "{var}={other:?} is not grpc or http/protobuf; using grpc"
            ));
            OtlpProtocol::Grpc
        }
    };
    (
        Some(OtlpSettings {
            endpoint: None,
            protocol,
        }),
        warnings,
    )
}

/// The SDK's resource (from `OTEL_SERVICE_NAME` and `OTEL_RESOURCE_ATTRIBUTES`),
/// named `warden` unless one of them names it, with warden's version.
fn resource() -> Resource {
    let detected = Resource::builder().build();
    let named = detected
        .get(&Key::from_static_str("service.name"))
        .is_some_and(|v| !v.as_str().starts_with("unknown_service"));
    let mut builder = Resource::builder();
    if !named {
        builder = builder.with_service_name(DEFAULT_SERVICE_NAME);
    }
    if detected
        .get(&Key::from_static_str("service.version"))
        .is_none()
    {
        builder =
            builder.with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")));
    }
    builder.build()
}

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

/// The subscriber [`init`] installs, writing logs to `writer` and, with a
/// `tracer`, exporting spans through it; tests point both at sinks.
pub fn subscriber<W>(
    format: LogFormat,
    writer: W,
    tracer: Option<SdkTracer>,
) -> impl Subscriber + for<'a> LookupSpan<'a> + Send + Sync + 'static
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let rust_log = std::env::var("RUST_LOG").ok();
    let filter = log_filter(rust_log.as_deref());
    let json = match format {
        LogFormat::Json => true,
        LogFormat::Pretty => false,
        LogFormat::Auto => !std::io::stderr().is_terminal(),
    };
    let logs: Box<dyn Layer<Registry> + Send + Sync> = if json {
        tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .map_event_format(WithTraceIds)
            .with_writer(writer)
            .with_filter(filter.and(not_export_only()))
            .boxed()
    } else {
        tracing_subscriber::fmt::layer()
            .with_writer(writer)
            .with_filter(filter.and(not_export_only()))
            .boxed()
    };
    let traces = tracer.map(|tracer| {
        tracing_opentelemetry::layer()
            .with_tracer(tracer)
            // Code locations, threads, targets and busy/idle timings cost an
            // attribute each on every span and say nothing about a task.
            .with_location(false)
            .with_threads(false)
            .with_target(false)
            .with_tracked_inactivity(false)
            .with_filter(trace_filter())
    });
    tracing_subscriber::registry().with(logs).with(traces)
}

/// The log filter: `rust_log` (`RUST_LOG`), or the default when unset or
/// invalid, and never playwright-rs at trace level.
fn log_filter<S: Subscriber>(
    rust_log: Option<&str>,
) -> impl tracing_subscriber::layer::Filter<S> + use<S> {
    use tracing_subscriber::filter::FilterExt as _;
    let filter = rust_log
        .and_then(|text| EnvFilter::try_new(text).ok())
        .unwrap_or_else(|| EnvFilter::new(DEFAULT_FILTER))
        // At trace level playwright-rs logs the protocol messages it sends,
        // typed passwords included: whatever RUST_LOG says, cap it at debug.
        .add_directive(PLAYWRIGHT_CAP.parse().expect("a valid directive"));
    // The directive above is only the broadest one: a narrower
    // `playwright_rs::server::connection=trace` wins over it. This filter is
    // not built from RUST_LOG, so nothing can reopen those events.
    filter.and(no_playwright_trace())
}

/// Drops every trace-level event and span of playwright-rs: they carry the
/// protocol messages sent to the browser, typed passwords and TOTP codes
/// among them.
fn no_playwright_trace() -> FilterFn<impl Fn(&tracing::Metadata<'_>) -> bool> {
    filter_fn(|meta| {
        !(*meta.level() == tracing::Level::TRACE && meta.target().starts_with("playwright_rs"))
    })
}

/// Keeps the spans that exist only to be exported out of log lines' context.
fn not_export_only() -> FilterFn<impl Fn(&tracing::Metadata<'_>) -> bool> {
    filter_fn(|meta| meta.target() != crate::observe::trace::EXPORT_ONLY_TARGET)
}

/// What becomes a span or span event: info and above, independent of
/// `RUST_LOG`, without the exporter's own transport (which would trace itself).
fn trace_filter() -> Targets {
    Targets::new()
        .with_default(LevelFilter::INFO)
        .with_target("lapin", LevelFilter::WARN)
        // A delivery's exported span is built by `trace::ProcessSpan` itself.
        .with_target(crate::observe::trace::LOG_ONLY_TARGET, LevelFilter::OFF)
        .with_target("opentelemetry", LevelFilter::OFF)
        .with_target("opentelemetry_sdk", LevelFilter::OFF)
        .with_target("opentelemetry_otlp", LevelFilter::OFF)
        .with_target("tonic", LevelFilter::OFF)
        .with_target("h2", LevelFilter::OFF)
        .with_target("hyper", LevelFilter::OFF)
        .with_target("hyper_util", LevelFilter::OFF)
        .with_target("tower", LevelFilter::OFF)
        .with_target("reqwest", LevelFilter::OFF)
}

/// Wraps the JSON event format: a line written inside an active
/// OpenTelemetry span starts with its `trace_id` and `span_id`.
struct WithTraceIds<F>(F);

impl<S, N, F> FormatEvent<S, N> for WithTraceIds<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        // The OpenTelemetry layer activates a span's context while the span is
        // entered, so the current context is the one the event belongs to.
        let ids = opentelemetry::Context::map_current(|cx| {
            let sc = cx.span().span_context().clone();
            sc.is_valid().then(|| (sc.trace_id(), sc.span_id()))
        });
        let Some((trace_id, span_id)) = ids else {
            return self.0.format_event(ctx, writer, event);
        };
        let mut line = String::with_capacity(512);
        self.0.format_event(ctx, Writer::new(&mut line), event)?;
        match line.strip_prefix('{') {
            Some(rest) => write!(
                writer,
                "{{\"trace_id\":\"{trace_id}\",\"span_id\":\"{span_id}\",{rest}"
            ),
            None => writer.write_str(&line),
        }
    }
}

fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let location = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let payload = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        tracing::warn!(panic = %payload, location = %location, "panic caught");
    }));
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};

    use super::*;

    fn lookup(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn the_export_timeout_is_read_in_milliseconds_and_defaults_to_thirty_seconds() {
        assert_eq!(export_timeout(lookup(&[])), Duration::from_secs(30));
        assert_eq!(
            export_timeout(lookup(&[("OTEL_BSP_EXPORT_TIMEOUT", "2500")])),
            Duration::from_millis(2500)
        );
        assert_eq!(
            export_timeout(lookup(&[("OTEL_BSP_EXPORT_TIMEOUT", "soon")])),
            Duration::from_secs(30)
        );
    }

    /// A collector that never answers.
    #[derive(Debug)]
    struct Unanswered;

    impl opentelemetry_sdk::trace::SpanExporter for Unanswered {
        async fn export(&self, _batch: Vec<SpanData>) -> OTelSdkResult {
            std::future::pending().await
        }
    }

    #[test]
    fn an_export_the_collector_never_answers_gives_up_at_the_export_timeout() {
        use opentelemetry_sdk::trace::SpanExporter as _;
        let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
        let exporter = {
            let _on = runtime.enter();
            OnRuntime::new(Unanswered, Duration::from_millis(50))
        };
        // Polled from a plain thread, as the SDK's batch thread does.
        let result = futures::executor::block_on(exporter.export(Vec::new()));
        assert!(
            matches!(result, Err(OTelSdkError::Timeout(t)) if t == Duration::from_millis(50)),
            "{result:?}"
        );
    }

    #[test]
    fn without_an_endpoint_nothing_is_exported() {
        assert_eq!(from_lookup(lookup(&[])).0, None);
        let (s, _) = from_lookup(lookup(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"),
            ("OTEL_SDK_DISABLED", "true"),
        ]));
        assert_eq!(s, None);
        let (s, _) = from_lookup(lookup(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"),
            ("OTEL_TRACES_EXPORTER", "none"),
        ]));
        assert_eq!(s, None);
    }

    #[test]
    fn grpc_is_the_default_and_the_traces_protocol_wins() {
        let (s, w) = from_lookup(lookup(&[(
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "http://c:4317",
        )]));
        assert_eq!(s.unwrap().protocol, OtlpProtocol::Grpc);
        assert!(w.is_empty());
        let (s, _) = from_lookup(lookup(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf"),
        ]));
        assert_eq!(s.unwrap().protocol, OtlpProtocol::HttpProtobuf);
    }

    #[test]
    fn an_unknown_protocol_is_reported_and_falls_back_to_grpc() {
        let (s, w) = from_lookup(lookup(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "carrier-pigeon"),
        ]));
        assert_eq!(s.unwrap().protocol, OtlpProtocol::Grpc);
        assert_eq!(w.len(), 1);
        assert!(w[0].contains("OTEL_EXPORTER_OTLP_PROTOCOL"), "{w:?}");
    }

    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn no_rust_log_reopens_playwright_trace_events() {
        use tracing_subscriber::layer::SubscriberExt as _;
        for rust_log in [
            "trace",
            "playwright_rs=trace",
            "playwright_rs::server::connection=trace",
            "info,playwright_rs::server::connection[{x}]=trace",
        ] {
            let sink = Sink::default();
            let writer = sink.clone();
            let subscriber = tracing_subscriber::registry().with(
                tracing_subscriber::fmt::layer()
                    .with_writer(move || writer.clone())
                    .with_filter(log_filter(Some(rust_log))),
            );
            tracing::subscriber::with_default(subscriber, || {
                tracing::trace!(
                    target: "playwright_rs::server::connection",
                    "Request JSON: fill hunter2"
                );
                tracing::debug!(target: "playwright_rs::server::connection", "still debug");
            });
            let text = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
            assert!(!text.contains("hunter2"), "RUST_LOG={rust_log}: {text}");
            if rust_log != "info,playwright_rs::server::connection[{x}]=trace" {
                assert!(text.contains("still debug"), "RUST_LOG={rust_log}: {text}");
            }
        }
    }

    #[test]
    fn json_lines_inside_a_span_carry_its_trace_and_span_ids() {
        let provider = SdkTracerProvider::builder().build();
        let sink = Sink::default();
        let writer = sink.clone();
        let subscriber = subscriber(
            LogFormat::Json,
            move || writer.clone(),
            Some(provider.tracer("test")),
        );
        let (trace_id, span_id) = tracing::subscriber::with_default(subscriber, || {
            tracing::info!("outside");
            let span = tracing::info_span!("process");
            let _entered = span.enter();
            tracing::info!("inside");
            let sc = opentelemetry::Context::current()
                .span()
                .span_context()
                .clone();
            (sc.trace_id().to_string(), sc.span_id().to_string())
        });
        let text = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("every line is JSON"))
            .collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(lines[0].get("trace_id").is_none(), "{text}");
        assert_eq!(lines[1]["trace_id"], trace_id.as_str());
        assert_eq!(lines[1]["span_id"], span_id.as_str());
        assert_eq!(lines[1]["fields"]["message"], "inside");
        assert_ne!(trace_id, "00000000000000000000000000000000");
    }
}
