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
            for (metric, value) in [
                ("first 401 → token stored", s.stored_ms),
                ("first 401 → parked task done", s.done_ms),
                ("of which warden reauth handling", s.handled_ms),
            ] {
                out.sample(("reauth", variant, metric, "ms"), None, value);
            }
        }
    }
    Ok(())
}
