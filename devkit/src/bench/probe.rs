//! The latency probe's clock and format: every probe task carries its publish time
//! (`payload.sent_ns`, nanoseconds on a clock shared by the whole process), and the
//! samples taken from it are collected in shared vectors.

use std::sync::{Arc, Mutex};
use std::time::Instant;

/// The payload field holding the publish time.
pub(super) const SENT: &str = "sent_ns";

/// Nanoseconds since `clock`.
pub(super) fn ns(clock: Instant) -> u64 {
    u64::try_from(clock.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// Nanosecond samples, appended from several tasks.
pub(super) type Samples = Arc<Mutex<Vec<u64>>>;

/// The samples so far, leaving none.
pub(super) fn take(samples: &Samples) -> Vec<u64> {
    std::mem::take(
        &mut *samples
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    )
}

/// How many samples there are.
pub(super) fn count(samples: &Samples) -> usize {
    samples
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .len()
}

/// The publish time in a task body, found without parsing the whole body.
pub(super) fn sent_in(body: &[u8]) -> Option<u64> {
    let key = b"\"sent_ns\":";
    let at = body.windows(key.len()).position(|w| w == key)? + key.len();
    body[at..]
        .iter()
        .skip_while(|b| b.is_ascii_whitespace())
        .take_while(|b| b.is_ascii_digit())
        .fold(None, |acc: Option<u64>, d| {
            Some(acc.unwrap_or(0).checked_mul(10)? + u64::from(d - b'0'))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use warden::amqp::envelope::Task;

    #[test]
    fn the_publish_time_is_found_in_a_task_body() {
        let t = Task::new("bench.stamp", serde_json::json!({ SENT: 1_234_567_u64 }));
        assert_eq!(sent_in(&t.to_body()), Some(1_234_567));
        assert_eq!(sent_in(b"{\"id\":\"x\"}"), None);
    }
}
