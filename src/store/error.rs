//! Why a store operation failed, in kinds a caller can act on: the database is unreachable (try
//! again later), the channel is unknown (a caller's mistake), or the keyring cannot open a token
//! (an operator's problem).

use super::crypto::{DecryptError, KeyError};

/// Why a store operation failed. No variant carries a token, a key or a connection password.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The URL's scheme is neither `sqlite:` nor `postgres://`.
    #[error("unsupported token store URL scheme {scheme:?} (use sqlite://path.db or postgres://…)")]
    UnsupportedUrl {
        /// The scheme found.
        scheme: String,
    },
    /// The PostgreSQL schema name is not a plain identifier.
    #[error("invalid PostgreSQL schema name {0:?} (use letters, digits and underscores)")]
    InvalidSchema(String),
    /// The channel has no row; call `ensure_channel` or `put_token` first.
    #[error("unknown channel {0:?}")]
    UnknownChannel(String),
    /// `put_token` was given an empty access token.
    #[error("refusing to store an empty access token")]
    EmptyAccessToken,
    /// The stored token cannot be decrypted with this keyring.
    #[error("cannot decrypt the token of channel {channel:?}: {source}")]
    Decrypt {
        /// The channel.
        channel: String,
        /// Why.
        source: DecryptError,
    },
    /// A row holds a value the store never writes.
    #[error("corrupt token store row for channel {channel:?}: {reason}")]
    Corrupt {
        /// The channel.
        channel: String,
        /// What is wrong.
        reason: String,
    },
    /// The database failed.
    #[error("token store database error: {0}")]
    Database(#[from] sqlx::Error),
    /// A migration failed.
    #[error("token store migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The key could not be loaded.
    #[error(transparent)]
    Key(#[from] KeyError),
}

impl StoreError {
    /// Whether the error means the keyring lacks the key (or has the wrong one): an operator
    /// problem, not a transient one.
    #[must_use]
    pub fn is_key_problem(&self) -> bool {
        matches!(self, Self::Decrypt { .. } | Self::Key(_))
    }

    /// Whether the database could not be reached or did not answer in time, so the same call
    /// may succeed later unchanged. A closed pool is not: this process closed it.
    #[must_use]
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            Self::Database(
                sqlx::Error::Io(_)
                    | sqlx::Error::Tls(_)
                    | sqlx::Error::PoolTimedOut
                    | sqlx::Error::WorkerCrashed
            )
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_tell_an_unreachable_database_from_a_missing_key_and_an_unknown_channel() {
        let timed_out = StoreError::Database(sqlx::Error::PoolTimedOut);
        let refused = StoreError::Database(sqlx::Error::Io(
            std::io::ErrorKind::ConnectionRefused.into(),
        ));
        let unknown = StoreError::UnknownChannel("acme".to_owned());
        let key = StoreError::Key(KeyError::Missing);
        assert!(timed_out.is_unavailable() && refused.is_unavailable());
        assert!(!timed_out.is_key_problem());
        assert!(!unknown.is_unavailable() && !unknown.is_key_problem());
        assert!(key.is_key_problem() && !key.is_unavailable());
        assert!(!StoreError::Database(sqlx::Error::PoolClosed).is_unavailable());
    }
}
