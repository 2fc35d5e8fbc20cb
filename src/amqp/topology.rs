//! The whole broker topology, declared idempotently in one place.
//!
//! ```text
//! {p}.tasks  (topic x) ──#──▶ {p}.tasks (quorum q, fixed delivery-limit backstop, DLX → {p}.dead)
//! {p}.delay  (headers x) ─warden-delay=<tier>─▶ {p}.retry.<tier> (TTL, DLX → {p}.tasks)
//!                        ─warden-delay=parked─▶ {p}.parked       (per-message TTL, DLX → {p}.tasks)
//! {p}.dead   (fanout x) ──▶ {p}.dead (quorum q)
//! {p}.events (topic x)      task.* / reauth.* lifecycle events
//! {p}.reauth (quorum q)     token-revocation requests for `warden reauth`
//! {p}.tokens (fanout x) ──▶ one exclusive queue per worker: "channel C has a new token"
//! ```
//!
//! Retry and park copies go through a headers exchange rather than straight to
//! their queue so that they keep the task's routing key: when their TTL expires
//! the broker dead-letters them into `{p}.tasks` under that same key.
//!
//! No queue argument depends on configuration: a queue's arguments cannot
//! change once it exists, so a rollout that changed one would leave the new
//! pods failing their declare. The delivery limit is enforced by the worker
//! (the queue keeps a fixed backstop), the park time travels as each parked
//! copy's expiration, and a retry tier's delay is part of its queue's name.

use std::time::Duration;

use lapin::options::{
    ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{Channel, ExchangeKind};

use crate::config::Settings;

/// Delay-header value that routes a copy to `{p}.parked`.
pub const PARKED_ROUTE: &str = "parked";

/// Names and arguments of every exchange and queue for one prefix.
#[derive(Debug, Clone)]
pub struct Topology {
    prefix: String,
    tier_delays: Vec<Duration>,
}

/// One row of `warden topology`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct QueueInfo {
    /// Queue name.
    pub name: String,
    /// Its role.
    pub role: String,
    /// Ready messages, as the broker reports them on declare (unacknowledged
    /// ones are not counted).
    pub messages: u32,
    /// Consumers attached.
    pub consumers: u32,
}

fn table(entries: &[(&str, AMQPValue)]) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in entries {
        t.insert(ShortString::from(*k), v.clone());
    }
    t
}

fn text(s: &str) -> AMQPValue {
    AMQPValue::LongString(s.into())
}

fn ms(d: Duration) -> AMQPValue {
    AMQPValue::LongLongInt(i64::try_from(d.as_millis()).unwrap_or(i64::MAX).max(1))
}

impl Topology {
    /// The topology described by `settings`.
    #[must_use]
    pub fn new(settings: &Settings) -> Self {
        Self {
            prefix: settings.prefix.clone(),
            tier_delays: settings.retry.tier_delays(),
        }
    }

    /// `{p}.tasks`: the exchange producers publish to, and the work queue.
    #[must_use]
    pub fn tasks(&self) -> String {
        format!("{}.tasks", self.prefix)
    }
    /// `{p}.delay`: the headers exchange in front of the delay queues.
    #[must_use]
    pub fn delay_exchange(&self) -> String {
        format!("{}.delay", self.prefix)
    }
    /// `{p}.dead`: the dead-letter exchange and queue.
    #[must_use]
    pub fn dead(&self) -> String {
        format!("{}.dead", self.prefix)
    }
    /// `{p}.events`: lifecycle events.
    #[must_use]
    pub fn events(&self) -> String {
        format!("{}.events", self.prefix)
    }
    /// `{p}.reauth`: revocation requests, consumed by `warden reauth`.
    #[must_use]
    pub fn reauth(&self) -> String {
        format!("{}.reauth", self.prefix)
    }
    /// `{p}.tokens`: fanout of "token refreshed" notices to every worker.
    #[must_use]
    pub fn tokens(&self) -> String {
        format!("{}.tokens", self.prefix)
    }
    /// `{p}.parked`: tasks waiting for their channel's re-authentication.
    #[must_use]
    pub fn parked(&self) -> String {
        format!("{}.parked", self.prefix)
    }
    /// The delay of each retry tier.
    #[must_use]
    pub fn tier_delays(&self) -> &[Duration] {
        &self.tier_delays
    }
    /// The routing value (and queue-name suffix) of tier `i`, e.g. `4s` or `1m4s`.
    #[must_use]
    pub fn tier_route(&self, i: usize) -> String {
        humantime::format_duration(self.tier_delays[i])
            .to_string()
            .replace(' ', "")
    }
    /// `{p}.retry.<tier>`.
    #[must_use]
    pub fn retry_queue(&self, i: usize) -> String {
        format!("{}.retry.{}", self.prefix, self.tier_route(i))
    }

