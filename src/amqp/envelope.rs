//! The wire contract: the task body producers publish, and the headers warden
//! reads and writes on the copies it makes (see README.md, "Publishing from any language", and
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

/// Header on the copies of a task that ran in the sandbox: its retries run
/// there too (a task that timed out there by blocking its thread would block
/// one of the worker's). Forging it only costs the producer speed.
pub const SANDBOX_HEADER: &str = "x-warden-sandbox";
/// The broker's count of earlier deliveries of a quorum-queue message that
/// ended without an ack (absent on the first delivery).
pub const DELIVERY_COUNT_HEADER: &str = "x-delivery-count";
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

/// How many times the broker has handed this message out before, per its
/// `x-delivery-count` (0 when absent or not a sane integer).
#[must_use]
pub fn earlier_deliveries(headers: Option<&FieldTable>) -> u32 {
    headers
        .and_then(|h| h.inner().get(DELIVERY_COUNT_HEADER))
        .and_then(integer_of)
        .and_then(|n| u32::try_from(n).ok())
        .unwrap_or(0)
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

/// The headers a copy (retry, park, dead letter) starts from: the delivery's,
/// less the broker's `x-delivery-count`, which describes the original message
/// and would make the copy look handed out before.
#[must_use]
pub fn copy_headers(original: Option<&FieldTable>) -> FieldTable {
    let Some(original) = original else {
        return FieldTable::default();
    };
    if !original.contains_key(DELIVERY_COUNT_HEADER) {
        return original.clone();
    }
    let mut map = original.inner().clone();
    map.remove(DELIVERY_COUNT_HEADER);
    FieldTable::from(map)
}

/// Is `name` a header warden needs on its copies: its own, and trace context?
fn is_own_header(name: &str) -> bool {
    name.starts_with("x-warden-")
        || name == DELAY_HEADER
        || name == "traceparent"
        || name == "tracestate"
}

/// Makes `headers` fit in `budget` bytes as encoded on the wire by dropping
/// foreign headers (anything not warden's own or trace context), largest
/// first. Returns the names dropped and the bytes they took; empty when it
/// already fit. A copy must fit in one frame of the connection, or the
/// broker closes the connection and every task in flight on it is returned.
pub fn fit_headers(headers: &mut FieldTable, budget: usize) -> (Vec<String>, usize) {
    let mut total = encoded_table_len(headers);
    if total <= budget {
        return (Vec::new(), 0);
    }
    let mut foreign: Vec<(String, usize)> = headers
        .inner()
        .iter()
        .filter(|(k, _)| !is_own_header(k.as_str()))
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                1 + k.as_str().len() + encoded_value_len(v),
            )
        })
        .collect();
    foreign.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let mut map = headers.inner().clone();
    let (mut dropped, mut freed) = (Vec::new(), 0);
    for (name, size) in foreign {
        if total <= budget {
            break;
        }
        map.remove(name.as_str());
        total -= size;
        freed += size;
        dropped.push(name);
    }
    *headers = FieldTable::from(map);
    (dropped, freed)
}

/// Bytes a field table takes on the wire (AMQP 0-9-1 §4.2.1, RabbitMQ's types).
#[must_use]
pub fn encoded_table_len(table: &FieldTable) -> usize {
    4 + table
        .inner()
        .iter()
        .map(|(k, v)| 1 + k.as_str().len() + encoded_value_len(v))
        .sum::<usize>()
}

/// Bytes a value takes on the wire: its type octet and its encoding.
fn encoded_value_len(value: &AMQPValue) -> usize {
    1 + match value {
        AMQPValue::Boolean(_) | AMQPValue::ShortShortInt(_) | AMQPValue::ShortShortUInt(_) => 1,
        AMQPValue::ShortInt(_) | AMQPValue::ShortUInt(_) => 2,
        AMQPValue::LongInt(_) | AMQPValue::LongUInt(_) | AMQPValue::Float(_) => 4,
        AMQPValue::LongLongInt(_) | AMQPValue::Double(_) | AMQPValue::Timestamp(_) => 8,
        AMQPValue::DecimalValue(_) => 5,
        AMQPValue::ShortString(s) => 1 + s.as_str().len(),
        AMQPValue::LongString(s) => 4 + s.as_bytes().len(),
        AMQPValue::ByteArray(b) => 4 + b.as_slice().len(),
        AMQPValue::FieldArray(a) => 4 + a.as_slice().iter().map(encoded_value_len).sum::<usize>(),
        AMQPValue::FieldTable(t) => encoded_table_len(t),
        AMQPValue::Void => 0,
    }
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

    #[test]
    fn a_copy_too_large_for_the_frame_drops_foreign_headers_largest_first_and_keeps_warden_s() {
        let mut h = FieldTable::default();
        set_text(&mut h, "x-small", "s");
        set_text(&mut h, "x-big", &"b".repeat(5000));
        set_text(&mut h, "x-bigger", &"b".repeat(9000));
        set_text(&mut h, ERROR_HEADER, &"e".repeat(1000));
        set_text(
            &mut h,
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        );
        let before = encoded_table_len(&h);
        let (dropped, freed) = fit_headers(&mut h, before - 6000);
        assert_eq!(dropped, ["x-bigger"]);
        assert_eq!(encoded_table_len(&h), before - freed);
        assert!(
            h.contains_key("x-big")
                && h.contains_key(ERROR_HEADER)
                && h.contains_key("traceparent")
        );
        let (dropped, _) = fit_headers(&mut h, 10);
        assert_eq!(
            dropped,
            ["x-big", "x-small"],
            "warden's own headers and trace context stay"
        );
        assert_eq!(fit_headers(&mut h, usize::MAX), (Vec::new(), 0));
    }

    #[test]
    fn the_encoded_length_counts_every_byte_of_the_wire_format() {
        let mut h = FieldTable::default();
        // 4 (table length) + 1 + 1 (key) + 1 (type) + 4 + 3 (long string)
        set_text(&mut h, "a", "xyz");
        assert_eq!(encoded_table_len(&h), 14);
        // + 1 + 1 + 1 + 8 (long long)
        set_int(&mut h, "b", 7);
        assert_eq!(encoded_table_len(&h), 25);
    }

    #[test]
    fn a_copy_forgets_the_broker_s_delivery_count_of_the_original() {
        let mut h = FieldTable::default();
        set_int(&mut h, DELIVERY_COUNT_HEADER, 3);
        set_text(&mut h, "x-other", "kept");
        assert_eq!(earlier_deliveries(Some(&h)), 3);
        let copy = copy_headers(Some(&h));
        assert_eq!(earlier_deliveries(Some(&copy)), 0);
        assert!(copy.contains_key("x-other"));
    }
}
