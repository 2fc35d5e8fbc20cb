//! The chaos suite: N tasks with unique ids and a realistic mix, published at
//! a steady rate, run through two real `warden worker` processes and a real
//! `warden reauth` while the test SIGKILLs a worker, cuts and blackholes the
//! workers' connections, has the broker close them, deletes their queues
//! (the broker cancels the consumers), revokes channels' tokens at the
//! simulated provider and kills Chromium in the middle of a re-login, one
//! fault every few seconds.
//!
//! The invariant, checked from `{p}.events` and `{p}.dead`: every published
//! id reaches the terminal state its kind must end in (`task.succeeded`, or
//! dead with the right reason), none is missing, and duplicates (at-least-once
//! redeliveries) stay within the in-flight windows at the faults. Re-auth ran
//! once per revoked token version, and no Chromium or node process outlives
//! the run.
//!
//! `WARDEN_CHAOS_N` sets the size; CI runs the default, `make chaos N=100000`
//! a large one.

#[path = "it/support/mod.rs"]
mod support;

use std::collections::HashMap;
use std::process::Command;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde_json::json;
use support::endings::{Expect, Outcome, assert_dead_letters};
use support::provider_browser;
use support::proxy::TcpProxy;
use support::stack::{PASSWORD, Stack};
use support::{WardenProc, eventually};
use warden::amqp::envelope::Task;

/// Handlers at once per worker.
const CONCURRENCY: usize = 32;
/// Unacknowledged deliveries per worker (its prefetch): the in-flight window.
const PREFETCH: usize = 4 * CONCURRENCY;
const READY: Duration = Duration::from_secs(30);
/// Time between the recovery from one fault and the next fault: a little
/// longer than a session must last to count as healthy.
const SPACING: Duration = Duration::from_secs(warden::amqp::broker::HEALTHY_SESSION.as_secs() + 1);

/// The channels whose tasks call the simulated provider; their tokens get
/// revoked during the run.
const CHANNELS: [&str; 3] = ["chaos-a", "chaos-b", "chaos-c"];

/// A `post.publish` task on `channel`: one API call at the provider.
fn post(channel: &str) -> Task {
    let mut t = Task::new("post.publish", json!({"text": "chaos"}));
    t.channel = Some(channel.to_owned());
    t
}

/// The i-th task of the mix: about 2 % panics (once, then fine), 5 %
/// transient failures that recover, 1 % permanent failures, 1 % malformed
/// bodies, 2 % posts on the channels (parked while a token is revoked, then
/// done), 20 % short sleeps, the rest no-ops.
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
        9 | 10 => (
            Some(post(CHANNELS[(i / 100) % CHANNELS.len()])),
            Expect::Succeeded,
        ),
        11..=30 => (task("builtin.sleep", json!({"ms": 5})), Expect::Succeeded),
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
    /// Revoke a channel's tokens at the provider: its tasks park until the
    /// re-auth consumer has logged in again with the browser.
    Revoke(usize),
    /// Revoke a channel, then SIGKILL Chromium while the login is held
    /// mid-way at the provider: that attempt fails, the next one relaunches.
    KillChromium(usize),
    /// Delete the task and re-auth queues under their consumers, at a quiet
    /// moment (nothing published in flight: a deleted queue drops what is
    /// routed to it), so the broker cancels the consumers.
    Cancel,
}

