//! `warden dlq`: read, replay and purge `{prefix}.dead`.
//!
//! Reading a queue over AMQP means taking messages out. To list without losing
//! anything, every message is fetched unacknowledged and all of them are handed
//! back at once (`basic.nack` with `multiple` and `requeue`). Replay and purge act
//! only on the matching messages, each one acknowledged (removed) only after
//! its replacement is confirmed by the broker.

use chrono::{DateTime, Utc};
use lapin::options::{BasicAckOptions, BasicGetOptions, BasicNackOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel};
use serde::Serialize;

use crate::amqp::envelope::{self, Task};
use crate::amqp::publish::{Outgoing, copy_properties, publish_confirmed};
use crate::amqp::topology::Topology;
use crate::config::Settings;

/// One dead letter, as `dlq list` shows it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct DeadLetter {
    /// Task id (message id when the body is not a task).
    pub id: String,
    /// Task type (the original routing key).
    #[serde(rename = "type")]
    pub kind: String,
    /// The task's channel, when the body names one.
    pub channel: Option<String>,
    /// Why it is dead.
    pub reason: String,
    /// Attempts made.
    pub attempts: u32,
    /// When it died, RFC 3339.
    pub failed_at: Option<String>,
    /// What went wrong.
    pub error: String,
}

/// Which dead letters a replay or purge acts on. Empty fields match everything.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Only this reason.
    pub reason: Option<String>,
    /// Only this type.
    pub kind: Option<String>,
    /// Only this channel.
    pub channel: Option<String>,
    /// At most this many.
    pub limit: Option<usize>,
}

impl Filter {
    /// Does `d` match?
    #[must_use]
    pub fn matches(&self, d: &DeadLetter) -> bool {
        self.reason.as_ref().is_none_or(|r| *r == d.reason)
            && self.kind.as_ref().is_none_or(|k| *k == d.kind)
            && self
                .channel
                .as_ref()
                .is_none_or(|c| d.channel.as_ref() == Some(c))
    }
}

/// Reads a dead letter's story from its headers. Messages dead-lettered by the
/// broker itself (the delivery limit) carry only `x-death`.
#[must_use]
pub fn describe(
    body: &[u8],
    props: &BasicProperties,
    routing_key: &str,
    delivery_limit: u32,
) -> DeadLetter {
    let h = props.headers().as_ref();
    let task = Task::decode(body, usize::MAX).ok();
    let broker_reason = envelope::broker_death_reason(h);
    let reason = envelope::header_text(h, envelope::REASON_HEADER)
        .or_else(|| {
            broker_reason.clone().map(|r| {
                if r == "delivery_limit" {
                    r
                } else {
                    format!("broker:{r}")
                }
            })
        })
        .unwrap_or_else(|| "unknown".into());
    // Broker dead letters carry no count of ours; the delivery limit is, by
    // definition, how often it was handed out.
    let attempts = h
        .and_then(|h| h.inner().get(envelope::ATTEMPT_HEADER))
        .and_then(envelope::integer_of)
        .map_or(
            if reason == "delivery_limit" {
                delivery_limit
            } else {
                0
            },
            |n| u32::try_from(n.max(0)).unwrap_or(u32::MAX),
        );
    let error = envelope::header_text(h, envelope::ERROR_HEADER).unwrap_or_else(|| {
        match broker_reason.as_deref() {
            Some("delivery_limit") => {
                "delivery limit reached: consumers died or lost their connection while handling it"
                    .into()
            }
            Some(r) => format!("dead-lettered by the broker ({r})"),
            None => String::new(),
        }
    });
    let failed_at = envelope::header_text(h, envelope::FAILED_AT_HEADER).or_else(|| death_time(h));
    DeadLetter {
        // The contract sets message_id to the task id; fall back to the body.
        id: props
            .message_id()
            .as_ref()
            .map(|m| m.to_string())
            .or_else(|| task.as_ref().map(|t| t.id.clone()))
            .unwrap_or_default(),
        // A forged key too long for a routing key is ignored: replay
        // publishes under `kind`, and the AMQP encoder panics past 255 bytes.
        kind: envelope::header_text(h, envelope::ROUTING_KEY_HEADER)
            .filter(|k| k.len() <= envelope::MAX_SHORT_BYTES)
            .or_else(|| task.as_ref().map(|t| t.kind.clone()))
            .unwrap_or_else(|| routing_key.to_owned()),
        channel: task.and_then(|t| t.channel),
        reason,
        attempts,
        failed_at,
        error,
    }
}

