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

pub mod config;

use std::time::Duration;

use async_trait::async_trait;
use reqwest::StatusCode;
use secrecy::ExposeSecret;

use crate::amqp::envelope::Task;
use crate::handler::{Handler, TaskContext};
use crate::outcome::{ErrorKind, TaskError};

pub use config::{HttpConfigError, HttpHandlerConfig};

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
    /// An invalid method, URL or header name ([`HttpConfigError`]).
    pub fn new(
        config: HttpHandlerConfig,
        client: reqwest::Client,
    ) -> Result<Self, HttpConfigError> {
        let method = config.check()?;
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
        let mut request = self
            .client
            .request(self.method.clone(), &url)
            .bearer_auth(token.access_token.expose_secret())
            .timeout(self.config.timeout)
            .json(&task.payload);
        if !self.config.idempotency_header.is_empty() {
            request = request.header(self.config.idempotency_header.as_str(), task.id.as_str());
        }
        let response = request.send().await;
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
                // A platform echoing the request must not put the token into the
                // error message, which travels into dead letters and logs.
                let secret = token.access_token.expose_secret();
                let body = crate::outbound::scrub(&String::from_utf8_lossy(&body), secret);
                let www_auth = crate::outbound::scrub(&www_auth, secret);
                classify(
                    status,
                    retry_after,
                    &Answer {
                        www_authenticate: &www_auth,
                        body: &body,
                        revocation_in_body: self.config.revocation_in_body,
                    },
                    token.version,
                )
            }
        }
    }
}

/// What a platform answered besides its status, as [`classify`] reads it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Answer<'a> {
    /// The `WWW-Authenticate` header, or empty.
    pub www_authenticate: &'a str,
    /// The body.
    pub body: &'a str,
    /// Whether a revocation error in a 4xx body counts (the handler's
    /// `revocation_in_body`).
    pub revocation_in_body: bool,
}

/// How a platform's answer maps to an error kind:
/// - 2xx: success;
/// - 401, or a 4xx whose `WWW-Authenticate` is a Bearer challenge with
///   `error="invalid_token"` (RFC 6750): the token was revoked. With
///   `revocation_in_body`, also a 4xx body carrying `invalid_token` or a
///   revocation error; never by default, since a body can echo the payload,
///   which the producer controls;
/// - 429 (honouring `Retry-After`), 408 and 5xx: transient;
/// - any other 4xx: permanent.
///
/// # Errors
/// The [`TaskError`] for a failure.
pub fn classify(
    status: StatusCode,
    retry_after: Option<Duration>,
    answer: &Answer<'_>,
    token_version: u64,
) -> Result<(), TaskError> {
    if status.is_success() {
        return Ok(());
    }
    let summary = format!("platform answered {status}: {}", snippet(answer.body));
    let revoked = status == StatusCode::UNAUTHORIZED
        || (status.is_client_error()
            && (bearer_invalid_token(answer.www_authenticate)
                || (answer.revocation_in_body && revoked_body(answer.body))));
    if revoked {
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

/// A `Bearer` challenge whose `error` parameter is `invalid_token`.
fn bearer_invalid_token(www_authenticate: &str) -> bool {
    let lower = www_authenticate.to_ascii_lowercase();
    let Some(params) = lower.trim_start().strip_prefix("bearer") else {
        return false;
    };
    params.split(',').any(|p| {
        p.split_once('=').is_some_and(|(k, v)| {
            k.trim() == "error" && v.trim().trim_matches('"') == "invalid_token"
        })
    })
}

fn revoked_body(body: &str) -> bool {
    let lower = body.to_ascii_lowercase();
    lower.contains("invalid_token")
        || lower.contains("token_revoked")
        || lower.contains("token has been revoked")
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
        classify(
            StatusCode::from_u16(status).unwrap(),
            None,
            &Answer {
                body,
                ..Answer::default()
            },
            7,
        )
        .err()
        .map(|e| e.kind)
    }

    fn kind_with(status: u16, www_authenticate: &str, body: &str, in_body: bool) -> ErrorKind {
        classify(
            StatusCode::from_u16(status).unwrap(),
            None,
            &Answer {
                www_authenticate,
                body,
                revocation_in_body: in_body,
            },
            7,
        )
        .unwrap_err()
        .kind
    }

    #[test]
    fn platform_answers_map_to_error_kinds() {
        assert_eq!(kind(200, ""), None);
        assert_eq!(kind(204, ""), None);
        assert_eq!(kind(401, ""), Some(ErrorKind::TokenRevoked));
        assert_eq!(
            kind_with(
                403,
                r#"Bearer realm="api", error="invalid_token""#,
                "",
                false
            ),
            ErrorKind::TokenRevoked
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
    fn a_body_that_echoes_a_revocation_error_is_not_one_unless_the_handler_opts_in() {
        let echo = r#"{"error":"validation","input":{"text":"invalid_token token_revoked"}}"#;
        assert_eq!(kind_with(400, "", echo, false), ErrorKind::Permanent);
        assert_eq!(kind_with(403, "", echo, false), ErrorKind::Permanent);
        // Another scheme's challenge, or another error, is not a revocation.
        assert_eq!(
            kind_with(400, r#"Basic error="invalid_token""#, "", false),
            ErrorKind::Permanent
        );
        assert_eq!(
            kind_with(403, r#"Bearer error="insufficient_scope""#, "", false),
            ErrorKind::Permanent
        );
        assert_eq!(kind_with(400, "", echo, true), ErrorKind::TokenRevoked);
    }

    #[test]
    fn an_idempotency_header_that_is_no_header_name_is_refused() {
        let config = |header: &str| HttpHandlerConfig {
            method: "POST".into(),
            url: "https://api.example/{channel}".into(),
            timeout: Duration::from_secs(1),
            idempotency_header: header.into(),
            revocation_in_body: false,
            plain_http: false,
        };
        let client = reqwest::Client::new();
        assert!(HttpHandler::new(config("Idempotency-Key"), client.clone()).is_ok());
        assert!(HttpHandler::new(config(""), client.clone()).is_ok());
        let e = HttpHandler::new(config("Bad Header"), client).unwrap_err();
        assert!(matches!(e, HttpConfigError::Header(_)), "{e}");
        assert!(e.to_string().contains("idempotency_header"), "{e}");
    }

    #[test]
    fn a_revocation_reports_the_refused_token_version() {
        let e = classify(StatusCode::UNAUTHORIZED, None, &Answer::default(), 42).unwrap_err();
        assert_eq!(e.token_version, Some(42));
    }

    #[test]
    fn too_many_requests_honours_retry_after() {
        let e = classify(
            StatusCode::TOO_MANY_REQUESTS,
            Some(Duration::from_secs(9)),
            &Answer::default(),
            1,
        )
        .unwrap_err();
        assert_eq!(e.retry_after, Some(Duration::from_secs(9)));
    }
}
