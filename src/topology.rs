//! Broker topology: the exchanges, queues and bindings warren needs, declared from
//! `queues.toml` (DESIGN §4).
//!
//! Per configured queue `Q`:
//! - work queue `Q`: durable, `x-queue-type` quorum (or classic), dead-lettering to
//!   [`DLX`] with routing key `Q`, `x-delivery-limit` (quorum), `x-max-length` when set, and
//!   `x-overflow = reject-publish` so a full queue nacks publishes instead of dropping old
//!   messages; quorum queues use `x-dead-letter-strategy = at-least-once` (RabbitMQ docs,
//!   "Quorum Queues", at-least-once dead-lettering, which requires reject-publish);
//! - dead-letter queue `Q.dlq`: durable, same type, bound to [`DLX`] with key `Q`;
//! - `Q` bound to [`JOBS_EXCHANGE`] with key `Q`, and to the delay levels' last hop
//!   ([`crate::delay::DELIVER_EXCHANGE`]);
//! - once for all queues: the delay levels `warren.delay.00` … `warren.delay.19`
//!   (see [`crate::delay`]).
//!
//! Redeclaring an existing queue with other arguments fails with AMQP 406
//! PRECONDITION_FAILED; [`apply`] turns that into a message saying which argument differs and
//! how to migrate.

use std::fmt::Write as _;

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, ExchangeKind};

use crate::broker::Broker;
use crate::config::{Config, QueueConfig, QueueType};
use crate::error::{Error, ErrorKind, Result};

/// Direct exchange jobs are published to, routing key = queue name.
pub const JOBS_EXCHANGE: &str = "warren.jobs";
/// Direct dead-letter exchange, routing key = queue name; routes to `{queue}.dlq`.
pub const DLX: &str = "warren.dlx";

/// The dead-letter queue of `queue`: `{queue}.dlq`.
pub fn dlq_name(queue: &str) -> String {
    format!("{queue}.dlq")
}

/// The arguments warren declares the work queue with.
pub fn work_queue_args(q: &QueueConfig) -> FieldTable {
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        crate::message::long_value(q.queue_type.as_str()),
    );
    args.insert(
        "x-dead-letter-exchange".into(),
        crate::message::long_value(DLX),
    );
    args.insert(
        "x-dead-letter-routing-key".into(),
        crate::message::long_value(&q.name),
    );
    args.insert(
        "x-overflow".into(),
        crate::message::long_value("reject-publish"),
    );
    if q.queue_type == QueueType::Quorum {
        args.insert(
            "x-delivery-limit".into(),
            AMQPValue::LongLongInt(i64::from(q.delivery_limit)),
        );
        args.insert(
            "x-dead-letter-strategy".into(),
            crate::message::long_value("at-least-once"),
        );
    }
    if let Some(max) = q.max_length {
        args.insert(
            "x-max-length".into(),
            AMQPValue::LongLongInt(i64::try_from(max).unwrap_or(i64::MAX)),
        );
    }
    args
}

/// The arguments of the dead-letter queue.
///
/// A quorum DLQ gets an explicit, very high `x-delivery-limit` ([`DLQ_DELIVERY_LIMIT`]):
/// peeking returns messages to the queue, which counts as a delivery, and RabbitMQ 4 gives
/// quorum queues a default limit of 20, past which a DLQ (which has no dead-letter exchange of
/// its own) would drop the message. (`-1`, RabbitMQ 4's "unlimited", drops at once on 3.x.)
pub fn dlq_args(q: &QueueConfig) -> FieldTable {
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        crate::message::long_value(q.queue_type.as_str()),
    );
    if q.queue_type == QueueType::Quorum {
        args.insert(
            "x-delivery-limit".into(),
            AMQPValue::LongLongInt(DLQ_DELIVERY_LIMIT),
        );
    }
    args
}

/// `x-delivery-limit` of quorum DLQs: high enough to mean "never" for peeks.
pub const DLQ_DELIVERY_LIMIT: i64 = 1_000_000;

/// Declares everything `config` needs (idempotent).
///
/// # Errors
/// [`ErrorKind::TopologyMismatch`] when an existing queue has other arguments (the message
/// names the argument and how to migrate); [`ErrorKind::BrokerUnavailable`] when the broker
/// cannot be reached.
pub async fn apply(broker: &Broker, config: &Config) -> Result<()> {
    let channel = broker.channel().await?;
    declare_shared(&channel).await?;
    for q in config.queues.values() {
        declare_one(&channel, q).await?;
    }
    let _ = channel.close(200, "topology applied".into()).await;
    Ok(())
}

