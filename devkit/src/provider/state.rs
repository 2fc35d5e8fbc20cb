//! The provider's in-memory world: sessions, login transactions, codes, tokens, faults and
//! counters, behind one mutex that is never held across an `.await`.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore as _;
use secrecy::ExposeSecret as _;
use serde::{Deserialize, Serialize};
use totp_rs::{Algorithm, Secret, TOTP};
use warden::reauth::flow::Pkce;

use super::{ProviderConfig, ProviderError};

/// How long a login transaction (authorize → redirect with a code) may take.
const TRANSACTION_TTL: Duration = Duration::from_secs(600);
/// How long an authorization code stays redeemable, as RFC 6749 §4.1.2 recommends (≤ 10 min).
const CODE_TTL: Duration = Duration::from_secs(120);
/// Bound on remembered dead refresh tokens.
const MAX_DEAD_REFRESH: usize = 100_000;
/// Refresh tokens outlive access tokens by this factor.
const REFRESH_TTL_FACTOR: u32 = 24;

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

    // ----- browser-facing flow -------------------------------------------------------------

    /// Returns the session id to use, creating a session (with its CSRF token) when the
    /// cookie names none we know.
    pub(super) fn session(&self, cookie: Option<&str>) -> (String, bool) {
        let mut data = self.data();
        let now = Instant::now();
        if let Some(id) = cookie
            && let Some(session) = data.sessions.get_mut(id)
        {
            session.last_used = now;
            return (id.to_owned(), false);
        }
        // Every browser login starts with a fresh context, hence a fresh session: forget idle
        // ones so a long-running simulator does not grow without bound.
        data.sessions
            .retain(|_, s| now.duration_since(s.last_used) < TRANSACTION_TTL);
        let id = random_token("s_");
        data.sessions.insert(
            id.clone(),
            Session {
                csrf: random_token(""),
                last_used: now,
            },
        );
        (id, true)
    }

    pub(super) fn csrf(&self, session: &str) -> Option<String> {
        self.data().sessions.get(session).map(|s| s.csrf.clone())
    }

    pub(super) fn begin(
        &self,
        session: &str,
        redirect_uri: &str,
        scope: &str,
        state: Option<String>,
        code_challenge: Option<String>,
    ) -> String {
        let mut data = self.data();
        let now = Instant::now();
        data.transactions
            .retain(|_, t| now.duration_since(t.created) < TRANSACTION_TTL);
        data.codes.retain(|_, c| c.expires > now);
        data.access.retain(|_, t| t.expires > now);
        data.refresh.retain(|_, t| t.expires > now);
        let id = random_token("tx_");
        data.transactions.insert(
            id.clone(),
            Transaction {
                session: session.to_owned(),
                redirect_uri: redirect_uri.to_owned(),
                scope: scope.to_owned(),
                state,
                code_challenge,
                stage: Stage::Login,
                created: now,
            },
        );
        id
    }

    /// The transaction `tx`, provided it belongs to `session` and has not expired.
    pub(super) fn transaction(&self, tx: &str, session: Option<&str>) -> Option<Transaction> {
        let data = self.data();
        let t = data.transactions.get(tx)?;
        (Some(t.session.as_str()) == session && t.created.elapsed() < TRANSACTION_TTL)
            .then(|| t.clone())
    }

    fn set_stage(&self, tx: &str, stage: Stage) {
        if let Some(t) = self.data().transactions.get_mut(tx) {
            t.stage = stage;
        }
    }

    /// Checks a username/password. On success returns the channel and moves the
    /// transaction to TOTP or consent; on failure counts it.
    pub(super) fn check_password(&self, tx: &str, username: &str, password: &str) -> Option<Stage> {
        let found = self
            .inner
            .config
            .accounts
            .iter()
            .find(|(_, a)| a.username == username);
        let accepted = found.filter(|(_, a)| {
            constant_time_eq(a.password.expose_secret().as_bytes(), password.as_bytes())
        });
        let Some((channel, _)) = accepted else {
            let mut data = self.data();
            data.stats.failed_logins += 1;
            if let Some((channel, _)) = found {
                data.stats.channel(channel).failed_logins += 1;
            }
            drop(data);
            tracing::info!(
                channel = found.map(|(c, _)| c.as_str()),
                "simulated provider rejected a login"
            );
            return None;
        };
        let stage = if self.inner.totp.contains_key(channel) {
            Stage::Totp {
                channel: channel.clone(),
            }
        } else {
            self.logged_in(channel);
            Stage::Consent {
                channel: channel.clone(),
            }
        };
        self.set_stage(tx, stage.clone());
        Some(stage)
    }

    /// Checks a TOTP code for `channel`; on success moves the transaction to consent.
    pub(super) fn check_totp(&self, tx: &str, channel: &str, code: &str) -> bool {
        let ok = self
            .inner
            .totp
            .get(channel)
            .is_some_and(|t| t.check_current(code.trim()).unwrap_or(false));
        if ok {
            self.logged_in(channel);
            self.set_stage(
                tx,
                Stage::Consent {
                    channel: channel.to_owned(),
                },
            );
        } else {
            let mut data = self.data();
            data.stats.failed_totp += 1;
            data.stats.channel(channel).failed_totp += 1;
        }
        ok
    }

    fn logged_in(&self, channel: &str) {
        let mut data = self.data();
        data.stats.logins += 1;
        data.stats.channel(channel).logins += 1;
        drop(data);
        tracing::info!(channel, "simulated provider accepted a login");
    }

    /// Ends the transaction and issues an authorization code for it.
    pub(super) fn issue_code(&self, tx: &str, channel: &str) -> Option<(String, Transaction)> {
        let mut data = self.data();
        let t = data.transactions.remove(tx)?;
        let code = random_token("ac_");
        data.codes.insert(
            code.clone(),
            CodeGrant {
                channel: channel.to_owned(),
                redirect_uri: t.redirect_uri.clone(),
                scope: t.scope.clone(),
                code_challenge: t.code_challenge.clone(),
                expires: Instant::now() + CODE_TTL,
                redeemed_with: None,
            },
        );
        Some((code, t))
    }

    /// Ends the transaction without a code (the user pressed "Deny").
    pub(super) fn abandon(&self, tx: &str) -> Option<Transaction> {
        self.data().transactions.remove(tx)
    }

    // ----- token endpoint ------------------------------------------------------------------

    pub(super) fn client_matches(&self, client_id: &str, secret: &str) -> bool {
        let config = &self.inner.config;
        client_id == config.client_id
            && constant_time_eq(
                config.client_secret.expose_secret().as_bytes(),
                secret.as_bytes(),
            )
    }

    pub(super) fn redeem_code(
        &self,
        code: &str,
        redirect_uri: Option<&str>,
        code_verifier: Option<&str>,
    ) -> Result<TokenResponse, GrantError> {
        let mut data = self.data();
        let Some(grant) = data.codes.get(code) else {
            data.stats.token_errors += 1;
            return Err(GrantError::InvalidGrant(
                "unknown or expired authorization code",
            ));
        };
        if let Some((access, refresh)) = grant.redeemed_with.clone() {
            // A replayed code means it leaked: revoke what it bought (RFC 6749 §4.1.2).
            data.access.remove(&access);
            data.refresh.remove(&refresh);
            data.codes.remove(code);
            data.stats.token_errors += 1;
            return Err(GrantError::InvalidGrant("authorization code already used"));
        }
        if grant.expires <= Instant::now() {
            data.stats.token_errors += 1;
            return Err(GrantError::InvalidGrant("authorization code expired"));
        }
        if redirect_uri != Some(grant.redirect_uri.as_str()) {
            data.stats.token_errors += 1;
            return Err(GrantError::InvalidGrant("redirect_uri does not match"));
        }
        if let Some(challenge) = &grant.code_challenge {
            let verified = code_verifier.is_some_and(|v| {
                constant_time_eq(Pkce::challenge_of(v).as_bytes(), challenge.as_bytes())
            });
            if !verified {
                data.stats.token_errors += 1;
                return Err(GrantError::InvalidGrant(
                    "PKCE code_verifier does not match",
                ));
            }
        }
        let channel = grant.channel.clone();
        let scope = grant.scope.clone();
        let tokens = self.issue(&mut data, &channel, &scope, None);
        if let Some(grant) = data.codes.get_mut(code) {
            grant.redeemed_with = Some((tokens.access_token.clone(), tokens.refresh_token.clone()));
        }
        data.stats.token_grants.authorization_code += 1;
        data.stats.channel(&channel).token_grants.authorization_code += 1;
        Ok(tokens)
    }

    pub(super) fn redeem_refresh(&self, refresh_token: &str) -> Result<TokenResponse, GrantError> {
        let mut data = self.data();
        let Some(old) = data.refresh.remove(refresh_token) else {
            data.stats.token_errors += 1;
            if let Some(channel) = data.dead_refresh.get(refresh_token).cloned() {
                data.stats.channel(&channel).refresh_rejected += 1;
            }
            return Err(GrantError::InvalidGrant(
                "refresh token is invalid, revoked or already used",
            ));
        };
        if data.dead_refresh.len() >= MAX_DEAD_REFRESH {
            // Only for counting refused refreshes per channel; losing old entries is harmless.
            data.dead_refresh.clear();
        }
        data.dead_refresh
            .insert(refresh_token.to_owned(), old.channel.clone());
        if old.expires <= Instant::now() {
            data.stats.token_errors += 1;
            data.stats.channel(&old.channel).refresh_rejected += 1;
            return Err(GrantError::InvalidGrant("refresh token expired"));
        }
        // Rotation: the old refresh token is gone, the new pair replaces it.
        let tokens = self.issue(&mut data, &old.channel, &old.scope, None);
        data.stats.token_grants.refresh_token += 1;
        data.stats.channel(&old.channel).token_grants.refresh_token += 1;
        Ok(tokens)
    }

    fn issue(
        &self,
        data: &mut Data,
        channel: &str,
        scope: &str,
        lifetime: Option<Duration>,
    ) -> TokenResponse {
        let lifetime = lifetime.unwrap_or(self.inner.config.token_lifetime);
        let now = Instant::now();
        let access_token = random_token("at_");
        let refresh_token = random_token("rt_");
        data.access.insert(
            access_token.clone(),
            IssuedToken {
                channel: channel.to_owned(),
                scope: scope.to_owned(),
                expires: now + lifetime,
            },
        );
        data.refresh.insert(
            refresh_token.clone(),
            IssuedToken {
                channel: channel.to_owned(),
                scope: scope.to_owned(),
                expires: now + lifetime * REFRESH_TTL_FACTOR,
            },
        );
        TokenResponse {
            access_token,
            refresh_token,
            expires_in: lifetime.as_secs(),
            token_type: "Bearer".to_owned(),
            scope: scope.to_owned(),
        }
    }

    // ----- API -----------------------------------------------------------------------------

    /// Checks a bearer token, for `channel` when given, and counts the outcome.
    pub(super) fn check_bearer(&self, token: Option<&str>, channel: Option<&str>) -> BearerCheck {
        let mut data = self.data();
        let check = match token {
            None => BearerCheck::Missing,
            Some(token) => match data.access.get(token) {
                None => BearerCheck::Invalid("The access token is invalid or was revoked"),
                Some(t) if t.expires <= Instant::now() => {
                    BearerCheck::Invalid("The access token expired")
                }
                Some(t) if channel.is_some_and(|c| c != t.channel) => BearerCheck::WrongChannel,
                Some(t) => BearerCheck::Valid {
                    channel: t.channel.clone(),
                    scope: t.scope.clone(),
                },
            },
        };
        let counted = match (&check, channel) {
            (BearerCheck::Valid { channel, .. }, _) => Some((channel.clone(), true)),
            (_, Some(channel)) => Some((channel.to_owned(), false)),
            (_, None) => None,
        };
        match counted {
            Some((channel, true)) => {
                data.stats.api_ok += 1;
                data.stats.channel(&channel).api_ok += 1;
            }
            Some((channel, false)) => {
                data.stats.api_rejected += 1;
                data.stats.channel(&channel).api_rejected += 1;
                data.last_rejected.insert(channel, Instant::now());
            }
            None => data.stats.api_rejected += 1,
        }
        check
    }

    /// Takes one injected fault for `channel`, if any is pending.
    pub(super) fn take_fault(&self, channel: &str) -> Option<Fault> {
        let mut data = self.data();
        let fault = data.faults.get_mut(channel)?;
        let taken = fault.clone();
        match fault.times {
            0 => {}
            1 => {
                data.faults.remove(channel);
            }
            _ => fault.times -= 1,
        }
        data.stats.channel(channel).api_faults += 1;
        Some(taken)
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
