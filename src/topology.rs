//! Broker topology: the exchanges, queues and bindings warren needs, declared from
//! `queues.toml` (DESIGN §4).
//!
//! Per configured queue `Q`:
//! - work queue `Q`: durable, `x-queue-type` quorum (or classic), dead-lettering to
//!   [`DLX`] with routing key `Q`, `x-delivery-limit` (quorum), `x-max-length` when set, and
//!   `x-overflow = reject-publish` so a full queue nacks publishes instead of dropping old
//!   messages; quorum queues use `x-dead-letter-strategy = at-least-once` (RabbitMQ docs,
//!   "Quorum Queues", at-least-once dead-lettering, which requires reject-publish) and
//!   `x-quorum-initial-group-size` = `replicas` ([`GROUP_SIZE_ARG`]);
//! - dead-letter queue `Q.dlq`: durable, same type (and group size), bound to [`DLX`] with
//!   key `Q`;
//! - `Q` bound to [`JOBS_EXCHANGE`] with key `Q`, and to the delay levels' last hop
//!   ([`crate::delay::ROUTE_EXCHANGE`]);
//! - once for all queues: the topic exchange [`crate::events::EVENTS_EXCHANGE`] finished
//!   jobs are announced on (for `?wait=`), and the delay levels `warren.delay.00` … `warren.delay.19`
//!   (see [`crate::delay`]), quorum queues of [`crate::delay::REPLICAS`] replicas, and the
//!   queue [`crate::delay::UNROUTABLE`] for delayed messages whose work queue is gone.
//!
//! Redeclaring an existing queue with other arguments fails with AMQP 406
//! PRECONDITION_FAILED; [`apply`] turns that into a message saying which argument differs and
//! how to migrate. The one exception is the group size, which only matters when a queue is
//! created: see [`GROUP_SIZE_ARG`].
//!
//! On a cluster, RabbitMQ does not replicate classic queues: [`replication_warnings`] names
//! them, and `warren topology show` prints each quorum queue's leader and members.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, ExchangeKind};

use crate::broker::Broker;
use crate::config::{Config, QueueConfig, QueueType};
use crate::error::{Error, ErrorKind, Result};
use crate::overview::Management;

/// Direct exchange jobs are published to, routing key = queue name.
pub const JOBS_EXCHANGE: &str = "warren.jobs";
/// Direct dead-letter exchange, routing key = queue name; routes to `{queue}.dlq`.
pub const DLX: &str = "warren.dlx";

/// The argument that sets how many nodes a new quorum queue is replicated on (its Raft group:
/// a leader and followers). warren sets it to `replicas` on quorum work queues and DLQs and to
/// [`crate::delay::REPLICAS`] on the delay levels.
///
/// RabbitMQ reads it only when it creates the queue: it picks that many nodes, or every node
/// when the cluster has fewer (`rabbit_queue_location:select_replicas/6`, RabbitMQ 3.10.8:
/// `select_replicas(Size, AllNodes, …) when length(AllNodes) =< Size -> {AllNodes, …}`), and
/// a queue's members change afterwards only by `rabbitmq-queues add_member`, `delete_member`
/// or `grow`. Yet the broker compares it on every later declare like any other argument
/// (`rabbit_amqqueue:assert_args_equivalence/2` checks every key of the queue type's
/// `queue_arguments`, and `rabbit_quorum_queue:capabilities/0` lists this one): declaring a
/// queue made without it (by a warren older than `replicas`, or by hand) *with* it, or with
/// another value, is refused with 406 PRECONDITION_FAILED "inequivalent arg
/// 'x-quorum-initial-group-size' … received the value '3' of type 'long' but current is
/// none" (seen on RabbitMQ 3.10.8). So warren treats this argument alone specially (see
/// [`declare_queue`]): when the broker refuses it, warren declares the queue again with the
/// value the queue already has (read first from the management API in [`apply`]), so
/// existing deployments keep working and keep their members, and names those queues in one
/// line of the log.
pub const GROUP_SIZE_ARG: &str = "x-quorum-initial-group-size";

/// The dead-letter queue of `queue`: `{queue}.dlq`.
pub fn dlq_name(queue: &str) -> String {
    format!("{queue}.dlq")
}

/// The arguments warren declares the work queue with (see the module docs).
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
            GROUP_SIZE_ARG.into(),
            AMQPValue::LongLongInt(i64::from(q.replicas)),
        );
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