fn death_time(h: Option<&FieldTable>) -> Option<String> {
    let AMQPValue::FieldArray(deaths) = h?.inner().get("x-death")? else {
        return None;
    };
    let AMQPValue::FieldTable(first) = deaths.as_slice().first()? else {
        return None;
    };
    let AMQPValue::Timestamp(ts) = first.inner().get("time")? else {
        return None;
    };
    DateTime::<Utc>::from_timestamp(i64::try_from(*ts).ok()?, 0).map(|t| t.to_rfc3339())
}

/// A connection and channel on `{prefix}.dead`.
pub struct DeadQueue {
    conn: lapin::Connection,
    ch: Channel,
    topology: Topology,
    delivery_limit: u32,
}

impl DeadQueue {
    /// Connects, failing fast.
    ///
    /// # Errors
    /// Broker unreachable, or the queue does not exist (nothing was ever declared).
    pub async fn open(settings: &Settings) -> anyhow::Result<Self> {
        let super::ToolSession { conn, ch, topology } =
            super::ToolSession::open(settings, "dlq", true).await?;
        Ok(Self {
            conn,
            ch,
            topology,
            delivery_limit: settings.delivery_limit,
        })
    }

    /// Visits every message currently in the queue, unacknowledged; `visit`
    /// returns whether to remove it (after doing what it needs, e.g. a
    /// confirmed republish). Everything kept goes back, in order.
    async fn visit<F, Fut>(&self, mut visit: F) -> anyhow::Result<()>
    where
        F: FnMut(lapin::message::BasicGetMessage, DeadLetter) -> Fut,
        Fut: std::future::Future<Output = anyhow::Result<bool>>,
    {
        let mut kept = Vec::new();
        let mut result = Ok(());
        // What the first get says is left bounds the visit, so dead letters
        // arriving meanwhile are not chased. That count comes from the dequeue
        // itself: a passive declare's count can still miss letters that an
        // earlier visit has just handed back, since a quorum queue applies
        // returns asynchronously (a second `dlq list` at once saw none).
        let mut left: Option<u32> = None;
        while left != Some(0) {
            let Some(msg) = answered(
                "fetching a dead letter",
                self.ch.basic_get(
                    self.topology.dead().into(),
                    BasicGetOptions { no_ack: false },
                ),
            )
            .await?
            else {
                break;
            };
            left = Some(left.map_or(msg.message_count, |l| l.saturating_sub(1)));
            let tag = msg.delivery.delivery_tag;
            let d = describe(
                &msg.delivery.data,
                &msg.delivery.properties,
                msg.delivery.routing_key.as_str(),
                self.delivery_limit,
            );
            match answered("handling a dead letter", visit(msg, d)).await {
                Ok(true) => {
                    answered(
                        "acknowledging a dead letter",
                        self.ch.basic_ack(tag, BasicAckOptions { multiple: false }),
                    )
                    .await?;
                }
                Ok(false) => kept.push(tag),
                Err(e) => {
                    kept.push(tag);
                    result = Err(e);
                    break;
                }
            }
        }
        // Hand every kept message back in one go. A quorum queue processes a
        // large batch of returns in hash order (rabbit_fifo folds over a map),
        // so the physical order of `{prefix}.dead` may change; nothing is lost,
        // and listings are sorted by failure time so what a user sees is stable.
        if let Some(&last) = kept.last() {
            answered(
                "handing dead letters back",
                self.ch.basic_nack(
                    last,
                    BasicNackOptions {
                        multiple: true,
                        requeue: true,
                    },
                ),
            )
            .await?;
        }
        result
    }

    /// Up to `limit` dead letters, oldest failure first (then by id); every
    /// message is handed back, none is lost.
    ///
    /// # Errors
    /// Broker errors.
    pub async fn list(&self, limit: Option<usize>) -> anyhow::Result<Vec<DeadLetter>> {
        let mut out = Vec::new();
        self.visit(|_, d| {
            out.push(d);
            async { Ok(false) }
        })
        .await?;
        sort_oldest_first(&mut out);
        out.truncate(limit.unwrap_or(usize::MAX));
        Ok(out)
    }

