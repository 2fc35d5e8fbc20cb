//! `warden reauth`: heals revoked channel tokens, once per revoked version,
//! across any number of replicas.
//!
//! It consumes `{prefix}.reauth` with manual acks. For each request:
//! 1. ack it without a login (a warning and a metric) unless the channel is
//!    `reauth_pending` at exactly the request's version: a healed or failed
//!    channel, a stale or forged request, or a channel configured elsewhere;
//! 2. take the channel's lease in the token store (single-flight across
//!    processes *and* across the requests one process handles at once) and
//!    check the version again under it; a request that finds the lease held
//!    waits for it, so a holder that dies mid-login delays the heal by at most
//!    the lease TTL instead of losing it;
//! 3. try the refresh-token grant, and only if the provider refuses it a
//!    browser login (fresh context per login). A failure is typed
//!    ([`HealError`]): only a credential failure the provider states fails
//!    the channel; an unavailable provider, token store or browser is tried
//!    again with backoff and jitter until `max_park`, the tasks still parked;
//! 4. store the new token (version + 1, `active`), tell every worker on
//!    `{prefix}.tokens`, publish `reauth.succeeded`, and move the parked tasks
//!    back to `{prefix}.tasks`; or, on a credential failure, mark the channel
//!    `reauth_failed`, tell the workers, publish `reauth.failed`, dead-letter
//!    the request, and move the parked tasks back so workers dead-letter them
//!    too;
//! 5. ack.
//!
//! It runs in its own process (its own Deployment), so a browser that crashes
//! or hangs can never touch a worker.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use futures::StreamExt;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicGetOptions, BasicNackOptions,
    BasicQosOptions, ConfirmSelectOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection};
use opentelemetry::KeyValue;
use secrecy::{ExposeSecret, SecretString};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::amqp::envelope::{self, Task};
use crate::amqp::events::{self, Event};
use crate::amqp::publish::{
    PERSISTENT, PublishError, copy_properties, publish_confirmed, publish_copy_confirmed,
};
use crate::amqp::topology::Topology;
use crate::channels::{RevocationRequest, TokenRefreshed};
use crate::config::Settings;
use crate::observe::admin::{AdminState, Health};
use crate::observe::metrics::Metrics;
use crate::reauth::browser::{LoginDriver, LoginDriverConfig, LoginErrorKind};
use crate::reauth::flow::{ChannelCredentials, OAuthProvider, TokenError, TokenSet as FlowTokens};
use crate::store::{ChannelStatus, TokenSet, TokenStore};

/// `reauth.*` routing keys.
pub const STARTED: &str = "reauth.started";
/// A channel was healed.
pub const SUCCEEDED: &str = "reauth.succeeded";
/// A channel could not be healed.
pub const FAILED: &str = "reauth.failed";

/// How a request ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handled {
    /// Acked without a login: the channel is not pending at the request's
    /// version (already healed or failed, or a forged or stale request), or
    /// not known here. `why` is one of [`crate::observe::metrics::REAUTH_IGNORED`].
    Ignored {
        /// Why.
        why: &'static str,
    },
    /// Shutdown came while waiting for another holder's lease; the request
    /// goes back to the queue.
    Interrupted,
    /// Healed by `mode` (`refresh` or `browser`) to `version`.
    Healed {
        /// `refresh` or `browser`.
        mode: &'static str,
        /// The new version.
        version: u64,
    },
    /// Gave up; the channel is `reauth_failed`.
    Failed(String),
    /// The token store was down until `max_park`: nothing could be
    /// recorded, and the channel is left as it is.
    NotHealed(String),
}

impl Handled {
    /// Stable name for spans and logs.
    #[must_use]
    pub fn as_str(&self) -> &'static str {
        match self {
            Handled::Ignored { .. } => "ignored",
            Handled::Interrupted => "interrupted",
            Handled::Healed { .. } => "healed",
            Handled::Failed(_) => "failed",
            Handled::NotHealed(_) => "not_healed",
        }
    }
}

/// Shared by every request of one process.
struct Ctx {
    settings: Arc<Settings>,
    store: Arc<dyn TokenStore>,
    driver: Arc<LoginDriver>,
    http: reqwest::Client,
    topology: Topology,
    /// This process, as named on its broker connection.
    holder: String,
    /// When this process last healed each channel, for `reauth.min_interval`.
    last_heal: std::sync::Mutex<std::collections::HashMap<String, Instant>>,
    /// Numbers the leases this process takes, so that two requests handled
    /// at once by one process are two holders and never share a lease.
    leases: std::sync::atomic::AtomicU64,
    metrics: Arc<Metrics>,
    /// Shutdown began: requests waiting for a lease give up and go back.
    shutdown: CancellationToken,
    /// The grace period is over: logins still running are abandoned, their
    /// requests go back to the queue and their leases are released, so the
    /// next process starts at once instead of waiting for the lease to expire.
    abandon: CancellationToken,
}