/// The arguments of the dead-letter queue: its type and, as a quorum queue, the work queue's
/// group size ([`GROUP_SIZE_ARG`] = `replicas`: a dead letter is worth as many copies as a
/// job).
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
            GROUP_SIZE_ARG.into(),
            AMQPValue::LongLongInt(i64::from(q.replicas)),
        );
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
    let declarer = Declarer::new(broker, Management::from_config(&config.broker).ok());
    // The existing queues' group sizes first, so that queues made before `replicas` are
    // declared as they are without being refused first (see `declare_queue`).
    let (channel, ()) = tokio::join!(broker.channel(), declarer.learn_group_sizes());
    let mut channel = channel?;
    declare_shared(&declarer, &mut channel).await?;
    for q in config.queues.values() {
        declare_one(&declarer, &mut channel, q).await?;
    }
    let _ = channel.close(200, "topology applied".into()).await;
    log_kept_group_sizes(config);
    Ok(())
}

/// What declaring needs besides a channel: the broker, for a new channel when the broker
/// closed one, and (in [`apply`]) the management API, asked once for the group sizes of the
/// existing queues (see [`declare_queue`]).
pub(crate) struct Declarer<'a> {
    broker: &'a Broker,
    management: Option<Management>,
    asked: AtomicBool,
}

impl<'a> Declarer<'a> {
    /// Declares on `broker`; `management`, when given, is asked for existing group sizes.
    pub(crate) fn new(broker: &'a Broker, management: Option<Management>) -> Self {
        Self {
            broker,
            management,
            asked: AtomicBool::new(false),
        }
    }

    /// Reads every existing quorum queue's group size from the management API (one request,
    /// the first call only; nothing without the API) into the process's
    /// [`kept_group_sizes`], so that queues are declared with the size they have at once
    /// instead of each being refused first (every refusal closes a channel, and both lapin and
    /// the broker log it as an error).
    async fn learn_group_sizes(&self) {
        let Some(m) = &self.management else { return };
        if self.asked.swap(true, Ordering::Relaxed) {
            return;
        }
        match m.group_sizes().await {
            Ok(sizes) => {
                if let Ok(mut kept) = kept_group_sizes().lock() {
                    kept.extend(sizes);
                }
            }
            Err(e) => tracing::debug!(
                error = %e,
                "cannot read the queues' group sizes; declaring each queue twice instead"
            ),
        }
    }
}

/// Declares what every queue needs: `warren.jobs`, `warren.dlx`, `warren.events`
/// ([`crate::events`]) and the delay levels, on
/// `channel` (replaced by a new one when the broker closed it: see [`declare_queue`]).
///
/// # Errors
/// As [`apply`].
pub(crate) async fn declare_shared(declarer: &Declarer<'_>, channel: &mut Channel) -> Result<()> {
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
    crate::events::declare(channel).await?;
    crate::delay::declare(declarer, channel).await
}

/// Declares one queue's own part: its DLQ, its work queue and their bindings (the DLQ first,
/// so that nothing dead-lettered is ever unroutable), on `channel` (replaced by a new one when
/// the broker closed it: see [`declare_queue`]).
///
/// # Errors
/// As [`apply`].
pub(crate) async fn declare_one(
    declarer: &Declarer<'_>,
    channel: &mut Channel,
    q: &QueueConfig,
) -> Result<()> {
    let dlq = dlq_name(&q.name);
    declare_queue(declarer, channel, &dlq, dlq_args(q)).await?;
    bind(channel, &dlq, DLX, &q.name).await?;
    declare_queue(declarer, channel, &q.name, work_queue_args(q)).await?;
    crate::delay::bind_work_queue(channel, &q.name).await?;
    bind(channel, &q.name, JOBS_EXCHANGE, &q.name).await
}

