//! Admission: may a worker take deliveries of a queue now? A paused queue takes none
//! ([`decide`]); a throttled queue starts none until its hold ends ([`Pauses::held_until`]).
//!
//! **Throttles.** When a handler's target answers 429 (or 503 with `Retry-After`), the
//! handler reports [`warren_workers::Outcome::Throttled`]: the worker holds the queue's
//! dispatch in its own process at once ([`Pauses::throttle`]) and writes the hold to the
//! store ([`crate::store::FlowControl::throttle`]), which every other process reads with the
//! paused queues, so every worker of the queue stops starting jobs within [`POLL_EVERY`].
//! Deliveries wait in the worker (their prefetch slots) until the hold ends; jobs already
//! running finish. A hold is capped at [`MAX_HOLD`].
//!
//! A pause is the fleet's shared state: it lives in the store ([`crate::store::QueueControl`])
//! so that it holds for every worker of the queue, in every process on every host, and
//! across restarts (DESIGN §2.10, §3). Each worker process reads the whole table of paused
//! queues once every [`POLL_EVERY`] (one small query per process, not one per delivery) into
//! [`Pauses`], which its consumers watch. A consumer whose queue becomes paused cancels its
//! AMQP consumer (`basic.cancel`), so new jobs wait `ready` in the broker, where the backlog
//! and the DLQ stay what operators expect; it consumes again (`basic.consume`) once the queue
//! is resumed. Both happen within `POLL_EVERY` plus one broker round trip: under 2 s.
//!
//! What a pause leaves running: jobs already running finish and are acked as usual, and so do
//! the deliveries the broker handed this worker before the cancel took effect (at most the
//! queue's `prefetch`, and none beyond `concurrency` when the two are equal, the default).
//! They are not handed back: on a quorum queue a returned delivery counts against the queue's
//! `x-delivery-limit` (RabbitMQ "Quorum Queues: Poison Message Handling"; before RabbitMQ 4.3
//! the limit counts every return, a closed channel's included — the 4.3 release notes: it now
//! counts `delivery-count` rather than `acquired-count`), so handing deliveries back at every
//! pause could dead-letter healthy jobs. The same reasoning keeps the store gate
//! (`store_gate.rs`) from handing deliveries back.
//!
//! Until the first read of the store answers, no queue is admitted: a worker restarted while
//! its queue is paused never takes a delivery of it. A read that fails keeps the last state
//! read (the store gate already stops the consumers while the store cannot be reached).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::store::Store;

/// How often a worker process reads the paused and throttled queues from the store.
pub(crate) const POLL_EVERY: Duration = Duration::from_secs(1);

/// The longest a target's `Retry-After` holds a queue: a target asking for more gets this.
pub const MAX_HOLD: Duration = Duration::from_secs(600);

/// What a consumer does about its queue now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admission {
    /// Take deliveries.
    Admit,
    /// Take none: the queue is paused, or whether it is has not been read yet.
    Park,
}

/// The rule: `paused` is the set of paused queues as last read (`None`: not read yet).
pub(crate) fn decide(paused: Option<&BTreeSet<String>>, queue: &str) -> Admission {
    match paused {
        Some(set) if !set.contains(queue) => Admission::Admit,
        _ => Admission::Park,
    }
}

/// The paused queues as this process last read them, shared by its consumers. See the
/// module docs.
pub(crate) struct Pauses {
    paused: watch::Sender<Option<BTreeSet<String>>>,
    /// Throttled queues: until when (ms), as read from the store or set here.
    held: std::sync::Mutex<BTreeMap<String, i64>>,
}

