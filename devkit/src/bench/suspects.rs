//! The `suspects` scenario: a `warden worker` process draining through a TCP
//! proxy that the bench cuts with a full window of deliveries in flight.
//! Every delivery the broker hands out again is a suspect and runs in the
//! sandbox; the figures say how fast those suspects drain and how long the
//! worker takes to get back to the speed it had before the cut.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use super::env::{BenchEnv, Poller};
use super::procs::{ChildConfig, Worker};

/// What one cut cost.
#[derive(Debug, Clone, Copy)]
pub struct Cut {
    /// Drain rate over the second before the cut, msg/s.
    pub before: f64,
    /// Deliveries run in the sandbox after the cut.
    pub suspects: f64,
    /// From the cut to the last suspect started, ms.
    pub suspects_ms: f64,
    /// From the cut until a 200 ms window drains at 90 % of `before`, ms.
    pub recovered_ms: f64,
}

/// How often the worker's counters are read.
const SAMPLE: Duration = Duration::from_millis(20);
/// The window the recovery is judged on.
const WINDOW: Duration = Duration::from_millis(200);

/// Drains `n` waiting tasks with one worker at `concurrency`, cutting its
/// connection once a third are done.
///
/// # Errors
/// The worker fails or stalls, or messages are left behind.
pub async fn measure(
    env: &BenchEnv,
    config: &ChildConfig,
    concurrency: u16,
    n: u64,
    mut progress: impl FnMut(u64),
) -> anyhow::Result<Cut> {
    let proxy = Proxy::start(broker_addr(env)?).await?;
    let url = proxied_url(env, proxy.addr)?;
    let worker = Worker::spawn_with(config, concurrency, false, None, Some(&url))?;
    worker.wait_ready().await?;
    let started = Instant::now();
    let mut samples: Vec<(Duration, u64, u64)> = Vec::new();
    let mut poll = Poller::new("the worker to drain through the cut", SAMPLE);
    let mut cut_at: Option<Duration> = None;
    let mut last = 0;
    loop {
        let done = worker.succeeded().await?;
        let suspects = worker.counter("warden_suspects_total").await?;
        let t = started.elapsed();
        samples.push((t, done, suspects));
        if cut_at.is_none() && done >= n / 3 {
            proxy.cut();
            cut_at = Some(t);
        }
        // Redelivered tasks that had already succeeded run again, so the
        // success count reaches n before the queue is empty.
        if done >= n
            && env.depth().await? == 0
            && worker.counter("warden_tasks_in_flight").await? == 0
        {
            break;
        }
        let moved = done != last;
        last = done;
        progress(done);
        poll.wait(moved).await?;
    }
    worker.stop().await?;
    proxy.stop();
    env.expect_drained("the worker cut mid-drain").await?;
    let cut_at = cut_at.ok_or_else(|| anyhow::anyhow!("the drain ended before the cut"))?;
    Ok(analyse(&samples, cut_at))
}

/// The figures of a timeline of (time, succeeded, suspects) samples.
fn analyse(samples: &[(Duration, u64, u64)], cut_at: Duration) -> Cut {
    let rate = |from: Duration, to: Duration| -> Option<f64> {
        let a = samples.iter().find(|s| s.0 >= from)?;
        let b = samples.iter().rev().find(|s| s.0 <= to)?;
        let secs = b.0.checked_sub(a.0)?.as_secs_f64();
        #[allow(clippy::cast_precision_loss)]
        (secs > 0.0).then(|| b.1.saturating_sub(a.1) as f64 / secs)
    };
    let before = rate(cut_at.saturating_sub(Duration::from_secs(1)), cut_at).unwrap_or(0.0);
    let suspects = samples.last().map_or(0, |s| s.2);
    let last_suspect = samples
        .iter()
        .find(|s| s.2 >= suspects)
        .map_or(cut_at, |s| s.0);
    let recovered = samples
        .iter()
        .filter(|s| s.0 > cut_at)
        .find(|s| rate(s.0, s.0 + WINDOW).is_some_and(|r| r >= 0.9 * before))
        .map_or_else(|| samples.last().map_or(cut_at, |s| s.0), |s| s.0);
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    #[allow(clippy::cast_precision_loss)]
    Cut {
        before,
        suspects: suspects as f64,
        suspects_ms: ms(last_suspect.saturating_sub(cut_at)),
        recovered_ms: ms(recovered.saturating_sub(cut_at)),
    }
}

