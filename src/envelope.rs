//! The wire contract: the task body producers publish, and the headers warden
//! reads and writes on the copies it makes (see DESIGN.md §2 and
//! `schema/task.schema.json`).
//!
//! Decoding never panics and never trusts the producer: a body that is not a
//! task becomes a [`Reject`], and header values of the wrong type or an absurd
//! size fall back to safe defaults instead of granting extra attempts.

use chrono::{DateTime, Utc};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use serde::{Deserialize, Serialize};

/// Header holding how many attempts were already made; a fresh task has none,
/// so its first delivery is attempt 1. Dead letters carry the final count.
pub const ATTEMPT_HEADER: &str = "x-warden-attempts";
/// Header naming the delay queue a retry or park copy is routed to. It has no
/// `x-` prefix on purpose: RabbitMQ's headers exchange ignores `x-` headers when
/// matching, which would send every copy to every delay queue.
pub const DELAY_HEADER: &str = "warden-delay";
/// Dead-letter header: why the task is dead (a [`crate::outcome::DeadReason`]).
pub const REASON_HEADER: &str = "x-warden-reason";
/// Dead-letter header: a human-readable message, never a secret.
pub const ERROR_HEADER: &str = "x-warden-error";
/// Dead-letter header: RFC 3339 time of the failure.
pub const FAILED_AT_HEADER: &str = "x-warden-failed-at";
/// Dead-letter header: the routing key the task was published with.
pub const ROUTING_KEY_HEADER: &str = "x-warden-original-routing-key";

/// Header: RFC 3339 time a task was first parked; bounds how long it may wait
/// for its channel's re-authentication.
pub const PARKED_AT_HEADER: &str = "x-warden-parked-at";

/// Attempt numbers above this are treated as forged and clamped.
const MAX_ATTEMPT_HEADER: i64 = 1_000_000;

/// Longest task `id` and `type`, in bytes: both travel as AMQP short strings
/// (the `message_id` and the routing key), which hold at most 255 bytes.
pub const MAX_SHORT_BYTES: usize = 255;

/// Longest `channel`, in bytes. Channel names come from task bodies, so this
/// bounds what a hostile producer can make a worker look up and cache, and it
/// leaves room for `@<version>` in the 255-byte message id of a re-auth request.
pub const MAX_CHANNEL_BYTES: usize = 200;

// `{channel}@{u64 version}` must fit an AMQP short string (the ShortString
// conversion panics past 255 bytes, outside any `catch_unwind`).
const _: () = assert!(MAX_CHANNEL_BYTES + 1 + 20 <= MAX_SHORT_BYTES);

/// A decoded task, as a handler sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Task {
    /// Unique task id; also the AMQP `message_id`. Handlers should be idempotent on it.
    pub id: String,
    /// Task type; selects the handler and is the routing key.
    #[serde(rename = "type")]
    pub kind: String,
    /// The third-party account the task acts for, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    /// Handler-specific input.
    #[serde(default)]
    pub payload: serde_json::Value,
    /// When the producer created the task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<DateTime<Utc>>,
}

/// Why a body could not be turned into a [`Task`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reject {
    /// Larger than `max_body_bytes`; not parsed at all.
    TooLarge {
        /// Size of the body in bytes.
        size: usize,
        /// The configured limit.
        limit: usize,
    },
    /// Not JSON, not an object, or missing `id`/`type`.
    Malformed(String),
}

impl std::fmt::Display for Reject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reject::TooLarge { size, limit } => {
                write!(f, "body of {size} bytes exceeds the limit of {limit} bytes")
            }
            Reject::Malformed(why) => write!(f, "malformed task body: {why}"),
        }
    }
}

impl Task {
    /// A new task with a fresh UUIDv7 id (time-ordered, so ids sort by creation).
    #[must_use]
    pub fn new(kind: impl Into<String>, payload: serde_json::Value) -> Self {
        Self {
            id: uuid::Uuid::now_v7().to_string(),
            kind: kind.into(),
            channel: None,
            payload,
            created_at: Some(Utc::now()),
        }
    }