    /// Moves matching dead letters back to `{prefix}.tasks` with attempts reset.
    /// With `dry_run`, only says which. Returns the matching letters. Re-auth
    /// requests (dead-lettered when a re-auth failed) are never replayed:
    /// they stay for `purge`.
    ///
    /// # Errors
    /// Broker errors; letters replayed before the error stay replayed.
    pub async fn replay(&self, filter: &Filter, dry_run: bool) -> anyhow::Result<Vec<DeadLetter>> {
        let mut matched = Vec::new();
        let exchange = self.topology.tasks();
        // A dead-lettered re-auth request is a record of a failed re-auth,
        // not a task: in the task queue it would only die again as malformed.
        let requests = self.topology.reauth();
        self.visit(|msg, d| {
            let take = d.kind != requests
                && filter.matches(&d)
                && filter.limit.is_none_or(|l| matched.len() < l);
            if take {
                matched.push(d.clone());
            }
            let ch = self.ch.clone();
            let exchange = exchange.clone();
            async move {
                if !take || dry_run {
                    return Ok(false);
                }
                let props = copy_properties(
                    &msg.delivery.properties,
                    replay_headers(msg.delivery.properties.headers().as_ref()),
                    None,
                );
                publish_confirmed(
                    &ch,
                    Outgoing {
                        exchange: &exchange,
                        routing_key: &d.kind,
                        body: &msg.delivery.data,
                        properties: props,
                        mandatory: true,
                    },
                )
                .await?;
                Ok(true)
            }
        })
        .await?;
        Ok(matched)
    }

    /// Deletes matching dead letters (or, with `dry_run`, counts them).
    ///
    /// # Errors
    /// Broker errors.
    pub async fn purge(&self, filter: &Filter, dry_run: bool) -> anyhow::Result<Vec<DeadLetter>> {
        let mut matched = Vec::new();
        self.visit(|_, d| {
            let take = filter.matches(&d) && filter.limit.is_none_or(|l| matched.len() < l);
            if take {
                matched.push(d);
            }
            async move { Ok(take && !dry_run) }
        })
        .await?;
        Ok(matched)
    }

    /// Closes channel and connection.
    pub async fn close(self) {
        let _ = self.ch.close(200, "bye".into()).await;
        let _ = self.conn.close(200, "bye".into()).await;
    }
}

/// How long one broker operation of `dlq` may take. A command that waited for
/// ever on a connection the broker had closed (it used to, on a letter whose
/// headers exceeded the frame) is worse than one that says so.
const OPERATION_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// `op`'s result, or an error naming `what` if the broker has not answered
/// within [`OPERATION_TIMEOUT`]. Nothing is lost either way: unacknowledged
/// letters go back to the queue when the connection closes.
async fn answered<T, E>(
    what: &str,
    op: impl std::future::Future<Output = Result<T, E>>,
) -> anyhow::Result<T>
where
    anyhow::Error: From<E>,
{
    match tokio::time::timeout(OPERATION_TIMEOUT, op).await {
        Ok(result) => Ok(result?),
        Err(_) => Err(anyhow::anyhow!(
            "{what}: the broker did not answer within {}s; the letters are still in the queue",
            OPERATION_TIMEOUT.as_secs()
        )),
    }
}

/// Failure time, then id: a total order independent of the queue's physical one.
fn sort_oldest_first(letters: &mut [DeadLetter]) {
    letters.sort_by(|a, b| (&a.failed_at, &a.id).cmp(&(&b.failed_at, &b.id)));
}

/// The producer's headers without warden's bookkeeping or the broker's death
/// records: a replayed task starts again at attempt 1.
fn replay_headers(h: Option<&FieldTable>) -> FieldTable {
    let mut out = FieldTable::default();
    if let Some(h) = h {
        for (k, v) in h.inner() {
            let k = k.as_str();
            if !(k.starts_with("x-warden-")
                || k == crate::amqp::envelope::DELAY_HEADER
                || k == "x-death"
                || k.starts_with("x-first-death")
                || k.starts_with("x-last-death")
                || k == "x-delivery-count")
            {
                out.insert(k.into(), v.clone());
            }
        }
    }
    out
}