    /// Arguments of the work queue. Quorum, because it replicates and counts
    /// deliveries; at-least-once dead-lettering so a broker-side dead letter
    /// cannot be lost, which RabbitMQ only allows with `reject-publish`.
    fn tasks_args(&self) -> FieldTable {
        table(&[
            ("x-queue-type", text("quorum")),
            // A fixed backstop, whatever `delivery_limit` says: see
            // `BROKER_DELIVERY_LIMIT`.
            (
                "x-delivery-limit",
                AMQPValue::LongLongInt(i64::from(crate::config::BROKER_DELIVERY_LIMIT)),
            ),
            ("x-dead-letter-exchange", text(&self.dead())),
            ("x-dead-letter-strategy", text("at-least-once")),
            ("x-overflow", text("reject-publish")),
        ])
    }

    /// Arguments of a delay queue: a retry tier's (`ttl` is its delay, which
    /// is also in its name) or, without a TTL, `{p}.parked`'s, whose copies
    /// carry their own expiration.
    fn delay_args(&self, ttl: Option<Duration>) -> FieldTable {
        let mut args = table(&[
            ("x-queue-type", text("quorum")),
            ("x-dead-letter-exchange", text(&self.tasks())),
            ("x-dead-letter-strategy", text("at-least-once")),
            ("x-overflow", text("reject-publish")),
        ]);
        if let Some(ttl) = ttl {
            args.insert("x-message-ttl".into(), ms(ttl));
        }
        args
    }

