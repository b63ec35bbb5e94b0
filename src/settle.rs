//! Settling a consumer channel's deliveries (ack, or nack with requeue), with runs of acks
//! coalesced into one `basic.ack` with `multiple` set.
//!
//! A `basic.ack` with `multiple` acknowledges every unacknowledged delivery of the channel up
//! to its tag (AMQP 0-9-1 §1.8.3.13), so it is only safe once *every* delivery up to that tag
//! has been settled by its job. One task per channel keeps the deliveries not yet settled on
//! the wire, in tag order, and:
//!
//! - from the oldest one on, as long as each is decided, sends one multiple ack for the run
//!   of acks (a requeue in between is sent on its own, after the acks before it);
//! - settles decided deliveries behind an undecided one singly, at once, so that one slow job
//!   never holds back the acks of later ones (the prefetch window would stall).
//!
//! Each delivery gets a [`Ticket`] when it arrives; dropping a ticket that was neither acked
//! nor requeued requeues the delivery, so no code path can leave one unsettled.

use std::collections::BTreeMap;

use lapin::Channel;
use lapin::options::{BasicAckOptions, BasicNackOptions};
use tokio::sync::mpsc;
use tracing::warn;

/// How a delivery is settled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Settle {
    Ack,
    Requeue,
}

enum Msg {
    Arrived(u64),
    Settled(u64, Settle),
}

/// The settling side of one consumer channel: hands out [`Ticket`]s and runs the task that
/// sends the acks.
pub(crate) struct Settler {
    tx: mpsc::UnboundedSender<Msg>,
    task: tokio::task::JoinHandle<()>,
}

impl Settler {
    /// Starts the settling task for `channel`.
    pub(crate) fn start(channel: Channel) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(run(channel, rx));
        Self { tx, task }
    }

    /// Registers a delivery; call in delivery order (the consumer loop does).
    pub(crate) fn arrived(&self, delivery_tag: u64) -> Ticket {
        let _ = self.tx.send(Msg::Arrived(delivery_tag));
        Ticket {
            tx: self.tx.clone(),
            tag: delivery_tag,
            settled: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Waits until every ticket is settled and sent (all tickets must be dropped first, or
    /// this waits for them).
    pub(crate) async fn finish(self) {
        drop(self.tx);
        let _ = self.task.await;
    }
}

/// One delivery's right to be settled, once.
pub(crate) struct Ticket {
    tx: mpsc::UnboundedSender<Msg>,
    tag: u64,
    settled: std::sync::atomic::AtomicBool,
}

impl Ticket {
    /// Acknowledges the delivery (its outcome is recorded or handed on).
    pub(crate) fn ack(&self) {
        self.settle(Settle::Ack);
    }

    /// Hands the delivery back to the queue (nack with requeue).
    pub(crate) fn requeue(&self) {
        self.settle(Settle::Requeue);
    }

    fn settle(&self, how: Settle) {
        if !self.settled.swap(true, std::sync::atomic::Ordering::AcqRel) {
            let _ = self.tx.send(Msg::Settled(self.tag, how));
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.requeue();
    }
}

async fn run(channel: Channel, mut rx: mpsc::UnboundedReceiver<Msg>) {
    // Deliveries not yet settled on the wire, by tag: `None` while their job decides.
    let mut open: BTreeMap<u64, Option<Settle>> = BTreeMap::new();
    let mut batch = Vec::with_capacity(256);
    // Settles that could not be sent (the channel closed): reported once, at the end.
    let mut unsent = 0usize;
    while rx.recv_many(&mut batch, 1024).await > 0 {
        for msg in batch.drain(..) {
            match msg {
                Msg::Arrived(tag) => {
                    open.insert(tag, None);
                }
                Msg::Settled(tag, how) => {
                    if let Some(slot) = open.get_mut(&tag) {
                        *slot = Some(how);
                    }
                }
            }
        }
        for (tag, how, multiple) in plan(&mut open) {
            if unsent > 0 || !channel.status().connected() {
                unsent += 1;
            } else if let Err(e) = send(&channel, tag, how, multiple).await {
                warn!(error = %e, delivery_tag = tag, "cannot settle a delivery");
                unsent += 1;
            }
        }
    }
    if unsent > 0 {
        warn!(
            settles = unsent,
            "the channel closed before some deliveries were settled; the broker redelivers \
             them and a job already finished is skipped, not run again"
        );
    }
}

/// What to send for the decided deliveries in `open`, removing them: (tag, how, multiple).
fn plan(open: &mut BTreeMap<u64, Option<Settle>>) -> Vec<(u64, Settle, bool)> {
    let mut out = Vec::new();
    let mut acks_to = None;
    while let Some((&tag, &Some(how))) = open.first_key_value() {
        open.pop_first();
        match how {
            Settle::Ack => acks_to = Some(tag),
            Settle::Requeue => {
                if let Some(t) = acks_to.take() {
                    out.push((t, Settle::Ack, true));
                }
                out.push((tag, Settle::Requeue, false));
            }
        }
    }
    if let Some(t) = acks_to {
        out.push((t, Settle::Ack, true));
    }
    // Behind the undecided oldest one: each decided delivery on its own.
    open.retain(|&tag, how| match *how {
        Some(how) => {
            out.push((tag, how, false));
            false
        }
        None => true,
    });
    out
}

async fn send(channel: &Channel, tag: u64, how: Settle, multiple: bool) -> lapin::Result<()> {
    match how {
        Settle::Ack => channel.basic_ack(tag, BasicAckOptions { multiple }).await,
        Settle::Requeue => {
            channel
                .basic_nack(
                    tag,
                    BasicNackOptions {
                        multiple: false,
                        requeue: true,
                    },
                )
                .await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(entries: &[(u64, Option<Settle>)]) -> BTreeMap<u64, Option<Settle>> {
        entries.iter().copied().collect()
    }

    #[test]
    fn a_run_of_acks_from_the_oldest_is_one_multiple_ack() {
        let mut o = open(&[
            (1, Some(Settle::Ack)),
            (2, Some(Settle::Ack)),
            (3, Some(Settle::Ack)),
        ]);
        assert_eq!(plan(&mut o), vec![(3, Settle::Ack, true)]);
        assert!(o.is_empty());
    }

    #[test]
    fn a_requeue_splits_the_run_and_is_sent_alone() {
        let mut o = open(&[
            (1, Some(Settle::Ack)),
            (2, Some(Settle::Requeue)),
            (3, Some(Settle::Ack)),
        ]);
        assert_eq!(
            plan(&mut o),
            vec![
                (1, Settle::Ack, true),
                (2, Settle::Requeue, false),
                (3, Settle::Ack, true)
            ]
        );
    }

    #[test]
    fn nothing_is_acked_past_an_undecided_delivery_except_singly() {
        let mut o = open(&[
            (1, Some(Settle::Ack)),
            (2, None),
            (3, Some(Settle::Ack)),
            (4, Some(Settle::Requeue)),
        ]);
        assert_eq!(
            plan(&mut o),
            vec![
                (1, Settle::Ack, true),
                (3, Settle::Ack, false),
                (4, Settle::Requeue, false)
            ]
        );
        // The undecided one stays; once it acks, a multiple ack covers only it (3 and 4
        // are settled already).
        assert_eq!(o, open(&[(2, None)]));
        o.insert(2, Some(Settle::Ack));
        assert_eq!(plan(&mut o), vec![(2, Settle::Ack, true)]);
    }
}
