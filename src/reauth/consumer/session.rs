//! One broker session of the consumer: its channels, the consume loop that
//! hands each request to its own task, and the drain at shutdown.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use lapin::options::{
    BasicCancelOptions, BasicConsumeOptions, BasicQosOptions, ConfirmSelectOptions,
};
use lapin::types::FieldTable;
use lapin::{Channel, Connection};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::context::Ctx;
use super::request::handle_delivery;
use crate::observe::admin::Health;

/// This process's broker sessions, for [`crate::supervisor`].
pub(super) struct Sessions {
    pub(super) ctx: Arc<Ctx>,
    pub(super) health: Arc<Health>,
}

impl crate::supervisor::Session for Sessions {
    async fn session(&self, conn: &Connection, shutdown: &CancellationToken) -> Result<(), String> {
        session(&self.ctx, conn, &self.health, shutdown)
            .await
            .map_err(|e| e.to_string())
    }
}

/// Why a session ended other than by shutdown; the supervisor logs it and
/// reconnects.
#[derive(Debug, thiserror::Error)]
enum SessionLost {
    /// Opening a channel, turning on confirms, the prefetch or the consumer failed.
    #[error("{0}")]
    Broker(#[from] lapin::Error),
    /// The topology could not be declared.
    #[error("declaring the topology: {0}")]
    Topology(lapin::Error),
    /// A request's outcome could not be published: it stays unacked, and the
    /// next session gets it again.
    #[error("a re-auth outcome could not be published")]
    Unsettled,
    /// The consumer failed.
    #[error("consumer error: {0}")]
    Consumer(lapin::Error),
    /// The broker cancelled the consumer (the queue was deleted, say).
    #[error("the broker cancelled the consumer")]
    Cancelled,
}

/// The channels of one session: requests come in on `consume`, outcomes go
/// out with confirms on `publish`.
struct Channels {
    consume: Channel,
    publish: Channel,
    consumer: lapin::Consumer,
    tag: String,
}

/// One broker session; `Ok` after a graceful shutdown, `Err` when it was lost.
async fn session(
    ctx: &Arc<Ctx>,
    conn: &Connection,
    health: &Health,
    shutdown: &CancellationToken,
) -> Result<(), SessionLost> {
    let Channels {
        consume,
        publish,
        mut consumer,
        tag,
    } = open(ctx, conn).await?;
    health.set_session(true, true, true);
    ctx.metrics.consumer_up.set(1);
    tracing::info!(queue = %ctx.topology.reauth(), "consuming re-auth requests");
    let tracker = TaskTracker::new();
    let result = consume_requests(ctx, &publish, &mut consumer, &tracker, health, shutdown).await;
    if result.is_ok() {
        // Shutting down. A lost session is not: the next one is ready again.
        health.set_draining();
    }
    let _ = consume
        .basic_cancel(tag.into(), BasicCancelOptions::default())
        .await;
    drain(ctx, &tracker, result.is_ok()).await;
    let _ = publish.close(200, "bye".into()).await;
    let _ = consume.close(200, "bye".into()).await;
    result
}

async fn open(ctx: &Ctx, conn: &Connection) -> Result<Channels, SessionLost> {
    let consume = conn.create_channel().await?;
    ctx.topology
        .declare(&consume)
        .await
        .map_err(SessionLost::Topology)?;
    let publish = conn.create_channel().await?;
    publish
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    consume
        .basic_qos(ctx.settings.reauth.concurrency, BasicQosOptions::default())
        .await?;
    let tag = ctx.holder.clone();
    let consumer = consume
        .basic_consume(
            ctx.topology.reauth().into(),
            tag.clone().into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    Ok(Channels {
        consume,
        publish,
        consumer,
        tag,
    })
}

/// Hands each request to a task of its own until shutdown or the session is lost.
async fn consume_requests(
    ctx: &Arc<Ctx>,
    publish: &Channel,
    consumer: &mut lapin::Consumer,
    tracker: &TaskTracker,
    health: &Health,
    shutdown: &CancellationToken,
) -> Result<(), SessionLost> {
    let lost = CancellationToken::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        health.beat();
        tokio::select! {
            biased;
            () = shutdown.cancelled() => return Ok(()),
            () = lost.cancelled() => return Err(SessionLost::Unsettled),
            _ = tick.tick() => {}
            next = consumer.next() => match next {
                Some(Ok(delivery)) => {
                    let (ctx, publish, lost) = (ctx.clone(), publish.clone(), lost.clone());
                    tracker.spawn(async move {
                        if let Err(e) = handle_delivery(&ctx, &publish, delivery).await {
                            tracing::error!(error = %e, "could not settle a re-auth request; it will be redelivered");
                            lost.cancel();
                        }
                    });
                }
                Some(Err(e)) => return Err(SessionLost::Consumer(e)),
                None => return Err(SessionLost::Cancelled),
            },
        }
    }
}

/// Waits for the requests in flight. After a graceful end they get the grace
/// period, then the logins still running are abandoned.
async fn drain(ctx: &Ctx, tracker: &TaskTracker, graceful: bool) {
    tracker.close();
    if graceful
        && tokio::time::timeout(ctx.settings.shutdown_grace, tracker.wait())
            .await
            .is_err()
    {
        tracing::warn!(
            unfinished = tracker.len(),
            "grace period over; abandoning unfinished re-auths, their requests will be redelivered"
        );
        ctx.abandon.cancel();
        // Abandoning is quick (a nack and a lease release each); bounded anyway.
        let _ = tokio::time::timeout(Duration::from_secs(5), tracker.wait()).await;
    }
}
