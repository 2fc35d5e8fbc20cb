//! Error kinds decide behaviour.
//!
//! A handler reports *what went wrong* as an [`ErrorKind`]; [`decide`] alone turns
//! that, the attempt number and the retry policy into *what happens to the
//! message*. Keeping the mapping in one pure function means the whole table in
//! ARCHITECTURE.md ("Error kinds decide the outcome") is unit-tested here, and the worker never improvises.

use std::fmt;
use std::time::Duration;

/// What kind of failure a handler ran into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// Worth retrying: I/O, 5xx, 429, connection errors.
    Transient,
    /// Will never succeed: validation, 4xx other than auth.
    Permanent,
    /// The channel's OAuth token was revoked; retrying with it is pointless and
    /// hammers the platform.
    TokenRevoked,
    /// The handler ran past the task timeout (treated as transient).
    Timeout,
    /// The handler panicked (treated as transient; the loop goes on).
    Panic,
}

impl ErrorKind {
    /// Stable name, used in metrics, spans (`error.type`) and events.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Transient => "transient",
            ErrorKind::Permanent => "permanent",
            ErrorKind::TokenRevoked => "token_revoked",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Panic => "panic",
        }
    }
}

/// A handler failure: its kind plus a message that must never hold a secret.
///
/// Serialisable because a task run in the sandbox process reports it back to
/// the worker over a pipe.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TaskError {
    /// Decides the outcome.
    pub kind: ErrorKind,
    /// Human-readable; ends up in logs, events and the `x-warden-error` header.
    pub message: String,
    /// For [`ErrorKind::TokenRevoked`]: the version of the token that was refused,
    /// so that only the first failure of that version starts a re-auth.
    pub token_version: Option<u64>,
    /// The platform asked to wait at least this long (429 `Retry-After`).
    pub retry_after: Option<Duration>,
}

impl TaskError {
    /// A failure of `kind`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            token_version: None,
            retry_after: None,
        }
    }
    /// A failure worth retrying.
    pub fn transient(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Transient, message)
    }
    /// A failure that retrying cannot fix.
    pub fn permanent(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Permanent, message)
    }
    /// The channel's token, at `version`, was revoked.
    pub fn token_revoked(version: u64, message: impl Into<String>) -> Self {
        Self {
            token_version: Some(version),
            ..Self::new(ErrorKind::TokenRevoked, message)
        }
    }
    /// Retry no sooner than `after`.
    #[must_use]
    pub fn with_retry_after(mut self, after: Duration) -> Self {
        self.retry_after = Some(after);
        self
    }
    /// Is this worth another attempt?
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        matches!(
            self.kind,
            ErrorKind::Transient | ErrorKind::Timeout | ErrorKind::Panic
        )
    }
}

impl fmt::Display for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind.as_str(), self.message)
    }
}

impl std::error::Error for TaskError {}

/// Everything known about a delivery once its handler (if any) has run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The handler succeeded.
    Succeeded,
    /// The handler failed with this kind.
    Failed(ErrorKind),
    /// The body is not a task.
    Malformed,
    /// The body exceeds the size limit.
    TooLarge,
    /// No handler is registered for the type.
    UnknownType,
    /// The task's channel is waiting for re-authentication.
    ChannelPending,
    /// The task has been parked longer than the maximum park time.
    ParkExpired,
    /// Re-authentication of the task's channel has failed for good.
    ChannelReauthFailed,
    /// The task killed the sandbox process it ran in alone.
    Crashed,
    /// The broker has handed the message out `delivery_limit` times: the
    /// worker processes holding it kept dying for a reason the sandbox could
    /// not pin on one task.
    DeliveryLimit,
}

/// Why a message ended in `{prefix}.dead`; the value of `x-warden-reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeadReason {
    /// Not JSON or missing required fields.
    Malformed,
    /// Over the size limit.
    TooLarge,
    /// No handler for the type.
    UnknownType,
    /// The handler said retrying cannot help.
    Permanent,
    /// Transient failures used up every attempt.
    RetriesExhausted,
    /// The broker handed it out too often (the process died on it).
    DeliveryLimit,
    /// The last attempt timed out and no attempts are left.
    TimeoutExhausted,
    /// The channel could not be re-authenticated.
    ReauthFailed,
    /// The task killed the sandbox process it ran in alone (a signal such as
    /// SIGSEGV or SIGABRT, the memory limit, or an exit).
    Crashed,
}

impl DeadReason {
    /// All reasons, in the order README.md lists them.
    pub const ALL: [DeadReason; 9] = [
        DeadReason::Malformed,
        DeadReason::TooLarge,
        DeadReason::UnknownType,
        DeadReason::Permanent,
        DeadReason::RetriesExhausted,
        DeadReason::DeliveryLimit,
        DeadReason::TimeoutExhausted,
        DeadReason::ReauthFailed,
        DeadReason::Crashed,
    ];

