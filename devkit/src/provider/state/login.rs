//! The browser-facing side of the provider's state: sessions with their CSRF token, login
//! transactions from `/oauth/authorize` through the password and TOTP pages to the
//! authorization code.

use std::time::{Duration, Instant};

use secrecy::ExposeSecret as _;

use super::{
    CodeGrant, ProviderState, Session, Stage, Transaction, constant_time_eq, random_token,
};

/// How long a login transaction (authorize → redirect with a code) may take.
const TRANSACTION_TTL: Duration = Duration::from_secs(600);
/// How long an authorization code stays redeemable, as RFC 6749 §4.1.2 recommends (≤ 10 min).
const CODE_TTL: Duration = Duration::from_secs(120);

impl ProviderState {
    /// Returns the session id to use, creating a session (with its CSRF token) when the
    /// cookie names none we know.
    pub(in crate::provider) fn session(&self, cookie: Option<&str>) -> (String, bool) {
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

    pub(in crate::provider) fn csrf(&self, session: &str) -> Option<String> {
        self.data().sessions.get(session).map(|s| s.csrf.clone())
    }

    pub(in crate::provider) fn begin(
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
    pub(in crate::provider) fn transaction(
        &self,
        tx: &str,
        session: Option<&str>,
    ) -> Option<Transaction> {
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
    pub(in crate::provider) fn check_password(
        &self,
        tx: &str,
        username: &str,
        password: &str,
    ) -> Option<Stage> {
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
    pub(in crate::provider) fn check_totp(&self, tx: &str, channel: &str, code: &str) -> bool {
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
    pub(in crate::provider) fn issue_code(
        &self,
        tx: &str,
        channel: &str,
    ) -> Option<(String, Transaction)> {
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
    pub(in crate::provider) fn abandon(&self, tx: &str) -> Option<Transaction> {
        self.data().transactions.remove(tx)
    }
}
