//! The provider's in-memory world: sessions, login transactions, codes, tokens, faults and
//! counters, behind one mutex that is never held across an `.await`. This module holds the
//! data and what `/admin` and tests do with it; the browser-facing flow ([`login`]), the
//! token endpoint ([`grants`]) and the API's bearer checks ([`bearer`]) each add their
//! methods from a module of their own.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore as _;
use secrecy::ExposeSecret as _;
use serde::{Deserialize, Serialize};
use totp_rs::{Algorithm, Secret, TOTP};

use super::{ProviderConfig, ProviderError};

mod bearer;
mod grants;
mod login;

/// Shared state of one simulated provider. Cheap to clone.
#[derive(Clone)]
pub struct ProviderState {
    inner: Arc<Inner>,
}

impl fmt::Debug for ProviderState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The config's secrets are SecretStrings and would print redacted, but the channel
        // list is all a reader needs.
        f.debug_struct("ProviderState")
            .field("client_id", &self.inner.config.client_id)
            .field("channels", &self.inner.config.accounts.keys())
            .finish_non_exhaustive()
    }
}

struct Inner {
    config: ProviderConfig,
    totp: HashMap<String, TOTP>,
    data: Mutex<Data>,
    /// While true, login form submissions wait: a test's way to catch a
    /// browser login in the middle (see [`ProviderState::hold_logins`]).
    hold: tokio::sync::watch::Sender<bool>,
    /// Login submissions waiting on `hold` right now.
    held: std::sync::atomic::AtomicUsize,
    /// While non-zero, the status every login page and token request is
    /// answered with (see [`ProviderState::set_outage`]).
    outage: std::sync::atomic::AtomicU16,
}

#[derive(Default)]
struct Data {
    sessions: HashMap<String, Session>,
    transactions: HashMap<String, Transaction>,
    codes: HashMap<String, CodeGrant>,
    access: HashMap<String, IssuedToken>,
    refresh: HashMap<String, IssuedToken>,
    /// Refresh tokens that were revoked or rotated away, by channel, so a refused refresh
    /// grant is still counted against its channel.
    dead_refresh: HashMap<String, String>,
    faults: HashMap<String, Fault>,
    /// When each channel last had an API call refused: a benchmark's clock
    /// starts at the first 401, which only the platform sees exactly.
    last_rejected: HashMap<String, Instant>,
    stats: ProviderStats,
}

pub(super) struct Session {
    pub csrf: String,
    last_used: Instant,
}

/// One authorization request on its way through login, TOTP and consent.
#[derive(Clone)]
pub(super) struct Transaction {
    pub session: String,
    pub redirect_uri: String,
    pub scope: String,
    pub state: Option<String>,
    pub code_challenge: Option<String>,
    pub stage: Stage,
    pub created: Instant,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Stage {
    Login,
    Totp { channel: String },
    Consent { channel: String },
}

struct CodeGrant {
    channel: String,
    redirect_uri: String,
    scope: String,
    code_challenge: Option<String>,
    expires: Instant,
    /// Set once redeemed; a second redemption revokes what the first one issued (RFC 6749
    /// §4.1.2), so the grant is kept to know which tokens those were.
    redeemed_with: Option<(String, String)>,
}

#[derive(Clone)]
struct IssuedToken {
    channel: String,
    scope: String,
    expires: Instant,
}

/// A fault injected into a channel's API calls.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
pub struct Fault {
    /// HTTP status to answer with (e.g. 429, 500, 503).
    pub status: u16,
    /// How many calls get it; `0` means every call until cleared.
    #[serde(default)]
    pub times: u32,
    /// `Retry-After` seconds to send along (for 429 and 503).
    #[serde(default)]
    pub retry_after_secs: Option<u64>,
}

/// The token endpoint's success body (RFC 6749 §5.1).
#[derive(Clone, Serialize, Deserialize)]
pub struct TokenResponse {
    /// The bearer token for the API.
    pub access_token: String,
    /// Redeems a new access token; rotated on every use.
    pub refresh_token: String,
    /// Seconds until the access token expires.
    pub expires_in: u64,
    /// Always `Bearer`.
    pub token_type: String,
    /// The granted scope.
    pub scope: String,
}

impl fmt::Debug for TokenResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenResponse")
            .field("access_token", &"[REDACTED]")
            .field("refresh_token", &"[REDACTED]")
            .field("expires_in", &self.expires_in)
            .field("token_type", &self.token_type)
            .field("scope", &self.scope)
            .finish()
    }
}

