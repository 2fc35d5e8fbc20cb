//! Secret references (an environment variable or a file, never an inline value) and a
//! channel's credentials resolved from them.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use secrecy::{ExposeSecret as _, SecretString};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reauth::flow::OAuthProvider;
    use crate::reauth::flow::testing::{PROVIDER, parse};

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
}
