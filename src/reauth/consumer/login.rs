//! A browser login for a heal, and what its failure means: the channel's
//! credentials, the provider, the browser, or this process's configuration.

use std::time::Duration;

use tracing::Instrument as _;

use super::context::Ctx;
use super::error::HealError;
use crate::reauth::browser::{LoginError, LoginErrorKind};
use crate::reauth::flow::{ChannelCredentials, OAuthProvider, TokenSet as FlowTokens};

/// Logs the channel in and exchanges the code for tokens. `on_page` counts
/// the request's logins that failed on a page the provider served.
pub(super) async fn tokens(
    ctx: &Ctx,
    provider: &OAuthProvider,
    credentials: &ChannelCredentials,
    on_page: &mut u32,
) -> Result<FlowTokens, HealError> {
    let login = ctx
        .driver
        .login(provider, credentials, ctx.settings.reauth.login_timeout)
        .instrument(tracing::info_span!(
            "browser login",
            otel.kind = "internal",
            warden.channel = credentials.channel()
        ))
        .await;
    let code = match login {
        Ok(code) => code,
        Err(e) => return Err(login_failed(ctx, provider, &e, on_page).await),
    };
    provider
        .exchange_code(&ctx.http, &code)
        .instrument(tracing::info_span!(
            "token exchange",
            otel.kind = "client",
            http.request.method = "POST",
            server.address = provider.token_url.host_str().unwrap_or_default()
        ))
        .await
        .map_err(|e| HealError::token("code exchange", &e))
}

/// What a failed login means for the channel.
async fn login_failed(
    ctx: &Ctx,
    provider: &OAuthProvider,
    e: &LoginError,
    on_page: &mut u32,
) -> HealError {
    match e.kind() {
        LoginErrorKind::BadCredentials => HealError::Credentials(e.to_string()),
        LoginErrorKind::BlockedNavigation => HealError::Config(e.to_string()),
        LoginErrorKind::BrowserCrashed => HealError::Browser(e.to_string()),
        // A step that found nothing to act on: on a page the provider really
        // served, the provider is refusing this login; on an error page of an
        // outage, it is not the channel's fault.
        LoginErrorKind::Timeout | LoginErrorKind::Other => {
            if !provider_answers(ctx, provider).await {
                return HealError::Provider(format!(
                    "{e} (the provider's login page is not answering)"
                ));
            }
            *on_page += 1;
            if *on_page >= ctx.settings.reauth.max_attempts {
                HealError::Credentials(format!(
                    "the login flow could not proceed on the provider's page: {e}"
                ))
            } else {
                HealError::Browser(e.to_string())
            }
        }
    }
}

/// Whether the provider's authorization endpoint answers with anything but
/// 429 or 5xx, i.e. whether a login page it served was a real one.
async fn provider_answers(ctx: &Ctx, provider: &OAuthProvider) -> bool {
    let url = provider.authorization_url("warden-probe", None);
    match ctx
        .http
        .get(url)
        .timeout(Duration::from_secs(10))
        .send()
        .await
    {
        Ok(r) => !(r.status().is_server_error() || r.status().as_u16() == 429),
        Err(_) => false,
    }
}
