//! What exporting traces costs: tasks/s of the real `warden worker` binary at
//! concurrency 64 on `builtin.noop`, with OTLP export on (100 % sampled, to a
//! gRPC collector in this process) against export off, alternating in one run.
//!
//! ```text
//! cargo bench --bench tracing_overhead
//! WARDEN_BENCH_TASKS=50000 WARDEN_BENCH_ROUNDS=5 cargo bench --bench tracing_overhead
//! ```
//!
//! Each run preloads the queue of a fresh prefix, starts a worker, and times
//! the drain from the moment the worker is ready (by its own
//! `warden_tasks_total` counter). With export on, the worker is stopped with
//! SIGTERM so it flushes, and every span is counted: one `process` span per
//! task (a lifecycle event carries its context but has no span of its own).
//! The collector shares the machine's cores with the broker and the worker, so
//! the ratio is a pessimistic one.

#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use fake_opentelemetry_collector::FakeCollectorServer;
use lapin::BasicProperties;
use lapin::options::BasicPublishOptions;
use support::TestBroker;

const SPANS_PER_TASK: usize = 1;

fn env_usize(key: &str, default: usize) -> usize {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Publishes `n` noop tasks with pipelined confirms.
async fn preload(broker: &TestBroker, n: usize) {
    let mut pending = Vec::with_capacity(1000);
    for i in 0..n {
        let id = format!("bench-{i}");
        let body = format!(r#"{{"id":"{id}","type":"builtin.noop","payload":{{}}}}"#);
        let confirm = broker
            .ch
            .basic_publish(
                broker.topology.tasks().into(),
                "builtin.noop".into(),
                BasicPublishOptions::default(),
                body.as_bytes(),
                BasicProperties::default()
                    .with_content_type("application/json".into())
                    .with_delivery_mode(2)
                    .with_message_id(id.as_str().into()),
            )
            .await
            .expect("publish");
        pending.push(confirm);
        if pending.len() == 1000 {
            for c in pending.drain(..) {
                c.await.expect("confirm");
            }
        }
    }
    for c in pending {
        c.await.expect("confirm");
    }
}

/// CPU time (user + system) a process has used so far, from `/proc`.
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the `(comm)`, which may hold spaces: state is field 3, utime 14, stime 15.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|v| v.parse().ok())
        .collect();
    f.iter().sum::<u64>() as f64 / 100.0
}

/// The broker's process (`beam.smp`), if it runs on this machine.
fn broker_pid() -> Option<u32> {
    std::fs::read_dir("/proc").ok()?.find_map(|e| {
        let pid: u32 = e.ok()?.file_name().to_str()?.parse().ok()?;
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
        (comm.trim() == "beam.smp").then_some(pid)
    })
}

/// CPU microseconds per task of the worker, this process (publisher, scraper
/// and collector) and the broker during one drain.
#[derive(Debug, Clone, Copy, Default)]
struct Cpu {
    worker: f64,
    bench: f64,
    broker: f64,
}

