//! `warden-dev bench`: the real worker against the real broker, next to a raw
//! lapin client measured in the same run. The worker processes are the
//! shipped `warden` binary ([`crate::shipped`]), started as `warden worker`.
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
//!
//! [`plan`] orders the steps, [`scenarios`] runs each (one file per
//! scenario), and the other modules are the measurements they use.

mod args;
mod ctx;
mod drain;
mod env;
mod latency;
mod plan;
mod probe;
mod procs;
mod publish;
mod reauth;
pub mod report;
mod scenarios;
mod sink;
mod suspects;
mod tap;

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use tokio::task::JoinError;
use tokio_util::sync::CancellationToken;
use warden::config::Settings;

pub use self::args::{BenchArgs, Scenario};
use self::ctx::Ctx;
use self::env::BenchEnv;
use self::procs::ChildConfig;
use self::report::{Collector, Report};
use self::scenarios::Step;

/// The figures of the steps that ran, and how the run ended.
type Outcome = (Collector, anyhow::Result<()>);

/// `warden-dev bench`: runs the selected scenarios on a throwaway prefix of
/// the configured broker, prints the figures, and deletes the prefix.
///
/// # Errors
/// Bad arguments, the `warden` binary missing (for the scenarios that start
/// worker processes), the broker unreachable, a scenario failing (the figures
/// measured so far are printed first), or an interruption.
pub async fn run(
    base: &Settings,
    args: BenchArgs,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    check(base, &args)?;
    let began = Instant::now();
    let steps = plan::plan(&args);
    let ctx = Arc::new(open(base, &args, steps.len(), shutdown.clone()).await?);
    let (prefix, broker) = (
        ctx.env.settings.prefix.clone(),
        ctx.env.settings.amqp_url_redacted(),
    );
    let finished = execute(ctx.clone(), steps, &shutdown).await;
    ctx.bar.finish_and_clear();

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
    let (collector, result) = finished.unwrap_or_else(|e| {
        (
            Collector::default(),
            Err(anyhow::anyhow!("the bench panicked: {e}")),
        )
    });
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
        references: scenarios::references(),
        rows: collector.rows(),
        notes: notes(),
        leftovers,
    };
    print(&report, args.json)?;
    cleaned?;
    result
}

/// Refuses arguments that cannot run here, before anything is declared.
fn check(base: &Settings, args: &BenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.concurrency.iter().all(|c| *c > 0),
        "--concurrency values must be at least 1"
    );
    anyhow::ensure!(
        !args.scenarios.contains(&Scenario::Reauth) || crate::demo::ReauthDemo::browser_ready(base),
        "the reauth scenario needs a browser: {}; or leave it out with --scenarios",
        crate::demo::ReauthDemo::WHY_SKIPPED
    );
    Ok(())
}

/// The prefix and its topology, the worker processes' settings and binary
/// (when a scenario starts them) and the OTLP sink (for `tracing`).
async fn open(
    base: &Settings,
    args: &BenchArgs,
    steps: usize,
    shutdown: CancellationToken,
) -> anyhow::Result<Ctx> {
    let settings = env::bench_settings(base);
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
    let otlp = if args.scenarios.contains(&Scenario::Tracing) {
        Some(sink::Sink::start().await?)
    } else {
        None
    };
    Ok(Ctx {
        env: BenchEnv::open(settings).await?,
        children,
        n: args.n,
        reauth_runs: args.reauth_runs,
        otlp,
        shutdown,
        bar: bar(steps),
    })
}

/// Runs `steps` in order until one fails; `None` when interrupted first.
async fn execute(
    ctx: Arc<Ctx>,
    steps: Vec<Step>,
    shutdown: &CancellationToken,
) -> Option<Result<Outcome, JoinError>> {
    let mut task = tokio::spawn(async move {
        let mut out = Collector::default();
        for step in steps {
            ctx.bar.set_message(step.describe());
            if let Err(e) = scenarios::step(&ctx, step, &mut out).await {
                let e = e.context(format!("bench step {:?}", step.describe()));
                return (out, Err(e));
            }
            ctx.bar.inc(1);
        }
        (out, Ok(()))
    });
    tokio::select! {
        r = &mut task => Some(r),
        () = shutdown.cancelled() => {
            task.abort();
            let _ = task.await;
            None
        }
    }
}

/// The report as a table with its notes, or as JSON.
fn print(report: &Report, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(report)?);
        return Ok(());
    }
    println!(
        "warden-dev bench on {} (prefix {}, N = {}, {} round(s), {} CPUs, {:.0}s)",
        report.broker, report.prefix, report.n, report.repeat, report.cpus, report.seconds
    );
    println!("{}", report.table());
    for n in &report.notes {
        println!("- {n}");
    }
    for l in &report.leftovers {
        println!("! {l}");
    }
    Ok(())
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
