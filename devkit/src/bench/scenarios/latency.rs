//! The `latency` scenario: publish→handler and publish→ack at a steady rate.

use crate::bench::ctx::Ctx;
use crate::bench::latency;
use crate::bench::report::{Collector, quantile};

const RATES: [u32; 2] = [1_000, 10_000];
const SECS: f64 = 3.0;

/// Each rate in turn: p50, p99 and max of both paths, and the rate achieved.
pub(super) async fn run(ctx: &Ctx, out: &mut Collector) -> anyhow::Result<()> {
    let rates = latency::run(&ctx.env, &RATES, SECS, &ctx.shutdown, ctx.message()).await?;
    for r in rates {
        let variant = format!(
            "{}/s steady, warden c={}",
            r.rate, ctx.env.settings.concurrency
        );
        let v = variant.as_str();
        #[allow(clippy::cast_precision_loss)]
        let ms = |ns: u64| ns as f64 / 1e6;
        for (path, lat) in [("publish→handler", &r.handler), ("publish→ack", &r.ack)] {
            if lat.is_empty() {
                continue;
            }
            for (q, name) in [(0.5, "p50"), (0.99, "p99"), (1.0, "max")] {
                let metric = format!("{path} {name}");
                out.sample(("latency", v, &metric, "ms"), None, ms(quantile(lat, q)));
            }
        }
        out.sample(
            ("latency", &variant, "publish rate achieved", "msg/s"),
            None,
            r.achieved,
        );
    }
    Ok(())
}
