//! Token revocation end to end: real broker, real SQLite token store, the real
//! `warden worker` and `warden reauth` binaries, Debian's Chromium driven by
//! Playwright, and the simulated provider speaking real HTTP.

mod guards;
mod heal;
mod trouble;

use std::time::Duration;

use crate::support::stack::{MAIN, Stack};
use crate::support::{EventTap, WardenProc, eventually};

const READY: Duration = Duration::from_secs(30);

/// Starts the real binary with `args` and `env` on `stack`; returns once it is ready.
async fn ready(stack: &Stack, args: &[&str], env: &[(&str, &str)]) -> WardenProc {
    let process = stack.spawn(args, env);
    process.wait_ready(READY).await;
    process
}

/// A tap on `stack`'s events, then `warden worker` and `warden reauth`, each
/// with its extra environment, both ready.
async fn start(
    stack: &Stack,
    worker_env: &[(&str, &str)],
    reauth_env: &[(&str, &str)],
) -> (EventTap, WardenProc, WardenProc) {
    let tap = stack.broker.tap().await;
    let worker = stack.spawn(&["worker"], worker_env);
    let reauth = stack.spawn(&["reauth"], reauth_env);
    worker.wait_ready(READY).await;
    reauth.wait_ready(READY).await;
    (tap, worker, reauth)
}

/// Asserts that [`MAIN`] is active in the token store again.
async fn assert_active(stack: &Stack) {
    assert_eq!(
        stack.record().await.status,
        warden::store::ChannelStatus::Active
    );
}

/// Takes the OAuth side of the provider down (503), revokes [`MAIN`]'s access
/// token and publishes `n` posts; returns their ids once the provider has
/// refused a token request.
async fn revoke_during_outage(stack: &Stack, n: usize) -> Vec<String> {
    stack.provider.state.set_outage(Some(503));
    stack.provider.state.revoke_access(MAIN);
    let ids = stack.publish_posts(n).await;
    assert!(
        eventually(Duration::from_secs(30), async || {
            stack.provider.state.stats().outage_answers >= 1
        })
        .await,
        "no token request refused within 30 s"
    );
    ids
}
