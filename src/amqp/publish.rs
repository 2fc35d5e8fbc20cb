//! Publishing with publisher confirms: tasks from the CLI and the library, and
//! the copies (retries, parks, dead letters) and events the worker makes.
//!
//! A copy only counts once the broker has confirmed it *and* routed it
//! (`mandatory`): a message returned as unroutable is as lost as a nacked one,
//! so both are errors and the original is not acknowledged.

use std::path::Path;
use std::time::Duration;

use futures::stream::{FuturesUnordered, StreamExt};
use lapin::options::BasicPublishOptions;
use lapin::types::{FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Connection};
use tracing::Instrument;

use crate::amqp::envelope::Task;
use crate::config::Settings;

/// AMQP delivery mode 2: the broker writes the message to disk.
pub const PERSISTENT: u8 = 2;

/// A publish the broker did not take.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The broker negatively acknowledged it (e.g. a full queue with `reject-publish`).
    #[error("the broker refused the message (nack) on exchange {exchange:?}")]
    Nacked {
        /// Where it was published.
        exchange: String,
    },
    /// No queue was bound to receive it.
    #[error("the message was unroutable on exchange {exchange:?} with key {routing_key:?}")]
    Returned {
        /// Where it was published.
        exchange: String,
        /// With which key.
        routing_key: String,
    },
    /// The channel or connection failed.
    #[error("broker error while publishing: {0}")]
    Broker(#[from] lapin::Error),
}

impl PublishError {
    /// A low-cardinality name for spans (`error.type`).
    #[must_use]
    pub fn error_type(&self) -> &'static str {
        match self {
            PublishError::Nacked { .. } => "nacked",
            PublishError::Returned { .. } => "unroutable",
            PublishError::Broker(_) => "broker_error",
        }
    }
}

/// Properties of a task message: persistent JSON with `message_id` = task id.
#[must_use]
pub fn task_properties(task_id: &str, headers: FieldTable) -> BasicProperties {
    BasicProperties::default()
        .with_content_type(ShortString::from("application/json"))
        .with_delivery_mode(PERSISTENT)
        .with_message_id(ShortString::from(task_id))
        .with_headers(headers)
}

/// Properties for a copy of a consumed message: the producer's content type,
/// message id and correlation fields with new `headers`, forced persistent, and
/// the given per-message TTL instead of any the producer set (a dead letter must
/// not expire in the dead-letter queue).
#[must_use]
pub fn copy_properties(
    original: &BasicProperties,
    headers: FieldTable,
    expiration: Option<String>,
) -> BasicProperties {
    let mut p = BasicProperties::default()
        .with_headers(headers)
        .with_delivery_mode(PERSISTENT);
    if let Some(v) = original.content_type() {
        p = p.with_content_type(v.clone());
    }
    if let Some(v) = original.content_encoding() {
        p = p.with_content_encoding(v.clone());
    }
    if let Some(v) = original.message_id() {
        p = p.with_message_id(v.clone());
    }
    if let Some(v) = original.correlation_id() {
        p = p.with_correlation_id(v.clone());
    }
    if let Some(v) = original.timestamp() {
        p = p.with_timestamp(*v);
    }
    if let Some(v) = original.kind() {
        p = p.with_type(v.clone());
    }
    if let Some(v) = original.app_id() {
        p = p.with_app_id(v.clone());
    }
    if let Some(ms) = expiration {
        p = p.with_expiration(ms.into());
    }
    p
}

/// One message to publish: where it goes, what it is, and whether it must
/// be routable.
#[derive(Debug, Clone)]
pub struct Outgoing<'a> {
    /// The exchange (`""`: the default exchange, routing by queue name).
    pub exchange: &'a str,
    /// The routing key.
    pub routing_key: &'a str,
    /// The body.
    pub body: &'a [u8],
    /// The properties, headers included.
    pub properties: BasicProperties,
    /// An unroutable message is an error ([`PublishError::Returned`]).
    pub mandatory: bool,
}

/// Publishes and waits for the broker's confirm (the channel must be in
/// confirm mode).
///
/// Every publish is a `publish {exchange}` PRODUCER span (when traces are
/// exported), and the message carries that span's context in `traceparent`, so
/// tasks, copies and events all continue the trace they belong to.
///
/// # Errors
/// [`PublishError`] when the broker did not take the message.
pub async fn publish_confirmed(ch: &Channel, msg: Outgoing<'_>) -> Result<(), PublishError> {
    publish_confirmed_in_trace_of(None, ch, msg).await
}

/// [`publish_confirmed`] for a copy of a message that carries a trace
/// context in `original`'s headers: the publish span continues that context
/// instead of the current span's, so the copy stays in its message's trace
/// (the parked tasks `warden reauth` releases, say). Without a context in
/// them it is [`publish_confirmed`].
///
/// # Errors
/// [`PublishError`] when the broker did not take the message.
pub async fn publish_confirmed_in_trace_of(
    original: Option<&FieldTable>,
    ch: &Channel,
    mut msg: Outgoing<'_>,
) -> Result<(), PublishError> {
    let span = crate::observe::trace::publish_span(
        msg.exchange,
        msg.routing_key,
        &msg.properties,
        msg.body.len(),
    );
    if let Some(headers) = original {
        crate::observe::trace::continue_from(&span, headers);
    }
    msg.properties = crate::observe::trace::with_context(msg.properties, &span);
    let result = publish_confirmed_untraced(ch, &msg)
        .instrument(span.clone())
        .await;
    if let Err(e) = &result {
        crate::observe::trace::record_error(&span, e.error_type());
    }
    result
}

