//! Where the keyring comes from: the environment, a key file, or base64 text. Every error names
//! where a key came from and never its value.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use secrecy::zeroize::Zeroizing;
use secrecy::{ExposeSecret, SecretString};

use super::Keyring;
use super::key::{KEY_LEN, TokenKey};

/// Environment variable holding the current key, base64 of 32 bytes.
pub const KEY_ENV: &str = "WARDEN_TOKEN_KEY";
/// Environment variable naming a file that holds the current key (base64, or 32 raw bytes).
pub const KEY_FILE_ENV: &str = "WARDEN_TOKEN_KEY_FILE";
/// Environment variable holding retired keys still accepted for reading, comma-separated base64.
pub const KEY_PREVIOUS_ENV: &str = "WARDEN_TOKEN_KEY_PREVIOUS";

/// Why a key could not be loaded. Messages name where the key came from, never its value.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Neither `WARDEN_TOKEN_KEY` nor `WARDEN_TOKEN_KEY_FILE` is set.
    #[error(
        "no token encryption key: set {KEY_ENV} (base64 of 32 random bytes, e.g. `openssl rand -base64 32`) or {KEY_FILE_ENV}"
    )]
    Missing,
    /// Both `WARDEN_TOKEN_KEY` and `WARDEN_TOKEN_KEY_FILE` are set, so which one wins is unclear.
    #[error("both {KEY_ENV} and {KEY_FILE_ENV} are set; set only one")]
    Ambiguous,
    /// The key text is not valid base64. The decoder's detail is dropped on purpose: it quotes
    /// the offending byte, which is a piece of the key.
    #[error("token key from {origin} is not valid base64")]
    InvalidBase64 {
        /// Where the key came from (an env var name or a file path).
        origin: String,
    },
    /// The key decodes to the wrong number of bytes.
    #[error("token key from {origin} must be 32 bytes, got {len}")]
    WrongLength {
        /// Where the key came from (an env var name or a file path).
        origin: String,
        /// The decoded length.
        len: usize,
    },
    /// The key file could not be read.
    #[error("cannot read token key file {path}: {source}")]
    Read {
        /// The key file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

impl TokenKey {
    /// Parses base64 (standard alphabet, padding optional, surrounding whitespace ignored) of
    /// exactly 32 bytes. `origin` names the source in error messages.
    ///
    /// # Errors
    /// [`KeyError::InvalidBase64`] or [`KeyError::WrongLength`]; neither quotes the input.
    pub fn from_base64(text: &str, origin: &str) -> Result<Self, KeyError> {
        let trimmed = text.trim();
        let decoded = Zeroizing::new(
            STANDARD
                .decode(trimmed)
                .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(trimmed))
                .map_err(|_| KeyError::InvalidBase64 {
                    origin: origin.to_owned(),
                })?,
        );
        Self::from_slice(&decoded, origin)
    }

    fn from_slice(bytes: &[u8], origin: &str) -> Result<Self, KeyError> {
        let array: &[u8; KEY_LEN] = bytes.try_into().map_err(|_| KeyError::WrongLength {
            origin: origin.to_owned(),
            len: bytes.len(),
        })?;
        Ok(Self::from_bytes(array))
    }
}

impl Keyring {
    /// A keyring whose current key is base64 of 32 bytes.
    ///
    /// # Errors
    /// [`KeyError::InvalidBase64`] or [`KeyError::WrongLength`].
    pub fn from_base64(text: &str) -> Result<Self, KeyError> {
        TokenKey::from_base64(text, "base64 input").map(Self::new)
    }

    /// A keyring whose current key is read from a file: base64 text (as a Kubernetes secret
    /// mount or `openssl rand -base64 32 > key` gives), or exactly 32 raw bytes.
    ///
    /// # Errors
    /// [`KeyError::Read`], [`KeyError::InvalidBase64`] or [`KeyError::WrongLength`].
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, KeyError> {
        read_key_file(path.as_ref()).map(Self::new)
    }

    /// Loads the keyring from the process environment: `WARDEN_TOKEN_KEY` or
    /// `WARDEN_TOKEN_KEY_FILE`, plus optional `WARDEN_TOKEN_KEY_PREVIOUS`.
    ///
    /// # Errors
    /// [`KeyError::Missing`] when no key is configured (production must refuse to start), or
    /// any error of [`Keyring::from_lookup`].
    pub fn from_env() -> Result<Self, KeyError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Like [`Keyring::from_env`] but reads variables through `lookup`, so configuration layers
    /// and tests can supply them without touching the process environment. Empty values count
    /// as unset.
    ///
    /// # Errors
    /// [`KeyError::Missing`], [`KeyError::Ambiguous`], or a parse/read error naming the variable
    /// or file (never the key).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, KeyError> {
        let get = |name: &str| {
            lookup(name)
                .map(SecretString::from)
                .filter(|v| !v.expose_secret().trim().is_empty())
        };
        let inline = get(KEY_ENV);
        let file = get(KEY_FILE_ENV);
        let current = match (inline, file) {
            (Some(_), Some(_)) => return Err(KeyError::Ambiguous),
            (Some(key), None) => TokenKey::from_base64(key.expose_secret(), KEY_ENV)?,
            (None, Some(path)) => read_key_file(Path::new(path.expose_secret().trim()))?,
            (None, None) => return Err(KeyError::Missing),
        };
        let mut previous = Vec::new();
        if let Some(list) = get(KEY_PREVIOUS_ENV) {
            for (i, part) in list
                .expose_secret()
                .split(',')
                .filter(|p| !p.trim().is_empty())
                .enumerate()
            {
                previous.push(TokenKey::from_base64(
                    part,
                    &format!("{KEY_PREVIOUS_ENV} (entry {})", i + 1),
                )?);
            }
        }
        Ok(Self { current, previous })
    }
}

