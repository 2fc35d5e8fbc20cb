//! What the demo expects to settle, and what did: per task type, published,
//! succeeded, retries (and parks), and dead.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
use warden::amqp::events::{DEAD, Event, SUCCEEDED};

/// The id of the body that is not a task.
pub(super) const MALFORMED: &str = "malformed-1";
/// Its row in the table.
pub(super) const MALFORMED_ROW: &str = "(malformed body)";

/// Counts by task type; a task is settled once it succeeded or is dead.
#[derive(Debug, Default)]
pub(super) struct Tally {
    published: BTreeMap<String, usize>,
    total: usize,
    terminal: HashSet<String>,
    /// Succeeded, retries + parks, dead.
    rows: BTreeMap<String, [usize; 3]>,
    ok: usize,
    retried: usize,
    dead: usize,
    posts_ok: usize,
}

impl Tally {
    /// `n` more tasks of `kind` to wait for.
    pub(super) fn expect(&mut self, kind: &str, n: usize) {
        *self.published.entry(kind.to_owned()).or_default() += n;
        self.total += n;
    }

    /// Tasks expected in all.
    pub(super) fn total(&self) -> usize {
        self.total
    }

    /// Tasks that succeeded or are dead.
    pub(super) fn settled(&self) -> usize {
        self.terminal.len()
    }

    /// `post.publish` tasks that succeeded.
    pub(super) fn posts_ok(&self) -> usize {
        self.posts_ok
    }

    /// Counts a `task.*` event; a repeated terminal event counts once.
    pub(super) fn record(&mut self, routing_key: &str, event: Event) {
        if event.kind == "post.publish" && routing_key == SUCCEEDED {
            self.posts_ok += 1;
        }
        let kind = if event.id == MALFORMED {
            MALFORMED_ROW.to_owned()
        } else {
            event.kind
        };
        let row = self.rows.entry(kind).or_default();
        match routing_key {
            SUCCEEDED => {
                if self.terminal.insert(event.id) {
                    row[0] += 1;
                    self.ok += 1;
                }
            }
            DEAD => {
                if self.terminal.insert(event.id) {
                    row[2] += 1;
                    self.dead += 1;
                }
            }
            _ => {
                row[1] += 1;
                self.retried += 1;
            }
        }
    }

    /// The progress line's message.
    pub(super) fn progress(&self) -> String {
        format!(
            "{} succeeded, {} retries, {} dead",
            self.ok, self.retried, self.dead
        )
    }

    /// The outcome in one sentence, then the table by task type.
    pub(super) fn print(&self, elapsed: Duration) {
        let mut table = Table::new();
        table.load_preset(UTF8_FULL_CONDENSED).set_header([
            "task type",
            "published",
            "succeeded",
            "retries + parks",
            "dead",
        ]);
        for (kind, n) in &self.published {
            let r = self.rows.get(kind).copied().unwrap_or_default();
            table.add_row([
                kind.clone(),
                n.to_string(),
                r[0].to_string(),
                r[1].to_string(),
                r[2].to_string(),
            ]);
        }
        println!(
            "\nAll {} tasks settled in {:.1}s: {} succeeded, {} dead-lettered, {} retries on the way.",
            self.total,
            elapsed.as_secs_f64(),
            self.ok,
            self.dead,
            self.retried
        );
        println!("{table}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use warden::amqp::events::RETRYING;

    fn event(id: &str, kind: &str) -> Event {
        serde_json::from_value(serde_json::json!({
            "id": id, "type": kind, "attempt": 1, "duration_ms": 1,
            "at": "2026-01-01T00:00:00Z"
        }))
        .unwrap()
    }

    #[test]
    fn a_task_settles_once_and_its_retries_count_on_the_way() {
        let mut tally = Tally::default();
        tally.expect("builtin.fail", 1);
        tally.record(RETRYING, event("a", "builtin.fail"));
        tally.record(SUCCEEDED, event("a", "builtin.fail"));
        tally.record(SUCCEEDED, event("a", "builtin.fail"));
        assert_eq!(tally.settled(), 1);
        assert_eq!(tally.progress(), "1 succeeded, 1 retries, 0 dead");
    }

    #[test]
    fn the_malformed_body_has_a_row_of_its_own() {
        let mut tally = Tally::default();
        tally.record(DEAD, event(MALFORMED, "post.publish"));
        assert_eq!(tally.rows[MALFORMED_ROW], [0, 0, 1]);
        assert_eq!(tally.posts_ok(), 0);
    }
}
