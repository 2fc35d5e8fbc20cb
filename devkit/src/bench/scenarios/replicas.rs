//! The `replicas` scenario: one `warden worker` process against two on the same N.

use super::baseline::CEILING;
use crate::bench::ctx::Ctx;
use crate::bench::procs;
use crate::bench::report::Collector;

const CONCURRENCY: u16 = 64;

/// One drain by `k` worker processes: the rate and the peak RSS per process.
pub(super) async fn run(
    ctx: &Ctx,
    k: usize,
    what: &str,
    out: &mut Collector,
) -> anyhow::Result<()> {
    ctx.prefill(ctx.n).await?;
    let shape = procs::Shape {
        concurrency: CONCURRENCY,
        events: false,
        otlp: None,
    };
    let d = procs::drain(
        &ctx.env,
        ctx.children()?,
        k,
        shape,
        ctx.n,
        ctx.counter(what, ctx.n),
    )
    .await?;
    let variant = format!("{k} warden worker process(es) c={CONCURRENCY}");
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
    Ok(())
}
