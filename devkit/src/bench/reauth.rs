//! The `reauth` scenario: how long a channel is out of service after the
//! platform revokes its token.
//!
//! Everything runs in this process on the bench's prefix, as `warden-dev demo`
//! runs it: the simulated provider, a throwaway SQLite token store, the worker
//! (with its channel gate and the `post.publish` HTTP handler) and the
//! `warden reauth` consumer driving Chromium. Each run revokes channel
//! `acme-main` at the provider (access *and* refresh token, so only a browser
//! login heals it), publishes one `post.publish` task, and times from the
//! provider's first 401 for the channel to
//! - `reauth.succeeded`, which the consumer publishes right after storing the
//!   new token, and
//! - that task's `task.succeeded`: parked, released and run with the new token.
//!
//! *Cold* runs start a fresh re-auth consumer each, so the login launches the
//! Playwright driver and Chromium as in a new pod; *warm* runs share one whose
//! browser is already up (after one unmeasured login).

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use lapin::options::BasicAckOptions;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use warden::amqp::events::Event;
use warden::amqp::topology::Topology;
use warden::channels::Channels;
use warden::config::Settings;
use warden::handler::Registry;
use warden::reauth::consumer::{FAILED, SUCCEEDED};
use warden::worker::Worker;

use super::env::{BenchEnv, Poller};
use crate::demo::ReauthDemo;

/// The channel every run revokes and heals.
const CHANNEL: &str = "acme-main";
/// One run must finish within this, or the bench stops with an error.
const RUN_LIMIT: Duration = Duration::from_secs(90);

/// One measured revocation.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// First 401 → `reauth.succeeded` (the token is stored), ms.
    pub stored_ms: f64,
    /// First 401 → the parked task's `task.succeeded`, ms.
    pub done_ms: f64,
    /// How long `warden reauth` handled the request (lease, login, token
    /// exchange, store), as its `reauth.succeeded` event reports, ms.
    pub handled_ms: f64,
}

/// The worker and the provider that the runs share.
struct Stage {
    demo: ReauthDemo,
    settings: Settings,
    events: lapin::Consumer,
    stop: CancellationToken,
    worker: JoinHandle<()>,
}

