//! The policy for warden's own outbound HTTP: the HTTP handler's platform calls
//! and the OAuth token endpoint. Both carry a secret (the bearer token, the
//! client secret or a refresh token), so both share the same rules:
//!
//! - no redirects: a 307/308 would re-post the secret to wherever the
//!   `Location` points, and a redirect is reported as the status it is;
//! - https only, except to a loopback host (or where the configuration opts in
//!   to plain http on a private network);
//! - at most [`MAX_RESPONSE_BYTES`] of a response are read, so a platform
//!   cannot make the worker buffer an endless body;
//! - a secret echoed back in a response never reaches an error message
//!   ([`scrub`]).

use url::{Host, Url};

/// Most bytes of a response body warden reads; the rest is never received.
/// Token responses and platform error bodies are a few hundred bytes.
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// A client builder with the policy's defaults: no redirects and warden's user
/// agent. Callers add timeouts.
pub fn client_builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .user_agent(concat!("warden/", env!("CARGO_PKG_VERSION")))
        .redirect(reqwest::redirect::Policy::none())
}

/// A URL the outbound policy refuses to send a secret to.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RefusedUrl {
    /// Plain http to a host that is not loopback, without `plain_http`.
    #[error(
        "http://{0} would send a secret in clear text: use https (plain http is allowed to a loopback host, or with `plain_http = true` on a private network)"
    )]
    ClearText(String),
    /// Not http(s) at all.
    #[error("{0}: URLs are not http(s)")]
    Scheme(String),
}

/// Whether `url` may carry a secret: https, or http to a loopback host, or
/// http anywhere when `plain_http` is set.
///
/// # Errors
/// [`RefusedUrl`], naming the scheme or host and the way out.
pub fn check_url(url: &Url, plain_http: bool) -> Result<(), RefusedUrl> {
    match url.scheme() {
        "https" => Ok(()),
        "http" if plain_http || is_loopback(url) => Ok(()),
        "http" => Err(RefusedUrl::ClearText(
            url.host_str().unwrap_or("").to_owned(),
        )),
        other => Err(RefusedUrl::Scheme(other.to_owned())),
    }
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(Host::Ipv4(ip)) => ip.is_loopback(),
        Some(Host::Ipv6(ip)) => ip.is_loopback(),
        Some(Host::Domain(d)) => {
            let d = d.trim_end_matches('.').to_ascii_lowercase();
            d == "localhost" || d.ends_with(".localhost")
        }
        None => false,
    }
}

/// Reads at most `limit` bytes of `response`'s body and drops the rest
/// unread.
///
/// # Errors
/// The transport failed while reading.
pub async fn read_prefix(
    mut response: reqwest::Response,
    limit: usize,
) -> Result<Vec<u8>, reqwest::Error> {
    let mut body = Vec::new();
    while body.len() < limit {
        let Some(chunk) = response.chunk().await? else {
            break;
        };
        let room = limit - body.len();
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
    }
    Ok(body)
}