    /// The wire name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            DeadReason::Malformed => "malformed",
            DeadReason::TooLarge => "too_large",
            DeadReason::UnknownType => "unknown_type",
            DeadReason::Permanent => "permanent",
            DeadReason::RetriesExhausted => "retries_exhausted",
            DeadReason::DeliveryLimit => "delivery_limit",
            DeadReason::TimeoutExhausted => "timeout_exhausted",
            DeadReason::ReauthFailed => "reauth_failed",
            DeadReason::Crashed => "crashed",
        }
    }

    /// Parses a wire name.
    #[must_use]
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == s)
    }

    /// Is this the producer's fault (logged at warn) rather than a fault of ours?
    #[must_use]
    pub fn is_input_error(self) -> bool {
        matches!(
            self,
            DeadReason::Malformed | DeadReason::TooLarge | DeadReason::UnknownType
        )
    }
}

impl fmt::Display for DeadReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the worker does with the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Done: acknowledge it.
    Ack,
    /// Publish a copy to delay tier `tier` as attempt `next_attempt`, then ack.
    Retry {
        /// The attempt number the copy will carry when it comes back.
        next_attempt: u32,
        /// Index into the tier list.
        tier: usize,
    },
    /// Publish a copy to `{prefix}.parked` without using an attempt, then ack.
    Park {
        /// Also announce the revocation on `{prefix}.reauth` (first failure of a
        /// token version only).
        announce_revocation: bool,
    },
    /// Publish a copy to `{prefix}.dead` with the reason, then ack.
    Dead(DeadReason),
}

impl Outcome {
    /// Stable name for metrics and spans (`warden.outcome`).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ack => "succeeded",
            Outcome::Retry { .. } => "retried",
            Outcome::Park { .. } => "parked",
            Outcome::Dead(_) => "dead",
        }
    }
}

/// The part of the configuration [`decide`] needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in total, the first included.
    pub max_attempts: u32,
    /// How many delay tiers exist.
    pub tiers: usize,
}

/// Maps what happened on `attempt` (1-based) to what happens to the message.
#[must_use]
pub fn decide(verdict: Verdict, attempt: u32, policy: RetryPolicy) -> Outcome {
    match verdict {
        Verdict::Succeeded => Outcome::Ack,
        Verdict::Malformed => Outcome::Dead(DeadReason::Malformed),
        Verdict::TooLarge => Outcome::Dead(DeadReason::TooLarge),
        Verdict::UnknownType => Outcome::Dead(DeadReason::UnknownType),
        Verdict::Crashed => Outcome::Dead(DeadReason::Crashed),
        Verdict::DeliveryLimit => Outcome::Dead(DeadReason::DeliveryLimit),
        Verdict::ChannelPending => Outcome::Park {
            announce_revocation: false,
        },
        Verdict::ChannelReauthFailed | Verdict::ParkExpired => {
            Outcome::Dead(DeadReason::ReauthFailed)
        }
        Verdict::Failed(ErrorKind::Permanent) => Outcome::Dead(DeadReason::Permanent),
        Verdict::Failed(ErrorKind::TokenRevoked) => Outcome::Park {
            announce_revocation: true,
        },
        Verdict::Failed(kind @ (ErrorKind::Transient | ErrorKind::Timeout | ErrorKind::Panic)) => {
            if attempt >= policy.max_attempts {
                Outcome::Dead(if kind == ErrorKind::Timeout {
                    DeadReason::TimeoutExhausted
                } else {
                    DeadReason::RetriesExhausted
                })
            } else {
                // Attempt 1 failing waits in tier 0; later retries climb the
                // schedule and stay on the longest tier once they reach it.
                let tier = (attempt as usize - 1).min(policy.tiers.saturating_sub(1));
                Outcome::Retry {
                    next_attempt: attempt + 1,
                    tier,
                }
            }
        }
    }
}

/// The tier to use when the platform asked for at least `min` (429
/// `Retry-After`): the decided tier, or the first longer one that satisfies it.
#[must_use]
pub fn tier_at_least(tiers: &[Duration], decided: usize, min: Option<Duration>) -> usize {
    let Some(min) = min else { return decided };
    (decided..tiers.len())
        .find(|&i| tiers[i] >= min)
        .unwrap_or(tiers.len().saturating_sub(1))
}

