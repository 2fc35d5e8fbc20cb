//! Distributed tracing over AMQP: W3C trace context in message headers, and
//! the spans of the OpenTelemetry messaging semantic conventions for RabbitMQ.
//!
//! - [`inject`] writes the current context into a message's headers as
//!   `traceparent`/`tracestate`; [`extract`] reads it back on the consumer side.
//! - [`publish_span`] (`publish {exchange}`, PRODUCER) wraps every publish and
//!   [`ProcessSpan`] (`process {exchange}`, CONSUMER) every delivery; settling
//!   (copy and event confirmed, handed to the acker) is a `settle` event on the
//!   process span ([`ProcessSpan::record_settled`]), the cheaper of the two.
//!
//! Cost is kept off the hot path. When no trace exporter is installed
//! ([`enabled`] is false) no span is exported and nothing is parsed or
//! injected: a copy then keeps whatever `traceparent` its original carried, so
//! a trace still flows through a worker that does not export. The process
//! span's `tracing` half stays, with two fields, as the context of log lines.
//! When exporting, the per-delivery span is built with the SDK tracer directly
//! and the rarer publish spans go through `tracing-opentelemetry` with their
//! attributes kept out of log lines.
//!
//! Attributes only ever hold names, ids, sizes and low-cardinality kinds; never
//! a URL, a payload or an error message, so a span cannot leak a secret.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{LazyLock, PoisonError, RwLock};

use futures::future::Either;

use lapin::BasicProperties;
use lapin::message::Delivery;
use lapin::types::{AMQPValue, FieldTable, ShortString};
use opentelemetry::context::FutureExt as _;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{SpanKind, Status, TraceContextExt, Tracer as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracer;
use tracing::field::Empty;
use tracing::{Instrument as _, Span};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::outcome::{Outcome, Verdict};

/// The W3C `traceparent` header.
pub const TRACEPARENT: &str = "traceparent";
/// The W3C `tracestate` header.
pub const TRACESTATE: &str = "tracestate";

/// `messaging.system` of every warden span.
const SYSTEM: &str = "rabbitmq";

static ENABLED: AtomicBool = AtomicBool::new(false);
static TRACER: RwLock<Option<SdkTracer>> = RwLock::new(None);
static PROPAGATOR: LazyLock<TraceContextPropagator> = LazyLock::new(TraceContextPropagator::new);

/// Is a trace exporter installed? Set by [`crate::observe::telemetry`]; while false the
/// span helpers skip every OpenTelemetry-only cost.
#[must_use]
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Installs the tracer that exports warden's own spans, or with `None`
/// removes it (see [`enabled`]). Set by [`crate::observe::telemetry`].
pub fn install(tracer: Option<SdkTracer>) {
    let on = tracer.is_some();
    *TRACER.write().unwrap_or_else(PoisonError::into_inner) = tracer;
    ENABLED.store(on, Ordering::Relaxed);
}

/// The installed tracer, if any.
fn tracer() -> Option<SdkTracer> {
    if !enabled() {
        return None;
    }
    TRACER
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .clone()
}

/// Writes the OpenTelemetry context of `span` into `headers` as `traceparent`
/// (and `tracestate` when there is one). Does nothing when the span has no
/// valid context (no exporter, or a disabled span), leaving headers as they are.
pub fn inject_span(span: &Span, headers: &mut FieldTable) {
    inject_context(&span.context(), headers);
}

fn inject_context(cx: &Context, headers: &mut FieldTable) {
    if !cx.span().span_context().is_valid() {
        return;
    }
    let mut injector = HeaderInjector {
        headers,
        stale_state: false,
    };
    PROPAGATOR.inject_context(cx, &mut injector);
    if injector.stale_state {
        // An empty `tracestate` is not a valid header; drop the copy's old one.
        let mut map = headers.inner().clone();
        map.remove(TRACESTATE);
        *headers = FieldTable::from(map);
    }
}

/// Writes the current OpenTelemetry context (that of the entered span, or of
/// the [`ProcessSpan`] being run) into `headers`, like [`inject_span`].
pub fn inject(headers: &mut FieldTable) {
    inject_context(&Context::current(), headers);
}

/// The context a message carries in its `traceparent`/`tracestate` headers, or
/// an empty context when it carries none (or a malformed one).
#[must_use]
pub fn extract(headers: Option<&FieldTable>) -> Context {
    match headers {
        Some(h) if h.contains_key(TRACEPARENT) => {
            PROPAGATOR.extract_with_context(&Context::new(), &HeaderExtractor(h))
        }
        _ => Context::new(),
    }
}

struct HeaderInjector<'a> {
    headers: &'a mut FieldTable,
    stale_state: bool,
}

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if value.is_empty() {
            self.stale_state |= self.headers.contains_key(key);
            return;
        }
        self.headers
            .insert(ShortString::from(key), AMQPValue::LongString(value.into()));
    }
}

