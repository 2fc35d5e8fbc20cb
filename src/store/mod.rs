//! The token store: per-channel OAuth tokens, their version and status, and the re-auth lease.
//!
//! Tasks act for *channels* (third-party accounts). When a platform revokes a channel's token,
//! every worker replica sees the failure at about the same time, and exactly one re-auth must
//! follow. This module is where that "exactly one" is decided, so it lives in a database shared by
//! every replica rather than in process memory:
//!
//! - **Version, compared and set.** Each token change bumps the channel's `version` by one. A
//!   worker that gets a 401 calls [`TokenStore::mark_pending`] with the version it used. The
//!   single `UPDATE … WHERE version = $failed AND status = 'active'` lets exactly one of any
//!   number of concurrent callers win. A caller holding a token that was already replaced
//!   loses, so a stale 401 can never knock a freshly healed channel back into re-auth.
//! - **Lease in the store.** `warden reauth` may run as several replicas, and the revocation
//!   queue may carry many events for one channel. [`TokenStore::try_acquire_lease`] gives one
//!   holder the channel for a bounded time. It is single-flight across processes, which the
//!   Python original's in-process `ongoing_reauths` set was not. The lease expires by itself,
//!   so a crashed holder cannot wedge a channel.
//!   [`TokenStore::put_token`] releases it in the same statement that stores the healed token.
//! - **Encryption at rest.** Tokens are sealed with AES-256-GCM before they reach SQL (see
//!   [`crypto`]), bound to their channel, tagged with the id of the key that sealed them.
//!   Metadata ([`ChannelRecord`]) is readable without a key and never carries a token.
//!
//! Two databases, one implementation: SQLite (a file, WAL mode; the embedded default) and
//! PostgreSQL (for replicas) run the same statements in `sql.rs`, and `sqlite.rs` and
//! `postgres.rs` hold only what differs: how each connects, and how it stores and reads the
//! time. Both embed their migrations. Every multi-writer operation is a single SQL statement, so
//! its atomicity comes from the database and not from application locking.
//!
//! | file | role |
//! | --- | --- |
//! | `channel.rs` | a channel's status, metadata and tokens |
//! | `error.rs` | [`StoreError`], by kind |
//! | `sealing.rs` | a token set as the sealed bytes a row holds |
//! | `crypto.rs`, `crypto/` | the keyring: AES-GCM sealing, keys and their ids, loading keys |
//! | `sql.rs` | the statements, over any database with a dialect |
//! | `sqlite.rs`, `postgres.rs` | connecting, and each database's dialect |

mod channel;
pub mod crypto;
mod error;
mod postgres;
mod sealing;
mod sql;
mod sqlite;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

pub use channel::{
    ChannelRecord, ChannelStatus, MAX_TOKEN_LIFETIME, ParseStatusError, TokenSet, expiry_after,
};
pub use crypto::{DecryptError, KeyError, Keyring, TokenKey};
pub use error::StoreError;

/// Longest re-auth lease granted; longer TTLs are cut to this, so a typo cannot wedge a channel
/// for centuries (or overflow a timestamp).
pub const MAX_LEASE_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// Longest `last_error` kept, in characters; longer messages are truncated.
pub const MAX_ERROR_LEN: usize = 1000;

/// The token store. Object-safe, so roles hold an `Arc<dyn TokenStore>` and never care which
/// backend is behind it.
#[async_trait]
pub trait TokenStore: Send + Sync {
    /// Which backend this is: `"sqlite"` or `"postgres"`.
    fn backend(&self) -> &'static str;

    /// Creates the channel's row (version 0, active, no token) unless it exists; an existing
    /// row is left untouched.
    async fn ensure_channel(&self, channel: &str, provider: &str) -> Result<(), StoreError>;

    /// The channel's metadata, or `None` if it has no row.
    async fn get(&self, channel: &str) -> Result<Option<ChannelRecord>, StoreError>;

    /// Every channel's metadata, ordered by name.
    async fn list(&self) -> Result<Vec<ChannelRecord>, StoreError>;

    /// The channel's decrypted tokens and their version, read together in one statement, or
    /// `None` if the channel is unknown or has no token yet.
    ///
    /// The version is what a caller passes to [`TokenStore::mark_pending`] when the token fails.
    async fn token(&self, channel: &str) -> Result<Option<(TokenSet, u64)>, StoreError>;

