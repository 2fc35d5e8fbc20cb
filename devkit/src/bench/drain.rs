//! Draining a prefilled `{p}.tasks`: warden's own worker in this process, and
//! the raw lapin consumers it is measured against.
//!
//! Both clocks start when the consumer is attached (the worker reports ready;
//! `basic.consume-ok` for the raw client) and stop when the last message is
//! settled, so connection set-up is left out of both alike. Afterwards the
//! consumer is closed and the queue must be empty: an unacknowledged message
//! would have been handed back.

use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::FuturesOrdered;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, Consumer};
use tokio_util::sync::CancellationToken;
use warden::amqp::events::{Event, SUCCEEDED};
use warden::amqp::publish::PERSISTENT;
use warden::handler::Registry;
use warden::observe::metrics::TaskLabels;
use warden::worker::Worker;

use super::env::{BenchEnv, NOOP, Poller, STALL};

/// How often the bench looks at the worker's counters while it drains. The
/// clock's resolution, and cheap: two atomic loads.
const POLL: Duration = Duration::from_millis(1);

/// One timed drain.
#[derive(Debug, Clone, Copy)]
pub struct Drained {
    /// Messages per second, from consuming to the last settle.
    pub rate: f64,
}

impl Drained {
    fn new(n: u64, elapsed: Duration) -> Self {
        #[allow(clippy::cast_precision_loss)]
        let rate = n as f64 / elapsed.as_secs_f64().max(1e-9);
        Self { rate }
    }
}

/// Trace export while draining in this process: always off, because the
/// subscriber is global to a process and the bench's own is not exporting.
/// Export is measured by the `tracing` scenario, with the real binary
/// ([`super::procs`]) exporting to the bench's sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tracing {
    /// Spans are created (at the log filter in force) but not exported.
    Off,
}

impl Tracing {
    /// The column value.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Tracing::Off => "off",
        }
    }
}

/// How a drain of the worker is configured.
#[derive(Debug, Clone, Copy)]
pub struct DrainConfig {
    /// Handlers at once (the prefetch is the default, four times this).
    pub concurrency: u16,
    /// `task.*` events published (and stored in the bench's sink queue).
    pub events: bool,
    /// Trace export.
    pub tracing: Tracing,
}

impl DrainConfig {
    /// The row label.
    #[must_use]
    pub fn label(&self) -> String {
        format!(
            "warden c={} events={} tracing={}",
            self.concurrency,
            if self.events { "on" } else { "off" },
            self.tracing.as_str()
        )
    }
}

/// Runs warden's worker (`Worker::run`, built-in handlers) in this process
/// until it has settled the `n` tasks waiting in `{p}.tasks`, then stops it
/// gracefully.
///
/// # Errors
/// The worker stalls, or leaves messages unacknowledged.
pub async fn warden(
    env: &BenchEnv,
    cfg: DrainConfig,
    n: u64,
    shutdown: &CancellationToken,
    progress: impl FnMut(u64),
) -> anyhow::Result<Drained> {
    let mut settings = env.settings.clone();
    settings.concurrency = cfg.concurrency;
    settings.events = cfg.events;
    let worker = Worker::new(settings, Registry::builtin(false));
    let state = worker.admin_state();
    let stop = shutdown.child_token();
    // Whatever happens below, the worker stops with this scope.
    let _stop_on_exit = stop.clone().drop_guard();
    let running = tokio::spawn({
        let stop = stop.clone();
        async move { worker.run(stop).await }
    });

    let mut poll = Poller::new("the worker to become ready", POLL);
    while !state.health.ready() {
        poll.wait(false).await?;
    }
    let started = Instant::now();
    let succeeded = state.metrics.tasks.get_or_create_owned(&TaskLabels {
        r#type: NOOP.to_owned(),
        outcome: "succeeded",
    });
    Poller::new("the worker to drain the queue", POLL)
        .count_until_done(
            0,
            || {
                let done = succeeded.get();
                let finished = done >= n && state.metrics.in_flight.get() == 0;
                std::future::ready(Ok((done, finished)))
            },
            progress,
        )
        .await?;
    let elapsed = started.elapsed();

    stop.cancel();
    running.await?;
    env.expect_drained(&cfg.label()).await?;
    Ok(Drained::new(n, elapsed))
}

/// How the raw consumer acknowledges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acks {
    /// One `multiple` ack every this many messages (and at the end).
    Coalesced(u64),
    /// One ack per message, each awaited before the next message is taken.
    EachAwaited,
}

/// The row label of a raw consumer.
#[must_use]
pub fn raw_label(prefetch: u16, acks: Acks) -> String {
    match acks {
        Acks::Coalesced(every) => {
            format!("raw lapin prefetch {prefetch}, multiple ack every {every}")
        }
        Acks::EachAwaited => format!("raw lapin prefetch {prefetch}, each ack awaited"),
    }
}