fn broker_addr(env: &BenchEnv) -> anyhow::Result<SocketAddr> {
    use secrecy::ExposeSecret;
    let uri: lapin::uri::AMQPUri = env
        .settings
        .amqp_url
        .expose_secret()
        .parse()
        .map_err(|e: String| anyhow::anyhow!(e))?;
    let host = if uri.authority.host == "localhost" {
        "127.0.0.1".to_owned()
    } else {
        uri.authority.host.clone()
    };
    Ok(format!("{host}:{}", uri.authority.port).parse()?)
}

/// The bench's broker URL with the proxy's address in place of the broker's.
fn proxied_url(env: &BenchEnv, proxy: SocketAddr) -> anyhow::Result<String> {
    use secrecy::ExposeSecret;
    let mut url = url::Url::parse(env.settings.amqp_url.expose_secret())?;
    url.set_host(Some(&proxy.ip().to_string()))?;
    url.set_port(Some(proxy.port()))
        .map_err(|()| anyhow::anyhow!("the broker URL cannot take a port"))?;
    Ok(url.to_string())
}

/// A TCP proxy to the broker whose connections can all be cut at once.
struct Proxy {
    addr: SocketAddr,
    stop: CancellationToken,
    live: Arc<Mutex<Vec<CancellationToken>>>,
}

impl Proxy {
    async fn start(upstream: SocketAddr) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let stop = CancellationToken::new();
        let live: Arc<Mutex<Vec<CancellationToken>>> = Arc::default();
        let (accepting, conns) = (stop.clone(), live.clone());
        tokio::spawn(async move {
            loop {
                let client = tokio::select! {
                    () = accepting.cancelled() => return,
                    accepted = listener.accept() => match accepted {
                        Ok((c, _)) => c,
                        Err(_) => continue,
                    },
                };
                let cut = accepting.child_token();
                if let Ok(mut live) = conns.lock() {
                    live.push(cut.clone());
                }
                tokio::spawn(pipe(client, upstream, cut));
            }
        });
        Ok(Self { addr, stop, live })
    }

    /// Drops every open connection; new ones are accepted.
    fn cut(&self) {
        if let Ok(mut live) = self.live.lock() {
            for c in live.drain(..) {
                c.cancel();
            }
        }
    }

    fn stop(&self) {
        self.stop.cancel();
    }
}

async fn pipe(mut client: TcpStream, upstream: SocketAddr, cut: CancellationToken) {
    let Ok(mut server) = TcpStream::connect(upstream).await else {
        return;
    };
    tokio::select! {
        () = cut.cancelled() => {}
        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recovery_is_the_first_window_back_at_nine_tenths_of_the_speed_before_the_cut() {
        // 1,000 msg/s for 2 s, a stall of 500 ms with 50 suspects, then 1,000
        // msg/s again.
        let mut samples = Vec::new();
        for ms in (0..=4000u64).step_by(20) {
            let t = Duration::from_millis(ms);
            let done = match ms {
                0..=2000 => ms,
                2001..=2500 => 2000,
                _ => 2000 + (ms - 2500),
            };
            let suspects = if ms >= 2600 { 50 } else { 0 };
            samples.push((t, done, suspects));
        }
        let cut = analyse(&samples, Duration::from_millis(2000));
        assert!((cut.before - 1000.0).abs() < 1.0, "{cut:?}");
        assert!((cut.suspects - 50.0).abs() < f64::EPSILON);
        assert!((cut.suspects_ms - 600.0).abs() < 1.0, "{cut:?}");
        assert!((cut.recovered_ms - 500.0).abs() < 30.0, "{cut:?}");
    }
}
