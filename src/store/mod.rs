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
//! Two backends share one trait: SQLite (a file, WAL mode; the embedded default) and PostgreSQL
//! (for replicas). Both embed their migrations. Every multi-writer operation is a single SQL
//! statement, so its atomicity comes from the database and not from application locking.

pub mod crypto;
mod postgres;
mod sqlite;

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use secrecy::zeroize::Zeroizing;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

pub use crypto::{DecryptError, KeyError, Keyring, TokenKey};

/// Longest re-auth lease granted; longer TTLs are cut to this, so a typo cannot wedge a channel
/// for centuries (or overflow a timestamp).
pub const MAX_LEASE_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// Longest `last_error` kept, in characters; longer messages are truncated.
pub const MAX_ERROR_LEN: usize = 1000;

/// Where a channel stands in the re-auth cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChannelStatus {
    /// The token is believed good; tasks run.
    Active,
    /// The token was revoked and a re-auth is requested or running; tasks park.
    ReauthPending,
    /// Re-auth gave up; tasks go dead with reason `reauth_failed` until a token is set.
    ReauthFailed,
}

impl ChannelStatus {
    /// The stored and displayed name: `active`, `reauth_pending` or `reauth_failed`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::ReauthPending => "reauth_pending",
            Self::ReauthFailed => "reauth_failed",
        }
    }
}

impl fmt::Display for ChannelStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A string that is not one of the three status names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown channel status {0:?} (expected active, reauth_pending or reauth_failed)")]
pub struct ParseStatusError(String);

impl FromStr for ChannelStatus {
    type Err = ParseStatusError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "active" => Ok(Self::Active),
            "reauth_pending" => Ok(Self::ReauthPending),
            "reauth_failed" => Ok(Self::ReauthFailed),
            other => Err(ParseStatusError(other.to_owned())),
        }
    }
}

/// A channel's metadata. It holds no token by construction, so it is safe to print, log and
/// serialize (for `warden channels list|status`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChannelRecord {
    /// The channel name.
    pub channel: String,
    /// The provider the channel authenticates with.
    pub provider: String,
    /// Token version: 0 before the first token, then +1 on every token change.
    pub version: u64,
    /// Re-auth status.
    pub status: ChannelStatus,
    /// Why the last re-auth failed; cleared when a token is stored.
    pub last_error: Option<String>,
    /// Whether a token is stored at all.
    pub has_token: bool,
    /// When the access token expires, if the provider said.
    pub token_expires_at: Option<DateTime<Utc>>,
    /// Who holds the re-auth lease, if anyone (it may have expired).
    pub lease_holder: Option<String>,
    /// When the lease expires.
    pub lease_expires_at: Option<DateTime<Utc>>,
    /// When the token or status last changed.
    pub updated_at: DateTime<Utc>,
}

/// A channel's tokens. `Debug` redacts both tokens.
#[derive(Debug, Clone)]
pub struct TokenSet {
    /// The bearer token sent to the platform.
    pub access_token: SecretString,
    /// The refresh token, if the provider issued one.
    pub refresh_token: Option<SecretString>,
    /// When the access token expires, if known.
    pub expires_at: Option<DateTime<Utc>>,
}

/// Longest token lifetime warden records (ten years). Providers and operators
/// can claim any `expires_in`; past this it means "does not expire soon", and
/// the clamp keeps every stored time a valid four-digit year in both backends
/// (a year past 9999 made one SQLite row unreadable for `warden channels`).
pub const MAX_TOKEN_LIFETIME: std::time::Duration =
    std::time::Duration::from_secs(10 * 366 * 86_400);

/// When a token that lives `lifetime` from `now` expires, with lifetimes past
/// [`MAX_TOKEN_LIFETIME`] clamped, so no `expires_in` can overflow a date.
#[must_use]
pub fn expiry_after(now: DateTime<Utc>, lifetime: std::time::Duration) -> DateTime<Utc> {
    let lifetime = chrono::Duration::from_std(lifetime.min(MAX_TOKEN_LIFETIME))
        .unwrap_or_else(|_| chrono::Duration::zero());
    now.checked_add_signed(lifetime).unwrap_or(now)
}

/// `expires_at` as stored: at most [`MAX_TOKEN_LIFETIME`] from now, whatever a
/// caller of [`TokenStore::put_token`] built.
fn stored_expiry(expires_at: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
    expires_at.map(|t| t.min(expiry_after(Utc::now(), MAX_TOKEN_LIFETIME)))
}

impl TokenSet {
    /// A token set with only an access token.
    #[must_use]
    pub fn new(access_token: impl Into<SecretString>) -> Self {
        Self {
            access_token: access_token.into(),
            refresh_token: None,
            expires_at: None,
        }
    }
}

/// The plaintext that gets sealed: every field of a [`TokenSet`], so the expiry is authenticated
/// along with the tokens. Short-lived and zeroized after use.
#[derive(Serialize)]
struct SealedPayloadOut<'a> {
    v: u8,
    access_token: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    refresh_token: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_at: Option<DateTime<Utc>>,
}

#[derive(Deserialize)]
struct SealedPayloadIn {
    v: u8,
    access_token: SecretString,
    refresh_token: Option<SecretString>,
    expires_at: Option<DateTime<Utc>>,
}

/// Seals a token set for a channel with the keyring's current key.
fn seal(
    keys: &Keyring,
    channel: &str,
    version: u64,
    tokens: &TokenSet,
) -> Result<crypto::Sealed, StoreError> {
    if tokens.access_token.expose_secret().is_empty() {
        return Err(StoreError::EmptyAccessToken);
    }
    let payload = SealedPayloadOut {
        v: 1,
        access_token: tokens.access_token.expose_secret(),
        refresh_token: tokens
            .refresh_token
            .as_ref()
            .map(ExposeSecret::expose_secret),
        expires_at: stored_expiry(tokens.expires_at),
    };
    let json = Zeroizing::new(serde_json::to_vec(&payload).expect("token payload serializes"));
    Ok(keys.encrypt(channel, version, &json))
}

