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
use super::settle::Ran;
use crate::amqp::envelope::{self, Reject, Task};
use crate::channels::{ChannelState, ChannelToken};
use crate::config::Isolation;
use crate::handler::{TaskContext, run_guarded};
use crate::observe::metrics::TypeLabel;
use crate::outcome::{ErrorKind, TaskError, Verdict, decide};

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
        let settled = super::settle::settle(&ctx, &delivery, &ran, outcome).await;
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