/// Declares the durable queue `name` with `wanted` arguments.
///
/// When the broker refuses [`GROUP_SIZE_ARG`] alone (the queue exists without it, or with
/// another value; why that is harmless is on [`GROUP_SIZE_ARG`]), it closes `channel`
/// (406 is a channel error): warren opens a new one into `channel` and declares again with the
/// queue's own value (or without the argument when it has none), so every other argument is
/// still checked. The process remembers the queue's value ([`kept_group_sizes`], where
/// [`apply`] first puts every existing queue's value read from the management API, so that
/// nothing is refused while that API answers), and later declarations (each worker session
/// re-declares its queue and the delay levels) use it at once rather than be refused again.
/// (A queue deleted while the process runs is so declared again with the value it had.)
///
/// # Errors
/// [`ErrorKind::TopologyMismatch`] when the queue exists with another argument (see
/// [`apply`]); [`ErrorKind::BrokerUnavailable`] and [`ErrorKind::Amqp`] otherwise.
pub(crate) async fn declare_queue(
    declarer: &Declarer<'_>,
    channel: &mut Channel,
    name: &str,
    wanted: FieldTable,
) -> Result<()> {
    if !wanted.contains_key(GROUP_SIZE_ARG) {
        return declare_durable(channel, name, wanted.clone())
            .await
            .map_err(|e| explain_declare_error(name, &wanted, e));
    }
    let kept = kept_group_sizes()
        .lock()
        .ok()
        .and_then(|k| k.get(name).copied());
    let args = match kept {
        Some(kept) => with_group_size(&wanted, kept),
        None => wanted.clone(),
    };
    let err = match declare_durable(channel, name, args.clone()).await {
        Ok(()) => return Ok(()),
        Err(e) => e,
    };
    let Some(existing) = existing_group_size(&err.to_string()) else {
        return Err(explain_declare_error(name, &args, err));
    };
    *channel = declarer.broker.channel().await?;
    declarer.learn_group_sizes().await;
    if let Ok(mut kept) = kept_group_sizes().lock() {
        kept.insert(name.to_owned(), existing);
    }
    tracing::debug!(
        queue = name,
        existing = ?existing,
        "declaring the queue again with the group size it has"
    );
    let again = with_group_size(&wanted, existing);
    declare_durable(channel, name, again.clone())
        .await
        .map_err(|e| explain_declare_error(name, &again, e))
}

async fn declare_durable(
    channel: &Channel,
    name: &str,
    args: FieldTable,
) -> std::result::Result<(), lapin::Error> {
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
}

/// `args` with [`GROUP_SIZE_ARG`] set to `size`, or without it for `None`.
fn with_group_size(args: &FieldTable, size: Option<i64>) -> FieldTable {
    let mut args = args.inner().clone();
    match size {
        Some(n) => {
            args.insert(GROUP_SIZE_ARG.into(), AMQPValue::LongLongInt(n));
        }
        None => {
            args.remove(GROUP_SIZE_ARG);
        }
    }
    FieldTable::from(args)
}

/// The group sizes existing quorum queues have (`None`: declared without the argument), by
/// queue name, as this process found them: from a refusal ([`declare_queue`]) or the
/// management API ([`Declarer::learn_group_sizes`]).
fn kept_group_sizes() -> &'static Mutex<BTreeMap<String, Option<i64>>> {
    static KEPT: OnceLock<Mutex<BTreeMap<String, Option<i64>>>> = OnceLock::new();
    KEPT.get_or_init(Mutex::default)
}

/// The group size an existing queue has, read from the broker's refusal of another one:
/// `Some(None)` when it has none, `Some(Some(n))` when it has `n`, `None` when `text` is not
/// a refusal of [`GROUP_SIZE_ARG`] (or not one this parser understands).
///
/// RabbitMQ 3.10.8 words it (`rabbit_misc:equivalence_fail/4`, `val/1`) as "inequivalent arg
/// 'x-quorum-initial-group-size' for queue 'q' in vhost '/': received X but current is Y",
/// where Y is `none`, `'5'` (same type) or `the value '5' of type 'long'`.
fn existing_group_size(text: &str) -> Option<Option<i64>> {
    if !text.contains(&format!("inequivalent arg '{GROUP_SIZE_ARG}'")) {
        return None;
    }
    let current = text.rsplit_once("but current is ")?.1;
    if current.starts_with("none") {
        return Some(None);
    }
    current.split('\'').nth(1)?.parse().ok().map(Some)
}

