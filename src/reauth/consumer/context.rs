//! What every request of one `warden reauth` process shares.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::amqp::topology::Topology;
use crate::config::Settings;
use crate::observe::metrics::Metrics;
use crate::reauth::browser::LoginDriver;
use crate::store::TokenStore;

/// Shared by every request of one process.
pub(super) struct Ctx {
    pub(super) settings: Arc<Settings>,
    pub(super) store: Arc<dyn TokenStore>,
    pub(super) driver: Arc<LoginDriver>,
    pub(super) http: reqwest::Client,
    pub(super) topology: Topology,
    /// This process, as named on its broker connection.
    pub(super) holder: String,
    /// When this process last healed each channel, for `reauth.min_interval`.
    pub(super) last_heal: std::sync::Mutex<std::collections::HashMap<String, Instant>>,
    /// Numbers the leases this process takes, so that two requests handled
    /// at once by one process are two holders and never share a lease.
    pub(super) leases: std::sync::atomic::AtomicU64,
    pub(super) metrics: Arc<Metrics>,
    /// Shutdown began: requests waiting for a lease give up and go back.
    pub(super) shutdown: CancellationToken,
    /// The grace period is over: logins still running are abandoned, their
    /// requests go back to the queue and their leases are released, so the
    /// next process starts at once instead of waiting for the lease to expire.
    pub(super) abandon: CancellationToken,
}

impl Ctx {
    /// The shared state of a consumer that starts now.
    ///
    /// # Errors
    /// The HTTP client for the token endpoints cannot be built.
    pub(super) fn new(
        settings: Settings,
        store: Arc<dyn TokenStore>,
        driver: Arc<LoginDriver>,
        metrics: Arc<Metrics>,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            topology: Topology::new(&settings),
            holder: crate::amqp::broker::connection_name(&settings, "reauth"),
            leases: std::sync::atomic::AtomicU64::new(0),
            last_heal: std::sync::Mutex::default(),
            shutdown,
            abandon: CancellationToken::new(),
            settings: Arc::new(settings),
            store,
            driver,
            metrics,
            // No redirects: a 307/308 from the token endpoint would re-post the
            // client secret to wherever it points.
            http: crate::outbound::client_builder()
                .timeout(Duration::from_secs(30))
                .build()?,
        })
    }

    /// Counts one re-auth attempt of `mode` that took `since` until now.
    pub(super) fn attempt(&self, mode: &'static str, ok: bool, since: Instant) {
        use crate::observe::metrics::{ModeLabel, REAUTH_FAILED, REAUTH_SUCCEEDED, ReauthLabels};
        let result = if ok { REAUTH_SUCCEEDED } else { REAUTH_FAILED };
        self.metrics
            .reauth_attempts
            .get_or_create(&ReauthLabels { result, mode })
            .inc();
        self.metrics
            .reauth_duration
            .get_or_create(&ModeLabel { mode })
            .observe(since.elapsed().as_secs_f64());
        let browsers = i64::try_from(self.driver.browser_pids().len()).unwrap_or(i64::MAX);
        self.metrics.browser_processes.set(browsers);
    }
}
