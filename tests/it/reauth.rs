//! Token revocation end to end: real broker, real SQLite token store, the real
//! `warden worker` and `warden reauth` binaries, Debian's Chromium driven by
//! Playwright, and the simulated provider speaking real HTTP.

use std::time::Duration;

use crate::support;
use crate::support::stack::{self, CLIENT_SECRET, MAIN, PASSWORD, Stack};
use crate::support::{eventually, provider_browser, run_cli};
use serde_json::json;

const READY: Duration = Duration::from_secs(30);

#[tokio::test]
async fn a_revoked_token_parks_twenty_tasks_heals_with_one_login_and_all_succeed() {
    let _turn = provider_browser::browser_turn().await;
    let stack = Stack::new("revoke", PASSWORD).await;
    let tap = stack.broker.tap().await;
    // One task at a time, so "no call with the dead token after the first 401" is exact.
    let worker = stack.spawn(&["worker"], &[("WARDEN_CONCURRENCY", "1")]);
    let reauth = stack.spawn(&["reauth"], &[]);
    worker.wait_ready(READY).await;
    reauth.wait_ready(READY).await;

    stack.provider.state.revoke("acme-main"); // access and refresh: only a browser login heals
    let ids = stack.publish_posts(20).await;
    tap.wait_terminal(&ids, Duration::from_secs(90)).await;

    let terminal = tap.terminal();
    assert!(
        ids.iter().all(|id| terminal[id] == ["task.succeeded"]),
        "all 20 succeed after re-auth"
    );
    let s = stack.stats();
    assert_eq!(s.logins, 1, "exactly one browser login");
    assert_eq!(
        s.api_rejected, 1,
        "no platform call with the dead token after the first 401"
    );
    assert!(s.api_ok >= 20);
    assert_eq!(tap.count("reauth.succeeded"), 1);
    let (_, metrics) = reauth.get("/metrics").await.unwrap();
    assert!(
        metrics.contains(r#"warden_reauth_attempts_total{result="succeeded",mode="browser"} 1"#),
        "{metrics}"
    );
    let out = run_cli(&["channels", "--json"], &stack.env_ref());
    assert!(
        out.1.contains("\"status\":\"active\"") && out.1.contains("\"version\":2"),
        "{out:?}"
    );

    // No secret in any output of the whole run.
    let logs = format!("{}{}{}", worker.logs(), reauth.logs(), out.1);
    let events = format!("{:?}", tap.events.lock().unwrap());
    let logs = format!("{logs}{events}");
    for secret in [PASSWORD, CLIENT_SECRET]
        .into_iter()
        .chain(stack.seeded.iter().map(String::as_str))
    {
        assert!(!logs.contains(secret), "a secret leaked into the logs");
    }
    drop((worker, reauth));
}

#[tokio::test]
async fn the_refresh_token_heals_without_launching_a_browser() {
    let stack = Stack::new("refresh", PASSWORD).await;
    let tap = stack.broker.tap().await;
    let worker = stack.spawn(&["worker"], &[]);
    let reauth = stack.spawn(&["reauth"], &[]);
    worker.wait_ready(READY).await;
    reauth.wait_ready(READY).await;

    stack.provider.state.revoke_access("acme-main");
    let ids = stack.publish_posts(5).await;
    tap.wait_terminal(&ids, Duration::from_secs(60)).await;
    assert!(
        ids.iter()
            .all(|id| tap.terminal()[id] == ["task.succeeded"])
    );
    let s = stack.stats();
    assert_eq!(s.logins, 0, "no browser login");
    assert_eq!(s.token_grants.refresh_token, 1, "one refresh grant");
    let healed = tap
        .events
        .lock()
        .unwrap()
        .iter()
        .find(|(rk, _)| rk == "reauth.succeeded")
        .cloned()
        .unwrap();
    assert_eq!(healed.1.reason.as_deref(), Some("refresh"));
    assert!(
        !reauth.logs().contains("launching"),
        "no browser was started"
    );
}

#[tokio::test]
async fn a_wrong_password_ends_in_reauth_failed_the_tasks_go_dead_at_once_and_token_set_then_replay_recovers_them()
 {
    let _turn = provider_browser::browser_turn().await;
    let stack = Stack::new("wrongpw", "not-the-password").await;
    let tap = stack.broker.tap().await;
    let worker = stack.spawn(&["worker"], &[]);
    let reauth = stack.spawn(&["reauth"], &[]);
    worker.wait_ready(READY).await;
    reauth.wait_ready(READY).await;

    stack.provider.state.revoke("acme-main");
    let ids = stack.publish_posts(3).await;
    tap.wait_terminal(&ids, Duration::from_secs(90)).await;
    // The workers are told of the failure: the parked tasks go dead as soon
    // as they come back, not when a cached "pending" ages out 30 s later.
    let failed_at = tap
        .events
        .lock()
        .unwrap()
        .iter()
        .find(|(rk, _)| rk == "reauth.failed")
        .map(|(_, e)| e.at)
        .expect("reauth.failed");
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
    let dq = warden::amqp::dlq::DeadQueue::open(&stack.broker.settings)
        .await
        .unwrap();
    let dead = dq.list(None).await.unwrap();
    dq.close().await;
    for id in &ids {
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

    // Recovery as the README tells it: store a good token, replay at once.
    let t = stack.provider.state.mint_tokens(MAIN).unwrap();
    let started = std::time::Instant::now();
    let out = stack.cli_stdin(
        &["token", "set", "--channel", MAIN],
        &format!("{}\n{}\n", t.access_token, t.refresh_token),
    );
    assert!(out.status.success(), "{out:?}");
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("warning"),
        "{out:?}"
    );
    let (code, out, err) = run_cli(
        &["dlq", "replay", "--reason", "reauth_failed"],
        &stack.env_ref(),
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("replayed 4 dead letter(s)"), "{out}");
    let replayed: Vec<String> = ids.iter().chain(&late).cloned().collect();
    assert!(
        eventually(Duration::from_secs(30), async || {
            let terminal = tap.terminal();
            replayed
                .iter()
                .all(|id| terminal[id].last().map(String::as_str) == Some("task.succeeded"))
        })
        .await,
        "timed out waiting for every replayed task to succeed"
    );
    eprintln!("token set to a successful replay: {:?}", started.elapsed());
    // The dead-lettered re-auth request stayed where it was: it is not a task.
    let dq = warden::amqp::dlq::DeadQueue::open(&stack.broker.settings)
        .await
        .unwrap();
    let dead = dq.list(None).await.unwrap();
    dq.close().await;
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

#[tokio::test]
async fn two_reauth_processes_and_a_hundred_requests_give_one_login() {
    let _turn = provider_browser::browser_turn().await;
    let stack = Stack::new("single", PASSWORD).await;
    stack.provider.state.revoke("acme-main");
    // The worker would mark the channel pending at version 1 and announce it;
    // here a hundred announcements arrive at once, as from many replicas.
    let store_env = stack.env_ref();
    let (code, _, err) = run_cli(&["channels"], &store_env);
    assert_eq!(code, 0, "{err}");
    let tap = stack.broker.tap().await;
    stack.request_reauth(100).await;
    let a = stack.spawn(&["reauth"], &[]);
    let b = stack.spawn(&["reauth"], &[]);
    assert!(
        eventually(Duration::from_secs(90), async || stack.stats().logins >= 1).await,
        "timed out waiting for the re-auth queue to drain"
    );
    assert!(
        eventually(Duration::from_secs(60), async || {
            stack
                .broker
                .queue_len(&stack.broker.topology.reauth())
                .await
                == 0
        })
        .await,
        "timed out waiting for all 100 requests acknowledged"
    );
    assert_eq!(
        stack.stats().logins,
        1,
        "exactly one login for a hundred requests"
    );
    // Each process handles several requests at once (reauth.concurrency = 4):
    // one lease per request, so one re-auth was started in all, not one per
    // process or per request.
    assert!(
        eventually(Duration::from_secs(10), async || {
            tap.count("reauth.succeeded") >= 1
        })
        .await,
        "timed out waiting for reauth.succeeded"
    );
    assert_eq!(tap.count("reauth.started"), 1, "re-auths started");
    assert_eq!(tap.count("reauth.succeeded"), 1, "re-auths succeeded");
    drop((a, b));
}

#[tokio::test]
async fn sigterm_or_sigkill_of_warden_reauth_mid_login_leaves_no_chromium_or_node_behind() {
    use nix::sys::signal::Signal;
    let _turn = provider_browser::browser_turn().await;
    let stack = Stack::new("term", PASSWORD).await;
    stack.provider.state.revoke("acme-main");
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
        assert!(
            eventually(Duration::from_secs(60), async || {
                browsers = provider_browser::browser_descendants();
                browsers.iter().any(|(_, c)| c.contains("node"))
                    && browsers.iter().any(|(_, c)| c.contains("chrom"))
            })
            .await,
            "timed out waiting for a login in progress"
        );
        reauth.signal(signal);
        let status = reauth.wait_exit(Duration::from_secs(15)).await;
        if signal == Signal::SIGTERM {
            assert!(status.success(), "{status:?}; log:\n{}", reauth.logs());
            let logs = reauth.logs();
            assert!(logs.contains("abandoning unfinished re-auths"), "{logs}");
        }
        // Children outlive a parent only as orphans re-parented away from
        // this test, so look each recorded pid up rather than the tree.
        assert!(
            eventually(Duration::from_secs(10), async || {
                browsers
                    .iter()
                    .all(|(pid, _)| !provider_browser::alive(*pid))
            })
            .await,
            "timed out waiting for every Chromium and node process of the killed warden to exit"
        );
        // The abandoned request went back to the queue, and shutting down is
        // not a failed re-auth.
        assert!(
            eventually(Duration::from_secs(10), async || {
                stack.broker.queue_len(&reauth_queue).await == 1
            })
            .await,
            "timed out waiting for the request back in the queue"
        );
        let (_, out, _) = run_cli(&["channels", "--json"], &stack.env_ref());
        assert!(!out.contains("reauth_failed"), "{signal}: {out}");
    }
}

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
async fn one_trace_runs_from_the_producer_through_the_revocation_and_re_login_to_the_parked_task() {
    let _turn = provider_browser::browser_turn().await;
    let stack = Stack::new("trace", PASSWORD).await;
    let mut collector = support::otel::Collector::start().await;
    let otel = collector.env();
    let otel: Vec<(&str, &str)> = otel.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let tap = stack.broker.tap().await;
    let worker = stack.spawn(&["worker"], &otel);
    let reauth = stack.spawn(&["reauth"], &otel);
    worker.wait_ready(READY).await;
    reauth.wait_ready(READY).await;

    stack.provider.state.revoke("acme-main");
    let trace_id = "5bf92f3577b34da6a3ce929d0e0e4736";
    let mut headers = lapin::types::FieldTable::default();
    headers.insert(
        "traceparent".into(),
        lapin::types::AMQPValue::LongString(format!("00-{trace_id}-00f067aa0ba902b7-01").into()),
    );
    let body =
        json!({"id": "traced-post", "type": "post.publish", "channel": "acme-main", "payload": {}});
    stack
        .broker
        .publish_raw_with_headers(
            "post.publish",
            body.to_string().as_bytes(),
            "traced-post",
            headers,
        )
        .await;
    tap.wait_terminal(&["traced-post".to_owned()], Duration::from_secs(60))
        .await;
    assert_eq!(tap.terminal()["traced-post"], ["task.succeeded"]);

    let tasks = format!("process {}", stack.broker.topology.tasks());
    collector
        .collect_until(
            Duration::from_secs(20),
            "the whole story in one trace",
            |spans| {
                let ours: Vec<_> = spans.iter().filter(|s| s.trace_id == trace_id).collect();
                ours.iter().filter(|s| s.name == tasks).count() >= 2
                    && ours.iter().any(|s| s.name == "browser login")
                    && ours.iter().any(|s| s.name == "token exchange")
                    && ours
                        .iter()
                        .any(|s| s.name.starts_with("process") && s.name != tasks)
            },
        )
        .await;
    let ours: Vec<_> = collector
        .spans
        .iter()
        .filter(|s| s.trace_id == trace_id)
        .collect();
    let process_ids: Vec<&str> = ours.iter().map(|s| s.span_id.as_str()).collect();
    let login = ours.iter().find(|s| s.name == "browser login").unwrap();
    assert!(
        ours.iter()
            .any(|s| s.span_id == login.parent_span_id && s.name.starts_with("process")),
        "the browser login runs inside the re-auth's process span:\n{}",
        support::otel::summary(&collector.spans)
    );
    assert!(
        process_ids.len() >= 6,
        "{}",
        support::otel::summary(&collector.spans)
    );
    let relogin = ours
        .iter()
        .find(|s| s.span_id == login.parent_span_id)
        .unwrap();
    assert_eq!(
        support::otel::attr(relogin, "warden.channel").as_deref(),
        Some("acme-main"),
        "the re-auth's process span names its channel"
    );
    assert_eq!(
        support::otel::attr(relogin, "warden.outcome").as_deref(),
        Some("healed")
    );
    let everything = support::otel::summary(&collector.spans) + &format!("{:?}", collector.spans);
    for secret in [PASSWORD, CLIENT_SECRET] {
        assert!(
            !everything.contains(secret),
            "a secret reached the exported spans"
        );
    }
}

#[tokio::test]
async fn a_thousand_forged_reauth_requests_cause_no_login_and_fail_nothing() {
    let stack = Stack::new("forged", PASSWORD).await;
    let tap = stack.broker.tap().await;
    let reauth = stack.spawn(&["reauth"], &[]);
    reauth.wait_ready(READY).await;
    // The channel is active at version 1: a request for any version, its
    // own or a future one, was not announced by a worker's compare-and-set.
    stack.publish_requests(u64::MAX, 500).await;
    stack.publish_requests(1, 500).await;
    let ignored = r#"warden_reauth_requests_ignored_total{why="not_pending"}"#;
    let all_acked = eventually(Duration::from_secs(60), async || {
        reauth.metrics().await.get(ignored) == Some(&1000.0)
    })
    .await;
    assert!(
        all_acked,
        "not all 1,000 requests acked as ignored: {:?}\n{}",
        reauth.metrics().await.get(ignored),
        reauth
            .logs()
            .lines()
            .rev()
            .take(20)
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert_eq!(
        stack
            .broker
            .queue_len(&stack.broker.topology.reauth())
            .await,
        0
    );
    let s = stack.stats();
    assert_eq!(
        (s.logins, s.token_grants.refresh_token),
        (0, 0),
        "no login, no refresh grant"
    );
    assert_eq!(tap.count("reauth.started"), 0);
    let record = stack.record().await;
    assert_eq!(
        (record.status, record.version),
        (warden::store::ChannelStatus::Active, 1)
    );
}

#[tokio::test]
async fn a_provider_outage_longer_than_the_old_attempts_heals_with_one_grant_once_it_ends() {
    let stack = Stack::new("outage", PASSWORD).await;
    let tap = stack.broker.tap().await;
    let worker = stack.spawn(&["worker"], &[]);
    let reauth = stack.spawn(&["reauth"], &[("WARDEN_REAUTH__RETRY_MAX_DELAY", "4s")]);
    worker.wait_ready(READY).await;
    reauth.wait_ready(READY).await;

    stack.provider.state.set_outage(Some(503));
    stack.provider.state.revoke_access(MAIN);
    let ids = stack.publish_posts(10).await;
    assert!(
        eventually(Duration::from_secs(30), async || {
            stack.provider.state.stats().outage_answers >= 1
        })
        .await,
        "timed out waiting for a token request refused"
    );
    // The outage itself: over six times the old three attempts' window
    // (1 s + 2 s), which failed the channel for good.
    let outage = Duration::from_secs(20);
    tokio::time::sleep(outage).await;
    let refused = stack.provider.state.stats().outage_answers;
    stack.provider.state.set_outage(None);
    let ended = std::time::Instant::now();
    tap.wait_terminal(&ids, Duration::from_secs(30)).await;
    eprintln!(
        "outage {outage:?}: {refused} provider requests refused; all tasks done {:?} after it ended",
        ended.elapsed()
    );
    assert!(
        ids.iter()
            .all(|id| tap.terminal()[id] == ["task.succeeded"]),
        "{:?}",
        tap.terminal()
    );
    // Backoff from 1 s doubling to 4 s, jittered: at most 3 + 16/2 tries in
    // 20 s, where a try per second would be 20.
    assert!(refused <= 12, "{refused} requests in {outage:?}");
    let s = stack.stats();
    assert_eq!(s.token_grants.refresh_token, 1, "one refresh grant");
    assert_eq!(s.logins, 0, "no browser login");
    assert_eq!(tap.count("reauth.failed"), 0);
    assert_eq!(tap.count("reauth.succeeded"), 1);
    assert_eq!(
        stack.record().await.status,
        warden::store::ChannelStatus::Active
    );
}

#[tokio::test]
async fn a_token_store_that_refuses_writes_for_30s_around_a_login_still_heals_with_one_grant() {
    use sqlx::Connection as _;
    let stack = Stack::new("storelock", PASSWORD).await;
    let tap = stack.broker.tap().await;
    let worker = stack.spawn(&["worker"], &[]);
    let reauth = stack.spawn(&["reauth"], &[("WARDEN_REAUTH__RETRY_MAX_DELAY", "4s")]);
    worker.wait_ready(READY).await;
    reauth.wait_ready(READY).await;

    // Hold the grant back until the store is locked: the provider is down
    // until then.
    stack.provider.state.set_outage(Some(503));
    stack.provider.state.revoke_access(MAIN);
    let ids = stack.publish_posts(5).await;
    assert!(
        eventually(Duration::from_secs(30), async || {
            stack.provider.state.stats().outage_answers >= 1
        })
        .await,
        "timed out waiting for a token request refused"
    );
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
        "timed out waiting for the refresh grant"
    );
    let locked = std::time::Instant::now();
    tokio::time::sleep(Duration::from_secs(30)).await;
    sqlx::query("ROLLBACK").execute(&mut lock).await.unwrap();
    drop(lock);
    tap.wait_terminal(&ids, Duration::from_secs(30)).await;
    eprintln!(
        "store refused writes for 30 s; all tasks done {:?} after the lock was taken",
        locked.elapsed()
    );
    assert!(
        ids.iter()
            .all(|id| tap.terminal()[id] == ["task.succeeded"]),
        "{:?}",
        tap.terminal()
    );
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
    assert_eq!(
        stack.record().await.status,
        warden::store::ChannelStatus::Active
    );
    drop(worker);
}

#[tokio::test]
async fn a_thousand_tasks_whose_payload_the_api_echoes_in_a_400_cause_no_reauth() {
    let stack = Stack::new("echo", PASSWORD).await;
    let tap = stack.broker.tap().await;
    let worker = stack.spawn(&["worker"], &[]);
    let reauth = stack.spawn(&["reauth"], &[]);
    worker.wait_ready(READY).await;
    reauth.wait_ready(READY).await;
    let mut ids = Vec::new();
    for _ in 0..1000 {
        let id = uuid::Uuid::new_v4().to_string();
        let body = json!({"id": id, "type": "post.publish", "channel": MAIN,
            "payload": {"reject": true, "text": "invalid_token token_revoked token has been revoked"}});
        stack
            .broker
            .publish_raw("post.publish", body.to_string().as_bytes(), &id)
            .await;
        ids.push(id);
    }
    tap.wait_terminal(&ids, Duration::from_secs(120)).await;
    let endings = tap.endings();
    assert!(
        ids.iter()
            .all(|id| endings[id] == [("task.dead".to_owned(), Some("permanent".to_owned()))]),
        "every task is a permanent failure"
    );
    assert_eq!(tap.count("reauth.started"), 0, "no re-auth");
    assert_eq!(tap.count("task.parked"), 0, "nothing parked");
    let s = stack.stats();
    assert_eq!((s.token_grants.refresh_token, s.logins), (0, 0));
    let record = stack.record().await;
    assert_eq!(
        (record.status, record.version),
        (warden::store::ChannelStatus::Active, 1)
    );
    // Every call carried its task's id, so the platform could spot a repeat.
    let keys: std::collections::BTreeSet<_> = s.idempotency_keys.iter().cloned().collect();
    let sent: std::collections::BTreeSet<_> = ids.iter().cloned().collect();
    assert_eq!(keys, sent);
    drop(reauth);
}

#[tokio::test]
async fn a_platform_that_keeps_refusing_fresh_tokens_gets_one_reauth_per_min_interval() {
    let stack = Stack::new("interval", PASSWORD).await;
    // This handler opts in to revocations stated in the body, and its
    // platform echoes the payload: each fresh token is "refused" again.
    let path = stack.dir.path().join("warden.toml");
    let mut config: toml::Table = std::fs::read_to_string(&path).unwrap().parse().unwrap();
    config["handlers"]["post.publish"]
        .as_table_mut()
        .unwrap()
        .insert("revocation_in_body".into(), true.into());
    std::fs::write(&path, toml::to_string(&config).unwrap()).unwrap();
    let tap = stack.broker.tap().await;
    let worker = stack.spawn(&["worker"], &[]);
    let reauth = stack.spawn(&["reauth"], &[("WARDEN_REAUTH__MIN_INTERVAL", "5s")]);
    worker.wait_ready(READY).await;
    reauth.wait_ready(READY).await;
    let id = uuid::Uuid::new_v4().to_string();
    let body = json!({"id": id, "type": "post.publish", "channel": MAIN,
        "payload": {"reject": true, "text": "invalid_token"}});
    stack
        .broker
        .publish_raw("post.publish", body.to_string().as_bytes(), &id)
        .await;
    assert!(
        eventually(Duration::from_secs(30), async || {
            tap.count("reauth.succeeded") >= 1
        })
        .await,
        "timed out waiting for the first re-auth"
    );
    let first = std::time::Instant::now();
    // A window of 12 s after the first heal: at 5 s apart, two more at most.
    tokio::time::sleep(Duration::from_secs(12)).await;
    let healed = tap.count("reauth.succeeded");
    eprintln!("{healed} re-auths in {:?} since the first", first.elapsed());
    assert!((2..=3).contains(&healed), "{healed} re-auths");
    assert_eq!(stack.stats().token_grants.refresh_token as usize, healed);
    drop(worker);
}

#[tokio::test]
async fn config_check_reads_every_secret_reference_and_names_each_one_missing() {
    let stack = Stack::new("cfgcheck", PASSWORD).await;
    let without: Vec<(&str, &str)> = stack
        .env_ref()
        .into_iter()
        .filter(|(k, _)| *k != "T_ACME_PASS" && *k != "T_USER_0")
        .collect();
    let (code, out, err) = run_cli(&["config", "check"], &without);
    assert_eq!(code, 64, "{out}{err}");
    assert!(!out.contains("configuration is valid"), "{out}");
    for missing in [
        r#"channel "acme-main" credential "password": environment variable T_ACME_PASS"#,
        r#"channel "acme-main" credential "username": environment variable T_USER_0"#,
    ] {
        assert!(err.contains(missing), "{missing} not in {err}");
    }
    // Away from the secrets (a CI job checking a deployment's file), on request.
    let (code, out, err) = run_cli(&["config", "check", "--skip-secrets"], &without);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = run_cli(&["config", "check"], &stack.env_ref());
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("configuration is valid"), "{out}");
    // The store in use is shown, default or not; no secret value is.
    assert!(out.contains(r#""token_store": "sqlite://"#), "{out}");
    for secret in [PASSWORD, CLIENT_SECRET] {
        assert!(!format!("{out}{err}").contains(secret), "{secret} printed");
    }
}

#[tokio::test]
async fn the_platform_sees_the_dead_token_only_from_tasks_in_flight_at_the_first_401() {
    let stack = Stack::new("inflight", PASSWORD).await;
    let tap = stack.broker.tap().await;
    let worker = stack.spawn(&["worker"], &[("WARDEN_CONCURRENCY", "4")]);
    let reauth = stack.spawn(&["reauth"], &[]);
    worker.wait_ready(READY).await;
    reauth.wait_ready(READY).await;
    stack.provider.state.revoke_access(MAIN);
    let ids = stack.publish_posts(40).await;
    tap.wait_terminal(&ids, Duration::from_secs(60)).await;
    assert!(
        ids.iter()
            .all(|id| tap.terminal()[id] == ["task.succeeded"])
    );
    let s = stack.stats();
    eprintln!("calls with the dead token: {}", s.api_rejected);
    assert!(
        (1..=4).contains(&s.api_rejected),
        "{} calls with the dead token, one worker of 4 slots",
        s.api_rejected
    );
    assert_eq!(s.token_grants.refresh_token, 1);
}

#[tokio::test]
async fn an_empty_idempotency_header_sends_none() {
    let stack = Stack::new("idemoff", PASSWORD).await;
    let path = stack.dir.path().join("warden.toml");
    let mut config: toml::Table = std::fs::read_to_string(&path).unwrap().parse().unwrap();
    config["handlers"]["post.publish"]
        .as_table_mut()
        .unwrap()
        .insert("idempotency_header".into(), "".into());
    std::fs::write(&path, toml::to_string(&config).unwrap()).unwrap();
    let tap = stack.broker.tap().await;
    let worker = stack.spawn(&["worker"], &[]);
    worker.wait_ready(READY).await;
    let ids = stack.publish_posts(3).await;
    tap.wait_terminal(&ids, Duration::from_secs(30)).await;
    let s = stack.stats();
    assert_eq!(s.api_ok, 3);
    assert!(s.idempotency_keys.is_empty(), "{:?}", s.idempotency_keys);
}

#[tokio::test]
async fn an_outage_of_the_login_pages_is_waited_out_and_heals_with_one_browser_login() {
    let _turn = provider_browser::browser_turn().await;
    let stack = Stack::new("pageoutage", PASSWORD).await;
    // Only an access token: a browser login is the only way back.
    let t = stack.provider.state.mint_tokens(MAIN).unwrap();
    let out = stack.cli_stdin(
        &["token", "set", "--channel", MAIN],
        &format!("{}\n", t.access_token),
    );
    assert!(out.status.success(), "{out:?}");
    let tap = stack.broker.tap().await;
    let worker = stack.spawn(&["worker"], &[]);
    let reauth = stack.spawn(
        &["reauth"],
        &[
            ("WARDEN_REAUTH__LOGIN_TIMEOUT", "8s"),
            ("WARDEN_REAUTH__RETRY_MAX_DELAY", "4s"),
        ],
    );
    worker.wait_ready(READY).await;
    reauth.wait_ready(READY).await;

    stack.provider.state.set_outage(Some(503));
    let outage = std::time::Instant::now();
    stack.provider.state.revoke(MAIN);
    let ids = stack.publish_posts(5).await;
    // Both browser logins allowed (max_attempts = 2) meet the error page.
    assert!(
        eventually(Duration::from_secs(60), async || {
            reauth
                .metrics()
                .await
                .get(r#"warden_reauth_attempts_total{result="failed",mode="browser"}"#)
                >= Some(&2.0)
        })
        .await,
        "timed out waiting for two browser logins on the error page"
    );
    stack.provider.state.set_outage(None);
    let lasted = outage.elapsed();
    let ended = std::time::Instant::now();
    tap.wait_terminal(&ids, Duration::from_secs(60)).await;
    eprintln!(
        "login pages down {lasted:?}; all tasks done {:?} after they came back",
        ended.elapsed()
    );
    assert!(
        ids.iter()
            .all(|id| tap.terminal()[id] == ["task.succeeded"]),
        "{:?}",
        tap.terminal()
    );
    assert_eq!(stack.stats().logins, 1, "one login, after the outage");
    assert_eq!(tap.count("reauth.failed"), 0);
    assert_eq!(
        stack.record().await.status,
        warden::store::ChannelStatus::Active
    );
}

#[tokio::test]
async fn the_password_never_reaches_the_logs_even_with_rust_log_at_trace() {
    let _turn = provider_browser::browser_turn().await;
    let stack = Stack::new("tracelog", PASSWORD).await;
    let tap = stack.broker.tap().await;
    let worker = stack.spawn(&["worker"], &[]);
    // The narrowest directive for playwright's protocol log: it used to win over warden's cap.
    let reauth = stack.spawn(
        &["reauth"],
        &[(
            "RUST_LOG",
            "trace,lapin=info,playwright_rs::server::connection=trace",
        )],
    );
    worker.wait_ready(READY).await;
    reauth.wait_ready(READY).await;

    stack.provider.state.revoke("acme-main"); // only a browser login heals
    let ids = stack.publish_posts(1).await;
    tap.wait_terminal(&ids, Duration::from_secs(90)).await;
    assert_eq!(tap.terminal()[&ids[0]], ["task.succeeded"]);
    assert_eq!(stack.stats().logins, 1, "the password was typed");

    let logs = reauth.logs();
    assert!(
        logs.contains("\"level\":\"TRACE\""),
        "trace logging is on: {} bytes",
        logs.len()
    );
    for secret in [PASSWORD, CLIENT_SECRET] {
        assert!(
            !logs.contains(secret),
            "a secret leaked into the trace logs"
        );
    }

    // The Playwright driver (node, a child of warden reauth) sees none of warden's
    // environment: no broker or store URL, no token key.
    let drivers = provider_browser::children_named(u32::try_from(reauth.pid()).unwrap(), "node");
    assert!(!drivers.is_empty(), "the driver is running after the login");
    for pid in drivers {
        let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
        let names: Vec<String> = environ
            .split(|b| *b == 0)
            .filter_map(|kv| kv.split(|b| *b == b'=').next())
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .filter(|k| !k.is_empty())
            .collect();
        assert!(
            names.iter().all(|k| !k.starts_with("WARDEN_")),
            "the driver inherited warden's environment: {names:?}"
        );
    }
    drop((worker, reauth));
}

#[tokio::test]
async fn a_forged_future_parked_at_cannot_keep_a_task_parked_past_max_park() {
    let stack = Stack::new("forgedpark", PASSWORD).await;
    let env = |name: &str| {
        stack
            .env
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap()
    };
    // The channel awaits a re-auth that never comes (no `warden reauth` runs).
    let config: toml::Table = std::fs::read_to_string(env("WARDEN_CONFIG"))
        .unwrap()
        .parse()
        .unwrap();
    let store = warden::store::connect(
        config["token_store"].as_str().unwrap(),
        warden::store::Keyring::from_base64(&env("WARDEN_TOKEN_KEY")).unwrap(),
    )
    .await
    .unwrap();
    assert!(store.mark_pending(stack::MAIN, 1).await.unwrap());
    store.close().await;

    let tap = stack.broker.tap().await;
    let worker = stack.spawn(&["worker"], &[("WARDEN_MAX_PARK", "3s")]);
    worker.wait_ready(READY).await;
    let id = uuid::Uuid::new_v4().to_string();
    let mut headers = lapin::types::FieldTable::default();
    warden::amqp::envelope::set_text(
        &mut headers,
        warden::amqp::envelope::PARKED_AT_HEADER,
        "9999-12-31T23:59:59Z",
    );
    stack
        .broker
        .publish_raw_with_headers(
            "post.publish",
            Stack::post(&id, stack::MAIN, "forged")
                .to_string()
                .as_bytes(),
            &id,
            headers,
        )
        .await;
    tap.wait_terminal(std::slice::from_ref(&id), Duration::from_secs(30))
        .await;
    assert_eq!(
        tap.endings()[&id],
        [("task.dead".to_owned(), Some("reauth_failed".to_owned()))]
    );
    drop(worker);
}
