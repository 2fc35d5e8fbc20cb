//! The `backlog` scenario: one `warden worker` process on a growing backlog.

use super::baseline::CEILING;
use crate::bench::ctx::Ctx;
use crate::bench::procs;
use crate::bench::report::Collector;

/// The backlogs measured, up to `--backlog-max`.
pub(crate) const BACKLOGS: [u64; 3] = [10_000, 100_000, 1_000_000];
const CONCURRENCY: u16 = 256;

/// One drain of `size` waiting tasks: its rate and the process's peak RSS.
pub(super) async fn run(
    ctx: &Ctx,
    size: u64,
    what: &str,
    out: &mut Collector,
) -> anyhow::Result<()> {
    ctx.prefill(size).await?;
    let shape = procs::Shape {
        concurrency: CONCURRENCY,
        events: false,
        otlp: None,
    };
    let d = procs::drain(
        &ctx.env,
        ctx.children()?,
        1,
        shape,
        size,
        ctx.counter(what, size),
    )
    .await?;
    let variant = format!("warden worker process c={CONCURRENCY}, {size} waiting");
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
    Ok(())
}
