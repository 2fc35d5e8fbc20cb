//! `warden bench`: the real worker against the real broker, next to a raw
//! lapin client measured in the same run.
//!
//! Everything runs on a throwaway `bench-<uuid>` prefix with the worker's full
//! topology, deleted at the end, on an error and on Ctrl-C alike.
//!
//! | scenario | what runs | figure |
//! |---|---|---|
//! | `drain` | `Worker::run` in this process on N waiting `builtin.noop` tasks, concurrency 1/16/64/256, events off/on | msg/s, × ceiling |
//! | `baseline` | raw lapin consumers: prefetch 64 with `multiple` acks every 32, prefetch 64 awaiting each ack, and prefetch 1000 publishing a confirmed event per message before acking it (the broker work of warden's events-on drain, without warden) | msg/s, × ceiling |
//! | `latency` | the worker with a bench-only handler, tasks published at a steady 1k/s then 10k/s | p50/p99/max publish→handler start and publish→ack |
//! | `publish` | `Publisher::publish_all` of N tasks vs a raw confirming publisher | msg/s, × raw |
//! | `backlog` | one `warden worker` process (c=256) on 10k, 100k (1M with `--backlog-max`) waiting | msg/s, × ceiling; peak RSS |
//! | `replicas` | 1 and 2 `warden worker` processes (c=64) on the same N | msg/s, × ceiling; peak RSS |
//! | `tracing` | one `warden worker` process (c=64, events on), export off, on (OTLP/HTTP, 100 % sampled, to a sink the bench starts), off | msg/s, × the export-off runs around it |
//! | `startup` | `warden worker` started on an idle queue | time to `/readyz`; idle RSS |
//! | `suspects` | one `warden worker` process (c=64) through a TCP proxy the bench cuts a third of the way into N, with a full prefetch window in flight | suspects run in the sandbox, cut → last suspect started, cut → back at 90 % of the speed before |
//! | `reauth` | worker + `warden reauth` + simulated provider in this process; a token revoked, one task published | first 401 → token stored, → parked task done; browser cold and warm, `--reauth-runs` each |
//!
//! **The ceiling** is a raw lapin consumer at prefetch 1000 acking every 500
//! messages with one `multiple` ack: what the broker gives a
//! client that does nothing. It runs before and after every measurement that
//! is compared with it, and each ratio divides by the mean of those two runs,
//! so the drift of a shared 2-core machine cancels out. Later rounds run the
//! measurements in reverse order.

mod args;
mod drain;
mod env;
mod latency;
mod procs;
mod publish;
mod reauth;
pub mod report;
mod sink;
mod suspects;

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use tokio_util::sync::CancellationToken;

pub use self::args::{BenchArgs, Scenario};
use self::drain::{Acks, DrainConfig, Tracing};
use self::env::BenchEnv;
use self::procs::ChildConfig;
use self::report::{Collector, Report, quantile};
use warden::config::Settings;

/// The trace-export settings every drain runs with; see [`drain::Tracing`]
/// for how export joins them once `telemetry.rs` can export.
pub const DRAIN_TRACING: &[drain::Tracing] = &[Tracing::Off];

const CEILING: &str = "ceiling";
const CEILING_PREFETCH: u16 = 1000;
const CEILING_EVERY: u64 = 500;
const CEILING_ACKS: Acks = Acks::Coalesced(CEILING_EVERY);
const RAW_PUBLISHER: &str = "raw publisher";
const BACKLOGS: [u64; 3] = [10_000, 100_000, 1_000_000];
const BACKLOG_CONCURRENCY: u16 = 256;
const REPLICA_CONCURRENCY: u16 = 64;
const LATENCY_RATES: [u32; 2] = [1_000, 10_000];
const LATENCY_SECS: f64 = 3.0;
const STARTUP_SAMPLES: u32 = 3;
const TRACING_CONCURRENCY: u16 = 64;
const EXPORT_OFF: &str = "export off";
const SUSPECTS_CONCURRENCY: u16 = 64;

