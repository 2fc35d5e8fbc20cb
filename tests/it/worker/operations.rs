//! Running warden: rollouts and migrations, SIGTERM's drain, the command
//! line's errors, and a broker that is down at start.

use std::time::Duration;

use nix::sys::signal::Signal;
use serde_json::json;

use super::READY;
use crate::support;
use crate::support::{TestBroker, eventually, run_cli};

#[tokio::test]
async fn a_rollout_that_changes_the_delivery_limit_and_the_park_time_just_works() {
    let broker = TestBroker::new("rollout").await;
    let tap = broker.tap().await;
    let old = broker.spawn_worker(&[("WARDEN_DELIVERY_LIMIT", "3"), ("WARDEN_PARK_TTL", "5s")]);
    old.wait_ready(READY).await;
    // Both at once, as in a rolling update.
    let new = broker.spawn_worker(&[("WARDEN_DELIVERY_LIMIT", "5"), ("WARDEN_PARK_TTL", "20s")]);
    new.wait_ready(READY).await;
    let ids = broker.publish_many("builtin.noop", json!({}), 200).await;
    tap.wait_terminal(&ids, Duration::from_secs(30)).await;
    assert!(old.ready().await && new.ready().await);
}

/// Replaces `{p}.tasks` and `{p}.parked` with the queues warden 0.1 declared:
/// its delivery limit and park time in their arguments.
async fn declare_old_queues(broker: &TestBroker) {
    use lapin::options::{QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions};
    use lapin::types::{AMQPValue, FieldTable};
    let t = &broker.topology;
    let text = |s: &str| AMQPValue::LongString(s.into());
    let table = |entries: Vec<(&str, AMQPValue)>| {
        let mut f = FieldTable::default();
        for (k, v) in entries {
            f.insert(k.into(), v);
        }
        f
    };
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    for q in [t.tasks(), t.parked()] {
        broker
            .ch
            .queue_delete(q.into(), QueueDeleteOptions::default())
            .await
            .unwrap();
    }
    // (queue, the argument that carried a setting, the queue its letters go to)
    for (queue, (setting, value), dead_letters_to) in [
        (t.tasks(), ("x-delivery-limit", 2), t.dead()),
        (t.parked(), ("x-message-ttl", 30_000), t.tasks()),
    ] {
        broker
            .ch
            .queue_declare(
                queue.into(),
                durable,
                table(vec![
                    ("x-queue-type", text("quorum")),
                    (setting, AMQPValue::LongLongInt(value)),
                    ("x-dead-letter-exchange", text(&dead_letters_to)),
                    ("x-dead-letter-strategy", text("at-least-once")),
                    ("x-overflow", text("reject-publish")),
                ]),
            )
            .await
            .unwrap();
    }
    broker
        .ch
        .queue_bind(
            t.tasks().into(),
            t.tasks().into(),
            "#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn queues_of_an_older_warden_are_named_in_the_error_and_migrate_keeps_their_messages() {
    let broker = TestBroker::new("migrate").await;
    let t = &broker.topology;
    // `{p}.tasks` and `{p}.parked` as warden 0.1 declared them, with tasks
    // waiting in them.
    declare_old_queues(&broker).await;
    let ids = broker.publish_many("builtin.noop", json!({}), 50).await;

    let refused = broker.spawn_worker(&[]);
    assert!(
        eventually(Duration::from_secs(20), async || refused
            .logs()
            .contains("warden topology migrate"))
        .await,
        "no declare error naming the fix in the log:\n{}",
        refused.logs()
    );
    let logs = refused.logs();
    assert!(
        logs.contains(&format!(
            "queue '{}' exists with x-delivery-limit = 2, but this warden declares 20",
            t.tasks()
        )),
        "{logs}"
    );
    assert!(!refused.ready().await);
    drop(refused);

    let (code, out, err) = run_cli(
        &["topology", "migrate"],
        &[("WARDEN_PREFIX", &broker.prefix)],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(&format!(
            "{}: x-delivery-limit 2 -> 20; 50 message(s)",
            t.tasks()
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!("{}: x-message-ttl 30000 -> none", t.parked())),
        "{out}"
    );
    let (code, out, _) = run_cli(
        &["topology", "migrate"],
        &[("WARDEN_PREFIX", &broker.prefix)],
    );
    assert_eq!(code, 0);
    assert!(out.contains("already has the current arguments"), "{out}");

    let tap = broker.tap().await;
    let worker = broker.spawn_worker(&[]);
    worker.wait_ready(READY).await;
    tap.wait_terminal(&ids, Duration::from_secs(30)).await;
    // Producers' tasks still route to the new queue.
    let more = broker.publish_many("builtin.noop", json!({}), 10).await;
    tap.wait_terminal(&more, Duration::from_secs(30)).await;
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
    let mut metrics = String::new();
    let all_running = async || {
        metrics = worker.get("/metrics").await.unwrap().1;
        metrics.contains("warden_tasks_in_flight 50")
    };
    assert!(
        eventually(Duration::from_secs(10), all_running).await,
        "50 tasks never in flight:\n{metrics}"
    );
    let signalled = std::time::Instant::now();
    worker.signal(Signal::SIGTERM);
    assert!(
        eventually(Duration::from_secs(2), async || {
            !matches!(worker.get("/readyz").await, Some((200, _)))
        })
        .await,
        "timed out waiting for readyz to turn false"
    );
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
    broker
        .assert_queue_len(&broker.topology.tasks(), 10, Duration::from_secs(5))
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
    assert!(
        eventually(Duration::from_secs(30), async || proxy.accepted() >= 5).await,
        "timed out waiting for several connection attempts"
    );
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
