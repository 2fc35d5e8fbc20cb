//! Latency at a steady publish rate: publish → handler start, and publish →
//! ack on the wire.
//!
//! Every task carries its publish time (`payload.sent_ns`, on a clock shared
//! by the whole process, [`super::probe`]). A bench-only handler, registered in
//! the bench's own [`Registry`], notes when it starts. The ack is seen on the
//! wire: the worker connects through [`Tap`], a small TCP relay that reads the
//! AMQP frames going past and notes when the `basic.ack` covering each delivery
//! leaves the worker.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_trait::async_trait;
use lapin::Channel;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use secrecy::{ExposeSecret, SecretString};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use warden::amqp::envelope::Task;
use warden::amqp::publish::task_properties;
use warden::config::Settings;
use warden::handler::{Handler, Registry, TaskContext};
use warden::outcome::TaskError;
use warden::worker::Worker;

use super::env::{BenchEnv, Poller};
use super::probe::{SENT, Samples, count, ns, take};
use super::tap::Tap;

/// The bench-only task type.
pub const STAMP: &str = "bench.stamp";
/// `bench.stamp`: notes how long after its publish the handler started.
struct Stamp {
    clock: Instant,
    starts: Samples,
}

#[async_trait]
impl Handler for Stamp {
    async fn handle(&self, task: &Task, _: &TaskContext) -> Result<(), TaskError> {
        let now = ns(self.clock);
        if let Some(sent) = task.payload.get(SENT).and_then(serde_json::Value::as_u64) {
            self.starts
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(now.saturating_sub(sent));
        }
        Ok(())
    }
}

/// Latencies at one publish rate, nanoseconds, sorted.
#[derive(Debug, Clone)]
pub struct AtRate {
    /// Messages per second asked for.
    pub rate: u32,
    /// Messages per second achieved by the publisher.
    pub achieved: f64,
    /// Publish → handler start.
    pub handler: Vec<u64>,
    /// Publish → `basic.ack` leaving the worker; empty over TLS (no tap).
    pub ack: Vec<u64>,
}

/// The broker's address and the worker's URL through a tap at `tap`, or
/// `None` for TLS, whose frames a relay cannot read.
fn through(url: &str, tap_port: Option<u16>) -> Option<(String, SecretString)> {
    let mut u = url::Url::parse(url).ok()?;
    if u.scheme() != "amqp" {
        return None;
    }
    let upstream = format!("{}:{}", u.host_str()?, u.port().unwrap_or(5672));
    if let Some(port) = tap_port {
        u.set_host(Some("127.0.0.1")).ok()?;
        u.set_port(Some(port)).ok()?;
    }
    Some((upstream, SecretString::from(u.to_string())))
}

/// Runs one worker (concurrency as configured, events off) and, for each of
/// `rates`, publishes `bench.stamp` tasks at that steady rate for `secs`, then
/// waits for all of them to be acked.
///
/// # Errors
/// Broker errors, the worker stalling, or messages left unacknowledged.
pub async fn run(
    env: &BenchEnv,
    rates: &[u32],
    secs: f64,
    shutdown: &CancellationToken,
    mut progress: impl FnMut(String),
) -> anyhow::Result<Vec<AtRate>> {
    env.purge().await?;
    let clock = Instant::now();
    let starts = Samples::default();
    let (settings, tap) = tapped(env, clock).await?;
    let stop = shutdown.child_token();
    let _stop_on_exit = stop.clone().drop_guard();
    let running = start_worker(settings, clock, &starts, stop.clone()).await?;

    let ch = env.conn().create_channel().await?;
    ch.confirm_select(ConfirmSelectOptions::default()).await?;
    let exchange = env.topology.tasks();
    let mut out = Vec::new();
    for &rate in rates {
        take(&starts);
        if let Some(t) = &tap {
            take(&t.acks);
        }
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let total = (f64::from(rate) * secs).round() as usize;
        progress(format!("latency at {rate}/s: publishing {total}"));
        let achieved = publish_steady(&ch, &exchange, rate, total, clock).await?;
        progress(format!("latency at {rate}/s: waiting for the acks"));
        wait_for_acks(&starts, tap.as_ref(), total).await?;
        let mut handler = take(&starts);
        let mut ack = tap.as_ref().map(|t| take(&t.acks)).unwrap_or_default();
        handler.sort_unstable();
        ack.sort_unstable();
        out.push(AtRate {
            rate,
            achieved,
            handler,
            ack,
        });
    }
    let _ = ch.close(200, "done".into()).await;
    stop.cancel();
    running.await.context("the latency worker")?;
    env.expect_drained("latency").await?;
    Ok(out)
}

