//! How a provider's login is described in warden's TOML, the channel secrets it uses, and the
//! OAuth2 token requests (code exchange and refresh) that follow a login.
//!
//! ```toml
//! [providers.sim]
//! authorize_url = "http://127.0.0.1:8765/oauth/authorize"
//! token_url = "http://127.0.0.1:8765/oauth/token"
//! client_id = "warden"
//! client_secret = { env = "SIM_CLIENT_SECRET" }     # or { file = "/run/secrets/sim" }
//! redirect_uri = "http://127.0.0.1:8765/callback"
//! scopes = ["posts:write"]
//! allowed_hosts = ["127.0.0.1"]
//! error_selector = ".error[role=alert]"
//! login_flow = [
//!   { action = "fill", selector = "#username", value = "secret:username" },
//!   { action = "fill", selector = "#password", value = "secret:password" },
//!   { action = "click", selector = "#sign-in" },
//!   { action = "totp", selector = "#totp", submit = "#verify" },
//!   { action = "click_if_present", selector = "#allow" },
//! ]
//!
//! [channels.acme.credentials]
//! username = "env:ACME_USERNAME"
//! password = { file = "/run/secrets/acme-password" }
//! totp = { env = "ACME_TOTP_SEED" }
//! ```
//!
//! Secrets are only ever *referenced* (an environment variable or a file); the types here
//! refuse inline values, and every secret is a [`SecretString`] so `Debug` prints it redacted.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use secrecy::{ExposeSecret as _, SecretString};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use url::Url;

// ----- secret references -------------------------------------------------------------------

/// Where a secret lives: an environment variable or a file (e.g. a mounted Kubernetes
/// secret). Written as `{ env = "NAME" }`, `{ file = "/path" }`, `"env:NAME"` or
/// `"file:/path"`.
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum SecretRef {
    /// The value of this environment variable.
    Env(String),
    /// The contents of this file, without a trailing newline.
    File(PathBuf),
}

/// A secret reference that could not be resolved. Names the reference, never a value.
#[derive(Debug, thiserror::Error)]
pub enum SecretRefError {
    /// The environment variable is unset, empty or not UTF-8.
    #[error("environment variable {0} is unset or empty")]
    MissingEnv(String),
    /// The file could not be read.
    #[error("cannot read secret file {path}: {source}")]
    File {
        /// The file named by the reference.
        path: PathBuf,
        /// Why reading failed.
        source: std::io::Error,
    },
    /// The file is empty.
    #[error("secret file {0} is empty")]
    EmptyFile(PathBuf),
}

impl SecretRef {
    /// Reads the secret now. Call it when the secret is needed so a rotated file is picked up.
    ///
    /// # Errors
    /// Returns an error naming the variable or file when it is missing or empty.
    pub fn resolve(&self) -> Result<SecretString, SecretRefError> {
        match self {
            Self::Env(name) => std::env::var(name)
                .ok()
                .filter(|v| !v.is_empty())
                .map(SecretString::from)
                .ok_or_else(|| SecretRefError::MissingEnv(name.clone())),
            Self::File(path) => {
                let text =
                    std::fs::read_to_string(path).map_err(|source| SecretRefError::File {
                        path: path.clone(),
                        source,
                    })?;
                // Files written by `echo` or editors end in a newline that is not part of
                // the secret.
                let value = text.trim_end_matches(['\n', '\r']);
                if value.is_empty() {
                    return Err(SecretRefError::EmptyFile(path.clone()));
                }
                Ok(SecretString::from(value.to_owned()))
            }
        }
    }
}

impl fmt::Display for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Env(name) => write!(f, "env:{name}"),
            Self::File(path) => write!(f, "file:{}", path.display()),
        }
    }
}

impl fmt::Debug for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Only the reference is printed; it is not the secret.
        write!(f, "SecretRef({self})")
    }
}

impl std::str::FromStr for SecretRef {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once(':') {
            Some(("env", name)) if !name.is_empty() => Ok(Self::Env(name.to_owned())),
            Some(("file", path)) if !path.is_empty() => Ok(Self::File(PathBuf::from(path))),
            _ => Err(
                "a secret must be a reference, `env:NAME` or `file:/path` (or { env = .. } / \
                 { file = .. }); inline secrets are not accepted"
                    .to_owned(),
            ),
        }
    }
}