impl Ctx {
    /// Counts one re-auth attempt of `mode` that took `since` until now.
    fn attempt(&self, mode: &'static str, ok: bool, since: Instant) {
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

/// Runs the re-auth consumer with its admin server until `shutdown`.
///
/// # Errors
/// The token store or admin address cannot be opened; broker trouble is retried.
pub async fn run(
    settings: Settings,
    store: Arc<dyn TokenStore>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let health = Arc::new(Health::new(settings.liveness_limit));
    let metrics = Arc::new(Metrics::new());
    let listener = crate::observe::admin::bind(settings.admin_addr).await?;
    let admin_stop = CancellationToken::new();
    let admin = tokio::spawn(crate::observe::admin::serve(
        listener,
        AdminState {
            health: health.clone(),
            metrics: metrics.clone(),
        },
        admin_stop.clone(),
    ));
    let driver = Arc::new(LoginDriver::new(LoginDriverConfig {
        chromium_path: settings.reauth.chromium_path.clone(),
        artifacts_dir: settings.reauth.artifacts_dir.clone(),
        // One browser for every provider: launched able to resolve all their hosts.
        resolvable_hosts: settings
            .providers
            .values()
            .flat_map(|p| p.allowed_hosts.iter().cloned())
            .collect(),
        ..LoginDriverConfig::default()
    }));
    let ctx = Arc::new(Ctx {
        topology: Topology::new(&settings),
        holder: crate::amqp::broker::connection_name(&settings, "reauth"),
        leases: std::sync::atomic::AtomicU64::new(0),
        last_heal: std::sync::Mutex::default(),
        shutdown: shutdown.clone(),
        abandon: CancellationToken::new(),
        settings: Arc::new(settings),
        store,
        driver: driver.clone(),
        metrics: metrics.clone(),
        // No redirects: a 307/308 from the token endpoint would re-post the
        // client secret to wherever it points.
        http: crate::outbound::client_builder()
            .timeout(Duration::from_secs(30))
            .build()?,
    });
    tracing::info!(
        channels = ctx.settings.channels.len(),
        "re-auth consumer starting"
    );
    let sessions = Sessions {
        ctx: ctx.clone(),
        health: health.clone(),
    };
    crate::supervisor::supervise(
        &ctx.settings,
        "reauth",
        &health,
        &metrics,
        &sessions,
        &shutdown,
    )
    .await;
    // No Chromium or node process may outlive warden.
    driver.shutdown().await;
    admin_stop.cancel();
    admin.await??;
    tracing::info!("re-auth consumer stopped");
    Ok(())
}

/// This process's broker sessions, for [`crate::supervisor`].
struct Sessions {
    ctx: Arc<Ctx>,
    health: Arc<Health>,
}

impl crate::supervisor::Session for Sessions {
    async fn session(&self, conn: &Connection, shutdown: &CancellationToken) -> Result<(), String> {
        session(&self.ctx, conn, &self.health, shutdown).await
    }
}

/// One broker session; `Ok` after a graceful shutdown, `Err` when it was lost.
async fn session(
    ctx: &Arc<Ctx>,
    conn: &Connection,
    health: &Health,
    shutdown: &CancellationToken,
) -> Result<(), String> {
    let ch = conn.create_channel().await.map_err(|e| e.to_string())?;
    ctx.topology
        .declare(&ch)
        .await
        .map_err(|e| format!("declaring the topology: {e}"))?;
    let publish = conn.create_channel().await.map_err(|e| e.to_string())?;
    publish
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .map_err(|e| e.to_string())?;
    ch.basic_qos(ctx.settings.reauth.concurrency, BasicQosOptions::default())
        .await
        .map_err(|e| e.to_string())?;
    let tag = ctx.holder.clone();
    let mut consumer = ch
        .basic_consume(
            ctx.topology.reauth().into(),
            tag.clone().into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(|e| e.to_string())?;
    health.set_session(true, true, true);
    ctx.metrics.consumer_up.set(1);
    tracing::info!(queue = %ctx.topology.reauth(), "consuming re-auth requests");
    let tracker = TaskTracker::new();
    let lost = CancellationToken::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let result = loop {
        health.beat();
        tokio::select! {
            biased;
            () = shutdown.cancelled() => break Ok(()),
            () = lost.cancelled() => break Err("a re-auth outcome could not be published".to_owned()),
            _ = tick.tick() => {}
            next = consumer.next() => match next {
                Some(Ok(delivery)) => {
                    let (ctx, publish, lost) = (ctx.clone(), publish.clone(), lost.clone());
                    tracker.spawn(async move {
                        if let Err(e) = handle_delivery(&ctx, &publish, delivery).await {
                            tracing::error!(error = %e, "could not settle a re-auth request; it will be redelivered");
                            lost.cancel();
                        }
                    });
                }
                Some(Err(e)) => break Err(format!("consumer error: {e}")),
                None => break Err("the broker cancelled the consumer".to_owned()),
            },
        }
    };
    if result.is_ok() {
        // Shutting down. A lost session is not: the next one is ready again.
        health.set_draining();
    }
    let _ = ch
        .basic_cancel(tag.into(), BasicCancelOptions::default())
        .await;
    tracker.close();
    if result.is_ok()
        && tokio::time::timeout(ctx.settings.shutdown_grace, tracker.wait())
            .await
            .is_err()
    {
        tracing::warn!(
            unfinished = tracker.len(),
            "grace period over; abandoning unfinished re-auths, their requests will be redelivered"
        );
        ctx.abandon.cancel();
        // Abandoning is quick (a nack and a lease release each); bounded anyway.
        let _ = tokio::time::timeout(Duration::from_secs(5), tracker.wait()).await;
    }
    let _ = publish.close(200, "bye".into()).await;
    let _ = ch.close(200, "bye".into()).await;
    result
}

async fn handle_delivery(
    ctx: &Ctx,
    publish: &Channel,
    delivery: Delivery,
) -> Result<(), PublishError> {
    // Continue the trace of the task whose 401 asked for this re-auth: the
    // login, the token exchange, the notice, the event and the released tasks
    // are all part of it.
    let span = crate::observe::trace::ProcessSpan::start(&delivery, 1);
    span.wrap(handle_request(ctx, publish, &delivery, &span))
        .await
}

async fn handle_request(
    ctx: &Ctx,
    publish: &Channel,
    delivery: &Delivery,
    span: &crate::observe::trace::ProcessSpan,
) -> Result<(), PublishError> {
    let request: RevocationRequest = match serde_json::from_slice(&delivery.data) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "unreadable re-auth request; dead-lettering it");
            dead_letter(
                ctx,
                publish,
                delivery,
                &format!("unreadable re-auth request: {e}"),
                "malformed",
            )
            .await?;
            let _ = delivery.ack(BasicAckOptions::default()).await;
            return Ok(());
        }
    };
    let started = Instant::now();
    span.set_attributes([KeyValue::new("warden.channel", request.channel.clone())]);
    let handled = heal(ctx, publish, &request).await?;
    span.set_attributes([KeyValue::new("warden.outcome", handled.as_str())]);
    let ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    match &handled {
        Handled::Healed { mode, version } => {
            tracing::info!(channel = %request.channel, mode, version, elapsed_ms = ms, "channel re-authenticated");
            notify_workers(ctx, publish, &request.channel, *version).await?;
            event(
                ctx,
                publish,
                SUCCEEDED,
                &request,
                Some((*mode).to_owned()),
                None,
                ms,
            )
            .await?;
            release_parked(ctx, publish, &request.channel).await?;
        }
        Handled::Failed(why) => {
            tracing::error!(channel = %request.channel, error = %why, "re-authentication failed; the channel's tasks will be dead-lettered");
            event(ctx, publish, FAILED, &request, None, Some(why.clone()), ms).await?;
            // Workers cache the channel as pending: tell them now, so its
            // tasks go dead within a second rather than when the cache ages.
            notify_workers(ctx, publish, &request.channel, request.failed_version).await?;
            dead_letter(ctx, publish, delivery, why, "reauth_failed").await?;
            release_parked(ctx, publish, &request.channel).await?;
        }
        Handled::NotHealed(why) => {
            tracing::error!(channel = %request.channel, error = %why, "the token store stayed unavailable until max_park; the channel stays pending");
        }
        Handled::Ignored { why } => {
            ctx.metrics
                .reauth_ignored
                .get_or_create(&crate::observe::metrics::WhyLabel { why })
                .inc();
            tracing::warn!(channel = %request.channel, failed_version = request.failed_version, why, "re-auth request acked without a login");
        }
        Handled::Interrupted => {
            // Not handled: another process (or this one, restarted) takes it.
            let _ = delivery
                .nack(BasicNackOptions {
                    requeue: true,
                    ..BasicNackOptions::default()
                })
                .await;
            return Ok(());
        }
    }
    // Acking is the last step: a crash before it means the request is handled
    // again, and the version check makes that harmless.
    let _ = delivery.ack(BasicAckOptions::default()).await;
    Ok(())
}

