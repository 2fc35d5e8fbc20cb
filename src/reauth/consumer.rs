//! `warden reauth`: heals revoked channel tokens, once per revoked version,
//! across any number of replicas.
//!
//! It consumes `{prefix}.reauth` with manual acks. For each request:
//! 1. skip it if the stored version is already newer (healed) or the channel
//!    has failed for good;
//! 2. take the channel's lease in the token store (single-flight across
//!    processes *and* across the requests one process handles at once) and
//!    check the version again under it; a request that finds the lease held
//!    waits for it, so a holder that dies mid-login delays the heal by at most
//!    the lease TTL instead of losing it;
//! 3. try the refresh-token grant, and only if that fails a browser login
//!    (fresh context per login, retried with backoff, bounded);
//! 4. store the new token (version + 1, `active`), tell every worker on
//!    `{prefix}.tokens`, publish `reauth.succeeded`, and move the parked tasks
//!    back to `{prefix}.tasks`; or, when attempts are exhausted, mark the channel
//!    `reauth_failed`, publish `reauth.failed`, dead-letter the request, and move
//!    the parked tasks back so workers dead-letter them too;
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
use secrecy::ExposeSecret;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::admin::{AdminState, Health};
use crate::channels::{RevocationRequest, TokenRefreshed};
use crate::config::Settings;
use crate::envelope::{self, Task};
use crate::events::{self, Event};
use crate::metrics::Metrics;
use crate::publish::{
    PERSISTENT, PublishError, copy_properties, publish_confirmed, publish_copy_confirmed,
};
use crate::reauth::browser::{LoginDriver, LoginDriverConfig};
use crate::reauth::flow::{ChannelCredentials, OAuthProvider};
use crate::store::{ChannelStatus, TokenSet, TokenStore};
use crate::topology::Topology;

/// `reauth.*` routing keys.
pub const STARTED: &str = "reauth.started";
/// A channel was healed.
pub const SUCCEEDED: &str = "reauth.succeeded";
/// A channel could not be healed.
pub const FAILED: &str = "reauth.failed";

/// How a request ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handled {
    /// The token was already newer than the failed version.
    AlreadyHealed,
    /// The channel had already failed for good.
    AlreadyFailed,
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
}

