//! `warden worker`: consumes `{prefix}.tasks` and never falls over.
//!
//! Shape, after mini-redis and crates.io's background worker:
//! - [`run`] hands its sessions to [`crate::supervisor`] (shared with
//!   `warden reauth`): connect with backoff, run a session, and on any loss
//!   (connection, channel, consumer cancelled by the broker) rebuild
//!   everything from scratch. Only `shutdown` ends it.
//! - A session is one `select!` over the consumer stream, the shutdown token and
//!   a heartbeat tick. Every delivery runs in its own tokio task
//!   ([`process::process`]), so a slow handler blocks nothing and a panic is an
//!   outcome, not a crash.
//! - A suspect delivery (redelivered after a session ended, or of a type
//!   isolated by configuration) runs in a [`sandbox`] child process instead,
//!   so a task that kills its process is found and dead-lettered as `crashed`
//!   after at most one crash of the worker.
//! - Settling a delivery means publishing its copy (retry, park, dead) and its
//!   event with publisher confirms, *then* acknowledging it through the
//!   coalescing [`ack`] task. A crash anywhere before the ack means the broker
//!   redelivers: at-least-once, never lost.

pub mod ack;
mod process;
pub mod sandbox;
mod settle;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use lapin::options::{
    BasicCancelOptions, BasicConsumeOptions, BasicQosOptions, ConfirmSelectOptions,
};
use lapin::types::FieldTable;
use lapin::{Channel, Connection};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::amqp::topology::Topology;
use crate::channels::{Channels, TokenRefreshed};
use crate::config::Settings;
use crate::handler::Registry;
use crate::observe::admin::{AdminState, Health};
use crate::observe::metrics::Metrics;
use crate::outcome::RetryPolicy;

/// Everything a delivery's task needs, shared by all tasks of one session.
struct SessionCtx {
    settings: Arc<Settings>,
    registry: Arc<Registry>,
    topology: Topology,
    policy: RetryPolicy,
    publish: Channel,
    metrics: Arc<Metrics>,
    channels: Option<Arc<Channels>>,
    sandbox: sandbox::Sandbox,
    /// The connection's negotiated frame size: every copy must fit in one.
    frame_max: u32,
}

/// How a session ended.
enum SessionEnd {
    /// Shutdown was requested and the drain is complete.
    Shutdown,
    /// The broker session was lost; reconnect.
    Lost(String),
}

/// A worker: settings, handlers, health and metrics.
#[derive(Debug, Clone)]
pub struct Worker {
    settings: Arc<Settings>,
    registry: Arc<Registry>,
    health: Arc<Health>,
    metrics: Arc<Metrics>,
    channels: Option<Arc<Channels>>,
    sandbox: sandbox::Sandbox,
}

/// `warden worker`: the handlers and channels of `settings`, then [`run`].
///
/// # Errors
/// The token store cannot be opened (when channels are used), or [`run`]'s.
pub async fn serve(settings: Settings, shutdown: CancellationToken) -> anyhow::Result<()> {
    let registry = Registry::from_settings(&settings)?;
    let channels = if settings.uses_channels() {
        Some(Arc::new(Channels::new(
            crate::channels::open_store(&settings).await?,
        )))
    } else {
        None
    };
    run(settings, registry, channels, shutdown).await
}

/// Runs a worker with its admin server until `shutdown` is cancelled, then
/// drains and returns.
///
/// In a process started as a sandbox (see [`sandbox`]) it runs the sandbox
/// instead, with the same `registry`: this is how a binary built on the
/// library gets the sandbox with its own handlers and no code of its own.
///
/// # Errors
/// Only when the admin server cannot bind; broker trouble is retried forever.
pub async fn run(
    settings: Settings,
    registry: Registry,
    channels: Option<Arc<Channels>>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    if let Some(socket) = sandbox::child_socket() {
        return sandbox::child::serve(&socket, move |_| Ok(registry)).await;
    }
    let mut worker = Worker::new(settings, registry);
    if let Some(c) = channels {
        worker = worker.with_channels(c);
    }
    let listener = crate::observe::admin::bind(worker.settings.admin_addr).await?;
    let admin_stop = CancellationToken::new();
    let admin = tokio::spawn(crate::observe::admin::serve(
        listener,
        worker.admin_state(),
        admin_stop.clone(),
    ));
    // On a runtime thread, not the caller's (in `main`, the thread that only
    // blocks on the whole command): a task spawned from a runtime thread goes
    // to that thread's own queue, one spawned from outside goes through the
    // shared queue and wakes a parked thread for every delivery (measured:
    // about 0.6 thread switches per task inline, 0.5 spawned).
    let consuming = worker.clone();
    tokio::spawn(async move { consuming.run(shutdown).await }).await?;
    admin_stop.cancel();
    admin.await??;
    Ok(())
}