/// The worker's settings (events off), connecting through a [`Tap`] that
/// times its acks, unless the broker is reached over TLS.
async fn tapped(env: &BenchEnv, clock: Instant) -> anyhow::Result<(Settings, Option<Tap>)> {
    let mut settings = env.settings.clone();
    settings.events = false;
    let url = settings.amqp_url.expose_secret().to_owned();
    let tap = match through(&url, None) {
        Some((upstream, _)) => Some(Tap::start(upstream, clock).await?),
        None => None,
    };
    if let Some((_, via)) = tap
        .as_ref()
        .and_then(|t| through(&url, Some(t.addr.port())))
    {
        settings.amqp_url = via;
    }
    Ok((settings, tap))
}

/// Starts the worker with the [`Stamp`] handler, which records into
/// `starts`, and waits until it is ready.
async fn start_worker(
    settings: Settings,
    clock: Instant,
    starts: &Samples,
    stop: CancellationToken,
) -> anyhow::Result<JoinHandle<()>> {
    let mut registry = Registry::builtin(false);
    registry.register(
        STAMP,
        Stamp {
            clock,
            starts: starts.clone(),
        },
    );
    let worker = Worker::new(settings, registry);
    let state = worker.admin_state();
    let running = tokio::spawn(async move { worker.run(stop).await });
    let mut poll = Poller::new("the worker to become ready", Duration::from_millis(1));
    while !state.health.ready() {
        poll.wait(false).await?;
    }
    Ok(running)
}

/// Publishes `total` stamped probes at `rate` a second, paced every
/// millisecond, and waits for their confirms; the rate achieved.
async fn publish_steady(
    ch: &Channel,
    exchange: &str,
    rate: u32,
    total: usize,
    clock: Instant,
) -> anyhow::Result<f64> {
    let mut confirms = Vec::with_capacity(total);
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    let began = Instant::now();
    let mut sent = 0usize;
    while sent < total {
        tick.tick().await;
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let due = ((began.elapsed().as_secs_f64() * f64::from(rate)) as usize).min(total);
        while sent < due {
            let mut task = Task::new(STAMP, serde_json::json!({ SENT: ns(clock) }));
            task.created_at = None;
            let confirm = ch
                .basic_publish(
                    exchange.into(),
                    STAMP.into(),
                    BasicPublishOptions::default(),
                    &task.to_body(),
                    task_properties(&task.id, lapin::types::FieldTable::default()),
                )
                .await?;
            confirms.push(confirm);
            sent += 1;
        }
    }
    #[allow(clippy::cast_precision_loss)]
    let achieved = total as f64 / began.elapsed().as_secs_f64();
    for c in confirms {
        anyhow::ensure!(c.await?.is_ack(), "the broker refused a latency probe");
    }
    Ok(achieved)
}

/// Waits until `total` probes were handled and (through a tap) acked.
async fn wait_for_acks(starts: &Samples, tap: Option<&Tap>, total: usize) -> anyhow::Result<()> {
    let mut poll = Poller::new("the latency probes to be acked", Duration::from_millis(5));
    let mut last = 0;
    loop {
        let handled = count(starts);
        let acked = tap.map_or(total, |t| count(&t.acks));
        if handled >= total && acked >= total {
            return Ok(());
        }
        poll.wait(std::mem::replace(&mut last, handled + acked) != handled + acked)
            .await?;
    }
}
