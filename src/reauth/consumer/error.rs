//! Why one try to heal a channel failed, by the kind that decides what happens next.

use crate::reauth::flow::TokenError;

/// Why one try to heal a channel failed. The kind decides what happens next:
/// only [`HealError::Credentials`] fails the channel; every other kind is
/// tried again later, with backoff, while the tasks stay parked, and logged
/// as a warning when it may pass by itself ([`HealError::is_transient`]) or
/// as an error when an operator must fix this process's configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HealError {
    /// The provider stated that the channel cannot log in: its error element
    /// was shown, the code exchange answered `invalid_grant`, or the login
    /// flow could not proceed on the provider's own (answering) page.
    #[error("{0}")]
    Credentials(String),
    /// The provider did not answer, or answered 429 or 5xx.
    #[error("{0}")]
    Provider(String),
    /// The token store could not be read or written.
    #[error("token store: {0}")]
    Store(String),
    /// Chromium or its driver crashed or timed out while the provider was
    /// answering, before the login could be judged.
    #[error("{0}")]
    Browser(String),
    /// This process cannot log in for this channel as configured: an unset
    /// credential, a flow leaving `allowed_hosts`, a client the provider
    /// does not accept.
    #[error("{0}")]
    Config(String),
}

impl HealError {
    /// Worth trying again unchanged after a pause: the provider, the token
    /// store or the browser may be back.
    #[must_use]
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Provider(_) | Self::Store(_) | Self::Browser(_))
    }

    /// Stable name for logs.
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Credentials(_) => "credentials",
            Self::Provider(_) => "provider",
            Self::Store(_) => "store",
            Self::Browser(_) => "browser",
            Self::Config(_) => "config",
        }
    }

    pub(super) fn store(e: &crate::store::StoreError) -> Self {
        Self::Store(e.to_string())
    }

    /// A refused token request: `invalid_grant` says the code (so the login)
    /// is dead, 429/5xx and transport errors say the provider is struggling,
    /// and the rest (`invalid_client`, an unreadable client secret) is ours.
    pub(super) fn token(what: &str, e: &TokenError) -> Self {
        if e.is_invalid_grant() {
            Self::Credentials(format!("{what}: {e}"))
        } else if e.is_transient() || matches!(e, TokenError::Malformed(_)) {
            Self::Provider(format!("{what}: {e}"))
        } else {
            Self::Config(format!("{what}: {e}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_provider_store_and_browser_trouble_is_transient() {
        let transient = |e: HealError| e.is_transient();
        assert!(transient(HealError::Provider("503".into())));
        assert!(transient(HealError::Store("locked".into())));
        assert!(transient(HealError::Browser("crashed".into())));
        assert!(!transient(HealError::Credentials("bad password".into())));
        assert!(!transient(HealError::Config("unset credential".into())));
    }

    #[test]
    fn token_errors_map_to_the_heal_error_that_decides_what_happens() {
        let rejected = |error: &str| TokenError::Rejected {
            status: 400,
            error: error.into(),
            description: None,
        };
        let kind = |e: TokenError| HealError::token("code exchange", &e).kind();
        assert_eq!(kind(rejected("invalid_grant")), "credentials");
        assert_eq!(kind(rejected("invalid_client")), "config");
        assert_eq!(kind(TokenError::Status(503)), "provider");
        assert_eq!(kind(TokenError::Status(429)), "provider");
        assert_eq!(kind(TokenError::Transport("refused".into())), "provider");
        assert_eq!(kind(TokenError::Malformed("html".into())), "provider");
    }
}
