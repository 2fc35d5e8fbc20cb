//! The HTTP handler kind: a task type mapped in the configuration to an HTTP
//! call made for the task's channel, so users run warden against real
//! platforms without writing Rust.
//!
//! ```toml
//! [handlers."post.publish"]
//! method = "POST"
//! url = "https://api.example.com/v1/channels/{channel}/posts"
//! timeout = "10s"
//! ```
//!
//! The task payload is the JSON body and the channel's access token the bearer.
//! How the platform answers decides the error kind ([`classify`]).

use std::time::Duration;

use async_trait::async_trait;
use reqwest::StatusCode;
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};

use crate::envelope::Task;
use crate::handler::{Handler, TaskContext};
use crate::outcome::{ErrorKind, TaskError};

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
}

fn default_method() -> String {
    "POST".into()
}

fn default_timeout() -> Duration {
    Duration::from_secs(10)
}

/// The handler for one configured task type.
#[derive(Debug, Clone)]
pub struct HttpHandler {
    config: HttpHandlerConfig,
    method: reqwest::Method,
    client: reqwest::Client,
}

impl HttpHandler {
    /// Builds the handler, checking method and URL template.
    ///
    /// # Errors
    /// An invalid method or URL, as a message naming the problem.
    pub fn new(config: HttpHandlerConfig, client: reqwest::Client) -> Result<Self, String> {
        let method = reqwest::Method::from_bytes(config.method.to_ascii_uppercase().as_bytes())
            .map_err(|_| format!("method {:?} is not an HTTP method", config.method))?;
        let url = url::Url::parse(&config.url.replace("{channel}", "c"))
            .map_err(|e| format!("url {:?} is not a URL: {e}", config.url))?;
        crate::outbound::check_url(&url, config.plain_http)
            .map_err(|e| format!("url {:?}: {e}", config.url))?;
        Ok(Self {
            config,
            method,
            client,
        })
    }
}

