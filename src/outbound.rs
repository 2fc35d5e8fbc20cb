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

/// Whether `url` may carry a secret: https, or http to a loopback host, or
/// http anywhere when `plain_http` is set.
///
/// # Errors
/// A message naming the scheme and host, and the way out.
pub fn check_url(url: &Url, plain_http: bool) -> Result<(), String> {
    match url.scheme() {
        "https" => Ok(()),
        "http" if plain_http || is_loopback(url) => Ok(()),
        "http" => Err(format!(
            "http://{} would send a secret in clear text: use https (plain http is allowed to a loopback host, or with `plain_http = true` on a private network)",
            url.host_str().unwrap_or("")
        )),
        other => Err(format!("{other}: URLs are not http(s)")),
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

    fn check(url: &str, plain_http: bool) -> Result<(), String> {
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

    #[test]
    fn scrub_removes_every_copy_of_the_secret() {
        assert_eq!(
            scrub("bad token tok-123 (tok-123)", "tok-123"),
            "bad token [redacted] ([redacted])"
        );
        assert_eq!(scrub("nothing", ""), "nothing");
    }
}