impl<'de> Deserialize<'de> for SecretRef {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Form {
            Text(String),
            Table {
                env: Option<String>,
                file: Option<PathBuf>,
            },
        }
        match Form::deserialize(deserializer)? {
            Form::Text(text) => text.parse().map_err(serde::de::Error::custom),
            Form::Table {
                env: Some(name),
                file: None,
            } if !name.is_empty() => Ok(Self::Env(name)),
            Form::Table {
                env: None,
                file: Some(path),
            } => Ok(Self::File(path)),
            Form::Table { .. } => Err(serde::de::Error::custom(
                "a secret reference needs exactly one of `env` or `file`",
            )),
        }
    }
}

impl Serialize for SecretRef {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

// ----- channel credentials -----------------------------------------------------------------

/// Name of the credential holding the TOTP seed (base32), used by the `totp` step.
pub const TOTP_SECRET: &str = "totp";

/// A channel's credential references as configured, by name (`username`, `password`,
/// `totp`, or any other name a `fill` step refers to).
pub type CredentialRefs = BTreeMap<String, SecretRef>;

/// A channel's resolved credentials, handed to the login driver.
#[derive(Clone)]
pub struct ChannelCredentials {
    channel: String,
    secrets: BTreeMap<String, SecretString>,
}

impl fmt::Debug for ChannelCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChannelCredentials")
            .field("channel", &self.channel)
            .field("names", &self.secrets.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl ChannelCredentials {
    /// Empty credentials for `channel`.
    pub fn new(channel: impl Into<String>) -> Self {
        Self {
            channel: channel.into(),
            secrets: BTreeMap::new(),
        }
    }

    /// Resolves every reference of `refs` now.
    ///
    /// # Errors
    /// Returns the first reference that cannot be read, with its credential name.
    pub fn resolve(
        channel: impl Into<String>,
        refs: &CredentialRefs,
    ) -> Result<Self, (String, SecretRefError)> {
        let mut credentials = Self::new(channel);
        for (name, reference) in refs {
            let value = reference.resolve().map_err(|e| (name.clone(), e))?;
            credentials.secrets.insert(name.clone(), value);
        }
        Ok(credentials)
    }

    /// Adds or replaces the secret `name`.
    #[must_use]
    pub fn with(mut self, name: impl Into<String>, value: SecretString) -> Self {
        self.secrets.insert(name.into(), value);
        self
    }

    /// The channel these credentials log in.
    pub fn channel(&self) -> &str {
        &self.channel
    }

    /// The secret `name`, if configured.
    pub fn get(&self, name: &str) -> Option<&SecretString> {
        self.secrets.get(name)
    }

    /// Replaces every occurrence of any of these secrets in `text` with `[REDACTED]`, for
    /// error messages and saved page HTML. Very short values are skipped: redacting a
    /// two-letter username would shred the text without protecting anything.
    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for secret in self.secrets.values() {
            let value = secret.expose_secret();
            if value.len() >= 3 {
                out = out.replace(value, "[REDACTED]");
            }
        }
        out
    }
}

// ----- login flow --------------------------------------------------------------------------

/// What a `fill` step types: `"secret:<name>"` (a channel credential) or `"text:<value>"`
/// (a literal that is not secret, e.g. a tenant name). Plain strings are refused so a
/// password cannot end up inline by accident.
#[derive(Clone, PartialEq, Eq)]
pub enum FillValue {
    /// The channel credential with this name.
    Secret(String),
    /// This literal text.
    Text(String),
}

impl fmt::Debug for FillValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Secret(name) => write!(f, "secret:{name}"),
            Self::Text(text) => write!(f, "text:{text}"),
        }
    }
}

impl<'de> Deserialize<'de> for FillValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        match text.split_once(':') {
            Some(("secret", name)) if !name.is_empty() => Ok(Self::Secret(name.to_owned())),
            Some(("text", value)) => Ok(Self::Text(value.to_owned())),
            _ => Err(serde::de::Error::custom(
                "a fill value must be `secret:<credential name>` or `text:<literal>`",
            )),
        }
    }
}

impl Serialize for FillValue {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&format_args!("{self:?}"))
    }
}

