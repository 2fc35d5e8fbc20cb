//! A provider as warden's configuration describes it, and what can be checked and derived
//! from it without a browser: validation, the authorization request, the host allowlist.

use serde::{Deserialize, Serialize};
use url::Url;

use super::pkce::Pkce;
use super::secrets::SecretRef;
use super::steps::Step;
use super::totp::TotpSettings;

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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use secrecy::ExposeSecret as _;

    use super::*;
    use crate::reauth::flow::testing::{PROVIDER, parse};
    use crate::reauth::flow::{FillValue, TokenAuth};

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
}