struct HeaderExtractor<'a>(&'a FieldTable);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        // Producers in other languages send strings as long strings, short
        // strings or byte arrays; all three are accepted.
        match self.0.inner().get(key)? {
            AMQPValue::LongString(s) => std::str::from_utf8(s.as_bytes()).ok(),
            AMQPValue::ShortString(s) => Some(s.as_str()),
            AMQPValue::ByteArray(b) => std::str::from_utf8(b.as_slice()).ok(),
            _ => None,
        }
    }

    fn keys(&self) -> Vec<&str> {
        self.0.inner().keys().map(ShortString::as_str).collect()
    }
}

/// Target of spans that exist only to be exported: the log layer ignores it,
/// so their many attributes are never formatted into log context.
pub const EXPORT_ONLY_TARGET: &str = "warden::otel";

/// Target of spans that exist only as log context (a [`ProcessSpan`]'s): the
/// trace layer ignores it, since the exported span is built separately.
pub const LOG_ONLY_TARGET: &str = "warden::observe::trace";

/// The semantic conventions' destination name: the exchange, with the default
/// exchange named `amq.default`.
fn destination(exchange: &str) -> &str {
    if exchange.is_empty() {
        "amq.default"
    } else {
        exchange
    }
}

fn to_i64(n: impl TryInto<i64>) -> i64 {
    n.try_into().unwrap_or(i64::MAX)
}

/// The `publish {exchange}` PRODUCER span of one publish, or a disabled span
/// when no exporter is installed. Its parent is the current span. It is
/// exported only, never part of a log line's context.
#[must_use]
pub fn publish_span(
    exchange: &str,
    routing_key: &str,
    properties: &BasicProperties,
    body_size: usize,
) -> Span {
    if !enabled() {
        return Span::none();
    }
    let dest = destination(exchange);
    tracing::info_span!(
        target: EXPORT_ONLY_TARGET,
        "publish",
        otel.name = %format_args!("publish {dest}"),
        otel.kind = "producer",
        messaging.system = SYSTEM,
        messaging.destination.name = dest,
        messaging.operation.name = "publish",
        messaging.operation.type = "send",
        messaging.rabbitmq.destination.routing_key = routing_key,
        messaging.message.id = properties.message_id().as_ref().map(ShortString::as_str),
        messaging.message.body.size = to_i64(body_size),
        error.type = Empty,
    )
}

/// Makes the context carried in `headers` the parent of `span`, if they
/// carry one and `span` is exported; otherwise leaves `span` as it is.
pub fn continue_from(span: &Span, headers: &FieldTable) {
    if span.is_disabled() {
        return;
    }
    let cx = extract(Some(headers));
    if cx.span().span_context().is_valid() {
        let _ = span.set_parent(cx);
    }
}

/// Returns `properties` with `span`'s context injected into their headers
/// (unchanged when the span has no context).
#[must_use]
pub fn with_context(properties: BasicProperties, span: &Span) -> BasicProperties {
    if span.is_disabled() {
        return properties;
    }
    let mut headers = properties.headers().clone().unwrap_or_default();
    inject_span(span, &mut headers);
    properties.with_headers(headers)
}

/// Marks a span as failed with a low-cardinality `error.type`.
pub fn record_error(span: &Span, error_type: &'static str) {
    if !enabled() {
        return;
    }
    span.set_attribute("error.type", error_type);
    span.set_status(Status::error(error_type));
}

