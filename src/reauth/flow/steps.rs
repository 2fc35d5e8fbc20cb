//! The login-step language: what a provider's `login_flow` may ask the browser to do.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

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

#[cfg(test)]
mod tests {
    use crate::reauth::flow::OAuthProvider;
    use crate::reauth::flow::testing::{PROVIDER, parse};

    #[test]
    fn a_fill_value_must_name_a_secret_or_be_marked_as_text() {
        let plain = PROVIDER.replace("value = \"secret:username\"", "value = \"alice\"");
        assert!(parse::<OAuthProvider>(&plain).is_err());
    }
}