/// The least a consumer can do: take `n` messages from `{p}.tasks` and
/// acknowledge them, nothing else.
///
/// # Errors
/// Broker errors, a stall, or messages left unacknowledged.
pub async fn raw(
    env: &BenchEnv,
    prefetch: u16,
    acks: Acks,
    n: u64,
    mut progress: impl FnMut(u64),
) -> anyhow::Result<Drained> {
    let (conn, ch, mut consumer) = raw_consumer(env, "bench-raw", prefetch).await?;
    let started = Instant::now();
    let mut got = 0u64;
    while got < n {
        let delivery = next_delivery(&mut consumer, got).await?;
        got += 1;
        match acks {
            Acks::EachAwaited => {
                ch.basic_ack(delivery.delivery_tag, BasicAckOptions { multiple: false })
                    .await?;
            }
            Acks::Coalesced(every) if got.is_multiple_of(every) || got == n => {
                ch.basic_ack(delivery.delivery_tag, BasicAckOptions { multiple: true })
                    .await?;
            }
            Acks::Coalesced(_) => {}
        }
        if got.is_multiple_of(4096) {
            progress(got);
        }
    }
    let elapsed = started.elapsed();
    let _ = ch.close(200, "done".into()).await;
    let _ = conn.close(200, "done".into()).await;
    env.expect_drained(&raw_label(prefetch, acks)).await?;
    Ok(Drained::new(n, elapsed))
}

/// The row label of [`raw_events`].
#[must_use]
pub fn raw_events_label(prefetch: u16, every: u64) -> String {
    format!(
        "raw lapin prefetch {prefetch}, one confirmed event per message, multiple ack every {every}"
    )
}

/// The least a consumer can do with events on: take `n` messages from
/// `{p}.tasks`, publish one `task.succeeded` event for each (persistent, with
/// confirms, into the bench's quorum sink, as warden does) and acknowledge a
/// message only once its event is confirmed, with a `multiple` ack every
/// `every`. The same broker work as warden's events-on drain without a worker:
/// the ceiling that drain is bounded by.
///
/// # Errors
/// Broker errors, a nack, a stall, or messages left unacknowledged.
pub async fn raw_events(
    env: &BenchEnv,
    prefetch: u16,
    every: u64,
    n: u64,
    mut progress: impl FnMut(u64),
) -> anyhow::Result<Drained> {
    let (conn, ch, mut consumer) = raw_consumer(env, "bench-raw-events", prefetch).await?;
    let publish = conn.create_channel().await?;
    publish
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let exchange = env.topology.events();
    let props = BasicProperties::default()
        .with_content_type("application/json".into())
        .with_delivery_mode(PERSISTENT);
    let started = Instant::now();
    let (mut got, mut confirmed) = (0u64, 0u64);
    // Confirms come back in publish order, so the oldest one settles the
    // longest run of deliveries.
    let mut confirms = FuturesOrdered::new();
    while confirmed < n {
        tokio::select! {
            next = next_delivery(&mut consumer, got), if got < n => {
                let delivery = next?;
                got += 1;
                let event = Event {
                    id: format!("raw-{got}"),
                    kind: NOOP.to_owned(),
                    channel: None,
                    attempt: 1,
                    reason: None,
                    error: None,
                    duration_ms: 0,
                    at: chrono::Utc::now(),
                };
                let body = serde_json::to_vec(&event)?;
                let confirm = publish
                    .basic_publish(
                        exchange.as_str().into(),
                        SUCCEEDED.into(),
                        BasicPublishOptions::default(),
                        &body,
                        props.clone(),
                    )
                    .await?;
                let tag = delivery.delivery_tag;
                confirms.push_back(async move { (tag, confirm.await) });
            }
            Some((tag, confirm)) = confirms.next(), if !confirms.is_empty() => {
                anyhow::ensure!(confirm?.is_ack(), "the broker nacked an event");
                confirmed += 1;
                if confirmed.is_multiple_of(every) || confirmed == n {
                    ch.basic_ack(tag, BasicAckOptions { multiple: true }).await?;
                }
                if confirmed.is_multiple_of(4096) {
                    progress(confirmed);
                }
            }
        }
    }
    let elapsed = started.elapsed();
    let _ = publish.close(200, "done".into()).await;
    let _ = ch.close(200, "done".into()).await;
    let _ = conn.close(200, "done".into()).await;
    env.expect_drained(&raw_events_label(prefetch, every))
        .await?;
    Ok(Drained::new(n, elapsed))
}

/// A connection and channel consuming `{p}.tasks` at `prefetch`, as `name`.
async fn raw_consumer(
    env: &BenchEnv,
    name: &str,
    prefetch: u16,
) -> anyhow::Result<(Connection, Channel, Consumer)> {
    let conn = warden::amqp::broker::connect(&env.settings, name, Duration::from_secs(5)).await?;
    let ch = conn.create_channel().await?;
    ch.basic_qos(prefetch, BasicQosOptions::default()).await?;
    let consumer = ch
        .basic_consume(
            env.topology.tasks().into(),
            name.into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    Ok((conn, ch, consumer))
}

/// The raw consumer's next delivery, the `got + 1`th; an error if the broker
/// cancels it or nothing comes for [`STALL`].
async fn next_delivery(consumer: &mut Consumer, got: u64) -> anyhow::Result<Delivery> {
    match tokio::time::timeout(STALL, consumer.next()).await {
        Ok(Some(Ok(d))) => Ok(d),
        Ok(Some(Err(e))) => Err(e.into()),
        Ok(None) => anyhow::bail!("the broker cancelled the raw consumer"),
        Err(_) => anyhow::bail!("raw consumer: no delivery for {STALL:?} after {got}"),
    }
}
