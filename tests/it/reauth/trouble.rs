//! Trouble that is not the channel's does not fail it (a provider down, login
//! pages down, a token store refusing writes, `warden reauth` stopped
//! mid-login); a password the provider refuses does, and the operator's
//! recovery works.

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use super::{assert_active, revoke_during_outage, start};
use crate::support::provider_browser::{assert_exited, browser_descendants, browser_turn};
use crate::support::stack::{MAIN, PASSWORD, Stack};
use crate::support::{EventTap, eventually, run_cli};

#[tokio::test]
async fn a_wrong_password_ends_in_reauth_failed_the_tasks_go_dead_at_once_and_token_set_then_replay_recovers_them()
 {
    let _turn = browser_turn().await;
    let stack = Stack::new("wrongpw", "not-the-password").await;
    let (tap, worker, reauth) = start(&stack, &[], &[]).await;

    stack.provider.state.revoke(MAIN);
    let ids = stack.publish_posts(3).await;
    tap.wait_terminal(&ids, Duration::from_secs(90)).await;
    let late = assert_the_channel_failed(&stack, &tap, &ids).await;

    // Recovery as the README tells it: store a good token, replay at once.
    let t = stack.provider.state.mint_tokens(MAIN).unwrap();
    let started = Instant::now();
    let out = stack.token_set(MAIN, &t.access_token, Some(&t.refresh_token));
    assert_eq!(out.0, 0, "{out:?}");
    assert!(!out.2.contains("warning"), "{out:?}");
    let (code, out, err) = run_cli(
        &["dlq", "replay", "--reason", "reauth_failed"],
        &stack.env_ref(),
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("replayed 4 dead letter(s)"), "{out}");
    let replayed: Vec<String> = ids.iter().chain(&late).cloned().collect();
    let all_succeeded = async || {
        let terminal = tap.terminal();
        replayed
            .iter()
            .all(|id| terminal[id].last().map(String::as_str) == Some("task.succeeded"))
    };
    assert!(
        eventually(Duration::from_secs(30), all_succeeded).await,
        "not every replayed task succeeded within 30 s"
    );
    eprintln!("token set to a successful replay: {:?}", started.elapsed());
    // The dead-lettered re-auth request stayed where it was: it is not a task.
    let dead = stack.broker.dead_letters().await;
    assert!(dead.iter().all(|d| d.reason != "malformed"), "{dead:?}");
    assert_eq!(
        dead.iter()
            .filter(|d| d.kind == stack.broker.topology.reauth())
            .count(),
        1,
        "{dead:?}"
    );
    let logs = format!("{}{}", worker.logs(), reauth.logs());
    assert!(!logs.contains("not-the-password"));
}

/// After a refused password: `ids` went dead as `reauth_failed` within
/// seconds of the failure, a task published since goes dead without a
/// platform call (returned), the channel is failed with the reason, and the
/// login page was saved.
async fn assert_the_channel_failed(stack: &Stack, tap: &EventTap, ids: &[String]) -> Vec<String> {
    // The workers are told of the failure: the parked tasks go dead as soon
    // as they come back, not when a cached "pending" ages out 30 s later.
    let failed_at = tap.first("reauth.failed").expect("reauth.failed").at;
    let last_dead = tap
        .events
        .lock()
        .unwrap()
        .iter()
        .filter(|(rk, e)| rk == "task.dead" && ids.contains(&e.id))
        .map(|(_, e)| e.at)
        .max()
        .unwrap();
    let to_dead = (last_dead - failed_at).to_std().unwrap_or_default();
    eprintln!("failed login to its tasks dead: {to_dead:?}");
    assert!(
        to_dead < Duration::from_secs(3),
        "tasks dead {to_dead:?} after the failed login"
    );
    let dead = stack.broker.dead_letters().await;
    for id in ids {
        let d = dead
            .iter()
            .find(|d| &d.id == id)
            .expect("task dead-lettered");
        assert_eq!(d.reason, "reauth_failed");
    }
    // A task published after the failure goes dead too, without a platform call.
    let before = stack.stats().api_rejected;
    let late = stack.publish_posts(1).await;
    tap.wait_terminal(&late, Duration::from_secs(30)).await;
    assert_eq!(tap.terminal()[&late[0]], ["task.dead"]);
    assert_eq!(stack.stats().api_rejected, before);
    assert_eq!(tap.count("reauth.failed"), 1);
    // A refused password is not retried, and the record says so.
    assert_eq!(stack.stats().failed_logins, 1, "one login tried");
    let record = stack.record().await;
    assert_eq!(record.status, warden::store::ChannelStatus::ReauthFailed);
    let last_error = record.last_error.unwrap_or_default();
    assert!(
        last_error.starts_with("browser login failed after 1 attempt(s): bad credentials"),
        "{last_error}"
    );
    let artifacts: Vec<_> = walk(&stack.dir.path().join("artifacts"));
    assert!(
        artifacts.iter().any(|p| p.ends_with(".png")),
        "a screenshot: {artifacts:?}"
    );
    assert!(
        artifacts.iter().any(|p| p.ends_with(".html")),
        "the page HTML: {artifacts:?}"
    );
    late
}

