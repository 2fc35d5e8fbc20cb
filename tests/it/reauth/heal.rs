//! A revoked token heals: by a browser login or the refresh grant, once per
//! revoked version, with the platform seeing the dead token only from the
//! tasks already in flight, and no secret anywhere.

use std::time::Duration;

use serde_json::json;

use super::{ready, start};
use crate::support::otel::{Collector, attr, summary};
use crate::support::provider_browser::{browser_turn, children_named};
use crate::support::stack::{CLIENT_SECRET, MAIN, PASSWORD, Stack};
use crate::support::{eventually, run_cli};

#[tokio::test]
async fn a_revoked_token_parks_twenty_tasks_heals_with_one_login_and_all_succeed() {
    let _turn = browser_turn().await;
    let stack = Stack::new("revoke", PASSWORD).await;
    // One task at a time, so "no call with the dead token after the first 401" is exact.
    let (tap, worker, reauth) = start(&stack, &[("WARDEN_CONCURRENCY", "1")], &[]).await;

    stack.provider.state.revoke(MAIN); // access and refresh: only a browser login heals
    let ids = stack.publish_posts(20).await;
    tap.wait_terminal(&ids, Duration::from_secs(90)).await;

    tap.assert_succeeded(&ids);
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
}

#[tokio::test]
async fn the_refresh_token_heals_without_launching_a_browser() {
    let stack = Stack::new("refresh", PASSWORD).await;
    let (tap, _worker, reauth) = start(&stack, &[], &[]).await;

    stack.provider.state.revoke_access(MAIN);
    let ids = stack.publish_posts(5).await;
    tap.wait_terminal(&ids, Duration::from_secs(60)).await;
    tap.assert_succeeded(&ids);
    let s = stack.stats();
    assert_eq!(s.logins, 0, "no browser login");
    assert_eq!(s.token_grants.refresh_token, 1, "one refresh grant");
    let healed = tap.first("reauth.succeeded").expect("reauth.succeeded");
    assert_eq!(healed.reason.as_deref(), Some("refresh"));
    assert!(
        !reauth.logs().contains("launching"),
        "no browser was started"
    );
}

#[tokio::test]
async fn two_reauth_processes_and_a_hundred_requests_give_one_login() {
    let _turn = browser_turn().await;
    let stack = Stack::new("single", PASSWORD).await;
    stack.provider.state.revoke(MAIN);
    // The worker would mark the channel pending at version 1 and announce it;
    // here a hundred announcements arrive at once, as from many replicas.
    let (code, _, err) = run_cli(&["channels"], &stack.env_ref());
    assert_eq!(code, 0, "{err}");
    let tap = stack.broker.tap().await;
    stack.request_reauth(100).await;
    let _a = stack.spawn(&["reauth"], &[]);
    let _b = stack.spawn(&["reauth"], &[]);
    assert!(
        eventually(Duration::from_secs(90), async || stack.stats().logins >= 1).await,
        "no login within 90 s"
    );
    let reauth_queue = stack.broker.topology.reauth();
    stack
        .broker
        .assert_queue_len(&reauth_queue, 0, Duration::from_secs(60))
        .await;
    assert_eq!(
        stack.stats().logins,
        1,
        "exactly one login for a hundred requests"
    );
    // Each process handles several requests at once (reauth.concurrency = 4):
    // one lease per request, so one re-auth was started in all, not one per
    // process or per request.
    assert!(
        eventually(Duration::from_secs(10), async || tap
            .count("reauth.succeeded")
            >= 1)
        .await,
        "no reauth.succeeded within 10 s"
    );
    assert_eq!(tap.count("reauth.started"), 1, "re-auths started");
    assert_eq!(tap.count("reauth.succeeded"), 1, "re-auths succeeded");
}

