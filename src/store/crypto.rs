//! Encryption of tokens at rest: AES-256-GCM with a keyring that supports rotation.
//!
//! Every encryption draws a fresh random 96-bit nonce, so the same token written twice gives two
//! unrelated ciphertexts. The channel name and the token version are bound in as associated
//! data: a ciphertext copied into another channel's row, or an older ciphertext of the same
//! channel written back over a newer one, fails authentication instead of handing out a foreign
//! or a revoked token.
//!
//! Each ciphertext is stored next to the id of the key that sealed it: the first 8 bytes of
//! HMAC-SHA256(key, a fixed label), so operators never have to name keys, the id reveals nothing
//! about the key, and a reader knows which key to use without trial decryption. Rotation is
//! therefore: make the new key current, keep the old one in `previous`, run `warden token rekey`
//! to rewrite every row with the new key, then drop it.
//!
//! Rows written before this scheme carry the older id, AES_K(0¹²⁸)[..8] (half of GCM's hash key
//! H, which is why it was replaced), and associated data without the version. A key still
//! answers to its older id, and a row found under that id is opened the old way, so those rows
//! stay readable until `warden token rekey` rewrites them.

use std::fmt;
use std::path::{Path, PathBuf};

use aes_gcm::aead::rand_core::RngCore as _;
use aes_gcm::aead::{Aead, AeadCore, OsRng, Payload};
use aes_gcm::aes::Aes256;
use aes_gcm::aes::cipher::BlockEncrypt;
use aes_gcm::{Aes256Gcm, Key, KeyInit, Nonce};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use secrecy::zeroize::Zeroizing;
use secrecy::{ExposeSecret, SecretString};

/// Environment variable holding the current key, base64 of 32 bytes.
pub const KEY_ENV: &str = "WARDEN_TOKEN_KEY";
/// Environment variable naming a file that holds the current key (base64, or 32 raw bytes).
pub const KEY_FILE_ENV: &str = "WARDEN_TOKEN_KEY_FILE";
/// Environment variable holding retired keys still accepted for reading, comma-separated base64.
pub const KEY_PREVIOUS_ENV: &str = "WARDEN_TOKEN_KEY_PREVIOUS";

/// Length of an AES-256 key in bytes.
const KEY_LEN: usize = 32;
/// Length of an AES-GCM nonce in bytes (96 bits, the size GCM is designed for).
const NONCE_LEN: usize = 12;
/// Prefix of the associated data of rows sealed under a key's legacy id (channel only).
const AAD_PREFIX: &[u8] = b"warden/token/v1/";
/// Prefix of the associated data of current rows: then the version (8 bytes, big-endian) and
/// the channel. The fixed-width version makes the encoding unambiguous.
const AAD_V2_PREFIX: &[u8] = b"warden/token/v2/";
/// The HMAC message a key id is derived from.
const KEY_ID_LABEL: &[u8] = b"warden/token/key-id/v2";

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

/// Why a stored token could not be decrypted.
#[derive(Debug, thiserror::Error)]
pub enum DecryptError {
    /// The ciphertext was sealed with a key that is not in the keyring.
    #[error(
        "token was encrypted with key {key_id}, which is not in the keyring (current key is {current}); \
         add the old key to {KEY_PREVIOUS_ENV} or re-seed the token"
    )]
    UnknownKey {
        /// Id of the key that sealed the ciphertext.
        key_id: String,
        /// Id of the keyring's current key.
        current: String,
    },
    /// The key matched by id but the ciphertext did not authenticate: it was altered or moved
    /// from another channel.
    #[error(
        "token ciphertext failed authentication (tampered with, or moved from another channel)"
    )]
    Tampered,
}

/// One AES-256-GCM key and its id. `Debug` shows only the id.
#[derive(Clone)]
pub struct TokenKey {
    id: String,
    /// The id rows written before HMAC key ids carry; read-only.
    legacy_id: String,
    cipher: Aes256Gcm,
}

