//! Retrying a heal: the jittered backoff between tries, the pause that honours shutdown and
//! the `max_park` deadline, and recording a failure the token store must not lose.

use std::time::{Duration, Instant};

use super::context::Ctx;
use super::outcome::Handled;

/// The retry schedule of one request: its backoff, and the `max_park`
/// deadline past which its parked tasks have expired anyway.
pub(super) struct Retry {
    backoff: Backoff,
    deadline: Instant,
}

impl Retry {
    /// The schedule of a request whose handling starts now.
    pub(super) fn new(ctx: &Ctx) -> Self {
        // Past this, the parked tasks have expired anyway: stop trying.
        let deadline = Instant::now() + ctx.settings.max_park;
        // The lease, renewed before each try, must outlast the pause and the try.
        let r = &ctx.settings.reauth;
        let backoff = Backoff::new(
            r.retry_max_delay
                .min(r.lease_ttl.saturating_sub(r.login_timeout))
                .max(Duration::from_secs(1)),
        );
        Self { backoff, deadline }
    }

    /// Waits out the next backoff step, unless it would end after the deadline or
    /// shutdown comes first.
    pub(super) async fn pause(&mut self, ctx: &Ctx) -> Pause {
        let d = self.backoff.take();
        if Instant::now() + d > self.deadline {
            return Pause::Expired;
        }
        ctx.metrics.reauth_retries.inc();
        tokio::select! {
            () = ctx.shutdown.cancelled() => Pause::Interrupted,
            () = ctx.abandon.cancelled() => Pause::Interrupted,
            () = tokio::time::sleep(d) => Pause::Go,
        }
    }
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

/// What a pause ended in.
pub(super) enum Pause {
    /// Try again now.
    Go,
    /// Shutdown: the request goes back to the queue.
    Interrupted,
    /// The next try would come after the deadline.
    Expired,
}

/// Marks the channel `reauth_failed`. A token store that is down is waited
/// for (until the deadline): unrecorded, the failure would leave the tasks
/// parked until they expire.
pub(super) async fn fail(ctx: &Ctx, channel: &str, why: &str, retry: &mut Retry) -> Handled {
    loop {
        match ctx.store.mark_failed(channel, why).await {
            Ok(()) => break,
            Err(e) => {
                ctx.metrics.token_store_errors.inc();
                tracing::error!(channel, error = %e, "could not record the failed re-auth; trying again");
                if !matches!(retry.pause(ctx).await, Pause::Go) {
                    break;
                }
            }
        }
    }
    Handled::Failed(why.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

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
