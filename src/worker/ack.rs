//! Coalesced acknowledgements.
//!
//! Awaiting one `basic.ack` per message caps lapin at about a fifth of what the
//! broker can do (DESIGN.md §5). Instead every task reports to this one task,
//! which drains whatever has accumulated and acknowledges the longest settled
//! run of delivery tags with a single `multiple` ack. Tags settled beyond a
//! still-running task are acked one by one, so a slow task never holds the
//! prefetch window hostage.

use std::collections::BTreeMap;

use lapin::Channel;
use lapin::options::BasicAckOptions;
use tokio::sync::mpsc::UnboundedReceiver;

/// What the consumer loop and the tasks tell the acker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckMsg {
    /// A delivery was received; it may not be covered by a `multiple` ack until done.
    Started(u64),
    /// The delivery is settled (its copies confirmed); acknowledge it.
    Done(u64),
}

/// Tags received but not yet acknowledged; `true` once settled.
#[derive(Debug, Default)]
pub struct Pending(BTreeMap<u64, bool>);

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
                self.0.insert(tag, false);
            }
            AckMsg::Done(tag) => {
                self.0.insert(tag, true);
            }
        }
    }

    /// Takes every settled tag out and says how to acknowledge them.
    pub fn flush(&mut self) -> Flush {
        let mut flush = Flush::default();
        while let Some((&tag, &done)) = self.0.first_key_value() {
            if !done {
                break;
            }
            self.0.pop_first();
            flush.multiple_up_to = Some(tag);
        }
        flush.single = self
            .0
            .iter()
            .filter(|(_, d)| **d)
            .map(|(t, _)| *t)
            .collect();
        for t in &flush.single {
            self.0.remove(t);
        }
        flush
    }

    /// Tags still unsettled.
    #[must_use]
    pub fn unsettled(&self) -> usize {
        self.0.values().filter(|d| !**d).count()
    }
}

/// Runs until every sender is gone, then flushes what is left. Returns early if
/// the channel fails; the broker then redelivers whatever was not acked.
pub async fn run(ch: Channel, mut rx: UnboundedReceiver<AckMsg>) {
    let mut pending = Pending::default();
    while let Some(msg) = rx.recv().await {
        pending.apply(msg);
        while let Ok(msg) = rx.try_recv() {
            pending.apply(msg);
        }
        let flush = pending.flush();
        if let Some(tag) = flush.multiple_up_to
            && let Err(e) = ch.basic_ack(tag, BasicAckOptions { multiple: true }).await
        {
            tracing::debug!(error = %e, "ack failed; the broker will redeliver the unacked tasks");
            return;
        }
        for tag in flush.single {
            if let Err(e) = ch.basic_ack(tag, BasicAckOptions { multiple: false }).await {
                tracing::debug!(error = %e, "ack failed; the broker will redeliver the unacked tasks");
                return;
            }
        }
    }
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
    fn nothing_settled_sends_nothing() {
        let mut p = pending(&[Started(7)]);
        assert_eq!(p.flush(), Flush::default());
    }
}
