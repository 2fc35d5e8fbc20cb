//! Log output: the global subscriber's layers, JSON or pretty
//! (`WARDEN_LOG_FORMAT`), filtered by `RUST_LOG`, with a hard cap on
//! playwright's own events (they would carry typed secrets). A JSON line
//! written inside a span carries the span's `trace_id` and `span_id` while
//! traces are on, so logs and traces join up.

use std::fmt;
use std::io::IsTerminal;

use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::trace::SdkTracer;
use tracing::{Event, Subscriber};
use tracing_subscriber::filter::{FilterExt, FilterFn, LevelFilter, Targets, filter_fn};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::{EnvFilter, Layer, Registry};

use crate::config::LogFormat;

/// The log filter when `RUST_LOG` is unset.
const DEFAULT_FILTER: &str = "info,lapin=warn";

/// The most playwright-rs may ever log (see [`subscriber`]).
const PLAYWRIGHT_CAP: &str = "playwright_rs=debug";

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

pub(super) fn install_panic_hook() {
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
    use std::sync::{Arc, Mutex};

    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_sdk::trace::SdkTracerProvider;

    use super::*;

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
