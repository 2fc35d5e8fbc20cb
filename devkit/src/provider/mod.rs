//! A simulated OAuth2 authorization-code provider, served over real HTTP with axum.
//!
//! Tests, `warden-dev demo`, compose and users rehearsing a login flow point warden at it before they point
//! it at a real platform. It behaves like one on purpose:
//!
//! - `GET /oauth/authorize` validates the client and redirect URI and answers with a redirect
//!   chain to `/login`, setting a session cookie;
//! - `/login` is an HTML form with a hidden CSRF field. Wrong credentials re-render it with
//!   `<div class="error" role="alert">Invalid username or password</div>`;
//! - accounts with a TOTP secret get a one-time-code page (`/login/totp`);
//! - `/oauth/consent` asks to "Allow", then redirects to `redirect_uri?code=…&state=…`;
//! - `POST /oauth/token` runs the `authorization_code` and `refresh_token` grants (client
//!   credentials by HTTP Basic or in the form) and answers RFC 6749 JSON, errors included;
//! - `POST /api/channels/{channel}/posts` and `GET /api/me` check bearer tokens, answering
//!   401 `{"error":"invalid_token"}` with `WWW-Authenticate` once a token is revoked;
//! - `/admin/...` revokes a channel's tokens, injects faults (429 with `Retry-After`, 500),
//!   mints tokens without a browser and reports [`ProviderStats`].
//!
//! Each account belongs to one *channel*; every token it obtains is valid for that channel
//! only. Passwords, TOTP seeds, codes and tokens are never logged.
//!
//! Its configuration ([`ProviderConfig`]) in TOML; the secrets are inline because they are
//! the simulator's own, made up for rehearsal:
//!
//! ```toml
//! bind = "127.0.0.1:8765"
//! client_id = "warden"
//! client_secret = "rehearsal-secret"
//! token_lifetime = "1h"
//! [accounts.acme]
//! username = "acme-user"
//! password = "acme-pass"
//! [accounts.globex]
//! username = "globex-user"
//! password = "globex-pass"
//! totp_secret = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
//! ```
//!
//! [`oauth_client`] gives the matching provider entry for warden's side, login flow included.

mod admin;
mod api;
pub mod command;
mod oauth;
mod pages;
mod state;
mod token;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::routing::{get, post};
use secrecy::SecretString;
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use url::Url;

use warden::reauth::flow::{FillValue, OAuthProvider, SecretRef, Step, TokenAuth, TotpSettings};

pub use command::ProviderArgs;
pub use state::{ChannelStats, GrantStats, ProviderState, ProviderStats, TokenResponse};

/// Configuration of the simulated provider, as `warden-dev provider` reads it.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// Address [`run`] binds to. Defaults to `127.0.0.1:8765`.
    #[serde(default = "default_bind")]
    pub bind: SocketAddr,
    /// The one registered OAuth client's id.
    #[serde(default = "default_client_id")]
    pub client_id: String,
    /// The registered client's secret.
    pub client_secret: SecretString,
    /// Name shown on the login and consent pages.
    #[serde(default = "default_client_name")]
    pub client_name: String,
    /// Redirect URIs the client registered. Empty accepts any `http(s)` URI, which is handy
    /// for rehearsals on random ports; a real provider insists on an exact match.
    #[serde(default)]
    pub redirect_uris: Vec<String>,
    /// Accounts by channel name.
    #[serde(default)]
    pub accounts: BTreeMap<String, Account>,
    /// Lifetime of access tokens.
    #[serde(default = "default_token_lifetime", with = "humantime_serde")]
    pub token_lifetime: Duration,
    /// Whether the consent page is shown. Real providers often remember consent; the
    /// simulator asks every time unless this is off.
    #[serde(default = "default_true")]
    pub require_consent: bool,
    /// Target of the login page's "Forgot password?" link. Tests point it at a host outside
    /// a flow's `allowed_hosts` to check that the browser refuses to follow it.
    #[serde(default = "default_help_url")]
    pub help_url: String,
    /// When set, `/admin/*` requires `Authorization: Bearer <admin_token>`.
    #[serde(default)]
    pub admin_token: Option<SecretString>,
    /// Refuses authorization requests without a PKCE S256 challenge (RFC 7636), as OAuth 2.1
    /// providers do. A challenge that is sent is always verified.
    #[serde(default)]
    pub require_pkce: bool,
}