    /// Decodes a body, checking its size before reading a byte of it.
    ///
    /// # Errors
    /// A [`Reject`] saying why the body is not a task.
    pub fn decode(body: &[u8], max_bytes: usize) -> Result<Self, Reject> {
        if body.len() > max_bytes {
            return Err(Reject::TooLarge {
                size: body.len(),
                limit: max_bytes,
            });
        }
        let task: Task =
            serde_json::from_slice(body).map_err(|e| Reject::Malformed(e.to_string()))?;
        task.check()?;
        Ok(task)
    }

    /// Checks the fields the wire contract bounds: a non-empty `id` and `type` of
    /// at most [`MAX_SHORT_BYTES`], and a `channel` of at most
    /// [`MAX_CHANNEL_BYTES`]. Producers (`warden publish`) call it before
    /// publishing, the worker after parsing.
    ///
    /// # Errors
    /// [`Reject::Malformed`] naming the field.
    pub fn check(&self) -> Result<(), Reject> {
        if self.id.trim().is_empty() {
            return Err(Reject::Malformed("`id` is empty".into()));
        }
        if self.id.len() > MAX_SHORT_BYTES {
            return Err(Reject::Malformed(format!(
                "`id` is longer than {MAX_SHORT_BYTES} bytes"
            )));
        }
        if self.kind.trim().is_empty() {
            return Err(Reject::Malformed("`type` is empty".into()));
        }
        if self.kind.len() > MAX_SHORT_BYTES {
            return Err(Reject::Malformed(format!(
                "`type` is longer than {MAX_SHORT_BYTES} bytes"
            )));
        }
        if self
            .channel
            .as_ref()
            .is_some_and(|c| c.len() > MAX_CHANNEL_BYTES)
        {
            return Err(Reject::Malformed(format!(
                "`channel` is longer than {MAX_CHANNEL_BYTES} bytes"
            )));
        }
        Ok(())
    }