/// The delay a retry copy actually waits: its tier's delay scaled by `jitter`
/// (clamped to 0.5..=1.0), so that a burst of failures does not come back as a
/// burst. Never longer than the tier, whose queue TTL is the upper bound.
#[must_use]
pub fn jittered(tier_delay: Duration, jitter: f64) -> Duration {
    tier_delay.mul_f64(jitter.clamp(0.5, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: RetryPolicy = RetryPolicy {
        max_attempts: 3,
        tiers: 2,
    };

    #[test]
    fn every_row_of_the_outcome_table() {
        use DeadReason as R;
        use ErrorKind as K;
        use Outcome as O;
        use Verdict as V;
        let table: &[(Verdict, u32, Outcome)] = &[
            (V::Succeeded, 1, O::Ack),
            (V::Succeeded, 3, O::Ack),
            (
                V::Failed(K::Transient),
                1,
                O::Retry {
                    next_attempt: 2,
                    tier: 0,
                },
            ),
            (
                V::Failed(K::Transient),
                2,
                O::Retry {
                    next_attempt: 3,
                    tier: 1,
                },
            ),
            (V::Failed(K::Transient), 3, O::Dead(R::RetriesExhausted)),
            (
                V::Failed(K::Panic),
                1,
                O::Retry {
                    next_attempt: 2,
                    tier: 0,
                },
            ),
            (V::Failed(K::Panic), 3, O::Dead(R::RetriesExhausted)),
            (
                V::Failed(K::Timeout),
                2,
                O::Retry {
                    next_attempt: 3,
                    tier: 1,
                },
            ),
            (V::Failed(K::Timeout), 3, O::Dead(R::TimeoutExhausted)),
            (V::Failed(K::Permanent), 1, O::Dead(R::Permanent)),
            (
                V::Failed(K::TokenRevoked),
                1,
                O::Park {
                    announce_revocation: true,
                },
            ),
            (
                V::Failed(K::TokenRevoked),
                3,
                O::Park {
                    announce_revocation: true,
                },
            ),
            (
                V::ChannelPending,
                1,
                O::Park {
                    announce_revocation: false,
                },
            ),
            (V::ChannelReauthFailed, 1, O::Dead(R::ReauthFailed)),
            (V::ParkExpired, 1, O::Dead(R::ReauthFailed)),
            (V::Malformed, 1, O::Dead(R::Malformed)),
            (V::TooLarge, 1, O::Dead(R::TooLarge)),
            (V::UnknownType, 1, O::Dead(R::UnknownType)),
            (V::Crashed, 1, O::Dead(R::Crashed)),
            (V::DeliveryLimit, 1, O::Dead(R::DeliveryLimit)),
        ];
        for &(verdict, attempt, expected) in table {
            assert_eq!(
                decide(verdict, attempt, POLICY),
                expected,
                "{verdict:?} on attempt {attempt}"
            );
        }
    }

    #[test]
    fn later_retries_stay_on_the_longest_tier() {
        let p = RetryPolicy {
            max_attempts: 10,
            tiers: 2,
        };
        assert_eq!(
            decide(Verdict::Failed(ErrorKind::Transient), 7, p),
            Outcome::Retry {
                next_attempt: 8,
                tier: 1
            }
        );
    }

    #[test]
    fn an_absurd_attempt_number_goes_dead_not_around_again() {
        assert_eq!(
            decide(Verdict::Failed(ErrorKind::Transient), u32::MAX, POLICY),
            Outcome::Dead(DeadReason::RetriesExhausted)
        );
    }

    #[test]
    fn a_single_attempt_policy_never_retries() {
        let p = RetryPolicy {
            max_attempts: 1,
            tiers: 1,
        };
        assert_eq!(
            decide(Verdict::Failed(ErrorKind::Transient), 1, p),
            Outcome::Dead(DeadReason::RetriesExhausted)
        );
    }

    #[test]
    fn retry_after_moves_the_retry_to_a_long_enough_tier() {
        let tiers = [
            Duration::from_secs(1),
            Duration::from_secs(4),
            Duration::from_secs(16),
        ];
        assert_eq!(tier_at_least(&tiers, 0, None), 0);
        assert_eq!(tier_at_least(&tiers, 0, Some(Duration::from_secs(3))), 1);
        assert_eq!(tier_at_least(&tiers, 2, Some(Duration::from_secs(1))), 2);
        assert_eq!(tier_at_least(&tiers, 0, Some(Duration::from_secs(999))), 2);
    }

    #[test]
    fn jitter_never_exceeds_the_tier() {
        let d = Duration::from_secs(4);
        assert_eq!(jittered(d, 7.0), d);
        assert_eq!(jittered(d, 0.0), Duration::from_secs(2));
    }

    #[test]
    fn reasons_round_trip_through_their_wire_names() {
        for r in DeadReason::ALL {
            assert_eq!(DeadReason::parse(r.as_str()), Some(r));
        }
    }
}
