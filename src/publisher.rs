//! Publishing with publisher confirms (RabbitMQ docs, "Consumer Acknowledgements and Publisher
//! Confirms").
//!
//! Every publish is persistent and mandatory and waits for its own confirm, but many publishes
//! are in flight at once: callers share a few long-lived confirm-mode channels and each awaits
//! only its own confirm, so confirms are pipelined rather than one publish waiting at a time.
//! A channel that fails is dropped and replaced on the next publish.
//!
//! A channel whose confirms stall is replaced too: once a publish has waited
//! [`STALL_AFTER`] for its confirm, later publishes go to a fresh channel while the stalled
//! ones wait out their own `confirm_timeout` (and the old channel is closed after that); so
//! is a channel open for at least [`STALL_AFTER`] whose publish is nacked. On a
//! cluster this is what moves publishing to a quorum queue's new leader: a channel keeps
//! sending to the leader it knew, and when that leader's node dies RabbitMQ 3.10's queue
//! client resends its unconfirmed commands only after 10 s (`rabbit_fifo_client`,
//! `?TIMER_TIME`), while a fresh channel starts from the queue's current leader.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{BasicProperties, Channel, Confirmation};

use crate::broker::Broker;
use crate::error::{Error, ErrorKind, Result};

/// How long a publish waits for its confirm before its channel counts as stalled and later
/// publishes go to a fresh one. Confirms of a healthy quorum queue take milliseconds
/// (BENCHMARKS.md: POST→202 p99 6–70 ms under load), so a second means a leader lost or a
/// broker in trouble.
const STALL_AFTER: Duration = Duration::from_secs(1);

/// A pipelining, confirming publisher. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct Publisher {
    broker: Broker,
    channels: Vec<Slot>,
    next: AtomicUsize,
    confirm_timeout: Duration,
}

/// One confirm-mode channel: the open one, if any, behind a lock held only to read or replace
/// it (never across an await), and a second lock that makes one caller at a time open it.
#[derive(Debug, Default)]
struct Slot {
    /// The open channel and when it was opened.
    current: Mutex<Option<(Channel, Instant)>>,
    opening: tokio::sync::Mutex<()>,
}

impl Slot {
    /// The open channel, if there is one.
    fn cached(&self) -> Option<Channel> {
        self.current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .filter(|(c, _)| c.status().connected())
            .map(|(c, _)| c.clone())
    }

    /// How long ago `channel` was opened, if it is this slot's open channel.
    fn age(&self, channel: &Channel) -> Option<Duration> {
        self.current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .filter(|(c, _)| c.id() == channel.id())
            .map(|(_, opened)| opened.elapsed())
    }
}

impl Publisher {
    /// A publisher over `channels` confirm-mode channels (at least 1). A publish that is not
    /// confirmed within `confirm_timeout` fails with [`ErrorKind::ConfirmTimeout`].
    pub fn new(broker: Broker, channels: usize, confirm_timeout: Duration) -> Self {
        Self {
            broker,
            channels: (0..channels.max(1)).map(|_| Slot::default()).collect(),
            next: AtomicUsize::new(0),
            confirm_timeout,
        }
    }

    /// The broker this publisher talks to.
    pub fn broker(&self) -> &Broker {
        &self.broker
    }

