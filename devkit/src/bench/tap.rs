//! A TCP relay between a worker and the broker that reads the AMQP frames going past and
//! notes when the `basic.ack` covering each delivery leaves the worker: publish → ack
//! latency as the wire sees it.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use super::probe::{Samples, ns, sent_in};

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
pub(super) struct Tap {
    /// Where the worker connects instead of the broker.
    pub(super) addr: SocketAddr,
    /// Publish → ack of every delivery acked so far, nanoseconds.
    pub(super) acks: Samples,
    _stop: tokio_util::sync::DropGuard,
}

impl Tap {
    /// Listens on a free loopback port and relays each connection to `upstream`.
    pub(super) async fn start(upstream: String, clock: Instant) -> anyhow::Result<Self> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::probe::count;

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
