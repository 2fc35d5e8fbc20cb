//! The `replicas` scenario: one `warden worker` process against two on the same N.

use super::baseline::CEILING;
use crate::bench::ctx::Ctx;
use crate::bench::procs::Shape;
use crate::bench::report::Collector;

const CONCURRENCY: u16 = 64;

/// One drain by `k` worker processes: the rate and the peak RSS per process.
pub(super) async fn run(
    ctx: &Ctx,
    k: usize,
    what: &str,
    out: &mut Collector,
) -> anyhow::Result<()> {
    let d = ctx
        .drain_processes(k, Shape::plain(CONCURRENCY), ctx.n, what)
        .await?;
    let v = format!("{k} warden worker process(es) c={CONCURRENCY}");
    out.sample(
        ("replicas", &v, "drain rate", "msg/s"),
        Some(CEILING),
        d.rate,
    );
    out.sample(
        ("replicas", &v, "peak RSS per process", "MiB"),
        None,
        d.peak_rss_mib,
    );
    Ok(())
}
