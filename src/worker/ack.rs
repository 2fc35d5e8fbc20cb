//! Coalesced acknowledgements.
//!
//! Awaiting one `basic.ack` per message caps lapin at about a fifth of what the
//! broker can do (ARCHITECTURE.md, "The flow of one task"). Instead every task records its delivery in a
//! shared [`Ledger`], and one acker task acknowledges the longest settled run
//! of delivery tags with a single `multiple` ack once half the prefetch window
//! has settled, nothing is left running, or a millisecond has passed
//! ([`Coalesce`]). Tags settled beyond a still-running task are acked one by
//! one, so a slow task never holds the prefetch window hostage.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use lapin::Channel;
use lapin::options::BasicAckOptions;
use tokio::sync::Notify;

/// What the consumer loop and the tasks record in the [`Ledger`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckMsg {
    /// A delivery was received; it may not be covered by a `multiple` ack until done.
    Started(u64),
    /// The delivery is settled (its copies confirmed); acknowledge it.
    Done(u64),
}

/// Tags received but not yet acknowledged; `true` once settled.
#[derive(Debug, Default)]
pub struct Pending {
    tags: BTreeMap<u64, bool>,
    settled: usize,
}

/// The acks one flush sends.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Flush {
    /// Acknowledge everything up to and including this tag.
    pub multiple_up_to: Option<u64>,
    /// Then these, one by one.
    pub single: Vec<u64>,
}

impl Pending {
    /// Records a message.
    pub fn apply(&mut self, msg: AckMsg) {
        match msg {
            AckMsg::Started(tag) => {
                self.tags.insert(tag, false);
            }
            AckMsg::Done(tag) => {
                if self.tags.insert(tag, true) != Some(true) {
                    self.settled += 1;
                }
            }
        }
    }

    /// Takes every settled tag out and says how to acknowledge them.
    pub fn flush(&mut self) -> Flush {
        let mut flush = Flush::default();
        while let Some((&tag, &done)) = self.tags.first_key_value() {
            if !done {
                break;
            }
            self.tags.pop_first();
            flush.multiple_up_to = Some(tag);
        }
        flush.single = self
            .tags
            .iter()
            .filter(|(_, d)| **d)
            .map(|(t, _)| *t)
            .collect();
        for t in &flush.single {
            self.tags.remove(t);
        }
        self.settled = 0;
        flush
    }

    /// Settled tags held for the next flush.
    #[must_use]
    pub fn settled(&self) -> usize {
        self.settled
    }

    /// Tags still unsettled.
    #[must_use]
    pub fn unsettled(&self) -> usize {
        self.tags.len() - self.settled
    }
}

/// When the acker sends what has settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Coalesce {
    /// Send at once when this many settled tags are held.
    pub batch: usize,
    /// Otherwise send this long after the first settled tag was held, or as
    /// soon as nothing is left running.
    pub linger: Duration,
}

impl Coalesce {
    /// At most half the prefetch window per ack, so the broker always keeps the
    /// other half to deliver into. What has settled goes as soon as nothing is
    /// left running: holding acks for a fuller batch starves the consumer of
    /// deliveries (measured: 0.6 to 1.1 thread switches per task instead of
    /// 0.37, no fewer broker cycles per task). A millisecond bounds the rest.
    #[must_use]
    pub fn for_prefetch(prefetch: u16) -> Self {
        Self {
            batch: usize::from(prefetch / 2).max(1),
            linger: Duration::from_millis(1),
        }
    }

    /// Is it time to send, with `settled` tags held and `running` unsettled?
    #[must_use]
    pub fn due(&self, settled: usize, running: usize) -> bool {
        settled >= self.batch || (settled > 0 && running == 0)
    }
}

/// The deliveries of one session, shared by the consumer loop (which records
/// each one it takes), the tasks (which record each one settled) and the
/// acker (which sends the acks).
///
/// A shared ledger rather than a channel to the acker: a message per delivery
/// would wake the acker task, often on the other thread, twice per task. Here
/// only the first settled tag after a flush (to start the linger clock) and a
/// due flush ([`Coalesce::due`]) wake it.
#[derive(Debug)]
pub struct Ledger {
    pending: Mutex<Pending>,
    wake: Notify,
    closed: AtomicBool,
    coalesce: Coalesce,
}

impl Ledger {
    /// An empty ledger.
    #[must_use]
    pub fn new(coalesce: Coalesce) -> Self {
        Self {
            pending: Mutex::default(),
            wake: Notify::new(),
            closed: AtomicBool::new(false),
            coalesce,
        }
    }

    fn pending(&self) -> MutexGuard<'_, Pending> {
        // The lock is never held across anything that can panic but an
        // allocation; a poisoned ledger is still consistent.
        self.pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A delivery was taken: no `multiple` ack may cover it until it settles.
    pub fn started(&self, tag: u64) {
        self.pending().apply(AckMsg::Started(tag));
    }

