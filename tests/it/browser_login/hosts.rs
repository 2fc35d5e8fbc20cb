//! Redirects and WebSockets to a host outside `allowed_hosts` never leave
//! the browser.

use std::time::Duration;

use warden::reauth::browser::{LoginDriver, LoginErrorKind};
use warden::reauth::flow::Step;

use super::{acme, assert_browser_gone, with_flow};
use crate::support::provider_browser::{
    browser_turn, client_secret_file, driver_config, simulator_provider,
};
use crate::support::provider_http::{CLIENT_ID, CLIENT_SECRET};

/// A provider that misbehaves, on 127.0.0.1: `/redirect` answers 302 to `outside`, `/ws`
/// is a page that opens a WebSocket to `outside`. Returns its base URL.
async fn hostile_provider(outside: std::net::SocketAddr) -> String {
    let to = format!("http://localhost:{}/stolen", outside.port());
    let ws = format!(
        "<html><body><p id=\"waiting\">waiting</p><script>new WebSocket(\"ws://localhost:{}/ws\");</script></body></html>",
        outside.port()
    );
    let app = axum::Router::new()
        .route(
            "/redirect",
            axum::routing::get(move || async move {
                (axum::http::StatusCode::FOUND, [("location", to)])
            }),
        )
        .route(
            "/ws",
            axum::routing::get(move || async move { axum::response::Html(ws) }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    base
}

/// A host outside the allowlist ("localhost" to the browser): counts every connection made
/// to it, since any connection is already a leak.
async fn outside_host() -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = hits.clone();
    tokio::spawn(async move {
        while let Ok((_socket, _)) = listener.accept().await {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    });
    (addr, hits)
}

#[tokio::test]
async fn redirect_hops_and_websockets_never_reach_a_host_outside_allowed_hosts() {
    let _turn = browser_turn().await;
    let (outside, hits) = outside_host().await;
    let base = hostile_provider(outside).await;
    let secrets = tempfile::tempdir().unwrap();
    for page in ["redirect", "ws"] {
        let driver = LoginDriver::new(driver_config(None));
        let mut oauth = simulator_provider(
            &base,
            CLIENT_ID,
            client_secret_file(&secrets, CLIENT_SECRET),
        );
        oauth.authorize_url = format!("{base}/{page}").parse().unwrap();
        oauth.allowed_hosts = vec![base.trim_start_matches("http://").to_owned()];
        let oauth = with_flow(
            oauth,
            vec![Step::WaitFor {
                selector: "#never".into(),
            }],
        );
        let error = driver
            .login(&oauth, &acme(), Duration::from_secs(10))
            .await
            .unwrap_err();
        assert_eq!(
            error.kind(),
            LoginErrorKind::BlockedNavigation,
            "{page}: {error}"
        );
        assert!(error.detail().contains("localhost"), "{page}: {error}");
        // Once the browser is gone, any connection it made has arrived: one
        // more turn of the runtime lets the listener count it.
        driver.shutdown().await;
        assert_browser_gone(&driver).await;
        tokio::task::yield_now().await;
        assert_eq!(
            hits.load(std::sync::atomic::Ordering::SeqCst),
            0,
            "{page}: the browser connected to a host outside allowed_hosts"
        );
    }
}
