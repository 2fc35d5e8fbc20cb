//! The admin HTTP server: `/livez`, `/readyz` and `/metrics` for Kubernetes.
//!
//! [`router`] is a plain function of its state, so tests call it directly.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio_util::sync::CancellationToken;

use crate::observe::metrics::Metrics;

/// What `/livez` and `/readyz` report, updated by the consumer loop.
#[derive(Debug)]
pub struct Health {
    started: Instant,
    last_beat_ms: AtomicU64,
    liveness_limit: Duration,
    connected: AtomicBool,
    declared: AtomicBool,
    consuming: AtomicBool,
    draining: AtomicBool,
}

impl Health {
    /// A fresh state: alive, not ready.
    #[must_use]
    pub fn new(liveness_limit: Duration) -> Self {
        Self {
            started: Instant::now(),
            last_beat_ms: AtomicU64::new(0),
            liveness_limit,
            connected: AtomicBool::new(false),
            declared: AtomicBool::new(false),
            consuming: AtomicBool::new(false),
            draining: AtomicBool::new(false),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// The consumer loop is alive; called on every turn of its `select!`.
    pub fn beat(&self) {
        self.last_beat_ms.store(self.now_ms(), Ordering::Relaxed);
    }

    /// Runs `fut` (waiting for the broker, say) and beats while it runs: a
    /// worker that is patiently reconnecting is not hung, and restarting it
    /// would not bring the broker back. Only for futures that cannot hang
    /// themselves, such as a connect loop whose every attempt has a timeout.
    pub async fn beating_while<F: std::future::Future>(&self, fut: F) -> F::Output {
        let mut tick =
            tokio::time::interval((self.liveness_limit / 4).max(Duration::from_millis(250)));
        tokio::pin!(fut);
        loop {
            self.beat();
            tokio::select! {
                out = &mut fut => return out,
                _ = tick.tick() => {}
            }
        }
    }

    /// Has the loop ticked within the liveness limit?
    #[must_use]
    pub fn live(&self) -> bool {
        self.now_ms()
            .saturating_sub(self.last_beat_ms.load(Ordering::Relaxed))
            <= u64::try_from(self.liveness_limit.as_millis()).unwrap_or(u64::MAX)
    }

    /// Connected, topology declared, consuming and not draining.
    #[must_use]
    pub fn ready(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
            && self.declared.load(Ordering::Relaxed)
            && self.consuming.load(Ordering::Relaxed)
            && !self.draining.load(Ordering::Relaxed)
    }

    /// Records the broker session's progress.
    pub fn set_session(&self, connected: bool, declared: bool, consuming: bool) {
        self.connected.store(connected, Ordering::Relaxed);
        self.declared.store(declared, Ordering::Relaxed);
        self.consuming.store(consuming, Ordering::Relaxed);
    }

    /// Shutdown has begun: not ready any more, whatever the session says.
    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }
}

/// Shared state of the admin endpoints.
#[derive(Debug, Clone)]
pub struct AdminState {
    /// Liveness and readiness.
    pub health: Arc<Health>,
    /// The metrics registry.
    pub metrics: Arc<Metrics>,
}

/// The admin routes.
pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn livez(State(s): State<AdminState>) -> impl IntoResponse {
    if s.health.live() {
        (StatusCode::OK, "ok\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "consumer loop stalled\n")
    }
}

async fn readyz(State(s): State<AdminState>) -> impl IntoResponse {
    if s.health.ready() {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}

async fn metrics(State(s): State<AdminState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.encode(),
    )
}

/// Binds the admin address, with an error that says which setting to change.
///
/// # Errors
/// When the address cannot be bound.
pub async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("cannot bind the admin server to {addr}: {e} (set WARDEN_ADMIN_ADDR)"),
        )
    })
}

/// Serves the admin routes until `shutdown`.
///
/// # Errors
/// I/O errors of the listener.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AdminState,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    tracing::info!(addr = %listener.local_addr()?, "admin server listening");
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}
