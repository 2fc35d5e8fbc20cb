//! Latency at a steady publish rate: publish → handler start, and publish →
//! ack on the wire.
//!
//! Every task carries its publish time (`payload.sent_ns`, on a clock shared
//! by the whole process). A bench-only handler, registered in the bench's own
//! [`Registry`], notes when it starts. The ack is seen on the wire: the worker
//! connects through [`Tap`], a small TCP relay that reads the AMQP frames going
//! past and notes when the `basic.ack` covering each delivery leaves the worker.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_trait::async_trait;
use lapin::Channel;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use secrecy::{ExposeSecret, SecretString};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use warden::amqp::envelope::Task;
use warden::amqp::publish::task_properties;
use warden::config::Settings;
use warden::handler::{Handler, Registry, TaskContext};
use warden::outcome::TaskError;
use warden::worker::Worker;

use super::env::{BenchEnv, Poller};

/// The bench-only task type.
pub const STAMP: &str = "bench.stamp";
/// The payload field holding the publish time.
const SENT: &str = "sent_ns";

/// Nanoseconds since `clock`.
fn ns(clock: Instant) -> u64 {
    u64::try_from(clock.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

type Samples = Arc<Mutex<Vec<u64>>>;

fn take(samples: &Samples) -> Vec<u64> {
    std::mem::take(
        &mut *samples
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    )
}

fn count(samples: &Samples) -> usize {
    samples
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .len()
}

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

/// The publish time in a task body, found without parsing the whole body.
fn sent_in(body: &[u8]) -> Option<u64> {
    let key = b"\"sent_ns\":";
    let at = body.windows(key.len()).position(|w| w == key)? + key.len();
    body[at..]
        .iter()
        .skip_while(|b| b.is_ascii_whitespace())
        .take_while(|b| b.is_ascii_digit())
        .fold(None, |acc: Option<u64>, d| {
            Some(acc.unwrap_or(0).checked_mul(10)? + u64::from(d - b'0'))
        })
}

/// Splits a byte stream into AMQP frames: `type u8, channel u16, size u32,
/// payload, 0xCE`.
#[derive(Debug, Default)]
struct Frames {
    /// Bytes to pass over first (the client's 8-byte protocol header).
    skip: usize,
    buf: Vec<u8>,
}

impl Frames {
    fn feed(&mut self, mut bytes: &[u8], on: &mut impl FnMut(u8, u16, &[u8])) {
        let k = self.skip.min(bytes.len());
        bytes = &bytes[k..];
        self.skip -= k;
        self.buf.extend_from_slice(bytes);
        let mut at = 0;
        while self.buf.len() - at >= 7 {
            let b = &self.buf[at..];
            let size = u32::from_be_bytes([b[3], b[4], b[5], b[6]]) as usize;
            if b.len() < 8 + size {
                break;
            }
            on(b[0], u16::from_be_bytes([b[1], b[2]]), &b[7..7 + size]);
            at += 8 + size;
        }
        self.buf.drain(..at);
    }
}

const METHOD: u8 = 1;
const BODY: u8 = 3;
const BASIC: u16 = 60;
const DELIVER: u16 = 60;
const ACK: u16 = 80;

fn method(payload: &[u8]) -> Option<(u16, u16, &[u8])> {
    Some((
        u16::from_be_bytes([*payload.first()?, *payload.get(1)?]),
        u16::from_be_bytes([*payload.get(2)?, *payload.get(3)?]),
        payload.get(4..)?,
    ))
}

/// Per channel: delivery tag → publish time, for deliveries not yet acked.
type Unacked = Arc<Mutex<HashMap<u16, BTreeMap<u64, u64>>>>;

/// Frames from the broker: remember each delivery's tag with its publish time.
fn from_broker(last: &mut HashMap<u16, u64>, unacked: &Unacked, kind: u8, ch: u16, p: &[u8]) {
    match kind {
        METHOD => {
            if let Some((BASIC, DELIVER, args)) = method(p) {
                // consumer-tag (shortstr), then the delivery tag.
                let skip = 1 + usize::from(*args.first().unwrap_or(&0));
                if let Some(tag) = args.get(skip..skip + 8) {
                    let tag = u64::from_be_bytes(tag.try_into().unwrap_or_default());
                    last.insert(ch, tag);
                }
            }
        }
        BODY => {
            if let (Some(tag), Some(sent)) = (last.remove(&ch), sent_in(p)) {
                unacked
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .entry(ch)
                    .or_default()
                    .insert(tag, sent);
            }
        }
        _ => {}
    }
}

/// Frames from the worker: a `basic.ack` settles its tag, or every tag up to
/// it with `multiple`.
fn from_worker(clock: Instant, unacked: &Unacked, acks: &Samples, kind: u8, ch: u16, p: &[u8]) {
    let Some((BASIC, ACK, args)) = method(p).filter(|_| kind == METHOD) else {
        return;
    };
    let (Some(tag), Some(bits)) = (args.get(..8), args.get(8)) else {
        return;
    };
    let tag = u64::from_be_bytes(tag.try_into().unwrap_or_default());
    let now = ns(clock);
    let mut unacked = unacked
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let Some(map) = unacked.get_mut(&ch) else {
        return;
    };
    let settled: Vec<u64> = if bits & 1 == 1 {
        let rest = map.split_off(&(tag + 1));
        std::mem::replace(map, rest).into_values().collect()
    } else {
        map.remove(&tag).into_iter().collect()
    };
    acks.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .extend(settled.into_iter().map(|sent| now.saturating_sub(sent)));
}

/// Copies one direction, reading each chunk's frames before passing it on
/// (so a delivery is always known before the worker can ack it).
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut frames: Frames,
    mut on: impl FnMut(u8, u16, &[u8]),
) {
    let mut buf = vec![0u8; 64 * 1024];
    while let Ok(k) = from.read(&mut buf).await {
        if k == 0 {
            break;
        }
        frames.feed(&buf[..k], &mut on);
        if to.write_all(&buf[..k]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

/// A relay between the worker and the broker that watches acks go by.
struct Tap {
    addr: SocketAddr,
    acks: Samples,
    _stop: tokio_util::sync::DropGuard,
}

impl Tap {
    async fn start(upstream: String, clock: Instant) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let acks = Samples::default();
        let stop = CancellationToken::new();
        let (sink, stopped) = (acks.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                let client = tokio::select! {
                    () = stopped.cancelled() => break,
                    c = listener.accept() => match c { Ok((c, _)) => c, Err(_) => break },
                };
                let (upstream, sink, stopped) = (upstream.clone(), sink.clone(), stopped.clone());
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(&upstream).await else {
                        return;
                    };
                    let _ = (client.set_nodelay(true), server.set_nodelay(true));
                    let ((cr, cw), (sr, sw)) = (client.into_split(), server.into_split());
                    let unacked = Unacked::default();
                    let mut last = HashMap::new();
                    let u = unacked.clone();
                    let down = pump(sr, cw, Frames::default(), move |k, ch, p| {
                        from_broker(&mut last, &u, k, ch, p);
                    });
                    let client_header = Frames {
                        skip: 8,
                        buf: Vec::new(),
                    };
                    let up = pump(cr, sw, client_header, move |k, ch, p| {
                        from_worker(clock, &unacked, &sink, k, ch, p);
                    });
                    tokio::select! {
                        () = stopped.cancelled() => {}
                        _ = futures::future::join(down, up) => {}
                    }
                });
            }
        });
        Ok(Self {
            addr,
            acks,
            _stop: stop.drop_guard(),
        })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_publish_time_is_found_in_a_task_body() {
        let t = Task::new(STAMP, serde_json::json!({ SENT: 1_234_567_u64 }));
        assert_eq!(sent_in(&t.to_body()), Some(1_234_567));
        assert_eq!(sent_in(b"{\"id\":\"x\"}"), None);
    }

    fn frame(kind: u8, ch: u16, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![kind];
        f.extend_from_slice(&ch.to_be_bytes());
        f.extend_from_slice(&u32::try_from(payload.len()).unwrap().to_be_bytes());
        f.extend_from_slice(payload);
        f.push(0xCE);
        f
    }

    fn basic(method: u16, args: &[u8]) -> Vec<u8> {
        let mut p = BASIC.to_be_bytes().to_vec();
        p.extend_from_slice(&method.to_be_bytes());
        p.extend_from_slice(args);
        p
    }

    #[test]
    fn a_multiple_ack_settles_every_delivery_up_to_its_tag() {
        let clock = Instant::now();
        let (unacked, acks) = (Unacked::default(), Samples::default());
        let mut last = HashMap::new();
        let mut down = Frames::default();
        let mut stream = Vec::new();
        for tag in 1..=3u64 {
            let mut args = vec![3];
            args.extend_from_slice(b"ctg");
            args.extend_from_slice(&tag.to_be_bytes());
            stream.extend(frame(METHOD, 1, &basic(DELIVER, &args)));
            stream.extend(frame(2, 1, &[0; 14]));
            stream.extend(frame(BODY, 1, b"{\"payload\":{\"sent_ns\":0}}"));
        }
        // Fed in awkward pieces, as TCP may deliver it.
        for chunk in stream.chunks(5) {
            down.feed(chunk, &mut |k, ch, p| {
                from_broker(&mut last, &unacked, k, ch, p)
            });
        }
        assert_eq!(unacked.lock().unwrap()[&1].len(), 3);

        let mut up = Frames {
            skip: 8,
            buf: Vec::new(),
        };
        let mut stream = b"AMQP\x00\x00\x09\x01".to_vec();
        let mut ack = 2u64.to_be_bytes().to_vec();
        ack.push(1);
        stream.extend(frame(METHOD, 1, &basic(ACK, &ack)));
        up.feed(&stream, &mut |k, ch, p| {
            from_worker(clock, &unacked, &acks, k, ch, p);
        });
        assert_eq!(count(&acks), 2);
        assert_eq!(unacked.lock().unwrap()[&1].len(), 1);
    }
}
