//! How a login fails: [`LoginError`] for the caller, and the [`Failure`] a login session
//! reports before it is judged (crash or not) and redacted.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::reauth::flow::ChannelCredentials;

/// What went wrong with a login, as the re-auth consumer needs to decide on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoginErrorKind {
    /// The provider showed its error element: wrong password, username or TOTP seed.
    /// Retrying with the same credentials will not help.
    BadCredentials,
    /// The login did not finish within its timeout.
    Timeout,
    /// The flow tried to load something from a host outside `allowed_hosts`.
    BlockedNavigation,
    /// Chromium or the Playwright driver died; the next login relaunches them.
    BrowserCrashed,
    /// Anything else: a missing selector, a missing credential, a provider error redirect.
    Other,
}

impl std::fmt::Display for LoginErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::BadCredentials => "bad credentials",
            Self::Timeout => "timeout",
            Self::BlockedNavigation => "blocked navigation",
            Self::BrowserCrashed => "browser crashed",
            Self::Other => "login failed",
        })
    }
}

/// A failed login. The message never contains a secret: text from Playwright passes through
/// the channel's redactor first.
#[derive(Debug, thiserror::Error)]
#[error("{kind}: {detail}")]
pub struct LoginError {
    kind: LoginErrorKind,
    detail: String,
    artifacts: Option<PathBuf>,
}

impl LoginError {
    pub(super) fn new(kind: LoginErrorKind, detail: impl Into<String>) -> Self {
        Self {
            kind,
            detail: detail.into(),
            artifacts: None,
        }
    }

    /// No authorization code arrived within `timeout`.
    pub(super) fn timed_out(timeout: Duration) -> Self {
        Self::new(LoginErrorKind::Timeout, no_code_within(timeout))
    }

    /// The login driver is shut down: no login can start.
    pub(super) fn shut_down() -> Self {
        Self::new(LoginErrorKind::Other, "login driver is shut down")
    }

    /// Records where the failure's artifacts were saved.
    pub(super) fn set_artifacts(&mut self, dir: Option<PathBuf>) {
        self.artifacts = dir;
    }

    /// The kind of failure.
    pub fn kind(&self) -> LoginErrorKind {
        self.kind
    }

    /// What happened, in words.
    pub fn detail(&self) -> &str {
        &self.detail
    }

    /// The directory holding `page.png`, `page.html` and `error.txt`, when saved.
    pub fn artifacts(&self) -> Option<&Path> {
        self.artifacts.as_deref()
    }

    /// The provider rejected the credentials.
    pub fn is_bad_credentials(&self) -> bool {
        self.kind == LoginErrorKind::BadCredentials
    }

    /// The login ran out of time.
    pub fn is_timeout(&self) -> bool {
        self.kind == LoginErrorKind::Timeout
    }

    /// The flow left the allowlist.
    pub fn is_blocked_navigation(&self) -> bool {
        self.kind == LoginErrorKind::BlockedNavigation
    }

    /// The browser or driver died during the login.
    pub fn is_browser_crashed(&self) -> bool {
        self.kind == LoginErrorKind::BrowserCrashed
    }

    /// Whether trying again unchanged may succeed. Bad credentials and a flow that leaves
    /// the allowlist fail the same way every time.
    pub fn is_retryable(&self) -> bool {
        !matches!(
            self.kind,
            LoginErrorKind::BadCredentials | LoginErrorKind::BlockedNavigation
        )
    }
}

fn no_code_within(timeout: Duration) -> String {
    format!("no authorization code within {timeout:?}")
}

/// Why a login failed, before it becomes a [`LoginError`].
pub(super) enum Failure {
    BadCredentials,
    Timeout,
    Blocked(String),
    Crashed(String),
    Other(String),
}

impl Failure {
    pub(super) fn from_playwright(step: &str, e: &playwright_rs::Error) -> Self {
        let text = e.to_string();
        let closed = matches!(
            e,
            playwright_rs::Error::TargetClosed { .. }
                | playwright_rs::Error::ChannelClosed
                | playwright_rs::Error::TransportError(_)
        ) || text.contains("has been closed")
            || text.contains("Target closed")
            || text.contains("Browser closed");
        if closed {
            Self::Crashed(format!("{step}: {text}"))
        } else {
            Self::Other(format!("{step}: {text}"))
        }
    }

    pub(super) fn is_crash(&self) -> bool {
        matches!(self, Self::Crashed(_))
    }

    pub(super) fn into_error(
        self,
        credentials: &ChannelCredentials,
        timeout: Duration,
        browser_gone: bool,
    ) -> LoginError {
        let (kind, detail) = match self {
            _ if browser_gone => (
                LoginErrorKind::BrowserCrashed,
                "the browser disconnected during the login".to_owned(),
            ),
            Self::BadCredentials => (
                LoginErrorKind::BadCredentials,
                "the provider showed its error element after the credentials were submitted"
                    .to_owned(),
            ),
            Self::Timeout => (LoginErrorKind::Timeout, no_code_within(timeout)),
            Self::Blocked(host) => (
                LoginErrorKind::BlockedNavigation,
                format!("the flow tried to load {host}, which is not in allowed_hosts"),
            ),
            Self::Crashed(detail) => (LoginErrorKind::BrowserCrashed, detail),
            Self::Other(detail) => (LoginErrorKind::Other, detail),
        };
        LoginError::new(kind, credentials.redact(&detail))
    }
}