/// Logs in one line the queues of `config` (and the delay levels) that exist with another
/// group size than warren's, as far as this process found out while declaring them.
fn log_kept_group_sizes(config: &Config) {
    let Ok(kept) = kept_group_sizes().lock().map(|k| k.clone()) else {
        return;
    };
    let differs = |name: &str, wanted: u32| match kept.get(name) {
        Some(existing) if *existing != Some(i64::from(wanted)) => {
            Some(existing.map_or_else(|| "none".to_owned(), |n| n.to_string()))
        }
        _ => None,
    };
    let mut found: Vec<String> = Vec::new();
    let levels: Vec<String> = (0..crate::delay::LEVELS)
        .filter_map(|k| differs(&crate::delay::level_name(k), crate::delay::REPLICAS))
        .collect();
    if !levels.is_empty() {
        if levels.len() == crate::delay::LEVELS as usize && levels.iter().all(|v| *v == levels[0]) {
            found.push(format!(
                "the delay levels {} … {} ({})",
                crate::delay::level_name(0),
                crate::delay::level_name(crate::delay::LEVELS - 1),
                levels[0]
            ));
        } else {
            found.extend((0..crate::delay::LEVELS).filter_map(|k| {
                let name = crate::delay::level_name(k);
                differs(&name, crate::delay::REPLICAS).map(|v| format!("{name} ({v})"))
            }));
        }
    }
    for q in config
        .queues
        .values()
        .filter(|q| q.queue_type == QueueType::Quorum)
    {
        for name in [q.name.clone(), dlq_name(&q.name)] {
            if let Some(v) = differs(&name, q.replicas) {
                found.push(format!("{name} ({v})"));
            }
        }
    }
    if found.is_empty() {
        return;
    }
    tracing::info!(
        "these quorum queues exist with another {GROUP_SIZE_ARG} than warren's and keep their \
         members (RabbitMQ picks them when it creates a queue; `rabbitmq-queues add_member` or \
         `grow` change them; `replicas` applies to queues created from now on): {}",
        found.join(", ")
    );
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
    if arg == GROUP_SIZE_ARG {
        // Normally reconciled in `declare_queue`; this is for a refusal worded otherwise.
        let _ = write!(
            msg,
            "queue `{queue}` already exists with a different `{arg}`: warren wants {ours}; broker says {detail}.\n\
             The group size only matters when a queue is created: set `replicas` in queues.toml \
             to the queue's value, or change its members with `rabbitmq-queues add_member` / \
             `delete_member` / `grow`."
        );
        return ErrorKind::TopologyMismatch(msg).into();
    }
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
    let _ = writeln!(
        out,
        "exchange {} (topic, durable) finished jobs, routing key = job id; each waiting intake binds a queue of its own",
        crate::events::EVENTS_EXCHANGE
    );
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
        let _ = writeln!(
            out,
            "  bound to {JOBS_EXCHANGE} with key {0}, and to {1} with key *.….*.{0}",
            q.name,
            crate::delay::ROUTE_EXCHANGE
        );
        let replicas = match q.queue_type {
            QueueType::Quorum => format!(", {} replicas", q.replicas),
            QueueType::Classic => String::new(),
        };
        let _ = writeln!(
            out,
            "queue {} ({}{replicas}) dead letters of {}",
            dlq_name(&q.name),
            q.queue_type.as_str(),
            q.name
        );
        let _ = writeln!(out, "  bound to {DLX} with key {}", q.name);
    }
    let _ = writeln!(
        out,
        "delay levels {} … {} (quorum, {} replicas, TTL 1 s … 2^{} s, at-least-once dead-lettering) → exchange {}",
        crate::delay::level_name(0),
        crate::delay::level_name(crate::delay::LEVELS - 1),
        crate::delay::REPLICAS,
        crate::delay::LEVELS - 1,
        crate::delay::DELIVER_EXCHANGE
    );
    let _ = writeln!(
        out,
        "exchange {} (topic) → exchange {} (topic, alternate exchange {}) → the work queues",
        crate::delay::DELIVER_EXCHANGE,
        crate::delay::ROUTE_EXCHANGE,
        crate::delay::UNROUTABLE
    );
    let _ = writeln!(
        out,
        "queue {0} (quorum, {1} replicas) delayed messages whose work queue is gone; see `warren dlq peek {0}`",
        crate::delay::UNROUTABLE,
        crate::delay::REPLICAS
    );
    out
}

/// Warnings about configured queues that the cluster does not replicate: on a cluster of more
/// than one node (`GET /api/nodes` of the management API), each classic queue lives on one
/// node only (RabbitMQ 3.10 replicates quorum and stream queues, and classic queues only
/// under the deprecated mirroring policies, which warren does not set), so losing that node
/// stops the queue, and losing its disk loses its jobs.
///
/// Empty on a single node, when every queue is a quorum queue (then the API is not asked),
/// and when the API cannot tell the cluster's size (logged at debug level: `/api/nodes` needs
/// the `monitoring` or `administrator` tag).
pub async fn replication_warnings(config: &Config) -> Vec<String> {
    if config
        .queues
        .values()
        .all(|q| q.queue_type != QueueType::Classic)
    {
        return Vec::new();
    }
    let nodes = match Management::from_config(&config.broker) {
        Ok(m) => m.nodes().await,
        Err(e) => Err(e),
    };
    match nodes {
        Ok(nodes) => unreplicated_warnings(config, &nodes),
        Err(e) => {
            tracing::debug!(error = %e, "cluster size unknown; not checking classic queues");
            Vec::new()
        }
    }
}