/// The `process {exchange}` CONSUMER span of one delivery, continuing the
/// trace the message carries.
///
/// It is two spans in one. A `tracing` span with two fields
/// (`messaging.message.id`, `warden.task.attempt`) is the context of every log
/// line about the delivery. The exported span is built directly with the SDK
/// tracer, all attributes at once, only when an exporter is installed, and only
/// recorded when sampled: going through `tracing-opentelemetry` cost a registry
/// lookup per attribute and a clock read on every poll, about a fifth of the
/// worker's throughput at 100 % sampling. While the delivery's future runs
/// ([`ProcessSpan::wrap`]) the exported span is the current OpenTelemetry
/// context, so the `tracing` spans opened inside (publish, token refresh,
/// browser login) and the headers injected by [`inject`] are its children, and
/// JSON log lines carry its ids. The span ends when this value is dropped.
#[derive(Debug)]
pub struct ProcessSpan {
    log: Span,
    otel: Option<Context>,
}

impl ProcessSpan {
    /// Opens the span of `delivery`, its `attempt`th.
    #[must_use]
    pub fn start(delivery: &Delivery, attempt: u32) -> Self {
        let message_id = delivery
            .properties
            .message_id()
            .as_ref()
            .map(ShortString::as_str);
        let log = tracing::info_span!(
            target: LOG_ONLY_TARGET,
            "process",
            messaging.message.id = message_id,
            warden.task.attempt = i64::from(attempt),
        );
        let otel = tracer().map(|tracer| {
            let dest = destination(delivery.exchange.as_str());
            let mut attributes = Vec::with_capacity(12);
            attributes.extend([
                KeyValue::new("messaging.system", SYSTEM),
                KeyValue::new("messaging.destination.name", dest.to_owned()),
                KeyValue::new("messaging.operation.name", "process"),
                KeyValue::new("messaging.operation.type", "process"),
                KeyValue::new(
                    "messaging.rabbitmq.destination.routing_key",
                    delivery.routing_key.as_str().to_owned(),
                ),
                KeyValue::new(
                    "messaging.rabbitmq.message.delivery_tag",
                    to_i64(delivery.delivery_tag),
                ),
                KeyValue::new("messaging.message.body.size", to_i64(delivery.data.len())),
                KeyValue::new("warden.task.attempt", i64::from(attempt)),
            ]);
            if let Some(id) = message_id {
                attributes.push(KeyValue::new("messaging.message.id", id.to_owned()));
            }
            let parent = extract(delivery.properties.headers().as_ref());
            let span = tracer
                .span_builder(format!("process {dest}"))
                .with_kind(SpanKind::Consumer)
                .with_attributes(attributes)
                .start_with_context(&tracer, &parent);
            parent.with_span(span)
        });
        Self { log, otel }
    }

    /// Runs `work` inside the span: its log lines carry the span's fields (and
    /// ids), and what it opens or publishes continues the span's trace.
    pub fn wrap<F: Future>(&self, work: F) -> impl Future<Output = F::Output> {
        let work = match &self.otel {
            Some(cx) => Either::Left(work.with_context(cx.clone())),
            None => Either::Right(work),
        };
        work.instrument(self.log.clone())
    }

    /// Sets attributes on the exported span (nothing without an exporter, or
    /// when it is not sampled).
    pub fn set_attributes(&self, attributes: impl IntoIterator<Item = KeyValue>) {
        if let Some(cx) = &self.otel {
            cx.span().set_attributes(attributes);
        }
    }

    /// Marks the span as failed with a low-cardinality `error.type`.
    pub fn record_error(&self, error_type: &'static str) {
        if let Some(cx) = &self.otel {
            let span = cx.span();
            span.set_attribute(KeyValue::new("error.type", error_type));
            span.set_status(Status::error(error_type));
        }
    }

