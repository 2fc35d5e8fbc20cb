//! One delivery, from bytes to settled: decode, run the handler under a timeout
//! and `catch_unwind`, [`decide`], publish the copy and event, then ack.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Instant;

use futures::FutureExt;
use lapin::message::Delivery;
use lapin::types::FieldTable;
use tokio::sync::mpsc::UnboundedSender;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::SessionCtx;
use super::ack::AckMsg;
use crate::envelope::{self, Reject, Task};
use crate::events::{self, Event};
use crate::handler::TaskContext;
use crate::metrics::{ReasonLabel, TaskLabels, TierLabel, TypeLabel};
use crate::outcome::{DeadReason, ErrorKind, Outcome, TaskError, Verdict, decide, jittered};
use crate::publish::{PublishError, publish_confirmed};
use crate::topology::PARKED_ROUTE;

/// What a delivery turned out to be, before settling.
struct Ran {
    task: Option<Task>,
    attempt: u32,
    verdict: Verdict,
    error: Option<String>,
    elapsed_ms: u64,
}

/// Processes one delivery and reports it to the acker once its copies are
/// confirmed. If `abandon` fires first the delivery is left unacked, so the
/// broker hands it out again.
pub(super) async fn process(
    ctx: Arc<SessionCtx>,
    delivery: Delivery,
    acks: UnboundedSender<AckMsg>,
    abandon: CancellationToken,
) {
    ctx.metrics.in_flight.inc();
    let tag = delivery.delivery_tag;
    let attempt = envelope::attempt_of(delivery.properties.headers().as_ref());
    let span = crate::trace::process_span(&delivery, attempt);
    let work = async {
        let ran = run(&ctx, &delivery).await;
        let outcome = decide(ran.verdict, ran.attempt, ctx.policy);
        crate::trace::record_outcome(&span, ran.task.as_ref(), ran.verdict, outcome);
        let settled = settle(&ctx, &delivery, &ran, outcome).await;
        crate::trace::record_settled(&span, outcome, &settled);
        settled
    }
    .instrument(span.clone());
    tokio::select! {
        biased;
        () = abandon.cancelled() => {}
        result = work => match result {
            Ok(()) => {
                let _ = acks.send(AckMsg::Done(tag));
            }
            Err(e) => {
                tracing::error!(error = %e, "could not settle a task; the broker will redeliver it");
                abandon.cancel();
            }
        },
    }
    ctx.metrics.in_flight.dec();
}

