//! The worker against the real RabbitMQ, through the real binary.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use nix::sys::signal::Signal;
use serde_json::json;
use support::{TestBroker, eventually, run_cli, wait_for};
use warden::dlq::DeadQueue;

const READY: Duration = Duration::from_secs(20);

async fn dead_letters(broker: &TestBroker) -> HashMap<String, warden::dlq::DeadLetter> {
    let dq = DeadQueue::open(&broker.settings).await.unwrap();
    let letters = dq.list(None).await.unwrap();
    dq.close().await;
    letters.into_iter().map(|d| (d.id.clone(), d)).collect()
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

    let ok = broker.publish("builtin.noop", json!({})).await;
    let recovers = broker
        .publish("builtin.fail", json!({"times": 1, "kind": "transient"}))
        .await;
    let exhausted = broker
        .publish("builtin.fail", json!({"times": 99, "kind": "transient"}))
        .await;
    let permanent = broker
        .publish("builtin.fail", json!({"times": 1, "kind": "permanent"}))
        .await;
    let panics_once = broker.publish("builtin.panic", json!({"times": 1})).await;
    let panics_always = broker.publish("builtin.panic", json!({"times": 99})).await;
    let times_out = broker.publish("builtin.sleep", json!({"ms": 5000})).await;
    let unknown = broker.publish("no.such.type", json!({})).await;
    broker
        .publish_raw("post.publish", b"{\"id\": \"m1\", \"type\"", "malformed")
        .await;
    let big = json!({"id": "big", "type": "builtin.noop", "payload": "x".repeat(2000)}).to_string();
    broker
        .publish_raw("builtin.noop", big.as_bytes(), "too-large")
        .await;

    let ids = [
        &ok,
        &recovers,
        &exhausted,
        &permanent,
        &panics_once,
        &panics_always,
        &times_out,
        &unknown,
    ];
    let mut all: Vec<String> = ids.iter().map(|s| (*s).clone()).collect();
    all.extend(["malformed".to_owned(), "too-large".to_owned()]);
    tap.wait_terminal(&all, Duration::from_secs(30)).await;

    let terminal = tap.terminal();
    for id in [&ok, &recovers, &panics_once] {
        assert_eq!(terminal[id], ["task.succeeded"], "{id}");
    }
    assert_eq!(
        tap.of(&recovers)
            .iter()
            .filter(|(rk, _)| rk == "task.retrying")
            .count(),
        1
    );
    let succeeded_on = tap
        .of(&recovers)
        .into_iter()
        .find(|(rk, _)| rk == "task.succeeded")
        .unwrap()
        .1
        .attempt;
    assert_eq!(
        succeeded_on, 2,
        "a transient failure is retried as attempt 2"
    );

    let dead = dead_letters(&broker).await;
    let expect = [
        (&exhausted, "retries_exhausted", 3),
        (&permanent, "permanent", 1),
        (&panics_always, "retries_exhausted", 3),
        (&times_out, "timeout_exhausted", 3),
        (&unknown, "unknown_type", 1),
    ];
    for (id, reason, attempts) in expect {
        let d = dead
            .get(id.as_str())
            .unwrap_or_else(|| panic!("{reason} task {id} not in the dead-letter queue"));
        assert_eq!((d.reason.as_str(), d.attempts), (reason, attempts), "{id}");
        assert!(d.failed_at.is_some());
        assert!(!d.error.is_empty());
    }
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
    let msg = loop {
        if let Some(m) = ch
            .basic_get(
                broker.topology.dead().into(),
                lapin::options::BasicGetOptions { no_ack: true },
            )
            .await
            .unwrap()
        {
            break m;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
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
    let terminal = tap.terminal();
    assert!(good.iter().all(|id| terminal[id] == ["task.succeeded"]));
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
async fn a_message_that_kills_the_process_every_time_ends_in_dead_as_delivery_limit() {
    let broker = TestBroker::with("abort", |s| s.delivery_limit = 3).await;
    let id = broker.publish("builtin.abort", json!({})).await;
    let mut crashes = 0;
    while !dead_letters(&broker).await.contains_key(&id) {
        assert!(
            crashes < 6,
            "still not dead-lettered after {crashes} crashes"
        );
        let mut worker = broker.spawn_worker(&[]);
        let status = worker.wait_exit(Duration::from_secs(20)).await;
        assert!(!status.success(), "builtin.abort must kill the process");
        crashes += 1;
    }
    assert_eq!(
        crashes, 3,
        "dead-lettered after exactly delivery-limit crashes"
    );
    let dead = dead_letters(&broker).await;
    assert_eq!(dead[&id].reason, "delivery_limit");
    // `dlq list` (the CLI) shows it the same way.
    let (code, out, err) = run_cli(
        &["dlq", "list", "--json"],
        &[("WARDEN_PREFIX", &broker.prefix)],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("\"reason\":\"delivery_limit\""), "{out}");
    // A fresh worker now consumes normally.
    let worker = broker.spawn_worker(&[]);
    worker.wait_ready(READY).await;
}

#[tokio::test]
async fn sigterm_drains_in_flight_tasks_and_leaves_unfinished_ones_to_the_broker() {
    let broker = TestBroker::new("sigterm").await;
    let tap = broker.tap().await;
    let mut worker = broker.spawn_worker(&[
        ("WARDEN_CONCURRENCY", "64"),
        ("WARDEN_SHUTDOWN_GRACE", "3s"),
    ]);
    worker.wait_ready(READY).await;
    let mut quick = Vec::new();
    for _ in 0..40 {
        quick.push(broker.publish("builtin.sleep", json!({"ms": 1000})).await);
    }
    for _ in 0..10 {
        broker.publish("builtin.sleep", json!({"ms": 60_000})).await;
    }
    // All 50 are running when the signal arrives.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, metrics) = worker.get("/metrics").await.unwrap();
        if metrics.contains("warden_tasks_in_flight 50") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "50 tasks never in flight:\n{metrics}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let signalled = std::time::Instant::now();
    worker.signal(Signal::SIGTERM);
    eventually(Duration::from_secs(2), "readyz to turn false", || async {
        !matches!(worker.get("/readyz").await, Some((200, _)))
    })
    .await;
    let status = worker.wait_exit(Duration::from_secs(10)).await;
    assert!(
        status.success(),
        "exit status {status:?}\n{}",
        worker.logs()
    );
    assert!(
        signalled.elapsed() < Duration::from_secs(5),
        "exited within the grace period (+margin)"
    );
    tap.wait_terminal(&quick, Duration::from_secs(5)).await;
    // The ten unfinished ones were not acked: the broker has them again.
    eventually(
        Duration::from_secs(5),
        "the ten unfinished tasks back in the queue",
        || async { broker.queue_len(&broker.topology.tasks()).await == 10 },
    )
    .await;
    assert!(
        worker.logs().contains("\"unfinished\":10"),
        "the log says how many:\n{}",
        worker.logs()
    );
}

#[tokio::test]
async fn cli_errors_are_one_clear_line_and_bad_config_exits_64() {
    let unreachable = [("WARDEN_AMQP_URL", "amqp://guest:guest@127.0.0.1:1/%2f")];
    let (code, _, err) = run_cli(&["publish", "--type", "builtin.noop"], &unreachable);
    assert_eq!(code, 69, "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(
        err.contains("cannot reach the broker") && !err.contains("guest:guest"),
        "{err}"
    );

    let (code, _, err) = run_cli(&["worker"], &[("WARDEN_CONCURRENCY", "lots")]);
    assert_eq!(code, 64, "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("concurrency"), "{err}");

    let (code, _, err) = run_cli(&["worker"], &[("WARDEN_AMQP_URL", "http://nope")]);
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("amqp_url"), "{err}");

    let (code, _, err) = run_cli(&["publish", "--type", "x", "--payload", "{nope"], &[]);
    assert_ne!(code, 0);
    assert!(err.contains("--payload is not valid JSON"), "{err}");
}

#[tokio::test]
async fn a_publish_file_with_a_bad_line_names_it_and_publishes_nothing() {
    let broker = TestBroker::new("ndjson").await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tasks.ndjson");
    std::fs::write(
        &file,
        "{\"type\":\"builtin.noop\"}\n\n{\"type\":\"builtin.noop\"}\n{oops\n",
    )
    .unwrap();
    let (code, _, err) = run_cli(
        &["publish", "--file", file.to_str().unwrap()],
        &[("WARDEN_PREFIX", &broker.prefix)],
    );
    assert_ne!(code, 0);
    assert!(err.contains("tasks.ndjson:4"), "names the line: {err}");
    assert_eq!(
        broker.queue_len(&broker.topology.tasks()).await,
        0,
        "nothing published"
    );

    std::fs::write(&file, "{\"type\":\"builtin.noop\"}\n{\"id\":\"x1\",\"type\":\"builtin.sleep\",\"payload\":{\"ms\":1}}\n").unwrap();
    let (code, _, err) = run_cli(
        &["publish", "--file", file.to_str().unwrap()],
        &[("WARDEN_PREFIX", &broker.prefix)],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(broker.queue_len(&broker.topology.tasks()).await, 2);
}

#[tokio::test]
async fn the_worker_waits_for_a_broker_that_is_down_and_says_so_once() {
    let broker = TestBroker::new("down").await;
    let upstream = "127.0.0.1:5672".parse().unwrap();
    let proxy = support::proxy::TcpProxy::start(upstream).await;
    proxy.down(true);
    let url = proxy.amqp_url();
    let worker = broker.spawn_worker(&[("WARDEN_AMQP_URL", url.as_str())]);
    wait_for(
        Duration::from_secs(30),
        "several connection attempts",
        || proxy.accepted() >= 5,
    )
    .await;
    let (live, _) = worker
        .get("/livez")
        .await
        .expect("admin server answers while the broker is down");
    assert_eq!(live, 200);
    assert!(!worker.ready().await);
    let logs = worker.logs();
    assert_eq!(
        logs.matches("broker unavailable").count(),
        1,
        "one warning per outage, not a storm:\n{logs}"
    );
    proxy.down(false);
    worker.wait_ready(Duration::from_secs(30)).await;
    assert!(worker.logs().contains("broker reachable again"));
}
