//! One file per scenario: each runs its measurement for one step of the plan
//! and records its figures; [`step`] dispatches. The measurements themselves
//! (consumers, worker processes, proxies) are the bench's other modules.

mod backlog;
mod baseline;
mod drain;
mod latency;
mod publish;
mod reauth;
mod replicas;
mod startup;
mod suspects;
mod traced;

use super::ctx::Ctx;
use super::drain::{Acks, DrainConfig};
use super::report::Collector;

pub(super) use backlog::BACKLOGS;

/// One thing the bench does; [`super::plan`] puts them in order.
#[derive(Debug, Clone, Copy)]
pub(super) enum Step {
    /// The ceiling consumer, before and after every measurement compared with it.
    Ceiling,
    /// A raw consumer at a prefetch, acking one way.
    Raw(u16, Acks),
    /// The raw consumer publishing a confirmed event per message.
    RawEvents,
    /// warden's worker in this process.
    Drain(DrainConfig),
    /// One worker process on a backlog of this size.
    Backlog(u64),
    /// This many worker processes.
    Replicas(usize),
    /// The raw confirming publisher.
    RawPublish,
    /// warden's publisher.
    WardenPublish,
    /// Publish→handler and publish→ack at steady rates.
    Latency,
    /// Worker processes started on an idle queue.
    Startup,
    /// A worker process draining N, exporting spans or not.
    Traced(bool),
    /// Revocations healed cold and warm.
    Reauth,
    /// A worker process whose connection is cut mid-drain.
    Suspects,
}

impl Step {
    /// What the progress line and an error call it.
    pub(super) fn describe(self) -> String {
        match self {
            Step::Ceiling => "ceiling (raw lapin, prefetch 1000)".into(),
            Step::Raw(p, a) => super::drain::raw_label(p, a),
            Step::RawEvents => {
                super::drain::raw_events_label(baseline::CEILING_PREFETCH, baseline::CEILING_EVERY)
            }
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

/// Runs `step` and records what it measured in `out`.
pub(super) async fn step(ctx: &Ctx, step: Step, out: &mut Collector) -> anyhow::Result<()> {
    let what = step.describe();
    match step {
        Step::Ceiling => baseline::ceiling(ctx, &what, out).await,
        Step::Raw(prefetch, acks) => baseline::raw(ctx, prefetch, acks, &what, out).await,
        Step::RawEvents => baseline::raw_events(ctx, &what, out).await,
        Step::Drain(cfg) => drain::run(ctx, cfg, &what, out).await,
        Step::Backlog(size) => backlog::run(ctx, size, &what, out).await,
        Step::Replicas(k) => replicas::run(ctx, k, &what, out).await,
        Step::RawPublish => publish::raw(ctx, &what, out).await,
        Step::WardenPublish => publish::warden(ctx, &what, out).await,
        Step::Latency => latency::run(ctx, out).await,
        Step::Traced(on) => traced::run(ctx, on, &what, out).await,
        Step::Reauth => reauth::run(ctx, out).await,
        Step::Suspects => suspects::run(ctx, &what, out).await,
        Step::Startup => startup::run(ctx, out).await,
    }
}

/// What the ratios of the report divide by, each with a line describing it.
pub(super) fn references() -> Vec<(String, String)> {
    vec![
        baseline::reference(),
        traced::reference(),
        publish::reference(),
    ]
}
