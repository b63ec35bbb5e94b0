//! Delays that wait in the broker: retry backoff, `delay_ms` and parked deliveries.
//!
//! Binary delay levels, the design of NServiceBus's RabbitMQ transport ("delayed delivery")
//! and kombu's native delayed delivery: level `k` (0 ≤ k < [`LEVELS`]) is a topic exchange and
//! a durable quorum queue, both named `warren.delay.KK`, whose messages all wait
//! `2^k` seconds (`x-message-ttl`) and are then dead-lettered to level `k - 1` (level 0 to
//! [`DELIVER_EXCHANGE`]). The routing key spells the delay in binary, most significant bit
//! first, then the destination queue: a 5 s delay to `mail` is
//! `0.0.….0.1.0.1.mail`. At each level the bit picks the way: `1` waits in the level's queue,
//! `0` skips it through an exchange-to-exchange binding. So one uniform TTL per queue (never
//! blocked at the head by a longer one), no plugin, no unacked message in a worker, and every
//! hop is durable: the queues dead-letter at-least-once (`x-dead-letter-strategy`, which needs
//! `x-overflow = reject-publish`; RabbitMQ docs, "Quorum Queues", dead-lettering), so a delay
//! survives a broker restart.
//!
//! [`LEVELS`] = 20 gives delays from 1 s to 2^20 − 1 s (about 12.1 days) at 1 s granularity.
//!
//! The way out: level 0 dead-letters to [`DELIVER_EXCHANGE`], which passes everything on
//! (exchange-to-exchange binding `#`) to [`ROUTE_EXCHANGE`], where each work queue is bound
//! by its name. [`ROUTE_EXCHANGE`] has an alternate exchange (RabbitMQ docs, "Alternate
//! Exchanges"): a message no work queue takes (its queue was deleted while it waited) goes to
//! the queue [`UNROUTABLE`], where `warren queues` counts it and `warren dlq … warren.unroutable`
//! shows, drains, requeues or purges it. Without it the broker's at-least-once dead-lettering
//! would hold such a message in level 0 for good, retrying it and showing it to nobody.
//! (The hop through [`DELIVER_EXCHANGE`] exists because level 0's `x-dead-letter-exchange`
//! is fixed when the queue is created, and deployments made before [`ROUTE_EXCHANGE`] keep
//! theirs.)
//!
//! The levels are shared by every work queue, so they have no `replicas` of their own: each is
//! declared with `x-quorum-initial-group-size` = [`REPLICAS`] (see
//! [`crate::topology::GROUP_SIZE_ARG`]; levels declared by an older warren keep theirs).

use std::time::Duration;

use lapin::options::{ExchangeBindOptions, ExchangeDeclareOptions, QueueBindOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, ExchangeKind};

use crate::error::Result;
use crate::message::long_value;
use crate::publisher::Publisher;

/// Number of delay levels.
pub const LEVELS: u32 = 20;
/// `x-quorum-initial-group-size` of every delay level: 3 nodes (RabbitMQ's default
/// `quorum_cluster_size`), so a delayed job survives the loss of one node of three; a smaller
/// cluster holds one replica per node.
pub const REPLICAS: u32 = 3;
/// Where level 0 dead-letters to: a topic exchange passing every message on to
/// [`ROUTE_EXCHANGE`].
pub const DELIVER_EXCHANGE: &str = "warren.delay.deliver";
/// The last hop: a topic exchange routing `<bits>.<queue>` to the work queue `<queue>`, with
/// alternate exchange [`UNROUTABLE`].
pub const ROUTE_EXCHANGE: &str = "warren.delay.route";
/// A fanout exchange and the quorum queue bound to it, both of this name: where a delayed
/// message goes when its work queue no longer exists.
pub const UNROUTABLE: &str = "warren.unroutable";

/// The longest delay: 2^[`LEVELS`] − 1 seconds.
pub const MAX_DELAY: Duration = Duration::from_secs((1 << LEVELS) - 1);

/// Name of level `k`'s exchange and queue.
pub fn level_name(k: u32) -> String {
    format!("warren.delay.{k:02}")
}

/// The exchange a delayed message is published to: the top level.
pub fn entry_exchange() -> String {
    level_name(LEVELS - 1)
}

/// Whole seconds a delay takes in the broker: rounded up, capped at [`MAX_DELAY`].
pub fn delay_seconds(delay: Duration) -> u64 {
    let secs = delay.as_secs() + u64::from(delay.subsec_nanos() > 0);
    secs.min(MAX_DELAY.as_secs())
}