impl TokenKey {
    /// Builds a key from 32 raw bytes.
    #[must_use]
    pub fn from_bytes(bytes: &[u8; KEY_LEN]) -> Self {
        let key = Key::<Aes256Gcm>::from_slice(bytes);
        Self {
            id: hmac_key_id(bytes),
            legacy_id: key_check_value(bytes),
            cipher: Aes256Gcm::new(key),
        }
    }

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

    /// Draws a fresh random key from the operating system.
    #[must_use]
    pub fn generate() -> Self {
        let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
        OsRng.fill_bytes(&mut *bytes);
        Self::from_bytes(&bytes)
    }

    /// The key's id: derived with HMAC-SHA256, safe to log, stored next to every ciphertext.
    #[must_use]
    pub fn id(&self) -> &str {
        &self.id
    }
}

impl fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// First 8 bytes of HMAC-SHA256(key, [`KEY_ID_LABEL`]), hex. HMAC is a PRF keyed by the token
/// key, so the id names the key without exposing anything the cipher uses.
fn hmac_key_id(bytes: &[u8; KEY_LEN]) -> String {
    use hmac::Mac as _;
    let mut mac = <hmac::Hmac<sha2::Sha256> as hmac::Mac>::new_from_slice(bytes)
        .expect("HMAC takes keys of any length");
    mac.update(KEY_ID_LABEL);
    hex8(&mac.finalize().into_bytes())
}

fn hex8(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes[..8]
        .iter()
        .fold(String::with_capacity(16), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// The id of rows written before [`hmac_key_id`]: the first 8 bytes of AES-256(key, 0^128),
/// which is half of GCM's hash key H. Computed only to find and open those rows.
fn key_check_value(bytes: &[u8; KEY_LEN]) -> String {
    let aes = Aes256::new(bytes.into());
    let mut block = [0u8; 16].into();
    aes.encrypt_block(&mut block);
    hex8(&block)
}

/// How a row's ciphertext was sealed, told by the key id it carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scheme {
    /// Legacy id; associated data binds the channel only.
    Legacy,
    /// Current id; associated data binds the channel and the version.
    V2,
}

/// The keys the store encrypts and decrypts with: writes use `current`, reads use whichever key
/// sealed the ciphertext. `Debug` shows key ids only.
#[derive(Clone, Debug)]
pub struct Keyring {
    /// The key every new ciphertext is sealed with.
    pub current: TokenKey,
    /// Retired keys, still accepted for reading until every row has been rewritten.
    pub previous: Vec<TokenKey>,
}

/// A sealed token: the id of the key used, and `nonce || ciphertext || tag`.
#[derive(Clone, PartialEq, Eq)]
pub struct Sealed {
    /// Id of the key that sealed `blob`.
    pub key_id: String,
    /// `nonce (12 bytes) || ciphertext || GCM tag (16 bytes)`.
    pub blob: Vec<u8>,
}

impl fmt::Debug for Sealed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sealed")
            .field("key_id", &self.key_id)
            .field("len", &self.blob.len())
            .finish()
    }
}

impl Keyring {
    /// A keyring with one key and no retired keys.
    #[must_use]
    pub fn new(current: TokenKey) -> Self {
        Self {
            current,
            previous: Vec::new(),
        }
    }

    /// Adds retired keys that are still accepted for reading.
    #[must_use]
    pub fn with_previous(mut self, previous: impl IntoIterator<Item = TokenKey>) -> Self {
        self.previous.extend(previous);
        self
    }

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