/// One thing the bench does, in the order it does them.
#[derive(Debug, Clone, Copy)]
enum Step {
    Ceiling,
    Raw(u16, Acks),
    /// The raw consumer publishing a confirmed event per message.
    RawEvents,
    Drain(DrainConfig),
    Backlog(u64),
    Replicas(usize),
    RawPublish,
    WardenPublish,
    Latency,
    Startup,
    /// A worker process draining N, exporting spans or not.
    Traced(bool),
    Reauth,
    /// A worker process whose connection is cut mid-drain.
    Suspects,
}

impl Step {
    fn describe(self) -> String {
        match self {
            Step::Ceiling => "ceiling (raw lapin, prefetch 1000)".into(),
            Step::Raw(p, a) => drain::raw_label(p, a),
            Step::RawEvents => drain::raw_events_label(CEILING_PREFETCH, CEILING_EVERY),
            Step::Drain(c) => c.label(),
            Step::Backlog(n) => format!("backlog of {n}"),
            Step::Replicas(k) => format!("{k} worker process(es)"),
            Step::RawPublish => "raw publisher".into(),
            Step::WardenPublish => "warden publisher".into(),
            Step::Latency => "latency".into(),
            Step::Startup => "start-up".into(),
            Step::Reauth => "re-auth".into(),
            Step::Suspects => "suspects after a cut".into(),
            Step::Traced(on) => format!("export {}", if on { "on" } else { "off" }),
        }
    }
}

fn plan(args: &BenchArgs) -> Vec<Step> {
    let has = |s| args.scenarios.contains(&s);
    let mut steps = Vec::new();
    // Its runs are its repeats: once, whatever `--repeat` says.
    if has(Scenario::Reauth) {
        steps.push(Step::Reauth);
    }
    for round in 0..args.repeat {
        if has(Scenario::Startup) {
            steps.push(Step::Startup);
        }
        if has(Scenario::Latency) {
            steps.push(Step::Latency);
        }
        if has(Scenario::Tracing) {
            // Each export-on run between two export-off runs of the same round.
            steps.extend([Step::Traced(false), Step::Traced(true), Step::Traced(false)]);
        }
        if has(Scenario::Publish) {
            steps.extend([Step::RawPublish, Step::WardenPublish, Step::RawPublish]);
        }
        if has(Scenario::Suspects) {
            steps.push(Step::Suspects);
        }
        let mut measured = Vec::new();
        if has(Scenario::Baseline) {
            measured.push(Step::Raw(64, Acks::Coalesced(32)));
            measured.push(Step::Raw(64, Acks::EachAwaited));
            measured.push(Step::RawEvents);
        }
        if has(Scenario::Drain) {
            for &tracing in DRAIN_TRACING {
                for events in [false, true] {
                    for &concurrency in &args.concurrency {
                        measured.push(Step::Drain(DrainConfig {
                            concurrency,
                            events,
                            tracing,
                        }));
                    }
                }
            }
        }
        if has(Scenario::Backlog) {
            for size in BACKLOGS.into_iter().filter(|s| *s <= args.backlog_max) {
                measured.push(Step::Backlog(size));
            }
        }
        if has(Scenario::Replicas) {
            measured.extend([Step::Replicas(1), Step::Replicas(2)]);
        }
        if round % 2 == 1 {
            measured.reverse();
        }
        if !measured.is_empty() {
            steps.push(Step::Ceiling);
            for m in measured {
                steps.extend([m, Step::Ceiling]);
            }
        }
    }
    steps
}

/// Everything one step needs.
struct Ctx {
    env: BenchEnv,
    children: Option<ChildConfig>,
    n: u64,
    reauth_runs: u32,
    /// The OTLP sink of the tracing scenario.
    otlp: Option<sink::Sink>,
    shutdown: CancellationToken,
    bar: ProgressBar,
}

impl Ctx {
    /// A progress callback for `total` messages of the current step.
    fn counter(&self, what: &str, total: u64) -> impl FnMut(u64) + use<> {
        let (bar, what) = (self.bar.clone(), what.to_owned());
        let mut shown = Instant::now();
        move |done| {
            if shown.elapsed() > Duration::from_millis(100) || done >= total {
                shown = Instant::now();
                bar.set_message(format!("{what}: {done}/{total}"));
            }
        }
    }

    /// A per-message progress callback.
    fn each(&self, what: &str, total: u64) -> impl FnMut() + use<> {
        let mut count = self.counter(what, total);
        let mut done = 0;
        move || {
            done += 1;
            count(done);
        }
    }

