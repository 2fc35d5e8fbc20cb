//! The chaos suite: N tasks with unique ids and a realistic mix, published at
//! a steady rate, run through two real `warden worker` processes while the
//! test SIGKILLs one of them, cuts and blackholes their connections and has
//! the broker close them, one fault every few seconds.
//!
//! The invariant, checked from `{p}.events` and `{p}.dead`: every published
//! id reaches the terminal state its kind must end in (`task.succeeded`, or
//! dead with the right reason), none is missing, and duplicates (at-least-once
//! redeliveries) stay within the in-flight windows at the faults.
//!
//! `WARDEN_CHAOS_N` sets the size; CI runs the default, `make chaos N=100000`
//! a large one.

mod support;

use std::collections::HashMap;
use std::process::Command;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde_json::json;
use support::proxy::TcpProxy;
use support::{TestBroker, WardenProc, wait_for};
use warden::envelope::Task;

/// Tasks at once per worker (also its prefetch): the in-flight window.
const CONCURRENCY: usize = 32;
const READY: Duration = Duration::from_secs(30);
/// Time between the recovery from one fault and the next fault: a little
/// longer than a session must last to count as healthy.
const SPACING: Duration = Duration::from_secs(warden::broker::HEALTHY_SESSION.as_secs() + 1);

/// How a task must end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Succeeded,
    Dead(&'static str),
}

