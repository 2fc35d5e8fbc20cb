//! One re-auth request from delivery to ack: decode it, heal, then tell
//! everyone what happened and settle the delivery.

use std::time::Instant;

use lapin::Channel;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicNackOptions};
use opentelemetry::KeyValue;

use super::context::Ctx;
use super::heal::heal;
use super::notify::{FAILED, SUCCEEDED, dead_letter, event, notify_workers};
use super::outcome::Handled;
use super::parked::release_parked;
use crate::amqp::publish::PublishError;
use crate::channels::RevocationRequest;
use crate::observe::trace::ProcessSpan;

/// Handles one delivery in the trace of the task whose 401 asked for this
/// re-auth: the login, the token exchange, the notice, the event and the
/// released tasks are all part of it.
///
/// # Errors
/// An outcome could not be published; the delivery stays unacked.
pub(super) async fn handle_delivery(
    ctx: &Ctx,
    publish: &Channel,
    delivery: Delivery,
) -> Result<(), PublishError> {
    let span = ProcessSpan::start(&delivery, 1);
    span.wrap(handle_request(ctx, publish, &delivery, &span))
        .await
}

async fn handle_request(
    ctx: &Ctx,
    publish: &Channel,
    delivery: &Delivery,
    span: &ProcessSpan,
) -> Result<(), PublishError> {
    let Some(request) = decode(ctx, publish, delivery).await? else {
        return Ok(());
    };
    let started = Instant::now();
    span.set_attributes([KeyValue::new("warden.channel", request.channel.clone())]);
    let handled = heal(ctx, publish, &request).await?;
    span.set_attributes([KeyValue::new("warden.outcome", handled.as_str())]);
    let ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    match &handled {
        Handled::Healed { mode, version } => {
            healed(ctx, publish, &request, mode, *version, ms).await?;
        }
        Handled::Failed(why) => failed(ctx, publish, delivery, &request, why, ms).await?,
        Handled::NotHealed(why) => {
            tracing::error!(channel = %request.channel, error = %why, "the token store stayed unavailable until max_park; the channel stays pending");
        }
        Handled::Ignored { why } => ignored(ctx, &request, why),
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

/// The request, or `None` when it cannot be read: then it is dead-lettered
/// and acked.
async fn decode(
    ctx: &Ctx,
    publish: &Channel,
    delivery: &Delivery,
) -> Result<Option<RevocationRequest>, PublishError> {
    match serde_json::from_slice(&delivery.data) {
        Ok(request) => Ok(Some(request)),
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
            Ok(None)
        }
    }
}

/// Tells the workers about the new token, publishes `reauth.succeeded`, and
/// releases the parked tasks.
async fn healed(
    ctx: &Ctx,
    publish: &Channel,
    request: &RevocationRequest,
    mode: &'static str,
    version: u64,
    ms: u64,
) -> Result<(), PublishError> {
    tracing::info!(channel = %request.channel, mode, version, elapsed_ms = ms, "channel re-authenticated");
    notify_workers(ctx, publish, &request.channel, version).await?;
    let mode = Some(mode.to_owned());
    event(ctx, publish, SUCCEEDED, request, mode, None, ms).await?;
    release_parked(ctx, publish, &request.channel).await
}

/// Publishes `reauth.failed`, tells the workers, dead-letters the request and
/// releases the parked tasks, so workers dead-letter them too.
async fn failed(
    ctx: &Ctx,
    publish: &Channel,
    delivery: &Delivery,
    request: &RevocationRequest,
    why: &str,
    ms: u64,
) -> Result<(), PublishError> {
    tracing::error!(channel = %request.channel, error = %why, "re-authentication failed; the channel's tasks will be dead-lettered");
    event(
        ctx,
        publish,
        FAILED,
        request,
        None,
        Some(why.to_owned()),
        ms,
    )
    .await?;
    // Workers cache the channel as pending: tell them now, so its tasks go
    // dead within a second rather than when the cache ages.
    notify_workers(ctx, publish, &request.channel, request.failed_version).await?;
    dead_letter(ctx, publish, delivery, why, "reauth_failed").await?;
    release_parked(ctx, publish, &request.channel).await
}

fn ignored(ctx: &Ctx, request: &RevocationRequest, why: &'static str) {
    ctx.metrics
        .reauth_ignored
        .get_or_create(&crate::observe::metrics::WhyLabel { why })
        .inc();
    tracing::warn!(channel = %request.channel, failed_version = request.failed_version, why, "re-auth request acked without a login");
}