impl Handled {
    /// Stable name for spans and logs.
    #[must_use]
    pub fn as_str(&self) -> &'static str {
        match self {
            Handled::AlreadyHealed => "already_healed",
            Handled::AlreadyFailed => "already_failed",
            Handled::Interrupted => "interrupted",
            Handled::Healed { .. } => "healed",
            Handled::Failed(_) => "failed",
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
        use crate::metrics::{ModeLabel, REAUTH_FAILED, REAUTH_SUCCEEDED, ReauthLabels};
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
    let listener = crate::admin::bind(settings.admin_addr).await?;
    let admin_stop = CancellationToken::new();
    let admin = tokio::spawn(crate::admin::serve(
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
        holder: crate::broker::connection_name(&settings, "reauth"),
        leases: std::sync::atomic::AtomicU64::new(0),
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
    let mut losses = crate::broker::SessionLosses::default();
    loop {
        health.beat();
        let Some(conn) =
            crate::broker::connect_with_backoff(&ctx.settings, "reauth", &shutdown).await
        else {
            break;
        };
        let started = Instant::now();
        match session(&ctx, &conn, &health, &shutdown).await {
            Ok(()) => {
                let _ = conn.close(200, "bye".into()).await;
                break;
            }
            Err(why) => {
                health.set_session(false, false, false);
                metrics.reconnects.inc();
                let pause = losses.lost(&why, started.elapsed());
                let _ = tokio::time::timeout(Duration::from_secs(2), conn.close(200, "bye".into()))
                    .await;
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(pause) => {}
                }
            }
        }
    }
    health.set_draining();
    // No Chromium or node process may outlive warden.
    driver.shutdown().await;
    admin_stop.cancel();
    admin.await??;
    tracing::info!("re-auth consumer stopped");
    Ok(())
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
    let span = crate::trace::ProcessSpan::start(&delivery, 1);
    span.wrap(handle_request(ctx, publish, &delivery, &span))
        .await
}

async fn handle_request(
    ctx: &Ctx,
    publish: &Channel,
    delivery: &Delivery,
    span: &crate::trace::ProcessSpan,
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
            let notice = TokenRefreshed {
                channel: request.channel.clone(),
                version: *version,
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
            .await?;
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
            dead_letter(ctx, publish, delivery, why, "reauth_failed").await?;
            release_parked(ctx, publish, &request.channel).await?;
        }
        Handled::AlreadyHealed | Handled::AlreadyFailed => {
            tracing::debug!(channel = %request.channel, outcome = ?handled, "re-auth request needs no login");
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

/// Decides and performs the re-auth of one request.
async fn heal(
    ctx: &Ctx,
    publish: &Channel,
    req: &RevocationRequest,
) -> Result<Handled, PublishError> {
    let channel = req.channel.as_str();
    let skip = |r: &crate::store::ChannelRecord| {
        if r.version > req.failed_version && r.status == ChannelStatus::Active {
            Some(Handled::AlreadyHealed)
        } else if r.status == ChannelStatus::ReauthFailed {
            Some(Handled::AlreadyFailed)
        } else {
            None
        }
    };
    let holder = format!(
        "{}#{}",
        ctx.holder,
        ctx.leases
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    // Until this request holds the lease: look, try to take it, and if another
    // holder has it, wait and look again. Its heal usually lands meanwhile and
    // the look says so; if it died, its lease expires and this one takes over.
    loop {
        match ctx.store.get(channel).await {
            Ok(Some(r)) => {
                if let Some(h) = skip(&r) {
                    return Ok(h);
                }
            }
            Ok(None) => {
                return Ok(fail(ctx, channel, "the token store does not know this channel").await);
            }
            Err(e) => return Ok(fail(ctx, channel, &format!("token store: {e}")).await),
        }
        match ctx
            .store
            .try_acquire_lease(channel, &holder, ctx.settings.reauth.lease_ttl)
            .await
        {
            Ok(true) => break,
            Ok(false) => {}
            Err(e) => return Ok(fail(ctx, channel, &format!("token store: {e}")).await),
        }
        tokio::select! {
            () = ctx.shutdown.cancelled() => return Ok(Handled::Interrupted),
            () = tokio::time::sleep(LEASE_POLL) => {}
        }
    }
    // Under the lease, look again: the previous holder may just have finished.
    if let Ok(Some(r)) = ctx.store.get(channel).await
        && let Some(h) = skip(&r)
    {
        let _ = ctx.store.release_lease(channel, &holder).await;
        return Ok(h);
    }
    event(ctx, publish, STARTED, req, None, None, 0).await?;
    // Dropping the login future on abandon closes its browser context (the
    // driver guards it), and the failure is not recorded: shutting down is
    // not the channel's fault.
    let handled = tokio::select! {
        biased;
        () = ctx.abandon.cancelled() => Handled::Interrupted,
        result = login(ctx, channel, &holder) => match result {
            Ok(h) => h,
            Err(why) => fail(ctx, channel, &why).await,
        },
    };
    if !matches!(handled, Handled::Healed { .. }) {
        let _ = ctx.store.release_lease(channel, &holder).await;
    }
    Ok(handled)
}

/// How often a request waiting for another holder's lease looks again.
const LEASE_POLL: Duration = Duration::from_millis(500);

async fn fail(ctx: &Ctx, channel: &str, why: &str) -> Handled {
    if let Err(e) = ctx.store.mark_failed(channel, why).await {
        tracing::error!(channel, error = %e, "could not record the failed re-auth");
    }
    Handled::Failed(why.to_owned())
}

/// Refresh grant first, then the browser; stores the new token.
async fn login(ctx: &Ctx, channel: &str, holder: &str) -> Result<Handled, String> {
    let config = ctx
        .settings
        .channels
        .get(channel)
        .ok_or_else(|| format!("channel {channel:?} is not configured"))?;
    let provider = ctx
        .settings
        .providers
        .get(&config.provider)
        .ok_or_else(|| format!("provider {:?} is not configured", config.provider))?;

    let current = ctx
        .store
        .token(channel)
        .await
        .map_err(|e| format!("token store: {e}"))?;
    if let Some(refresh) = current.as_ref().and_then(|(t, _)| t.refresh_token.clone()) {
        let since = Instant::now();
        let refreshed = provider
            .refresh(&ctx.http, &refresh)
            .instrument(tracing::info_span!(
                "token refresh",
                otel.kind = "client",
                warden.channel = channel
            ))
            .await;
        ctx.attempt(crate::metrics::REAUTH_REFRESH, refreshed.is_ok(), since);
        match refreshed {
            Ok(tokens) => {
                let version =
                    store_tokens(ctx, channel, &config.provider, tokens, Some(refresh)).await?;
                return Ok(Handled::Healed {
                    mode: "refresh",
                    version,
                });
            }
            Err(e) => {
                tracing::info!(channel, error = %e, "refresh grant failed; falling back to a browser login")
            }
        }
    }

    let credentials = ChannelCredentials::resolve(channel, &config.credentials)
        .map_err(|(name, e)| format!("credential {name:?}: {e}"))?;
    let attempts = ctx.settings.reauth.max_attempts;
    let mut last = String::new();
    for attempt in 1..=attempts {
        // Renew the lease: it only has to outlast one attempt.
        if attempt > 1 {
            let renewed = ctx
                .store
                .try_acquire_lease(channel, holder, ctx.settings.reauth.lease_ttl)
                .await
                .map_err(|e| format!("token store: {e}"))?;
            if !renewed {
                // It expired and another process took over: leave it the
                // channel rather than log in twice.
                tracing::warn!(
                    channel,
                    "re-auth lease lost to another holder; stepping back"
                );
                return Ok(Handled::Interrupted);
            }
        }
        let since = Instant::now();
        let result = browser_login(ctx, provider, &credentials).await;
        ctx.attempt(crate::metrics::REAUTH_BROWSER, result.is_ok(), since);
        match result {
            Ok(tokens) => {
                let version = store_tokens(ctx, channel, &config.provider, tokens, None).await?;
                return Ok(Handled::Healed {
                    mode: "browser",
                    version,
                });
            }
            Err((why, retryable)) => {
                tracing::warn!(channel, attempt, of = attempts, error = %why, "browser login failed");
                last = why;
                if !retryable || attempt == attempts {
                    break;
                }
                // 1s, 2s, 4s … between attempts: a struggling provider is not hammered.
                tokio::time::sleep(Duration::from_secs(1 << (attempt - 1).min(5))).await;
            }
        }
    }
    Err(format!(
        "browser login failed after {attempts} attempt(s): {last}"
    ))
}

async fn browser_login(
    ctx: &Ctx,
    provider: &OAuthProvider,
    credentials: &ChannelCredentials,
) -> Result<crate::reauth::flow::TokenSet, (String, bool)> {
    let code = ctx
        .driver
        .login(provider, credentials, ctx.settings.reauth.login_timeout)
        .instrument(tracing::info_span!(
            "browser login",
            otel.kind = "internal",
            warden.channel = credentials.channel()
        ))
        .await
        .map_err(|e| (e.to_string(), e.is_retryable()))?;
    provider
        .exchange_code(&ctx.http, &code)
        .instrument(tracing::info_span!(
            "token exchange",
            otel.kind = "client",
            http.request.method = "POST",
            server.address = provider.token_url.host_str().unwrap_or_default()
        ))
        .await
        .map_err(|e| (e.to_string(), !e.is_invalid_grant()))
}

async fn store_tokens(
    ctx: &Ctx,
    channel: &str,
    provider: &str,
    tokens: crate::reauth::flow::TokenSet,
    old_refresh: Option<secrecy::SecretString>,
) -> Result<u64, String> {
    let set = TokenSet {
        access_token: tokens.access_token,
        // Providers that do not rotate refresh tokens keep the old one valid.
        refresh_token: tokens.refresh_token.or(old_refresh),
        // Clamped: a provider's `expires_in` is input, and a huge one must not
        // overflow a date (a panic here left the request unacked).
        expires_at: tokens
            .expires_in
            .map(|d| crate::store::expiry_after(Utc::now(), d)),
    };
    debug_assert!(!set.access_token.expose_secret().is_empty());
    ctx.store
        .put_token(channel, provider, &set)
        .await
        .map_err(|e| format!("storing the new token: {e}"))
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