async fn run(ctx: &SessionCtx, delivery: &Delivery) -> Ran {
    let attempt = envelope::attempt_of(delivery.properties.headers().as_ref());
    let started = Instant::now();
    let (task, verdict, error) = match Task::decode(&delivery.data, ctx.settings.max_body_bytes) {
        Err(reject @ Reject::TooLarge { .. }) => {
            (None, Verdict::TooLarge, Some(reject.to_string()))
        }
        Err(reject @ Reject::Malformed(_)) => (None, Verdict::Malformed, Some(reject.to_string())),
        Ok(task) => match ctx.registry.get(&task.kind) {
            None => {
                let msg = format!("no handler is registered for type {:?}", task.kind);
                (Some(task), Verdict::UnknownType, Some(msg))
            }
            Some(handler) => {
                let tctx = TaskContext {
                    attempt,
                    redelivered: delivery.redelivered,
                };
                let guarded = AssertUnwindSafe(handler.handle(&task, &tctx)).catch_unwind();
                let result = match tokio::time::timeout(ctx.settings.task_timeout, guarded).await {
                    Ok(Ok(result)) => result,
                    Ok(Err(panic)) => Err(TaskError {
                        kind: ErrorKind::Panic,
                        message: panic_message(&*panic),
                    }),
                    Err(_) => Err(TaskError {
                        kind: ErrorKind::Timeout,
                        message: format!(
                            "timed out after {}",
                            humantime::format_duration(ctx.settings.task_timeout)
                        ),
                    }),
                };
                let label = TypeLabel {
                    r#type: task.kind.clone(),
                };
                ctx.metrics
                    .task_duration
                    .get_or_create(&label)
                    .observe(started.elapsed().as_secs_f64());
                match result {
                    Ok(()) => (Some(task), Verdict::Succeeded, None),
                    Err(e) => (Some(task), Verdict::Failed(e.kind), Some(e.message)),
                }
            }
        },
    };
    Ran {
        task,
        attempt,
        verdict,
        error,
        elapsed_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    let what = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".into());
    format!("handler panicked: {what}")
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

    let id = match &ran.task {
        Some(t) => t.id.clone(),
        None => delivery
            .properties
            .message_id()
            .as_ref()
            .map(|m| m.as_str().to_owned())
            .unwrap_or_default(),
    };
    let kind = ran.task.as_ref().map_or_else(
        || delivery.routing_key.as_str().to_owned(),
        |t| t.kind.clone(),
    );
    let channel = ran.task.as_ref().and_then(|t| t.channel.clone());
    let mut event = Event {
        id,
        kind,
        channel,
        attempt: ran.attempt,
        reason: None,
        error: ran.error.clone(),
        duration_ms: ran.elapsed_ms,
        at: chrono::Utc::now(),
    };
    let topo = &ctx.topology;
    let mut headers = delivery.properties.headers().clone().unwrap_or_default();
    let (copy, routing_key) = match outcome {
        Outcome::Ack => {
            tracing::debug!("task succeeded");
            (None, events::SUCCEEDED)
        }
        Outcome::Retry { next_attempt, tier } => {
            let route = topo.tier_route(tier);
            tracing::info!(error = ran.error.as_deref().unwrap_or(""), next_attempt, delay = %route, "task failed; retrying after a delay");
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
            if let Some(e) = &ran.error {
                envelope::set_text(&mut headers, envelope::ERROR_HEADER, e);
            }
            let delay = jittered(
                topo.tier_delays()[tier],
                0.75 + 0.25 * rand::random::<f64>(),
            );
            event.reason = Some(route);
            (
                Some((
                    topo.delay_exchange(),
                    headers,
                    Some(delay.as_millis().to_string()),
                )),
                events::RETRYING,
            )
        }
        Outcome::Park {
            announce_revocation: _,
        } => {
            tracing::info!(
                error = ran.error.as_deref().unwrap_or(""),
                "channel is re-authenticating; task parked"
            );
            ctx.metrics.parked.inc();
            envelope::set_text(&mut headers, envelope::DELAY_HEADER, PARKED_ROUTE);
            (Some((topo.delay_exchange(), headers, None)), events::PARKED)
        }
        Outcome::Dead(reason) => {
            log_dead(reason, ran.error.as_deref());
            ctx.metrics
                .dead_letters
                .get_or_create(&ReasonLabel {
                    reason: reason.as_str(),
                })
                .inc();
            envelope::set_text(&mut headers, envelope::REASON_HEADER, reason.as_str());
            envelope::set_text(
                &mut headers,
                envelope::ERROR_HEADER,
                ran.error.as_deref().unwrap_or(""),
            );
            envelope::set_int(
                &mut headers,
                envelope::ATTEMPT_HEADER,
                i64::from(ran.attempt),
            );
            envelope::set_text(
                &mut headers,
                envelope::FAILED_AT_HEADER,
                &chrono::Utc::now().to_rfc3339(),
            );
            envelope::set_text(
                &mut headers,
                envelope::ROUTING_KEY_HEADER,
                delivery.routing_key.as_str(),
            );
            event.reason = Some(reason.as_str().to_owned());
            (Some((topo.dead(), headers, None)), events::DEAD)
        }
    };
    let copy = async {
        let Some((exchange, headers, expiration)) = copy else {
            return Ok(());
        };
        publish_confirmed(
            &ctx.publish,
            &exchange,
            delivery.routing_key.as_str(),
            &delivery.data,
            copy_properties(delivery, headers, expiration),
            true,
        )
        .await
    };
    let event = async {
        if !ctx.settings.events {
            return Ok(());
        }
        events::publish(&ctx.publish, &topo.events(), routing_key, &event).await
    };
    tokio::try_join!(copy, event)?;
    Ok(())
}

/// The original properties (content type, message id, producer headers) with
/// warden's headers, forced persistent, and a per-message TTL for retries.
fn copy_properties(
    delivery: &Delivery,
    headers: FieldTable,
    expiration: Option<String>,
) -> lapin::BasicProperties {
    crate::publish::copy_properties(&delivery.properties, headers, expiration)
}

/// Producer mistakes are warnings; our own exhausted retries are errors.
fn log_dead(reason: DeadReason, error: Option<&str>) {
    if reason.is_input_error() || reason == DeadReason::Permanent {
        tracing::warn!(reason = %reason, error = error.unwrap_or(""), "task dead-lettered");
    } else {
        tracing::error!(reason = %reason, error = error.unwrap_or(""), "task dead-lettered");
    }
}
