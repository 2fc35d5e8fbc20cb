//! The `backlog` scenario: one `warden worker` process on a growing backlog.

use super::baseline::CEILING;
use crate::bench::ctx::Ctx;
use crate::bench::procs::Shape;
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
    let d = ctx
        .drain_processes(1, Shape::plain(CONCURRENCY), size, what)
        .await?;
    let v = format!("warden worker process c={CONCURRENCY}, {size} waiting");
    out.sample(
        ("backlog", &v, "drain rate", "msg/s"),
        Some(CEILING),
        d.rate,
    );
    out.sample(("backlog", &v, "peak RSS", "MiB"), None, d.peak_rss_mib);
    Ok(())
}