fn read_key_file(path: &Path) -> Result<TokenKey, KeyError> {
    let bytes = Zeroizing::new(std::fs::read(path).map_err(|source| KeyError::Read {
        path: path.to_owned(),
        source,
    })?);
    let origin = path.display().to_string();
    // Base64 text is the usual form; exactly 32 raw bytes that are not base64 of 32 bytes are
    // taken as the key itself (e.g. `head -c 32 /dev/urandom > key`).
    match std::str::from_utf8(&bytes) {
        Ok(text) => match TokenKey::from_base64(text, &origin) {
            Ok(key) => Ok(key),
            Err(err) if bytes.len() == KEY_LEN => {
                TokenKey::from_slice(&bytes, &origin).or(Err(err))
            }
            Err(err) => Err(err),
        },
        Err(_) => TokenKey::from_slice(&bytes, &origin),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn b64(bytes: &[u8]) -> String {
        STANDARD.encode(bytes)
    }

    fn lookup(vars: &[(&str, String)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn from_base64_rejects_wrong_lengths_and_garbage_without_quoting_them() {
        let err = Keyring::from_base64(&b64(&[1u8; 16])).unwrap_err();
        assert!(
            matches!(err, KeyError::WrongLength { len: 16, .. }),
            "{err}"
        );
        let err = Keyring::from_base64("not*base64$SECRETPART").unwrap_err();
        assert!(matches!(err, KeyError::InvalidBase64 { .. }));
        assert!(!err.to_string().contains("SECRETPART"));
        assert!(Keyring::from_base64(&format!("  {}\n", b64(&[1u8; 32]))).is_ok());
    }

    #[test]
    fn env_loading_requires_a_key_and_rejects_two_sources() {
        assert!(matches!(
            Keyring::from_lookup(lookup(&[])),
            Err(KeyError::Missing)
        ));
        let vars = [
            (KEY_ENV, b64(&[1u8; 32])),
            (KEY_FILE_ENV, "/nonexistent".to_owned()),
        ];
        assert!(matches!(
            Keyring::from_lookup(lookup(&vars)),
            Err(KeyError::Ambiguous)
        ));
    }

    #[test]
    fn env_loading_reads_current_and_previous_keys() {
        let vars = [
            (KEY_ENV, b64(&[1u8; 32])),
            (
                KEY_PREVIOUS_ENV,
                format!("{}, {}", b64(&[2u8; 32]), b64(&[3u8; 32])),
            ),
        ];
        let ring = Keyring::from_lookup(lookup(&vars)).unwrap();
        assert_eq!(ring.current_id(), TokenKey::from_bytes(&[1u8; 32]).id());
        let ids: Vec<_> = ring.previous.iter().map(TokenKey::id).collect();
        assert_eq!(
            ids,
            [
                TokenKey::from_bytes(&[2u8; 32]).id(),
                TokenKey::from_bytes(&[3u8; 32]).id()
            ]
        );
    }

    #[test]
    fn a_bad_previous_key_is_reported_by_its_position() {
        let vars = [
            (KEY_ENV, b64(&[1u8; 32])),
            (KEY_PREVIOUS_ENV, format!("{},short", b64(&[2u8; 32]))),
        ];
        let err = Keyring::from_lookup(lookup(&vars)).unwrap_err().to_string();
        assert!(err.contains("entry 2"), "{err}");
    }

    #[test]
    fn key_files_hold_base64_text_or_32_raw_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let text = dir.path().join("key.b64");
        std::fs::write(&text, format!("{}\n", b64(&[5u8; 32]))).unwrap();
        let raw = dir.path().join("key.bin");
        std::fs::write(&raw, [0xffu8; 32]).unwrap();
        assert_eq!(
            Keyring::from_file(&text).unwrap().current_id(),
            TokenKey::from_bytes(&[5u8; 32]).id()
        );
        assert_eq!(
            Keyring::from_file(&raw).unwrap().current_id(),
            TokenKey::from_bytes(&[0xffu8; 32]).id()
        );
        let vars = [(KEY_FILE_ENV, text.display().to_string())];
        assert!(Keyring::from_lookup(lookup(&vars)).is_ok());
        let missing = dir.path().join("missing");
        let err = Keyring::from_file(&missing).unwrap_err();
        assert!(matches!(err, KeyError::Read { .. }), "{err}");
    }
}
