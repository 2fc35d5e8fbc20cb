//! The `suspects` scenario: a `warden worker` process whose connection is cut
//! with its prefetch window in flight.

use crate::bench::ctx::Ctx;
use crate::bench::report::Collector;
use crate::bench::suspects;

const CONCURRENCY: u16 = 64;

/// One cut: the speed before, the suspects, and the times to drain them and
/// to be back at speed.
pub(super) async fn run(ctx: &Ctx, what: &str, out: &mut Collector) -> anyhow::Result<()> {
    ctx.prefill(ctx.n).await?;
    let c = suspects::measure(
        &ctx.env,
        ctx.children()?,
        CONCURRENCY,
        ctx.n,
        ctx.counter(what, ctx.n),
    )
    .await?;
    let variant =
        format!("warden worker process c={CONCURRENCY}, connection cut with its window in flight");
    for (metric, unit, value) in [
        ("drain rate before the cut", "msg/s", c.before),
        ("suspects run in the sandbox", "tasks", c.suspects),
        ("cut → last suspect started", "ms", c.suspects_ms),
        ("cut → back at 90 % speed", "ms", c.recovered_ms),
    ] {
        out.sample(("suspects", &variant, metric, unit), None, value);
    }
    Ok(())
}
