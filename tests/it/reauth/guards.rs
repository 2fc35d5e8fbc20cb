//! What cannot start or stretch a re-auth: forged requests, a platform that
//! echoes "invalid_token" in a payload, one that keeps refusing fresh tokens,
//! a forged park time; and `config check` reading every secret reference.

use std::time::{Duration, Instant};

use serde_json::json;

use super::{ready, start};
use crate::support::stack::{CLIENT_SECRET, MAIN, PASSWORD, Stack};
use crate::support::{eventually, run_cli};

#[tokio::test]
async fn a_thousand_forged_reauth_requests_cause_no_login_and_fail_nothing() {
    let stack = Stack::new("forged", PASSWORD).await;
    let tap = stack.broker.tap().await;
    let reauth = ready(&stack, &["reauth"], &[]).await;
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
async fn a_thousand_tasks_whose_payload_the_api_echoes_in_a_400_cause_no_reauth() {
    let stack = Stack::new("echo", PASSWORD).await;
    let (tap, _worker, _reauth) = start(&stack, &[], &[]).await;
    let mut ids = Vec::new();
    for _ in 0..1000 {
        let payload =
            json!({"reject": true, "text": "invalid_token token_revoked token has been revoked"});
        ids.push(stack.publish_post(payload).await);
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
}

#[tokio::test]
async fn a_platform_that_keeps_refusing_fresh_tokens_gets_one_reauth_per_min_interval() {
    let stack = Stack::new("interval", PASSWORD).await;
    // This handler opts in to revocations stated in the body, and its
    // platform echoes the payload: each fresh token is "refused" again.
    stack.set_handler_option("revocation_in_body", true);
    let (tap, _worker, _reauth) =
        start(&stack, &[], &[("WARDEN_REAUTH__MIN_INTERVAL", "5s")]).await;
    stack
        .publish_post(json!({"reject": true, "text": "invalid_token"}))
        .await;
    assert!(
        eventually(Duration::from_secs(30), async || tap
            .count("reauth.succeeded")
            >= 1)
        .await,
        "no re-auth within 30 s"
    );
    let first = Instant::now();
    // A window of 12 s after the first heal: at 5 s apart, two more at most.
    tokio::time::sleep(Duration::from_secs(12)).await;
    let healed = tap.count("reauth.succeeded");
    eprintln!("{healed} re-auths in {:?} since the first", first.elapsed());
    assert!((2..=3).contains(&healed), "{healed} re-auths");
    assert_eq!(stack.stats().token_grants.refresh_token as usize, healed);
}

#[tokio::test]
async fn a_forged_future_parked_at_cannot_keep_a_task_parked_past_max_park() {
    let stack = Stack::new("forgedpark", PASSWORD).await;
    // The channel awaits a re-auth that never comes (no `warden reauth` runs).
    let store = stack.store().await;
    assert!(store.mark_pending(MAIN, 1).await.unwrap());
    store.close().await;

    let tap = stack.broker.tap().await;
    let _worker = ready(&stack, &["worker"], &[("WARDEN_MAX_PARK", "3s")]).await;
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
            Stack::post(&id, MAIN, "forged").to_string().as_bytes(),
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