impl Worker {
    /// A worker with fresh health and metrics.
    #[must_use]
    pub fn new(settings: Settings, registry: Registry) -> Self {
        let health = Arc::new(Health::new(settings.liveness_limit));
        let settings = Arc::new(settings);
        let metrics = Arc::new(Metrics::new());
        let sandbox = sandbox::Sandbox::new(
            settings.clone(),
            metrics.clone(),
            sandbox::Command::this_process(),
        );
        Self {
            settings,
            registry: Arc::new(registry),
            health,
            metrics,
            channels: None,
            sandbox,
        }
    }

    /// Starts sandbox processes with `command` instead of this process's own
    /// command line: for a worker running inside a program that is not a
    /// worker (a bench, a test, the demo).
    #[must_use]
    pub fn with_sandbox_command(mut self, command: sandbox::Command) -> Self {
        self.sandbox = sandbox::Sandbox::new(self.settings.clone(), self.metrics.clone(), command);
        self
    }

    /// Checks channel status and tokens before running tasks that name a
    /// channel, and parks or dead-letters them as the status says.
    #[must_use]
    pub fn with_channels(mut self, channels: Arc<Channels>) -> Self {
        self.channels = Some(channels);
        self
    }

    /// State for the admin server.
    #[must_use]
    pub fn admin_state(&self) -> AdminState {
        AdminState {
            health: self.health.clone(),
            metrics: self.metrics.clone(),
        }
    }

    /// Consumes until `shutdown`, reconnecting as often as needed.
    pub async fn run(&self, shutdown: CancellationToken) {
        tracing::info!(
            broker = %self.settings.amqp_url_redacted(),
            prefix = %self.settings.prefix,
            concurrency = self.settings.concurrency,
            handlers = ?self.registry.types(),
            "worker starting"
        );
        crate::supervisor::supervise(
            &self.settings,
            "worker",
            &self.health,
            &self.metrics,
            self,
            &shutdown,
        )
        .await;
        tracing::info!("worker stopped");
    }

    /// One broker session: set up, consume until shutdown or a loss, then
    /// drain. `Err` means it could not be set up.
    async fn session(
        &self,
        conn: &Connection,
        shutdown: &CancellationToken,
    ) -> Result<SessionEnd, String> {
        let mut open = self.open(conn).await?;
        let acks = Arc::new(ack::Ledger::new(ack::Coalesce::for_prefetch(
            self.settings.prefetch(),
        )));
        let acker = tokio::spawn(ack::run(open.consume.clone(), acks.clone()));
        // Cancelled when this session can no longer settle anything: running tasks
        // then stop and the broker redelivers their messages.
        let abandon = CancellationToken::new();
        let tracker = TaskTracker::new();
        let end = self
            .consume(&mut open, &acks, &abandon, &tracker, shutdown)
            .await;
        if let SessionEnd::Lost(_) = end {
            abandon.cancel();
            acks.close();
            return Ok(end);
        }
        self.drain(&open, &abandon, &tracker).await;
        // The acker flushes what the drained tasks settled before the
        // channels close: an ack lost here would be a redelivery.
        acks.close();
        drop(open.ctx);
        let _ = acker.await;
        let _ = open.publish.close(200, "shutdown".into()).await;
        let _ = open.consume.close(200, "shutdown".into()).await;
        Ok(SessionEnd::Shutdown)
    }

    /// Declares the topology, opens the consuming and the confirming channel,
    /// starts consuming and listens for token notices.
    async fn open(&self, conn: &Connection) -> Result<Open, String> {
        let s = &self.settings;
        let topology = Topology::new(s);
        let consume = conn
            .create_channel()
            .await
            .map_err(|e| format!("opening a channel: {e}"))?;
        topology
            .declare(&consume)
            .await
            .map_err(|e| crate::amqp::topology::explain_declare_error(&e, &s.prefix))?;
        let publish = conn
            .create_channel()
            .await
            .map_err(|e| format!("opening a channel: {e}"))?;
        publish
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(|e| e.to_string())?;
        // Prefetch is applied on every new channel: it does not survive reconnects.
        consume
            .basic_qos(s.prefetch(), BasicQosOptions::default())
            .await
            .map_err(|e| e.to_string())?;
        let tag = crate::amqp::broker::connection_name(s, "worker");
        let consumer = consume
            .basic_consume(
                topology.tasks().into(),
                tag.clone().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| format!("consuming {}: {e}", topology.tasks()))?;
        self.health.set_session(true, true, true);
        self.metrics.consumer_up.set(1);
        tracing::info!(queue = %topology.tasks(), "consuming");

        let ctx = Arc::new(SessionCtx {
            settings: s.clone(),
            registry: self.registry.clone(),
            policy: RetryPolicy {
                max_attempts: s.retry.max_attempts,
                tiers: topology.tier_delays().len(),
            },
            topology,
            publish: publish.clone(),
            metrics: self.metrics.clone(),
            channels: self.channels.clone(),
            sandbox: self.sandbox.clone(),
            frame_max: conn.configuration().frame_max(),
        });
        if let Some(channels) = &self.channels {
            // Notices may have been missed while disconnected.
            channels.clear();
            let notices = token_notices(conn, &ctx.topology)
                .await
                .map_err(|e| format!("listening on {}: {e}", ctx.topology.tokens()))?;
            tokio::spawn(forget_refreshed(notices, channels.clone()));
        }
        Ok(Open {
            consume,
            publish,
            consumer,
            tag,
            ctx,
        })
    }