#[tokio::test]
async fn the_platform_sees_the_dead_token_only_from_tasks_in_flight_at_the_first_401() {
    let stack = Stack::new("inflight", PASSWORD).await;
    let (tap, _worker, _reauth) = start(&stack, &[("WARDEN_CONCURRENCY", "4")], &[]).await;
    stack.provider.state.revoke_access(MAIN);
    let ids = stack.publish_posts(40).await;
    tap.wait_terminal(&ids, Duration::from_secs(60)).await;
    tap.assert_succeeded(&ids);
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
    stack.set_handler_option("idempotency_header", "");
    let tap = stack.broker.tap().await;
    let _worker = ready(&stack, &["worker"], &[]).await;
    let ids = stack.publish_posts(3).await;
    tap.wait_terminal(&ids, Duration::from_secs(30)).await;
    let s = stack.stats();
    assert_eq!(s.api_ok, 3);
    assert!(s.idempotency_keys.is_empty(), "{:?}", s.idempotency_keys);
}

#[tokio::test]
async fn one_trace_runs_from_the_producer_through_the_revocation_and_re_login_to_the_parked_task() {
    let _turn = browser_turn().await;
    let stack = Stack::new("trace", PASSWORD).await;
    let mut collector = Collector::start().await;
    let otel = collector.env();
    let (tap, _worker, _reauth) = start(&stack, &otel, &otel).await;

    stack.provider.state.revoke(MAIN);
    let trace_id = "5bf92f3577b34da6a3ce929d0e0e4736";
    let mut headers = lapin::types::FieldTable::default();
    headers.insert(
        "traceparent".into(),
        lapin::types::AMQPValue::LongString(format!("00-{trace_id}-00f067aa0ba902b7-01").into()),
    );
    let body = json!({"id": "traced-post", "type": "post.publish", "channel": MAIN, "payload": {}});
    stack
        .broker
        .publish_raw_with_headers(
            "post.publish",
            body.to_string().as_bytes(),
            "traced-post",
            headers,
        )
        .await;
    let traced = ["traced-post".to_owned()];
    tap.wait_terminal(&traced, Duration::from_secs(60)).await;
    tap.assert_succeeded(&traced);

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
    let all = summary(&collector.spans);
    let ours: Vec<_> = collector
        .spans
        .iter()
        .filter(|s| s.trace_id == trace_id)
        .collect();
    let login = ours.iter().find(|s| s.name == "browser login").unwrap();
    assert!(
        ours.iter()
            .any(|s| s.span_id == login.parent_span_id && s.name.starts_with("process")),
        "the browser login runs inside the re-auth's process span:\n{all}"
    );
    assert!(ours.len() >= 6, "{all}");
    let relogin = ours
        .iter()
        .find(|s| s.span_id == login.parent_span_id)
        .unwrap();
    assert_eq!(
        attr(relogin, "warden.channel").as_deref(),
        Some(MAIN),
        "the re-auth's process span names its channel"
    );
    assert_eq!(attr(relogin, "warden.outcome").as_deref(), Some("healed"));
    let everything = all + &format!("{:?}", collector.spans);
    for secret in [PASSWORD, CLIENT_SECRET] {
        assert!(
            !everything.contains(secret),
            "a secret reached the exported spans"
        );
    }
}

#[tokio::test]
async fn the_password_never_reaches_the_logs_even_with_rust_log_at_trace() {
    let _turn = browser_turn().await;
    let stack = Stack::new("tracelog", PASSWORD).await;
    // The narrowest directive for playwright's protocol log: it used to win over warden's cap.
    let trace = [(
        "RUST_LOG",
        "trace,lapin=info,playwright_rs::server::connection=trace",
    )];
    let (tap, _worker, reauth) = start(&stack, &[], &trace).await;

    stack.provider.state.revoke(MAIN); // only a browser login heals
    let ids = stack.publish_posts(1).await;
    tap.wait_terminal(&ids, Duration::from_secs(90)).await;
    tap.assert_succeeded(&ids);
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
    let drivers = children_named(u32::try_from(reauth.pid()).unwrap(), "node");
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
}
