//! `warden topology migrate`: brings queues declared with other arguments
//! (by an older warden, whose delivery limit and park time were queue
//! arguments) to the arguments this warden declares, without losing a
//! message.
//!
//! A queue's arguments cannot change in place, so for each queue the broker
//! reports as different: its messages move to `{queue}.migrating`, the queue
//! is deleted and declared anew, and the messages move back. While the task
//! queue is away its stand-in is bound to `{prefix}.tasks`, so producers that
//! keep publishing lose nothing; a task published while the old queue is
//! being emptied reaches both and arrives twice, which at-least-once
//! delivery allows (stop the producers too to avoid it).

use anyhow::Context as _;
use lapin::options::{
    BasicAckOptions, BasicGetOptions, ConfirmSelectOptions, QueueBindOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, Connection};

use crate::amqp::publish::{Outgoing, publish_confirmed};
use crate::amqp::topology::{ArgumentMismatch, Topology};
use crate::config::Settings;

/// One queue brought to the current arguments.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Migrated {
    /// The queue.
    pub queue: String,
    /// The argument that differed.
    pub argument: String,
    /// Its old value.
    pub from: String,
    /// Its new value.
    pub to: String,
    /// Messages moved aside and back.
    pub messages: u64,
}

/// Migrates every queue of `settings.prefix` whose arguments differ; returns
/// what it changed (nothing when everything already matches).
///
/// # Errors
/// A queue still has consumers (stop the workers first), or a broker error.
pub async fn run(settings: &Settings) -> anyhow::Result<Vec<Migrated>> {
    let conn = crate::amqp::broker::connect(settings, "migrate", std::time::Duration::from_secs(5))
        .await?;
    let topology = Topology::new(settings);
    let mut done = Vec::new();
    // Each pass fixes the first queue the broker objects to; there are only
    // so many queues.
    for _ in 0..=topology.queues().len() {
        let ch = conn.create_channel().await?;
        let Err(e) = topology.declare(&ch).await else {
            let _ = conn.close(200, "bye".into()).await;
            return Ok(done);
        };
        let mismatch = ArgumentMismatch::parse(&e.to_string())
            .ok_or_else(|| anyhow::anyhow!("declaring the topology: {e}"))?;
        let messages = move_through(&conn, &topology, &mismatch.queue).await?;
        tracing::info!(queue = %mismatch.queue, argument = %mismatch.argument, messages, "queue migrated");
        done.push(Migrated {
            queue: mismatch.queue,
            argument: mismatch.argument,
            from: mismatch.current,
            to: mismatch.declared,
            messages,
        });
    }
    anyhow::bail!("queues kept differing after {} migrations", done.len())
}

/// Moves `queue`'s messages aside, declares it anew, and moves them back.
async fn move_through(conn: &Connection, topology: &Topology, queue: &str) -> anyhow::Result<u64> {
    let ch = conn.create_channel().await?;
    ch.confirm_select(ConfirmSelectOptions::default()).await?;
    let consumers = crate::amqp::topology::inspect(&ch, queue)
        .await?
        .consumer_count();
    if consumers > 0 {
        anyhow::bail!(
            "queue '{queue}' has {consumers} consumer(s): stop every worker (and `warden reauth`) \
             of this prefix, then run `warden topology migrate` again"
        );
    }
    let aside = format!("{queue}.migrating");
    let mut quorum = FieldTable::default();
    quorum.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    ch.queue_declare(
        aside.as_str().into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        quorum,
    )
    .await
    .with_context(|| format!("declaring {aside}"))?;
    let is_tasks = queue == topology.tasks();
    if is_tasks {
        // Producers keep publishing while the task queue is away.
        bind_all(&ch, &aside, &topology.tasks(), true).await?;
    }
    let moved = shovel(&ch, queue, &aside).await?;
    // Quorum queues refuse `if_empty`, and the connection with it. Nothing
    // is lost in between: only producers still publish, and for the task
    // queue the stand-in is bound too and gets every message the old queue
    // gets.
    ch.queue_delete(queue.into(), QueueDeleteOptions::default())
        .await?;
    // Declares the queue anew (and binds it); another queue further on may
    // still differ, which the next pass of `run` handles.
    let _ = topology.declare(&conn.create_channel().await?).await;
    let back = conn.create_channel().await?;
    back.confirm_select(ConfirmSelectOptions::default()).await?;
    shovel(&back, &aside, queue).await?;
    // Bind again: RabbitMQ 3.10 removes a deleted queue's bindings after the
    // delete returns, and a binding made in that instant can go with them.
    let _ = topology.declare(&conn.create_channel().await?).await;
    if is_tasks {
        bind_all(&back, &aside, &topology.tasks(), false).await?;
    }
    // Whatever reached the stand-in while it was still bound.
    shovel(&back, &aside, queue).await?;
    back.queue_delete(aside.as_str().into(), QueueDeleteOptions::default())
        .await?;
    Ok(moved)
}

async fn bind_all(ch: &Channel, queue: &str, exchange: &str, bind: bool) -> anyhow::Result<()> {
    if bind {
        ch.queue_bind(
            queue.into(),
            exchange.into(),
            "#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    } else {
        ch.queue_unbind(
            queue.into(),
            exchange.into(),
            "#".into(),
            FieldTable::default(),
        )
        .await?;
    }
    Ok(())
}

/// Moves every message of `from` to `to` (confirmed, then acked), keeping
/// body and properties; returns how many.
async fn shovel(ch: &Channel, from: &str, to: &str) -> anyhow::Result<u64> {
    let mut n = 0;
    while let Some(msg) = ch
        .basic_get(from.into(), BasicGetOptions { no_ack: false })
        .await?
    {
        let d = msg.delivery;
        publish_confirmed(
            ch,
            Outgoing {
                exchange: "",
                routing_key: to,
                body: &d.data,
                properties: d.properties.clone(),
                mandatory: true,
            },
        )
        .await
        .with_context(|| format!("moving a message from {from} to {to}"))?;
        ch.basic_ack(d.delivery_tag, BasicAckOptions::default())
            .await?;
        n += 1;
    }
    Ok(n)
}