/// Every file under `dir`.
fn walk(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p.display().to_string());
            }
        }
    }
    out
}

#[tokio::test]
async fn a_provider_outage_longer_than_the_old_attempts_heals_with_one_grant_once_it_ends() {
    let stack = Stack::new("outage", PASSWORD).await;
    let (tap, _worker, _reauth) =
        start(&stack, &[], &[("WARDEN_REAUTH__RETRY_MAX_DELAY", "4s")]).await;

    let ids = revoke_during_outage(&stack, 10).await;
    // The outage itself: over six times the old three attempts' window
    // (1 s + 2 s), which failed the channel for good.
    let outage = Duration::from_secs(20);
    tokio::time::sleep(outage).await;
    let refused = stack.provider.state.stats().outage_answers;
    stack.provider.state.set_outage(None);
    let ended = Instant::now();
    tap.wait_terminal(&ids, Duration::from_secs(30)).await;
    eprintln!(
        "outage {outage:?}: {refused} provider requests refused; all tasks done {:?} after it ended",
        ended.elapsed()
    );
    tap.assert_succeeded(&ids);
    // Backoff from 1 s doubling to 4 s, jittered: at most 3 + 16/2 tries in
    // 20 s, where a try per second would be 20.
    assert!(refused <= 12, "{refused} requests in {outage:?}");
    let s = stack.stats();
    assert_eq!(s.token_grants.refresh_token, 1, "one refresh grant");
    assert_eq!(s.logins, 0, "no browser login");
    assert_eq!(tap.count("reauth.failed"), 0);
    assert_eq!(tap.count("reauth.succeeded"), 1);
    assert_active(&stack).await;
}

#[tokio::test]
async fn a_token_store_that_refuses_writes_for_30s_around_a_login_still_heals_with_one_grant() {
    use sqlx::Connection as _;
    let stack = Stack::new("storelock", PASSWORD).await;
    let (tap, _worker, reauth) =
        start(&stack, &[], &[("WARDEN_REAUTH__RETRY_MAX_DELAY", "4s")]).await;

    // Hold the grant back until the store is locked: the provider is down
    // until then.
    let ids = revoke_during_outage(&stack, 5).await;
    // A writer that holds SQLite's write lock: every other write waits for
    // the store's busy timeout and fails.
    let url = format!("sqlite://{}", stack.db_path().display());
    let mut lock = sqlx::SqliteConnection::connect(&url).await.unwrap();
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut lock)
        .await
        .unwrap();
    stack.provider.state.set_outage(None);
    assert!(
        eventually(Duration::from_secs(30), async || {
            stack.stats().token_grants.refresh_token >= 1
        })
        .await,
        "no refresh grant within 30 s"
    );
    let locked = Instant::now();
    // The store refuses writes for this long, the grant's token in hand.
    tokio::time::sleep(Duration::from_secs(30)).await;
    sqlx::query("ROLLBACK").execute(&mut lock).await.unwrap();
    drop(lock);
    tap.wait_terminal(&ids, Duration::from_secs(30)).await;
    eprintln!(
        "store refused writes for 30 s; all tasks done {:?} after the lock was taken",
        locked.elapsed()
    );
    tap.assert_succeeded(&ids);
    let s = stack.stats();
    assert_eq!(
        s.token_grants.refresh_token, 1,
        "the token obtained was kept and stored, not fetched again"
    );
    assert_eq!(s.logins, 0);
    assert_eq!(tap.count("reauth.failed"), 0);
    let m = reauth.metrics().await;
    assert!(
        m.get("warden_token_store_errors_total") >= Some(&1.0),
        "the store did refuse: {m:?}"
    );
    assert_active(&stack).await;
}

