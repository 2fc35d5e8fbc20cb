//! The token endpoint's side of the provider's state: client authentication, the
//! `authorization_code` and `refresh_token` grants, and issuing token pairs.

use std::time::{Duration, Instant};

use secrecy::ExposeSecret as _;
use warden::reauth::flow::Pkce;

use super::{
    Data, GrantError, IssuedToken, ProviderState, TokenResponse, constant_time_eq, random_token,
};

/// Bound on remembered dead refresh tokens.
const MAX_DEAD_REFRESH: usize = 100_000;
/// Refresh tokens outlive access tokens by this factor.
const REFRESH_TTL_FACTOR: u32 = 24;

impl ProviderState {
    /// Whether `client_id` and `secret` are the registered client's.
    pub(in crate::provider) fn client_matches(&self, client_id: &str, secret: &str) -> bool {
        let config = &self.inner.config;
        client_id == config.client_id
            && constant_time_eq(
                config.client_secret.expose_secret().as_bytes(),
                secret.as_bytes(),
            )
    }

    pub(in crate::provider) fn redeem_code(
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

    pub(in crate::provider) fn redeem_refresh(
        &self,
        refresh_token: &str,
    ) -> Result<TokenResponse, GrantError> {
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

    pub(super) fn issue(
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
}
