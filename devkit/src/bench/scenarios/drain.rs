//! The `drain` scenario: warden's worker in this process on N waiting tasks.

use super::baseline::CEILING;
use crate::bench::ctx::Ctx;
use crate::bench::drain::{self, DrainConfig};
use crate::bench::report::Collector;

/// One drain at `cfg`'s concurrency and events.
pub(super) async fn run(
    ctx: &Ctx,
    cfg: DrainConfig,
    what: &str,
    out: &mut Collector,
) -> anyhow::Result<()> {
    ctx.prefill(ctx.n).await?;
    let d = drain::warden(
        &ctx.env,
        cfg,
        ctx.n,
        &ctx.shutdown,
        ctx.counter(what, ctx.n),
    )
    .await?;
    out.sample(
        ("drain", what, "drain rate", "msg/s"),
        Some(CEILING),
        d.rate,
    );
    Ok(())
}
