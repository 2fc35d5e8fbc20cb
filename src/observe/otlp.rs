//! The OTLP trace pipeline: its settings from the standard `OTEL_*`
//! variables, the exporter on the tokio runtime, and the SDK resource.
//!
//! Traces are exported only when `OTEL_EXPORTER_OTLP_ENDPOINT` or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is set. The standard variables are
//! honoured: `OTEL_EXPORTER_OTLP_(TRACES_)PROTOCOL` (`grpc`, the default, or
//! `http/protobuf`), `OTEL_SERVICE_NAME` (default `warden`),
//! `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER`/`_ARG`, `OTEL_BSP_*`,
//! `OTEL_SDK_DISABLED` and `OTEL_TRACES_EXPORTER=none`.

use std::time::Duration;

use opentelemetry::{Key, KeyValue};
use opentelemetry_otlp::{Protocol, SpanExporter, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, SdkTracerProvider, SpanData,
};

/// `service.name` when neither `OTEL_SERVICE_NAME` nor `OTEL_RESOURCE_ATTRIBUTES` sets one.
const DEFAULT_SERVICE_NAME: &str = "warden";

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

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

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
}