    async fn prefill(&self, n: u64) -> anyhow::Result<()> {
        self.env.prefill(n, self.each("prefill", n)).await
    }

    fn children(&self) -> anyhow::Result<&ChildConfig> {
        self.children
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("no settings were written for worker processes"))
    }

    async fn step(&self, step: Step, out: &mut Collector) -> anyhow::Result<()> {
        let n = self.n;
        let what = step.describe();
        match step {
            Step::Ceiling => {
                self.prefill(n).await?;
                let d = drain::raw(
                    &self.env,
                    CEILING_PREFETCH,
                    CEILING_ACKS,
                    n,
                    self.counter(&what, n),
                )
                .await?;
                out.reference(CEILING, d.rate);
                let label = format!(
                    "{} (= ceiling)",
                    drain::raw_label(CEILING_PREFETCH, CEILING_ACKS)
                );
                out.sample(("baseline", &label, "drain rate", "msg/s"), None, d.rate);
            }
            Step::Raw(prefetch, acks) => {
                self.prefill(n).await?;
                let d = drain::raw(&self.env, prefetch, acks, n, self.counter(&what, n)).await?;
                out.sample(
                    ("baseline", &what, "drain rate", "msg/s"),
                    Some(CEILING),
                    d.rate,
                );
            }
            Step::RawEvents => {
                self.prefill(n).await?;
                let d = drain::raw_events(
                    &self.env,
                    CEILING_PREFETCH,
                    CEILING_EVERY,
                    n,
                    self.counter(&what, n),
                )
                .await?;
                out.sample(
                    ("baseline", &what, "drain rate", "msg/s"),
                    Some(CEILING),
                    d.rate,
                );
            }
            Step::Drain(cfg) => {
                self.prefill(n).await?;
                let d = drain::warden(&self.env, cfg, n, &self.shutdown, self.counter(&what, n))
                    .await?;
                out.sample(
                    ("drain", &what, "drain rate", "msg/s"),
                    Some(CEILING),
                    d.rate,
                );
            }
            Step::Backlog(size) => {
                self.prefill(size).await?;
                let d = procs::drain(
                    &self.env,
                    self.children()?,
                    1,
                    procs::Shape {
                        concurrency: BACKLOG_CONCURRENCY,
                        events: false,
                        otlp: None,
                    },
                    size,
                    self.counter(&what, size),
                )
                .await?;
                let variant =
                    format!("warden worker process c={BACKLOG_CONCURRENCY}, {size} waiting");
                out.sample(
                    ("backlog", &variant, "drain rate", "msg/s"),
                    Some(CEILING),
                    d.rate,
                );
                out.sample(
                    ("backlog", &variant, "peak RSS", "MiB"),
                    None,
                    d.peak_rss_mib,
                );
            }
            Step::Replicas(k) => {
                self.prefill(n).await?;
                let d = procs::drain(
                    &self.env,
                    self.children()?,
                    k,
                    procs::Shape {
                        concurrency: REPLICA_CONCURRENCY,
                        events: false,
                        otlp: None,
                    },
                    n,
                    self.counter(&what, n),
                )
                .await?;
                let variant = format!("{k} warden worker process(es) c={REPLICA_CONCURRENCY}");
                out.sample(
                    ("replicas", &variant, "drain rate", "msg/s"),
                    Some(CEILING),
                    d.rate,
                );
                out.sample(
                    ("replicas", &variant, "peak RSS per process", "MiB"),
                    None,
                    d.peak_rss_mib,
                );
            }
            Step::RawPublish => {
                let r = publish::raw(&self.env, n, self.each(&what, n)).await?;
                out.reference(RAW_PUBLISHER, r);
                let variant = format!("raw lapin, {} confirms in flight", publish::WINDOW);
                out.sample(("publish", &variant, "publish rate", "msg/s"), None, r);
            }
            Step::WardenPublish => {
                let r = publish::warden(&self.env, n, self.each(&what, n)).await?;
                let variant = format!("Publisher::publish_all, {} in flight", publish::WINDOW);
                out.sample(
                    ("publish", &variant, "publish rate", "msg/s"),
                    Some(RAW_PUBLISHER),
                    r,
                );
            }
            Step::Latency => {
                let bar = self.bar.clone();
                let rates = latency::run(
                    &self.env,
                    &LATENCY_RATES,
                    LATENCY_SECS,
                    &self.shutdown,
                    |m| {
                        bar.set_message(m);
                    },
                )
                .await?;
                for r in rates {
                    let variant = format!(
                        "{}/s steady, warden c={}",
                        r.rate, self.env.settings.concurrency
                    );
                    let v = variant.as_str();
                    #[allow(clippy::cast_precision_loss)]
                    let ms = |ns: u64| ns as f64 / 1e6;
                    for (path, lat) in [("publish→handler", &r.handler), ("publish→ack", &r.ack)]
                    {
                        if lat.is_empty() {
                            continue;
                        }
                        for (q, name) in [(0.5, "p50"), (0.99, "p99"), (1.0, "max")] {
                            let metric = format!("{path} {name}");
                            out.sample(("latency", v, &metric, "ms"), None, ms(quantile(lat, q)));
                        }
                    }
                    out.sample(
                        ("latency", &variant, "publish rate achieved", "msg/s"),
                        None,
                        r.achieved,
                    );
                }
            }
            Step::Traced(on) => {
                let sink = self
                    .otlp
                    .as_ref()
                    .ok_or_else(|| anyhow::anyhow!("no OTLP sink was started"))?;
                let before = sink.received();
                self.prefill(n).await?;
                let shape = procs::Shape {
                    concurrency: TRACING_CONCURRENCY,
                    events: true,
                    otlp: on.then_some(sink.endpoint.as_str()),
                };
                let d = procs::drain(
                    &self.env,
                    self.children()?,
                    1,
                    shape,
                    n,
                    self.counter(&what, n),
                )
                .await?;
                let (requests, bytes) = sink.received();
                let variant = format!(
                    "warden worker process c={TRACING_CONCURRENCY} events=on, export {}",
                    if on {
                        "on (OTLP/HTTP, 100 % sampled)"
                    } else {
                        "off"
                    }
                );
                if on {
                    // Every task's spans must really have gone out.
                    anyhow::ensure!(
                        requests > before.0,
                        "the worker exported no span to the bench's OTLP sink"
                    );
                    #[allow(clippy::cast_precision_loss)]
                    let per_task = (bytes - before.1) as f64 / n as f64;
                    out.sample(
                        ("tracing", &variant, "OTLP bytes per task", "B"),
                        None,
                        per_task,
                    );
                    out.sample(
                        ("tracing", &variant, "drain rate", "msg/s"),
                        Some(EXPORT_OFF),
                        d.rate,
                    );
                } else {
                    anyhow::ensure!(
                        requests == before.0,
                        "a worker without an OTLP endpoint exported spans"
                    );
                    out.reference(EXPORT_OFF, d.rate);
                    out.sample(("tracing", &variant, "drain rate", "msg/s"), None, d.rate);
                }
            }
            Step::Reauth => {
                let bar = self.bar.clone();
                let (cold, warm) =
                    reauth::measure(&self.env, self.reauth_runs, &self.shutdown, |m| {
                        bar.set_message(m);
                    })
                    .await?;
                for (variant, samples) in [
                    ("cold: fresh consumer, browser launched", cold),
                    ("warm: browser already up", warm),
                ] {
                    for s in samples {
                        out.sample(
                            ("reauth", variant, "first 401 → token stored", "ms"),
                            None,
                            s.stored_ms,
                        );
                        out.sample(
                            ("reauth", variant, "first 401 → parked task done", "ms"),
                            None,
                            s.done_ms,
                        );
                        out.sample(
                            ("reauth", variant, "of which warden reauth handling", "ms"),
                            None,
                            s.handled_ms,
                        );
                    }
                }
            }
            Step::Suspects => {
                self.prefill(n).await?;
                let c = suspects::measure(
                    &self.env,
                    self.children()?,
                    SUSPECTS_CONCURRENCY,
                    n,
                    self.counter(&what, n),
                )
                .await?;
                let variant = format!(
                    "warden worker process c={SUSPECTS_CONCURRENCY}, connection cut with its window in flight"
                );
                let v = variant.as_str();
                out.sample(
                    ("suspects", v, "drain rate before the cut", "msg/s"),
                    None,
                    c.before,
                );
                out.sample(
                    ("suspects", v, "suspects run in the sandbox", "tasks"),
                    None,
                    c.suspects,
                );
                out.sample(
                    ("suspects", v, "cut → last suspect started", "ms"),
                    None,
                    c.suspects_ms,
                );
                out.sample(
                    ("suspects", v, "cut → back at 90 % speed", "ms"),
                    None,
                    c.recovered_ms,
                );
            }
            Step::Startup => {
                for i in 0..STARTUP_SAMPLES {
                    self.bar
                        .set_message(format!("start-up {}/{STARTUP_SAMPLES}", i + 1));
                    let s = procs::startup(self.children()?, self.env.settings.concurrency).await?;
                    let variant = format!(
                        "warden worker c={}, broker up, idle queue",
                        self.env.settings.concurrency
                    );
                    out.sample(
                        ("startup", &variant, "time to /readyz", "ms"),
                        None,
                        s.ready_ms,
                    );
                    out.sample(
                        ("startup", &variant, "idle RSS", "MiB"),
                        None,
                        s.idle_rss_mib,
                    );
                }
            }
        }
        Ok(())
    }
}

