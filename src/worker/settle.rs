//! Settling a delivery: one function per outcome builds the copy it needs
//! (retry, park, dead letter), and [`settle`] publishes that copy and the
//! lifecycle event, confirmed, before the delivery goes to the acker.

use chrono::Utc;
use lapin::message::Delivery;
use lapin::types::FieldTable;

use super::SessionCtx;
use crate::amqp::envelope::{self, Task};
use crate::amqp::events::{self, Event};
use crate::amqp::publish::{Outgoing, PublishError, publish_confirmed};
use crate::amqp::topology::PARKED_ROUTE;
use crate::channels::RevocationRequest;
use crate::observe::metrics::{ReasonLabel, TaskLabels, TierLabel};
use crate::outcome::{DeadReason, Outcome, jittered, tier_at_least};
use crate::outcome::{TaskError, Verdict};

/// What a delivery turned out to be, before settling.
pub(super) struct Ran {
    pub(super) task: Option<Task>,
    pub(super) attempt: u32,
    pub(super) verdict: Verdict,
    /// The failure, if any (its message never holds a secret).
    pub(super) failure: Option<TaskError>,
    /// It ran in the sandbox: its copies say so, and its retries run there too.
    pub(super) sandboxed: bool,
    pub(super) elapsed_ms: u64,
}

impl Ran {
    pub(super) fn error(&self) -> Option<&str> {
        self.failure.as_ref().map(|f| f.message.as_str())
    }
}

/// A copy of the delivery to publish before it is acked.
struct Copy {
    exchange: String,
    headers: FieldTable,
    expiration: Option<String>,
}

/// What settling one outcome publishes: the copy, if any, and the event.
struct Plan {
    copy: Option<Copy>,
    /// Routing key of the `task.*` event.
    event: &'static str,
    /// The event's reason: the retry tier or the dead-letter reason.
    reason: Option<String>,
}

/// Publishes what the outcome needs, all confirmed, concurrently: the copy
/// (retry, park or dead letter) and the lifecycle event.
pub(super) async fn settle(
    ctx: &SessionCtx,
    delivery: &Delivery,
    ran: &Ran,
    outcome: Outcome,
) -> Result<(), PublishError> {
    count(ctx, ran, outcome);
    // Bounded: a handler's message can be long, and a copy must fit a frame.
    let error = truncated(ran.error().unwrap_or(""), MAX_ERROR_HEADER);
    let plan = match outcome {
        Outcome::Ack => {
            tracing::debug!("task succeeded");
            Plan {
                copy: None,
                event: events::SUCCEEDED,
                reason: None,
            }
        }
        Outcome::Retry { next_attempt, tier } => retry(
            ctx,
            ran,
            copy_headers(delivery, ran),
            error,
            next_attempt,
            tier,
        ),
        Outcome::Park {
            announce_revocation,
        } => park(ctx, ran, copy_headers(delivery, ran), announce_revocation).await?,
        Outcome::Dead(why) => dead(ctx, delivery, ran, copy_headers(delivery, ran), error, why),
    };
    let copy = async {
        let Some(mut c) = plan.copy else {
            return Ok(());
        };
        fit_frame(&mut c.headers, ctx.frame_max, error);
        let props =
            crate::amqp::publish::copy_properties(&delivery.properties, c.headers, c.expiration);
        publish_confirmed(
            &ctx.publish,
            Outgoing {
                exchange: &c.exchange,
                routing_key: delivery.routing_key.as_str(),
                body: &delivery.data,
                properties: props,
                mandatory: true,
            },
        )
        .await
    };
    let event = async {
        if !ctx.settings.events {
            return Ok(());
        }
        let event = event_of(delivery, ran, plan.reason);
        events::publish(&ctx.publish, &ctx.topology.events(), plan.event, &event).await
    };
    tokio::try_join!(copy, event)?;
    Ok(())
}

/// `warden_tasks_total` by type (known types only: labels stay bounded) and outcome.
fn count(ctx: &SessionCtx, ran: &Ran, outcome: Outcome) {
    let type_label = match &ran.task {
        Some(t) if ctx.registry.get(&t.kind).is_some() => t.kind.clone(),
        _ => "unknown".to_owned(),
    };
    ctx.metrics
        .tasks
        .get_or_create(&TaskLabels {
            r#type: type_label,
            outcome: outcome.as_str(),
        })
        .inc();
}

/// The headers a copy starts from: the delivery's own (bounded), marked when
/// it ran in the sandbox so that its retries run there too. Only copies need
/// them; an ack (the common case) copies nothing.
fn copy_headers(delivery: &Delivery, ran: &Ran) -> FieldTable {
    let mut headers = envelope::copy_headers(delivery.properties.headers().as_ref());
    if ran.sandboxed {
        envelope::set_text(&mut headers, envelope::SANDBOX_HEADER, "1");
    }
    headers
}