/// One step of a declarative login flow.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Step {
    /// Navigates to `url`; `{authorize_url}` in it becomes the full authorization request.
    /// A flow that does not start with `goto` starts at the authorization request.
    Goto {
        /// The address, usually `"{authorize_url}"`.
        url: String,
    },
    /// Types a value into the field `selector`.
    Fill {
        /// A Playwright selector.
        selector: String,
        /// What to type.
        value: FillValue,
    },
    /// Clicks `selector`, waiting for it to be actionable.
    Click {
        /// A Playwright selector.
        selector: String,
    },
    /// Clicks `selector` if it becomes visible within `within` (default 2 s), e.g. a consent
    /// button a provider shows only the first time.
    ClickIfPresent {
        /// A Playwright selector.
        selector: String,
        /// How long to look for it.
        #[serde(default = "default_within", with = "humantime_serde")]
        within: Duration,
    },
    /// Waits until `selector` is visible.
    WaitFor {
        /// A Playwright selector.
        selector: String,
    },
    /// Types a one-time code generated from the channel's `totp` credential into `selector`,
    /// then clicks `submit` if given. Skipped as a whole for channels without a TOTP seed, so
    /// one flow serves both kinds of account without waiting for a page that never comes.
    Totp {
        /// A Playwright selector.
        selector: String,
        /// The button that submits the code, if typing alone does not.
        #[serde(default)]
        submit: Option<String>,
    },
}

fn default_within() -> Duration {
    Duration::from_secs(2)
}

impl Step {
    /// A short description for logs and errors; never includes a value.
    pub fn describe(&self) -> String {
        match self {
            Self::Goto { url } => format!("goto {url}"),
            Self::Fill { selector, value } => format!("fill {selector} with {value:?}"),
            Self::Click { selector } => format!("click {selector}"),
            Self::ClickIfPresent { selector, .. } => format!("click_if_present {selector}"),
            Self::WaitFor { selector } => format!("wait_for {selector}"),
            Self::Totp { selector, .. } => format!("totp {selector}"),
        }
    }
}

/// How the client authenticates at the token endpoint (RFC 6749 §2.3.1).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenAuth {
    /// HTTP Basic with the form-urlencoded id and secret (`client_secret_basic`).
    #[default]
    Basic,
    /// `client_id` and `client_secret` in the form body (`client_secret_post`).
    Post,
}

/// TOTP parameters of a provider; the defaults (SHA-1, 6 digits, 30 s) are what nearly every
/// authenticator app uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TotpSettings {
    /// Code length, 6 to 8.
    #[serde(default = "default_digits")]
    pub digits: usize,
    /// Seconds per code.
    #[serde(default = "default_period")]
    pub period: u64,
    /// `sha1`, `sha256` or `sha512`.
    #[serde(default)]
    pub algorithm: TotpAlgorithm,
}

impl Default for TotpSettings {
    fn default() -> Self {
        Self {
            digits: default_digits(),
            period: default_period(),
            algorithm: TotpAlgorithm::default(),
        }
    }
}

fn default_digits() -> usize {
    6
}
fn default_period() -> u64 {
    30
}

/// HMAC of a TOTP.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TotpAlgorithm {
    /// HMAC-SHA-1.
    #[default]
    Sha1,
    /// HMAC-SHA-256.
    Sha256,
    /// HMAC-SHA-512.
    Sha512,
}

impl TotpSettings {
    /// The current code for a base32 `seed`.
    ///
    /// # Errors
    /// Returns a message (without the seed) when the seed is not base32 of at least 128 bits.
    pub fn current_code(&self, seed: &SecretString) -> Result<SecretString, String> {
        let normalized = seed.expose_secret().trim().replace(' ', "").to_uppercase();
        let bytes = totp_rs::Secret::Encoded(normalized.trim_end_matches('=').to_owned())
            .to_bytes()
            .map_err(|_| "the TOTP seed is not valid base32".to_owned())?;
        let algorithm = match self.algorithm {
            TotpAlgorithm::Sha1 => totp_rs::Algorithm::SHA1,
            TotpAlgorithm::Sha256 => totp_rs::Algorithm::SHA256,
            TotpAlgorithm::Sha512 => totp_rs::Algorithm::SHA512,
        };
        let totp = totp_rs::TOTP::new(algorithm, self.digits, 1, self.period, bytes)
            .map_err(|e| format!("invalid TOTP settings: {e}"))?;
        totp.generate_current()
            .map(SecretString::from)
            .map_err(|_| "the system clock is before 1970".to_owned())
    }
}

