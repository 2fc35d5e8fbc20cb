//! The OAuth2 token client: the code exchange and the refresh grant (RFC 6749 §4.1.3, §6),
//! and what the token endpoint answers.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use secrecy::{ExposeSecret as _, SecretString};
use serde::Deserialize;

use super::provider::{OAuthProvider, TokenAuth};
use super::secrets::SecretRefError;

impl OAuthProvider {
    /// Redeems an authorization code at the token endpoint.
    ///
    /// # Errors
    /// See [`TokenError`]; `invalid_grant` means the code was already used or expired.
    pub async fn exchange_code(
        &self,
        http: &reqwest::Client,
        code: &AuthorizationCode,
    ) -> Result<TokenSet, TokenError> {
        let mut params = vec![
            ("grant_type", "authorization_code"),
            ("code", code.code.expose_secret()),
            ("redirect_uri", self.redirect_uri.as_str()),
        ];
        if let Some(verifier) = &code.code_verifier {
            params.push(("code_verifier", verifier.expose_secret()));
        }
        self.token_request(http, &params).await
    }

    /// Runs the refresh-token grant. Providers that rotate refresh tokens return a new one,
    /// which must replace the old.
    ///
    /// # Errors
    /// See [`TokenError`]; [`TokenError::is_invalid_grant`] means only a browser login can
    /// heal the channel.
    pub async fn refresh(
        &self,
        http: &reqwest::Client,
        refresh_token: &SecretString,
    ) -> Result<TokenSet, TokenError> {
        self.token_request(
            http,
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh_token.expose_secret()),
            ],
        )
        .await
    }

    async fn token_request(
        &self,
        http: &reqwest::Client,
        params: &[(&str, &str)],
    ) -> Result<TokenSet, TokenError> {
        let secret = self
            .client_secret
            .resolve()
            .map_err(TokenError::ClientSecret)?;
        let mut form: Vec<(&str, &str)> = params.to_vec();
        let mut request = http
            .post(self.token_url.clone())
            .header(reqwest::header::ACCEPT, "application/json")
            .timeout(Duration::from_secs(30));
        match self.token_auth {
            TokenAuth::Basic => {
                // RFC 6749 §2.3.1: form-urlencode id and secret before base64.
                let encode = |s: &str| {
                    url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>()
                };
                let credentials = format!(
                    "{}:{}",
                    encode(&self.client_id),
                    encode(secret.expose_secret())
                );
                request = request.header(
                    reqwest::header::AUTHORIZATION,
                    format!("Basic {}", STANDARD.encode(credentials)),
                );
            }
            TokenAuth::Post => {
                form.push(("client_id", &self.client_id));
                form.push(("client_secret", secret.expose_secret()));
            }
        }
        let response = request
            .form(&form)
            .send()
            .await
            // reqwest errors name the URL (no secret in it), never the body.
            .map_err(|e| TokenError::Transport(e.to_string()))?;
        let status = response.status();
        // A bounded prefix: a token response is a few hundred bytes, and an
        // endless body must not be buffered (a cut one fails to parse).
        let body = crate::outbound::read_prefix(response, crate::outbound::MAX_RESPONSE_BYTES)
            .await
            .map_err(|e| TokenError::Transport(e.to_string()))?;
        token_response(status, &body)
    }
}

/// What the token endpoint's answer means: tokens on success, otherwise the RFC 6749 error
/// it states or the bare status.
fn token_response(status: reqwest::StatusCode, body: &[u8]) -> Result<TokenSet, TokenError> {
    if status.is_success() {
        let raw: RawTokenResponse = serde_json::from_slice(body)
            .map_err(|e| TokenError::Malformed(format!("token response: {e}")))?;
        if !raw.token_type.eq_ignore_ascii_case("bearer") {
            return Err(TokenError::Malformed(format!(
                "unsupported token_type {}",
                raw.token_type
            )));
        }
        return Ok(TokenSet {
            access_token: SecretString::from(raw.access_token),
            refresh_token: raw.refresh_token.map(SecretString::from),
            expires_in: raw.expires_in.map(Duration::from_secs),
            scope: raw.scope,
        });
    }
    match serde_json::from_slice::<RawTokenError>(body) {
        Ok(e) if status.is_client_error() => Err(TokenError::Rejected {
            status: status.as_u16(),
            error: e.error,
            description: e.error_description,
        }),
        _ => Err(TokenError::Status(status.as_u16())),
    }
}

#[derive(Deserialize)]
struct RawTokenResponse {
    access_token: String,
    #[serde(default = "bearer")]
    token_type: String,
    refresh_token: Option<String>,
    expires_in: Option<u64>,
    scope: Option<String>,
}

fn bearer() -> String {
    "Bearer".to_owned()
}

#[derive(Deserialize)]
struct RawTokenError {
    error: String,
    error_description: Option<String>,
}

/// An authorization code captured from the redirect, valid for one exchange, with the PKCE
/// verifier of the request that obtained it.
#[derive(Clone, Debug)]
pub struct AuthorizationCode {
    code: SecretString,
    code_verifier: Option<SecretString>,
}

impl AuthorizationCode {
    /// Wraps a code obtained without PKCE.
    pub fn new(code: SecretString) -> Self {
        Self {
            code,
            code_verifier: None,
        }
    }

    /// Wraps a code obtained with PKCE; the exchange sends `verifier`.
    pub fn with_verifier(code: SecretString, verifier: SecretString) -> Self {
        Self {
            code,
            code_verifier: Some(verifier),
        }
    }

    /// The code itself.
    pub fn secret(&self) -> &SecretString {
        &self.code
    }
}

/// Tokens from the token endpoint. `Debug` prints them redacted.
#[derive(Clone, Debug)]
pub struct TokenSet {
    /// The bearer token.
    pub access_token: SecretString,
    /// The refresh token, when the provider issues one.
    pub refresh_token: Option<SecretString>,
    /// Lifetime of the access token, when the provider says.
    pub expires_in: Option<Duration>,
    /// Granted scope, when the provider says.
    pub scope: Option<String>,
}

/// Why a token request failed.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The client secret reference could not be resolved.
    #[error("client secret: {0}")]
    ClientSecret(SecretRefError),
    /// Connection, TLS or timeout; worth retrying.
    #[error("token endpoint unreachable: {0}")]
    Transport(String),
    /// The provider answered an RFC 6749 error (`invalid_grant`, `invalid_client`, …).
    #[error("token endpoint answered {status} {error}{}", description.as_deref().map(|d| format!(": {d}")).unwrap_or_default())]
    Rejected {
        /// HTTP status.
        status: u16,
        /// The `error` code.
        error: String,
        /// The `error_description`, if any.
        description: Option<String>,
    },
    /// Any other unsuccessful status (5xx, or a 4xx without an OAuth error body).
    #[error("token endpoint answered HTTP {0}")]
    Status(u16),
    /// A success status with a body that is not a token response.
    #[error("malformed answer from the token endpoint: {0}")]
    Malformed(String),
}

impl TokenError {
    /// `invalid_grant`: the code or refresh token is dead; only a new login helps.
    pub fn is_invalid_grant(&self) -> bool {
        matches!(self, Self::Rejected { error, .. } if error == "invalid_grant")
    }

    /// Worth retrying later with the same input: transport errors, 429 and 5xx.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Transport(_) => true,
            Self::Status(status) => *status == 429 || *status >= 500,
            _ => false,
        }
    }
}