    /// The consumer loop: one delivery per free handler slot, each processed
    /// on its own task, until shutdown or until the session is lost.
    async fn consume(
        &self,
        open: &mut Open,
        acks: &Arc<ack::Ledger>,
        abandon: &CancellationToken,
        tracker: &TaskTracker,
        shutdown: &CancellationToken,
    ) -> SessionEnd {
        let s = &self.settings;
        let mut tick =
            tokio::time::interval((s.liveness_limit / 4).max(Duration::from_millis(250)));
        // A delivery is taken from the consumer only with a handler slot in
        // hand; the task gives the slot back when its handler is done, before
        // it waits for confirms. Deliveries beyond the slots wait in lapin's
        // buffer, unstarted: at shutdown the broker simply gets them back.
        let slots = Arc::new(Semaphore::new(usize::from(s.concurrency)));
        let mut slot: Option<OwnedSemaphorePermit> = None;

        // Made once, not per delivery: each one registers a waiter with its token.
        let stopping = shutdown.cancelled();
        let abandoned = abandon.cancelled();
        tokio::pin!(stopping, abandoned);

        loop {
            self.health.beat();
            if let Some(stall) = self.registry.loop_stall() {
                stall.point().await;
            }
            tokio::select! {
                biased;
                () = &mut stopping => return SessionEnd::Shutdown,
                () = &mut abandoned => return SessionEnd::Lost("a copy or event could not be published".into()),
                _ = tick.tick() => {}
                permit = slots.clone().acquire_owned(), if slot.is_none() => {
                    slot = permit.ok();
                }
                next = open.consumer.next(), if slot.is_some() => match next {
                    Some(Ok(delivery)) => {
                        acks.started(delivery.delivery_tag);
                        let permit = slot.take().expect("guarded by slot.is_some()");
                        tracker.spawn(process::process(open.ctx.clone(), delivery, permit, acks.clone(), abandon.clone()));
                    }
                    Some(Err(e)) => return SessionEnd::Lost(format!("consumer error: {e}")),
                    None => return SessionEnd::Lost("the broker cancelled the consumer".into()),
                },
            }
        }
    }

    /// Graceful drain: stop deliveries first, so nothing new starts, then give
    /// running tasks the grace period to finish and settle.
    async fn drain(&self, open: &Open, abandon: &CancellationToken, tracker: &TaskTracker) {
        let grace = self.settings.shutdown_grace;
        self.health.set_draining();
        let _ = open
            .consume
            .basic_cancel(open.tag.as_str().into(), BasicCancelOptions::default())
            .await;
        tracker.close();
        let running = tracker.len();
        if running > 0 {
            tracing::info!(running, grace = ?grace, "draining in-flight tasks");
        }
        if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
            tracing::warn!(
                unfinished = tracker.len(),
                "grace period over; leaving unfinished tasks unacked for the broker to redeliver"
            );
            abandon.cancel();
            tracker.wait().await;
        }
    }
}

/// A session's channels, consumer and shared context, once set up.
struct Open {
    consume: lapin::Channel,
    publish: lapin::Channel,
    consumer: lapin::Consumer,
    tag: String,
    ctx: Arc<SessionCtx>,
}

impl crate::supervisor::Session for Worker {
    async fn session(&self, conn: &Connection, shutdown: &CancellationToken) -> Result<(), String> {
        match Worker::session(self, conn, shutdown).await {
            Ok(SessionEnd::Shutdown) => Ok(()),
            Ok(SessionEnd::Lost(why)) | Err(why) => Err(why),
        }
    }
}

/// An exclusive, server-named queue bound to `{prefix}.tokens`: this worker's
/// copy of every "token refreshed" notice.
async fn token_notices(conn: &Connection, topology: &Topology) -> lapin::Result<lapin::Consumer> {
    let ch = conn.create_channel().await?;
    crate::amqp::topology::private_consumer(&ch, &topology.tokens(), &[""], true).await
}

/// Drops the cached state of every channel whose token was refreshed, so its
/// parked tasks run with the new token when they come back.
async fn forget_refreshed(mut notices: lapin::Consumer, channels: Arc<Channels>) {
    while let Some(Ok(d)) = notices.next().await {
        match serde_json::from_slice::<TokenRefreshed>(&d.data) {
            Ok(n) => {
                // A new token, or a re-auth that failed: either way the
                // cached state is stale.
                tracing::info!(channel = %n.channel, version = n.version, "channel changed; forgetting its cached state");
                channels.invalidate(&n.channel);
            }
            Err(e) => tracing::warn!(error = %e, "ignoring an unreadable token notice"),
        }
    }
}
