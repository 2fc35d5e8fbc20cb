//! The channel's lease in the token store: single-flight across processes and
//! across the requests one process handles at once, and the pace of one login
//! per `reauth.min_interval`.

use std::time::{Duration, Instant};

use super::context::Ctx;
use super::error::HealError;
use super::outcome::Handled;
use super::retry::{Pause, Retry};
use crate::store::{ChannelRecord, ChannelStatus};

/// How often a request waiting for another holder's lease looks again.
const LEASE_POLL: Duration = Duration::from_millis(500);

/// One request's claim on a channel's lease.
pub(super) struct Lease<'a> {
    ctx: &'a Ctx,
    channel: &'a str,
    /// This process and a number of its own, so that two requests handled at
    /// once by one process are two holders.
    holder: String,
}

impl<'a> Lease<'a> {
    /// A claim on `channel`'s lease, not taken yet.
    pub(super) fn new(ctx: &'a Ctx, channel: &'a str) -> Self {
        let holder = format!(
            "{}#{}",
            ctx.holder,
            ctx.leases
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        Self {
            ctx,
            channel,
            holder,
        }
    }

    /// Until this request holds the lease: look, try to take it, and if another
    /// holder has it, wait and look again. Its heal usually lands meanwhile and
    /// the look says so; if it died, its lease expires and this one takes over.
    /// `Err` with the outcome when the request ends without the lease.
    pub(super) async fn take(&self, failed_version: u64, retry: &mut Retry) -> Result<(), Handled> {
        let ctx = self.ctx;
        loop {
            let problem = match ctx.store.get(self.channel).await {
                Ok(Some(r)) => match not_pending(&r, failed_version) {
                    Some(h) => return Err(h),
                    None => match self.try_acquire().await {
                        Ok(true) => return Ok(()),
                        Ok(false) => None,
                        Err(e) => Some(HealError::store(&e)),
                    },
                },
                Ok(None) => {
                    return Err(Handled::Ignored {
                        why: "unknown_channel",
                    });
                }
                Err(e) => Some(HealError::store(&e)),
            };
            let Some(e) = problem else {
                tokio::select! {
                    () = ctx.shutdown.cancelled() => return Err(Handled::Interrupted),
                    () = tokio::time::sleep(LEASE_POLL) => {}
                }
                continue;
            };
            ctx.metrics.token_store_errors.inc();
            tracing::warn!(channel = self.channel, error = %e, "token store unavailable; trying again later");
            match retry.pause(ctx).await {
                Pause::Go => {}
                Pause::Interrupted => return Err(Handled::Interrupted),
                // Without the store nothing can be recorded; the parked tasks
                // expire on their own.
                Pause::Expired => return Err(Handled::NotHealed(e.to_string())),
            }
        }
    }

    /// Under the lease, looks again: the previous holder may just have
    /// finished. The outcome when the request has nothing left to do.
    pub(super) async fn recheck(&self, failed_version: u64) -> Option<Handled> {
        match self.ctx.store.get(self.channel).await {
            Ok(Some(r)) => not_pending(&r, failed_version),
            _ => None,
        }
    }

    /// Renews the lease before another try: it only has to outlast one pause
    /// and one try. `false` when another process took it over.
    pub(super) async fn renew(&self) -> bool {
        match self.try_acquire().await {
            Ok(true) => true,
            Ok(false) => {
                // It expired and another process took over: leave it the
                // channel rather than log in twice.
                tracing::warn!(
                    channel = self.channel,
                    "re-auth lease lost to another holder; stepping back"
                );
                false
            }
            // The try itself meets the store and says what to do.
            Err(_) => {
                self.ctx.metrics.token_store_errors.inc();
                true
            }
        }
    }

    /// Waits, holding the lease, until `reauth.min_interval` has passed since
    /// this process last healed the channel, so that a platform that keeps
    /// refusing fresh tokens gets at most one login per interval. `false` when
    /// shutdown came or the lease was lost meanwhile.
    pub(super) async fn min_interval_passed(&self) -> bool {
        let ctx = self.ctx;
        let last = ctx
            .last_heal
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(self.channel)
            .copied();
        let Some(wait) =
            last.and_then(|at| ctx.settings.reauth.min_interval.checked_sub(at.elapsed()))
        else {
            return true;
        };
        tracing::warn!(
            channel = self.channel,
            wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
            "channel was re-authenticated less than reauth.min_interval ago; waiting before logging in again"
        );
        tokio::select! {
            () = ctx.shutdown.cancelled() => return false,
            () = tokio::time::sleep(wait) => {}
        }
        !matches!(self.try_acquire().await, Ok(false))
    }

    /// Ends the claim: storing the healed token already released the lease,
    /// so a heal only starts the channel's `min_interval`; any other outcome
    /// hands the lease back.
    pub(super) async fn finish(&self, handled: &Handled) {
        match handled {
            Handled::Healed { .. } => {
                self.ctx
                    .last_heal
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .insert(self.channel.to_owned(), Instant::now());
            }
            _ => self.release().await,
        }
    }

    /// Hands the lease back, so the next holder need not wait for it to expire.
    pub(super) async fn release(&self) {
        let _ = self
            .ctx
            .store
            .release_lease(self.channel, &self.holder)
            .await;
    }

    async fn try_acquire(&self) -> Result<bool, crate::store::StoreError> {
        self.ctx
            .store
            .try_acquire_lease(
                self.channel,
                &self.holder,
                self.ctx.settings.reauth.lease_ttl,
            )
            .await
    }
}

/// Only the request that a worker's compare-and-set announced may log in:
/// the channel must be pending at exactly the refused version. Anything else
/// (healed, failed, never revoked at that version, forged) is acked.
fn not_pending(r: &ChannelRecord, failed_version: u64) -> Option<Handled> {
    (r.status != ChannelStatus::ReauthPending || r.version != failed_version)
        .then_some(Handled::Ignored { why: "not_pending" })
}
