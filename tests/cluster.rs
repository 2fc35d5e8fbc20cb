//! warden on a real three-node RabbitMQ cluster (`scripts/cluster.sh`, started
//! here when it is not running and stopped again on every path): a steady
//! producer, two workers and `warden reauth`, all given the three nodes'
//! addresses; the node leading `{p}.tasks` is SIGKILLed mid-run and brought
//! back, then the node leading a retry queue while tasks retry, then every
//! node is restarted in turn (a rolling upgrade).
//!
//! The invariant, checked from a durable quorum tap on `{p}.events` (so the
//! tap itself loses nothing when its node goes) and from `{p}.dead`: every id
//! ends as its kind must, none is lost, duplicates stay within the in-flight
//! windows at the faults, and every process is ready again within
//! [`READY_BOUND`] of each fault. It prints the figures.
//!
//! `WARDEN_CLUSTER_CHAOS_N` sets the size; CI runs the default,
//! `make cluster-chaos N=…` a larger one. Its own test binary, so its cluster
//! and broker override touch no other test. What a cluster asks of the
//! client and one broker can show (a nacked publish, a list of addresses) is
//! tested in `tests/it/cluster_client.rs`.

#[path = "it/support/mod.rs"]
mod support;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};
use serde_json::json;
use support::endings::{Endings, Expect, Outcome, assert_dead_letters};
use support::provider_browser;
use support::stack::{PASSWORD, Stack};
use support::{WardenProc, eventually};
use warden::amqp::envelope::Task;
use warden::amqp::events::Event;

/// Handlers at once per worker.
const CONCURRENCY: usize = 32;
/// Unacknowledged deliveries per worker: the in-flight window.
const PREFETCH: usize = 4 * CONCURRENCY;
/// Every process must be ready again this soon after a fault, node restart
/// included: the bound this test states and holds warden to.
const READY_BOUND: Duration = Duration::from_secs(30);

/// The cluster of `scripts/cluster.sh`, stopped on drop if this test started it.
struct Cluster {
    script: PathBuf,
    started_here: bool,
    url: String,
}

impl Cluster {
    fn script(script: &PathBuf, args: &[&str]) -> String {
        let out = Command::new("bash")
            .arg(script)
            .args(args)
            .output()
            .expect("bash runs scripts/cluster.sh");
        assert!(
            out.status.success(),
            "cluster.sh {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    fn up() -> Self {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/cluster.sh");
        let running = Command::new("bash")
            .arg(&script)
            .arg("status")
            .output()
            .is_ok_and(|o| o.status.success());
        let url = Self::script(&script, &["start"]);
        Self {
            script,
            started_here: !running,
            url,
        }
    }

    fn run(&self, args: &[&str]) -> String {
        Self::script(&self.script, args)
    }

    /// The node (1-3) leading quorum queue `queue`.
    fn leader(&self, queue: &str) -> String {
        self.run(&["leader", queue])
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.started_here {
            let _ = Command::new("bash").arg(&self.script).arg("stop").status();
        }
    }
}

/// The i-th task: 10 % transient failures that recover through the retry
/// queues (so copies are in flight when a retry queue's leader dies), 1 %
/// permanent failures, 1 % panics once, 20 % short sleeps, the rest no-ops.
fn mix(i: usize) -> (Task, Expect) {
    let task = |kind: &str, payload| Task::new(kind, payload);
    match i % 100 {
        0..=9 => (
            task("builtin.fail", json!({"times": 1, "kind": "transient"})),
            Expect::Succeeded,
        ),
        10 => (
            task("builtin.fail", json!({"times": 1, "kind": "permanent"})),
            Expect::Dead("permanent"),
        ),
        11 => (
            task("builtin.panic", json!({"times": 1})),
            Expect::Succeeded,
        ),
        12..=31 => (task("builtin.sleep", json!({"ms": 5})), Expect::Succeeded),
        _ => (task("builtin.noop", json!({})), Expect::Succeeded),
    }
}

/// Terminal events per task id, from a durable quorum queue bound to
/// `{p}.events`: the tap reconnects to a live node whenever its own dies,
/// and the queue keeps what arrived meanwhile. A message redelivered to the
/// tap after a lost ack is recognised by its identical body and counted once.
#[derive(Clone, Default)]
struct Tap {
    endings: Arc<Mutex<Endings>>,
}