/// One account at the provider, owning one channel.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Account {
    /// Login name typed into the form.
    pub username: String,
    /// Password typed into the form.
    pub password: SecretString,
    /// Base32 TOTP seed (RFC 6238, SHA-1, 6 digits, 30 s). When set, login asks for a code.
    #[serde(default)]
    pub totp_secret: Option<SecretString>,
}

impl Account {
    /// An account without TOTP.
    pub fn new(username: impl Into<String>, password: impl Into<String>) -> Self {
        Self {
            username: username.into(),
            password: SecretString::from(password.into()),
            totp_secret: None,
        }
    }

    /// Requires a TOTP code from the given base32 seed after the password.
    #[must_use]
    pub fn with_totp(mut self, base32_secret: impl Into<String>) -> Self {
        self.totp_secret = Some(SecretString::from(base32_secret.into()));
        self
    }
}

impl ProviderConfig {
    /// A configuration with the given client credentials, no accounts, and defaults elsewhere.
    pub fn new(client_id: impl Into<String>, client_secret: impl Into<String>) -> Self {
        Self {
            bind: default_bind(),
            client_id: client_id.into(),
            client_secret: SecretString::from(client_secret.into()),
            client_name: default_client_name(),
            redirect_uris: Vec::new(),
            accounts: BTreeMap::new(),
            token_lifetime: default_token_lifetime(),
            require_consent: true,
            help_url: default_help_url(),
            admin_token: None,
            require_pkce: false,
        }
    }

    /// Adds (or replaces) the account owning `channel`.
    #[must_use]
    pub fn with_account(mut self, channel: impl Into<String>, account: Account) -> Self {
        self.accounts.insert(channel.into(), account);
        self
    }
}

fn default_bind() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8765))
}
fn default_client_id() -> String {
    "warden".to_owned()
}
fn default_client_name() -> String {
    "warden".to_owned()
}
fn default_token_lifetime() -> Duration {
    Duration::from_secs(3600)
}
fn default_true() -> bool {
    true
}
fn default_help_url() -> String {
    "/help".to_owned()
}

/// The provider's HTTP routes over `state`. Tests call it directly.
pub fn router(state: ProviderState) -> Router {
    Router::new()
        .route("/", get(oauth::index))
        // Liveness for docker-compose's and Kubernetes' health checks.
        .route("/livez", get(|| async { "ok\n" }))
        .route("/oauth/authorize", get(oauth::authorize))
        .route("/login", get(oauth::login_page).post(oauth::login_submit))
        .route(
            "/login/totp",
            get(oauth::totp_page).post(oauth::totp_submit),
        )
        .route(
            "/oauth/consent",
            get(oauth::consent_page).post(oauth::consent_submit),
        )
        .route("/oauth/token", post(token::grant))
        .route("/callback", get(oauth::callback))
        .route("/help", get(oauth::help))
        .route("/api/me", get(api::me))
        .route("/api/channels/{channel}/posts", post(api::create_post))
        .merge(admin::routes(state.clone()))
        .route("/healthz", get(|| async { "ok" }))
        .layer(axum::middleware::from_fn_with_state(state.clone(), outage))
        .with_state(state)
}

/// Answers the OAuth side (authorization, login, TOTP, consent, token) with
/// the status of an outage set by [`ProviderState::set_outage`].
async fn outage(
    axum::extract::State(state): axum::extract::State<ProviderState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    let path = request.uri().path();
    if (path.starts_with("/oauth/") || path.starts_with("/login"))
        && let Some(status) = state.outage_answer()
    {
        let status = axum::http::StatusCode::from_u16(status)
            .unwrap_or(axum::http::StatusCode::SERVICE_UNAVAILABLE);
        return (status, "the identity service is unavailable\n").into_response();
    }
    next.run(request).await
}

/// Serves the provider on `listener` until `shutdown` is cancelled, then finishes in-flight
/// requests and returns.
///
/// # Errors
/// Returns the listener's I/O error.
pub async fn serve(
    listener: TcpListener,
    state: ProviderState,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}

