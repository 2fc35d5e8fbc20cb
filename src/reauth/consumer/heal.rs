//! The decision for one request: whether this process may heal the channel,
//! and the tries until it is healed, failed, or handed back.

use lapin::Channel;

use super::attempt::{Tries, try_heal};
use super::context::Ctx;
use super::error::HealError;
use super::lease::Lease;
use super::notify::{STARTED, event};
use super::outcome::Handled;
use super::retry::{Pause, Retry, fail};
use crate::amqp::publish::PublishError;
use crate::channels::RevocationRequest;

/// Decides and performs the re-auth of one request.
pub(super) async fn heal(
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
    let lease = Lease::new(ctx, channel);
    let mut retry = Retry::new(ctx);
    if let Err(handled) = lease.take(req.failed_version, &mut retry).await {
        return Ok(handled);
    }
    if let Some(handled) = lease.recheck(req.failed_version).await {
        lease.release().await;
        return Ok(handled);
    }
    if !lease.min_interval_passed().await {
        lease.release().await;
        return Ok(Handled::Interrupted);
    }
    event(ctx, publish, STARTED, req, None, None, 0).await?;
    let handled = try_until_settled(ctx, channel, &lease, &mut retry).await;
    lease.finish(&handled).await;
    Ok(handled)
}

/// Tries until the channel is healed or failed, or the request goes back.
/// Dropping a try on abandon closes its browser context (the driver guards
/// it), and nothing is recorded: shutting down is not the channel's fault.
async fn try_until_settled(
    ctx: &Ctx,
    channel: &str,
    lease: &Lease<'_>,
    retry: &mut Retry,
) -> Handled {
    let mut tries = Tries::default();
    loop {
        if tries.made > 0 && !lease.renew().await {
            return Handled::Interrupted;
        }
        tries.made += 1;
        let result = tokio::select! {
            biased;
            () = ctx.abandon.cancelled() => return Handled::Interrupted,
            result = try_heal(ctx, channel, &mut tries) => result,
        };
        match result {
            Ok((mode, version)) => return Handled::Healed { mode, version },
            Err(HealError::Credentials(why)) => {
                return refused(ctx, channel, &why, &tries, retry).await;
            }
            Err(e) => {
                if let Some(handled) = retry_later(ctx, channel, &e, retry).await {
                    return handled;
                }
            }
        }
    }
}

/// The provider refused the channel: it is failed.
async fn refused(ctx: &Ctx, channel: &str, why: &str, tries: &Tries, retry: &mut Retry) -> Handled {
    // The count is of logins really made: a refused password is not tried
    // again, so it says 1 whatever max_attempts is.
    let why = format!(
        "browser login failed after {} attempt(s): {why}",
        tries.browser
    );
    fail(ctx, channel, &why, retry).await
}

/// A failure that is not the channel's: pauses before the next try. The
/// outcome when there is none: shutdown came, or `max_park` ran out and the
/// channel is failed after all.
async fn retry_later(
    ctx: &Ctx,
    channel: &str,
    e: &HealError,
    retry: &mut Retry,
) -> Option<Handled> {
    if matches!(e, HealError::Store(_)) {
        ctx.metrics.token_store_errors.inc();
    }
    if e.is_transient() {
        tracing::warn!(channel, kind = e.kind(), error = %e, "re-auth failed for a reason that is not the channel's; trying again later");
    } else {
        // Ours to fix, and not the channel's fault either: tried again too,
        // so a corrected secret file, or a restart with a corrected
        // configuration (the request is still unacked, so it is
        // redelivered), heals the channel.
        tracing::error!(channel, kind = e.kind(), error = %e, "re-auth impossible as configured; fix the configuration, trying again later");
    }
    match retry.pause(ctx).await {
        Pause::Go => None,
        Pause::Interrupted => Some(Handled::Interrupted),
        Pause::Expired => {
            let why = format!(
                "gave up after {} of failures that were not the channel's: {e}",
                humantime::format_duration(ctx.settings.max_park)
            );
            Some(fail(ctx, channel, &why, retry).await)
        }
    }
}
