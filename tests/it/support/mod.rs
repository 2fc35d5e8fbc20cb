//! Test support: unique prefixes against the real broker, the real binary
//! spawned as a child process, an event tap, and a TCP proxy that can cut the
//! worker's connection on command.
#![allow(dead_code, missing_docs)]

mod broker;
pub mod endings;
pub mod otel;
mod process;
pub mod provider_browser;
pub mod provider_http;
pub mod proxy;
pub mod stack;
mod tap;
pub mod tls;

use std::time::{Duration, Instant};

use lapin::{Channel, Connection, ConnectionProperties};
use warden::Settings;

// Each binary that includes this module uses a part of it.
#[allow(unused_imports)]
pub use broker::{
    TestBroker, block_on_aside, consumer_count, declare_durable_record, delete_queue, message_count,
};
#[allow(unused_imports)]
pub use process::{WardenProc, free_port, parse_metrics, run_cli, run_cli_with_stdin};
#[allow(unused_imports)]
pub use tap::{CarriedContext, EventTap};

pub const AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

static BROKER: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Points every helper of this test binary at another broker: a cluster's
/// comma-separated address list (`scripts/cluster.sh url`). Set once, before
/// the first [`TestBroker`]; workers spawned from it get the list too.
pub fn use_broker(urls: &str) {
    assert!(
        BROKER.set(urls.to_owned()).is_ok(),
        "use_broker is set once"
    );
}

/// The broker the helpers use: [`AMQP_URL`] unless [`use_broker`] said otherwise.
pub fn amqp_url() -> &'static str {
    BROKER.get().map_or(AMQP_URL, String::as_str)
}

/// A unique prefix per test, so tests never see each other's messages.
pub fn unique_prefix(test: &str) -> String {
    format!(
        "t-{test}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    )
}

pub fn settings(prefix: &str) -> Settings {
    Settings {
        prefix: prefix.to_owned(),
        amqp_url: amqp_url().to_owned().into(),
        ..Settings::default()
    }
}

/// How often [`eventually`] asks again.
const POLL: Duration = Duration::from_millis(25);

/// Asks `cond` every [`POLL`] until it holds or `within` has passed, and says
/// whether it held: the one way tests wait for a condition instead of sleeping
/// a fixed time. The caller asserts on the answer, with whatever it wants the
/// failure to show (a log, the state it waited on).
#[must_use = "assert that the condition held"]
pub async fn eventually(within: Duration, mut cond: impl AsyncFnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if cond().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(POLL).await;
    }
}

pub async fn connect() -> (Connection, Channel) {
    // The first node of a cluster that answers (a test may have one down).
    let mut conn = None;
    for url in warden::config::addresses(amqp_url()) {
        if let Ok(c) = Connection::connect(url, ConnectionProperties::default()).await {
            conn = Some(c);
            break;
        }
    }
    let conn = conn.unwrap_or_else(|| panic!("no broker answers at {}", amqp_url()));
    let ch = conn.create_channel().await.expect("channel");
    (conn, ch)
}
