//! What a worker knows about channels (the third-party accounts tasks act for):
//! their status and current access token, cached per process, and the messages
//! that tie the worker to `warden reauth`.
//!
//! The token store is the truth; the cache only spares it a query per task. It
//! is invalidated by `{prefix}.tokens` notices (a refreshed token), marked
//! pending locally the moment this process sees a revocation, and every entry
//! expires after [`CACHE_TTL`] so a notice missed during a reconnect cannot
//! leave a channel parked for long.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use crate::store::{ChannelStatus, StoreError, TokenStore};

/// How long a cached channel state is trusted.
pub const CACHE_TTL: Duration = Duration::from_secs(30);

/// A channel's access token and the version it has in the store.
#[derive(Clone)]
pub struct ChannelToken {
    /// The bearer token; never logged.
    pub access_token: SecretString,
    /// Its version; a 401 reports it so that only its first failure counts.
    pub version: u64,
}

impl std::fmt::Debug for ChannelToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChannelToken")
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

/// Whether tasks of a channel may run.
#[derive(Debug, Clone)]
pub enum ChannelState {
    /// Run, with this token.
    Active(ChannelToken),
    /// Re-auth is requested or running: park.
    Pending,
    /// Re-auth gave up: dead-letter as `reauth_failed`.
    Failed,
    /// The store knows no token for it.
    Missing,
}

/// `{prefix}.reauth` message: "the token of `channel` at `failed_version` was refused".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevocationRequest {
    /// The channel.
    pub channel: String,
    /// The version that failed; a re-auth for an older version is skipped.
    pub failed_version: u64,
    /// The task that saw the failure.
    pub task_id: String,
    /// When.
    pub at: DateTime<Utc>,
}

/// `{prefix}.tokens` message: "`channel` changed": a new token at `version`
/// (a re-auth or `warden token set`), or a re-auth of `version` that failed.
/// Workers drop their cached state of the channel either way. Never carries
/// the token itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRefreshed {
    /// The channel.
    pub channel: String,
    /// The new version.
    pub version: u64,
    /// When.
    pub at: DateTime<Utc>,
}

/// Opens the token store of `settings` with the key from `WARDEN_TOKEN_KEY` /
/// `WARDEN_TOKEN_KEY_FILE`, and registers every configured channel.
///
/// # Errors
/// A missing or bad key is a [`crate::config::ConfigError`] (exit 64): warden
/// refuses to store tokens it cannot encrypt. Database errors otherwise.
pub async fn open_store(settings: &crate::config::Settings) -> anyhow::Result<Arc<dyn TokenStore>> {
    let keys = crate::store::Keyring::from_env().map_err(|e| {
        crate::config::ConfigError::new(format!(
            "token key: {e}; set WARDEN_TOKEN_KEY (base64 of 32 random bytes, e.g. `openssl rand -base64 32`) or WARDEN_TOKEN_KEY_FILE"
        ))
    })?;
    let store = crate::store::connect(settings.token_store_url(), keys).await?;
    for (name, channel) in &settings.channels {
        store.ensure_channel(name, &channel.provider).await?;
    }
    Ok(store)
}

/// The per-process view of channel states.
pub struct Channels {
    store: Arc<dyn TokenStore>,
    cache: RwLock<HashMap<String, (Instant, ChannelState)>>,
}

impl std::fmt::Debug for Channels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Channels")
            .field("backend", &self.store.backend())
            .finish_non_exhaustive()
    }
}

impl Channels {
    /// A cache in front of `store`.
    #[must_use]
    pub fn new(store: Arc<dyn TokenStore>) -> Self {
        Self {
            store,
            cache: RwLock::new(HashMap::new()),
        }
    }

    /// The store behind the cache.
    #[must_use]
    pub fn store(&self) -> &Arc<dyn TokenStore> {
        &self.store
    }

    /// The state of `channel`, from the cache when fresh.
    ///
    /// # Errors
    /// The store could not be read (the task is then retried as transient).
    pub async fn state(&self, channel: &str) -> Result<ChannelState, StoreError> {
        if let Some((at, state)) = self
            .cache
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(channel)
            && at.elapsed() < CACHE_TTL
        {
            return Ok(state.clone());
        }
        let state = match self.store.get(channel).await? {
            None => ChannelState::Missing,
            Some(r) => match r.status {
                ChannelStatus::ReauthPending => ChannelState::Pending,
                ChannelStatus::ReauthFailed => ChannelState::Failed,
                ChannelStatus::Active => match self.store.token(channel).await? {
                    Some((t, version)) => ChannelState::Active(ChannelToken {
                        access_token: t.access_token,
                        version,
                    }),
                    None => ChannelState::Missing,
                },
            },
        };
        self.put(channel, state.clone());
        Ok(state)
    }

    fn put(&self, channel: &str, state: ChannelState) {
        self.cache
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(channel.to_owned(), (Instant::now(), state));
    }

    /// This process saw the token refused: park the channel's tasks at once,
    /// without waiting for the store round trip.
    pub fn set_pending(&self, channel: &str) {
        self.put(channel, ChannelState::Pending);
    }

    /// Forget `channel` (a `{prefix}.tokens` notice arrived).
    pub fn invalidate(&self, channel: &str) {
        self.cache
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(channel);
    }

    /// Forget everything (after a reconnect, notices may have been missed).
    pub fn clear(&self) {
        self.cache
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }
}
