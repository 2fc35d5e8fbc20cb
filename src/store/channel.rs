//! What the store says about a channel: its status, its metadata, and its tokens.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};

/// Where a channel stands in the re-auth cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChannelStatus {
    /// The token is believed good; tasks run.
    Active,
    /// The token was revoked and a re-auth is requested or running; tasks park.
    ReauthPending,
    /// Re-auth gave up; tasks go dead with reason `reauth_failed` until a token is set.
    ReauthFailed,
}

impl ChannelStatus {
    /// The stored and displayed name: `active`, `reauth_pending` or `reauth_failed`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::ReauthPending => "reauth_pending",
            Self::ReauthFailed => "reauth_failed",
        }
    }
}

impl fmt::Display for ChannelStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A string that is not one of the three status names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown channel status {0:?} (expected active, reauth_pending or reauth_failed)")]
pub struct ParseStatusError(String);

impl FromStr for ChannelStatus {
    type Err = ParseStatusError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "active" => Ok(Self::Active),
            "reauth_pending" => Ok(Self::ReauthPending),
            "reauth_failed" => Ok(Self::ReauthFailed),
            other => Err(ParseStatusError(other.to_owned())),
        }
    }
}

/// A channel's metadata. It holds no token by construction, so it is safe to print, log and
/// serialize (for `warden channels list|status`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChannelRecord {
    /// The channel name.
    pub channel: String,
    /// The provider the channel authenticates with.
    pub provider: String,
    /// Token version: 0 before the first token, then +1 on every token change.
    pub version: u64,
    /// Re-auth status.
    pub status: ChannelStatus,
    /// Why the last re-auth failed; cleared when a token is stored.
    pub last_error: Option<String>,
    /// Whether a token is stored at all.
    pub has_token: bool,
    /// When the access token expires, if the provider said.
    pub token_expires_at: Option<DateTime<Utc>>,
    /// Who holds the re-auth lease, if anyone (it may have expired).
    pub lease_holder: Option<String>,
    /// When the lease expires.
    pub lease_expires_at: Option<DateTime<Utc>>,
    /// When the token or status last changed.
    pub updated_at: DateTime<Utc>,
}

/// A channel's tokens. `Debug` redacts both tokens.
#[derive(Debug, Clone)]
pub struct TokenSet {
    /// The bearer token sent to the platform.
    pub access_token: SecretString,
    /// The refresh token, if the provider issued one.
    pub refresh_token: Option<SecretString>,
    /// When the access token expires, if known.
    pub expires_at: Option<DateTime<Utc>>,
}

/// Longest token lifetime warden records (ten years). Providers and operators
/// can claim any `expires_in`; past this it means "does not expire soon", and
/// the clamp keeps every stored time a valid four-digit year in both backends
/// (a year past 9999 made one SQLite row unreadable for `warden channels`).
pub const MAX_TOKEN_LIFETIME: std::time::Duration =
    std::time::Duration::from_secs(10 * 366 * 86_400);

/// When a token that lives `lifetime` from `now` expires, with lifetimes past
/// [`MAX_TOKEN_LIFETIME`] clamped, so no `expires_in` can overflow a date.
#[must_use]
pub fn expiry_after(now: DateTime<Utc>, lifetime: std::time::Duration) -> DateTime<Utc> {
    let lifetime = chrono::Duration::from_std(lifetime.min(MAX_TOKEN_LIFETIME))
        .unwrap_or_else(|_| chrono::Duration::zero());
    now.checked_add_signed(lifetime).unwrap_or(now)
}

/// `expires_at` as stored: at most [`MAX_TOKEN_LIFETIME`] from now, whatever a
/// caller of [`TokenStore::put_token`] built.
pub(super) fn stored_expiry(expires_at: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
    expires_at.map(|t| t.min(expiry_after(Utc::now(), MAX_TOKEN_LIFETIME)))
}

impl TokenSet {
    /// A token set with only an access token.
    #[must_use]
    pub fn new(access_token: impl Into<SecretString>) -> Self {
        Self {
            access_token: access_token.into(),
            refresh_token: None,
            expires_at: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_names_round_trip_in_snake_case() {
        for status in [
            ChannelStatus::Active,
            ChannelStatus::ReauthPending,
            ChannelStatus::ReauthFailed,
        ] {
            assert_eq!(status.as_str().parse::<ChannelStatus>().unwrap(), status);
            assert_eq!(
                serde_json::to_string(&status).unwrap(),
                format!("\"{}\"", status.as_str())
            );
        }
        assert_eq!(ChannelStatus::ReauthPending.as_str(), "reauth_pending");
        assert!("Active".parse::<ChannelStatus>().is_err());
    }

    #[test]
    fn token_set_debug_redacts_both_tokens() {
        let tokens = TokenSet {
            access_token: "acc-plaintext".into(),
            refresh_token: Some("ref-plaintext".into()),
            expires_at: None,
        };
        let debug = format!("{tokens:?}");
        assert!(
            !debug.contains("acc-plaintext") && !debug.contains("ref-plaintext"),
            "{debug}"
        );
    }

    #[test]
    fn any_lifetime_gives_an_expiry_within_ten_years_without_panicking() {
        let now = Utc::now();
        for secs in [0, 3_600, 300_000_000_000, 1_000_000_000_000_000, u64::MAX] {
            let at = expiry_after(now, std::time::Duration::from_secs(secs));
            assert!(
                at >= now && at <= now + chrono::Duration::days(3_660),
                "{secs}: {at}"
            );
        }
        assert_eq!(
            expiry_after(now, std::time::Duration::from_secs(3_600)),
            now + chrono::Duration::hours(1)
        );
        assert!(
            stored_expiry(Some(DateTime::<Utc>::MAX_UTC)).unwrap()
                < now + chrono::Duration::days(3_700)
        );
    }
}
