//! One delivery, from bytes to settled: decode, check the task's channel, run
//! the handler under a timeout and `catch_unwind`, [`decide`], publish the copy
//! and event, then ack.

use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;
use lapin::message::Delivery;
use lapin::types::FieldTable;
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;

use super::SessionCtx;
use super::ack::Ledger;
use super::sandbox;
use crate::amqp::envelope::{self, Reject, Task};
use crate::amqp::events::{self, Event};
use crate::amqp::publish::{PublishError, publish_confirmed};
use crate::amqp::topology::PARKED_ROUTE;
use crate::channels::{ChannelState, ChannelToken, RevocationRequest};
use crate::config::Isolation;
use crate::handler::{TaskContext, run_guarded};
use crate::observe::metrics::{ReasonLabel, TaskLabels, TierLabel, TypeLabel};
use crate::outcome::{
    DeadReason, ErrorKind, Outcome, TaskError, Verdict, decide, jittered, tier_at_least,
};

/// What a delivery turned out to be, before settling.
struct Ran {
    task: Option<Task>,
    attempt: u32,
    verdict: Verdict,
    /// The failure, if any (its message never holds a secret).
    failure: Option<TaskError>,
    /// It ran in the sandbox: its copies say so, and its retries run there too.
    sandboxed: bool,
    elapsed_ms: u64,
}

impl Ran {
    fn error(&self) -> Option<&str> {
        self.failure.as_ref().map(|f| f.message.as_str())
    }
}

/// Processes one delivery and reports it to the acker once its copies are
/// confirmed; `slot` is its handler slot, given back as soon as the handler is
/// done. If `abandon` fires first the delivery is left unacked, so the broker
/// hands it out again.
pub(super) async fn process(
    ctx: Arc<SessionCtx>,
    delivery: Delivery,
    slot: OwnedSemaphorePermit,
    acks: Arc<Ledger>,
    abandon: CancellationToken,
) {
    ctx.metrics.in_flight.inc();
    let tag = delivery.delivery_tag;
    let attempt = envelope::attempt_of(delivery.properties.headers().as_ref());
    let span = crate::observe::trace::ProcessSpan::start(&delivery, attempt);
    let work = span.wrap(async {
        let ran = run(&ctx, &delivery).await;
        // A revoked token parks the channel's next tasks in this process
        // before the slot goes to one of them: otherwise it could pass the
        // channel gate and call the platform with the dead token while this
        // task is still settling (marking the store, announcing the
        // revocation).
        if ran.verdict == Verdict::Failed(ErrorKind::TokenRevoked)
            && let (Some(channels), Some(ch)) = (
                ctx.channels.as_ref(),
                ran.task.as_ref().and_then(|t| t.channel.as_deref()),
            )
        {
            channels.set_pending(ch);
        }
        // The handler is done: its slot goes to the next delivery while this
        // one waits for its confirms.
        drop(slot);
        let outcome = decide(ran.verdict, ran.attempt, ctx.policy);
        span.record_outcome(ran.task.as_ref(), ran.verdict, outcome);
        let settled = settle(&ctx, &delivery, &ran, outcome).await;
        span.record_settled(outcome, settled.as_ref().err().map(|e| e.error_type()));
        settled
    });
    tokio::select! {
        biased;
        () = abandon.cancelled() => {}
        result = work => match result {
            Ok(()) => {
                acks.settled(tag);
            }
            Err(e) => {
                tracing::error!(error = %e, "could not settle a task; the broker will redeliver it");
                abandon.cancel();
            }
        },
    }
    ctx.metrics.in_flight.dec();
}

fn verdict(
    verdict: Verdict,
    task: Option<Task>,
    failure: Option<TaskError>,
) -> (Option<Task>, Verdict, Option<TaskError>) {
    (task, verdict, failure)
}