    /// Sets what decoding and [`crate::outcome::decide`] learnt: task type and
    /// channel, `warden.outcome`, and `error.type` with an error status when
    /// the attempt failed.
    pub fn record_outcome(&self, task: Option<&crate::Task>, verdict: Verdict, outcome: Outcome) {
        let Some(cx) = &self.otel else { return };
        if !cx.span().is_recording() {
            return;
        }
        let mut attributes = Vec::with_capacity(3);
        if let Some(task) = task {
            attributes.push(KeyValue::new("warden.task.type", task.kind.clone()));
            if let Some(channel) = &task.channel {
                attributes.push(KeyValue::new("warden.channel", channel.clone()));
            }
        }
        attributes.push(KeyValue::new("warden.outcome", outcome.as_str()));
        cx.span().set_attributes(attributes);
        let error_type = match verdict {
            Verdict::Succeeded => return,
            Verdict::Failed(kind) => kind.as_str(),
            Verdict::Malformed => "malformed",
            Verdict::TooLarge => "too_large",
            Verdict::UnknownType => "unknown_type",
            Verdict::ChannelPending => "channel_pending",
            Verdict::ChannelReauthFailed => "reauth_failed",
            Verdict::ParkExpired => "park_expired",
            Verdict::Crashed => "crashed",
            Verdict::DeliveryLimit => "delivery_limit",
        };
        self.record_error(error_type);
    }

    /// The `settle` event: the delivery's copy and event are confirmed and it
    /// is handed to the acker. A settle that failed (the broker will
    /// redeliver) marks the span failed instead.
    /// `failed` is the failed settle's low-cardinality `error.type`.
    pub fn record_settled(&self, outcome: Outcome, failed: Option<&'static str>) {
        let Some(cx) = &self.otel else { return };
        match failed {
            None => cx.span().add_event(
                "settle",
                vec![
                    KeyValue::new("messaging.operation.type", "settle"),
                    KeyValue::new("messaging.operation.name", "ack"),
                    KeyValue::new("warden.outcome", outcome.as_str()),
                ],
            ),
            Some(error_type) => self.record_error(error_type),
        }
    }
}

impl Drop for ProcessSpan {
    fn drop(&mut self) {
        if let Some(cx) = &self.otel {
            cx.span().end();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};

    fn context(state: &str) -> Context {
        Context::new().with_remote_span_context(SpanContext::new(
            TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap(),
            SpanId::from_hex("00f067aa0ba902b7").unwrap(),
            TraceFlags::SAMPLED,
            true,
            state.parse::<TraceState>().unwrap(),
        ))
    }

    #[test]
    fn a_traceparent_in_any_string_type_is_extracted() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        for value in [
            AMQPValue::LongString(tp.into()),
            AMQPValue::ShortString(tp.into()),
            AMQPValue::ByteArray(tp.as_bytes().into()),
        ] {
            let mut h = FieldTable::default();
            h.insert(TRACEPARENT.into(), value);
            let cx = extract(Some(&h));
            let sc = cx.span().span_context().clone();
            assert!(sc.is_valid() && sc.is_remote() && sc.is_sampled());
            assert_eq!(
                sc.trace_id().to_string(),
                "4bf92f3577b34da6a3ce929d0e0e4736"
            );
        }
    }

    #[test]
    fn missing_or_malformed_headers_give_an_empty_context() {
        assert!(!extract(None).span().span_context().is_valid());
        let mut h = FieldTable::default();
        h.insert(TRACEPARENT.into(), AMQPValue::LongString("00-nope".into()));
        assert!(!extract(Some(&h)).span().span_context().is_valid());
        h.insert(TRACEPARENT.into(), AMQPValue::LongLongInt(7));
        assert!(!extract(Some(&h)).span().span_context().is_valid());
    }

    #[test]
    fn injected_headers_round_trip_and_replace_a_stale_tracestate() {
        let mut h = FieldTable::default();
        h.insert(TRACESTATE.into(), AMQPValue::LongString("old=1".into()));
        h.insert("x-other".into(), AMQPValue::LongLongInt(1));
        let mut injector = HeaderInjector {
            headers: &mut h,
            stale_state: false,
        };
        PROPAGATOR.inject_context(&context("vendor=abc"), &mut injector);
        let back = extract(Some(&h));
        assert_eq!(
            back.span().span_context().trace_state().header(),
            "vendor=abc"
        );
        assert!(h.contains_key("x-other"), "other headers are kept");

        let mut injector = HeaderInjector {
            headers: &mut h,
            stale_state: false,
        };
        PROPAGATOR.inject_context(&context(""), &mut injector);
        assert!(
            injector.stale_state,
            "an empty tracestate marks the old one stale"
        );
    }

    #[test]
    fn the_default_exchange_is_named_amq_default() {
        assert_eq!(destination(""), "amq.default");
        assert_eq!(destination("w.tasks"), "w.tasks");
    }
}