    /// A throwaway random key, for the demo and tests. Tokens sealed with it are unreadable
    /// once the process exits; the caller should say so.
    #[must_use]
    pub fn generate() -> Self {
        Self::new(TokenKey::generate())
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

    /// Id of the current key.
    #[must_use]
    pub fn current_id(&self) -> &str {
        self.current.id()
    }

    fn key(&self, id: &str) -> Option<(&TokenKey, Scheme)> {
        let mut keys = std::iter::once(&self.current).chain(&self.previous);
        keys.find_map(|k| {
            if k.id == id {
                Some((k, Scheme::V2))
            } else if k.legacy_id == id {
                Some((k, Scheme::Legacy))
            } else {
                None
            }
        })
    }

    /// Whether a row sealed under `key_id` is already in the current form: the current key,
    /// under its current id. `warden token rekey` rewrites every other row.
    #[must_use]
    pub fn is_current(&self, key_id: &str) -> bool {
        key_id == self.current.id
    }

    /// Seals `plaintext` as `version` of `channel`'s token, with the current key and a fresh
    /// random nonce.
    ///
    /// # Panics
    /// Only for a plaintext over AES-GCM's 64 GiB limit, which no token approaches.
    #[must_use]
    pub fn encrypt(&self, channel: &str, version: u64, plaintext: &[u8]) -> Sealed {
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let aad = associated_data(Scheme::V2, channel, version);
        let ciphertext = self
            .current
            .cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: plaintext,
                    aad: &aad,
                },
            )
            // Only fails for messages over GCM's 64 GiB limit; tokens are tiny.
            .expect("AES-GCM encryption of a token cannot fail");
        let mut blob = Vec::with_capacity(NONCE_LEN + ciphertext.len());
        blob.extend_from_slice(&nonce);
        blob.extend_from_slice(&ciphertext);
        Sealed {
            key_id: self.current.id.clone(),
            blob,
        }
    }

    /// Opens a ciphertext sealed as `version` of `channel`'s token, with whichever keyring key
    /// matches its id.
    ///
    /// # Errors
    /// [`DecryptError::UnknownKey`] when no key has that id, [`DecryptError::Tampered`] when
    /// authentication fails.
    pub fn decrypt(
        &self,
        channel: &str,
        version: u64,
        sealed: &Sealed,
    ) -> Result<Zeroizing<Vec<u8>>, DecryptError> {
        let (key, scheme) = self
            .key(&sealed.key_id)
            .ok_or_else(|| DecryptError::UnknownKey {
                key_id: sealed.key_id.clone(),
                current: self.current.id.clone(),
            })?;
        if sealed.blob.len() < NONCE_LEN {
            return Err(DecryptError::Tampered);
        }
        let (nonce, ciphertext) = sealed.blob.split_at(NONCE_LEN);
        let aad = associated_data(scheme, channel, version);
        key.cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: &aad,
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| DecryptError::Tampered)
    }
}