    /// Stores new tokens sealed with the current key, creating the row if needed. In the same
    /// statement it bumps the version by one, sets the status to `active`, clears `last_error`
    /// and releases the lease. Returns the new version.
    async fn put_token(
        &self,
        channel: &str,
        provider: &str,
        tokens: &TokenSet,
    ) -> Result<u64, StoreError>;

    /// Compare-and-set from `active` at `failed_version` to `reauth_pending`. Returns `true` for
    /// exactly one of any number of concurrent callers, and `false` if the token was already
    /// replaced (stale version) or the channel is already pending or failed. Unknown channels
    /// are an error.
    async fn mark_pending(&self, channel: &str, failed_version: u64) -> Result<bool, StoreError>;

    /// Sets `reauth_failed` with the reason and releases the lease. `error` must not contain
    /// secrets; it is clipped to [`MAX_ERROR_LEN`] characters.
    async fn mark_failed(&self, channel: &str, error: &str) -> Result<(), StoreError>;

    /// Takes the channel's re-auth lease for `ttl` (at most [`MAX_LEASE_TTL`]) if it is free,
    /// expired, or already held by `holder` (which renews it). Returns whether `holder` now
    /// holds it. Unknown channels are an error.
    async fn try_acquire_lease(
        &self,
        channel: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError>;

    /// Releases the lease if `holder` holds it. Returns whether it did. Unknown channels are an
    /// error.
    async fn release_lease(&self, channel: &str, holder: &str) -> Result<bool, StoreError>;

    /// Re-seals every token not sealed with the current key (after a key rotation), without
    /// changing versions, since the tokens themselves do not change. Returns how many rows
    /// were rewritten. Once it returns, the previous keys can be retired.
    async fn reencrypt_all(&self) -> Result<u64, StoreError>;

    /// Checks that the database answers (for readiness probes).
    async fn ping(&self) -> Result<(), StoreError>;

    /// Closes the connection pool, waiting for connections in use to be returned.
    async fn close(&self);
}

/// Tuning for [`connect_with`]. `Default` suits production.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct ConnectOptions {
    /// Maximum pool size (default: 5).
    pub max_connections: Option<u32>,
    /// PostgreSQL only: create this schema if missing and keep every table (including the
    /// migrations table) in it. Lets several deployments or tests share one database.
    /// Must be a plain identifier (letters, digits, underscores).
    pub postgres_schema: Option<String>,
}

impl ConnectOptions {
    /// Sets the maximum pool size.
    #[must_use]
    pub fn max_connections(mut self, n: u32) -> Self {
        self.max_connections = Some(n);
        self
    }

    /// Sets the PostgreSQL schema.
    #[must_use]
    pub fn postgres_schema(mut self, schema: impl Into<String>) -> Self {
        self.postgres_schema = Some(schema.into());
        self
    }
}

/// Opens the store at `url` and runs its migrations.
///
/// - `sqlite://path.db` (or `sqlite:path.db`): the file is created with owner-only permissions
///   if missing and used in WAL mode.
/// - `postgres://…` (or `postgresql://…`). PostgreSQL's own `?options=-c search_path=…` works
///   too, but [`connect_with`] can also create the schema.
///
/// # Errors
/// [`StoreError::UnsupportedUrl`] for other schemes; database and migration errors otherwise.
pub async fn connect(url: &str, keys: Keyring) -> Result<Arc<dyn TokenStore>, StoreError> {
    connect_with(url, keys, ConnectOptions::default()).await
}

/// [`connect`] with explicit options.
///
/// # Errors
/// As [`connect`], plus [`StoreError::InvalidSchema`].
pub async fn connect_with(
    url: &str,
    keys: Keyring,
    options: ConnectOptions,
) -> Result<Arc<dyn TokenStore>, StoreError> {
    let scheme = url.split_once(':').map_or("", |(scheme, _)| scheme);
    match scheme {
        "sqlite" => Ok(Arc::new(sqlite::connect(url, keys, &options).await?)),
        "postgres" | "postgresql" => Ok(Arc::new(postgres::connect(url, keys, &options).await?)),
        other => Err(StoreError::UnsupportedUrl {
            scheme: other.to_owned(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn unknown_url_schemes_are_rejected_by_name() {
        let err = connect("mysql://u:pw@h/db", Keyring::generate())
            .await
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("\"mysql\"") && !err.contains("pw"), "{err}");
    }
}
