//! The network watchers of one login: they catch the authorization code on the redirect hop,
//! and stop (and report) anything that heads outside the allowlist.

use std::collections::HashMap;
use std::sync::Arc;

use playwright_rs::BrowserContext;
use tokio::sync::watch;
use url::Url;

use super::error::Failure;
use crate::reauth::flow::OAuthProvider;

/// What the network watchers saw.
#[derive(Clone, Debug)]
pub(super) enum Signal {
    Code { code: String, state: Option<String> },
    ProviderError(String),
    Blocked(String),
}

/// Hands a signal to the login; only the first one counts.
type Report = Arc<dyn Fn(Signal) + Send + Sync>;

/// Installs the network watchers on `context`: `on_request` (sees redirect hops: catches the
/// code and escapes), `route_web_socket` and `route` (abort disallowed connections and
/// requests before they leave). What they see is sent on `signal`.
pub(super) async fn watch(
    context: &BrowserContext,
    provider: &OAuthProvider,
    signal: &Arc<watch::Sender<Option<Signal>>>,
) -> Result<(), Failure> {
    let provider = Arc::new(provider.clone());
    let report = first_signal_wins(Arc::clone(signal));
    watch_requests(context, Arc::clone(&provider), Arc::clone(&report)).await?;
    restrict_web_sockets(context, Arc::clone(&provider), Arc::clone(&report)).await?;
    restrict_requests(context, provider, report).await
}

fn first_signal_wins(signal: Arc<watch::Sender<Option<Signal>>>) -> Report {
    Arc::new(move |s: Signal| {
        // A code followed by the aborted callback load must not be overwritten.
        signal.send_if_modified(|current| {
            if current.is_none() {
                *current = Some(s);
                true
            } else {
                false
            }
        });
    })
}

async fn watch_requests(
    context: &BrowserContext,
    provider: Arc<OAuthProvider>,
    report: Report,
) -> Result<(), Failure> {
    context
        .on_request(move |request| {
            let (p, tx) = (Arc::clone(&provider), Arc::clone(&report));
            async move {
                if let Some(signal) = classify_request(&p, request.url()) {
                    tx(signal);
                }
                Ok(())
            }
        })
        .await
        .map_err(|e| Failure::from_playwright("watch requests", &e))
}

/// `route` never sees WebSockets: they get their own handler and the same check.
async fn restrict_web_sockets(
    context: &BrowserContext,
    provider: Arc<OAuthProvider>,
    report: Report,
) -> Result<(), Failure> {
    context
        .route_web_socket("**/*", move |ws| {
            let (p, tx) = (Arc::clone(&provider), Arc::clone(&report));
            async move {
                let parsed = Url::parse(ws.url()).ok();
                let allowed = parsed.as_ref().is_some_and(|u| {
                    // The allowlist is written for http(s); ws(s) is the same origin.
                    let mut http = u.clone();
                    let scheme = if u.scheme() == "wss" { "https" } else { "http" };
                    http.set_scheme(scheme).is_ok() && p.url_allowed(&http)
                });
                if allowed {
                    return ws.connect_to_server().await;
                }
                let host = host_or(parsed, "a non-ws URL");
                tracing::warn!(%host, "blocked a WebSocket outside allowed_hosts");
                tx(Signal::Blocked(host));
                ws.close(None).await
            }
        })
        .await
        .map_err(|e| Failure::from_playwright("restrict WebSockets", &e))
}

async fn restrict_requests(
    context: &BrowserContext,
    provider: Arc<OAuthProvider>,
    report: Report,
) -> Result<(), Failure> {
    context
        .route("**/*", move |route| {
            let (p, tx) = (Arc::clone(&provider), Arc::clone(&report));
            async move {
                let url = route.request().url().to_owned();
                match Url::parse(&url) {
                    // The callback is never loaded: the code is already captured, and the
                    // client's redirect endpoint need not even be running.
                    Ok(u) if p.is_redirect(&u) => route.abort(Some("aborted")).await,
                    Ok(u) if p.url_allowed(&u) => route.continue_(None).await,
                    parsed => {
                        let host = host_or(parsed.ok(), "a non-http URL");
                        tracing::warn!(%host, "blocked a request outside allowed_hosts");
                        tx(Signal::Blocked(host));
                        route.abort(Some("blockedbyclient")).await
                    }
                }
            }
        })
        .await
        .map_err(|e| Failure::from_playwright("restrict navigation", &e))
}

/// The host of `url`, or `fallback` for a URL without one, for messages.
fn host_or(url: Option<Url>, fallback: &str) -> String {
    url.and_then(|u| u.host_str().map(str::to_owned))
        .unwrap_or_else(|| fallback.to_owned())
}

/// What a request the browser issued means for the login.
fn classify_request(provider: &OAuthProvider, url: &str) -> Option<Signal> {
    let url = Url::parse(url).ok()?;
    if provider.is_redirect(&url) {
        let pairs: HashMap<String, String> = url.query_pairs().into_owned().collect();
        if let Some(code) = pairs.get("code") {
            return Some(Signal::Code {
                code: code.clone(),
                state: pairs.get("state").cloned(),
            });
        }
        if let Some(error) = pairs.get("error") {
            return Some(Signal::ProviderError(error.clone()));
        }
        return None;
    }
    // data:, blob: and about: never reach the network.
    if matches!(url.scheme(), "data" | "blob" | "about") || provider.url_allowed(&url) {
        return None;
    }
    Some(Signal::Blocked(
        url.host_str().unwrap_or("a non-http URL").to_owned(),
    ))
}
