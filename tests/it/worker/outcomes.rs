//! Every outcome of the table, through the real broker: bodies kept byte for
//! byte, bare producers, bad input, huge headers.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::json;

use super::{READY, dead_letters};
use crate::support::{TestBroker, eventually, run_cli};

/// How a task must end: succeeded (`None`), or dead with its reason after
/// so many attempts.
type Ending = Option<(&'static str, u32)>;

/// One task per row of the outcome table, published in this order, and how
/// each must end.
fn outcome_table() -> Vec<(&'static str, serde_json::Value, Ending)> {
    vec![
        ("builtin.noop", json!({}), None),
        (
            "builtin.fail",
            json!({"times": 1, "kind": "transient"}),
            None,
        ),
        (
            "builtin.fail",
            json!({"times": 99, "kind": "transient"}),
            Some(("retries_exhausted", 3)),
        ),
        (
            "builtin.fail",
            json!({"times": 1, "kind": "permanent"}),
            Some(("permanent", 1)),
        ),
        ("builtin.panic", json!({"times": 1}), None),
        (
            "builtin.panic",
            json!({"times": 99}),
            Some(("retries_exhausted", 3)),
        ),
        (
            "builtin.sleep",
            json!({"ms": 5000}),
            Some(("timeout_exhausted", 3)),
        ),
        ("no.such.type", json!({}), Some(("unknown_type", 1))),
    ]
}

#[tokio::test]
async fn every_row_of_the_outcome_table_holds_through_the_real_broker() {
    let broker = TestBroker::with("table", |s| {
        s.retry.base_delay = Duration::from_millis(100);
        s.retry.factor = 2;
        s.retry.tiers = 2;
        s.retry.max_attempts = 3;
        s.task_timeout = Duration::from_millis(300);
    })
    .await;
    let tap = broker.tap().await;
    let worker = broker.spawn_worker(&[("WARDEN_MAX_BODY_BYTES", "1024")]);
    worker.wait_ready(READY).await;

    let rows = outcome_table();
    let mut ids = Vec::new();
    for (kind, payload, _) in &rows {
        ids.push(broker.publish(kind, payload.clone()).await);
    }
    broker
        .publish_raw("post.publish", b"{\"id\": \"m1\", \"type\"", "malformed")
        .await;
    let big = json!({"id": "big", "type": "builtin.noop", "payload": "x".repeat(2000)}).to_string();
    broker
        .publish_raw("builtin.noop", big.as_bytes(), "too-large")
        .await;
    let mut all = ids.clone();
    all.extend(["malformed".to_owned(), "too-large".to_owned()]);
    tap.wait_terminal(&all, Duration::from_secs(30)).await;

    let (terminal, dead) = (tap.terminal(), dead_letters(&broker).await);
    for ((_, _, end), id) in rows.iter().zip(&ids) {
        let Some((reason, attempts)) = *end else {
            assert_eq!(terminal[id], ["task.succeeded"], "{id}");
            continue;
        };
        let d = dead
            .get(id.as_str())
            .unwrap_or_else(|| panic!("{reason} task {id} not in the dead-letter queue"));
        assert_eq!((d.reason.as_str(), d.attempts), (reason, attempts), "{id}");
        assert!(d.failed_at.is_some());
        assert!(!d.error.is_empty());
    }
    let recovers = &ids[1];
    let events = tap.of(recovers);
    let retries = events.iter().filter(|(rk, _)| rk == "task.retrying");
    assert_eq!(retries.count(), 1);
    let succeeded_on = events
        .iter()
        .find(|(rk, _)| rk == "task.succeeded")
        .unwrap()
        .1
        .attempt;
    assert_eq!(
        succeeded_on, 2,
        "a transient failure is retried as attempt 2"
    );
    assert_eq!(dead["malformed"].reason, "malformed");
    assert_eq!(
        dead["malformed"].kind, "post.publish",
        "the original routing key is kept"
    );
    assert_eq!(dead["too-large"].reason, "too_large");
    assert_eq!(dead.len(), 7, "nothing else is dead: {dead:#?}");
    assert_eq!(broker.queue_len(&broker.topology.tasks()).await, 0);
    assert!(worker.ready().await, "the worker is still consuming");
}

#[tokio::test]
async fn dead_letters_keep_the_original_body_byte_for_byte() {
    let broker = TestBroker::new("bytes").await;
    let worker = broker.spawn_worker(&[]);
    worker.wait_ready(READY).await;
    let body = b"{\"id\":\"raw-1\",  \"type\":\"builtin.fail\",\"payload\":{\"times\":1,\"kind\":\"permanent\"}, \"extra\": [1,2]}";
    broker.publish_raw("builtin.fail", body, "raw-1").await;
    let ch = broker.conn.create_channel().await.unwrap();
    let mut letter = None;
    let got = async || {
        letter = ch
            .basic_get(
                broker.topology.dead().into(),
                lapin::options::BasicGetOptions { no_ack: true },
            )
            .await
            .unwrap();
        letter.is_some()
    };
    assert!(
        eventually(Duration::from_secs(20), got).await,
        "no dead letter within 20 s"
    );
    let msg = letter.expect("a dead letter");
    assert_eq!(msg.delivery.data, body);
    let h = msg.delivery.properties.headers().clone().unwrap();
    for key in [
        "x-warden-reason",
        "x-warden-error",
        "x-warden-attempts",
        "x-warden-failed-at",
        "x-warden-original-routing-key",
    ] {
        assert!(h.inner().contains_key(key), "dead letter lacks {key}");
    }
    assert_eq!(
        msg.delivery
            .properties
            .message_id()
            .as_ref()
            .map(|m| m.as_str()),
        Some("raw-1")
    );
}

#[tokio::test]
async fn a_task_published_with_a_bare_amqp_client_runs() {
    let broker = TestBroker::new("bare").await;
    let tap = broker.tap().await;
    let worker = broker.spawn_worker(&[]);
    worker.wait_ready(READY).await;
    // No warden publisher code: a plain basic.publish of the documented body.
    let body = br#"{"id":"bare-1","type":"builtin.sleep","payload":{"ms":5},"created_at":"2026-11-28T10:00:00Z"}"#;
    broker.publish_raw("builtin.sleep", body, "bare-1").await;
    tap.wait_terminal(&["bare-1".to_owned()], Duration::from_secs(10))
        .await;
    assert_eq!(tap.terminal()["bare-1"], ["task.succeeded"]);
}

#[tokio::test]
async fn a_panic_a_timeout_and_a_thousand_bad_bodies_leave_the_worker_consuming() {
    let broker = TestBroker::with("hostile", |s| {
        s.retry.max_attempts = 1;
        s.task_timeout = Duration::from_millis(200);
    })
    .await;
    let tap = broker.tap().await;
    let worker = broker.spawn_worker(&[("WARDEN_MAX_BODY_BYTES", "256")]);
    worker.wait_ready(READY).await;

    let panic = broker.publish("builtin.panic", json!({"times": 5})).await;
    let timeout = broker.publish("builtin.sleep", json!({"ms": 10_000})).await;
    let mut bad = Vec::new();
    for i in 0..1000 {
        let id = format!("bad-{i}");
        let body: Vec<u8> = if i % 2 == 0 {
            format!("{{\"id\": \"{id}\", garbage {i}").into_bytes()
        } else {
            format!(
                "{{\"id\":\"{id}\",\"type\":\"builtin.noop\",\"payload\":\"{}\"}}",
                "y".repeat(300)
            )
            .into_bytes()
        };
        broker.publish_raw("junk", &body, &id).await;
        bad.push(id);
    }
    let mut good = Vec::new();
    for _ in 0..10 {
        good.push(broker.publish("builtin.noop", json!({})).await);
    }
    let mut all = bad.clone();
    all.extend(good.clone());
    all.extend([panic.clone(), timeout.clone()]);
    tap.wait_terminal(&all, Duration::from_secs(60)).await;

    let dead = dead_letters(&broker).await;
    assert_eq!(dead[&panic].reason, "retries_exhausted");
    assert_eq!(dead[&timeout].reason, "timeout_exhausted");
    for (i, id) in bad.iter().enumerate() {
        assert_eq!(
            dead[id].reason,
            if i % 2 == 0 { "malformed" } else { "too_large" },
            "{id}"
        );
    }
    tap.assert_succeeded(&good);
    let mut worker = worker;
    assert!(
        worker.child.try_wait().unwrap().is_none(),
        "the worker process is alive"
    );
    assert!(worker.ready().await);
    let logs = worker.logs();
    assert!(
        !logs.lines().any(
            |l| l.contains("\"ERROR\"") && (l.contains("malformed") || l.contains("too_large"))
        ),
        "bad input is logged at warn, not error"
    );
}

#[tokio::test]
async fn huge_headers_never_close_the_connection_and_every_task_reaches_its_outcome() {
    let broker = TestBroker::new("headers").await;
    let tap = broker.tap().await;
    let worker = broker.spawn_worker(&[("WARDEN_CONCURRENCY", "64")]);
    worker.wait_ready(READY).await;
    let header_task = |size: usize| {
        let mut h = lapin::types::FieldTable::default();
        h.insert(
            "x-producer-blob".into(),
            lapin::types::AMQPValue::LongString("b".repeat(size).into()),
        );
        h
    };
    let mut normal = broker.publish_many("builtin.noop", json!({}), 250).await;
    // Dead letters carry warden's headers on top of the producer's: 20 KB,
    // 8,000 bytes (an 8 KiB frame overflowed once warden added its own), and
    // one that leaves warden no room in the broker's 128 KiB frame at all.
    let mut big = HashMap::new();
    for size in [20_000, 8_000, 129_000] {
        let id = uuid::Uuid::new_v4().to_string();
        let body =
            json!({"id": id, "type": "builtin.fail", "payload": {"times": 1, "kind": "permanent"}});
        broker
            .publish_raw_with_headers(
                "builtin.fail",
                body.to_string().as_bytes(),
                &id,
                header_task(size),
            )
            .await;
        big.insert(size, id);
    }
    normal.extend(broker.publish_many("builtin.noop", json!({}), 250).await);
    let mut all = normal.clone();
    all.extend(big.values().cloned());
    tap.wait_terminal(&all, Duration::from_secs(60)).await;

    let endings = tap.endings();
    assert!(
        normal
            .iter()
            .all(|id| endings[id].iter().all(|(rk, _)| rk == "task.succeeded"))
    );
    for id in big.values() {
        assert_eq!(
            endings[id],
            [("task.dead".to_owned(), Some("permanent".to_owned()))]
        );
    }
    let metrics = worker.metrics().await;
    assert_eq!(
        metrics["warden_broker_reconnects_total"], 0.0,
        "the connection was never closed"
    );

    // The dead letters: the two that fit keep the producer's header; the one
    // that could not says what was dropped. `dlq list` reads them all.
    let dead = dead_letters(&broker).await;
    assert_eq!(dead.len(), 3);
    assert!(!dead[&big[&20_000]].error.contains("dropped"));
    let dropped = &dead[&big[&129_000]].error;
    assert!(dropped.contains("injected permanent failure"), "{dropped}");
    assert!(
        dropped.contains("dropped 1 foreign header(s)") && dropped.contains("x-producer-blob"),
        "{dropped}"
    );
    let prefix = broker.prefix.clone();
    let listing = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::task::spawn_blocking(move || {
            run_cli(&["dlq", "list", "--json"], &[("WARDEN_PREFIX", &prefix)])
        }),
    )
    .await
    .expect("dlq list never hangs")
    .unwrap();
    assert_eq!(listing.0, 0, "{}", listing.2);
    assert_eq!(
        listing.1.matches("\"reason\":\"permanent\"").count(),
        3,
        "{}",
        listing.1
    );
}