/// `text` with every occurrence of `secret` replaced by `[redacted]`; a
/// platform that echoes the request back must not put the token into an error
/// message, a dead letter or a log line.
#[must_use]
pub fn scrub(text: &str, secret: &str) -> String {
    if secret.is_empty() {
        return text.to_owned();
    }
    text.replace(secret, "[redacted]")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(url: &str, plain_http: bool) -> Result<(), RefusedUrl> {
        check_url(&Url::parse(url).unwrap(), plain_http)
    }

    #[test]
    fn https_only_except_loopback_or_an_explicit_opt_in() {
        assert!(check("https://api.example.com/x", false).is_ok());
        assert!(check("http://127.0.0.1:8080/x", false).is_ok());
        assert!(check("http://[::1]:8080/x", false).is_ok());
        assert!(check("http://localhost/x", false).is_ok());
        assert!(check("http://api.example.com/x", false).is_err());
        assert!(check("http://10.0.0.1/x", false).is_err());
        assert!(check("http://provider:8080/x", true).is_ok());
        assert!(check("ftp://127.0.0.1/x", true).is_err());
    }

    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use axum::http::{HeaderMap, StatusCode};
    use axum::response::IntoResponse;

    use crate::amqp::envelope::Task;
    use crate::channels::ChannelToken;
    use crate::handler::http::{HttpHandler, HttpHandlerConfig};
    use crate::handler::{Handler as _, TaskContext};
    use crate::outcome::ErrorKind;

    const TOKEN: &str = "tok-0123456789";

    /// A platform on loopback: `/redirect` answers 307 to `/elsewhere` (which
    /// counts its hits), `/echo` sends the request's headers back in a 400,
    /// `/huge` streams 8 MiB with a 500, `/api/*` answers 204.
    async fn platform() -> (String, Arc<AtomicUsize>) {
        let elsewhere = Arc::new(AtomicUsize::new(0));
        let hits = elsewhere.clone();
        let app = axum::Router::new()
            .route(
                "/redirect",
                axum::routing::post(|| async {
                    (StatusCode::TEMPORARY_REDIRECT, [("location", "/elsewhere")])
                }),
            )
            .route(
                "/elsewhere",
                axum::routing::post(move || {
                    hits.fetch_add(1, Ordering::SeqCst);
                    async { StatusCode::NO_CONTENT }
                }),
            )
            .route(
                "/echo",
                axum::routing::post(|headers: HeaderMap| async move {
                    (StatusCode::BAD_REQUEST, format!("{headers:?}")).into_response()
                }),
            )
            .route(
                "/huge",
                axum::routing::post(|| async {
                    (StatusCode::INTERNAL_SERVER_ERROR, vec![b'x'; 8 << 20])
                }),
            )
            .route(
                "/api/{*rest}",
                axum::routing::post(|| async { StatusCode::NO_CONTENT }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (base, elsewhere)
    }

    async fn call(url: String, channel: &str) -> Result<(), crate::outcome::TaskError> {
        let handler = HttpHandler::new(
            HttpHandlerConfig {
                method: "POST".into(),
                url,
                timeout: std::time::Duration::from_secs(10),
                plain_http: false,
                idempotency_header: "Idempotency-Key".into(),
                revocation_in_body: false,
            },
            client_builder().build().unwrap(),
        )
        .unwrap();
        let task = Task {
            channel: Some(channel.to_owned()),
            ..Task::new("post", serde_json::json!({}))
        };
        let ctx = TaskContext {
            attempt: 1,
            redelivered: false,
            token: Some(ChannelToken {
                access_token: TOKEN.into(),
                version: 1,
            }),
        };
        handler.handle(&task, &ctx).await
    }

    #[tokio::test]
    async fn a_redirect_is_not_followed_so_the_token_is_not_re_posted() {
        let (base, elsewhere) = platform().await;
        let e = call(format!("{base}/redirect"), "acme").await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::Permanent, "{}", e.message);
        assert!(e.message.contains("307"), "{}", e.message);
        assert_eq!(
            elsewhere.load(Ordering::SeqCst),
            0,
            "the redirect was followed"
        );
    }

    #[tokio::test]
    async fn an_echoed_token_never_reaches_the_error_message() {
        let (base, _) = platform().await;
        let e = call(format!("{base}/echo"), "acme").await.unwrap_err();
        assert!(e.message.contains("[redacted]"), "{}", e.message);
        assert!(!e.message.contains(TOKEN), "{}", e.message);
    }

    #[tokio::test]
    async fn a_huge_error_body_is_read_only_up_to_the_bound() {
        let (base, _) = platform().await;
        let e = call(format!("{base}/huge"), "acme").await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::Transient);
        let response = client_builder()
            .build()
            .unwrap()
            .post(format!("{base}/huge"))
            .send()
            .await
            .unwrap();
        let body = read_prefix(response, MAX_RESPONSE_BYTES).await.unwrap();
        assert_eq!(body.len(), MAX_RESPONSE_BYTES);
    }

    #[tokio::test]
    async fn dot_channels_cannot_walk_the_url_path() {
        let (base, _) = platform().await;
        for channel in ["..", ".", "...", "ok"] {
            let r = call(format!("{base}/api/channels/{{channel}}/posts"), channel).await;
            if channel == "ok" {
                assert!(r.is_ok(), "{r:?}");
            } else {
                let e = r.unwrap_err();
                assert_eq!(e.kind, ErrorKind::Permanent, "{channel}: {}", e.message);
                assert!(e.message.contains("URL path"), "{channel}: {}", e.message);
            }
        }
    }

    #[test]
    fn a_handler_url_without_tls_to_a_remote_host_is_refused_at_load() {
        let config = |url: &str, plain_http| HttpHandlerConfig {
            method: "POST".into(),
            url: url.into(),
            timeout: std::time::Duration::from_secs(1),
            plain_http,
            idempotency_header: "Idempotency-Key".into(),
            revocation_in_body: false,
        };
        let client = reqwest::Client::new();
        let e = HttpHandler::new(
            config("http://api.example.com/{channel}", false),
            client.clone(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("https"), "{e}");
        assert!(
            HttpHandler::new(
                config("http://api.example.com/{channel}", true),
                client.clone()
            )
            .is_ok()
        );
        assert!(
            HttpHandler::new(config("https://api.example.com/{channel}", false), client).is_ok()
        );
    }

    #[test]
    fn scrub_removes_every_copy_of_the_secret() {
        assert_eq!(
            scrub("bad token tok-123 (tok-123)", "tok-123"),
            "bad token [redacted] ([redacted])"
        );
        assert_eq!(scrub("nothing", ""), "nothing");
    }
}