/// [`publish_confirmed`] without a span of its own and without touching the
/// headers: for messages that carry the current context themselves (see
/// [`crate::amqp::events::publish`]).
///
/// A nack is retried on the same channel, at most [`NACK_RETRIES`] times with
/// a doubling pause from [`NACK_BACKOFF`]: a quorum queue whose leader is
/// being elected after a node died refuses a message for a moment and then
/// takes it. Ending the session on the first nack (as warden did) redelivered
/// everything in flight to the worker, a second time for tasks already
/// redelivered by the node's loss. A broker that keeps refusing (a full
/// `reject-publish` queue) still ends in [`PublishError::Nacked`], after about
/// a second and a half.
///
/// # Errors
/// [`PublishError`] when the broker did not take the message.
pub async fn publish_confirmed_untraced(
    ch: &Channel,
    msg: &Outgoing<'_>,
) -> Result<(), PublishError> {
    let Outgoing {
        exchange,
        routing_key,
        body,
        ref properties,
        mandatory,
    } = *msg;
    let mut pause = NACK_BACKOFF;
    for retry in 0..=NACK_RETRIES {
        let confirm = ch
            .basic_publish(
                exchange.into(),
                routing_key.into(),
                BasicPublishOptions {
                    mandatory,
                    ..Default::default()
                },
                body,
                properties.clone(),
            )
            .await?
            .await?;
        if confirm.is_nack() {
            if retry == NACK_RETRIES {
                break;
            }
            tracing::debug!(exchange, retry = retry + 1, pause = ?pause, "the broker nacked a publish; retrying on the same channel");
            tokio::time::sleep(pause).await;
            pause *= 2;
            continue;
        }
        if confirm.take_message().is_some() {
            return Err(PublishError::Returned {
                exchange: exchange.into(),
                routing_key: routing_key.into(),
            });
        }
        return Ok(());
    }
    tracing::warn!(
        exchange,
        retries = NACK_RETRIES,
        "the broker kept refusing a publish"
    );
    Err(PublishError::Nacked {
        exchange: exchange.into(),
    })
}

/// How often a nacked publish is sent again before it counts as refused.
pub const NACK_RETRIES: u32 = 5;

/// The first pause before a nacked publish is sent again; each further one
/// doubles (50, 100, 200, 400, 800 ms: about 1.5 s in all, longer than a
/// quorum leader election on a 3-node cluster takes).
pub const NACK_BACKOFF: Duration = Duration::from_millis(50);

/// Publishes tasks to `{prefix}.tasks` with pipelined confirms.
#[derive(Debug)]
pub struct Publisher {
    conn: Connection,
    ch: Channel,
    exchange: String,
}

impl Publisher {
    /// Connects (failing fast, not retrying: a CLI user wants an answer) and
    /// declares the topology so that the first task is not unroutable.
    ///
    /// # Errors
    /// The broker is unreachable or refused the declarations.
    pub async fn connect(settings: &Settings) -> anyhow::Result<Self> {
        let tool = super::ToolSession::open(settings, "publisher", true).await?;
        Ok(Self {
            conn: tool.conn,
            ch: tool.ch,
            exchange: tool.topology.tasks(),
        })
    }

    /// Publishes one task and waits for its confirm.
    ///
    /// # Errors
    /// [`PublishError`].
    pub async fn publish(&self, task: &Task) -> Result<(), PublishError> {
        let body = task.to_body();
        let msg = Outgoing {
            exchange: &self.exchange,
            routing_key: &task.kind,
            body: &body,
            properties: task_properties(&task.id, FieldTable::default()),
            mandatory: true,
        };
        publish_confirmed(&self.ch, msg).await
    }

    /// Publishes many tasks keeping up to `window` confirms in flight, calling
    /// `progress` after each confirm. Stops at the first refused message.
    ///
    /// # Errors
    /// The first [`PublishError`]; tasks before it are published.
    pub async fn publish_all(
        &self,
        tasks: impl IntoIterator<Item = Task>,
        window: usize,
        mut progress: impl FnMut(),
    ) -> Result<usize, PublishError> {
        let mut pending = FuturesUnordered::new();
        let mut done = 0;
        for task in tasks {
            if pending.len() >= window.max(1)
                && let Some(r) = pending.next().await
            {
                r?;
                done += 1;
                progress();
            }
            pending.push(async move { self.publish(&task).await });
        }
        while let Some(r) = pending.next().await {
            r?;
            done += 1;
            progress();
        }
        Ok(done)
    }

    /// The confirm-mode channel, for raw publishes.
    #[must_use]
    pub fn channel(&self) -> &Channel {
        &self.ch
    }

    /// Closes channel and connection cleanly.
    pub async fn close(self) {
        let _ = self.ch.close(200, "bye".into()).await;
        let _ = self.conn.close(200, "bye".into()).await;
    }
}

/// Reads tasks from an NDJSON file: one task object per line; `id` may be
/// omitted (a fresh one is assigned). Blank lines are skipped.
///
/// # Errors
/// The first bad line, named by its number; nothing is published then.
pub fn read_ndjson(path: &Path) -> anyhow::Result<Vec<Task>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    let mut tasks = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let mut value: serde_json::Value = serde_json::from_str(line)
            .map_err(|e| anyhow::anyhow!("{}:{}: not valid JSON: {e}", path.display(), i + 1))?;
        if let Some(obj) = value.as_object_mut() {
            obj.entry("id")
                .or_insert_with(|| uuid::Uuid::now_v7().to_string().into());
        }
        let task: Task = serde_json::from_value(value)
            .map_err(|e| anyhow::anyhow!("{}:{}: not a task: {e}", path.display(), i + 1))?;
        task.check()
            .map_err(|e| anyhow::anyhow!("{}:{}: {e}", path.display(), i + 1))?;
        tasks.push(task);
    }
    Ok(tasks)
}