/// A running `warden reauth` consumer.
struct Reauth {
    stop: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Reauth {
    /// Starts a consumer (with its own browser, launched at its first login)
    /// and waits until it consumes `{p}.reauth`.
    async fn start(env: &BenchEnv, stage: &Stage) -> anyhow::Result<Self> {
        let stop = stage.stop.child_token();
        let task = tokio::spawn(warden::reauth::consumer::run(
            stage.settings.clone(),
            stage.demo.store.clone(),
            stop.clone(),
        ));
        let queue = Topology::new(&stage.settings).reauth();
        let mut poll = Poller::new("the re-auth consumer to start consuming", POLL);
        while env.consumers_of(&queue).await? == 0 {
            anyhow::ensure!(!task.is_finished(), "the re-auth consumer stopped at start");
            poll.wait(false).await?;
        }
        Ok(Self { stop, task })
    }

    /// Stops it as SIGTERM would: the browser and the driver exit with it.
    async fn stop(self) -> anyhow::Result<()> {
        self.stop.cancel();
        self.task.await?
    }
}

const POLL: Duration = Duration::from_millis(5);

/// Measures `runs` cold and `runs` warm revocations; `progress` gets a line
/// per run.
///
/// # Errors
/// No browser here, a re-auth that fails, or a run over [`RUN_LIMIT`].
pub async fn measure(
    env: &BenchEnv,
    runs: u32,
    shutdown: &CancellationToken,
    mut progress: impl FnMut(String),
) -> anyhow::Result<(Vec<Sample>, Vec<Sample>)> {
    let mut settings = env.settings.clone();
    anyhow::ensure!(
        ReauthDemo::browser_ready(&settings),
        "{}",
        ReauthDemo::WHY_SKIPPED
    );
    settings.events = true;
    // Every run revokes the same channel right after the last heal: the
    // throttle against platforms that keep refusing fresh tokens would time
    // itself, not the heal.
    settings.reauth.min_interval = Duration::ZERO;
    // The worker does not serve admin here; the consumer's must not collide.
    settings.admin_addr = "127.0.0.1:0".parse()?;
    let demo = ReauthDemo::start(&mut settings).await?;
    let ch = env.conn().create_channel().await?;
    let topology = Topology::new(&settings);
    let events = warden::amqp::topology::private_consumer(
        &ch,
        &topology.events(),
        &[warden::amqp::events::SUCCEEDED, SUCCEEDED, FAILED],
        false,
    )
    .await?;
    let registry = Registry::from_settings(&settings)?;
    let worker = Worker::new(settings.clone(), registry)
        .with_channels(Arc::new(Channels::new(demo.store.clone())));
    let stop = shutdown.child_token();
    let _stop_on_exit = stop.clone().drop_guard();
    let running = tokio::spawn({
        let stop = stop.clone();
        async move { worker.run(stop).await }
    });
    let mut stage = Stage {
        demo,
        settings,
        events,
        stop,
        worker: running,
    };

    let mut cold = Vec::new();
    for i in 1..=runs {
        progress(format!("re-auth cold {i}/{runs}"));
        let reauth = Reauth::start(env, &stage).await?;
        let sample = stage.revoke_and_wait().await;
        reauth.stop().await?;
        cold.push(sample?);
    }
    let mut warm = Vec::new();
    let reauth = Reauth::start(env, &stage).await?;
    progress("re-auth warm-up".to_owned());
    let measured = async {
        stage.revoke_and_wait().await?;
        for i in 1..=runs {
            progress(format!("re-auth warm {i}/{runs}"));
            warm.push(stage.revoke_and_wait().await?);
        }
        anyhow::Ok(())
    }
    .await;
    reauth.stop().await?;
    measured?;

    stage.stop.cancel();
    stage.worker.await?;
    let _ = ch.close(200, "bye".into()).await;
    Ok((cold, warm))
}

impl Stage {
    /// One revocation, from the platform's first 401 to the task done.
    async fn revoke_and_wait(&mut self) -> anyhow::Result<Sample> {
        let state = &self.demo.provider.state;
        let before = state.last_rejected(CHANNEL);
        state.revoke(CHANNEL);
        let task = ReauthDemo::posts(1).remove(0);
        let id = task.id.clone();
        let publisher = warden::amqp::publish::Publisher::connect(&self.settings).await?;
        let published = publisher.publish_all(vec![task], 1, || {}).await;
        publisher.close().await;
        published?;

        let deadline = tokio::time::Instant::now() + RUN_LIMIT;
        let (mut stored, mut handled_ms) = (None, 0);
        let done = loop {
            let next = tokio::time::timeout_at(deadline, self.events.next()).await;
            let Ok(Some(delivery)) = next else {
                anyhow::bail!(
                    "channel {CHANNEL} was not healed and its task not done within {}s",
                    RUN_LIMIT.as_secs()
                );
            };
            let delivery = delivery?;
            let at = Instant::now();
            delivery.ack(BasicAckOptions::default()).await?;
            let event: Event = serde_json::from_slice(&delivery.data)?;
            match delivery.routing_key.as_str() {
                SUCCEEDED => {
                    stored = Some(at);
                    handled_ms = event.duration_ms;
                }
                FAILED => anyhow::bail!(
                    "re-authentication failed: {}",
                    event.reason.unwrap_or_default()
                ),
                warden::amqp::events::SUCCEEDED if event.id == id => break at,
                _ => {}
            }
        };
        let first_401 = state
            .last_rejected(CHANNEL)
            .filter(|t| Some(*t) != before)
            .ok_or_else(|| anyhow::anyhow!("the task ran without a 401: was the token revoked?"))?;
        let stored =
            stored.ok_or_else(|| anyhow::anyhow!("the task ran before the token was stored"))?;
        let ms = |t: Instant| t.saturating_duration_since(first_401).as_secs_f64() * 1e3;
        #[allow(clippy::cast_precision_loss)]
        Ok(Sample {
            stored_ms: ms(stored),
            done_ms: ms(done),
            handled_ms: handled_ms as f64,
        })
    }
}
