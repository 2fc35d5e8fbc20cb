//! The `baseline` scenario and the ceiling every drain is compared with: raw
//! lapin consumers on the same queue, doing nothing but acking.

use crate::bench::ctx::Ctx;
use crate::bench::drain::{self, Acks};
use crate::bench::report::Collector;

/// The reference name of the ceiling in the report.
pub(super) const CEILING: &str = "ceiling";
/// The ceiling consumer's prefetch.
pub(super) const CEILING_PREFETCH: u16 = 1000;
/// The ceiling consumer acks this many messages with one `multiple` ack.
pub(super) const CEILING_EVERY: u64 = 500;
const CEILING_ACKS: Acks = Acks::Coalesced(CEILING_EVERY);

/// The ceiling's line in the report's list of references.
pub(super) fn reference() -> (String, String) {
    (
        CEILING.into(),
        drain::raw_label(CEILING_PREFETCH, CEILING_ACKS),
    )
}

/// The ceiling: a reference for the ratios, and a baseline row of its own.
pub(super) async fn ceiling(ctx: &Ctx, what: &str, out: &mut Collector) -> anyhow::Result<()> {
    ctx.prefill(ctx.n).await?;
    let d = drain::raw(
        &ctx.env,
        CEILING_PREFETCH,
        CEILING_ACKS,
        ctx.n,
        ctx.counter(what, ctx.n),
    )
    .await?;
    out.reference(CEILING, d.rate);
    let label = format!(
        "{} (= ceiling)",
        drain::raw_label(CEILING_PREFETCH, CEILING_ACKS)
    );
    out.sample(("baseline", &label, "drain rate", "msg/s"), None, d.rate);
    Ok(())
}

/// A raw consumer at `prefetch`, acking as `acks` says.
pub(super) async fn raw(
    ctx: &Ctx,
    prefetch: u16,
    acks: Acks,
    what: &str,
    out: &mut Collector,
) -> anyhow::Result<()> {
    ctx.prefill(ctx.n).await?;
    let d = drain::raw(&ctx.env, prefetch, acks, ctx.n, ctx.counter(what, ctx.n)).await?;
    out.sample(
        ("baseline", what, "drain rate", "msg/s"),
        Some(CEILING),
        d.rate,
    );
    Ok(())
}

/// The raw consumer publishing a confirmed event per message: the broker
/// work of an events-on drain, without warden.
pub(super) async fn raw_events(ctx: &Ctx, what: &str, out: &mut Collector) -> anyhow::Result<()> {
    ctx.prefill(ctx.n).await?;
    let d = drain::raw_events(
        &ctx.env,
        CEILING_PREFETCH,
        CEILING_EVERY,
        ctx.n,
        ctx.counter(what, ctx.n),
    )
    .await?;
    out.sample(
        ("baseline", what, "drain rate", "msg/s"),
        Some(CEILING),
        d.rate,
    );
    Ok(())
}