/// [`replication_warnings`] for a cluster of `nodes` (node names).
pub fn unreplicated_warnings(config: &Config, nodes: &[String]) -> Vec<String> {
    if nodes.len() < 2 {
        return Vec::new();
    }
    config
        .queues
        .values()
        .filter(|q| q.queue_type == QueueType::Classic)
        .map(|q| {
            format!(
                "queue `{}` and `{}` are classic queues: on this cluster of {} nodes ({}) each \
                 lives on one node and is not replicated; if that node is lost, so is the queue \
                 and, with its disk, its jobs. Use type = \"quorum\" (replicated over `replicas` \
                 nodes) for jobs that must survive a node",
                q.name,
                dlq_name(&q.name),
                nodes.len(),
                nodes.join(", ")
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::EnvOverrides;

    fn config(text: &str) -> Config {
        Config::parse(text, Path::new("q.toml"), &EnvOverrides::default()).expect("valid config")
    }

    fn arg(args: &FieldTable, key: &str) -> Option<AMQPValue> {
        args.inner().get(key).cloned()
    }

    #[test]
    fn quorum_queues_and_their_dlqs_carry_the_group_size() {
        let c = config(
            "[queues.a]\nhandler = \"noop\"\n[queues.b]\nhandler = \"noop\"\nreplicas = 5\n",
        );
        let (a, b) = (c.queue("a").expect("a"), c.queue("b").expect("b"));
        for args in [work_queue_args(a), dlq_args(a)] {
            assert_eq!(arg(&args, GROUP_SIZE_ARG), Some(AMQPValue::LongLongInt(3)));
        }
        for args in [work_queue_args(b), dlq_args(b)] {
            assert_eq!(arg(&args, GROUP_SIZE_ARG), Some(AMQPValue::LongLongInt(5)));
        }
        assert!(describe_plan(&c).contains("x-quorum-initial-group-size=5"));
        assert!(describe_plan(&c).contains("b.dlq (quorum, 5 replicas)"));
    }

    #[test]
    fn classic_queues_carry_no_group_size() {
        // RabbitMQ refuses it on a new classic queue: "invalid arg
        // 'x-quorum-initial-group-size' … of queue type rabbit_classic_queue".
        let c = config("[queues.a]\nhandler = \"noop\"\ntype = \"classic\"\nreplicas = 5\n");
        let a = c.queue("a").expect("a");
        for args in [work_queue_args(a), dlq_args(a)] {
            assert_eq!(arg(&args, GROUP_SIZE_ARG), None);
            assert_eq!(
                arg(&args, "x-queue-type"),
                Some(crate::message::long_value("classic"))
            );
        }
    }

    #[test]
    fn the_existing_group_size_is_read_from_the_refusal() {
        // The three wordings RabbitMQ 3.10.8 answered with (through lapin's Display).
        let prefix = "protocol error: AMQP soft error: PRECONDITION_FAILED: PRECONDITION_FAILED - ";
        let none = format!(
            "{prefix}inequivalent arg 'x-quorum-initial-group-size' for queue 't-q' in vhost '/': received the value '3' of type 'long' but current is none"
        );
        assert_eq!(existing_group_size(&none), Some(None));
        let same_type = format!(
            "{prefix}inequivalent arg 'x-quorum-initial-group-size' for queue 't-q' in vhost '/': received '3' but current is '5'"
        );
        assert_eq!(existing_group_size(&same_type), Some(Some(5)));
        let typed = format!(
            "{prefix}inequivalent arg 'x-quorum-initial-group-size' for queue 't-q' in vhost '/': received none but current is the value '5' of type 'long'"
        );
        assert_eq!(existing_group_size(&typed), Some(Some(5)));
        let other = format!(
            "{prefix}inequivalent arg 'x-delivery-limit' for queue 't-q' in vhost '/': received '7' but current is '20'"
        );
        assert_eq!(existing_group_size(&other), None);
    }

    #[test]
    fn classic_queues_are_warned_about_on_a_cluster_only() {
        let c = config(
            "[queues.a]\nhandler = \"noop\"\ntype = \"classic\"\n[queues.b]\nhandler = \"noop\"\n",
        );
        assert!(unreplicated_warnings(&c, &["rabbit@one".to_owned()]).is_empty());
        let nodes = ["rabbit@a", "rabbit@b", "rabbit@c"].map(str::to_owned);
        let w = unreplicated_warnings(&c, &nodes);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].contains("`a`") && w[0].contains("`a.dlq`") && w[0].contains("3 nodes"),
            "{w:?}"
        );
        assert!(w[0].contains("not replicated"), "{w:?}");
    }
}