/// Spread so that every kind of fault meets work in flight.
#[rustfmt::skip]
const FAULTS: [Fault; 22] = {
    use Fault::{Blackhole, BrokerClose, Cancel, Cut, Kill, KillChromium, Revoke};
    [
        Cut, Kill, Revoke(0), Cut, BrokerClose, Cut, Kill, KillChromium(1), Cut, Blackhole, Cut,
        Kill, Cancel, Cut, BrokerClose, Revoke(2), Cut, Kill, Cut, Kill, Cut, Cut,
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
async fn under_kills_cuts_blackholes_cancels_revocations_and_browser_crashes_every_task_ends_as_it_must()
 {
    provider_browser::require_playwright();
    let n: usize = std::env::var("WARDEN_CHAOS_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3_000);
    // Cuts return everything in flight; a task may be in flight at several
    // faults. The delivery limit guards against poison, not under test here.
    let stack = Stack::with_channels("chaos", &CHANNELS, PASSWORD, |s| {
        s.delivery_limit = warden::config::BROKER_DELIVERY_LIMIT;
        s.retry.base_delay = Duration::from_millis(100);
    })
    .await;
    let broker = &stack.broker;
    let provider = &stack.provider.state;
    let tap = broker.tap().await;
    let proxy = TcpProxy::start("127.0.0.1:5672".parse().unwrap()).await;
    let url = proxy.amqp_url();
    let (concurrency, prefetch) = (CONCURRENCY.to_string(), PREFETCH.to_string());
    let worker_env = [
        ("WARDEN_AMQP_URL", url.as_str()),
        ("WARDEN_CONCURRENCY", concurrency.as_str()),
        ("WARDEN_PREFETCH", prefetch.as_str()),
        // A blackhole is noticed within about two heartbeats.
        ("WARDEN_HEARTBEAT", "2s"),
    ];
    let spawn = || stack.spawn(&["worker"], &worker_env);
    // `steady` is never killed (its memory is measured); `expendable` is.
    let steady = spawn();
    let mut expendable = spawn();
    // The re-auth consumer talks to the broker directly: its faults are the
    // browser's. A crashed attempt is retried.
    // A channel may be revoked again soon after its last heal: the throttle
    // against platforms that keep refusing fresh tokens is not under test.
    let mut reauth = stack.spawn(
        &["reauth"],
        &[
            ("WARDEN_REAUTH__MAX_ATTEMPTS", "3"),
            ("WARDEN_REAUTH__MIN_INTERVAL", "0s"),
        ],
    );
    steady.wait_ready(READY).await;
    expendable.wait_ready(READY).await;
    reauth.wait_ready(READY).await;

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
    let started = Instant::now();
    // The producer talks to the broker directly: the faults are the workers'.
    let publisher = warden::amqp::publish::Publisher::connect(&broker.settings)
        .await
        .unwrap();
    // Ids published so far, and a pause for the quiet moment a queue deletion needs.
    let published: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let paused = AtomicBool::new(false);
    let produce = async {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        for batch in batches {
            tick.tick().await;
            while paused.load(Ordering::SeqCst) {
                tick.tick().await;
            }
            let mut tasks = Vec::new();
            let mut ids = Vec::new();
            for (task, id) in batch {
                ids.push(id.clone());
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
            published.lock().unwrap().extend(ids);
        }
    };

    let mut warm_rss = 0;
    let (mut kills, mut cuts, mut blackholes, mut closes) = (0, 0, 0, 0);
    let (mut revocations, mut chromium_kills, mut cancels) = (0, 0, 0);
    let mut revoked = [0_u64; CHANNELS.len()];
    // Posts the faults publish themselves, so a revoked channel surely has work.
    let mut extra: Vec<String> = Vec::new();
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
                    at_risk += PREFETCH;
                }
                Fault::Cut => {
                    proxy.cut();
                    cuts += 1;
                    at_risk += 2 * PREFETCH;
                }
                Fault::Blackhole => {
                    proxy.blackhole(true);
                    // Only heartbeats can tell: wait until both workers noticed.
                    assert!(
                        eventually(Duration::from_secs(30), async || {
                            !steady.ready().await && !expendable.ready().await
                        })
                        .await,
                        "timed out waiting for both workers to notice the silent connection"
                    );
                    proxy.blackhole(false);
                    blackholes += 1;
                    at_risk += 2 * PREFETCH;
                }
                Fault::BrokerClose => {
                    assert_eq!(broker_close(&broker.prefix), 2, "both workers' connections");
                    closes += 1;
                    at_risk += 2 * PREFETCH;
                }
                Fault::Revoke(c) | Fault::KillChromium(c) => {
                    let channel = CHANNELS[c];
                    let logins = provider.stats().logins;
                    let hold = matches!(fault, Fault::KillChromium(_));
                    provider.hold_logins(hold);
                    provider.revoke(channel);
                    revoked[c] += 1;
                    revocations += 1;
                    let t = post(channel);
                    extra.push(t.id.clone());
                    expected.insert(t.id.clone(), Expect::Succeeded);
                    publisher.publish_all(vec![t], 1, || {}).await.unwrap();
                    if hold {
                        assert!(
                            eventually(Duration::from_secs(60), async || provider.logins_on_hold()
                                > 0)
                            .await,
                            "timed out waiting for a browser login held mid-way at the provider"
                        );
                        let chromium: Vec<u32> = provider_browser::browser_descendants()
                            .into_iter()
                            .filter(|(_, comm)| comm.contains("chrom"))
                            .map(|(pid, _)| pid)
                            .collect();
                        assert!(!chromium.is_empty(), "Chromium runs the held login");
                        for pid in chromium {
                            let _ = nix::sys::signal::kill(
                                nix::unistd::Pid::from_raw(pid.cast_signed()),
                                Signal::SIGKILL,
                            );
                        }
                        chromium_kills += 1;
                        // The held request dies with its browser; the next
                        // attempt must find the provider answering again.
                        assert!(
                            eventually(Duration::from_secs(10), async || provider.logins_on_hold()
                                == 0)
                            .await,
                            "timed out waiting for the held login to go away with its browser"
                        );
                        provider.hold_logins(false);
                    }
                    assert!(
                        eventually(Duration::from_secs(90), async || provider.stats().logins
                            > logins)
                        .await,
                        "timed out waiting for the re-auth consumer to log in again"
                    );
                }
                Fault::Cancel => {
                    // A quiet moment: the producer holds back and everything
                    // published so far ends, so no queue holds work.
                    paused.store(true, Ordering::SeqCst);
                    let mut so_far: Vec<String> = published.lock().unwrap().clone();
                    so_far.extend(extra.iter().cloned());
                    tap.wait_terminal(&so_far, Duration::from_secs(120)).await;
                    let cancelled = |p: &WardenProc| {
                        p.logs()
                            .matches("the broker cancelled the consumer")
                            .count()
                    };
                    let seen = [
                        cancelled(&steady),
                        cancelled(&expendable),
                        cancelled(&reauth),
                    ];
                    support::delete_queue(broker, &broker.topology.tasks()).await;
                    support::delete_queue(broker, &broker.topology.reauth()).await;
                    assert!(
                        eventually(READY, async || {
                            cancelled(&steady) > seen[0]
                                && cancelled(&expendable) > seen[1]
                                && cancelled(&reauth) > seen[2]
                        })
                        .await,
                        "timed out waiting for all three consumers to be cancelled"
                    );
                    // Each declares its queue again in its next session.
                    for (queue, consumers) in
                        [(broker.topology.tasks(), 2), (broker.topology.reauth(), 1)]
                    {
                        assert!(
                            eventually(READY, async || {
                                support::consumer_count(&broker.conn, &queue).await
                                    == Some(consumers)
                            })
                            .await,
                            "timed out waiting for the consumers back on their queue"
                        );
                    }
                    paused.store(false, Ordering::SeqCst);
                    cancels += 1;
                }
            }
            if matches!(fault, Fault::Cut | Fault::Blackhole | Fault::BrokerClose) {
                assert!(
                    eventually(READY, async || { proxy.accepted() >= before + 2 }).await,
                    "timed out waiting for both workers to reconnect"
                );
            }
        }
    };
    tokio::join!(produce, inject);
    publisher.close().await;

    let ids: Vec<String> = expected.keys().cloned().collect();
    let limit = Duration::from_secs(120 + (n / 100) as u64);
    tap.wait_terminal(&ids, limit).await;
    let elapsed = started.elapsed();
    let end_rss = vm_rss_kib(steady.pid());

    // Every id ended as its kind must, every time it ended.
    let outcome = Outcome::of(&expected, &tap.endings());

    // Re-auth ran once per revoked token version: one `reauth.succeeded` per
    // `{channel}@{version}`, as many versions per channel as revocations, and
    // no re-auth gave up.
    let mut healed: HashMap<String, usize> = HashMap::new();
    for (rk, e) in tap.events.lock().unwrap().iter() {
        if rk == "reauth.succeeded" {
            *healed.entry(e.id.clone()).or_default() += 1;
        }
    }
    let reauth_failed = tap.count("reauth.failed");
    eprintln!(
        "chaos: {} tasks in {:.1}s: lost {}, wrong {}, duplicates {} \
         (budget {at_risk}); faults: {kills} kills, {cuts} cuts, {blackholes} blackholes, \
         {closes} broker closes, {cancels} consumer cancels, {revocations} token revocations, \
         {chromium_kills} Chromium kills mid-login; re-auths {healed:?}, failed {reauth_failed}; \
         steady worker RSS {} KiB after warm-up, {} KiB at the end",
        ids.len(),
        elapsed.as_secs_f64(),
        outcome.missing,
        outcome.wrong.len(),
        outcome.duplicates,
        warm_rss,
        end_rss
    );
    outcome.assert_within(at_risk);
    assert!(
        end_rss <= 2 * warm_rss,
        "RSS grew from {warm_rss} KiB to {end_rss} KiB"
    );
    assert_eq!(reauth_failed, 0, "no re-auth gave up");
    assert!(
        healed.values().all(|&times| times == 1),
        "one re-auth per revoked version: {healed:?}"
    );
    for (c, channel) in CHANNELS.iter().enumerate() {
        let versions = healed
            .keys()
            .filter(|id| id.starts_with(&format!("{channel}@")))
            .count() as u64;
        assert_eq!(versions, revoked[c], "{channel}: re-auths per revocation");
    }
    let metrics = reauth.metrics().await;
    assert!(
        metrics
            .get(r#"warden_reauth_attempts_total{result="failed",mode="browser"}"#)
            .copied()
            .unwrap_or(0.0)
            >= 1.0,
        "the attempt whose Chromium was killed failed, and the next one healed: {metrics:?}"
    );

    assert_dead_letters(broker, &expected).await;
    for (name, p) in [
        ("steady", &steady),
        ("expendable", &expendable),
        ("reauth", &reauth),
    ] {
        assert!(
            eventually(READY, async || p.ready().await).await,
            "{name} is not ready at the end; its last log lines, newest first:\n{}",
            p.logs()
                .lines()
                .rev()
                .take(20)
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    // No browser outlives the re-auth consumer.
    let browsers = provider_browser::browser_descendants();
    reauth.signal(Signal::SIGTERM);
    let status = reauth.wait_exit(Duration::from_secs(30)).await;
    assert!(status.success(), "{status:?}");
    provider_browser::assert_exited(&browsers, Duration::from_secs(10)).await;
}