impl Tap {
    async fn start(urls: &str, exchange: String, queue: String) -> Self {
        let tap = Self::default();
        let endings = tap.endings.clone();
        let urls: Vec<String> = warden::config::addresses(urls)
            .into_iter()
            .map(str::to_owned)
            .collect();
        let (declared_tx, declared_rx) = tokio::sync::oneshot::channel();
        let mut declared_tx = Some(declared_tx);
        tokio::spawn(async move {
            let mut seen: HashSet<Vec<u8>> = HashSet::new();
            for attempt in 0_usize.. {
                let url = &urls[attempt % urls.len()];
                let Ok(conn) = Connection::connect(url, ConnectionProperties::default()).await
                else {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                };
                let Ok(mut consumer) = Self::consume(&conn, &exchange, &queue).await else {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                };
                if let Some(tx) = declared_tx.take() {
                    let _ = tx.send(());
                }
                while let Some(Ok(d)) = consumer.next().await {
                    let rk = d.routing_key.to_string();
                    if (rk == "task.succeeded" || rk == "task.dead")
                        && seen.insert(d.data.clone())
                        && let Ok(e) = serde_json::from_slice::<Event>(&d.data)
                    {
                        endings
                            .lock()
                            .unwrap()
                            .entry(e.id)
                            .or_default()
                            .push((rk, e.reason));
                    }
                    if d.ack(BasicAckOptions::default()).await.is_err() {
                        break;
                    }
                }
            }
        });
        declared_rx.await.expect("the tap declared its queue");
        tap
    }