#[tokio::test]
async fn an_outage_of_the_login_pages_is_waited_out_and_heals_with_one_browser_login() {
    let _turn = browser_turn().await;
    let stack = Stack::new("pageoutage", PASSWORD).await;
    // Only an access token: a browser login is the only way back.
    let t = stack.provider.state.mint_tokens(MAIN).unwrap();
    let out = stack.token_set(MAIN, &t.access_token, None);
    assert_eq!(out.0, 0, "{out:?}");
    let reauth_env = [
        ("WARDEN_REAUTH__LOGIN_TIMEOUT", "8s"),
        ("WARDEN_REAUTH__RETRY_MAX_DELAY", "4s"),
    ];
    let (tap, _worker, reauth) = start(&stack, &[], &reauth_env).await;

    stack.provider.state.set_outage(Some(503));
    let outage = Instant::now();
    stack.provider.state.revoke(MAIN);
    let ids = stack.publish_posts(5).await;
    // Both browser logins allowed (max_attempts = 2) meet the error page.
    let failed = r#"warden_reauth_attempts_total{result="failed",mode="browser"}"#;
    assert!(
        eventually(Duration::from_secs(60), async || {
            reauth.metrics().await.get(failed) >= Some(&2.0)
        })
        .await,
        "not two browser logins on the error page within 60 s"
    );
    stack.provider.state.set_outage(None);
    let lasted = outage.elapsed();
    let ended = Instant::now();
    tap.wait_terminal(&ids, Duration::from_secs(60)).await;
    eprintln!(
        "login pages down {lasted:?}; all tasks done {:?} after they came back",
        ended.elapsed()
    );
    tap.assert_succeeded(&ids);
    assert_eq!(stack.stats().logins, 1, "one login, after the outage");
    assert_eq!(tap.count("reauth.failed"), 0);
    assert_active(&stack).await;
}

#[tokio::test]
async fn sigterm_or_sigkill_of_warden_reauth_mid_login_leaves_no_chromium_or_node_behind() {
    let _turn = browser_turn().await;
    let stack = Stack::new("term", PASSWORD).await;
    stack.provider.state.revoke(MAIN);
    stack.hang_logins();
    let (code, _, err) = run_cli(&["channels"], &stack.env_ref());
    assert_eq!(code, 0, "{err}");
    stack.request_reauth(1).await;
    let reauth_queue = stack.broker.topology.reauth();
    for signal in [Signal::SIGTERM, Signal::SIGKILL] {
        let mut reauth = stack.spawn(
            &["reauth"],
            &[
                ("WARDEN_SHUTDOWN_GRACE", "1s"),
                // Short, so the request the SIGKILLed holder leaves behind is
                // not held up by its lease in the next round.
                ("WARDEN_REAUTH__LEASE_TTL", "25s"),
            ],
        );
        // Mid-login: the driver (node) and Chromium run under this warden.
        let mut browsers = Vec::new();
        let mid_login = async || {
            browsers = browser_descendants();
            browsers.iter().any(|(_, c)| c.contains("node"))
                && browsers.iter().any(|(_, c)| c.contains("chrom"))
        };
        assert!(
            eventually(Duration::from_secs(60), mid_login).await,
            "no login in progress within 60 s"
        );
        reauth.signal(signal);
        let status = reauth.wait_exit(Duration::from_secs(15)).await;
        if signal == Signal::SIGTERM {
            assert!(status.success(), "{status:?}; log:\n{}", reauth.logs());
            let logs = reauth.logs();
            assert!(logs.contains("abandoning unfinished re-auths"), "{logs}");
        }
        assert_exited(&browsers, Duration::from_secs(10)).await;
        // The abandoned request went back to the queue, and shutting down is
        // not a failed re-auth.
        stack
            .broker
            .assert_queue_len(&reauth_queue, 1, Duration::from_secs(10))
            .await;
        let (_, out, _) = run_cli(&["channels", "--json"], &stack.env_ref());
        assert!(!out.contains("reauth_failed"), "{signal}: {out}");
    }
}
