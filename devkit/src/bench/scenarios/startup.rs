//! The `startup` scenario: `warden worker` started on an idle queue.

use crate::bench::ctx::Ctx;
use crate::bench::procs;
use crate::bench::report::Collector;

const SAMPLES: u32 = 3;

/// A few starts: time to `/readyz` and idle RSS of each.
pub(super) async fn run(ctx: &Ctx, out: &mut Collector) -> anyhow::Result<()> {
    let concurrency = ctx.env.settings.concurrency;
    let variant = format!("warden worker c={concurrency}, broker up, idle queue");
    for i in 0..SAMPLES {
        ctx.bar.set_message(format!("start-up {}/{SAMPLES}", i + 1));
        let s = procs::startup(ctx.children()?, concurrency).await?;
        out.sample(
            ("startup", &variant, "time to /readyz", "ms"),
            None,
            s.ready_ms,
        );
        out.sample(
            ("startup", &variant, "idle RSS", "MiB"),
            None,
            s.idle_rss_mib,
        );
    }
    Ok(())
}