    /// Declares everything; safe to call on every (re)connect and from every
    /// replica at once.
    ///
    /// # Errors
    /// A broker error, e.g. `PRECONDITION_FAILED` when a queue exists with other
    /// arguments (a changed delivery limit needs the queue deleted first).
    pub async fn declare(&self, ch: &Channel) -> lapin::Result<()> {
        let exchanges = [
            (self.tasks(), ExchangeKind::Topic),
            (self.delay_exchange(), ExchangeKind::Headers),
            (self.dead(), ExchangeKind::Fanout),
            (self.events(), ExchangeKind::Topic),
            (self.tokens(), ExchangeKind::Fanout),
        ];
        for (name, kind) in exchanges {
            let durable = ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            };
            ch.exchange_declare(name.into(), kind, durable, FieldTable::default())
                .await?;
        }
        let quorum = || table(&[("x-queue-type", text("quorum"))]);
        declare_queue(ch, &self.reauth(), quorum(), None).await?;
        declare_queue(ch, &self.dead(), quorum(), Some((self.dead(), "", none()))).await?;
        let tasks = (self.tasks(), "#", none());
        declare_queue(ch, &self.tasks(), self.tasks_args(), Some(tasks)).await?;
        self.declare_delay_queues(ch).await
    }

    /// One queue per retry tier and `{p}.parked`, each bound to the delay
    /// exchange by its `x-warden-delay` route and dead-lettering back to the
    /// tasks when its messages expire.
    async fn declare_delay_queues(&self, ch: &Channel) -> lapin::Result<()> {
        let mut delays: Vec<(String, String, Option<Duration>)> = (0..self.tier_delays.len())
            .map(|i| {
                (
                    self.retry_queue(i),
                    self.tier_route(i),
                    Some(self.tier_delays[i]),
                )
            })
            .collect();
        delays.push((self.parked(), PARKED_ROUTE.to_owned(), None));
        for (queue, route, ttl) in delays {
            let binding = table(&[
                ("x-match", text("all")),
                (crate::amqp::envelope::DELAY_HEADER, text(&route)),
            ]);
            let bind = Some((self.delay_exchange(), "", binding));
            declare_queue(ch, &queue, self.delay_args(ttl), bind).await?;
        }
        Ok(())
    }

    /// For tools (publish, dlq, topology): use the topology if the task queue
    /// exists, whatever arguments the workers declared it with, and declare it
    /// only when it does not. A CLI whose settings differ from the workers' (say,
    /// another delivery limit) must not fail on, or fight over, the queues.
    ///
    /// # Errors
    /// Broker errors.
    pub async fn ensure(&self, conn: &lapin::Connection) -> lapin::Result<()> {
        // A failed passive declare closes its channel, so probe on a spare one.
        let probe = conn.create_channel().await?;
        let exists = inspect(&probe, &self.tasks()).await.is_ok();
        if exists {
            let _ = probe.close(200, "probe".into()).await;
            return Ok(());
        }
        self.declare(&conn.create_channel().await?).await
    }

    /// Every queue with its role, in the order a reader follows a task.
    #[must_use]
    pub fn queues(&self) -> Vec<(String, &'static str)> {
        let mut q = vec![(self.tasks(), "work queue")];
        for i in 0..self.tier_delays.len() {
            q.push((self.retry_queue(i), "retry delay"));
        }
        q.push((self.parked(), "parked"));
        q.push((self.reauth(), "re-auth requests"));
        q.push((self.dead(), "dead letters"));
        q
    }

    /// Counts messages and consumers of every queue (passive declares).
    ///
    /// # Errors
    /// A broker error; a missing queue closes the channel with `NOT_FOUND`.
    pub async fn describe(&self, ch: &Channel) -> lapin::Result<Vec<QueueInfo>> {
        let mut out = Vec::new();
        for (name, role) in self.queues() {
            let q = inspect(ch, &name).await?;
            out.push(QueueInfo {
                name,
                role: role.into(),
                messages: q.message_count(),
                consumers: q.consumer_count(),
            });
        }
        Ok(out)
    }

    /// Deletes every queue and exchange of this prefix (tests and the demo clean
    /// up with it). Missing ones are fine.
    ///
    /// # Errors
    /// A broker error other than a missing entity.
    pub async fn delete(&self, ch: &Channel) -> lapin::Result<()> {
        for (name, _) in self.queues() {
            ch.queue_delete(name.into(), QueueDeleteOptions::default())
                .await?;
        }
        for x in [
            self.tasks(),
            self.delay_exchange(),
            self.dead(),
            self.events(),
            self.tokens(),
        ] {
            ch.exchange_delete(x.into(), ExchangeDeleteOptions::default())
                .await?;
        }
        Ok(())
    }
}