/// A provider as warden's configuration describes it: OAuth2 endpoints, client, the hosts the
/// browser may visit, and the declarative login flow.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OAuthProvider {
    /// The authorization endpoint.
    #[serde(with = "url_text")]
    pub authorize_url: Url,
    /// The token endpoint.
    #[serde(with = "url_text")]
    pub token_url: Url,
    /// The OAuth client id.
    pub client_id: String,
    /// Where the client secret is read from; never inline.
    pub client_secret: SecretRef,
    /// How the client authenticates at the token endpoint.
    #[serde(default)]
    pub token_auth: TokenAuth,
    /// The redirect URI registered for the client. The browser never needs to load it: the
    /// driver reads the code off the redirect itself.
    #[serde(with = "url_text")]
    pub redirect_uri: Url,
    /// Scopes to request.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Hosts the browser may load anything from (`host`, `host:port` or `*.domain`);
    /// every other request is aborted and fails the login as a blocked navigation.
    pub allowed_hosts: Vec<String>,
    /// The steps that log a channel in.
    #[serde(default)]
    pub login_flow: Vec<Step>,
    /// A selector that appears when the provider rejects the credentials, e.g.
    /// `.error[role=alert]`, so a wrong password fails fast instead of timing out.
    #[serde(default)]
    pub error_selector: Option<String>,
    /// TOTP parameters for `totp` steps.
    #[serde(default)]
    pub totp: TotpSettings,
    /// Sends a PKCE S256 challenge (RFC 7636) with every authorization request. On by
    /// default: OAuth 2.1 asks it of every client, and servers without PKCE ignore it.
    #[serde(default = "default_true")]
    pub pkce: bool,
    /// Allows an `http://` token endpoint on a host that is not loopback (a
    /// private network, such as the compose demo). Off: the client secret and
    /// refresh tokens go out over https only.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub plain_http: bool,
}

fn default_true() -> bool {
    true
}

/// A PKCE verifier and its S256 challenge (RFC 7636 §4.1–4.2).
#[derive(Clone, Debug)]
pub struct Pkce {
    verifier: SecretString,
    challenge: String,
}

impl Pkce {
    /// A fresh verifier of 43 URL-safe characters (256 random bits) and its challenge.
    pub fn generate() -> Self {
        use rand::RngCore as _;
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        let verifier = URL_SAFE_NO_PAD.encode(bytes);
        let challenge = Self::challenge_of(&verifier);
        Self {
            verifier: SecretString::from(verifier),
            challenge,
        }
    }

    /// `BASE64URL(SHA256(verifier))`, the S256 transformation.
    pub fn challenge_of(verifier: &str) -> String {
        use sha2::Digest as _;
        URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(verifier.as_bytes()))
    }

    /// The challenge sent with the authorization request.
    pub fn challenge(&self) -> &str {
        &self.challenge
    }

    /// The verifier sent with the code exchange.
    pub fn verifier(&self) -> &SecretString {
        &self.verifier
    }
}

/// A provider configuration that cannot work.
#[derive(Debug, thiserror::Error)]
#[error("invalid provider configuration: {0}")]
pub struct FlowConfigError(pub String);

impl OAuthProvider {
    /// Checks what can be checked without a browser: the allowlist covers the endpoints the
    /// flow visits, URLs are http(s), selectors are not empty.
    ///
    /// # Errors
    /// Returns the first problem found.
    pub fn validate(&self) -> Result<(), FlowConfigError> {
        let err = |m: String| Err(FlowConfigError(m));
        if self.allowed_hosts.is_empty() {
            return err("allowed_hosts is empty, so the browser could load nothing".into());
        }
        for (name, url) in [
            ("authorize_url", &self.authorize_url),
            ("token_url", &self.token_url),
            ("redirect_uri", &self.redirect_uri),
        ] {
            if !matches!(url.scheme(), "http" | "https") {
                return err(format!("{name} must be http or https"));
            }
        }
        crate::outbound::check_url(&self.token_url, self.plain_http)
            .or_else(|e| err(format!("token_url: {e}")))?;
        if !self.url_allowed(&self.authorize_url) {
            return err(format!(
                "authorize_url host {} is not in allowed_hosts",
                self.authorize_url.host_str().unwrap_or("")
            ));
        }
        for (i, step) in self.login_flow.iter().enumerate() {
            let selector = match step {
                Step::Goto { url } => {
                    let expanded = url.replace("{authorize_url}", self.authorize_url.as_str());
                    if Url::parse(&expanded).is_err() {
                        return err(format!("step {}: goto url is not a URL", i + 1));
                    }
                    continue;
                }
                Step::Fill { selector, .. }
                | Step::Click { selector }
                | Step::ClickIfPresent { selector, .. }
                | Step::WaitFor { selector }
                | Step::Totp { selector, .. } => selector,
            };
            if selector.trim().is_empty() {
                return err(format!("step {}: selector is empty", i + 1));
            }
        }
        if (6..=8).contains(&self.totp.digits) && self.totp.period > 0 {
            Ok(())
        } else {
            err("totp.digits must be 6 to 8 and totp.period above 0".into())
        }
    }

