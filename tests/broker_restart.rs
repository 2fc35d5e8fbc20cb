//! The broker itself restarts under a working worker (`rabbitmqctl stop_app`
//! then `start_app`). Its own test binary, with this one test: cargo runs test
//! binaries one after another, so no other test sees the broker go away. The
//! broker is started again on every path, a failed assertion included.

#[path = "it/support/mod.rs"]
mod support;

use std::collections::HashSet;
use std::process::Command;
use std::time::Duration;

use lapin::options::{BasicGetOptions, QueueDeleteOptions};
use serde_json::json;
use support::TestBroker;

/// Starts the broker app again when dropped, however the test ends.
struct RestartGuard;

impl RestartGuard {
    fn stop_app() -> Self {
        let guard = Self;
        rabbitmqctl(&["stop_app"]);
        guard
    }
}

impl Drop for RestartGuard {
    fn drop(&mut self) {
        // No assertion here: a panic while unwinding would abort the run
        // before the broker is back. Each step is tried regardless.
        for args in [["start_app"], ["await_startup"]] {
            if let Err(e) = Command::new("rabbitmqctl").args(args).status() {
                eprintln!("rabbitmqctl {args:?}: {e}; start the broker by hand");
            }
        }
    }
}

fn rabbitmqctl(args: &[&str]) {
    let status = Command::new("rabbitmqctl")
        .args(args)
        .status()
        .expect("rabbitmqctl is installed with the broker");
    assert!(status.success(), "rabbitmqctl {args:?}: {status}");
}

/// Ready messages in `queue`, asked on `ch`.
async fn depth(ch: &lapin::Channel, queue: &str) -> u32 {
    support::message_count(ch, queue).await.unwrap_or(0)
}

#[tokio::test]
async fn a_broker_restart_mid_run_loses_no_task_and_the_worker_carries_on_by_itself() {
    const N: usize = 1_000;
    let broker = TestBroker::new("restart").await;
    // A durable record of every success, which outlives the restart (a tap's
    // exclusive queue would not).
    let record = format!("{}.test-succeeded", broker.prefix);
    support::declare_durable_record(
        &broker.ch,
        &record,
        &broker.topology.events(),
        "task.succeeded",
    )
    .await
    .expect("declare the record of successes");
    let worker = broker.spawn_worker(&[("WARDEN_CONCURRENCY", "16")]);
    worker.wait_ready(Duration::from_secs(20)).await;
    let mut ids = HashSet::new();
    for _ in 0..N {
        ids.insert(broker.publish("builtin.sleep", json!({"ms": 5})).await);
    }
    assert!(
        support::eventually(Duration::from_secs(60), async || {
            depth(&broker.ch, &record).await >= 100
        })
        .await,
        "timed out waiting for some work done"
    );

    {
        let _restart = RestartGuard::stop_app();
        assert!(
            support::eventually(Duration::from_secs(30), async || { !worker.ready().await }).await,
            "timed out waiting for /readyz false"
        );
    }
    // The test's own connection died with the broker.
    let (conn, ch) = support::connect().await;
    worker.wait_ready(Duration::from_secs(60)).await;
    assert!(
        support::eventually(Duration::from_secs(120), async || {
            depth(&ch, &record).await as usize >= N
        })
        .await,
        "timed out waiting for every task recorded"
    );

    let mut seen = Vec::new();
    while let Some(m) = ch
        .basic_get(record.as_str().into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
    {
        let event: warden::amqp::events::Event = serde_json::from_slice(&m.delivery.data).unwrap();
        seen.push(event.id);
    }
    let _ = ch
        .queue_delete(record.as_str().into(), QueueDeleteOptions::default())
        .await;
    let unique: HashSet<String> = seen.iter().cloned().collect();
    let lost = ids.difference(&unique).count();
    eprintln!(
        "broker restart: {N} tasks, lost {lost}, duplicates {}",
        seen.len() - unique.len()
    );
    assert_eq!(lost, 0, "tasks lost across the restart");
    // At most what was in flight at the stop runs twice.
    assert!(
        seen.len() - unique.len() <= 16,
        "{} duplicates",
        seen.len() - unique.len()
    );
    assert!(
        broker.dead_letters().await.is_empty(),
        "a restart is not a task's fault"
    );
    let _ = conn.close(200, "bye".into()).await;
    let logs = worker.logs();
    assert!(logs.contains("broker session lost"), "{logs}");
}
