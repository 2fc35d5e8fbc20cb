//! The `reauth` scenario: revoked token → stored → parked task done, with the
//! browser cold and warm.

use crate::bench::ctx::Ctx;
use crate::bench::reauth;
use crate::bench::report::Collector;

/// `--reauth-runs` cold and as many warm revocations, three figures each.
pub(super) async fn run(ctx: &Ctx, out: &mut Collector) -> anyhow::Result<()> {
    let (cold, warm) =
        reauth::measure(&ctx.env, ctx.reauth_runs, &ctx.shutdown, ctx.message()).await?;
    for (variant, samples) in [
        ("cold: fresh consumer, browser launched", cold),
        ("warm: browser already up", warm),
    ] {
        for s in samples {
            out.sample(
                ("reauth", variant, "first 401 → token stored", "ms"),
                None,
                s.stored_ms,
            );
            out.sample(
                ("reauth", variant, "first 401 → parked task done", "ms"),
                None,
                s.done_ms,
            );
            out.sample(
                ("reauth", variant, "of which warden reauth handling", "ms"),
                None,
                s.handled_ms,
            );
        }
    }
    Ok(())
}
