//! Lifecycle events on `{prefix}.events`, so producers and dashboards can account
//! for every task: `task.succeeded`, `task.retrying`, `task.parked`, `task.dead`
//! (and `reauth.*` from the re-auth consumer).

use chrono::{DateTime, Utc};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel};
use serde::{Deserialize, Serialize};

use crate::amqp::publish::{Outgoing, PERSISTENT, PublishError, publish_confirmed_untraced};

/// One lifecycle event, as JSON on the wire.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Task id (the `message_id` for bodies that were not tasks).
    pub id: String,
    /// Task type (the routing key for bodies that were not tasks).
    #[serde(rename = "type")]
    pub kind: String,
    /// The task's channel, if any.
    #[serde(default)]
    pub channel: Option<String>,
    /// The attempt this event concerns.
    pub attempt: u32,
    /// Dead-letter reason, or the retry tier.
    #[serde(default)]
    pub reason: Option<String>,
    /// What went wrong, if anything; never a secret.
    #[serde(default)]
    pub error: Option<String>,
    /// Handler time.
    pub duration_ms: u64,
    /// When it happened.
    pub at: DateTime<Utc>,
}

/// Routing key of a succeeded task.
pub const SUCCEEDED: &str = "task.succeeded";
/// Routing key of a task sent to a retry tier.
pub const RETRYING: &str = "task.retrying";
/// Routing key of a parked task.
pub const PARKED: &str = "task.parked";
/// Routing key of a dead-lettered task.
pub const DEAD: &str = "task.dead";

/// Publishes `event` under `routing_key` and waits for the confirm. Events are
/// not mandatory: with nobody listening they are simply dropped by the broker.
///
/// The event carries the current trace context (the `process` span of the task
/// it reports on) but gets no `publish` span of its own: it is a notification
/// about that span, and a span each would double the spans (and the export
/// cost) of every task for no extra insight.
///
/// # Errors
/// [`PublishError`] when the broker refuses it.
pub async fn publish(
    ch: &Channel,
    exchange: &str,
    routing_key: &str,
    event: &Event,
) -> Result<(), PublishError> {
    let body = serde_json::to_vec(event).unwrap_or_default();
    let mut headers = FieldTable::default();
    if crate::observe::trace::enabled() {
        crate::observe::trace::inject(&mut headers);
    }
    let props = BasicProperties::default()
        .with_content_type("application/json".into())
        .with_delivery_mode(PERSISTENT)
        .with_headers(headers);
    publish_confirmed_untraced(
        ch,
        &Outgoing {
            exchange,
            routing_key,
            body: &body,
            properties: props,
            mandatory: false,
        },
    )
    .await
}
