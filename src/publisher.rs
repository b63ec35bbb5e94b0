//! Publishing with publisher confirms (RabbitMQ docs, "Consumer Acknowledgements and Publisher
//! Confirms").
//!
//! Every publish is persistent and mandatory and waits for its own confirm, but many publishes
//! are in flight at once: callers share a few long-lived confirm-mode channels and each awaits
//! only its own confirm, so confirms are pipelined rather than one publish waiting at a time.
//! A channel that fails is dropped and replaced on the next publish.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{BasicProperties, Channel, Confirmation};
use tokio::sync::Mutex;

use crate::broker::Broker;
use crate::error::{Error, ErrorKind, Result};

/// A pipelining, confirming publisher. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct Publisher {
    broker: Broker,
    channels: Vec<Mutex<Option<Channel>>>,
    next: AtomicUsize,
    confirm_timeout: Duration,
}

impl Publisher {
    /// A publisher over `channels` confirm-mode channels (at least 1). A publish that is not
    /// confirmed within `confirm_timeout` fails with [`ErrorKind::ConfirmTimeout`].
    pub fn new(broker: Broker, channels: usize, confirm_timeout: Duration) -> Self {
        Self {
            broker,
            channels: (0..channels.max(1)).map(|_| Mutex::new(None)).collect(),
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
    /// - [`ErrorKind::BrokerUnavailable`]: no connection or the channel closed;
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
        // Opening a channel waits for the broker's `channel.open-ok` and `confirm.select-ok`,
        // which a half-dead connection never sends: bound it like the confirm.
        let channel = tokio::time::timeout(self.confirm_timeout, self.channel(slot))
            .await
            .map_err(|_| {
                Error::from(ErrorKind::BrokerUnavailable(
                    "no channel could be opened in time".to_owned(),
                ))
            })??;
        let sent = std::time::Instant::now();
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
            confirm.await
        })
        .await;
        let confirmation = match outcome {
            Ok(Ok(c)) => {
                metrics::histogram!(crate::telemetry::PUBLISH_CONFIRM, "queue" => queue.to_owned())
                    .record(sent.elapsed().as_secs_f64());
                c
            }
            Ok(Err(e)) => {
                self.discard(slot, &channel).await;
                return Err(Error::from(e));
            }
            Err(_) => {
                self.discard(slot, &channel).await;
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
            Confirmation::Nack(_) => Err(ErrorKind::Nacked {
                queue: queue.to_owned(),
            }
            .into()),
            Confirmation::NotRequested => Err(ErrorKind::Amqp(
                "publisher confirms are not enabled on the channel".to_owned(),
            )
            .into()),
        }
    }

    /// The channel in `slot`, opened (in confirm mode) if missing or closed.
    async fn channel(&self, slot: usize) -> Result<Channel> {
        let mut guard = self.channels[slot].lock().await;
        if let Some(ch) = guard.as_ref().filter(|c| c.status().connected()) {
            return Ok(ch.clone());
        }
        let ch = self.broker.channel().await?;
        crate::broker::bounded(ch.confirm_select(ConfirmSelectOptions::default())).await?;
        *guard = Some(ch.clone());
        Ok(ch)
    }

    /// Drops `channel` from `slot` unless another caller already replaced it.
    async fn discard(&self, slot: usize, channel: &Channel) {
        let mut guard = self.channels[slot].lock().await;
        if guard.as_ref().is_some_and(|c| c.id() == channel.id()) {
            *guard = None;
        }
    }
}
