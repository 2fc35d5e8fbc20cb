//! No task is lost when connections die or several workers share a queue.

use std::collections::HashMap;
use std::time::Duration;

use crate::support;
use crate::support::proxy::TcpProxy;
use crate::support::{TestBroker, eventually, run_cli};
use serde_json::json;

const READY: Duration = Duration::from_secs(20);

/// Every id reached a terminal state; returns how many terminal events were
/// duplicates (at-least-once redeliveries).
fn check_no_loss(terminal: &HashMap<String, Vec<String>>, ids: &[String]) -> usize {
    let missing: Vec<&String> = ids
        .iter()
        .filter(|id| !terminal.contains_key(*id))
        .collect();
    assert!(
        missing.is_empty(),
        "{} tasks lost, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    ids.iter().map(|id| terminal[id].len() - 1).sum()
}

#[tokio::test]
async fn cutting_the_connection_five_times_loses_no_task() {
    let broker = TestBroker::new("cuts").await;
    let tap = broker.tap().await;
    let proxy = TcpProxy::start("127.0.0.1:5672".parse().unwrap()).await;
    let url = proxy.amqp_url();
    let worker = broker.spawn_worker(&[
        ("WARDEN_AMQP_URL", url.as_str()),
        ("WARDEN_CONCURRENCY", "32"),
        ("WARDEN_PREFETCH", "128"),
    ]);
    worker.wait_ready(READY).await;

    let mut ids = Vec::new();
    for i in 0..2000 {
        let payload = if i % 4 == 0 {
            json!({"ms": 2})
        } else {
            json!({})
        };
        let kind = if i % 4 == 0 {
            "builtin.sleep"
        } else {
            "builtin.noop"
        };
        ids.push(broker.publish(kind, payload).await);
    }
    for cut in 1..=5 {
        // Cut while work is flowing: after each further ~300 settled tasks.
        assert!(
            eventually(Duration::from_secs(60), async || tap.terminal().len()
                >= cut * 300)
            .await,
            "timed out waiting for progress before the next cut"
        );
        proxy.cut();
        // The worker saw this cut as a lost session before the next one:
        // counting proxy connections is not enough, since every connect also
        // opens a short probe, and a cut during a handshake would be a failed
        // connect rather than a lost session.
        assert!(
            eventually(Duration::from_secs(30), async || {
                reconnects(&worker).await >= cut as f64
            })
            .await,
            "timed out waiting for the worker to count the cut"
        );
        // Consuming again, not just connected.
        worker.wait_ready(READY).await;
    }
    tap.wait_terminal(&ids, Duration::from_secs(120)).await;
    let dups = check_no_loss(&tap.terminal(), &ids);
    eprintln!("2000 tasks, 5 cuts: lost 0, duplicates {dups}");
    assert!(proxy.accepted() >= 6, "reconnected after every cut");
    assert!(
        dups <= 5 * 128,
        "duplicates stay within the in-flight window (the prefetch) at each cut: {dups}"
    );
    worker.wait_ready(READY).await;
    let reconnects = reconnects(&worker).await;
    assert!(
        reconnects >= 5.0,
        "every cut counted as a reconnect: {reconnects}"
    );
}

/// The worker's own count of lost broker sessions.
async fn reconnects(worker: &support::WardenProc) -> f64 {
    worker
        .metrics()
        .await
        .get("warden_broker_reconnects_total")
        .copied()
        .expect("reconnect counter exported")
}

#[tokio::test]
async fn a_consumer_the_broker_cancels_declares_its_queue_again_and_goes_on() {
    let broker = TestBroker::new("cancelled").await;
    let tap = broker.tap().await;
    let worker = broker.spawn_worker(&[]);
    worker.wait_ready(READY).await;
    let first = broker.publish("builtin.noop", json!({})).await;
    tap.wait_terminal(std::slice::from_ref(&first), READY).await;

    // Deleting the queue makes the broker cancel its consumers (as does the
    // loss of a quorum queue's leader): the worker gets `basic.cancel`, and
    // its next session declares the queue again.
    let tasks = broker.topology.tasks();
    support::delete_queue(&broker, &tasks).await;
    assert!(
        eventually(READY, async || {
            worker.logs().contains("the broker cancelled the consumer")
        })
        .await,
        "timed out waiting for the cancellation to be noticed"
    );
    assert!(
        eventually(READY, async || {
            support::consumer_count(&broker.conn, &tasks).await == Some(1)
        })
        .await,
        "timed out waiting for the worker consuming its queue again"
    );
    let second = broker.publish("builtin.noop", json!({})).await;
    tap.wait_terminal(std::slice::from_ref(&second), READY)
        .await;
    assert_eq!(tap.terminal()[&second], ["task.succeeded"]);
    assert!(worker.ready().await, "ready again");
    let metrics = worker.metrics().await;
    assert!(
        metrics["warden_broker_reconnects_total"] >= 1.0,
        "counted as a reconnect: {metrics:?}"
    );
}

#[tokio::test]
async fn three_workers_on_one_queue_process_three_thousand_tasks_without_loss() {
    let broker = TestBroker::new("three").await;
    let tap = broker.tap().await;
    let workers: Vec<_> = (0..3)
        .map(|_| broker.spawn_worker(&[("WARDEN_CONCURRENCY", "16")]))
        .collect();
    for w in &workers {
        w.wait_ready(READY).await;
    }
    let mut ids = Vec::new();
    for _ in 0..3000 {
        ids.push(broker.publish("builtin.sleep", json!({"ms": 1})).await);
    }
    tap.wait_terminal(&ids, Duration::from_secs(120)).await;
    let dups = check_no_loss(&tap.terminal(), &ids);
    assert_eq!(dups, 0, "no connection was lost, so no task ran twice");
    for w in &workers {
        let (_, metrics) = w.get("/metrics").await.unwrap();
        assert!(
            metrics.contains("warden_tasks_total{type=\"builtin.sleep\",outcome=\"succeeded\"}"),
            "every worker took a share"
        );
    }
}

#[tokio::test]
async fn dlq_replay_brings_back_exactly_the_matching_dead_letters_and_list_changes_nothing() {
    let broker = TestBroker::new("replay").await;
    let tap = broker.tap().await;
    let mut worker = broker.spawn_worker(&[]);
    worker.wait_ready(READY).await;
    let mut ids = Vec::new();
    for _ in 0..100 {
        ids.push(
            broker
                .publish("builtin.fail", json!({"times": 1, "kind": "permanent"}))
                .await,
        );
    }
    for _ in 0..5 {
        ids.push(broker.publish("no.such.type", json!({})).await);
    }
    tap.wait_terminal(&ids, Duration::from_secs(30)).await;
    worker.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(worker.wait_exit(Duration::from_secs(10)).await.success());

    let env = [("WARDEN_PREFIX", broker.prefix.as_str())];
    let (code, first, err) = run_cli(&["dlq", "list", "--json", "--limit", "1000"], &env);
    assert_eq!(code, 0, "{err}");
    let (_, second, _) = run_cli(&["dlq", "list", "--json", "--limit", "1000"], &env);
    assert_eq!(first, second, "listing neither loses nor reorders");
    assert_eq!(first.lines().count(), 105);
    // Back to back in one process, before the broker has applied the previous
    // listing's returns, every letter is still seen.
    for round in 0..3 {
        let listed = broker.dead_letters().await.len();
        assert_eq!(listed, 105, "listing {round} right after another");
    }
    // The broker counts returned messages as ready again once it has processed
    // the returns, a moment after the CLI exits.
    broker
        .assert_queue_len(&broker.topology.dead(), 105, Duration::from_secs(5))
        .await;

    let (code, out, err) = run_cli(
        &["dlq", "replay", "--reason", "permanent", "--dry-run"],
        &env,
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("would replay 100"), "{out}");
    broker
        .assert_queue_len(&broker.topology.dead(), 105, Duration::from_secs(5))
        .await;

    let (code, out, err) = run_cli(&["dlq", "replay", "--reason", "permanent"], &env);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("replayed 100"), "{out}");
    assert_eq!(broker.queue_len(&broker.topology.tasks()).await, 100);
    broker
        .assert_queue_len(&broker.topology.dead(), 5, Duration::from_secs(5))
        .await;

    // Replayed tasks start again at attempt 1.
    let ch = broker.conn.create_channel().await.unwrap();
    let msg = ch
        .basic_get(
            broker.topology.tasks().into(),
            lapin::options::BasicGetOptions { no_ack: false },
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        warden::amqp::envelope::attempt_of(msg.delivery.properties.headers().as_ref()),
        1
    );
    drop(ch);

    let (code, _, err) = run_cli(&["dlq", "purge", "--type", "no.such.type"], &env);
    assert_ne!(code, 0, "purge without a terminal or --yes refuses");
    assert!(err.contains("--yes"), "{err}");
    let (code, out, _) = run_cli(&["dlq", "purge", "--type", "no.such.type", "--yes"], &env);
    assert_eq!(code, 0);
    assert!(out.contains("deleted 5"), "{out}");
    broker
        .assert_queue_len(&broker.topology.dead(), 0, Duration::from_secs(5))
        .await;
}
