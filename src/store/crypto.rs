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
//!
//! This file seals and opens; `crypto/key.rs` holds one key and its ids, and `crypto/load.rs`
//! reads the keyring from the environment or a file. It stays at `src/store/crypto.rs`, not
//! `crypto/mod.rs`, because the migrations name that path and an applied migration cannot change.

mod key;
mod load;

use std::fmt;

use aes_gcm::aead::{Aead, AeadCore, OsRng, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use secrecy::zeroize::Zeroizing;

pub use key::TokenKey;
pub use load::{KEY_ENV, KEY_FILE_ENV, KEY_PREVIOUS_ENV, KeyError};

/// Length of an AES-GCM nonce in bytes (96 bits, the size GCM is designed for).
const NONCE_LEN: usize = 12;
/// Prefix of the associated data of rows sealed under a key's legacy id (channel only).
const AAD_PREFIX: &[u8] = b"warden/token/v1/";
/// Prefix of the associated data of current rows: then the version (8 bytes, big-endian) and
/// the channel. The fixed-width version makes the encoding unambiguous.
const AAD_V2_PREFIX: &[u8] = b"warden/token/v2/";

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

    /// A throwaway random key, for the demo and tests. Tokens sealed with it are unreadable
    /// once the process exits; the caller should say so.
    #[must_use]
    pub fn generate() -> Self {
        Self::new(TokenKey::generate())
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

#[cfg(test)]
mod tests {
    use base64::Engine as _;

    use super::key::key_check_value;
    use super::*;

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
    fn debug_output_shows_key_ids_but_no_key_material() {
        let bytes = [0x41u8; 32];
        let ring = Keyring::new(TokenKey::from_bytes(&bytes));
        let debug = format!("{ring:?}");
        assert!(debug.contains(ring.current_id()));
        assert!(!debug.contains(&base64::engine::general_purpose::STANDARD.encode(bytes)));
        assert!(!debug.contains("AAAA"), "{debug}");
        assert!(!debug.contains("65, 65"), "{debug}");
    }
}