impl Pauses {
    /// Starts reading the paused queues from `store` now and every [`POLL_EVERY`] until
    /// `stop` is cancelled.
    pub(crate) fn start(store: Arc<dyn Store>, stop: CancellationToken) -> Arc<Self> {
        let pauses = Arc::new(Self {
            paused: watch::Sender::new(None),
            held: std::sync::Mutex::new(BTreeMap::new()),
        });
        let me = pauses.clone();
        tokio::spawn(async move {
            let mut failing = false;
            loop {
                match store.throttles(crate::store::now_ms()).await {
                    Ok(holds) => {
                        for (queue, until) in holds {
                            me.hold(&queue, until);
                        }
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "cannot read the throttled queues");
                    }
                }
                match store.queues_paused().await {
                    Ok(map) => {
                        if failing {
                            tracing::info!("the paused queues can be read again");
                            failing = false;
                        }
                        me.set(map.into_keys().collect());
                    }
                    Err(e) => {
                        if !failing {
                            tracing::warn!(error = %e, "cannot read the paused queues; keeping the last state read");
                            failing = true;
                        }
                    }
                }
                tokio::select! {
                    () = stop.cancelled() => break,
                    () = tokio::time::sleep(POLL_EVERY) => {}
                }
            }
        });
        pauses
    }

    /// Records `paused` as the set of paused queues (waking the consumers whose admission
    /// changes).
    fn set(&self, paused: BTreeSet<String>) {
        self.paused.send_if_modified(|now| {
            if now.as_ref() == Some(&paused) {
                false
            } else {
                *now = Some(paused);
                true
            }
        });
    }

    /// Returns once the paused queues have been read (at once after the first read).
    pub(crate) async fn read(&self) {
        let mut rx = self.paused.subscribe();
        // An error means the sender is gone, which cannot happen while `self` lives.
        let _ = rx.wait_for(Option::is_some).await;
    }

    /// Extends `queue`'s hold to `until` (ms) unless it ends later already; true when the
    /// queue was not held before (a new hold, to log and count once).
    fn hold(&self, queue: &str, until: i64) -> bool {
        let now = crate::store::now_ms();
        let mut held = self
            .held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        held.retain(|_, u| *u > now);
        match held.get_mut(queue) {
            Some(u) => {
                *u = (*u).max(until);
                false
            }
            None => {
                held.insert(queue.to_owned(), until);
                true
            }
        }
    }

    /// Holds `queue` in this process for `retry_after` (capped at [`MAX_HOLD`]) from now;
    /// returns the hold's end (ms) and whether it is a new hold. The caller also writes it
    /// to the store for the other processes.
    pub(crate) fn throttle(&self, queue: &str, retry_after: Duration) -> (i64, bool) {
        let ms = i64::try_from(retry_after.min(MAX_HOLD).as_millis()).unwrap_or(i64::MAX);
        let until = crate::store::now_ms().saturating_add(ms);
        (until, self.hold(queue, until))
    }

    /// When `queue`'s hold ends (ms), if it is held now.
    pub(crate) fn held_until(&self, queue: &str) -> Option<i64> {
        let now = crate::store::now_ms();
        self.held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(queue)
            .copied()
            .filter(|u| *u > now)
    }

    /// Returns once `queue` is not held (at once when it is not).
    pub(crate) async fn until_released(&self, queue: &str) {
        while let Some(until) = self.held_until(queue) {
            let left = u64::try_from(until - crate::store::now_ms()).unwrap_or(0);
            tokio::time::sleep(Duration::from_millis(left.max(1))).await;
        }
    }

    /// `queue`'s admission now.
    pub(crate) fn admission(&self, queue: &str) -> Admission {
        decide(self.paused.borrow().as_ref(), queue)
    }

    /// Returns once `queue`'s admission is `want` (at once when it is).
    pub(crate) async fn until(&self, queue: &str, want: Admission) {
        let mut rx = self.paused.subscribe();
        // An error means the sender is gone, which cannot happen while `self` lives.
        let _ = rx.wait_for(|p| decide(p.as_ref(), queue) == want).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|n| (*n).to_owned()).collect()
    }

    #[test]
    fn a_paused_or_unread_queue_is_parked() {
        assert_eq!(decide(None, "a"), Admission::Park, "not read yet");
        assert_eq!(decide(Some(&set(&[])), "a"), Admission::Admit);
        assert_eq!(decide(Some(&set(&["a"])), "a"), Admission::Park);
        assert_eq!(decide(Some(&set(&["a"])), "b"), Admission::Admit);
    }

    #[tokio::test]
    async fn consumers_wake_when_their_queue_changes() {
        let pauses = Pauses {
            paused: watch::Sender::new(None),
            held: std::sync::Mutex::new(BTreeMap::new()),
        };
        assert_eq!(pauses.admission("a"), Admission::Park);
        pauses.set(set(&["b"]));
        pauses.until("a", Admission::Admit).await;
        let parked = pauses.until("a", Admission::Park);
        tokio::pin!(parked);
        assert!(
            futures::poll!(&mut parked).is_pending(),
            "a is admitted while only b is paused"
        );
        pauses.set(set(&["a", "b"]));
        parked.await;
        assert_eq!(pauses.admission("b"), Admission::Park);
    }

    #[tokio::test]
    async fn a_hold_keeps_its_latest_end_and_is_new_only_once() {
        let pauses = Pauses {
            paused: watch::Sender::new(None),
            held: std::sync::Mutex::new(BTreeMap::new()),
        };
        assert_eq!(pauses.held_until("q"), None);
        let (until, new) = pauses.throttle("q", Duration::from_millis(200));
        assert!(new);
        assert_eq!(pauses.held_until("q"), Some(until));
        let (_, new) = pauses.throttle("q", Duration::from_millis(50));
        assert!(!new, "already held");
        assert_eq!(pauses.held_until("q"), Some(until), "the later end stays");
        assert_eq!(pauses.held_until("other"), None);
        let (capped, _) = pauses.throttle("big", Duration::from_secs(86_400));
        assert!(
            capped - crate::store::now_ms() <= 600_000,
            "capped at MAX_HOLD"
        );
        pauses.until_released("q").await;
        assert!(crate::store::now_ms() >= until);
        assert_eq!(pauses.held_until("q"), None);
    }
}