/// A passive declare of `queue`: its message and consumer counts, declaring
/// nothing. A missing queue closes `ch` with `NOT_FOUND`.
///
/// # Errors
/// Broker errors.
pub async fn inspect(ch: &Channel, queue: &str) -> lapin::Result<lapin::Queue> {
    ch.queue_declare(
        queue.into(),
        QueueDeclareOptions {
            passive: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
}

/// Consumes a private copy of what `exchange` routes with `keys`: an
/// exclusive, server-named queue that the broker deletes with the channel.
/// Workers use it for token notices; the demo and tests to follow events.
///
/// # Errors
/// Broker errors.
pub async fn private_consumer(
    ch: &Channel,
    exchange: &str,
    keys: &[&str],
    no_ack: bool,
) -> lapin::Result<lapin::Consumer> {
    let q = ch
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
    for key in keys {
        ch.queue_bind(
            q.name().clone(),
            exchange.into(),
            (*key).into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    }
    ch.basic_consume(
        q.name().clone(),
        "".into(),
        lapin::options::BasicConsumeOptions {
            no_ack,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
}

/// One queue argument that differs from what warden declares, as RabbitMQ
/// reports it in a `PRECONDITION_FAILED` ("inequivalent arg ...").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArgumentMismatch {
    /// The queue.
    pub queue: String,
    /// The argument, e.g. `x-delivery-limit`.
    pub argument: String,
    /// What the existing queue has (`none` when it lacks the argument).
    pub current: String,
    /// What warden declares (`none` when it declares no such argument).
    pub declared: String,
}

impl ArgumentMismatch {
    /// Reads RabbitMQ's message: `inequivalent arg 'A' for queue 'Q' in vhost
    /// 'V': received 'X' but current is 'Y'` (3.x), or `received the value 'X'
    /// of type 'T' but current is the value 'Y' of type 'U'` (4.x); either
    /// side may be `none`.
    #[must_use]
    pub fn parse(message: &str) -> Option<Self> {
        let quoted = |s: &str, after: &str| -> Option<String> {
            let rest = &s[s.find(after)? + after.len()..];
            let rest = rest.strip_prefix('\'')?;
            Some(rest[..rest.find('\'')?].to_owned())
        };
        let side = |s: &str, after: &str| -> Option<String> {
            let rest = &s[s.find(after)? + after.len()..];
            if rest.starts_with("none") {
                return Some("none".into());
            }
            // 3.x: `received '20'`; 4.x: `received the value '20' of type …`.
            let rest = rest.strip_prefix("the value ").unwrap_or(rest);
            let rest = rest.strip_prefix('\'')?;
            Some(rest[..rest.find('\'')?].to_owned())
        };
        Some(Self {
            argument: quoted(message, "inequivalent arg ")?,
            queue: quoted(message, "for queue ")?,
            declared: side(message, "received ")?,
            current: side(message, "but current is ")?,
        })
    }
}

/// Turns a failed declare into one line an operator can act on: a queue
/// that exists with other arguments names the queue, the argument, both
/// values and the command that fixes it.
#[must_use]
pub fn explain_declare_error(e: &lapin::Error, prefix: &str) -> String {
    let text = e.to_string();
    match ArgumentMismatch::parse(&text) {
        Some(m) => format!(
            "declaring the topology: queue '{}' exists with {} = {}, but this warden declares {}. \
             A queue's arguments cannot change in place, and warden no longer derives any from \
             its settings, so this is a one-time move: stop every worker of prefix '{prefix}', \
             then run `warden topology migrate` (it moves the queue's messages aside, declares \
             the queue anew and moves them back)",
            m.queue, m.argument, m.current, m.declared
        ),
        None => format!("declaring the topology: {text}"),
    }
}

/// No arguments.
fn none() -> FieldTable {
    FieldTable::default()
}

/// Declares durable `queue` with `args` and, when given, binds it to
/// `(exchange, routing key, binding arguments)`.
async fn declare_queue(
    ch: &Channel,
    queue: &str,
    args: FieldTable,
    bind: Option<(String, &str, FieldTable)>,
) -> lapin::Result<()> {
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    ch.queue_declare(queue.into(), durable, args).await?;
    if let Some((exchange, key, args)) = bind {
        ch.queue_bind(
            queue.into(),
            exchange.as_str().into(),
            key.into(),
            QueueBindOptions::default(),
            args,
        )
        .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_precondition_failure_names_the_queue_the_argument_and_both_values() {
        let m = ArgumentMismatch::parse(
            "PRECONDITION_FAILED - inequivalent arg 'x-delivery-limit' for queue 'w.tasks' in \
             vhost '/': received the value '20' of type 'signedint' but current is the value '4' \
             of type 'long'",
        )
        .unwrap();
        assert_eq!(
            m,
            ArgumentMismatch {
                queue: "w.tasks".into(),
                argument: "x-delivery-limit".into(),
                current: "4".into(),
                declared: "20".into(),
            }
        );
        let m = ArgumentMismatch::parse(
            "inequivalent arg 'x-message-ttl' for queue 'w.parked' in vhost '/': received none \
             but current is the value '30000' of type 'long'",
        )
        .unwrap();
        assert_eq!((m.declared.as_str(), m.current.as_str()), ("none", "30000"));
        let m = ArgumentMismatch::parse(
            "PRECONDITION_FAILED - inequivalent arg 'x-delivery-limit' for queue 'w.tasks' in \
             vhost '/': received '20' but current is '2'",
        )
        .unwrap();
        assert_eq!((m.declared.as_str(), m.current.as_str()), ("20", "2"));
        assert!(ArgumentMismatch::parse("NOT_FOUND - no queue 'x'").is_none());
    }
}