fn associated_data(scheme: Scheme, channel: &str, version: u64) -> Vec<u8> {
    let mut aad = Vec::with_capacity(AAD_V2_PREFIX.len() + 8 + channel.len());
    match scheme {
        Scheme::Legacy => aad.extend_from_slice(AAD_PREFIX),
        Scheme::V2 => {
            aad.extend_from_slice(AAD_V2_PREFIX);
            aad.extend_from_slice(&version.to_be_bytes());
        }
    }
    aad.extend_from_slice(channel.as_bytes());
    aad
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
    fn a_sealed_token_opens_only_for_the_same_channel() {
        let ring = Keyring::generate();
        let sealed = ring.encrypt("acme", 1, b"secret-token");
        assert_eq!(&*ring.decrypt("acme", 1, &sealed).unwrap(), b"secret-token");
        assert!(matches!(
            ring.decrypt("other", 1, &sealed),
            Err(DecryptError::Tampered)
        ));
    }

    #[test]
    fn a_sealed_token_opens_only_as_the_version_it_was_sealed_for() {
        let ring = Keyring::generate();
        let sealed = ring.encrypt("acme", 3, b"token-v3");
        assert_eq!(&*ring.decrypt("acme", 3, &sealed).unwrap(), b"token-v3");
        // An old ciphertext written back into a row that has moved on does not open.
        assert!(matches!(
            ring.decrypt("acme", 4, &sealed),
            Err(DecryptError::Tampered)
        ));
    }

    #[test]
    fn rows_under_the_legacy_key_id_still_open_and_are_not_current() {
        let bytes = [9u8; 32];
        let key = TokenKey::from_bytes(&bytes);
        // A row as the previous scheme wrote it: the AES key check value as id, and
        // associated data without the version.
        let nonce = [1u8; NONCE_LEN];
        let aad = associated_data(Scheme::Legacy, "acme", 0);
        let mut blob = nonce.to_vec();
        blob.extend(
            key.cipher
                .encrypt(
                    Nonce::from_slice(&nonce),
                    Payload {
                        msg: b"old-token",
                        aad: &aad,
                    },
                )
                .unwrap(),
        );
        let legacy = Sealed {
            key_id: key_check_value(&bytes),
            blob,
        };
        let ring = Keyring::new(key.clone());
        assert_eq!(&*ring.decrypt("acme", 7, &legacy).unwrap(), b"old-token");
        assert!(!ring.is_current(&legacy.key_id));
        assert!(ring.is_current(ring.encrypt("acme", 7, b"t").key_id.as_str()));
    }

    #[test]
    fn the_key_id_is_an_hmac_not_half_of_the_gcm_hash_key() {
        let bytes = [7u8; 32];
        let key = TokenKey::from_bytes(&bytes);
        assert_ne!(key.id(), key_check_value(&bytes));
        use hmac::Mac as _;
        let mut mac = <hmac::Hmac<sha2::Sha256> as hmac::Mac>::new_from_slice(&bytes).unwrap();
        mac.update(KEY_ID_LABEL);
        let expected = mac.finalize().into_bytes();
        assert_eq!(key.id(), hex8(&expected));
    }

    #[test]
    fn two_encryptions_of_the_same_token_differ() {
        let ring = Keyring::generate();
        assert_ne!(
            ring.encrypt("c", 1, b"t").blob,
            ring.encrypt("c", 1, b"t").blob
        );
    }

    #[test]
    fn a_flipped_bit_fails_authentication() {
        let ring = Keyring::generate();
        let mut sealed = ring.encrypt("c", 1, b"token");
        let last = sealed.blob.len() - 1;
        sealed.blob[last] ^= 1;
        assert!(matches!(
            ring.decrypt("c", 1, &sealed),
            Err(DecryptError::Tampered)
        ));
    }

    #[test]
    fn an_unknown_key_id_names_both_keys_and_the_fix() {
        let a = Keyring::generate();
        let b = Keyring::generate();
        let err = b.decrypt("c", 1, &a.encrypt("c", 1, b"x")).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains(a.current_id()) && msg.contains(b.current_id()),
            "{msg}"
        );
        assert!(msg.contains(KEY_PREVIOUS_ENV), "{msg}");
    }

    #[test]
    fn previous_keys_decrypt_but_writes_use_the_current_key() {
        let old = TokenKey::generate();
        let sealed = Keyring::new(old.clone()).encrypt("c", 1, b"x");
        let ring = Keyring::generate().with_previous([old]);
        assert_eq!(&*ring.decrypt("c", 1, &sealed).unwrap(), b"x");
        assert_eq!(ring.encrypt("c", 1, b"x").key_id, ring.current_id());
    }

    #[test]
    fn key_id_is_stable_for_the_same_key_and_differs_across_keys() {
        let bytes = [7u8; 32];
        assert_eq!(
            TokenKey::from_bytes(&bytes).id(),
            TokenKey::from_bytes(&bytes).id()
        );
        assert_ne!(
            TokenKey::from_bytes(&bytes).id(),
            TokenKey::from_bytes(&[8u8; 32]).id()
        );
        assert_eq!(TokenKey::from_bytes(&bytes).id().len(), 16);
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
    fn debug_output_shows_key_ids_but_no_key_material() {
        let bytes = [0x41u8; 32];
        let ring = Keyring::new(TokenKey::from_bytes(&bytes));
        let debug = format!("{ring:?}");
        assert!(debug.contains(ring.current_id()));
        assert!(!debug.contains(&b64(&bytes)));
        assert!(!debug.contains("AAAA"), "{debug}");
        assert!(!debug.contains("65, 65"), "{debug}");
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
