//! Token revocation end to end: real broker, real SQLite token store, the real
//! `warden worker` and `warden reauth` binaries, Debian's Chromium driven by
//! Playwright, and the simulated provider speaking real HTTP.

#[path = "support/provider_browser.rs"]
mod provider_browser;
#[path = "support/stack.rs"]
mod stack;
mod support;

use std::time::Duration;

use serde_json::json;
use stack::{CLIENT_SECRET, PASSWORD, Stack};
use support::{run_cli, wait_for};

const READY: Duration = Duration::from_secs(30);

/// Browser tests of this binary run one at a time: two cores, and a login
/// that times out under load would count as a second login.
static BROWSER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn require_browser() {
    assert!(
        std::path::Path::new("/usr/bin/chromium").exists()
            && std::env::var_os("PLAYWRIGHT_DRIVER_PATH").is_some(),
        "Chromium and the Playwright driver are needed: run scripts/setup-playwright.sh (make test does)"
    );
}

#[tokio::test]
async fn a_revoked_token_parks_twenty_tasks_heals_with_one_login_and_all_succeed() {
    require_browser();
    let _one_at_a_time = BROWSER.lock().await;
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
async fn a_wrong_password_ends_in_reauth_failed_and_the_tasks_go_dead_with_artifacts() {
    require_browser();
    let _one_at_a_time = BROWSER.lock().await;
    let stack = Stack::new("wrongpw", "not-the-password").await;
    let tap = stack.broker.tap().await;
    let worker = stack.spawn(&["worker"], &[]);
    let reauth = stack.spawn(&["reauth"], &[]);
    worker.wait_ready(READY).await;
    reauth.wait_ready(READY).await;

    stack.provider.state.revoke("acme-main");
    let ids = stack.publish_posts(3).await;
    tap.wait_terminal(&ids, Duration::from_secs(90)).await;
    let dq = warden::dlq::DeadQueue::open(&stack.broker.settings)
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
    let artifacts: Vec<_> = walk(&stack.dir.path().join("artifacts"));
    assert!(
        artifacts.iter().any(|p| p.ends_with(".png")),
        "a screenshot: {artifacts:?}"
    );
    assert!(
        artifacts.iter().any(|p| p.ends_with(".html")),
        "the page HTML: {artifacts:?}"
    );
    let logs = format!("{}{}", worker.logs(), reauth.logs());
    assert!(!logs.contains("not-the-password"));
}

#[tokio::test]
async fn two_reauth_processes_and_a_hundred_requests_give_one_login() {
    require_browser();
    let _one_at_a_time = BROWSER.lock().await;
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
    wait_for(
        Duration::from_secs(90),
        "the re-auth queue to drain",
        || stack.stats().logins >= 1,
    )
    .await;
    support::eventually(
        Duration::from_secs(60),
        "all 100 requests acknowledged",
        || async {
            stack
                .broker
                .queue_len(&stack.broker.topology.reauth())
                .await
                == 0
        },
    )
    .await;
    assert_eq!(
        stack.stats().logins,
        1,
        "exactly one login for a hundred requests"
    );
    // Each process handles several requests at once (reauth.concurrency = 4):
    // one lease per request, so one re-auth was started in all, not one per
    // process or per request.
    wait_for(Duration::from_secs(10), "reauth.succeeded", || {
        tap.count("reauth.succeeded") >= 1
    })
    .await;
    assert_eq!(tap.count("reauth.started"), 1, "re-auths started");
    assert_eq!(tap.count("reauth.succeeded"), 1, "re-auths succeeded");
    drop((a, b));
}

#[tokio::test]
async fn sigterm_or_sigkill_of_warden_reauth_mid_login_leaves_no_chromium_or_node_behind() {
    use nix::sys::signal::Signal;
    require_browser();
    let _one_at_a_time = BROWSER.lock().await;
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
        wait_for(Duration::from_secs(60), "a login in progress", || {
            browsers = provider_browser::browser_descendants();
            browsers.iter().any(|(_, c)| c.contains("node"))
                && browsers.iter().any(|(_, c)| c.contains("chrom"))
        })
        .await;
        reauth.signal(signal);
        let status = reauth.wait_exit(Duration::from_secs(15)).await;
        if signal == Signal::SIGTERM {
            assert!(status.success(), "{status:?}; log:\n{}", reauth.logs());
            let logs = reauth.logs();
            assert!(logs.contains("abandoning unfinished re-auths"), "{logs}");
        }
        // Children outlive a parent only as orphans re-parented away from
        // this test, so look each recorded pid up rather than the tree.
        wait_for(
            Duration::from_secs(10),
            "every Chromium and node process of the killed warden to exit",
            || {
                browsers
                    .iter()
                    .all(|(pid, _)| !provider_browser::alive(*pid))
            },
        )
        .await;
        // The abandoned request went back to the queue, and shutting down is
        // not a failed re-auth.
        support::eventually(
            Duration::from_secs(10),
            "the request back in the queue",
            || async { stack.broker.queue_len(&reauth_queue).await == 1 },
        )
        .await;
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
    require_browser();
    let _one_at_a_time = BROWSER.lock().await;
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
async fn the_password_never_reaches_the_logs_even_with_rust_log_at_trace() {
    require_browser();
    let _one_at_a_time = BROWSER.lock().await;
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
    let drivers = children_named(reauth.pid(), "node");
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

/// Pids of the processes named `name` whose parent is `parent`.
fn children_named(parent: i32, name: &str) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // "pid (comm) state ppid ...": comm may hold spaces, so split at the last ')'.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let comm = &stat[open + 1..close];
        let ppid = stat[close + 1..]
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse::<i32>().ok());
        if comm == name && ppid == Some(parent) {
            found.push(pid);
        }
    }
    found
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
    warden::envelope::set_text(
        &mut headers,
        warden::envelope::PARKED_AT_HEADER,
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
