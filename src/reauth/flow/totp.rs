//! One-time codes for the `totp` step (RFC 6238).

use secrecy::{ExposeSecret as _, SecretString};
use serde::{Deserialize, Serialize};

/// TOTP parameters of a provider; the defaults (SHA-1, 6 digits, 30 s) are what nearly every
/// authenticator app uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TotpSettings {
    /// Code length, 6 to 8.
    #[serde(default = "default_digits")]
    pub digits: usize,
    /// Seconds per code.
    #[serde(default = "default_period")]
    pub period: u64,
    /// `sha1`, `sha256` or `sha512`.
    #[serde(default)]
    pub algorithm: TotpAlgorithm,
}

impl Default for TotpSettings {
    fn default() -> Self {
        Self {
            digits: default_digits(),
            period: default_period(),
            algorithm: TotpAlgorithm::default(),
        }
    }
}

fn default_digits() -> usize {
    6
}
fn default_period() -> u64 {
    30
}

/// HMAC of a TOTP.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TotpAlgorithm {
    /// HMAC-SHA-1.
    #[default]
    Sha1,
    /// HMAC-SHA-256.
    Sha256,
    /// HMAC-SHA-512.
    Sha512,
}

/// Why no code could be generated. Never carries the seed.
#[derive(Debug, thiserror::Error)]
pub enum TotpError {
    /// The seed is not base32 of at least 128 bits: the channel's `totp` credential is wrong.
    #[error("the TOTP seed is not valid base32")]
    Seed,
    /// The provider's `totp` settings are unusable.
    #[error("invalid TOTP settings: {0}")]
    Settings(String),
    /// The system clock reads a time before 1970.
    #[error("the system clock is before 1970")]
    Clock,
}

impl TotpSettings {
    /// The current code for a base32 `seed`.
    ///
    /// # Errors
    /// [`TotpError::Seed`] when the seed is not base32 of at least 128 bits, and the other
    /// kinds when the settings or the clock are at fault; none of them shows the seed.
    pub fn current_code(&self, seed: &SecretString) -> Result<SecretString, TotpError> {
        let normalized = seed.expose_secret().trim().replace(' ', "").to_uppercase();
        let bytes = totp_rs::Secret::Encoded(normalized.trim_end_matches('=').to_owned())
            .to_bytes()
            .map_err(|_| TotpError::Seed)?;
        let algorithm = match self.algorithm {
            TotpAlgorithm::Sha1 => totp_rs::Algorithm::SHA1,
            TotpAlgorithm::Sha256 => totp_rs::Algorithm::SHA256,
            TotpAlgorithm::Sha512 => totp_rs::Algorithm::SHA512,
        };
        let totp = totp_rs::TOTP::new(algorithm, self.digits, 1, self.period, bytes)
            .map_err(|e| TotpError::Settings(e.to_string()))?;
        totp.generate_current()
            .map(SecretString::from)
            .map_err(|_| TotpError::Clock)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_totp_code_matches_the_rfc_6238_generator() {
        let seed = SecretString::from("JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP".to_owned());
        let code = TotpSettings::default().current_code(&seed).unwrap();
        assert_eq!(code.expose_secret().len(), 6);
        let bytes = totp_rs::Secret::Encoded("JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP".into())
            .to_bytes()
            .unwrap();
        let reference = totp_rs::TOTP::new(totp_rs::Algorithm::SHA1, 6, 1, 30, bytes).unwrap();
        assert!(reference.check_current(code.expose_secret()).unwrap());
        let bad =
            TotpSettings::default().current_code(&SecretString::from("not base32!".to_owned()));
        assert!(bad.is_err_and(|e| !e.to_string().contains("base32!")));
    }
}