    /// The body as producers publish it.
    #[must_use]
    pub fn to_body(&self) -> Vec<u8> {
        // A Task holds only strings and JSON values, which always serialise.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// Reads the attempt number a delivery represents: attempts made so far, plus one.
///
/// Missing, mistyped or negative values mean a first attempt; values
/// beyond any sane retry count are clamped, so a forged header can only ever
/// bring a task *closer* to the dead-letter queue, never further from it.
#[must_use]
pub fn attempt_of(headers: Option<&FieldTable>) -> u32 {
    let Some(value) = headers.and_then(|h| h.inner().get(ATTEMPT_HEADER)) else {
        return 1;
    };
    let made = integer_of(value).unwrap_or(0).clamp(0, MAX_ATTEMPT_HEADER);
    u32::try_from(made + 1).unwrap_or(u32::MAX)
}

/// Any AMQP integer as an `i64`; strings and other types are `None`.
#[must_use]
pub fn integer_of(value: &AMQPValue) -> Option<i64> {
    Some(match value {
        AMQPValue::ShortShortInt(v) => i64::from(*v),
        AMQPValue::ShortShortUInt(v) => i64::from(*v),
        AMQPValue::ShortInt(v) => i64::from(*v),
        AMQPValue::ShortUInt(v) => i64::from(*v),
        AMQPValue::LongInt(v) => i64::from(*v),
        AMQPValue::LongUInt(v) => i64::from(*v),
        AMQPValue::LongLongInt(v) => *v,
        _ => return None,
    })
}

/// A header value as text, whatever string type the producer used.
#[must_use]
pub fn text_of(value: &AMQPValue) -> Option<String> {
    match value {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

/// Looks a text header up by name.
#[must_use]
pub fn header_text(headers: Option<&FieldTable>, name: &str) -> Option<String> {
    headers.and_then(|h| h.inner().get(name)).and_then(text_of)
}

/// When a parked task was first parked, from [`PARKED_AT_HEADER`]. A time in
/// the future is clamped to now: a forged header must not make a parked task
/// wait for ever. Missing or unreadable values are `None`, and the worker then
/// stamps the copy with the current time, so the wait is bounded either way.
#[must_use]
pub fn parked_at(headers: Option<&FieldTable>, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    header_text(headers, PARKED_AT_HEADER)
        .and_then(|t| DateTime::parse_from_rfc3339(&t).ok())
        .map(|t| t.with_timezone(&Utc).min(now))
}

/// Sets a long-string header.
pub fn set_text(headers: &mut FieldTable, name: &str, value: &str) {
    headers.insert(ShortString::from(name), AMQPValue::LongString(value.into()));
}

/// Sets an integer header.
pub fn set_int(headers: &mut FieldTable, name: &str, value: i64) {
    headers.insert(ShortString::from(name), AMQPValue::LongLongInt(value));
}

/// The reason the broker gave in the newest `x-death` entry, if any; this is how a
/// message dead-lettered by the delivery limit is recognised.
#[must_use]
pub fn broker_death_reason(headers: Option<&FieldTable>) -> Option<String> {
    let AMQPValue::FieldArray(deaths) = headers?.inner().get("x-death")? else {
        return None;
    };
    let AMQPValue::FieldTable(first) = deaths.as_slice().first()? else {
        return None;
    };
    first.inner().get("reason").and_then(text_of)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(value: AMQPValue) -> FieldTable {
        let mut h = FieldTable::default();
        h.insert(ATTEMPT_HEADER.into(), value);
        h
    }

    #[test]
    fn a_minimal_body_decodes() {
        let t = Task::decode(br#"{"id":"a","type":"builtin.noop"}"#, 1024).unwrap();
        assert_eq!(t.kind, "builtin.noop");
        assert_eq!(t.payload, serde_json::Value::Null);
    }

    #[test]
    fn bodies_over_the_limit_are_too_large_without_parsing() {
        let err = Task::decode(b"not even json", 4).unwrap_err();
        assert_eq!(err, Reject::TooLarge { size: 13, limit: 4 });
    }

    #[test]
    fn missing_fields_and_garbage_are_malformed() {
        for body in [
            &b"{}"[..],
            b"[1,2]",
            b"\xff\xfe",
            br#"{"id":"","type":"x"}"#,
            br#"{"id":"a"}"#,
        ] {
            assert!(
                matches!(Task::decode(body, 1024), Err(Reject::Malformed(_))),
                "{body:?}"
            );
        }
    }

    #[test]
    fn deeply_nested_json_is_malformed_not_a_stack_overflow() {
        let body = format!(
            r#"{{"id":"a","type":"t","payload":{}{}}}"#,
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        assert!(matches!(
            Task::decode(body.as_bytes(), usize::MAX),
            Err(Reject::Malformed(_))
        ));
    }

    #[test]
    fn a_forged_future_parked_at_is_clamped_to_now() {
        let now = Utc::now();
        let mut h = FieldTable::default();
        set_text(&mut h, PARKED_AT_HEADER, "9999-12-31T23:59:59Z");
        assert_eq!(parked_at(Some(&h), now), Some(now));
        set_text(&mut h, PARKED_AT_HEADER, "2020-01-01T00:00:00Z");
        assert_eq!(
            parked_at(Some(&h), now).unwrap().to_rfc3339(),
            "2020-01-01T00:00:00+00:00"
        );
        set_text(&mut h, PARKED_AT_HEADER, "not a time");
        assert_eq!(parked_at(Some(&h), now), None);
    }

    #[test]
    fn field_lengths_are_bounded_by_the_wire_contract() {
        let task = |id: &str, kind: &str, channel: Option<&str>| {
            let mut t = Task::new(kind, serde_json::json!({}));
            t.id = id.to_owned();
            t.channel = channel.map(str::to_owned);
            Task::decode(&t.to_body(), usize::MAX)
        };
        assert!(task(&"i".repeat(255), "t", Some(&"c".repeat(200))).is_ok());
        assert!(matches!(
            task(&"i".repeat(256), "t", None),
            Err(Reject::Malformed(_))
        ));
        assert!(matches!(
            task("i", &"t".repeat(256), None),
            Err(Reject::Malformed(_))
        ));
        assert!(matches!(
            task("i", "t", Some(&"c".repeat(201))),
            Err(Reject::Malformed(m)) if m.contains("channel")
        ));
    }

    #[test]
    fn forged_attempt_headers_never_grant_extra_attempts() {
        assert_eq!(attempt_of(None), 1);
        assert_eq!(attempt_of(Some(&headers(AMQPValue::LongLongInt(-5)))), 1);
        assert_eq!(
            attempt_of(Some(&headers(AMQPValue::LongString("9".into())))),
            1
        );
        assert_eq!(
            attempt_of(Some(&headers(AMQPValue::LongLongInt(i64::MAX)))),
            1_000_001
        );
        assert_eq!(attempt_of(Some(&headers(AMQPValue::ShortUInt(2)))), 3);
    }
}
