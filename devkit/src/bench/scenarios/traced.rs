//! The `tracing` scenario: a `warden worker` process exporting every span over
//! OTLP/HTTP to the bench's sink, between two runs of the same process with
//! export off.

use crate::bench::ctx::Ctx;
use crate::bench::procs::Shape;
use crate::bench::report::Collector;

/// The reference name of the export-off runs in the report.
const EXPORT_OFF: &str = "export off";
const CONCURRENCY: u16 = 64;

/// The export-off runs' line in the report's list of references.
pub(super) fn reference() -> (String, String) {
    (
        EXPORT_OFF.into(),
        format!("the same worker process with export off, c={CONCURRENCY} events=on"),
    )
}

/// One drain with export `on` or off; export on must really export (and off must not).
pub(super) async fn run(
    ctx: &Ctx,
    on: bool,
    what: &str,
    out: &mut Collector,
) -> anyhow::Result<()> {
    let sink = ctx
        .otlp
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("no OTLP sink was started"))?;
    let before = sink.received();
    let shape = Shape {
        concurrency: CONCURRENCY,
        events: true,
        otlp: on.then_some(sink.endpoint.as_str()),
    };
    let d = ctx.drain_processes(1, shape, ctx.n, what).await?;
    let (requests, bytes) = sink.received();
    let variant = format!(
        "warden worker process c={CONCURRENCY} events=on, export {}",
        if on {
            "on (OTLP/HTTP, 100 % sampled)"
        } else {
            "off"
        }
    );
    if on {
        // Every task's spans must really have gone out.
        anyhow::ensure!(
            requests > before.0,
            "the worker exported no span to the bench's OTLP sink"
        );
        #[allow(clippy::cast_precision_loss)]
        let per_task = (bytes - before.1) as f64 / ctx.n as f64;
        out.sample(
            ("tracing", &variant, "OTLP bytes per task", "B"),
            None,
            per_task,
        );
        out.sample(
            ("tracing", &variant, "drain rate", "msg/s"),
            Some(EXPORT_OFF),
            d.rate,
        );
    } else {
        anyhow::ensure!(
            requests == before.0,
            "a worker without an OTLP endpoint exported spans"
        );
        out.reference(EXPORT_OFF, d.rate);
        out.sample(("tracing", &variant, "drain rate", "msg/s"), None, d.rate);
    }
    Ok(())
}