/// A transient failure: a copy to the delay exchange, expiring after the
/// tier's delay (jittered) into the tasks queue again.
fn retry(
    ctx: &SessionCtx,
    ran: &Ran,
    mut headers: FieldTable,
    error: &str,
    next_attempt: u32,
    tier: usize,
) -> Plan {
    let topo = &ctx.topology;
    let tier = tier_at_least(
        topo.tier_delays(),
        tier,
        ran.failure.as_ref().and_then(|f| f.retry_after),
    );
    let route = topo.tier_route(tier);
    tracing::info!(error, next_attempt, delay = %route, "task failed; retrying after a delay");
    ctx.metrics
        .retries
        .get_or_create(&TierLabel {
            tier: route.clone(),
        })
        .inc();
    envelope::set_int(
        &mut headers,
        envelope::ATTEMPT_HEADER,
        i64::from(next_attempt - 1),
    );
    envelope::set_text(&mut headers, envelope::DELAY_HEADER, &route);
    envelope::set_text(&mut headers, envelope::ERROR_HEADER, error);
    let delay = jittered(
        topo.tier_delays()[tier],
        0.75 + 0.25 * rand::random::<f64>(),
    );
    Plan {
        copy: Some(Copy {
            exchange: topo.delay_exchange(),
            headers,
            expiration: Some(delay.as_millis().to_string()),
        }),
        event: events::RETRYING,
        reason: Some(route),
    }
}

/// The channel's token is revoked (or being replaced): announce the
/// revocation if this is its first failure, then park the task, unless the
/// token was replaced meanwhile, in which case the task runs again at once.
async fn park(
    ctx: &SessionCtx,
    ran: &Ran,
    mut headers: FieldTable,
    announce_revocation: bool,
) -> Result<Plan, PublishError> {
    let topo = &ctx.topology;
    let channel = ran.task.as_ref().and_then(|t| t.channel.as_deref());
    if announce_revocation
        && let (Some(ch), Some(task)) = (channel, ran.task.as_ref())
        // Boxed: a rare path, kept out of the size of every task's future.
        && Box::pin(revoke(ctx, ch, task, ran)).await? == AfterRevocation::AlreadyHealed
    {
        // Another worker's re-auth finished between our call and now:
        // run the task again at once, without using an attempt.
        tracing::info!(
            channel = ch,
            "token was already refreshed; running the task again"
        );
        return Ok(Plan {
            copy: Some(Copy {
                exchange: topo.tasks(),
                headers,
                expiration: None,
            }),
            event: events::RETRYING,
            reason: None,
        });
    }
    tracing::info!(
        channel = channel.unwrap_or(""),
        "channel awaits re-authentication; task parked"
    );
    ctx.metrics.parked.inc();
    // Always rewritten: a forged future or unreadable time is
    // replaced, so every park is bounded by `max_park`.
    let now = Utc::now();
    let since = envelope::parked_at(Some(&headers), now).unwrap_or(now);
    envelope::set_text(
        &mut headers,
        envelope::PARKED_AT_HEADER,
        &since.to_rfc3339(),
    );
    envelope::set_text(&mut headers, envelope::DELAY_HEADER, PARKED_ROUTE);
    // The park time travels with the copy, not as a queue
    // argument, so changing it needs no new queue.
    Ok(Plan {
        copy: Some(Copy {
            exchange: topo.delay_exchange(),
            headers,
            expiration: Some(ctx.settings.park_ttl.as_millis().to_string()),
        }),
        event: events::PARKED,
        reason: None,
    })
}

/// A task that cannot succeed: a copy to the dead-letter exchange with the
/// reason, the error, the attempt, when, and where it was first routed.
fn dead(
    ctx: &SessionCtx,
    delivery: &Delivery,
    ran: &Ran,
    mut headers: FieldTable,
    error: &str,
    why: DeadReason,
) -> Plan {
    log_dead(why, error);
    ctx.metrics
        .dead_letters
        .get_or_create(&ReasonLabel {
            reason: why.as_str(),
        })
        .inc();
    envelope::set_text(&mut headers, envelope::REASON_HEADER, why.as_str());
    envelope::set_text(&mut headers, envelope::ERROR_HEADER, error);
    envelope::set_int(
        &mut headers,
        envelope::ATTEMPT_HEADER,
        i64::from(ran.attempt),
    );
    envelope::set_text(
        &mut headers,
        envelope::FAILED_AT_HEADER,
        &Utc::now().to_rfc3339(),
    );
    envelope::set_text(
        &mut headers,
        envelope::ROUTING_KEY_HEADER,
        delivery.routing_key.as_str(),
    );
    Plan {
        copy: Some(Copy {
            exchange: ctx.topology.dead(),
            headers,
            expiration: None,
        }),
        event: events::DEAD,
        reason: Some(why.as_str().to_owned()),
    }
}

