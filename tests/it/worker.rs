//! The worker against the real RabbitMQ, through the real binary.

use std::collections::HashMap;
use std::time::Duration;

use crate::support;
use crate::support::{TestBroker, eventually, run_cli};
use nix::sys::signal::Signal;
use serde_json::json;

const READY: Duration = Duration::from_secs(20);

/// The dead letters by task id.
async fn dead_letters(broker: &TestBroker) -> HashMap<String, warden::amqp::dlq::DeadLetter> {
    let letters = broker.dead_letters().await;
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

/// What became of one poison task among a thousand innocent ones.
struct PoisonRun {
    /// Times the worker process died (it is restarted after each, as
    /// Kubernetes would).
    worker_deaths: usize,
    /// The poison's dead letter.
    letter: warden::amqp::dlq::DeadLetter,
}

/// Puts `poison` in the middle of 1,000 `builtin.noop` tasks, runs a worker at
/// concurrency 64 (restarting it whenever it dies) until every task has
/// ended, and checks that every noop succeeded and nothing but the poison is
/// dead. The broker's delivery limit is as high as it goes, so only warden
/// can end the poison.
async fn one_poison_among_a_thousand(
    test: &str,
    poison: (&str, serde_json::Value),
    wrapper: &[&str],
    extra: &[(&str, &str)],
) -> PoisonRun {
    let broker = TestBroker::with(test, |s| {
        s.delivery_limit = warden::config::BROKER_DELIVERY_LIMIT;
    })
    .await;
    let tap = broker.tap().await;
    let mut noops = broker.publish_many("builtin.noop", json!({}), 500).await;
    let poison_id = broker.publish(poison.0, poison.1).await;
    noops.extend(broker.publish_many("builtin.noop", json!({}), 500).await);
    let mut env = vec![("WARDEN_CONCURRENCY", "64")];
    env.extend_from_slice(extra);

    let mut worker_deaths = 0;
    let mut all: Vec<String> = noops.clone();
    all.push(poison_id.clone());
    let mut worker = broker.spawn_worker_wrapped(wrapper, &env);
    let all_ended = async || {
        let terminal = tap.terminal();
        if all.iter().all(|id| terminal.contains_key(id)) {
            return true;
        }
        if let Some(status) = worker.child.try_wait().unwrap() {
            worker_deaths += 1;
            assert!(
                worker_deaths <= 1,
                "the worker died {worker_deaths} times ({status}); log:\n{}",
                worker.logs()
            );
            worker = broker.spawn_worker_wrapped(wrapper, &env);
        }
        false
    };
    let ended = eventually(Duration::from_secs(120), all_ended).await;
    let terminal = tap.terminal();
    assert!(
        ended,
        "not every task ended within 120 s: {} of {}; log:\n{}",
        all.iter().filter(|id| terminal.contains_key(*id)).count(),
        all.len(),
        worker.logs()
    );
    let endings = tap.endings();
    for id in &noops {
        assert!(
            endings[id].iter().all(|(rk, _)| rk == "task.succeeded"),
            "an innocent task did not simply succeed: {:?}",
            endings[id]
        );
    }
    assert_eq!(
        endings[&poison_id],
        [("task.dead".to_owned(), Some("crashed".to_owned()))]
    );
    let mut dead = dead_letters(&broker).await;
    assert_eq!(dead.len(), 1, "only the poison is dead: {:?}", dead.keys());
    let letter = dead.remove(&poison_id).expect("the poison's dead letter");
    assert_eq!(letter.reason, "crashed");
    PoisonRun {
        worker_deaths,
        letter,
    }
}

#[tokio::test]
async fn a_task_that_aborts_the_process_costs_one_worker_crash_and_no_other_task_its_outcome() {
    let run = one_poison_among_a_thousand("abort", ("builtin.abort", json!({})), &[], &[]).await;
    assert_eq!(run.worker_deaths, 1, "it first ran in the worker itself");
    assert!(run.letter.error.contains("SIGABRT"), "{}", run.letter.error);
}

#[tokio::test]
async fn a_task_that_segfaults_costs_one_worker_crash_and_no_other_task_its_outcome() {
    let run = one_poison_among_a_thousand("segv", ("builtin.segfault", json!({})), &[], &[]).await;
    assert_eq!(run.worker_deaths, 1);
    assert!(run.letter.error.contains("SIGSEGV"), "{}", run.letter.error);
}

#[tokio::test]
async fn a_memory_bomb_under_a_container_limit_dies_alone_in_the_sandbox_as_crashed() {
    // The worker runs under a 1 GiB data limit, as in a container; the bomb
    // kills it once there, then runs where WARDEN_SANDBOX_MEMORY holds it.
    let run = one_poison_among_a_thousand(
        "membomb",
        ("builtin.membomb", json!({"mib": 4096})),
        &["prlimit", "--data=1073741824", "--"],
        &[("WARDEN_SANDBOX_MEMORY", "256MiB")],
    )
    .await;
    assert_eq!(run.worker_deaths, 1);
    assert!(run.letter.error.contains("SIGABRT"), "{}", run.letter.error);
}

#[tokio::test]
async fn a_task_isolated_as_always_never_touches_the_worker_process() {
    let run = one_poison_among_a_thousand(
        "always",
        ("builtin.abort", json!({})),
        &[],
        &[(
            "WARDEN_TASK_TYPES",
            r#"{"builtin.abort"={isolation="always"}}"#,
        )],
    )
    .await;
    assert_eq!(run.worker_deaths, 0);
}

#[tokio::test]
async fn a_handler_that_never_yields_is_killed_in_the_sandbox_and_livez_stays_green() {
    let broker = TestBroker::with("spin", |s| {
        s.task_timeout = Duration::from_secs(1);
        s.retry.base_delay = Duration::from_millis(100);
        s.retry.max_attempts = 2;
    })
    .await;
    let tap = broker.tap().await;
    let worker = broker.spawn_worker(&[
        (
            "WARDEN_TASK_TYPES",
            r#"{"builtin.spin"={isolation="always"}}"#,
        ),
        ("WARDEN_LIVENESS_LIMIT", "1s"),
    ]);
    worker.wait_ready(READY).await;
    let spin = broker.publish("builtin.spin", json!({})).await;
    let others = broker
        .publish_many("builtin.sleep", json!({"ms": 10}), 50)
        .await;
    // Every probe while the spinning task runs and is killed, twice.
    let spin_ended = async || {
        let (status, body) = worker.get("/livez").await.expect("/livez answers");
        assert_eq!(status, 200, "/livez failed while a handler spun: {body}");
        tap.terminal().contains_key(&spin)
    };
    assert!(
        eventually(Duration::from_secs(30), spin_ended).await,
        "the spinning task did not end within 30 s"
    );
    tap.wait_terminal(&others, Duration::from_secs(10)).await;
    assert_eq!(
        tap.endings()[&spin],
        [("task.dead".to_owned(), Some("timeout_exhausted".to_owned()))]
    );
    assert_eq!(tap.count("task.retrying"), 1, "the timeout is transient");
    let dead = dead_letters(&broker).await;
    assert!(
        dead[&spin].error.contains("sandbox"),
        "{}",
        dead[&spin].error
    );
    let metrics = worker.metrics().await;
    assert_eq!(metrics["warden_sandbox_deaths_total"], 2.0, "killed twice");
    assert_eq!(metrics["warden_broker_reconnects_total"], 0.0);
}

#[tokio::test]
async fn a_worker_that_keeps_dying_for_another_reason_ends_the_message_as_delivery_limit() {
    // A long task in flight while the worker is SIGKILLed three times (the
    // node is drained, say): the fourth worker dead-letters it unrun.
    let broker = TestBroker::with("dlimit", |s| s.delivery_limit = 3).await;
    let tap = broker.tap().await;
    let id = broker.publish("builtin.sleep", json!({"ms": 60_000})).await;
    for _ in 0..3 {
        let mut worker = broker.spawn_worker(&[]);
        worker.wait_ready(READY).await;
        assert!(
            eventually(Duration::from_secs(10), async || {
                worker
                    .metrics()
                    .await
                    .get("warden_tasks_in_flight")
                    .is_some_and(|n| *n == 1.0)
            })
            .await,
            "timed out waiting for the task to be running"
        );
        worker.signal(Signal::SIGKILL);
        worker.wait_exit(Duration::from_secs(10)).await;
    }
    let worker = broker.spawn_worker(&[]);
    tap.wait_terminal(std::slice::from_ref(&id), Duration::from_secs(20))
        .await;
    assert_eq!(
        tap.endings()[&id],
        [("task.dead".to_owned(), Some("delivery_limit".to_owned()))]
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
    assert!(worker.ready().await);
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

#[tokio::test]
async fn queues_of_an_older_warden_are_named_in_the_error_and_migrate_keeps_their_messages() {
    use lapin::options::{QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions};
    use lapin::types::{AMQPValue, FieldTable};
    let broker = TestBroker::new("migrate").await;
    let t = &broker.topology;
    // `{p}.tasks` and `{p}.parked` as warden 0.1 declared them, its delivery
    // limit and park time in their arguments, with tasks waiting in them.
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
