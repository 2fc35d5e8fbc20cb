//! Releasing the tasks parked while a channel was being healed.

use lapin::Channel;
use lapin::options::{BasicAckOptions, BasicGetOptions};
use lapin::types::FieldTable;

use super::context::Ctx;
use crate::amqp::envelope::{self, Task};
use crate::amqp::publish::{
    Outgoing, PublishError, copy_properties, publish_confirmed_in_trace_of,
};

/// Moves every parked task back to `{prefix}.tasks` so it runs now rather than
/// at its next park expiry. Tasks of channels still pending are simply parked
/// again by the workers, without a platform call. Each one is republished with
/// a confirm before it is removed from `{prefix}.parked`.
pub(super) async fn release_parked(
    ctx: &Ctx,
    publish: &Channel,
    healed: &str,
) -> Result<(), PublishError> {
    let ch = publish;
    let queue = ctx.topology.parked();
    let mut moved = 0usize;
    // Bounded by what is there now, so tasks re-parked meanwhile do not loop.
    let waiting = ch
        .queue_declare(
            queue.clone().into(),
            lapin::options::QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?
        .message_count();
    for _ in 0..waiting {
        let Some(msg) = ch
            .basic_get(queue.clone().into(), BasicGetOptions { no_ack: false })
            .await?
        else {
            break;
        };
        let d = &msg.delivery;
        let ours = Task::decode(&d.data, usize::MAX)
            .ok()
            .and_then(|t| t.channel)
            .is_some_and(|c| c == healed);
        // A healed channel's tasks start a fresh park clock if they are ever
        // parked again; the delay route must go, or the copy would be parked.
        let h = without(
            d.properties.headers().as_ref(),
            if ours {
                &[envelope::DELAY_HEADER, envelope::PARKED_AT_HEADER]
            } else {
                &[envelope::DELAY_HEADER]
            },
        );
        // The released task stays in its own trace, not this re-auth's.
        publish_confirmed_in_trace_of(
            d.properties.headers().as_ref(),
            ch,
            Outgoing {
                exchange: &ctx.topology.tasks(),
                routing_key: d.routing_key.as_str(),
                body: &d.data,
                properties: copy_properties(&d.properties, h, None),
                mandatory: true,
            },
        )
        .await?;
        ch.basic_ack(d.delivery_tag, BasicAckOptions::default())
            .await?;
        moved += 1;
    }
    tracing::info!(channel = healed, moved, "parked tasks released");
    Ok(())
}

fn without(headers: Option<&FieldTable>, drop: &[&str]) -> FieldTable {
    let mut out = FieldTable::default();
    for (k, v) in headers.map(|h| h.inner().iter()).into_iter().flatten() {
        if !drop.contains(&k.as_str()) {
            out.insert(k.clone(), v.clone());
        }
    }
    out
}
