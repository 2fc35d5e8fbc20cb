//! The settings of one HTTP task type, checked without building a client:
//! [`crate::config`] validates them at load, and [`super::HttpHandler`] is
//! built from them.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// One configured HTTP call.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct HttpHandlerConfig {
    /// HTTP method.
    #[serde(default = "default_method")]
    pub method: String,
    /// URL; `{channel}` is replaced by the task's channel (URL-encoded).
    pub url: String,
    /// Per-request timeout (a timeout is a transient failure).
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Allows `http://` to a host that is not loopback (a private network,
    /// such as the compose demo). Off: the bearer token goes out over https only.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub plain_http: bool,
    /// Header that carries the task id, so the platform can recognise a call
    /// repeated after a retry or a redelivery; empty sends none.
    #[serde(default = "default_idempotency_header")]
    pub idempotency_header: String,
    /// Also count a 4xx whose body mentions `invalid_token`, `token_revoked`
    /// or "token has been revoked" as a revoked token. Off by default: a body
    /// that echoes the task's payload could then fake a revocation. Turn it on
    /// only for a platform that answers revocations so and never echoes input.
    #[serde(default)]
    pub revocation_in_body: bool,
}

fn default_method() -> String {
    "POST".into()
}

fn default_timeout() -> Duration {
    Duration::from_secs(10)
}

fn default_idempotency_header() -> String {
    "Idempotency-Key".into()
}

/// Why an HTTP task type's settings cannot work.
#[derive(Debug, thiserror::Error)]
pub enum HttpConfigError {
    /// `method` is not an HTTP method.
    #[error("method {0:?} is not an HTTP method")]
    Method(String),
    /// `url` does not parse with `{channel}` filled in.
    #[error("url {url:?} is not a URL: {why}")]
    Url {
        /// The configured template.
        url: String,
        /// The parser's reason.
        why: url::ParseError,
    },
    /// `url` breaks the outbound policy (plain http to a remote host).
    #[error("url {url:?}: {why}")]
    Policy {
        /// The configured template.
        url: String,
        /// What the policy refuses.
        why: crate::outbound::RefusedUrl,
    },
    /// `idempotency_header` is not a header name.
    #[error("idempotency_header {0:?} is not a header name")]
    Header(String),
}

impl HttpHandlerConfig {
    /// Checks method, URL template and header name; returns the method.
    ///
    /// # Errors
    /// The first setting that cannot work.
    pub fn check(&self) -> Result<reqwest::Method, HttpConfigError> {
        let method = reqwest::Method::from_bytes(self.method.to_ascii_uppercase().as_bytes())
            .map_err(|_| HttpConfigError::Method(self.method.clone()))?;
        let url = url::Url::parse(&self.url.replace("{channel}", "c")).map_err(|why| {
            HttpConfigError::Url {
                url: self.url.clone(),
                why,
            }
        })?;
        crate::outbound::check_url(&url, self.plain_http).map_err(|why| {
            HttpConfigError::Policy {
                url: self.url.clone(),
                why,
            }
        })?;
        if !self.idempotency_header.is_empty()
            && reqwest::header::HeaderName::from_bytes(self.idempotency_header.as_bytes()).is_err()
        {
            return Err(HttpConfigError::Header(self.idempotency_header.clone()));
        }
        Ok(method)
    }
}
