//! A stand-in OTLP/HTTP trace collector for the `tracing` scenario: it takes
//! every export request a worker sends to `/v1/traces` and counts requests and
//! bytes without decoding them, so the figure is warden's cost of exporting,
//! not a collector's cost of reading.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::body::Bytes;
use axum::http::header::CONTENT_TYPE;
use axum::routing::post;
use tokio_util::sync::CancellationToken;

/// A running sink; stops when dropped.
#[derive(Debug)]
pub struct Sink {
    /// `http://127.0.0.1:<port>`, for `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub endpoint: String,
    requests: Arc<AtomicU64>,
    bytes: Arc<AtomicU64>,
    _stop: tokio_util::sync::DropGuard,
}

impl Sink {
    /// Serves on a free loopback port.
    ///
    /// # Errors
    /// No port can be bound.
    pub async fn start() -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let endpoint = format!("http://{}", listener.local_addr()?);
        let (requests, bytes) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let app = Router::new().route(
            "/v1/traces",
            post({
                let (requests, bytes) = (requests.clone(), bytes.clone());
                move |body: Bytes| async move {
                    requests.fetch_add(1, Ordering::Relaxed);
                    bytes.fetch_add(body.len() as u64, Ordering::Relaxed);
                    // An empty ExportTraceServiceResponse: everything accepted.
                    ([(CONTENT_TYPE, "application/x-protobuf")], Vec::<u8>::new())
                }
            }),
        );
        let stop = CancellationToken::new();
        tokio::spawn(
            axum::serve(listener, app)
                .with_graceful_shutdown(stop.clone().cancelled_owned())
                .into_future(),
        );
        Ok(Self {
            endpoint,
            requests,
            bytes,
            _stop: stop.drop_guard(),
        })
    }

    /// Export requests and bytes received so far.
    #[must_use]
    pub fn received(&self) -> (u64, u64) {
        (
            self.requests.load(Ordering::Relaxed),
            self.bytes.load(Ordering::Relaxed),
        )
    }
}