fn bar(steps: usize) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(steps as u64);
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] step {pos}/{len} {wide_msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// `warden bench`: runs the selected scenarios on a throwaway prefix of the
/// configured broker, prints the figures, and deletes the prefix.
///
/// # Errors
/// Bad arguments, the broker unreachable, a scenario failing (the figures
/// measured so far are printed first), or an interruption.
pub async fn run(
    base: &Settings,
    args: BenchArgs,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.concurrency.iter().all(|c| *c > 0),
        "--concurrency values must be at least 1"
    );
    anyhow::ensure!(
        !args.scenarios.contains(&Scenario::Reauth) || crate::demo::ReauthDemo::browser_ready(base),
        "the reauth scenario needs a browser: {}; or leave it out with --scenarios",
        crate::demo::ReauthDemo::WHY_SKIPPED
    );
    let began = Instant::now();
    let settings = env::bench_settings(base);
    let steps = plan(&args);
    let spawns = args.scenarios.iter().any(|s| {
        matches!(
            s,
            Scenario::Backlog
                | Scenario::Replicas
                | Scenario::Startup
                | Scenario::Tracing
                | Scenario::Suspects
        )
    });
    let children = if spawns {
        let warden = crate::shipped::locate(args.warden.as_deref())?;
        Some(ChildConfig::write(&settings, warden)?)
    } else {
        None
    };
    let env = BenchEnv::open(settings).await?;
    let prefix = env.settings.prefix.clone();
    let broker = env.settings.amqp_url_redacted();
    let bar = bar(steps.len());
    let ctx = Arc::new(Ctx {
        env,
        children,
        n: args.n,
        reauth_runs: args.reauth_runs,
        otlp: if args.scenarios.contains(&Scenario::Tracing) {
            Some(sink::Sink::start().await?)
        } else {
            None
        },
        shutdown: shutdown.clone(),
        bar: bar.clone(),
    });

    let mut task = tokio::spawn({
        let ctx = ctx.clone();
        async move {
            let mut out = Collector::default();
            for step in steps {
                ctx.bar.set_message(step.describe());
                if let Err(e) = ctx.step(step, &mut out).await {
                    return (
                        out,
                        Err(e.context(format!("bench step {:?}", step.describe()))),
                    );
                }
                ctx.bar.inc(1);
            }
            (out, Ok(()))
        }
    });
    let finished = tokio::select! {
        r = &mut task => Some(r),
        () = shutdown.cancelled() => {
            task.abort();
            let _ = task.await;
            None
        }
    };
    bar.finish_and_clear();

    let leftovers = ctx.env.leftovers();
    // Clean up whatever happened above.
    let cleaned = ctx.env.cleanup().await;
    if let Some(ctx) = Arc::into_inner(ctx) {
        ctx.env.close().await;
    }

    let Some(finished) = finished else {
        cleaned?;
        anyhow::bail!("interrupted; prefix {prefix} deleted");
    };
    let (collector, result) = match finished {
        Ok(x) => x,
        Err(e) => (
            Collector::default(),
            Err(anyhow::anyhow!("the bench panicked: {e}")),
        ),
    };
    let report = Report {
        prefix,
        broker,
        n: args.n,
        repeat: args.repeat,
        scenarios: args
            .scenarios
            .iter()
            .map(|s| s.as_str().to_owned())
            .collect(),
        cpus: std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
        log_filter: std::env::var("RUST_LOG")
            .unwrap_or_else(|_| "info,lapin=warn (default)".into()),
        seconds: began.elapsed().as_secs_f64(),
        references: vec![
            (
                CEILING.into(),
                drain::raw_label(CEILING_PREFETCH, CEILING_ACKS),
            ),
            (
                EXPORT_OFF.into(),
                format!(
                    "the same worker process with export off, c={TRACING_CONCURRENCY} events=on"
                ),
            ),
            (
                RAW_PUBLISHER.into(),
                format!(
                    "raw lapin publisher, {} confirms in flight",
                    publish::WINDOW
                ),
            ),
        ],
        rows: collector.rows(),
        notes: notes(),
        leftovers,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "warden bench on {} (prefix {}, N = {}, {} round(s), {} CPUs, {:.0}s)",
            report.broker, report.prefix, report.n, report.repeat, report.cpus, report.seconds
        );
        println!("{}", report.table());
        for n in &report.notes {
            println!("- {n}");
        }
        for l in &report.leftovers {
            println!("! {l}");
        }
    }
    cleaned?;
    result
}