#[async_trait]
impl Handler for HttpHandler {
    async fn handle(&self, task: &Task, ctx: &TaskContext) -> Result<(), TaskError> {
        let Some(channel) = task.channel.as_deref() else {
            return Err(TaskError::permanent(
                "task has no `channel`; HTTP handlers act for a channel",
            ));
        };
        let Some(token) = &ctx.token else {
            return Err(TaskError::permanent(format!(
                "channel {channel:?} has no token; seed one with `warden token set --channel {channel}`"
            )));
        };
        // URL-encoding leaves `.` and `..` as they are, and a URL parser then
        // resolves them as path segments: a channel named `..` would walk up
        // the platform's path. Such a name is never a real account.
        if channel.trim_matches('.').is_empty() {
            return Err(TaskError::permanent(format!(
                "channel {channel:?} cannot be put into a URL path"
            )));
        }
        let encoded: String = url::form_urlencoded::byte_serialize(channel.as_bytes()).collect();
        let url = self.config.url.replace("{channel}", &encoded);
        let response = self
            .client
            .request(self.method.clone(), &url)
            .bearer_auth(token.access_token.expose_secret())
            .timeout(self.config.timeout)
            .json(&task.payload)
            .send()
            .await;
        match response {
            Err(e) if e.is_timeout() => Err(TaskError::new(
                ErrorKind::Timeout,
                format!("{} timed out", self.method),
            )),
            // Connection refused, reset, DNS: the platform may be back soon.
            Err(e) => Err(TaskError::transient(format!(
                "request failed: {}",
                e.without_url()
            ))),
            Ok(r) => {
                let status = r.status();
                let retry_after = r
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map(Duration::from_secs);
                let www_auth = r
                    .headers()
                    .get(reqwest::header::WWW_AUTHENTICATE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_owned();
                // A bounded prefix: enough to classify and quote, never the
                // whole of whatever the platform streams back.
                let body = crate::outbound::read_prefix(r, crate::outbound::MAX_RESPONSE_BYTES)
                    .await
                    .unwrap_or_default();
                let body = String::from_utf8_lossy(&body);
                // A platform echoing the request must not put the token into the
                // error message, which travels into dead letters and logs.
                let text = crate::outbound::scrub(
                    &format!("{www_auth} {body}"),
                    token.access_token.expose_secret(),
                );
                classify(status, retry_after, &text, token.version)
            }
        }
    }
}

/// How a platform's answer maps to an error kind:
/// - 2xx: success;
/// - 401, or a body or `WWW-Authenticate` carrying `invalid_token` or a
///   revocation error: the token was revoked;
/// - 429 (honouring `Retry-After`), 408 and 5xx: transient;
/// - any other 4xx: permanent.
///
/// # Errors
/// The [`TaskError`] for a failure.
pub fn classify(
    status: StatusCode,
    retry_after: Option<Duration>,
    body: &str,
    token_version: u64,
) -> Result<(), TaskError> {
    if status.is_success() {
        return Ok(());
    }
    let lower = body.to_ascii_lowercase();
    let revoked_body = lower.contains("invalid_token")
        || lower.contains("token_revoked")
        || lower.contains("token has been revoked");
    let summary = format!("platform answered {status}: {}", snippet(body));
    if status == StatusCode::UNAUTHORIZED || (status.is_client_error() && revoked_body) {
        return Err(TaskError::token_revoked(token_version, summary));
    }
    if status == StatusCode::TOO_MANY_REQUESTS {
        let e = TaskError::transient(summary);
        return Err(match retry_after {
            Some(d) => e.with_retry_after(d),
            None => e,
        });
    }
    if status.is_server_error() || status == StatusCode::REQUEST_TIMEOUT {
        return Err(TaskError::transient(summary));
    }
    Err(TaskError::permanent(summary))
}

/// The first line of a body, at most 200 characters, for error messages.
fn snippet(body: &str) -> String {
    let line = body.trim().lines().next().unwrap_or("").trim();
    line.chars().take(200).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(status: u16, body: &str) -> Option<ErrorKind> {
        classify(StatusCode::from_u16(status).unwrap(), None, body, 7)
            .err()
            .map(|e| e.kind)
    }

    #[test]
    fn platform_answers_map_to_error_kinds() {
        assert_eq!(kind(200, ""), None);
        assert_eq!(kind(204, ""), None);
        assert_eq!(kind(401, ""), Some(ErrorKind::TokenRevoked));
        assert_eq!(
            kind(400, r#"{"error":"invalid_token"}"#),
            Some(ErrorKind::TokenRevoked)
        );
        assert_eq!(
            kind(403, "Bearer error=\"invalid_token\""),
            Some(ErrorKind::TokenRevoked)
        );
        assert_eq!(kind(403, "forbidden"), Some(ErrorKind::Permanent));
        assert_eq!(kind(404, ""), Some(ErrorKind::Permanent));
        assert_eq!(kind(422, "bad"), Some(ErrorKind::Permanent));
        assert_eq!(kind(429, ""), Some(ErrorKind::Transient));
        assert_eq!(kind(408, ""), Some(ErrorKind::Transient));
        assert_eq!(kind(500, ""), Some(ErrorKind::Transient));
        assert_eq!(kind(503, ""), Some(ErrorKind::Transient));
    }

    #[test]
    fn a_revocation_reports_the_refused_token_version() {
        let e = classify(StatusCode::UNAUTHORIZED, None, "", 42).unwrap_err();
        assert_eq!(e.token_version, Some(42));
    }

    #[test]
    fn too_many_requests_honours_retry_after() {
        let e = classify(
            StatusCode::TOO_MANY_REQUESTS,
            Some(Duration::from_secs(9)),
            "",
            1,
        )
        .unwrap_err();
        assert_eq!(e.retry_after, Some(Duration::from_secs(9)));
    }
}
