//! How each task of a mixed run must end, and the check that every one did:
//! the invariant of the chaos and cluster suites.

use std::collections::HashMap;

use super::TestBroker;

/// How a task must end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    Succeeded,
    Dead(&'static str),
}

/// Per task id, each terminal event: its routing key and dead-letter reason.
pub type Endings = HashMap<String, Vec<(String, Option<String>)>>;

/// What became of a run's tasks.
#[derive(Debug)]
pub struct Outcome {
    /// Tasks that never ended.
    pub missing: usize,
    /// Endings that are not how their task must end, described.
    pub wrong: Vec<String>,
    /// Endings beyond each task's first: at-least-once redeliveries.
    pub duplicates: usize,
}

impl Outcome {
    /// Compares `endings` with `expected`, task by task and ending by ending.
    pub fn of(expected: &HashMap<String, Expect>, endings: &Endings) -> Self {
        let missing = expected
            .keys()
            .filter(|id| !endings.contains_key(*id))
            .count();
        let mut wrong = Vec::new();
        for (id, expect) in expected {
            for (rk, reason) in endings.get(id).into_iter().flatten() {
                let ok = match expect {
                    Expect::Succeeded => rk == "task.succeeded",
                    Expect::Dead(why) => rk == "task.dead" && reason.as_deref() == Some(*why),
                };
                if !ok {
                    wrong.push(format!("{id}: expected {expect:?}, got {rk} {reason:?}"));
                }
            }
        }
        let duplicates = endings.values().map(|e| e.len().saturating_sub(1)).sum();
        Self {
            missing,
            wrong,
            duplicates,
        }
    }

    /// Asserts that no task was lost or ended wrongly, and that duplicates
    /// stay within `budget`.
    pub fn assert_within(&self, budget: usize) {
        assert_eq!(self.missing, 0, "lost tasks");
        assert!(
            self.wrong.is_empty(),
            "{:#?}",
            &self.wrong[..self.wrong.len().min(10)]
        );
        assert!(
            self.duplicates <= budget,
            "duplicates {} over the in-flight windows {budget}",
            self.duplicates
        );
    }
}

/// Asserts that `{prefix}.dead` holds exactly the tasks that had to die, with
/// their reasons, and nothing that had to succeed.
pub async fn assert_dead_letters(broker: &TestBroker, expected: &HashMap<String, Expect>) {
    let dead = broker.dead_letters().await;
    let dead_ids: HashMap<&str, &str> = dead
        .iter()
        .map(|d| (d.id.as_str(), d.reason.as_str()))
        .collect();
    for (id, expect) in expected {
        match expect {
            Expect::Succeeded => assert!(!dead_ids.contains_key(id.as_str()), "{id} is dead"),
            Expect::Dead(why) => assert_eq!(dead_ids.get(id.as_str()), Some(why), "{id}"),
        }
    }
}