/// The routing key for `seconds` of delay to work queue `queue`: [`LEVELS`] bits, most
/// significant first, dot-separated, then the queue name.
pub fn routing_key(seconds: u64, queue: &str) -> String {
    let mut key = String::with_capacity(2 * LEVELS as usize + queue.len());
    for k in (0..LEVELS).rev() {
        key.push(if seconds >> k & 1 == 1 { '1' } else { '0' });
        key.push('.');
    }
    key.push_str(queue);
    key
}

/// The work queue a delayed message is for, from its routing key (see [`routing_key`]); the
/// whole key when it does not have the shape of one.
pub fn destination(routing_key: &str) -> &str {
    let mut rest = routing_key;
    for _ in 0..LEVELS {
        match rest.split_once('.') {
            Some((bit, tail)) if bit == "0" || bit == "1" => rest = tail,
            _ => return routing_key,
        }
    }
    rest
}

/// A topic pattern matching keys whose bit for level `k` is `bit`.
fn level_pattern(k: u32, bit: char) -> String {
    let mut p = "*.".repeat((LEVELS - 1 - k) as usize);
    p.push(bit);
    p.push_str(".#");
    p
}

/// Declares the delay levels (idempotent) on `channel`, which is replaced by a new one when
/// the broker closed it (see [`crate::topology::declare_queue`]).
pub(crate) async fn declare(
    declarer: &crate::topology::Declarer<'_>,
    channel: &mut Channel,
) -> Result<()> {
    let durable_topic = ExchangeDeclareOptions {
        durable: true,
        ..ExchangeDeclareOptions::default()
    };
    declare_way_out(declarer, channel).await?;
    for k in 0..LEVELS {
        let name = level_name(k);
        let next = if k == 0 {
            DELIVER_EXCHANGE.to_owned()
        } else {
            level_name(k - 1)
        };
        channel
            .exchange_declare(
                name.as_str().into(),
                ExchangeKind::Topic,
                durable_topic,
                FieldTable::default(),
            )
            .await?;
        let mut args = FieldTable::default();
        args.insert("x-queue-type".into(), long_value("quorum"));
        args.insert("x-message-ttl".into(), AMQPValue::LongLongInt(1000 << k));
        args.insert("x-dead-letter-exchange".into(), long_value(&next));
        args.insert("x-dead-letter-strategy".into(), long_value("at-least-once"));
        args.insert("x-overflow".into(), long_value("reject-publish"));
        args.insert(
            crate::topology::GROUP_SIZE_ARG.into(),
            AMQPValue::LongLongInt(i64::from(REPLICAS)),
        );
        crate::topology::declare_queue(declarer, channel, &name, args).await?;
        channel
            .queue_bind(
                name.as_str().into(),
                name.as_str().into(),
                level_pattern(k, '1').as_str().into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        channel
            .exchange_bind(
                next.as_str().into(),
                name.as_str().into(),
                level_pattern(k, '0').as_str().into(),
                ExchangeBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
    }
    Ok(())
}

/// Declares the way out of level 0 (see the module docs): [`UNROUTABLE`] (exchange, queue,
/// binding), [`ROUTE_EXCHANGE`] with it as alternate exchange, and [`DELIVER_EXCHANGE`]
/// bound to [`ROUTE_EXCHANGE`]. The unroutable queue first, so that nothing routed to it is
/// lost.
async fn declare_way_out(
    declarer: &crate::topology::Declarer<'_>,
    channel: &mut Channel,
) -> Result<()> {
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..ExchangeDeclareOptions::default()
    };
    channel
        .exchange_declare(
            UNROUTABLE.into(),
            ExchangeKind::Fanout,
            durable,
            FieldTable::default(),
        )
        .await?;
    let mut args = FieldTable::default();
    args.insert("x-queue-type".into(), long_value("quorum"));
    args.insert(
        crate::topology::GROUP_SIZE_ARG.into(),
        AMQPValue::LongLongInt(i64::from(REPLICAS)),
    );
    // Peeks return messages to the queue, which counts as a delivery (see
    // `topology::DLQ_DELIVERY_LIMIT`).
    args.insert(
        "x-delivery-limit".into(),
        AMQPValue::LongLongInt(crate::topology::DLQ_DELIVERY_LIMIT),
    );
    crate::topology::declare_queue(declarer, channel, UNROUTABLE, args).await?;
    channel
        .queue_bind(
            UNROUTABLE.into(),
            UNROUTABLE.into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let mut route_args = FieldTable::default();
    route_args.insert("alternate-exchange".into(), long_value(UNROUTABLE));
    for (name, args) in [
        (ROUTE_EXCHANGE, route_args),
        (DELIVER_EXCHANGE, FieldTable::default()),
    ] {
        channel
            .exchange_declare(name.into(), ExchangeKind::Topic, durable, args)
            .await?;
    }
    channel
        .exchange_bind(
            ROUTE_EXCHANGE.into(),
            DELIVER_EXCHANGE.into(),
            "#".into(),
            ExchangeBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    Ok(())
}

/// Binds work queue `queue` to [`ROUTE_EXCHANGE`] (idempotent), and removes the binding to
/// [`DELIVER_EXCHANGE`] that warren made before [`ROUTE_EXCHANGE`] existed (unbinding what is
/// not bound is a no-op). While both exist a message reaches the queue once: the broker
/// delivers one copy per queue however many bindings match.
pub(crate) async fn bind_work_queue(channel: &Channel, queue: &str) -> Result<()> {
    let pattern = format!("{}{queue}", "*.".repeat(LEVELS as usize));
    channel
        .queue_bind(
            queue.into(),
            ROUTE_EXCHANGE.into(),
            pattern.as_str().into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    channel
        .queue_unbind(
            queue.into(),
            DELIVER_EXCHANGE.into(),
            pattern.as_str().into(),
            FieldTable::default(),
        )
        .await?;
    Ok(())
}

/// Publishes `body` to work queue `queue` after `delay` (rounded up to whole seconds; a zero
/// delay goes straight to the work queue), with a confirm.
///
/// # Errors
/// As [`Publisher::publish`].
pub async fn publish(
    publisher: &Publisher,
    queue: &str,
    body: &[u8],
    properties: BasicProperties,
    delay: Duration,
) -> Result<()> {
    let seconds = delay_seconds(delay);
    let published = if seconds == 0 {
        publisher
            .publish(
                crate::topology::JOBS_EXCHANGE,
                queue,
                body,
                properties,
                queue,
            )
            .await
    } else {
        publisher
            .publish(
                &entry_exchange(),
                &routing_key(seconds, queue),
                body,
                properties,
                queue,
            )
            .await
    };
    if published.is_ok() {
        crate::telemetry::count(crate::telemetry::JOBS_PUBLISHED, queue);
    }
    published
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routing_key_spells_the_delay_in_binary() {
        let key = routing_key(5, "mail");
        let bits: Vec<&str> = key.split('.').take(LEVELS as usize).collect();
        assert_eq!(bits.len(), 20);
        assert_eq!(bits[17..], ["1", "0", "1"]);
        assert!(bits[..17].iter().all(|b| *b == "0"));
        assert!(key.ends_with(".mail"));
        // Queue names with dots stay intact after the bits.
        assert!(routing_key(1, "a.b").ends_with(".1.a.b"));
    }

    #[test]
    fn delays_round_up_to_seconds_and_cap() {
        assert_eq!(delay_seconds(Duration::ZERO), 0);
        assert_eq!(delay_seconds(Duration::from_millis(1)), 1);
        assert_eq!(delay_seconds(Duration::from_millis(3000)), 3);
        assert_eq!(delay_seconds(Duration::from_millis(3001)), 4);
        assert_eq!(delay_seconds(Duration::from_secs(7 * 86400)), 7 * 86400);
        assert_eq!(
            delay_seconds(Duration::from_secs(u64::MAX / 2)),
            MAX_DELAY.as_secs()
        );
        assert!(MAX_DELAY >= Duration::from_secs(7 * 86400));
    }

    #[test]
    fn the_destination_is_read_back_from_the_routing_key() {
        assert_eq!(destination(&routing_key(5, "mail")), "mail");
        assert_eq!(destination(&routing_key(1, "a.b.c")), "a.b.c");
        assert_eq!(destination(&routing_key(0, "0.1")), "0.1");
        assert_eq!(destination("1.0.mail"), "1.0.mail");
        assert_eq!(destination("mail"), "mail");
    }

    #[test]
    fn each_level_pattern_tests_its_own_bit() {
        assert_eq!(level_pattern(LEVELS - 1, '1'), "1.#");
        assert_eq!(level_pattern(0, '0'), format!("{}0.#", "*.".repeat(19)));
    }
}