/// The i-th task of the mix: about 2 % panics (once, then fine), 5 %
/// transient failures that recover, 1 % permanent failures, 1 % malformed
/// bodies, 20 % short sleeps, the rest no-ops.
fn mix(i: usize) -> (Option<Task>, Expect) {
    let task = |kind: &str, payload| Some(Task::new(kind, payload));
    match i % 100 {
        0 | 1 => (
            task("builtin.panic", json!({"times": 1})),
            Expect::Succeeded,
        ),
        2..=6 => (
            task("builtin.fail", json!({"times": 2, "kind": "transient"})),
            Expect::Succeeded,
        ),
        7 => (
            task("builtin.fail", json!({"times": 1, "kind": "permanent"})),
            Expect::Dead("permanent"),
        ),
        8 => (None, Expect::Dead("malformed")),
        9..=28 => (task("builtin.sleep", json!({"ms": 5})), Expect::Succeeded),
        _ => (task("builtin.noop", json!({})), Expect::Succeeded),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// SIGKILL the expendable worker mid-task and start a new one.
    Kill,
    /// Reset every connection through the proxy.
    Cut,
    /// Drop traffic silently (no RST) for longer than the heartbeat.
    Blackhole,
    /// `rabbitmqctl close_connection` on the workers' connections.
    BrokerClose,
}

/// Spread so that every kind of fault meets work in flight.
#[rustfmt::skip]
const FAULTS: [Fault; 18] = {
    use Fault::{Blackhole, BrokerClose, Cut, Kill};
    [
        Cut, Kill, Cut, BrokerClose, Cut, Kill, Cut, Blackhole, Cut, Kill, Cut, BrokerClose,
        Cut, Kill, Cut, Kill, Cut, Cut,
    ]
};

fn vm_rss_kib(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Has the broker close every connection of this prefix's workers; returns how many.
fn broker_close(prefix: &str) -> usize {
    // The name warden sets lives in the client properties (`connection_name`).
    let out = Command::new("rabbitmqctl")
        .args(["list_connections", "-q", "pid", "client_properties"])
        .output()
        .expect("rabbitmqctl is installed with the broker");
    let needle = format!("\"warden-worker.{prefix}@");
    let mut closed = 0;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some((pid, properties)) = line.split_once('\t') else {
            continue;
        };
        if properties.contains(&needle) {
            let status = Command::new("rabbitmqctl")
                .args(["close_connection", pid, "chaos test"])
                .status()
                .unwrap();
            assert!(status.success(), "close_connection {pid}");
            closed += 1;
        }
    }
    closed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_kills_cuts_blackholes_and_broker_closes_every_task_ends_exactly_as_it_must() {
    let n: usize = std::env::var("WARDEN_CHAOS_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3_000);
    // Cuts return everything in flight; a task may be in flight at several
    // faults. The delivery limit guards against poison, not under test here.
    let broker = TestBroker::with("chaos", |s| {
        s.delivery_limit = 50;
        s.retry.base_delay = Duration::from_millis(100);
    })
    .await;
    let tap = broker.tap().await;
    let proxy = TcpProxy::start("127.0.0.1:5672".parse().unwrap()).await;
    let url = proxy.amqp_url();
    let concurrency = CONCURRENCY.to_string();
    let mut env = broker.env();
    env.extend([
        ("WARDEN_AMQP_URL".to_owned(), url.clone()),
        ("WARDEN_CONCURRENCY".to_owned(), concurrency.clone()),
        // A blackhole is noticed within about two heartbeats.
        ("WARDEN_HEARTBEAT".to_owned(), "2s".to_owned()),
    ]);
    let spawn = || WardenProc::spawn(&["worker"], &env);
    // `steady` is never killed (its memory is measured); `expendable` is.
    let steady = spawn();
    let mut expendable = spawn();
    steady.wait_ready(READY).await;
    expendable.wait_ready(READY).await;

    let mut expected: HashMap<String, Expect> = HashMap::new();
    let mut batches: Vec<Vec<(Option<Task>, String)>> = Vec::new();
    // Work flows during every fault: the producer spreads the tasks over as
    // long as the faults take, in batches ten times a second.
    let ticks = (FAULTS.len() as u32 * SPACING.as_millis() as u32 / 100).max(1) as usize;
    let per_tick = n.div_ceil(ticks);
    for i in 0..n {
        if i % per_tick == 0 {
            batches.push(Vec::new());
        }
        let (task, expect) = mix(i);
        let id = task
            .as_ref()
            .map_or_else(|| format!("malformed-{i}"), |t| t.id.clone());
        expected.insert(id.clone(), expect);
        batches.last_mut().unwrap().push((task, id));
    }
    let ids: Vec<String> = expected.keys().cloned().collect();
    let started = Instant::now();
    // The producer talks to the broker directly: the faults are the workers'.
    let publisher = warden::publish::Publisher::connect(&broker.settings)
        .await
        .unwrap();
    let produce = async {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        for batch in batches {
            tick.tick().await;
            let mut tasks = Vec::new();
            for (task, id) in batch {
                match task {
                    Some(t) => tasks.push(t),
                    None => {
                        broker
                            .publish_raw("builtin.noop", b"{\"id\": \"cut short\", \"type\"", &id)
                            .await;
                    }
                }
            }
            publisher.publish_all(tasks, 256, || {}).await.unwrap();
        }
    };

    let mut warm_rss = 0;
    let (mut kills, mut cuts, mut blackholes, mut closes) = (0, 0, 0, 0);
    let mut at_risk = 0; // tasks in flight at the faults: the duplicate budget
    let inject = async {
        for fault in FAULTS {
            // Each session gets to run long enough to count as healthy, as on a
            // flaky network rather than a dead one; then the next fault hits.
            tokio::time::sleep(SPACING).await;
            if warm_rss == 0 {
                warm_rss = vm_rss_kib(steady.pid());
            }
            let before = proxy.accepted();
            match fault {
                Fault::Kill => {
                    expendable.signal(Signal::SIGKILL);
                    expendable.wait_exit(Duration::from_secs(10)).await;
                    expendable = spawn();
                    expendable.wait_ready(READY).await;
                    kills += 1;
                    at_risk += CONCURRENCY;
                }
                Fault::Cut => {
                    proxy.cut();
                    cuts += 1;
                    at_risk += 2 * CONCURRENCY;
                }
                Fault::Blackhole => {
                    proxy.blackhole(true);
                    // Only heartbeats can tell: wait until both workers noticed.
                    support::eventually(
                        Duration::from_secs(30),
                        "both workers to notice the silent connection",
                        || async { !steady.ready().await && !expendable.ready().await },
                    )
                    .await;
                    proxy.blackhole(false);
                    blackholes += 1;
                    at_risk += 2 * CONCURRENCY;
                }
                Fault::BrokerClose => {
                    assert_eq!(broker_close(&broker.prefix), 2, "both workers' connections");
                    closes += 1;
                    at_risk += 2 * CONCURRENCY;
                }
            }
            if fault != Fault::Kill {
                wait_for(READY, "both workers to reconnect", || {
                    proxy.accepted() >= before + 2
                })
                .await;
            }
        }
    };
    tokio::join!(produce, inject);
    publisher.close().await;

    let limit = Duration::from_secs(120 + (n / 100) as u64);
    tap.wait_terminal(&ids, limit).await;
    let elapsed = started.elapsed();
    let end_rss = vm_rss_kib(steady.pid());

    // Every id ended as its kind must, every time it ended.
    let endings = tap.endings();
    let missing = ids.iter().filter(|id| !endings.contains_key(*id)).count();
    let mut wrong = Vec::new();
    for (id, expect) in &expected {
        for (rk, reason) in endings.get(id).into_iter().flatten() {
            let ok = match expect {
                Expect::Succeeded => rk == "task.succeeded",
                Expect::Dead(why) => rk == "task.dead" && reason.as_deref() == Some(*why),
            };
            if !ok {
                wrong.push(format!("{id}: expected {expect:?}, got {rk} {reason:?}"));
            }
        }
    }
    let duplicates: usize = endings.values().map(|e| e.len() - 1).sum();
    eprintln!(
        "chaos: {n} tasks in {:.1}s: lost {missing}, wrong {}, duplicates {duplicates} \
         (budget {at_risk}); faults: {kills} kills, {cuts} cuts, {blackholes} blackholes, \
         {closes} broker closes; steady worker RSS {} KiB after warm-up, {} KiB at the end",
        elapsed.as_secs_f64(),
        wrong.len(),
        warm_rss,
        end_rss
    );
    assert_eq!(missing, 0, "lost tasks");
    assert!(wrong.is_empty(), "{:#?}", &wrong[..wrong.len().min(10)]);
    assert!(
        duplicates <= at_risk,
        "duplicates {duplicates} over the in-flight windows {at_risk}"
    );
    assert!(
        end_rss <= 2 * warm_rss,
        "RSS grew from {warm_rss} KiB to {end_rss} KiB"
    );

    // The dead-letter queue holds exactly the tasks that had to die, with
    // their reasons, and nothing that had to succeed.
    let dq = warden::dlq::DeadQueue::open(&broker.settings)
        .await
        .unwrap();
    let dead = dq.list(None).await.unwrap();
    dq.close().await;
    let mut dead_ids: HashMap<&str, &str> = HashMap::new();
    for d in &dead {
        dead_ids.insert(d.id.as_str(), d.reason.as_str());
    }
    for (id, expect) in &expected {
        match expect {
            Expect::Succeeded => assert!(!dead_ids.contains_key(id.as_str()), "{id} is dead"),
            Expect::Dead(why) => assert_eq!(dead_ids.get(id.as_str()), Some(why), "{id}"),
        }
    }
    assert!(steady.ready().await && expendable.ready().await);
}