async fn run(ctx: &SessionCtx, delivery: &Delivery) -> Ran {
    let headers = delivery.properties.headers().as_ref();
    let attempt = envelope::attempt_of(headers);
    let started = Instant::now();
    let mut sandboxed = false;
    let (task, verdict, failure) = match Task::decode(&delivery.data, ctx.settings.max_body_bytes) {
        Err(reject @ Reject::TooLarge { .. }) => verdict(
            Verdict::TooLarge,
            None,
            Some(TaskError::permanent(reject.to_string())),
        ),
        Err(reject @ Reject::Malformed(_)) => verdict(
            Verdict::Malformed,
            None,
            Some(TaskError::permanent(reject.to_string())),
        ),
        Ok(task) => match ctx.registry.get(&task.kind).cloned() {
            None => {
                let msg = format!("no handler is registered for type {:?}", task.kind);
                verdict(
                    Verdict::UnknownType,
                    Some(task),
                    Some(TaskError::permanent(msg)),
                )
            }
            Some(_) if envelope::earlier_deliveries(headers) >= ctx.settings.delivery_limit => {
                let msg = format!(
                    "handed out {} times, each time to a worker process that died before settling it",
                    envelope::earlier_deliveries(headers)
                );
                verdict(
                    Verdict::DeliveryLimit,
                    Some(task),
                    Some(TaskError::permanent(msg)),
                )
            }
            Some(handler) => match channel_gate(ctx, &task, headers).await {
                Err(gated) => (Some(task), gated.0, gated.1),
                Ok(token) => {
                    sandboxed = is_suspect(ctx, delivery, &task);
                    let (verdict, failure) = if sandboxed {
                        in_sandbox(ctx, delivery, &task, attempt, token.as_ref()).await
                    } else {
                        let tctx = TaskContext {
                            attempt,
                            redelivered: delivery.redelivered,
                            token,
                        };
                        handled(
                            run_guarded(&*handler, &task, &tctx, ctx.settings.task_timeout).await,
                        )
                    };
                    let label = TypeLabel {
                        r#type: task.kind.clone(),
                    };
                    ctx.metrics
                        .task_duration
                        .get_or_create(&label)
                        .observe(started.elapsed().as_secs_f64());
                    (Some(task), verdict, failure)
                }
            },
        },
    };
    Ran {
        task,
        attempt,
        verdict,
        failure,
        sandboxed,
        elapsed_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    }
}

/// Does this delivery run in the sandbox? A redelivery may be what ended the
/// last session holding it (a worker that died), a marked copy already ran
/// there, and some types always do.
fn is_suspect(ctx: &SessionCtx, delivery: &Delivery, task: &Task) -> bool {
    delivery.redelivered
        || envelope::header_text(
            delivery.properties.headers().as_ref(),
            envelope::SANDBOX_HEADER,
        )
        .is_some()
        || ctx.settings.isolation(&task.kind) == Isolation::Always
}

/// The verdict on a handler's result.
fn handled(result: Result<(), TaskError>) -> (Verdict, Option<TaskError>) {
    match result {
        Ok(()) => (Verdict::Succeeded, None),
        Err(e) => (Verdict::Failed(e.kind), Some(e)),
    }
}

/// Runs a suspect in the sandbox and gives the verdict: a crash it caused
/// alone is [`Verdict::Crashed`], a hard timeout a transient
/// [`ErrorKind::Timeout`].
async fn in_sandbox(
    ctx: &SessionCtx,
    delivery: &Delivery,
    task: &Task,
    attempt: u32,
    token: Option<&ChannelToken>,
) -> (Verdict, Option<TaskError>) {
    ctx.metrics.suspects.inc();
    let traceparent = crate::observe::trace::enabled().then(|| {
        let mut carrier = FieldTable::default();
        crate::observe::trace::inject(&mut carrier);
        envelope::header_text(Some(&carrier), "traceparent")
    });
    let request = sandbox::Request {
        task,
        attempt,
        redelivered: delivery.redelivered,
        token,
        traceparent: traceparent.flatten(),
    };
    let result = match ctx.sandbox.run(&request).await {
        sandbox::Outcome::Ran(result) => result,
        sandbox::Outcome::Crashed(how) => {
            return (
                Verdict::Crashed,
                Some(TaskError::permanent(format!(
                    "its sandbox process, running it alone: {how}"
                ))),
            );
        }
        sandbox::Outcome::TimedOut => Err(TaskError::new(
            ErrorKind::Timeout,
            format!(
                "timed out after {} in the sandbox, whose process was killed",
                humantime::format_duration(ctx.settings.task_timeout)
            ),
        )),
        sandbox::Outcome::Unavailable(why) => Err(TaskError::transient(format!(
            "the sandbox is unavailable: {why}"
        ))),
    };
    handled(result)
}