    /// The authorization request URL for `state` (RFC 6749 §4.1.1), with the PKCE challenge
    /// when given.
    pub fn authorization_url(&self, state: &str, pkce: Option<&Pkce>) -> Url {
        let mut url = self.authorize_url.clone();
        {
            let mut query = url.query_pairs_mut();
            query
                .append_pair("response_type", "code")
                .append_pair("client_id", &self.client_id)
                .append_pair("redirect_uri", self.redirect_uri.as_str());
            if !self.scopes.is_empty() {
                query.append_pair("scope", &self.scopes.join(" "));
            }
            query.append_pair("state", state);
            if let Some(pkce) = pkce {
                query
                    .append_pair("code_challenge", pkce.challenge())
                    .append_pair("code_challenge_method", "S256");
            }
        }
        url
    }

    /// Whether the browser may load `url`: http(s) on an allowed host.
    pub fn url_allowed(&self, url: &Url) -> bool {
        if !matches!(url.scheme(), "http" | "https") {
            return false;
        }
        let Some(host) = url.host_str() else {
            return false;
        };
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        let port = url.port_or_known_default();
        self.allowed_hosts.iter().any(|pattern| {
            let pattern = pattern.to_ascii_lowercase();
            let (pattern_host, pattern_port) = match pattern.rsplit_once(':') {
                Some((h, p)) if !h.contains(':') => (h.to_owned(), p.parse::<u16>().ok()),
                _ => (pattern.clone(), None),
            };
            let host_matches = match pattern_host.strip_prefix("*.") {
                Some(domain) => host.ends_with(&format!(".{domain}")),
                None => host == pattern_host,
            };
            host_matches && pattern_port.is_none_or(|p| Some(p) == port)
        })
    }

    /// Whether `url` is the redirect URI (same scheme, host, port and path), i.e. the hop
    /// that carries the authorization code.
    pub fn is_redirect(&self, url: &Url) -> bool {
        let r = &self.redirect_uri;
        url.scheme() == r.scheme()
            && url.host_str() == r.host_str()
            && url.port_or_known_default() == r.port_or_known_default()
            && url.path() == r.path()
    }

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
        if status.is_success() {
            let raw: RawTokenResponse = serde_json::from_slice(&body)
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
        match serde_json::from_slice::<RawTokenError>(&body) {
            Ok(e) if status.is_client_error() => Err(TokenError::Rejected {
                status: status.as_u16(),
                error: e.error,
                description: e.error_description,
            }),
            _ => Err(TokenError::Status(status.as_u16())),
        }
    }
}

/// `Url` as a string in serde, without turning on the `url` crate's serde feature.
mod url_text {
    use serde::{Deserialize as _, Deserializer, Serializer};
    use url::Url;

