//! A real OTLP/gRPC collector in the test process (`fake-opentelemetry-collector`)
//! that keeps every span it receives, and helpers to read them.

use std::time::Duration;

use fake_opentelemetry_collector::{ExportedSpan, FakeCollectorServer};

pub struct Collector {
    server: FakeCollectorServer,
    endpoint: String,
    pub spans: Vec<ExportedSpan>,
}

impl Collector {
    pub async fn start() -> Self {
        let server = FakeCollectorServer::start().await.expect("start collector");
        Self {
            endpoint: server.endpoint(),
            server,
            spans: Vec::new(),
        }
    }

    pub fn endpoint(&self) -> String {
        self.endpoint.clone()
    }

    /// Environment for a warden process exporting every span here, quickly.
    pub fn env(&self) -> Vec<(&str, &str)> {
        vec![
            ("OTEL_EXPORTER_OTLP_ENDPOINT", self.endpoint.as_str()),
            ("OTEL_TRACES_SAMPLER", "always_on"),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
            ("OTEL_SERVICE_NAME", "warden-under-test"),
        ]
    }

    /// Takes whatever has arrived so far.
    pub async fn drain(&mut self) {
        let more = self
            .server
            .exported_spans(1, Duration::from_millis(50))
            .await;
        self.spans.extend(more);
    }

    /// Keeps collecting until `cond` holds over everything received.
    pub async fn collect_until(
        &mut self,
        timeout: Duration,
        what: &str,
        cond: impl Fn(&[ExportedSpan]) -> bool,
    ) {
        let collected = super::eventually(timeout, async || {
            self.drain().await;
            cond(&self.spans)
        })
        .await;
        assert!(
            collected,
            "timed out after {timeout:?} waiting for {what}; spans so far:\n{}",
            summary(&self.spans)
        );
    }
}

/// The value of a span attribute, unwrapped from the collector's debug text
/// (`Some(AnyValue { value: Some(StringValue("x")) })` → `x`).
pub fn attr(span: &ExportedSpan, key: &str) -> Option<String> {
    value(&span.attributes, key)
}

/// An attribute of a span event (see [`attr`]).
pub fn event_attr(span: &ExportedSpan, event: &str, key: &str) -> Option<String> {
    let e = span.events.iter().find(|e| e.name == event)?;
    value(&e.attributes, key)
}

fn value(attributes: &std::collections::BTreeMap<String, String>, key: &str) -> Option<String> {
    let raw = attributes.get(key)?;
    for (open, close) in [
        ("StringValue(\"", "\")"),
        ("IntValue(", ")"),
        ("BoolValue(", ")"),
    ] {
        if let Some(start) = raw.find(open) {
            let rest = &raw[start + open.len()..];
            return rest.find(close).map(|end| rest[..end].to_owned());
        }
    }
    Some(raw.clone())
}

/// One line per span: name, kind, ids, parent.
pub fn summary(spans: &[ExportedSpan]) -> String {
    spans
        .iter()
        .map(|s| {
            format!(
                "{} [{}] trace={} span={} parent={}",
                s.name, s.kind, s.trace_id, s.span_id, s.parent_span_id
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}