/// Counters served at `GET /admin/stats`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ProviderStats {
    /// Successful browser logins (credentials and, where asked, TOTP accepted).
    pub logins: u64,
    /// Rejected username/password submissions.
    pub failed_logins: u64,
    /// Rejected TOTP codes.
    pub failed_totp: u64,
    /// Tokens issued, by grant type.
    pub token_grants: GrantStats,
    /// Token requests answered with an RFC 6749 error.
    pub token_errors: u64,
    /// API calls answered 200.
    pub api_ok: u64,
    /// API calls answered 401/403.
    pub api_rejected: u64,
    /// Login pages and token requests answered with the outage status.
    #[serde(default)]
    pub outage_answers: u64,
    /// Counters per channel.
    pub channels: BTreeMap<String, ChannelStats>,
}

/// Token grants by type.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct GrantStats {
    /// `grant_type=authorization_code` successes.
    pub authorization_code: u64,
    /// `grant_type=refresh_token` successes.
    pub refresh_token: u64,
    /// Tokens minted through `/admin/channels/{channel}/tokens`.
    pub minted: u64,
}

/// Counters of one channel.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ChannelStats {
    /// Successful browser logins.
    pub logins: u64,
    /// Rejected passwords for this channel's username.
    pub failed_logins: u64,
    /// Rejected TOTP codes.
    pub failed_totp: u64,
    /// Tokens issued, by grant type.
    pub token_grants: GrantStats,
    /// Refresh grants refused (revoked, rotated or unknown refresh token).
    pub refresh_rejected: u64,
    /// API calls answered 200.
    pub api_ok: u64,
    /// API calls answered 401/403: each is a call made with a dead or foreign token.
    pub api_rejected: u64,
    /// API calls answered with an injected fault.
    pub api_faults: u64,
    /// Admin revocations (all tokens or access tokens only).
    pub revocations: u64,
    /// The `Idempotency-Key` of every API call that carried one, in order.
    #[serde(default)]
    pub idempotency_keys: Vec<String>,
}

