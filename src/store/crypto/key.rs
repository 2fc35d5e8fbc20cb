//! One AES-256-GCM key and the ids it answers to.
//!
//! A key's id is the first 8 bytes of HMAC-SHA256(key, a fixed label): operators never have to
//! name keys, the id reveals nothing about the key, and a reader knows which key sealed a row
//! without trial decryption. The legacy id, AES_K(0¹²⁸)[..8], is half of GCM's hash key H; it is
//! computed only to find and open rows written before the HMAC ids.

use std::fmt;

use aes_gcm::aead::OsRng;
use aes_gcm::aead::rand_core::RngCore as _;
use aes_gcm::aes::Aes256;
use aes_gcm::aes::cipher::BlockEncrypt;
use aes_gcm::{Aes256Gcm, Key, KeyInit};
use secrecy::zeroize::Zeroizing;

/// Length of an AES-256 key in bytes.
pub(super) const KEY_LEN: usize = 32;
/// The HMAC message a key id is derived from.
const KEY_ID_LABEL: &[u8] = b"warden/token/key-id/v2";

/// One AES-256-GCM key and its id. `Debug` shows only the id.
#[derive(Clone)]
pub struct TokenKey {
    pub(super) id: String,
    /// The id rows written before HMAC key ids carry; read-only.
    pub(super) legacy_id: String,
    pub(super) cipher: Aes256Gcm,
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
pub(super) fn key_check_value(bytes: &[u8; KEY_LEN]) -> String {
    let aes = Aes256::new(bytes.into());
    let mut block = [0u8; 16].into();
    aes.encrypt_block(&mut block);
    hex8(&block)
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
