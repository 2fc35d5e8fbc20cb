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
//! refuse inline values, and every secret is a [`SecretString`](secrecy::SecretString) so `Debug` prints it redacted.
//!
//! One file per role: [`SecretRef`] and [`ChannelCredentials`] (secrets), the [`Step`]
//! language (steps), [`TotpSettings`] (totp), [`OAuthProvider`] and its validation
//! (provider), [`Pkce`] (pkce), and the token client (oauth).

mod oauth;
mod pkce;
mod provider;
mod secrets;
mod steps;
mod totp;

pub use oauth::{AuthorizationCode, TokenError, TokenSet};
pub use pkce::Pkce;
pub use provider::{FlowConfigError, OAuthProvider, TokenAuth};
pub use secrets::{ChannelCredentials, CredentialRefs, SecretRef, SecretRefError, TOTP_SECRET};
pub use steps::{FillValue, Step};
pub use totp::{TotpAlgorithm, TotpError, TotpSettings};

/// What the unit tests of several files share: a TOML parser and a provider using every step.
#[cfg(test)]
mod testing {
    use figment::providers::{Format as _, Toml};

    pub(super) fn parse<T: serde::de::DeserializeOwned>(toml: &str) -> Result<T, String> {
        figment::Figment::from(Toml::string(toml))
            .extract()
            .map_err(|e| e.to_string())
    }

    pub(super) const PROVIDER: &str = r##"
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
}

#[cfg(test)]
mod tests {
    use secrecy::SecretString;

    use super::*;

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
}