/// Why one try to heal a channel failed. The kind decides what happens next:
/// only [`HealError::Credentials`] fails the channel; every other kind is
/// tried again later, with backoff, while the tasks stay parked, and logged
/// as a warning when it may pass by itself ([`HealError::is_transient`]) or
/// as an error when an operator must fix this process's configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HealError {
    /// The provider stated that the channel cannot log in: its error element
    /// was shown, the code exchange answered `invalid_grant`, or the login
    /// flow could not proceed on the provider's own (answering) page.
    #[error("{0}")]
    Credentials(String),
    /// The provider did not answer, or answered 429 or 5xx.
    #[error("{0}")]
    Provider(String),
    /// The token store could not be read or written.
    #[error("token store: {0}")]
    Store(String),
    /// Chromium or its driver crashed or timed out while the provider was
    /// answering, before the login could be judged.
    #[error("{0}")]
    Browser(String),
    /// This process cannot log in for this channel as configured: an unset
    /// credential, a flow leaving `allowed_hosts`, a client the provider
    /// does not accept.
    #[error("{0}")]
    Config(String),
}

impl HealError {
    /// Worth trying again unchanged after a pause: the provider, the token
    /// store or the browser may be back.
    #[must_use]
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Provider(_) | Self::Store(_) | Self::Browser(_))
    }

    /// Stable name for logs.
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Credentials(_) => "credentials",
            Self::Provider(_) => "provider",
            Self::Store(_) => "store",
            Self::Browser(_) => "browser",
            Self::Config(_) => "config",
        }
    }

    fn store(e: &crate::store::StoreError) -> Self {
        Self::Store(e.to_string())
    }

    /// A refused token request: `invalid_grant` says the code (so the login)
    /// is dead, 429/5xx and transport errors say the provider is struggling,
    /// and the rest (`invalid_client`, an unreadable client secret) is ours.
    fn token(what: &str, e: &TokenError) -> Self {
        if e.is_invalid_grant() {
            Self::Credentials(format!("{what}: {e}"))
        } else if e.is_transient() || matches!(e, TokenError::Malformed(_)) {
            Self::Provider(format!("{what}: {e}"))
        } else {
            Self::Config(format!("{what}: {e}"))
        }
    }
}