/// Outcome of checking a bearer token for a channel.
pub(super) enum BearerCheck {
    Valid { channel: String, scope: String },
    Missing,
    Invalid(&'static str),
    WrongChannel,
}

/// Outcome of a token request, mapped to RFC 6749 errors by the handler.
pub(super) enum GrantError {
    InvalidGrant(&'static str),
}

impl ProviderState {
    /// Validates `config` and builds an empty provider world.
    ///
    /// # Errors
    /// Returns [`ProviderError::Config`] when a TOTP seed is not valid base32 of at least
    /// 128 bits, or two channels share a username.
    pub fn new(config: ProviderConfig) -> Result<Self, ProviderError> {
        let mut totp = HashMap::new();
        let mut usernames = HashMap::new();
        for (channel, account) in &config.accounts {
            if let Some(other) = usernames.insert(account.username.clone(), channel.clone()) {
                return Err(ProviderError::Config(format!(
                    "channels {other} and {channel} share a username"
                )));
            }
            if let Some(seed) = &account.totp_secret {
                let generator = totp_from_base32(seed.expose_secret()).map_err(|why| {
                    ProviderError::Config(format!("channel {channel}: totp_secret {why}"))
                })?;
                totp.insert(channel.clone(), generator);
            }
        }
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                totp,
                data: Mutex::new(Data::default()),
                hold: tokio::sync::watch::Sender::new(false),
                held: std::sync::atomic::AtomicUsize::new(0),
                outage: std::sync::atomic::AtomicU16::new(0),
            }),
        })
    }

    pub(super) fn config(&self) -> &ProviderConfig {
        &self.inner.config
    }

    fn data(&self) -> MutexGuard<'_, Data> {
        // A panic while holding the lock leaves plain maps behind, still consistent enough
        // for a simulator; recover rather than poison every later request.
        self.inner
            .data
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> ProviderStats {
        self.data().stats.clone()
    }

    /// Revokes every access and refresh token of `channel`, as a platform does when a user
    /// removes the app or the platform suspects abuse.
    pub fn revoke(&self, channel: &str) {
        let mut data = self.data();
        data.access.retain(|_, t| t.channel != channel);
        let revoked: Vec<String> = data
            .refresh
            .iter()
            .filter(|(_, t)| t.channel == channel)
            .map(|(k, _)| k.clone())
            .collect();
        for token in revoked {
            data.refresh.remove(&token);
            data.dead_refresh.insert(token, channel.to_owned());
        }
        data.stats.channel(channel).revocations += 1;
    }

    /// When an API call for `channel` was last refused (401/403).
    pub fn last_rejected(&self, channel: &str) -> Option<Instant> {
        self.data().last_rejected.get(channel).copied()
    }

    /// Revokes `channel`'s access tokens only, so the refresh grant can heal it.
    pub fn revoke_access(&self, channel: &str) {
        let mut data = self.data();
        data.access.retain(|_, t| t.channel != channel);
        data.stats.channel(channel).revocations += 1;
    }

    /// Issues a token pair for `channel` without a browser, for seeding a token store.
    /// Returns `None` for an unknown channel.
    pub fn mint_tokens(&self, channel: &str) -> Option<TokenResponse> {
        if !self.inner.config.accounts.contains_key(channel) {
            return None;
        }
        let mut data = self.data();
        data.stats.token_grants.minted += 1;
        data.stats.channel(channel).token_grants.minted += 1;
        Some(self.issue(&mut data, channel, "", None))
    }

    /// Makes the next `fault.times` API calls for `channel` fail with `fault.status`.
    pub fn set_fault(&self, channel: &str, fault: Fault) {
        self.data().faults.insert(channel.to_owned(), fault);
    }

    /// Removes any fault injected for `channel`.
    pub fn clear_fault(&self, channel: &str) {
        self.data().faults.remove(channel);
    }

    /// While `hold` is true, every login form submission waits before it is
    /// checked, so a test can act on a browser that is surely mid-login (kill
    /// it, say). Releasing lets the waiting submissions through.
    pub fn hold_logins(&self, hold: bool) {
        self.inner.hold.send_replace(hold);
    }

    /// With `Some(status)`, the OAuth side of the provider is down: every
    /// authorization page, login page and token request is answered with
    /// `status` (a 503, say) until `None`. The API and admin endpoints stay
    /// up, as when only the identity service of a platform fails.
    pub fn set_outage(&self, status: Option<u16>) {
        self.inner
            .outage
            .store(status.unwrap_or(0), std::sync::atomic::Ordering::SeqCst);
    }

    /// The status of an outage set by [`Self::set_outage`], counting the
    /// answer it is about to be sent as.
    pub(super) fn outage_answer(&self) -> Option<u16> {
        match self.inner.outage.load(std::sync::atomic::Ordering::SeqCst) {
            0 => None,
            status => {
                self.data().stats.outage_answers += 1;
                Some(status)
            }
        }
    }

    /// Records the `Idempotency-Key` an API call for `channel` carried.
    pub(super) fn record_idempotency_key(&self, channel: &str, key: &str) {
        self.data()
            .stats
            .channel(channel)
            .idempotency_keys
            .push(key.to_owned());
    }

    /// How many login submissions are waiting on [`Self::hold_logins`] now.
    pub fn logins_on_hold(&self) -> usize {
        self.inner.held.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Waits while logins are held. A submission whose browser goes away is
    /// dropped by the server and stops counting as waiting.
    pub(super) async fn wait_while_held(&self) {
        use std::sync::atomic::Ordering::SeqCst;
        struct Waiting<'a>(&'a std::sync::atomic::AtomicUsize);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, SeqCst);
            }
        }
        let mut rx = self.inner.hold.subscribe();
        if !*rx.borrow() {
            return;
        }
        self.inner.held.fetch_add(1, SeqCst);
        let _waiting = Waiting(&self.inner.held);
        // The sender lives as long as `self`, so this only ends on release.
        let _ = rx.wait_for(|held| !held).await;
    }
}

impl ProviderStats {
    fn channel(&mut self, channel: &str) -> &mut ChannelStats {
        self.channels.entry(channel.to_owned()).or_default()
    }
}

/// A URL-safe random token of 256 bits with a recognisable prefix, so a leaked one is easy
/// to grep for (the way GitHub prefixes its tokens).
fn random_token(prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("{prefix}{}", URL_SAFE_NO_PAD.encode(bytes))
}

fn totp_from_base32(seed: &str) -> Result<TOTP, &'static str> {
    let bytes = Secret::Encoded(seed.trim().replace(' ', "").to_uppercase())
        .to_bytes()
        .map_err(|_| "is not valid base32")?;
    // Skew 1 accepts the previous and next 30 s step, as most providers do.
    TOTP::new(Algorithm::SHA1, 6, 1, 30, bytes).map_err(|_| "is shorter than 128 bits")
}

/// Compares secrets without an early exit, so response timing says nothing about how much
/// of a guess was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
