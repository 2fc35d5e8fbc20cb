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

/// Most channel states a process caches. Channel names come from task bodies,
/// so without a bound a producer could grow the cache without limit; with it,
/// the cache costs at most this many entries of at most
/// [`crate::amqp::envelope::MAX_CHANNEL_BYTES`] each, and a flood of names only costs
/// store queries.
pub const MAX_CACHED: usize = 10_000;

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
        let asked = Instant::now();
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
        // A miss is not cached: any name a producer invents would otherwise
        // stay for a TTL, and the answer costs one indexed query anyway.
        if matches!(state, ChannelState::Missing) {
            return Ok(state);
        }
        Ok(self.put(channel, state, asked))
    }

    /// Caches `state`, learned from a read that started at `asked`, and
    /// returns what the cache now says. What this process learned while the
    /// store answered wins over the answer: a task that saw the token refused
    /// meanwhile has set the channel pending, and the older read must not make
    /// it active again (the next task would call the platform with the dead
    /// token). Checked and written under one lock.
    fn put(&self, channel: &str, state: ChannelState, asked: Instant) -> ChannelState {
        let mut cache = self.cache.write().unwrap_or_else(|p| p.into_inner());
        if let Some((at, newer)) = cache.get(channel)
            && *at >= asked
        {
            return newer.clone();
        }
        if cache.len() >= MAX_CACHED && !cache.contains_key(channel) {
            cache.retain(|_, (at, _)| at.elapsed() < CACHE_TTL);
            if cache.len() >= MAX_CACHED {
                // Still full of fresh entries: drop the oldest. Linear, but
                // only on this overflow path, and the store stays the truth.
                if let Some(oldest) = cache
                    .iter()
                    .min_by_key(|(_, (at, _))| *at)
                    .map(|(k, _)| k.clone())
                {
                    cache.remove(&oldest);
                }
            }
        }
        cache.insert(channel.to_owned(), (Instant::now(), state.clone()));
        state
    }

    /// This process saw the token refused: park the channel's tasks at once,
    /// without waiting for the store round trip.
    pub fn set_pending(&self, channel: &str) {
        self.put(channel, ChannelState::Pending, Instant::now());
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

#[cfg(test)]
mod tests {
    use super::*;

    fn cached(c: &Channels) -> usize {
        c.cache.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    #[tokio::test]
    async fn unknown_channels_are_not_cached_and_the_cache_is_bounded() {
        let store = crate::store::connect("sqlite::memory:", crate::store::Keyring::generate())
            .await
            .unwrap();
        let channels = Channels::new(store);
        for i in 0..1_000 {
            let state = channels.state(&format!("nobody-{i}")).await.unwrap();
            assert!(matches!(state, ChannelState::Missing));
        }
        assert_eq!(cached(&channels), 0, "misses are not cached");
        for i in 0..MAX_CACHED + 500 {
            channels.set_pending(&format!("pending-{i}"));
        }
        assert_eq!(cached(&channels), MAX_CACHED);
        // The newest entry survived the overflow.
        assert!(matches!(
            channels
                .state(&format!("pending-{}", MAX_CACHED + 499))
                .await
                .unwrap(),
            ChannelState::Pending
        ));
    }
}
