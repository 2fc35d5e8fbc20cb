//! Proof Key for Code Exchange (RFC 7636): the verifier a login keeps and the challenge its
//! authorization request carries.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use secrecy::SecretString;

/// A PKCE verifier and its S256 challenge (RFC 7636 §4.1–4.2).
#[derive(Clone, Debug)]
pub struct Pkce {
    verifier: SecretString,
    challenge: String,
}

impl Pkce {
    /// A fresh verifier of 43 URL-safe characters (256 random bits) and its challenge.
    pub fn generate() -> Self {
        use rand::RngCore as _;
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        let verifier = URL_SAFE_NO_PAD.encode(bytes);
        let challenge = Self::challenge_of(&verifier);
        Self {
            verifier: SecretString::from(verifier),
            challenge,
        }
    }

    /// `BASE64URL(SHA256(verifier))`, the S256 transformation.
    pub fn challenge_of(verifier: &str) -> String {
        use sha2::Digest as _;
        URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(verifier.as_bytes()))
    }

    /// The challenge sent with the authorization request.
    pub fn challenge(&self) -> &str {
        &self.challenge
    }

    /// The verifier sent with the code exchange.
    pub fn verifier(&self) -> &SecretString {
        &self.verifier
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret as _;

    #[test]
    fn the_pkce_challenge_matches_the_rfc_7636_example() {
        assert_eq!(
            Pkce::challenge_of("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
        let pkce = Pkce::generate();
        assert_eq!(pkce.verifier().expose_secret().len(), 43);
        assert!(!format!("{pkce:?}").contains(pkce.verifier().expose_secret()));
    }
}
