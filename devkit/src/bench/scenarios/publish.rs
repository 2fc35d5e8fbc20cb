//! The `publish` scenario: `Publisher::publish_all` against a raw confirming
//! publisher, each warden run between two raw ones.

use crate::bench::ctx::Ctx;
use crate::bench::publish;
use crate::bench::report::Collector;

/// The reference name of the raw publisher in the report.
const RAW_PUBLISHER: &str = "raw publisher";

/// The raw publisher's line in the report's list of references.
pub(super) fn reference() -> (String, String) {
    (
        RAW_PUBLISHER.into(),
        format!(
            "raw lapin publisher, {} confirms in flight",
            publish::WINDOW
        ),
    )
}

/// The raw publisher: the reference.
pub(super) async fn raw(ctx: &Ctx, what: &str, out: &mut Collector) -> anyhow::Result<()> {
    let r = publish::raw(&ctx.env, ctx.n, ctx.each(what, ctx.n)).await?;
    out.reference(RAW_PUBLISHER, r);
    let variant = format!("raw lapin, {} confirms in flight", publish::WINDOW);
    out.sample(("publish", &variant, "publish rate", "msg/s"), None, r);
    Ok(())
}

/// warden's publisher, compared with the raw runs around it.
pub(super) async fn warden(ctx: &Ctx, what: &str, out: &mut Collector) -> anyhow::Result<()> {
    let r = publish::warden(&ctx.env, ctx.n, ctx.each(what, ctx.n)).await?;
    let variant = format!("Publisher::publish_all, {} in flight", publish::WINDOW);
    out.sample(
        ("publish", &variant, "publish rate", "msg/s"),
        Some(RAW_PUBLISHER),
        r,
    );
    Ok(())
}