/// Opens a channel's sealed token set.
fn open(
    keys: &Keyring,
    channel: &str,
    version: u64,
    sealed: &crypto::Sealed,
) -> Result<TokenSet, StoreError> {
    let json = keys
        .decrypt(channel, version, sealed)
        .map_err(|source| StoreError::Decrypt {
            channel: channel.to_owned(),
            source,
        })?;
    // serde_json's error can quote input; the input is the plaintext token, so drop the detail.
    let payload: SealedPayloadIn =
        serde_json::from_slice(&json).map_err(|_| StoreError::Corrupt {
            channel: channel.to_owned(),
            reason: "decrypted token payload is not valid JSON".to_owned(),
        })?;
    if payload.v != 1 {
        return Err(StoreError::Corrupt {
            channel: channel.to_owned(),
            reason: format!("unknown token payload version {}", payload.v),
        });
    }
    Ok(TokenSet {
        access_token: payload.access_token,
        refresh_token: payload.refresh_token,
        expires_at: payload.expires_at,
    })
}

/// Cuts an error message to [`MAX_ERROR_LEN`] characters.
fn clip_error(error: &str) -> &str {
    error
        .char_indices()
        .nth(MAX_ERROR_LEN)
        .map_or(error, |(i, _)| &error[..i])
}

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
}

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
        "sqlite" => Ok(Arc::new(
            sqlite::SqliteStore::connect(url, keys, &options).await?,
        )),
        "postgres" | "postgresql" => Ok(Arc::new(
            postgres::PgStore::connect(url, keys, &options).await?,
        )),
        other => Err(StoreError::UnsupportedUrl {
            scheme: other.to_owned(),
        }),
    }
}

/// Converts a stored version (never negative, by a CHECK constraint) to the API's `u64`.
fn version_from_db(channel: &str, v: i64) -> Result<u64, StoreError> {
    u64::try_from(v).map_err(|_| StoreError::Corrupt {
        channel: channel.to_owned(),
        reason: format!("negative version {v}"),
    })
}

/// Converts an API version to SQL's `BIGINT`. A version beyond `i64::MAX` cannot be stored, so
/// it can never match: map it to -1, which no row has.
fn version_to_db(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(-1)
}

fn status_from_db(channel: &str, s: &str) -> Result<ChannelStatus, StoreError> {
    s.parse()
        .map_err(|e: ParseStatusError| StoreError::Corrupt {
            channel: channel.to_owned(),
            reason: e.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_names_round_trip_in_snake_case() {
        for status in [
            ChannelStatus::Active,
            ChannelStatus::ReauthPending,
            ChannelStatus::ReauthFailed,
        ] {
            assert_eq!(status.as_str().parse::<ChannelStatus>().unwrap(), status);
            assert_eq!(
                serde_json::to_string(&status).unwrap(),
                format!("\"{}\"", status.as_str())
            );
        }
        assert_eq!(ChannelStatus::ReauthPending.as_str(), "reauth_pending");
        assert!("Active".parse::<ChannelStatus>().is_err());
    }

    #[test]
    fn token_set_debug_redacts_both_tokens() {
        let tokens = TokenSet {
            access_token: "acc-plaintext".into(),
            refresh_token: Some("ref-plaintext".into()),
            expires_at: None,
        };
        let debug = format!("{tokens:?}");
        assert!(
            !debug.contains("acc-plaintext") && !debug.contains("ref-plaintext"),
            "{debug}"
        );
    }

    #[test]
    fn any_lifetime_gives_an_expiry_within_ten_years_without_panicking() {
        let now = Utc::now();
        for secs in [0, 3_600, 300_000_000_000, 1_000_000_000_000_000, u64::MAX] {
            let at = expiry_after(now, std::time::Duration::from_secs(secs));
            assert!(
                at >= now && at <= now + chrono::Duration::days(3_660),
                "{secs}: {at}"
            );
        }
        assert_eq!(
            expiry_after(now, std::time::Duration::from_secs(3_600)),
            now + chrono::Duration::hours(1)
        );
        assert!(
            stored_expiry(Some(DateTime::<Utc>::MAX_UTC)).unwrap()
                < now + chrono::Duration::days(3_700)
        );
    }

    #[test]
    fn sealing_round_trips_every_field() {
        let keys = Keyring::generate();
        let expires = DateTime::parse_from_rfc3339("2030-01-02T03:04:05.123456Z")
            .unwrap()
            .with_timezone(&Utc);
        let tokens = TokenSet {
            access_token: "a".into(),
            refresh_token: Some("r".into()),
            expires_at: Some(expires),
        };
        let opened = open(&keys, "c", 1, &seal(&keys, "c", 1, &tokens).unwrap()).unwrap();
        assert_eq!(opened.access_token.expose_secret(), "a");
        assert_eq!(opened.refresh_token.unwrap().expose_secret(), "r");
        assert_eq!(opened.expires_at, Some(expires));
    }

    #[test]
    fn empty_access_tokens_are_refused() {
        let keys = Keyring::generate();
        assert!(matches!(
            seal(&keys, "c", 1, &TokenSet::new("")),
            Err(StoreError::EmptyAccessToken)
        ));
    }

    #[test]
    fn long_errors_are_clipped_on_a_character_boundary() {
        let long = "é".repeat(MAX_ERROR_LEN + 10);
        assert_eq!(clip_error(&long).chars().count(), MAX_ERROR_LEN);
        assert_eq!(clip_error("short"), "short");
    }

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