    /// The delivery is settled (its copies confirmed): acknowledge it.
    pub fn settled(&self, tag: u64) {
        let wake = {
            let mut p = self.pending();
            p.apply(AckMsg::Done(tag));
            p.settled() == 1 || self.coalesce.due(p.settled(), p.unsettled())
        };
        if wake {
            self.wake.notify_one();
        }
    }

    /// Nothing more will settle: the acker sends what is held and stops.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.wake.notify_one();
    }

    fn closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Held tags, and whether they are due.
    fn state(&self) -> (usize, bool) {
        let p = self.pending();
        (p.settled(), self.coalesce.due(p.settled(), p.unsettled()))
    }
}

/// Sends the ledger's acks until it is closed, then what is left. Returns
/// early if the channel fails; the broker then redelivers whatever was not
/// acked.
pub async fn run(ch: Channel, ledger: Arc<Ledger>) {
    while !ledger.closed() {
        ledger.wake.notified().await;
        let (held, due) = ledger.state();
        if held == 0 {
            continue;
        }
        if !due {
            // Let the batch fill, up to the linger.
            let deadline = tokio::time::Instant::now() + ledger.coalesce.linger;
            while !ledger.closed() && !ledger.state().1 {
                tokio::select! {
                    () = ledger.wake.notified() => {}
                    () = tokio::time::sleep_until(deadline) => break,
                }
            }
        }
        let flush = ledger.pending().flush();
        if !send(&ch, flush).await {
            return;
        }
    }
    let flush = ledger.pending().flush();
    send(&ch, flush).await;
}

/// Sends one flush's acks; `false` if the channel failed.
async fn send(ch: &Channel, flush: Flush) -> bool {
    let multiple = flush.multiple_up_to.map(|tag| (tag, true));
    let single = flush.single.into_iter().map(|tag| (tag, false));
    for (tag, multiple) in multiple.into_iter().chain(single) {
        if let Err(e) = ch.basic_ack(tag, BasicAckOptions { multiple }).await {
            tracing::debug!(error = %e, "ack failed; the broker will redeliver the unacked tasks");
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use AckMsg::{Done, Started};

    fn pending(msgs: &[AckMsg]) -> Pending {
        let mut p = Pending::default();
        for m in msgs {
            p.apply(*m);
        }
        p
    }

    #[test]
    fn a_settled_run_becomes_one_multiple_ack() {
        let mut p = pending(&[
            Started(1),
            Started(2),
            Started(3),
            Done(2),
            Done(1),
            Done(3),
        ]);
        assert_eq!(
            p.flush(),
            Flush {
                multiple_up_to: Some(3),
                single: vec![]
            }
        );
        assert_eq!(p.unsettled(), 0);
    }

    #[test]
    fn a_running_task_is_never_covered_by_a_multiple_ack() {
        let mut p = pending(&[
            Started(1),
            Started(2),
            Started(3),
            Started(4),
            Done(1),
            Done(3),
            Done(4),
        ]);
        assert_eq!(
            p.flush(),
            Flush {
                multiple_up_to: Some(1),
                single: vec![3, 4]
            }
        );
        assert_eq!(p.unsettled(), 1);
        p.apply(Done(2));
        assert_eq!(
            p.flush(),
            Flush {
                multiple_up_to: Some(2),
                single: vec![]
            }
        );
    }

    #[test]
    fn acks_wait_for_half_the_window_unless_nothing_else_is_running() {
        let c = Coalesce::for_prefetch(256);
        assert_eq!(c.batch, 128);
        assert!(!c.due(0, 0), "nothing held, nothing to send");
        assert!(!c.due(127, 64), "a partial batch waits while tasks run");
        assert!(c.due(128, 64), "a full batch goes at once");
        assert!(c.due(1, 0), "a lull sends what is held at once");
        assert_eq!(
            Coalesce::for_prefetch(1).batch,
            1,
            "prefetch 1 acks each task"
        );
    }

    #[test]
    fn the_ledger_counts_what_is_held_and_what_runs() {
        let ledger = Ledger::new(Coalesce::for_prefetch(8));
        for tag in 1..=3 {
            ledger.started(tag);
        }
        ledger.settled(2);
        assert_eq!(ledger.state(), (1, false));
        ledger.settled(1);
        ledger.settled(3);
        assert_eq!(ledger.state(), (3, true));
        assert_eq!(
            ledger.pending().flush(),
            Flush {
                multiple_up_to: Some(3),
                single: vec![]
            }
        );
        assert_eq!(ledger.state(), (0, false));
    }

    #[test]
    fn nothing_settled_sends_nothing() {
        let mut p = pending(&[Started(7)]);
        assert_eq!(p.flush(), Flush::default());
    }
}
