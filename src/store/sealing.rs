//! A channel's [`TokenSet`] as the bytes the database holds: serialized, then sealed with the
//! keyring (see [`super::crypto`]) under the channel and version it belongs to.

use chrono::{DateTime, Utc};
use secrecy::zeroize::Zeroizing;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use super::channel::{TokenSet, stored_expiry};
use super::crypto::{Keyring, Sealed};
use super::error::StoreError;

/// The plaintext that gets sealed: every field of a [`TokenSet`], so the expiry is authenticated
/// along with the tokens. Short-lived and zeroized after use.
#[derive(Serialize)]
struct SealedPayloadOut<'a> {
    v: u8,
    access_token: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    refresh_token: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_at: Option<DateTime<Utc>>,
}

#[derive(Deserialize)]
struct SealedPayloadIn {
    v: u8,
    access_token: SecretString,
    refresh_token: Option<SecretString>,
    expires_at: Option<DateTime<Utc>>,
}

/// Seals a token set for a channel with the keyring's current key.
pub(super) fn seal(
    keys: &Keyring,
    channel: &str,
    version: u64,
    tokens: &TokenSet,
) -> Result<Sealed, StoreError> {
    if tokens.access_token.expose_secret().is_empty() {
        return Err(StoreError::EmptyAccessToken);
    }
    let payload = SealedPayloadOut {
        v: 1,
        access_token: tokens.access_token.expose_secret(),
        refresh_token: tokens
            .refresh_token
            .as_ref()
            .map(ExposeSecret::expose_secret),
        expires_at: stored_expiry(tokens.expires_at),
    };
    let json = Zeroizing::new(serde_json::to_vec(&payload).expect("token payload serializes"));
    Ok(keys.encrypt(channel, version, &json))
}

/// Opens a channel's sealed token set.
pub(super) fn open(
    keys: &Keyring,
    channel: &str,
    version: u64,
    sealed: &Sealed,
) -> Result<TokenSet, StoreError> {
    let json = keys
        .decrypt(channel, version, sealed)
        .map_err(|source| StoreError::Decrypt {
            channel: channel.to_owned(),
            source,
        })?;
    // serde_json's error can quote input; the input is the plaintext token, so drop the detail.
    let payload: SealedPayloadIn =
        serde_json::from_slice(&json).map_err(|_| StoreError::Corrupt {
            channel: channel.to_owned(),
            reason: "decrypted token payload is not valid JSON".to_owned(),
        })?;
    if payload.v != 1 {
        return Err(StoreError::Corrupt {
            channel: channel.to_owned(),
            reason: format!("unknown token payload version {}", payload.v),
        });
    }
    Ok(TokenSet {
        access_token: payload.access_token,
        refresh_token: payload.refresh_token,
        expires_at: payload.expires_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealing_round_trips_every_field() {
        let keys = Keyring::generate();
        let expires = DateTime::parse_from_rfc3339("2030-01-02T03:04:05.123456Z")
            .unwrap()
            .with_timezone(&Utc);
        let tokens = TokenSet {
            access_token: "a".into(),
            refresh_token: Some("r".into()),
            expires_at: Some(expires),
        };
        let opened = open(&keys, "c", 1, &seal(&keys, "c", 1, &tokens).unwrap()).unwrap();
        assert_eq!(opened.access_token.expose_secret(), "a");
        assert_eq!(opened.refresh_token.unwrap().expose_secret(), "r");
        assert_eq!(opened.expires_at, Some(expires));
    }

    #[test]
    fn empty_access_tokens_are_refused() {
        let keys = Keyring::generate();
        assert!(matches!(
            seal(&keys, "c", 1, &TokenSet::new("")),
            Err(StoreError::EmptyAccessToken)
        ));
    }
}