fn notes() -> Vec<String> {
    [
        "ceiling = raw lapin consumer, prefetch 1000, one multiple ack per 500 messages; each ratio divides by the mean of the ceiling runs just before and after it",
        "drain: Worker::run in this process; the clock runs from the worker reporting ready to the last task settled; the queue must be empty afterwards",
        "events=on publishes task.succeeded for every task into a quorum queue standing in for a dashboard; the raw consumer with one confirmed event per message does the same broker work without warden: the bound of any events-on drain",
        "tracing: a `warden worker` process exporting every span over OTLP/HTTP to a sink in the bench that counts requests without decoding them; its ratio divides by the export-off runs just before and after",
        "backlog and replicas run the real `warden worker` binary; peak RSS is its VmHWM",
        "latency: publish→ack is when the worker's basic.ack passes a relay in front of the broker",
        "reauth: each run revokes access and refresh token at the simulated provider, so a browser login heals it; the clock starts at the provider's 401",
        "absolute figures vary with the load of the machine; compare ratios",
    ]
    .map(str::to_owned)
    .to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;

    #[derive(clap::Parser)]
    struct Line {
        #[command(flatten)]
        args: BenchArgs,
    }

    /// `bench --scenarios …` as `warden-dev` parses it.
    fn args(line: &str) -> BenchArgs {
        let words = line.split_whitespace().filter(|w| *w != "bench");
        Line::try_parse_from(words).unwrap().args
    }

    #[test]
    fn every_measurement_is_between_two_ceiling_runs() {
        let steps = plan(&args(
            "warden-dev bench --scenarios drain,baseline --repeat 2",
        ));
        let kinds: Vec<bool> = steps.iter().map(|s| matches!(s, Step::Ceiling)).collect();
        // C m C m C … C, per round.
        assert!(kinds.first().copied().unwrap());
        assert!(kinds.last().copied().unwrap());
        assert!(kinds.windows(2).all(|w| w[0] || w[1]), "{steps:?}");
        // 3 raw + 4 concurrencies × events off/on, per round.
        assert_eq!(kinds.iter().filter(|c| !**c).count(), 2 * (3 + 8));
    }

    #[test]
    fn the_million_backlog_runs_only_when_asked_for() {
        let count = |line| {
            plan(&args(line))
                .iter()
                .filter(|s| matches!(s, Step::Backlog(_)))
                .count()
        };
        assert_eq!(count("warden-dev bench --scenarios backlog"), 2);
        assert_eq!(
            count("warden-dev bench --scenarios backlog --backlog-max 1000000"),
            3
        );
    }

    #[test]
    fn latency_alone_needs_no_ceiling() {
        let steps = plan(&args("warden-dev bench --scenarios latency"));
        assert!(matches!(steps.as_slice(), [Step::Latency]));
    }
}