    async fn consume(
        conn: &Connection,
        exchange: &str,
        queue: &str,
    ) -> lapin::Result<lapin::Consumer> {
        let ch = conn.create_channel().await?;
        support::declare_durable_record(&ch, queue, exchange, "task.*").await?;
        ch.basic_qos(1000, BasicQosOptions::default()).await?;
        ch.basic_consume(
            queue.into(),
            "cluster-tap".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
    }

    fn endings(&self) -> Endings {
        self.endings.lock().unwrap().clone()
    }

    fn ended(&self, ids: &[String]) -> bool {
        let e = self.endings.lock().unwrap();
        ids.iter().all(|id| e.contains_key(id))
    }
}

/// Waits until every process reports ready; returns how long that took.
async fn all_ready(procs: &[&WardenProc], what: &str) -> Duration {
    let t0 = Instant::now();
    let ready = async || {
        for p in procs {
            if !p.ready().await {
                return false;
            }
        }
        true
    };
    assert!(
        eventually(2 * READY_BOUND, ready).await,
        "not every process is ready {:?} after {what}",
        t0.elapsed()
    );
    t0.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_three_node_cluster_a_leader_killed_and_a_rolling_restart_lose_no_task() {
    provider_browser::require_playwright();
    let n: usize = std::env::var("WARDEN_CLUSTER_CHAOS_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3_000);
    let cluster = Cluster::up();
    support::use_broker(&cluster.url);
    let stack = Stack::with_channels("cluster", &["cluster-a"], PASSWORD, |s| {
        // Node losses return what is in flight; poison is not under test.
        s.delivery_limit = warden::config::BROKER_DELIVERY_LIMIT;
        s.retry.base_delay = Duration::from_millis(500);
    })
    .await;
    let broker = &stack.broker;
    let topology = &broker.topology;
    let tap = Tap::start(
        &cluster.url,
        topology.events(),
        format!("{}.cluster-tap", broker.prefix),
    )
    .await;
    let (concurrency, prefetch) = (CONCURRENCY.to_string(), PREFETCH.to_string());
    let worker_env = [
        ("WARDEN_CONCURRENCY", concurrency.as_str()),
        ("WARDEN_PREFETCH", prefetch.as_str()),
        ("WARDEN_HEARTBEAT", "2s"),
    ];
    let workers = [
        stack.spawn(&["worker"], &worker_env),
        stack.spawn(&["worker"], &worker_env),
    ];
    let reauth = stack.spawn(&["reauth"], &[]);
    let procs = [&workers[0], &workers[1], &reauth];
    all_ready(&procs, "start").await;
    // warden leaves the replica count to the broker (x-quorum-initial-group-size
    // unset): every queue it declares, retry and dead-letter paths included, has
    // a replica on each of the three nodes, so any one node can go.
    for queue in [
        topology.tasks(),
        topology.retry_queue(0),
        topology.parked(),
        topology.dead(),
        topology.reauth(),
    ] {
        assert_eq!(
            cluster.run(&["members", &queue]),
            "3",
            "replicas of {queue}"
        );
    }

    let mut expected: HashMap<String, Expect> = HashMap::new();
    let mut batches: Vec<Vec<Task>> = Vec::new();
    // Spread over about 40 s, in batches ten times a second: work flows
    // during every fault.
    let per_tick = n.div_ceil(400);
    for i in 0..n {
        if i % per_tick == 0 {
            batches.push(Vec::new());
        }
        let (task, expect) = mix(i);
        expected.insert(task.id.clone(), expect);
        batches.last_mut().unwrap().push(task);
    }
    let started = Instant::now();
    let republished = Mutex::new(0_usize);
    // The steady producer: a batch whose confirms did not all come is
    // published again whole, on a new connection to a live node.
    let produce = async {
        let mut publisher = None;
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        for batch in batches {
            tick.tick().await;
            let mut tries = 0;
            loop {
                if publisher.is_none() {
                    publisher = warden::amqp::publish::Publisher::connect(&broker.settings)
                        .await
                        .ok();
                }
                let Some(p) = publisher.as_ref() else {
                    tries += 1;
                    assert!(tries < 300, "no node took the producer for 30 s");
                    tick.tick().await;
                    continue;
                };
                if p.publish_all(batch.clone(), 256, || {}).await.is_ok() {
                    break;
                }
                *republished.lock().unwrap() += batch.len();
                publisher = None;
            }
        }
        if let Some(p) = publisher {
            p.close().await;
        }
    };

    let mut figures: Vec<String> = Vec::new();
    let mut faults = 0;
    let inject = async {
        // Let work build up so the faults meet tasks in flight and retrying.
        tokio::time::sleep(Duration::from_secs(5)).await;
        for (what, queue) in [
            ("leader of {p}.tasks SIGKILLed", topology.tasks()),
            ("leader of a retry queue SIGKILLed", topology.retry_queue(0)),
        ] {
            let node = cluster.leader(&queue);
            let t0 = Instant::now();
            cluster.run(&["kill", &node]);
            let ready = all_ready(&procs, what).await;
            figures.push(format!("{what} (node {node}): ready in {ready:.2?}"));
            eprintln!("cluster chaos: {}", figures.last().unwrap());
            assert!(ready <= READY_BOUND, "{what}: ready after {ready:?}");
            cluster.run(&["start-node", &node]);
            let back = all_ready(&procs, "the node's return").await;
            figures.push(format!(
                "node {node} back after {:.1?}, all ready {back:.2?} later",
                t0.elapsed()
            ));
            faults += 1;
        }
        for node in ["1", "2", "3"] {
            let t0 = Instant::now();
            cluster.run(&["restart", node]);
            let ready = all_ready(&procs, "a rolling restart").await;
            figures.push(format!(
                "rolling restart of node {node}: {:.1?}, all ready {ready:.2?} after it",
                t0.elapsed()
            ));
            assert!(
                ready <= READY_BOUND,
                "node {node} restart: ready after {ready:?}"
            );
            faults += 1;
        }
    };
    tokio::join!(produce, inject);

    let ids: Vec<String> = expected.keys().cloned().collect();
    let limit = Duration::from_secs(120 + (n / 100) as u64);
    // Lost tasks are counted below, so a timeout here is not a failure yet.
    let _all_ended = eventually(limit, async || tap.ended(&ids)).await;
    let elapsed = started.elapsed();
    let outcome = Outcome::of(&expected, &tap.endings());
    let republished = *republished.lock().unwrap();
    // Each fault may return both workers' windows; a republished batch may
    // run twice.
    let budget = faults * 2 * PREFETCH + republished;
    let nack_retries: usize = workers
        .iter()
        .map(|w| w.logs().matches("retrying on the same channel").count())
        .sum();
    eprintln!(
        "cluster chaos: {} tasks in {:.1}s: lost {}, wrong {}, duplicates {} \
         (budget {budget}: {faults} faults x 2 x prefetch {PREFETCH} + {republished} republished); \
         nacked copies retried on the same channel: {nack_retries}; ready bound {READY_BOUND:?}",
        ids.len(),
        elapsed.as_secs_f64(),
        outcome.missing,
        outcome.wrong.len(),
        outcome.duplicates,
    );
    for f in &figures {
        eprintln!("cluster chaos:   {f}");
    }
    outcome.assert_within(budget);

    // `{p}.dead` holds exactly the tasks that had to die, with their reasons.
    assert_dead_letters(broker, &expected).await;
    all_ready(&procs, "the run").await;
    let (conn, ch) = support::connect().await;
    let _ = ch
        .queue_delete(
            format!("{}.cluster-tap", broker.prefix).as_str().into(),
            lapin::options::QueueDeleteOptions::default(),
        )
        .await;
    let _ = conn.close(200, "".into()).await;
}
