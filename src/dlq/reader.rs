//! Reading a dead-letter queue in batches: a consumer with a prefetch window, from which each
//! call takes what has arrived (at least one message, waiting up to an idle timeout).

use std::time::Duration;

use futures::{FutureExt, StreamExt};
use lapin::options::{BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Consumer, message::Delivery};

use crate::broker::Broker;
use crate::error::{ErrorKind, Result};

/// How long a batch waits for its first message before the queue counts as drained.
const IDLE: Duration = Duration::from_secs(2);

/// A batch consumer on one queue.
pub(crate) struct Reader {
    channel: Channel,
    consumer: Consumer,
    taken: u64,
    limit: u64,
}

impl Reader {
    /// Starts consuming `queue` with `prefetch`, to take at most `limit` messages and never
    /// more than were in the queue at the start (so a queue that keeps filling still ends).
    pub(crate) async fn open(
        broker: &Broker,
        queue: &str,
        prefetch: u16,
        limit: Option<u64>,
    ) -> Result<Self> {
        let Some(ready) = crate::topology::inspect(broker, queue).await?.messages else {
            return Err(ErrorKind::Amqp(format!(
                "queue `{queue}` does not exist; run `warren topology apply`"
            ))
            .into());
        };
        let snapshot = u64::from(ready);
        let channel = broker.channel().await?;
        let limit = limit.map_or(snapshot, |l| l.min(snapshot));
        let window = u16::try_from(limit.clamp(1, u64::from(prefetch))).unwrap_or(prefetch);
        channel
            .basic_qos(window, BasicQosOptions::default())
            .await?;
        let consumer = channel
            .basic_consume(
                queue.into(),
                format!("warren-dlq-{}", uuid::Uuid::now_v7().simple())
                    .as_str()
                    .into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        Ok(Self {
            channel,
            consumer,
            taken: 0,
            limit,
        })
    }

    /// How many messages this reader will take in all.
    pub(crate) fn total(&self) -> u64 {
        self.limit
    }

    /// The channel, for acks and publishes that must share it.
    pub(crate) fn channel(&self) -> &Channel {
        &self.channel
    }

    /// The next batch: what has arrived, at most `max` and never past the limit. Empty when
    /// done (limit reached, or nothing arrived within the idle timeout).
    pub(crate) async fn next_batch(&mut self, max: usize) -> Result<Vec<Delivery>> {
        let room = usize::try_from(self.limit - self.taken)
            .unwrap_or(usize::MAX)
            .min(max);
        let mut batch = Vec::new();
        if room == 0 {
            return Ok(batch);
        }
        match tokio::time::timeout(IDLE, self.consumer.next()).await {
            Err(_) | Ok(None) => return Ok(batch),
            Ok(Some(d)) => batch.push(d?),
        }
        while batch.len() < room {
            match self.consumer.next().now_or_never() {
                Some(Some(d)) => batch.push(d?),
                _ => break,
            }
        }
        self.taken += batch.len() as u64;
        Ok(batch)
    }

    /// Closes the channel: deliveries taken but not acked go back to the queue.
    pub(crate) async fn close(self) {
        let _ = self.channel.close(200, "dlq operation done".into()).await;
    }
}