fn succeeded(metrics: &std::collections::HashMap<String, f64>) -> f64 {
    metrics
        .get(r#"warden_tasks_total{type="builtin.noop",outcome="succeeded"}"#)
        .copied()
        .unwrap_or(0.0)
}

/// One timed drain; returns tasks/s and where the CPU went.
async fn run(tasks: usize, endpoint: Option<&str>, spans: &AtomicUsize) -> (f64, Cpu) {
    let broker = TestBroker::new("bench").await;
    preload(&broker, tasks).await;
    let mut env: Vec<(&str, &str)> = vec![("WARDEN_CONCURRENCY", "64")];
    // Diagnosis only: `always_off` keeps spans and propagation but exports nothing.
    let sampler = std::env::var("WARDEN_BENCH_SAMPLER").unwrap_or_else(|_| "always_on".into());
    if let Some(e) = endpoint {
        env.extend([
            ("OTEL_EXPORTER_OTLP_ENDPOINT", e),
            ("OTEL_TRACES_SAMPLER", sampler.as_str()),
            // Big enough that no span is dropped: the cost of exporting them all.
            ("OTEL_BSP_MAX_QUEUE_SIZE", "262144"),
        ]);
    }
    let spans_before = spans.load(Ordering::Relaxed);
    let mut worker = broker.spawn_worker(&env);
    worker.wait_ready(Duration::from_secs(30)).await;
    let pids = (worker.child.id(), std::process::id(), broker_pid());
    let cpu =
        |(w, b, r): (u32, u32, Option<u32>)| (cpu_secs(w), cpu_secs(b), r.map_or(0.0, cpu_secs));
    let cpu_start = cpu(pids);
    let started = Instant::now();
    let at_start = succeeded(&worker.metrics().await);
    let deadline = started + Duration::from_secs(600);
    loop {
        let done = succeeded(&worker.metrics().await);
        if done >= tasks as f64 {
            break;
        }
        assert!(Instant::now() < deadline, "drain too slow: {done}/{tasks}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let secs = started.elapsed().as_secs_f64();
    let cpu_end = cpu(pids);
    let drained = tasks as f64 - at_start;
    let rate = drained / secs;
    let per_task = |a: f64, b: f64| (b - a) * 1e6 / drained;
    let used = Cpu {
        worker: per_task(cpu_start.0, cpu_end.0),
        bench: per_task(cpu_start.1, cpu_end.1),
        broker: per_task(cpu_start.2, cpu_end.2),
    };
    worker.signal(nix::sys::signal::Signal::SIGTERM);
    worker.wait_exit(Duration::from_secs(30)).await;
    if endpoint.is_some() && sampler == "always_on" {
        let want = spans_before + tasks * SPANS_PER_TASK;
        assert!(
            support::eventually(Duration::from_secs(30), async || {
                spans.load(Ordering::Relaxed) >= want
            })
            .await,
            "timed out waiting for every span exported"
        );
        let got = spans.load(Ordering::Relaxed) - spans_before;
        assert_eq!(
            got,
            tasks * SPANS_PER_TASK,
            "spans received for {tasks} tasks"
        );
    }
    (rate, used)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        // `cargo test --all-targets` runs this without `--bench`: then it is a
        // smoke run that proves the bench still works, not a measurement.
        let measuring = std::env::args().any(|a| a == "--bench");
        let tasks = env_usize("WARDEN_BENCH_TASKS", if measuring { 20_000 } else { 500 });
        let rounds = env_usize("WARDEN_BENCH_ROUNDS", if measuring { 3 } else { 1 });
        let mut server = FakeCollectorServer::start().await.expect("collector");
        let endpoint = server.endpoint();
        // Drain the collector continuously: its channel holds only 64 spans and
        // a full channel would push back on the worker's exporter.
        let spans = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let drain = {
            let (spans, stop) = (spans.clone(), stop.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let got = server.exported_spans(64, Duration::from_millis(2)).await;
                    spans.fetch_add(got.len(), Ordering::Relaxed);
                }
            })
        };

        println!(
            "warden tracing overhead: {tasks} builtin.noop tasks per run, concurrency 64, {rounds} rounds"
        );
        let (mut off, mut on) = (Vec::new(), Vec::new());
        for round in 0..rounds {
            // Alternate which goes first, so drift (a warming broker) hits both.
            let order = if round % 2 == 0 {
                [false, true]
            } else {
                [true, false]
            };
            for export in order {
                let (rate, cpu) = run(tasks, export.then_some(endpoint.as_str()), &spans).await;
                println!(
                    "round {}: export {:>3}: {rate:>8.0} tasks/s   CPU per task: worker {:>4.0} us, broker {:>4.0} us, bench+collector {:>4.0} us",
                    round + 1,
                    if export { "on" } else { "off" },
                    cpu.worker,
                    cpu.broker,
                    cpu.bench,
                );
                if export { &mut on } else { &mut off }.push(rate);
            }
        }
        stop.store(true, Ordering::Relaxed);
        let _ = drain.await;
        let (m_off, m_on) = (median(off), median(on));
        println!(
            "median: export off {m_off:.0} tasks/s, export on {m_on:.0} tasks/s; ratio on/off = {:.3} (target >= 0.90)",
            m_on / m_off
        );
    });
}