    /// Publishes `body` to `exchange` with `routing_key`, mandatory, and waits for the
    /// broker's confirm. `queue` names the destination in errors.
    ///
    /// # Errors
    /// - [`ErrorKind::NotSent`]: no channel could be opened, so nothing was sent;
    /// - [`ErrorKind::BrokerUnavailable`]: the channel closed after the message was sent;
    /// - [`ErrorKind::Unroutable`]: returned by the broker (no queue bound);
    /// - [`ErrorKind::Nacked`]: the broker refused it (e.g. queue full with reject-publish);
    /// - [`ErrorKind::ConfirmTimeout`]: no confirm within the timeout.
    pub async fn publish(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        properties: BasicProperties,
        queue: &str,
    ) -> Result<()> {
        let slot = self.next.fetch_add(1, Ordering::Relaxed) % self.channels.len();
        let channel = match self.channels[slot].cached() {
            Some(ch) => ch,
            // Opening a channel waits for the broker's `channel.open-ok` and
            // `confirm.select-ok`, which a half-dead connection never sends: bound it like the
            // confirm.
            // Nothing is sent until a channel is open: a failure here is certain.
            None => match tokio::time::timeout(self.confirm_timeout, self.open(slot)).await {
                Ok(Ok(ch)) => ch,
                Ok(Err(e)) => return Err(ErrorKind::NotSent(e.to_string()).into()),
                Err(_) => {
                    return Err(ErrorKind::NotSent(
                        "no channel could be opened in time".to_owned(),
                    )
                    .into());
                }
            },
        };
        let sent = Instant::now();
        let outcome = tokio::time::timeout(self.confirm_timeout, async {
            let confirm = channel
                .basic_publish(
                    exchange.into(),
                    routing_key.into(),
                    BasicPublishOptions {
                        mandatory: true,
                        ..BasicPublishOptions::default()
                    },
                    body,
                    properties,
                )
                .await?;
            tokio::pin!(confirm);
            match tokio::time::timeout(STALL_AFTER, &mut confirm).await {
                Ok(c) => c,
                Err(_) => {
                    // Stalled: later publishes take a fresh channel; this one waits on.
                    self.retire(slot, &channel);
                    confirm.await
                }
            }
        })
        .await;
        let confirmation = match outcome {
            Ok(Ok(c)) => {
                metrics::histogram!(crate::telemetry::PUBLISH_CONFIRM, "queue" => queue.to_owned())
                    .record(sent.elapsed().as_secs_f64());
                c
            }
            Ok(Err(e)) => {
                self.retire(slot, &channel);
                return Err(Error::from(e));
            }
            Err(_) => {
                self.retire(slot, &channel);
                let ms = u64::try_from(self.confirm_timeout.as_millis()).unwrap_or(u64::MAX);
                return Err(ErrorKind::ConfirmTimeout(ms).into());
            }
        };
        match confirmation {
            Confirmation::Ack(None) => Ok(()),
            Confirmation::Ack(Some(_)) => Err(ErrorKind::Unroutable {
                queue: queue.to_owned(),
            }
            .into()),
            Confirmation::Nack(_) => {
                // A quorum queue nacks while it has no leader it can reach (and when full,
                // with `reject-publish`). A channel keeps the leader it knew, so one that has
                // been open a while is replaced: the fresh one starts from the queue's current
                // leader. At most one replacement a `STALL_AFTER` per channel slot.
                if self.channels[slot]
                    .age(&channel)
                    .is_some_and(|age| age >= STALL_AFTER)
                {
                    self.retire(slot, &channel);
                }
                Err(ErrorKind::Nacked {
                    queue: queue.to_owned(),
                }
                .into())
            }
            Confirmation::NotRequested => Err(ErrorKind::Amqp(
                "publisher confirms are not enabled on the channel".to_owned(),
            )
            .into()),
        }
    }

    /// Opens the channel of `slot` (in confirm mode), unless another caller did meanwhile.
    async fn open(&self, slot: usize) -> Result<Channel> {
        let slot = &self.channels[slot];
        let _one_at_a_time = slot.opening.lock().await;
        if let Some(ch) = slot.cached() {
            return Ok(ch);
        }
        let ch = self.broker.channel().await?;
        crate::broker::bounded(ch.confirm_select(ConfirmSelectOptions::default())).await?;
        *slot.current.lock().unwrap_or_else(PoisonError::into_inner) =
            Some((ch.clone(), Instant::now()));
        Ok(ch)
    }

    /// Drops `channel` from `slot` unless another caller already replaced it; the caller that
    /// drops it closes it once every publish on it has had its `confirm_timeout`.
    fn retire(&self, slot: usize, channel: &Channel) {
        let retired = {
            let mut current = self.channels[slot]
                .current
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if current
                .as_ref()
                .is_some_and(|(c, _)| c.id() == channel.id())
            {
                *current = None;
                true
            } else {
                false
            }
        };
        if retired && channel.status().connected() {
            let (channel, wait) = (channel.clone(), self.confirm_timeout);
            tokio::spawn(async move {
                tokio::time::sleep(wait).await;
                let _ = channel.close(200, "warren: channel replaced".into()).await;
            });
        }
    }
}