/// Declares what every queue needs: `warren.jobs`, `warren.dlx` and the delay levels.
///
/// # Errors
/// As [`apply`].
pub(crate) async fn declare_shared(channel: &Channel) -> Result<()> {
    for exchange in [JOBS_EXCHANGE, DLX] {
        channel
            .exchange_declare(
                exchange.into(),
                ExchangeKind::Direct,
                ExchangeDeclareOptions {
                    durable: true,
                    ..ExchangeDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await?;
    }
    crate::delay::declare(channel).await
}

/// Declares one queue's own part: its DLQ, its work queue and their bindings (the DLQ first,
/// so that nothing dead-lettered is ever unroutable).
///
/// # Errors
/// As [`apply`].
pub(crate) async fn declare_one(channel: &Channel, q: &QueueConfig) -> Result<()> {
    let dlq = dlq_name(&q.name);
    declare_queue(channel, &dlq, dlq_args(q)).await?;
    bind(channel, &dlq, DLX, &q.name).await?;
    declare_queue(channel, &q.name, work_queue_args(q)).await?;
    crate::delay::bind_work_queue(channel, &q.name).await?;
    bind(channel, &q.name, JOBS_EXCHANGE, &q.name).await
}

pub(crate) async fn declare_queue(channel: &Channel, name: &str, args: FieldTable) -> Result<()> {
    let wanted = args.clone();
    channel
        .queue_declare(
            name.into(),
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            args,
        )
        .await
        .map(|_| ())
        .map_err(|e| explain_declare_error(name, &wanted, e))
}

async fn bind(channel: &Channel, queue: &str, exchange: &str, key: &str) -> Result<()> {
    channel
        .queue_bind(
            queue.into(),
            exchange.into(),
            key.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    Ok(())
}

/// Turns a PRECONDITION_FAILED on declare into "which argument differs and how to migrate".
fn explain_declare_error(queue: &str, wanted: &FieldTable, err: lapin::Error) -> Error {
    let text = err.to_string();
    if !text.contains("PRECONDITION_FAILED") && !text.contains("inequivalent") {
        return Error::from(err);
    }
    // RabbitMQ says: "inequivalent arg 'x-queue-type' for queue 'q' in vhost '/': received
    // 'quorum' but current is 'classic'" (or "... received none but current is ...").
    let arg = text
        .split("inequivalent arg '")
        .nth(1)
        .and_then(|rest| rest.split('\'').next())
        .unwrap_or("(unknown)");
    let detail = text
        .split(": received")
        .nth(1)
        .map(|d| format!("received{}", d.trim_end_matches(['"', ')'])))
        .unwrap_or_default();
    let ours = wanted
        .inner()
        .get(arg)
        .map_or_else(|| "(not set)".to_owned(), describe);
    let mut msg = String::new();
    let _ = write!(
        msg,
        "queue `{queue}` already exists with a different `{arg}`: warren wants {ours}; broker says {detail}.\n\
         To migrate: stop warren's workers, move the queue's messages elsewhere \
         (e.g. a shovel to a temporary queue), delete it (`rabbitmqctl delete_queue {queue}`), \
         run `warren topology apply`, then move the messages back. \
         Or change queues.toml to match the existing queue."
    );
    ErrorKind::TopologyMismatch(msg).into()
}

fn describe(v: &AMQPValue) -> String {
    match v {
        AMQPValue::LongString(s) => format!("'{s}'"),
        AMQPValue::LongLongInt(n) => n.to_string(),
        other => format!("{other:?}"),
    }
}

/// One queue's live state as the broker reports it (passive declare).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueState {
    /// Queue name.
    pub name: String,
    /// Ready messages, or `None` when the queue does not exist.
    pub messages: Option<u32>,
    /// Consumers attached.
    pub consumers: Option<u32>,
}

/// The live state of `name` (passive declare: nothing is created).
///
/// # Errors
/// [`ErrorKind::BrokerUnavailable`] when the broker cannot be reached.
pub async fn inspect(broker: &Broker, name: &str) -> Result<QueueState> {
    let channel = broker.channel().await?;
    let res = crate::broker::bounded(channel.queue_declare(
        name.into(),
        QueueDeclareOptions {
            passive: true,
            ..QueueDeclareOptions::default()
        },
        FieldTable::default(),
    ))
    .await;
    match res {
        Ok(q) => {
            let _ = channel.close(200, "inspected".into()).await;
            Ok(QueueState {
                name: name.to_owned(),
                messages: Some(q.message_count()),
                consumers: Some(q.consumer_count()),
            })
        }
        Err(e) if e.to_string().contains("NOT_FOUND") => Ok(QueueState {
            name: name.to_owned(),
            messages: None,
            consumers: None,
        }),
        Err(e) => Err(e),
    }
}

/// A human-readable plan of the topology `config` declares.
pub fn describe_plan(config: &Config) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "exchange {JOBS_EXCHANGE} (direct, durable)");
    let _ = writeln!(out, "exchange {DLX} (direct, durable)");
    for q in config.queues.values() {
        let args = work_queue_args(q);
        let args: Vec<String> = args
            .inner()
            .iter()
            .map(|(k, v)| format!("{k}={}", describe(v)))
            .collect();
        let _ = writeln!(
            out,
            "queue {} ({}) [{}]",
            q.name,
            q.queue_type.as_str(),
            args.join(", ")
        );
        let _ = writeln!(out, "  bound to {JOBS_EXCHANGE} with key {}", q.name);
        let _ = writeln!(
            out,
            "queue {} ({}) dead letters of {}",
            dlq_name(&q.name),
            q.queue_type.as_str(),
            q.name
        );
        let _ = writeln!(out, "  bound to {DLX} with key {}", q.name);
    }
    let _ = writeln!(
        out,
        "delay levels {} … {} (quorum, TTL 1 s … 2^{} s, at-least-once dead-lettering) → exchange {}",
        crate::delay::level_name(0),
        crate::delay::level_name(crate::delay::LEVELS - 1),
        crate::delay::LEVELS - 1,
        crate::delay::DELIVER_EXCHANGE
    );
    out
}
