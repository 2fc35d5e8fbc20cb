//! How a re-auth request ended.

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