/// A provider started by [`start`].
#[derive(Debug)]
pub struct RunningProvider {
    /// The address it listens on (the real port when the config asked for port 0).
    pub addr: SocketAddr,
    /// Its state: stats, revocation and minting are also available in-process.
    pub state: ProviderState,
    /// The serving task; it ends after the shutdown token is cancelled.
    pub task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl RunningProvider {
    /// `http://<addr>`, without a trailing slash.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// Binds `config.bind` and serves in a background task until `shutdown` is cancelled.
///
/// # Errors
/// Returns an error when the configuration is invalid or the address cannot be bound.
pub async fn start(
    config: ProviderConfig,
    shutdown: CancellationToken,
) -> Result<RunningProvider, ProviderError> {
    let listener = TcpListener::bind(config.bind)
        .await
        .map_err(|source| ProviderError::Bind {
            addr: config.bind,
            source,
        })?;
    let addr = listener
        .local_addr()
        .map_err(|source| ProviderError::Bind {
            addr: config.bind,
            source,
        })?;
    let state = ProviderState::new(config)?;
    let task = tokio::spawn(serve(listener, state.clone(), shutdown));
    tracing::info!(%addr, "simulated OAuth2 provider listening");
    Ok(RunningProvider { addr, state, task })
}

/// Runs the provider in the foreground until `shutdown` is cancelled (`warden-dev provider`).
///
/// # Errors
/// Returns an error when the configuration is invalid or serving fails.
pub async fn run(config: ProviderConfig, shutdown: CancellationToken) -> Result<(), ProviderError> {
    let running = start(config, shutdown).await?;
    match running.task.await {
        Ok(result) => result.map_err(ProviderError::Serve),
        Err(join) => Err(ProviderError::Serve(std::io::Error::other(join))),
    }
}

/// The login flow that fits the simulator's pages: username, password, a TOTP code when the
/// channel has a seed, then "Allow".
pub fn login_flow() -> Vec<Step> {
    vec![
        Step::Fill {
            selector: "#username".into(),
            value: FillValue::Secret("username".into()),
        },
        Step::Fill {
            selector: "#password".into(),
            value: FillValue::Secret("password".into()),
        },
        Step::Click {
            selector: "#sign-in".into(),
        },
        Step::Totp {
            selector: "#totp".into(),
            submit: Some("#verify".into()),
        },
        Step::Click {
            selector: "#allow".into(),
        },
    ]
}

/// A provider entry for warden's configuration that logs in to the simulator at `base_url`
/// (e.g. `http://127.0.0.1:8765`), with the client secret read from `client_secret`.
///
/// # Errors
/// Returns an error when `base_url` is not an http(s) URL with a host.
pub fn oauth_client(
    base_url: &str,
    client_id: &str,
    client_secret: SecretRef,
) -> Result<OAuthProvider, ProviderError> {
    let base = Url::parse(base_url)
        .map_err(|e| ProviderError::Config(format!("base url {base_url:?}: {e}")))?;
    let host = match (base.host_str(), base.port()) {
        (Some(host), Some(port)) => format!("{host}:{port}"),
        (Some(host), None) => host.to_owned(),
        (None, _) => {
            return Err(ProviderError::Config(format!(
                "base url {base_url:?} has no host"
            )));
        }
    };
    let at = |path: &str| {
        base.join(path)
            .map_err(|e| ProviderError::Config(format!("base url {base_url:?}: {e}")))
    };
    let provider = OAuthProvider {
        authorize_url: at("/oauth/authorize")?,
        token_url: at("/oauth/token")?,
        client_id: client_id.to_owned(),
        client_secret,
        token_auth: TokenAuth::Basic,
        redirect_uri: at("/callback")?,
        scopes: vec!["posts:write".into()],
        allowed_hosts: vec![host],
        login_flow: login_flow(),
        error_selector: Some(".error[role=alert]".into()),
        totp: TotpSettings::default(),
        pkce: true,
        // The simulator serves plain http wherever it is bound (the compose
        // demo names it by a service host); there is no real secret to protect.
        plain_http: true,
    };
    provider
        .validate()
        .map_err(|e| ProviderError::Config(e.to_string()))?;
    Ok(provider)
}

/// Why the simulated provider could not start or keep serving.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// The configuration is unusable; the message names the field, never a secret.
    #[error("invalid simulated provider configuration: {0}")]
    Config(String),
    /// The listen address could not be bound.
    #[error("cannot bind {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The server failed while serving.
    #[error("simulated provider failed: {0}")]
    Serve(std::io::Error),
}
