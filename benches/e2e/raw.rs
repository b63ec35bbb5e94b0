//! The raw lapin baseline: a bare publisher and consumer on queues declared as warren declares
//! its own, which warren's figures are measured against.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{Confirmation, Connection};

use crate::child::Cleanup;
use crate::procfs::{CpuMeter, CpuTotals};
use crate::{Params, payload};

/// Declares `name` exactly as warren declares a work queue (quorum, its arguments).
pub(crate) async fn declare_like_warren(conn: &Connection, name: &str, cleanup: &Cleanup) {
    let config = warren::Config::parse(
        &format!("[queues.\"{name}\"]\nhandler = \"noop\"\n"),
        Path::new("bench.toml"),
        &warren::config::EnvOverrides::default(),
    )
    .expect("bench queue config");
    let q = config.queue(name).expect("the queue just configured");
    let ch = conn.create_channel().await.expect("channel");
    cleanup.add(name);
    ch.queue_declare(
        name.into(),
        QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        },
        warren::topology::work_queue_args(q),
    )
    .await
    .expect("declare the raw queue");
    let _ = ch.close(200, "declared".into()).await;
}

/// Publishes message `i` (a job message with [`payload`]`(i)`, persistent, mandatory) to
/// `queue` on `ch`; returns its pending confirm.
async fn publish_one(ch: &lapin::Channel, queue: &str, i: usize) -> lapin::PublisherConfirm {
    let msg = warren::message::JobMessage {
        id: uuid::Uuid::now_v7(),
        queue: queue.to_owned(),
        attempt: 1,
        max_attempts: 5,
        correlation_id: None,
        idempotency_key: None,
        concurrency_key: None,
        payload: Bytes::from(payload(i)),
    };
    ch.basic_publish(
        "".into(),
        queue.into(),
        BasicPublishOptions {
            mandatory: true,
            ..BasicPublishOptions::default()
        },
        &msg.payload,
        msg.properties(),
    )
    .await
    .expect("basic.publish")
}

/// Publishes `n` persistent, mandatory messages to `queue` with confirms, `inflight` in
/// flight spread over `channels` channels; panics on a nack or a return. Returns the time from
/// the first publish to the last confirm: the channels are opened (and put in confirm mode)
/// before, as warren's are before its rounds.
pub(crate) async fn raw_publish(
    conn: &Connection,
    queue: &str,
    n: usize,
    inflight: usize,
    channels: usize,
) -> Duration {
    let next = Arc::new(AtomicUsize::new(0));
    let per_channel = inflight.div_ceil(channels).max(1);
    let mut opened = Vec::new();
    for _ in 0..channels {
        let ch = conn.create_channel().await.expect("channel");
        ch.confirm_select(ConfirmSelectOptions::default())
            .await
            .expect("confirm mode");
        opened.push(ch);
    }
    let t = Instant::now();
    let mut tasks = Vec::new();
    for ch in opened {
        let (next, queue) = (next.clone(), queue.to_owned());
        tasks.push(tokio::spawn(async move {
            let mut pending = FuturesUnordered::new();
            loop {
                while pending.len() < per_channel {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        break;
                    }
                    pending.push(publish_one(&ch, &queue, i).await);
                }
                match pending.next().await {
                    Some(c) => match c.expect("confirm") {
                        Confirmation::Ack(None) => {}
                        other => panic!("raw publish not confirmed: {other:?}"),
                    },
                    None => break,
                }
            }
            let done = t.elapsed();
            let _ = ch.close(200, "done".into()).await;
            done
        }));
    }
    let mut elapsed = Duration::ZERO;
    for task in tasks {
        elapsed = elapsed.max(task.await.expect("publisher task"));
    }
    elapsed
}

/// One timed round of the raw publisher (see [`raw_publish`]; `W` and channels from `p`):
/// `n` messages into `queue`, msg/s. The CPU it took is added to `cpu_all`.
pub(crate) async fn raw_publish_round(
    conn: &Connection,
    queue: &str,
    p: &Params,
    n: usize,
    cpu_all: &mut CpuTotals,
) -> f64 {
    let cpu = CpuMeter::start(None);
    let took = raw_publish(conn, queue, n, p.inflight, p.raw_channels).await;
    cpu.stop(cpu_all, n);
    n as f64 / took.as_secs_f64()
}

/// Consumes and acks (one `basic.ack` per message) `n` messages from `queue` with prefetch
/// `prefetch`.
pub(crate) async fn raw_consume(conn: &Connection, queue: &str, n: usize, prefetch: usize) {
    let ch = conn.create_channel().await.expect("channel");
    ch.basic_qos(
        u16::try_from(prefetch).unwrap_or(u16::MAX),
        BasicQosOptions::default(),
    )
    .await
    .expect("qos");
    let mut consumer = ch
        .basic_consume(
            queue.into(),
            "bench-raw".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("basic.consume");
    let mut got = 0;
    while got < n {
        let delivery = consumer
            .next()
            .await
            .expect("consumer open")
            .expect("delivery");
        delivery
            .acker
            .ack(BasicAckOptions::default())
            .await
            .expect("ack");
        got += 1;
    }
    let _ = ch.close(200, "done".into()).await;
}

/// Queue depth (ready messages), by a passive declare.
pub(crate) async fn depth(conn: &Connection, queue: &str) -> Option<u32> {
    let ch = conn.create_channel().await.ok()?;
    let r = ch
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .ok()
        .map(|q| q.message_count());
    let _ = ch.close(200, "depth".into()).await;
    r
}

/// Open loop: publishes `n` persistent, mandatory messages to `queue` on one channel in
/// confirm mode, message `i` at `i / rate` s by the clock (not by confirms), each confirm
/// awaited beside the later publishes; panics on a nack or a return. The pattern of a client
/// that publishes as events happen, at `rate` msg/s.
pub(crate) async fn raw_publish_paced(conn: &Connection, queue: &str, n: usize, rate: usize) {
    let ch = conn.create_channel().await.expect("channel");
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirm mode");
    let start = tokio::time::Instant::now();
    let every = Duration::from_secs_f64(1.0 / rate.max(1) as f64);
    let mut pending = FuturesUnordered::new();
    let mut i = 0;
    while i < n || !pending.is_empty() {
        let due = start + every.mul_f64(i as f64);
        tokio::select! {
            () = tokio::time::sleep_until(due), if i < n => {
                pending.push(publish_one(&ch, queue, i).await);
                i += 1;
            }
            Some(c) = pending.next(), if !pending.is_empty() => match c.expect("confirm") {
                Confirmation::Ack(None) => {}
                other => panic!("raw publish not confirmed: {other:?}"),
            },
        }
    }
    let _ = ch.close(200, "done".into()).await;
}