/// Decides and performs the re-auth of one request.
async fn heal(
    ctx: &Ctx,
    publish: &Channel,
    req: &RevocationRequest,
) -> Result<Handled, PublishError> {
    let channel = req.channel.as_str();
    if !ctx.settings.channels.contains_key(channel) {
        // Another deployment, configured for it, may own this channel: it is
        // none of this process's business to fail it.
        return Ok(Handled::Ignored {
            why: "not_configured",
        });
    }
    // Only the request that a worker's compare-and-set announced may log in:
    // the channel must be pending at exactly the refused version. Anything
    // else (healed, failed, never revoked at that version, forged) is acked.
    let skip = |r: &crate::store::ChannelRecord| {
        (r.status != ChannelStatus::ReauthPending || r.version != req.failed_version)
            .then_some(Handled::Ignored { why: "not_pending" })
    };
    let holder = format!(
        "{}#{}",
        ctx.holder,
        ctx.leases
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    // Past this, the parked tasks have expired anyway: stop trying.
    let deadline = Instant::now() + ctx.settings.max_park;
    // The lease, renewed before each try, must outlast the pause and the try.
    let r = &ctx.settings.reauth;
    let mut backoff = Backoff::new(
        r.retry_max_delay
            .min(r.lease_ttl.saturating_sub(r.login_timeout))
            .max(Duration::from_secs(1)),
    );
    // Until this request holds the lease: look, try to take it, and if another
    // holder has it, wait and look again. Its heal usually lands meanwhile and
    // the look says so; if it died, its lease expires and this one takes over.
    loop {
        let problem = match ctx.store.get(channel).await {
            Ok(Some(r)) => match skip(&r) {
                Some(h) => return Ok(h),
                None => match ctx
                    .store
                    .try_acquire_lease(channel, &holder, ctx.settings.reauth.lease_ttl)
                    .await
                {
                    Ok(true) => break,
                    Ok(false) => None,
                    Err(e) => Some(HealError::store(&e)),
                },
            },
            Ok(None) => {
                return Ok(Handled::Ignored {
                    why: "unknown_channel",
                });
            }
            Err(e) => Some(HealError::store(&e)),
        };
        match problem {
            None => {
                tokio::select! {
                    () = ctx.shutdown.cancelled() => return Ok(Handled::Interrupted),
                    () = tokio::time::sleep(LEASE_POLL) => {}
                }
            }
            Some(e) => {
                ctx.metrics.token_store_errors.inc();
                tracing::warn!(channel, error = %e, "token store unavailable; trying again later");
                match pause(ctx, &mut backoff, deadline).await {
                    Pause::Go => {}
                    Pause::Interrupted => return Ok(Handled::Interrupted),
                    // Without the store nothing can be recorded; the parked
                    // tasks expire on their own.
                    Pause::Expired => return Ok(Handled::NotHealed(e.to_string())),
                }
            }
        }
    }
    // Under the lease, look again: the previous holder may just have finished.
    if let Ok(Some(r)) = ctx.store.get(channel).await
        && let Some(h) = skip(&r)
    {
        let _ = ctx.store.release_lease(channel, &holder).await;
        return Ok(h);
    }
    if !min_interval_passed(ctx, channel, &holder).await {
        let _ = ctx.store.release_lease(channel, &holder).await;
        return Ok(Handled::Interrupted);
    }
    event(ctx, publish, STARTED, req, None, None, 0).await?;
    // Dropping a try on abandon closes its browser context (the driver
    // guards it), and nothing is recorded: shutting down is not the
    // channel's fault.
    let mut tries = Tries::default();
    let handled = loop {
        if tries.made > 0 {
            // Renew the lease: it only has to outlast one pause and one try.
            match ctx
                .store
                .try_acquire_lease(channel, &holder, ctx.settings.reauth.lease_ttl)
                .await
            {
                Ok(true) => {}
                Ok(false) => {
                    // It expired and another process took over: leave it the
                    // channel rather than log in twice.
                    tracing::warn!(
                        channel,
                        "re-auth lease lost to another holder; stepping back"
                    );
                    break Handled::Interrupted;
                }
                // The try itself meets the store and says what to do.
                Err(_) => {
                    ctx.metrics.token_store_errors.inc();
                }
            }
        }
        tries.made += 1;
        let result = tokio::select! {
            biased;
            () = ctx.abandon.cancelled() => break Handled::Interrupted,
            result = try_heal(ctx, channel, &mut tries) => result,
        };
        match result {
            Ok((mode, version)) => break Handled::Healed { mode, version },
            Err(HealError::Credentials(why)) => {
                // The count is of logins really made: a refused password is
                // not tried again, so it says 1 whatever max_attempts is.
                let why = format!(
                    "browser login failed after {} attempt(s): {why}",
                    tries.browser
                );
                break fail(ctx, channel, &why, &mut backoff, deadline).await;
            }
            Err(e) => {
                if matches!(e, HealError::Store(_)) {
                    ctx.metrics.token_store_errors.inc();
                }
                if e.is_transient() {
                    tracing::warn!(channel, kind = e.kind(), error = %e, "re-auth failed for a reason that is not the channel's; trying again later");
                } else {
                    // Ours to fix, and not the channel's fault either: tried
                    // again too, so a corrected secret file, or a restart
                    // with a corrected configuration (the request is still
                    // unacked, so it is redelivered), heals the channel.
                    tracing::error!(channel, kind = e.kind(), error = %e, "re-auth impossible as configured; fix the configuration, trying again later");
                }
                match pause(ctx, &mut backoff, deadline).await {
                    Pause::Go => {}
                    Pause::Interrupted => break Handled::Interrupted,
                    Pause::Expired => {
                        let why = format!(
                            "gave up after {} of failures that were not the channel's: {e}",
                            humantime::format_duration(ctx.settings.max_park)
                        );
                        break fail(ctx, channel, &why, &mut backoff, deadline).await;
                    }
                }
            }
        }
    };
    match &handled {
        Handled::Healed { .. } => {
            ctx.last_heal
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .insert(channel.to_owned(), Instant::now());
        }
        _ => {
            let _ = ctx.store.release_lease(channel, &holder).await;
        }
    }
    Ok(handled)
}

/// How often a request waiting for another holder's lease looks again.
const LEASE_POLL: Duration = Duration::from_millis(500);

/// Waits, holding the lease, until `reauth.min_interval` has passed since
/// this process last healed `channel`, so that a platform that keeps
/// refusing fresh tokens gets at most one login per interval. `false` when
/// shutdown came or the lease was lost meanwhile.
async fn min_interval_passed(ctx: &Ctx, channel: &str, holder: &str) -> bool {
    let last = ctx
        .last_heal
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .get(channel)
        .copied();
    let Some(wait) = last.and_then(|at| ctx.settings.reauth.min_interval.checked_sub(at.elapsed()))
    else {
        return true;
    };
    tracing::warn!(
        channel,
        wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
        "channel was re-authenticated less than reauth.min_interval ago; waiting before logging in again"
    );
    tokio::select! {
        () = ctx.shutdown.cancelled() => return false,
        () = tokio::time::sleep(wait) => {}
    }
    !matches!(
        ctx.store
            .try_acquire_lease(channel, holder, ctx.settings.reauth.lease_ttl)
            .await,
        Ok(false)
    )
}

/// Pauses between tries: 1 s, doubling up to a cap, each drawn between half
/// and all of its value so replicas that failed together do not retry
/// together.
struct Backoff {
    next: Duration,
    cap: Duration,
}

impl Backoff {
    fn new(cap: Duration) -> Self {
        Self {
            next: Duration::from_secs(1).min(cap),
            cap,
        }
    }

    fn take(&mut self) -> Duration {
        let d = self.next;
        self.next = (d * 2).min(self.cap);
        d.mul_f64(rand::random_range(0.5..=1.0))
    }
}

enum Pause {
    /// Try again now.
    Go,
    /// Shutdown: the request goes back to the queue.
    Interrupted,
    /// The next try would come after the deadline.
    Expired,
}

async fn pause(ctx: &Ctx, backoff: &mut Backoff, deadline: Instant) -> Pause {
    let d = backoff.take();
    if Instant::now() + d > deadline {
        return Pause::Expired;
    }
    ctx.metrics.reauth_retries.inc();
    tokio::select! {
        () = ctx.shutdown.cancelled() => Pause::Interrupted,
        () = ctx.abandon.cancelled() => Pause::Interrupted,
        () = tokio::time::sleep(d) => Pause::Go,
    }
}

/// Marks the channel `reauth_failed`. A token store that is down is waited
/// for (until `deadline`): unrecorded, the failure would leave the tasks
/// parked until they expire.
async fn fail(
    ctx: &Ctx,
    channel: &str,
    why: &str,
    backoff: &mut Backoff,
    deadline: Instant,
) -> Handled {
    loop {
        match ctx.store.mark_failed(channel, why).await {
            Ok(()) => break,
            Err(e) => {
                ctx.metrics.token_store_errors.inc();
                tracing::error!(channel, error = %e, "could not record the failed re-auth; trying again");
                if !matches!(pause(ctx, backoff, deadline).await, Pause::Go) {
                    break;
                }
            }
        }
    }
    Handled::Failed(why.to_owned())
}

/// What the tries of one request have learned so far.
#[derive(Default)]
struct Tries {
    /// Tries made.
    made: u32,
    /// Browser logins made.
    browser: u32,
    /// Browser logins that failed on a page the provider served: counted
    /// against `reauth.max_attempts`.
    on_page: u32,
    /// The refresh grant cannot help (refused, or no refresh token).
    refresh_dead: bool,
    /// Tokens obtained but not stored (the store refused them): the next try
    /// stores them instead of logging in again, since the provider may have
    /// rotated the refresh token already.
    unsaved: Option<(FlowTokens, &'static str, Option<SecretString>)>,
}

/// One try: store tokens obtained earlier, or the refresh grant, or a
/// browser login; then store the new token. Returns the mode and version.
async fn try_heal(
    ctx: &Ctx,
    channel: &str,
    tries: &mut Tries,
) -> Result<(&'static str, u64), HealError> {
    let config = ctx
        .settings
        .channels
        .get(channel)
        .ok_or_else(|| HealError::Config(format!("channel {channel:?} is not configured")))?;
    let provider = ctx
        .settings
        .providers
        .get(&config.provider)
        .ok_or_else(|| {
            HealError::Config(format!("provider {:?} is not configured", config.provider))
        })?;
    if let Some((tokens, mode, old)) = tries.unsaved.take() {
        return save(ctx, tries, channel, &config.provider, tokens, mode, old).await;
    }
    if !tries.refresh_dead {
        let current = ctx
            .store
            .token(channel)
            .await
            .map_err(|e| HealError::store(&e))?;
        match current.and_then(|(t, _)| t.refresh_token) {
            None => tries.refresh_dead = true,
            Some(refresh) => {
                let since = Instant::now();
                let refreshed = provider
                    .refresh(&ctx.http, &refresh)
                    .instrument(tracing::info_span!(
                        "token refresh",
                        otel.kind = "client",
                        warden.channel = channel
                    ))
                    .await;
                ctx.attempt(
                    crate::observe::metrics::REAUTH_REFRESH,
                    refreshed.is_ok(),
                    since,
                );
                match refreshed {
                    Ok(tokens) => {
                        return save(
                            ctx,
                            tries,
                            channel,
                            &config.provider,
                            tokens,
                            "refresh",
                            Some(refresh),
                        )
                        .await;
                    }
                    Err(e) => match HealError::token("refresh grant", &e) {
                        // Only a browser login can tell whether the account
                        // itself is refused.
                        HealError::Credentials(_) | HealError::Config(_) => {
                            tracing::info!(channel, error = %e, "refresh grant refused; falling back to a browser login");
                            tries.refresh_dead = true;
                        }
                        transient => return Err(transient),
                    },
                }
            }
        }
    }

    let credentials = ChannelCredentials::resolve(channel, &config.credentials)
        .map_err(|(name, e)| HealError::Config(format!("credential {name:?}: {e}")))?;
    tries.browser += 1;
    let since = Instant::now();
    let result = browser_login(ctx, provider, &credentials, tries).await;
    ctx.attempt(
        crate::observe::metrics::REAUTH_BROWSER,
        result.is_ok(),
        since,
    );
    match result {
        Ok(tokens) => {
            save(
                ctx,
                tries,
                channel,
                &config.provider,
                tokens,
                "browser",
                None,
            )
            .await
        }
        Err(e) => {
            tracing::warn!(channel, attempt = tries.browser, kind = e.kind(), error = %e, "browser login failed");
            Err(e)
        }
    }
}

/// Stores tokens; kept for the next try if the store refuses them.
async fn save(
    ctx: &Ctx,
    tries: &mut Tries,
    channel: &str,
    provider: &str,
    tokens: FlowTokens,
    mode: &'static str,
    old_refresh: Option<SecretString>,
) -> Result<(&'static str, u64), HealError> {
    match store_tokens(ctx, channel, provider, &tokens, old_refresh.clone()).await {
        Ok(version) => Ok((mode, version)),
        Err(e) => {
            tries.unsaved = Some((tokens, mode, old_refresh));
            Err(HealError::Store(format!("storing the new token: {e}")))
        }
    }
}

async fn browser_login(
    ctx: &Ctx,
    provider: &OAuthProvider,
    credentials: &ChannelCredentials,
    tries: &mut Tries,
) -> Result<FlowTokens, HealError> {
    let login = ctx
        .driver
        .login(provider, credentials, ctx.settings.reauth.login_timeout)
        .instrument(tracing::info_span!(
            "browser login",
            otel.kind = "internal",
            warden.channel = credentials.channel()
        ))
        .await;
    let code = match login {
        Ok(code) => code,
        Err(e) => {
            return Err(match e.kind() {
                LoginErrorKind::BadCredentials => HealError::Credentials(e.to_string()),
                LoginErrorKind::BlockedNavigation => HealError::Config(e.to_string()),
                LoginErrorKind::BrowserCrashed => HealError::Browser(e.to_string()),
                // A step that found nothing to act on: on a page the provider
                // really served, the provider is refusing this login; on an
                // error page of an outage, it is not the channel's fault.
                LoginErrorKind::Timeout | LoginErrorKind::Other => {
                    if provider_answers(ctx, provider).await {
                        tries.on_page += 1;
                        if tries.on_page >= ctx.settings.reauth.max_attempts {
                            HealError::Credentials(format!(
                                "the login flow could not proceed on the provider's page: {e}"
                            ))
                        } else {
                            HealError::Browser(e.to_string())
                        }
                    } else {
                        HealError::Provider(format!(
                            "{e} (the provider's login page is not answering)"
                        ))
                    }
                }
            });
        }
    };
    provider
        .exchange_code(&ctx.http, &code)
        .instrument(tracing::info_span!(
            "token exchange",
            otel.kind = "client",
            http.request.method = "POST",
            server.address = provider.token_url.host_str().unwrap_or_default()
        ))
        .await
        .map_err(|e| HealError::token("code exchange", &e))
}

/// Whether the provider's authorization endpoint answers with anything but
/// 429 or 5xx, i.e. whether a login page it served was a real one.
async fn provider_answers(ctx: &Ctx, provider: &OAuthProvider) -> bool {
    let url = provider.authorization_url("warden-probe", None);
    match ctx
        .http
        .get(url)
        .timeout(Duration::from_secs(10))
        .send()
        .await
    {
        Ok(r) => !(r.status().is_server_error() || r.status().as_u16() == 429),
        Err(_) => false,
    }
}

async fn store_tokens(
    ctx: &Ctx,
    channel: &str,
    provider: &str,
    tokens: &FlowTokens,
    old_refresh: Option<SecretString>,
) -> Result<u64, crate::store::StoreError> {
    let set = TokenSet {
        access_token: tokens.access_token.clone(),
        // Providers that do not rotate refresh tokens keep the old one valid.
        refresh_token: tokens.refresh_token.clone().or(old_refresh),
        // Clamped: a provider's `expires_in` is input, and a huge one must not
        // overflow a date (a panic here left the request unacked).
        expires_at: tokens
            .expires_in
            .map(|d| crate::store::expiry_after(Utc::now(), d)),
    };
    debug_assert!(!set.access_token.expose_secret().is_empty());
    ctx.store.put_token(channel, provider, &set).await
}

/// Tells every worker on `{prefix}.tokens` that `channel` changed (a new
/// token, or a failed re-auth), so each drops its cached state of it.
async fn notify_workers(
    ctx: &Ctx,
    publish: &Channel,
    channel: &str,
    version: u64,
) -> Result<(), PublishError> {
    let notice = TokenRefreshed {
        channel: channel.to_owned(),
        version,
        at: Utc::now(),
    };
    let body = serde_json::to_vec(&notice).unwrap_or_default();
    publish_confirmed(
        publish,
        &ctx.topology.tokens(),
        "",
        &body,
        json_props(),
        false,
    )
    .await
}

/// Tells every worker that `channel` has a token at `version`, outside a
/// re-auth (`warden token set`), so that tasks replayed right after it run
/// with the new token instead of meeting a cached failed state.
///
/// # Errors
/// The broker cannot be reached, or `{prefix}.tokens` does not exist yet (no
/// worker or `warden reauth` has declared the topology).
pub async fn announce(settings: &Settings, channel: &str, version: u64) -> anyhow::Result<()> {
    let conn = crate::amqp::broker::connect(settings, "cli", Duration::from_secs(5)).await?;
    let result = async {
        let ch = conn.create_channel().await?;
        ch.confirm_select(ConfirmSelectOptions::default()).await?;
        let notice = TokenRefreshed {
            channel: channel.to_owned(),
            version,
            at: Utc::now(),
        };
        let body = serde_json::to_vec(&notice)?;
        let topology = Topology::new(settings);
        publish_confirmed(&ch, &topology.tokens(), "", &body, json_props(), false).await?;
        let _ = ch.close(200, "bye".into()).await;
        anyhow::Ok(())
    }
    .await;
    let _ = conn.close(200, "bye".into()).await;
    result
}

fn json_props() -> BasicProperties {
    BasicProperties::default()
        .with_content_type("application/json".into())
        .with_delivery_mode(PERSISTENT)
}

async fn event(
    ctx: &Ctx,
    publish: &Channel,
    routing_key: &str,
    req: &RevocationRequest,
    mode: Option<String>,
    error: Option<String>,
    duration_ms: u64,
) -> Result<(), PublishError> {
    let e = Event {
        id: format!("{}@{}", req.channel, req.failed_version),
        kind: "reauth".into(),
        channel: Some(req.channel.clone()),
        attempt: 1,
        reason: mode,
        error,
        duration_ms,
        at: Utc::now(),
    };
    events::publish(publish, &ctx.topology.events(), routing_key, &e).await
}

async fn dead_letter(
    ctx: &Ctx,
    publish: &Channel,
    d: &Delivery,
    why: &str,
    reason: &str,
) -> Result<(), PublishError> {
    let mut h = d.properties.headers().clone().unwrap_or_default();
    envelope::set_text(&mut h, envelope::REASON_HEADER, reason);
    envelope::set_text(&mut h, envelope::ERROR_HEADER, why);
    envelope::set_int(
        &mut h,
        envelope::ATTEMPT_HEADER,
        i64::from(ctx.settings.reauth.max_attempts),
    );
    envelope::set_text(&mut h, envelope::FAILED_AT_HEADER, &Utc::now().to_rfc3339());
    envelope::set_text(&mut h, envelope::ROUTING_KEY_HEADER, d.routing_key.as_str());
    publish_confirmed(
        publish,
        &ctx.topology.dead(),
        d.routing_key.as_str(),
        &d.data,
        copy_properties(&d.properties, h, None),
        true,
    )
    .await
}

/// Moves every parked task back to `{prefix}.tasks` so it runs now rather than
/// at its next park expiry. Tasks of channels still pending are simply parked
/// again by the workers, without a platform call. Each one is republished with
/// a confirm before it is removed from `{prefix}.parked`.
async fn release_parked(ctx: &Ctx, publish: &Channel, healed: &str) -> Result<(), PublishError> {
    let ch = publish;
    let queue = ctx.topology.parked();
    let mut moved = 0usize;
    // Bounded by what is there now, so tasks re-parked meanwhile do not loop.
    let waiting = ch
        .queue_declare(
            queue.clone().into(),
            lapin::options::QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?
        .message_count();
    for _ in 0..waiting {
        let Some(msg) = ch
            .basic_get(queue.clone().into(), BasicGetOptions { no_ack: false })
            .await?
        else {
            break;
        };
        let d = &msg.delivery;
        let ours = Task::decode(&d.data, usize::MAX)
            .ok()
            .and_then(|t| t.channel)
            .is_some_and(|c| c == healed);
        // A healed channel's tasks start a fresh park clock if they are ever
        // parked again; the delay route must go, or the copy would be parked.
        let h = without(
            d.properties.headers().as_ref(),
            if ours {
                &[envelope::DELAY_HEADER, envelope::PARKED_AT_HEADER]
            } else {
                &[envelope::DELAY_HEADER]
            },
        );
        // The released task stays in its own trace, not this re-auth's.
        publish_copy_confirmed(
            ch,
            &ctx.topology.tasks(),
            d.routing_key.as_str(),
            &d.data,
            copy_properties(&d.properties, h, None),
            true,
            d.properties.headers().as_ref(),
        )
        .await?;
        ch.basic_ack(d.delivery_tag, BasicAckOptions::default())
            .await?;
        moved += 1;
    }
    tracing::info!(channel = healed, moved, "parked tasks released");
    Ok(())
}

fn without(headers: Option<&FieldTable>, drop: &[&str]) -> FieldTable {
    let mut out = FieldTable::default();
    for (k, v) in headers.map(|h| h.inner().iter()).into_iter().flatten() {
        if !drop.contains(&k.as_str()) {
            out.insert(k.clone(), v.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_provider_store_and_browser_trouble_is_transient() {
        let transient = |e: HealError| e.is_transient();
        assert!(transient(HealError::Provider("503".into())));
        assert!(transient(HealError::Store("locked".into())));
        assert!(transient(HealError::Browser("crashed".into())));
        assert!(!transient(HealError::Credentials("bad password".into())));
        assert!(!transient(HealError::Config("unset credential".into())));
    }

    #[test]
    fn token_errors_map_to_the_heal_error_that_decides_what_happens() {
        let rejected = |error: &str| TokenError::Rejected {
            status: 400,
            error: error.into(),
            description: None,
        };
        let kind = |e: TokenError| HealError::token("code exchange", &e).kind();
        assert_eq!(kind(rejected("invalid_grant")), "credentials");
        assert_eq!(kind(rejected("invalid_client")), "config");
        assert_eq!(kind(TokenError::Status(503)), "provider");
        assert_eq!(kind(TokenError::Status(429)), "provider");
        assert_eq!(kind(TokenError::Transport("refused".into())), "provider");
        assert_eq!(kind(TokenError::Malformed("html".into())), "provider");
    }

    #[test]
    fn pauses_double_up_to_the_cap_each_jittered_between_half_and_all() {
        let mut b = Backoff::new(Duration::from_secs(8));
        for full in [1, 2, 4, 8, 8, 8] {
            let d = b.take();
            let full = Duration::from_secs(full);
            assert!(d >= full / 2 && d <= full, "{d:?} for {full:?}");
        }
    }
}
