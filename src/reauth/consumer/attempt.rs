//! One try to heal a channel: store the tokens an earlier try obtained, or run
//! the refresh-token grant, or log in with the browser; then store the new token.

use std::time::Instant;

use chrono::Utc;
use secrecy::{ExposeSecret as _, SecretString};
use tracing::Instrument as _;

use super::context::Ctx;
use super::error::HealError;
use super::login;
use crate::config::ChannelConfig;
use crate::reauth::flow::{ChannelCredentials, OAuthProvider, TokenSet as FlowTokens};
use crate::store::TokenSet;

/// What the tries of one request have learned so far.
#[derive(Default)]
pub(super) struct Tries {
    /// Tries made.
    pub(super) made: u32,
    /// Browser logins made.
    pub(super) browser: u32,
    /// Browser logins that failed on a page the provider served: counted
    /// against `reauth.max_attempts`.
    on_page: u32,
    /// The refresh grant cannot help (refused, or no refresh token).
    refresh_dead: bool,
    /// Tokens obtained but not stored (the store refused them): the next try
    /// stores them instead of logging in again, since the provider may have
    /// rotated the refresh token already.
    unsaved: Option<(FlowTokens, &'static str, Option<SecretString>)>,
}

/// One try: store tokens obtained earlier, or the refresh grant, or a
/// browser login; then store the new token. Returns the mode and version.
pub(super) async fn try_heal(
    ctx: &Ctx,
    channel: &str,
    tries: &mut Tries,
) -> Result<(&'static str, u64), HealError> {
    let (config, provider) = configured(ctx, channel)?;
    if let Some((tokens, mode, old)) = tries.unsaved.take() {
        return save(ctx, tries, channel, &config.provider, tokens, mode, old).await;
    }
    if !tries.refresh_dead
        && let Some(healed) = refresh_grant(ctx, tries, channel, config, provider).await?
    {
        return Ok(healed);
    }
    browser_login(ctx, tries, channel, config, provider).await
}

/// The channel's configuration and its provider's.
fn configured<'a>(
    ctx: &'a Ctx,
    channel: &str,
) -> Result<(&'a ChannelConfig, &'a OAuthProvider), HealError> {
    let config = ctx
        .settings
        .channels
        .get(channel)
        .ok_or_else(|| HealError::Config(format!("channel {channel:?} is not configured")))?;
    let provider = ctx
        .settings
        .providers
        .get(&config.provider)
        .ok_or_else(|| {
            HealError::Config(format!("provider {:?} is not configured", config.provider))
        })?;
    Ok((config, provider))
}

/// The refresh-token grant with the stored refresh token. `None` when only a
/// browser login can help now: there is no refresh token, or the provider
/// refused it.
async fn refresh_grant(
    ctx: &Ctx,
    tries: &mut Tries,
    channel: &str,
    config: &ChannelConfig,
    provider: &OAuthProvider,
) -> Result<Option<(&'static str, u64)>, HealError> {
    let current = ctx
        .store
        .token(channel)
        .await
        .map_err(|e| HealError::store(&e))?;
    let Some(refresh) = current.and_then(|(t, _)| t.refresh_token) else {
        tries.refresh_dead = true;
        return Ok(None);
    };
    let since = Instant::now();
    let refreshed = provider
        .refresh(&ctx.http, &refresh)
        .instrument(tracing::info_span!(
            "token refresh",
            otel.kind = "client",
            warden.channel = channel
        ))
        .await;
    ctx.attempt(
        crate::observe::metrics::REAUTH_REFRESH,
        refreshed.is_ok(),
        since,
    );
    match refreshed {
        Ok(tokens) => {
            let saved = save(
                ctx,
                tries,
                channel,
                &config.provider,
                tokens,
                "refresh",
                Some(refresh),
            );
            saved.await.map(Some)
        }
        Err(e) => match HealError::token("refresh grant", &e) {
            // Only a browser login can tell whether the account itself is
            // refused.
            HealError::Credentials(_) | HealError::Config(_) => {
                tracing::info!(channel, error = %e, "refresh grant refused; falling back to a browser login");
                tries.refresh_dead = true;
                Ok(None)
            }
            transient => Err(transient),
        },
    }
}

/// A browser login with the channel's credentials, then the code exchange.
async fn browser_login(
    ctx: &Ctx,
    tries: &mut Tries,
    channel: &str,
    config: &ChannelConfig,
    provider: &OAuthProvider,
) -> Result<(&'static str, u64), HealError> {
    let credentials = ChannelCredentials::resolve(channel, &config.credentials)
        .map_err(|(name, e)| HealError::Config(format!("credential {name:?}: {e}")))?;
    tries.browser += 1;
    let since = Instant::now();
    let result = login::tokens(ctx, provider, &credentials, &mut tries.on_page).await;
    ctx.attempt(
        crate::observe::metrics::REAUTH_BROWSER,
        result.is_ok(),
        since,
    );
    match result {
        Ok(tokens) => {
            save(
                ctx,
                tries,
                channel,
                &config.provider,
                tokens,
                "browser",
                None,
            )
            .await
        }
        Err(e) => {
            tracing::warn!(channel, attempt = tries.browser, kind = e.kind(), error = %e, "browser login failed");
            Err(e)
        }
    }
}

/// Stores tokens; kept for the next try if the store refuses them.
async fn save(
    ctx: &Ctx,
    tries: &mut Tries,
    channel: &str,
    provider: &str,
    tokens: FlowTokens,
    mode: &'static str,
    old_refresh: Option<SecretString>,
) -> Result<(&'static str, u64), HealError> {
    match store_tokens(ctx, channel, provider, &tokens, old_refresh.clone()).await {
        Ok(version) => Ok((mode, version)),
        Err(e) => {
            tries.unsaved = Some((tokens, mode, old_refresh));
            Err(HealError::Store(format!("storing the new token: {e}")))
        }
    }
}

async fn store_tokens(
    ctx: &Ctx,
    channel: &str,
    provider: &str,
    tokens: &FlowTokens,
    old_refresh: Option<SecretString>,
) -> Result<u64, crate::store::StoreError> {
    let set = TokenSet {
        access_token: tokens.access_token.clone(),
        // Providers that do not rotate refresh tokens keep the old one valid.
        refresh_token: tokens.refresh_token.clone().or(old_refresh),
        // Clamped: a provider's `expires_in` is input, and a huge one must not
        // overflow a date (a panic here left the request unacked).
        expires_at: tokens
            .expires_in
            .map(|d| crate::store::expiry_after(Utc::now(), d)),
    };
    debug_assert!(!set.access_token.expose_secret().is_empty());
    ctx.store.put_token(channel, provider, &set).await
}