/// Tasks that act for a channel run only while the channel is active: a
/// pending one parks them without touching the platform, a failed one
/// dead-letters them. `Ok` carries the token to run with.
async fn channel_gate(
    ctx: &SessionCtx,
    task: &Task,
    headers: Option<&FieldTable>,
) -> Result<Option<ChannelToken>, (Verdict, Option<TaskError>)> {
    let (Some(channel), Some(channels)) = (task.channel.as_deref(), ctx.channels.as_ref()) else {
        return Ok(None);
    };
    match channels.state(channel).await {
        Ok(ChannelState::Active(token)) => Ok(Some(token)),
        Ok(ChannelState::Missing) => Ok(None),
        Ok(ChannelState::Failed) => Err((
            Verdict::ChannelReauthFailed,
            Some(TaskError::permanent(format!(
                "re-authentication of channel {channel:?} failed"
            ))),
        )),
        Ok(ChannelState::Pending) => {
            let now = Utc::now();
            let waited =
                envelope::parked_at(headers, now).map(|t| (now - t).to_std().unwrap_or_default());
            if waited.is_some_and(|w| w > ctx.settings.max_park) {
                Err((
                    Verdict::ParkExpired,
                    Some(TaskError::permanent(format!(
                        "channel {channel:?} still awaits re-authentication after {}",
                        humantime::format_duration(ctx.settings.max_park)
                    ))),
                ))
            } else {
                Err((Verdict::ChannelPending, None))
            }
        }
        Err(e) => {
            ctx.metrics.token_store_errors.inc();
            Err((
                Verdict::Failed(ErrorKind::Transient),
                Some(TaskError::transient(format!("token store: {e}"))),
            ))
        }
    }
}

/// Where a copy goes.
struct Copy {
    exchange: String,
    headers: FieldTable,
    expiration: Option<String>,
}

/// Publishes what the outcome needs, all confirmed, concurrently.
async fn settle(
    ctx: &SessionCtx,
    delivery: &Delivery,
    ran: &Ran,
    outcome: Outcome,
) -> Result<(), PublishError> {
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

    let channel = ran.task.as_ref().and_then(|t| t.channel.as_deref());
    // Set by the outcomes whose event carries a reason.
    let mut reason: Option<String> = None;
    let topo = &ctx.topology;
    // Only a copy needs the headers; an ack (the common case) copies nothing.
    let mut headers = if outcome == Outcome::Ack {
        FieldTable::default()
    } else {
        envelope::copy_headers(delivery.properties.headers().as_ref())
    };
    if ran.sandboxed && outcome != Outcome::Ack {
        envelope::set_text(&mut headers, envelope::SANDBOX_HEADER, "1");
    }
    // Bounded: a handler's message can be long, and a copy must fit a frame.
    let error = truncated(ran.error().unwrap_or(""), MAX_ERROR_HEADER);
    let (copy, routing_key) = match outcome {
        Outcome::Ack => {
            tracing::debug!("task succeeded");
            (None, events::SUCCEEDED)
        }
        Outcome::Retry { next_attempt, tier } => {
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
            reason = Some(route);
            let expiration = Some(delay.as_millis().to_string());
            (
                Some(Copy {
                    exchange: topo.delay_exchange(),
                    headers,
                    expiration,
                }),
                events::RETRYING,
            )
        }
        Outcome::Park {
            announce_revocation,
        } => {
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
                (
                    Some(Copy {
                        exchange: topo.tasks(),
                        headers,
                        expiration: None,
                    }),
                    events::RETRYING,
                )
            } else {
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
                let expiration = Some(ctx.settings.park_ttl.as_millis().to_string());
                (
                    Some(Copy {
                        exchange: topo.delay_exchange(),
                        headers,
                        expiration,
                    }),
                    events::PARKED,
                )
            }
        }
        Outcome::Dead(why) => {
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
            reason = Some(why.as_str().to_owned());
            (
                Some(Copy {
                    exchange: topo.dead(),
                    headers,
                    expiration: None,
                }),
                events::DEAD,
            )
        }
    };
    let copy = async {
        let Some(mut c) = copy else { return Ok(()) };
        fit_frame(&mut c.headers, ctx.frame_max, error);
        let props =
            crate::amqp::publish::copy_properties(&delivery.properties, c.headers, c.expiration);
        publish_confirmed(
            &ctx.publish,
            &c.exchange,
            delivery.routing_key.as_str(),
            &delivery.data,
            props,
            true,
        )
        .await
    };
    let event = async {
        if !ctx.settings.events {
            return Ok(());
        }
        let event = Event {
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
            channel: channel.map(str::to_owned),
            attempt: ran.attempt,
            reason,
            error: ran.error().map(str::to_owned),
            duration_ms: ran.elapsed_ms,
            at: Utc::now(),
        };
        events::publish(&ctx.publish, &topo.events(), routing_key, &event).await
    };
    tokio::try_join!(copy, event)?;
    Ok(())
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
            publish_confirmed(&ctx.publish, "", &ctx.topology.reauth(), &body, props, true).await?;
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