    pub(super) fn serialize<S: Serializer>(url: &Url, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(url.as_str())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Url, D::Error> {
        let text = String::deserialize(deserializer)?;
        Url::parse(&text).map_err(|e| serde::de::Error::custom(format!("{text:?}: {e}")))
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

#[cfg(test)]
mod tests {
    use super::*;
    use figment::providers::{Format as _, Toml};

    fn parse<T: serde::de::DeserializeOwned>(toml: &str) -> Result<T, String> {
        figment::Figment::from(Toml::string(toml))
            .extract()
            .map_err(|e| e.to_string())
    }

    const PROVIDER: &str = r##"
        authorize_url = "https://id.example.com/oauth/authorize"
        token_url = "https://id.example.com/oauth/token"
        client_id = "warden"
        client_secret = { env = "EXAMPLE_CLIENT_SECRET" }
        redirect_uri = "https://app.example.com/callback"
        scopes = ["posts:write", "profile"]
        allowed_hosts = ["id.example.com", "*.cdn.example.com"]
        error_selector = ".error[role=alert]"
        login_flow = [
          { action = "goto", url = "{authorize_url}" },
          { action = "fill", selector = "#username", value = "secret:username" },
          { action = "fill", selector = "#tenant", value = "text:acme" },
          { action = "click", selector = "#sign-in" },
          { action = "totp", selector = "#totp", submit = "#verify" },
          { action = "wait_for", selector = "#consent" },
          { action = "click_if_present", selector = "#allow", within = "500ms" },
        ]
    "##;

    #[test]
    fn a_plain_http_token_endpoint_is_refused_unless_loopback_or_opted_in() {
        let remote = PROVIDER.replace(
            "https://id.example.com/oauth/token",
            "http://id.example.com/oauth/token",
        );
        let provider: OAuthProvider = parse(&remote).unwrap();
        let e = provider.validate().unwrap_err().to_string();
        assert!(e.contains("token_url") && e.contains("https"), "{e}");
        let opted_in: OAuthProvider = parse(&format!("plain_http = true\n{remote}")).unwrap();
        opted_in.validate().unwrap();
        let loopback: OAuthProvider = parse(&PROVIDER.replace(
            "https://id.example.com/oauth/token",
            "http://127.0.0.1:8765/oauth/token",
        ))
        .unwrap();
        loopback.validate().unwrap();
    }

    #[test]
    fn a_provider_with_every_step_kind_parses_from_toml() {
        let provider: OAuthProvider = parse(PROVIDER).unwrap();
        provider.validate().unwrap();
        assert_eq!(provider.login_flow.len(), 7);
        assert_eq!(
            provider.login_flow[2],
            Step::Fill {
                selector: "#tenant".into(),
                value: FillValue::Text("acme".into())
            }
        );
        assert_eq!(
            provider.login_flow[6],
            Step::ClickIfPresent {
                selector: "#allow".into(),
                within: Duration::from_millis(500)
            }
        );
        assert_eq!(
            provider.client_secret,
            SecretRef::Env("EXAMPLE_CLIENT_SECRET".into())
        );
        assert_eq!(provider.token_auth, TokenAuth::Basic);
        assert_eq!(provider.totp, TotpSettings::default());
    }

    #[test]
    fn an_inline_client_secret_is_refused() {
        let inline = PROVIDER.replace(
            r#"client_secret = { env = "EXAMPLE_CLIENT_SECRET" }"#,
            r#"client_secret = "hunter2""#,
        );
        let error = parse::<OAuthProvider>(&inline).unwrap_err();
        assert!(error.contains("inline secrets are not accepted"), "{error}");
        assert!(!error.contains("hunter2"), "{error}");
    }

    #[test]
    fn a_fill_value_must_name_a_secret_or_be_marked_as_text() {
        let plain = PROVIDER.replace("value = \"secret:username\"", "value = \"alice\"");
        assert!(parse::<OAuthProvider>(&plain).is_err());
    }

    #[test]
    fn secret_references_take_four_spellings() {
        #[derive(Deserialize)]
        struct Refs {
            a: SecretRef,
            b: SecretRef,
            c: SecretRef,
            d: SecretRef,
        }
        let refs: Refs = parse(
            r#"
            a = "env:A"
            b = "file:/run/secrets/b"
            c = { env = "C" }
            d = { file = "/run/secrets/d" }
            "#,
        )
        .unwrap();
        assert_eq!(refs.a, SecretRef::Env("A".into()));
        assert_eq!(refs.b, SecretRef::File("/run/secrets/b".into()));
        assert_eq!(refs.c, SecretRef::Env("C".into()));
        assert_eq!(refs.d, SecretRef::File("/run/secrets/d".into()));
        assert!(
            parse::<Refs>(
                "a = { env = \"A\", file = \"/x\" }\nb=\"env:B\"\nc=\"env:C\"\nd=\"env:D\""
            )
            .is_err()
        );
    }

    #[test]
    fn a_file_reference_drops_the_trailing_newline() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        std::fs::write(&path, "s3cret\n").unwrap();
        let value = SecretRef::File(path.clone()).resolve().unwrap();
        assert_eq!(value.expose_secret(), "s3cret");
        std::fs::write(&path, "\n").unwrap();
        assert!(SecretRef::File(path).resolve().is_err());
        let missing = SecretRef::Env("WARDEN_TEST_SURELY_UNSET_VARIABLE".into()).resolve();
        assert!(matches!(missing, Err(SecretRefError::MissingEnv(_))));
    }

    #[test]
    fn debug_output_never_shows_a_secret() {
        let credentials = ChannelCredentials::new("acme")
            .with("password", SecretString::from("pa55word".to_owned()))
            .with(
                TOTP_SECRET,
                SecretString::from("JBSWY3DPEHPK3PXP".to_owned()),
            );
        let tokens = TokenSet {
            access_token: SecretString::from("at_live_token".to_owned()),
            refresh_token: Some(SecretString::from("rt_live_token".to_owned())),
            expires_in: None,
            scope: None,
        };
        let code = AuthorizationCode::new(SecretString::from("ac_the_code".to_owned()));
        let printed = format!("{credentials:?} {tokens:?} {code:?}");
        for secret in [
            "pa55word",
            "JBSWY3DPEHPK3PXP",
            "at_live_token",
            "rt_live_token",
            "ac_the_code",
        ] {
            assert!(!printed.contains(secret), "{secret} in {printed}");
        }
        assert_eq!(
            credentials.redact("user typed pa55word here"),
            "user typed [REDACTED] here"
        );
    }

    #[test]
    fn the_allowlist_matches_hosts_ports_and_subdomains() {
        let mut provider: OAuthProvider = parse(PROVIDER).unwrap();
        provider.allowed_hosts = vec![
            "id.example.com".into(),
            "*.cdn.example.com".into(),
            "127.0.0.1:8765".into(),
        ];
        let allowed = |u: &str| provider.url_allowed(&Url::parse(u).unwrap());
        assert!(allowed("https://id.example.com/login"));
        assert!(allowed("https://ID.example.com:443/login"));
        assert!(allowed("https://a.cdn.example.com/x.css"));
        assert!(!allowed("https://cdn.example.com.evil.net/"));
        assert!(!allowed("https://evil.com/?id.example.com"));
        assert!(allowed("http://127.0.0.1:8765/"));
        assert!(!allowed("http://127.0.0.1:8766/"));
        assert!(!allowed("file:///etc/passwd"));
        assert!(!allowed("javascript:alert(1)"));
    }

    #[test]
    fn the_authorization_url_carries_the_oauth_parameters() {
        let provider: OAuthProvider = parse(PROVIDER).unwrap();
        let pkce = Pkce::generate();
        let url = provider.authorization_url("st4te", Some(&pkce));
        let pairs: BTreeMap<String, String> = url.query_pairs().into_owned().collect();
        assert_eq!(pairs["response_type"], "code");
        assert_eq!(pairs["client_id"], "warden");
        assert_eq!(pairs["redirect_uri"], "https://app.example.com/callback");
        assert_eq!(pairs["scope"], "posts:write profile");
        assert_eq!(pairs["state"], "st4te");
        assert_eq!(pairs["code_challenge_method"], "S256");
        assert_eq!(pairs["code_challenge"], pkce.challenge());
        assert_eq!(
            pkce.challenge(),
            Pkce::challenge_of(pkce.verifier().expose_secret())
        );
        assert!(
            provider.is_redirect(&Url::parse("https://app.example.com/callback?code=x").unwrap())
        );
        assert!(
            !provider.is_redirect(&Url::parse("https://app.example.com/other?code=x").unwrap())
        );
    }

    #[test]
    fn the_pkce_challenge_matches_the_rfc_7636_example() {
        assert_eq!(
            Pkce::challenge_of("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
        let pkce = Pkce::generate();
        assert_eq!(pkce.verifier().expose_secret().len(), 43);
        assert!(!format!("{pkce:?}").contains(pkce.verifier().expose_secret()));
    }

    #[test]
    fn a_totp_code_matches_the_rfc_6238_generator() {
        let seed = SecretString::from("JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP".to_owned());
        let code = TotpSettings::default().current_code(&seed).unwrap();
        assert_eq!(code.expose_secret().len(), 6);
        let bytes = totp_rs::Secret::Encoded("JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP".into())
            .to_bytes()
            .unwrap();
        let reference = totp_rs::TOTP::new(totp_rs::Algorithm::SHA1, 6, 1, 30, bytes).unwrap();
        assert!(reference.check_current(code.expose_secret()).unwrap());
        let bad =
            TotpSettings::default().current_code(&SecretString::from("not base32!".to_owned()));
        assert!(bad.is_err_and(|e| !e.contains("base32!")));
    }
}