/// The `task.*` event of a settled delivery; an undecodable one is named by
/// its message id and routing key.
fn event_of(delivery: &Delivery, ran: &Ran, reason: Option<String>) -> Event {
    Event {
        id: match &ran.task {
            Some(t) => t.id.clone(),
            None => delivery
                .properties
                .message_id()
                .as_ref()
                .map(|m| m.as_str().to_owned())
                .unwrap_or_default(),
        },
        kind: ran.task.as_ref().map_or_else(
            || delivery.routing_key.as_str().to_owned(),
            |t| t.kind.clone(),
        ),
        channel: ran.task.as_ref().and_then(|t| t.channel.clone()),
        attempt: ran.attempt,
        reason,
        error: ran.error().map(str::to_owned),
        duration_ms: ran.elapsed_ms,
        at: Utc::now(),
    }
}

#[derive(Debug, PartialEq, Eq)]
enum AfterRevocation {
    /// Park the task (we announced the revocation, or someone else did).
    Park,
    /// The token was replaced meanwhile; run the task again.
    AlreadyHealed,
}

/// First failure of a token version: mark the channel pending (compare-and-set
/// on the version, so exactly one worker wins) and ask `warden reauth` to heal
/// it, confirmed. Every other failure of that version just parks.
async fn revoke(
    ctx: &SessionCtx,
    channel: &str,
    task: &Task,
    ran: &Ran,
) -> Result<AfterRevocation, PublishError> {
    let Some(channels) = ctx.channels.as_ref() else {
        return Ok(AfterRevocation::Park);
    };
    let Some(version) = ran.failure.as_ref().and_then(|f| f.token_version) else {
        return Ok(AfterRevocation::Park);
    };
    channels.set_pending(channel);
    match channels.store().mark_pending(channel, version).await {
        Ok(true) => {
            tracing::warn!(
                channel,
                failed_version = version,
                "token revoked; requesting re-authentication"
            );
            let request = RevocationRequest {
                channel: channel.to_owned(),
                failed_version: version,
                task_id: task.id.clone(),
                at: Utc::now(),
            };
            let body = serde_json::to_vec(&request).unwrap_or_default();
            let props = lapin::BasicProperties::default()
                .with_content_type("application/json".into())
                .with_delivery_mode(crate::amqp::publish::PERSISTENT)
                .with_message_id(format!("{channel}@{version}").into());
            publish_confirmed(
                &ctx.publish,
                Outgoing {
                    exchange: "",
                    routing_key: &ctx.topology.reauth(),
                    body: &body,
                    properties: props,
                    mandatory: true,
                },
            )
            .await?;
            Ok(AfterRevocation::Park)
        }
        Ok(false) => match channels.store().get(channel).await {
            Ok(Some(r))
                if r.status == crate::store::ChannelStatus::Active && r.version > version =>
            {
                channels.invalidate(channel);
                Ok(AfterRevocation::AlreadyHealed)
            }
            _ => Ok(AfterRevocation::Park),
        },
        Err(e) => {
            // The store is down: park anyway (the platform must not be hammered);
            // a later failure of the same version will announce it.
            ctx.metrics.token_store_errors.inc();
            tracing::error!(channel, error = %e, "token store unavailable while marking a revocation");
            Ok(AfterRevocation::Park)
        }
    }
}

/// Longest `x-warden-error` a copy carries, in bytes.
const MAX_ERROR_HEADER: usize = 2048;
/// What a content header frame needs besides the headers table: the frame's
/// own 8 bytes, class, weight, body size and flags (14), and room for every
/// other property at its largest (a dozen short strings).
const PROPERTIES_RESERVE: usize = 8 + 14 + 12 * 256;

/// `s` cut to at most `max` bytes on a character boundary.
fn truncated(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Makes a copy's headers fit in one frame of the connection: a content
/// header larger than the negotiated frame makes the broker close the
/// connection, which would return every task in flight on it. Foreign
/// headers go first, largest first; `x-warden-error` says which.
fn fit_frame(headers: &mut FieldTable, frame_max: u32, error: &str) {
    let frame = usize::try_from(frame_max).unwrap_or(usize::MAX);
    let budget = frame.saturating_sub(PROPERTIES_RESERVE);
    let (dropped, bytes) = envelope::fit_headers(headers, budget);
    if dropped.is_empty() {
        return;
    }
    let note = format!(
        "dropped {} foreign header(s) ({bytes} bytes: {}) to fit the broker's {frame}-byte frame",
        dropped.len(),
        truncated(&dropped.join(", "), 512)
    );
    tracing::warn!(dropped = ?dropped, bytes, frame, "a copy's headers exceed the frame; dropping foreign headers");
    let text = if error.is_empty() {
        note
    } else {
        format!("{error}; {note}")
    };
    envelope::set_text(headers, envelope::ERROR_HEADER, &text);
}

/// Producer mistakes are warnings; our own exhausted retries are errors.
fn log_dead(reason: DeadReason, error: &str) {
    if reason.is_input_error() || reason == DeadReason::Permanent {
        tracing::warn!(reason = %reason, error, "task dead-lettered");
    } else {
        tracing::error!(reason = %reason, error, "task dead-lettered");
    }
}
