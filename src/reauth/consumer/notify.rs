//! What a request tells the rest of the system: the workers (on `{prefix}.tokens`), the event
//! stream (`reauth.*`), and the dead-letter queue.

use std::time::Duration;

use chrono::Utc;
use lapin::message::Delivery;
use lapin::options::ConfirmSelectOptions;
use lapin::{BasicProperties, Channel};

use super::context::Ctx;
use crate::amqp::envelope;
use crate::amqp::events::{self, Event};
use crate::amqp::publish::{
    Outgoing, PERSISTENT, PublishError, copy_properties, publish_confirmed,
};
use crate::amqp::topology::Topology;
use crate::channels::{RevocationRequest, TokenRefreshed};
use crate::config::Settings;

/// `reauth.*` routing keys.
pub const STARTED: &str = "reauth.started";
/// A channel was healed.
pub const SUCCEEDED: &str = "reauth.succeeded";
/// A channel could not be healed.
pub const FAILED: &str = "reauth.failed";

/// Tells every worker on `{prefix}.tokens` that `channel` changed (a new
/// token, or a failed re-auth), so each drops its cached state of it.
pub(super) async fn notify_workers(
    ctx: &Ctx,
    publish: &Channel,
    channel: &str,
    version: u64,
) -> Result<(), PublishError> {
    publish_notice(publish, &ctx.topology, channel, version).await
}

/// Publishes the notice that `channel` is at `version` now, with a confirm.
async fn publish_notice(
    publish: &Channel,
    topology: &Topology,
    channel: &str,
    version: u64,
) -> Result<(), PublishError> {
    let notice = TokenRefreshed {
        channel: channel.to_owned(),
        version,
        at: Utc::now(),
    };
    // A string, a number and a date: serializing cannot fail.
    let body = serde_json::to_vec(&notice).unwrap_or_default();
    publish_confirmed(
        publish,
        Outgoing {
            exchange: &topology.tokens(),
            routing_key: "",
            body: &body,
            properties: json_props(),
            mandatory: false,
        },
    )
    .await
}

/// Tells every worker that `channel` has a token at `version`, outside a
/// re-auth (`warden token set`), so that tasks replayed right after it run
/// with the new token instead of meeting a cached failed state.
///
/// # Errors
/// The broker cannot be reached, or `{prefix}.tokens` does not exist yet (no
/// worker or `warden reauth` has declared the topology).
pub async fn announce(settings: &Settings, channel: &str, version: u64) -> anyhow::Result<()> {
    let conn = crate::amqp::broker::connect(settings, "cli", Duration::from_secs(5)).await?;
    let result = async {
        let ch = conn.create_channel().await?;
        ch.confirm_select(ConfirmSelectOptions::default()).await?;
        publish_notice(&ch, &Topology::new(settings), channel, version).await?;
        let _ = ch.close(200, "bye".into()).await;
        anyhow::Ok(())
    }
    .await;
    let _ = conn.close(200, "bye".into()).await;
    result
}

fn json_props() -> BasicProperties {
    BasicProperties::default()
        .with_content_type("application/json".into())
        .with_delivery_mode(PERSISTENT)
}

/// Publishes the `reauth.*` event `routing_key` for `req`.
pub(super) async fn event(
    ctx: &Ctx,
    publish: &Channel,
    routing_key: &str,
    req: &RevocationRequest,
    mode: Option<String>,
    error: Option<String>,
    duration_ms: u64,
) -> Result<(), PublishError> {
    let e = Event {
        id: format!("{}@{}", req.channel, req.failed_version),
        kind: "reauth".into(),
        channel: Some(req.channel.clone()),
        attempt: 1,
        reason: mode,
        error,
        duration_ms,
        at: Utc::now(),
    };
    events::publish(publish, &ctx.topology.events(), routing_key, &e).await
}

/// Dead-letters the request `d` with the reason and error headers workers set.
pub(super) async fn dead_letter(
    ctx: &Ctx,
    publish: &Channel,
    d: &Delivery,
    why: &str,
    reason: &str,
) -> Result<(), PublishError> {
    let mut h = d.properties.headers().clone().unwrap_or_default();
    envelope::set_text(&mut h, envelope::REASON_HEADER, reason);
    envelope::set_text(&mut h, envelope::ERROR_HEADER, why);
    envelope::set_int(
        &mut h,
        envelope::ATTEMPT_HEADER,
        i64::from(ctx.settings.reauth.max_attempts),
    );
    envelope::set_text(&mut h, envelope::FAILED_AT_HEADER, &Utc::now().to_rfc3339());
    envelope::set_text(&mut h, envelope::ROUTING_KEY_HEADER, d.routing_key.as_str());
    publish_confirmed(
        publish,
        Outgoing {
            exchange: &ctx.topology.dead(),
            routing_key: d.routing_key.as_str(),
            body: &d.data,
            properties: copy_properties(&d.properties, h, None),
            mandatory: true,
        },
    )
    .await
}
