//! A task that kills or hangs its process: one crash at most, then the
//! sandbox; and a worker that keeps dying for another reason.

use std::time::Duration;

use nix::sys::signal::Signal;
use serde_json::json;

use super::{READY, dead_letters};
use crate::support::{TestBroker, eventually, run_cli};

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
