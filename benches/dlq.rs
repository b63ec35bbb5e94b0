//! DLQ move rates: `warren dlq drain`, `requeue` and `replay` against a raw lapin baseline on
//! the same broker, same quorum queues, persistence and confirms, in the same run.
//!
//! ```text
//! cargo bench --bench dlq            # N = 50,000 dead letters per phase
//! BENCH_DLQ_N=20000 cargo bench --bench dlq
//! ```
//! Writes `target/bench/dlq.json` (or `BENCH_DLQ_OUT`). The target (issue 4): drain and
//! requeue ≥ 5,000 messages/s on the 2-core CI machine.

#[path = "support/broker.rs"]
mod broker;

use std::path::Path;
use std::time::Instant;

use futures::StreamExt as _;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use tokio_util::sync::CancellationToken;
use warren::config::EnvOverrides;
use warren::message::{H_ATTEMPTS, H_FAILED_AT, H_LAST_ERROR, H_ORIGINAL_QUEUE, long_value};
use warren::{App, Config};

use crate::broker::{amqp_url, unique};

const WINDOW: usize = 500;

/// Publishes `n` dead letters to `queue` (default exchange), `WINDOW` confirms in flight.
async fn preload(ch: &Channel, queue: &str, original: &str, n: usize) {
    let mut pending = Vec::with_capacity(WINDOW);
    for i in 0..n {
        let mut h = FieldTable::default();
        h.insert(H_ORIGINAL_QUEUE.into(), long_value(original));
        h.insert(H_ATTEMPTS.into(), AMQPValue::LongUInt(5));
        h.insert(H_LAST_ERROR.into(), long_value("exit status 1: bench"));
        h.insert(H_FAILED_AT.into(), long_value("2026-11-21T14:29:58.123Z"));
        let props = BasicProperties::default()
            .with_message_id(uuid::Uuid::now_v7().to_string().as_str().into())
            .with_content_type("application/json".into())
            .with_delivery_mode(2)
            .with_headers(h);
        let body = format!(r#"{{"order":{i},"amount":1999,"currency":"eur"}}"#);
        pending.push(
            ch.basic_publish(
                "".into(),
                queue.into(),
                BasicPublishOptions::default(),
                body.as_bytes(),
                props,
            )
            .await
            .expect("publish"),
        );
        if pending.len() == WINDOW {
            for c in pending.drain(..) {
                assert!(c.await.expect("confirm").is_ack());
            }
        }
    }
    for c in pending {
        assert!(c.await.expect("confirm").is_ack());
    }
}

async fn declare(ch: &Channel, name: &str) {
    let mut args = FieldTable::default();
    args.insert("x-queue-type".into(), long_value("quorum"));
    ch.queue_declare(
        name.into(),
        QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        },
        args,
    )
    .await
    .expect("declare");
}

/// Raw consume: prefetch WINDOW, one multiple-ack per window (what drain does, minus the file).
async fn raw_consume(conn: &Connection, queue: &str, n: usize) -> f64 {
    let ch = conn.create_channel().await.expect("channel");
    ch.basic_qos(WINDOW as u16, BasicQosOptions::default())
        .await
        .expect("qos");
    let mut consumer = ch
        .basic_consume(
            queue.into(),
            "raw".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("consume");
    let start = Instant::now();
    let mut got = 0;
    while got < n {
        let d = consumer.next().await.expect("open").expect("delivery");
        got += 1;
        if got % WINDOW == 0 || got == n {
            ch.basic_ack(d.delivery_tag, BasicAckOptions { multiple: true })
                .await
                .expect("ack");
        }
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    let _ = ch.close(200, "done".into()).await;
    rate
}

/// Raw move: consume from `from`, publish each to `to` with confirms (WINDOW in flight), ack
/// each after its confirm (what requeue does, minus the store).
async fn raw_move(conn: &Connection, from: &str, to: &str, n: usize) -> f64 {
    let ch = conn.create_channel().await.expect("channel");
    let out = conn.create_channel().await.expect("channel");
    out.confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirms");
    ch.basic_qos(WINDOW as u16, BasicQosOptions::default())
        .await
        .expect("qos");
    let mut consumer = ch
        .basic_consume(
            from.into(),
            "raw-move".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("consume");
    let start = Instant::now();
    let mut batch = Vec::with_capacity(WINDOW);
    let mut moved = 0;
    while moved < n {
        let d = consumer.next().await.expect("open").expect("delivery");
        let confirm = out
            .basic_publish(
                "".into(),
                to.into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..BasicPublishOptions::default()
                },
                &d.data,
                d.properties.clone(),
            )
            .await
            .expect("publish");
        batch.push((d, confirm));
        if batch.len() == WINDOW || moved + batch.len() == n {
            for (d, c) in batch.drain(..) {
                assert!(c.await.expect("confirm").is_ack());
                d.acker.ack(BasicAckOptions::default()).await.expect("ack");
                moved += 1;
            }
        }
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    let _ = ch.close(200, "done".into()).await;
    rate
}

fn row(name: &str, rate: f64, base: f64) {
    let ratio = rate / base;
    let verdict = if rate >= 5_000.0 { "PASS" } else { "FAIL" };
    println!(
        "{name:<10} {rate:>12.0} {base:>14.0} {ratio:>8.2} {:>10} {verdict:>6}",
        "≥ 5000/s"
    );
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::var("BENCH_DLQ_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50_000);
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let ok = std::process::Command::new(root.join("scripts/ensure-rabbitmq"))
        .status()
        .expect("run scripts/ensure-rabbitmq");
    assert!(
        ok.success(),
        "RabbitMQ is needed: scripts/ensure-rabbitmq failed"
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let q = unique("dlq");
    let raw_a = format!("{q}-raw-a");
    let raw_b = format!("{q}-raw-b");
    let config = Config::parse(
        &format!("[queues.{q}]\nhandler = \"noop\"\n"),
        &dir.path().join("queues.toml"),
        &EnvOverrides {
            amqp_url: Some(amqp_url()),
            bind: None,
            store_url: Some(format!(
                "sqlite://{}",
                dir.path().join("warren.db").display()
            )),
            ..EnvOverrides::default()
        },
    )
    .expect("config");
    let app = App::builder(config).build().await.expect("app");
    warren::topology::apply(app.broker(), app.config())
        .await
        .expect("topology");
    let conn = Connection::connect(&amqp_url(), ConnectionProperties::default())
        .await
        .expect("connect");
    let ch = conn.create_channel().await.expect("channel");
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirms");
    declare(&ch, &raw_a).await;
    declare(&ch, &raw_b).await;
    let dlq = format!("{q}.dlq");
    let stop = CancellationToken::new();

    println!("DLQ bench: {n} dead letters per phase, quorum queues, persistent, confirms");
    // Raw baselines.
    preload(&ch, &raw_a, &q, n).await;
    let raw_consume_rate = raw_consume(&conn, &raw_a, n).await;
    preload(&ch, &raw_a, &q, n).await;
    let raw_move_rate = raw_move(&conn, &raw_a, &raw_b, n).await;

    // warren.
    preload(&ch, &dlq, &q, n).await;
    let path = dir.path().join("drain.jsonl");
    let t = Instant::now();
    let drained = app
        .dlq()
        .drain(&q, &path, None, &(), &stop)
        .await
        .expect("drain");
    let drain_rate = drained.moved as f64 / t.elapsed().as_secs_f64();
    assert_eq!(drained.moved as usize, n);

    let t = Instant::now();
    let replayed = app
        .dlq()
        .replay(&path, None, false, &(), &stop)
        .await
        .expect("replay");
    let replay_rate = replayed.moved as f64 / t.elapsed().as_secs_f64();

    preload(&ch, &dlq, &q, n).await;
    let t = Instant::now();
    let requeued = app
        .dlq()
        .requeue(&q, &warren::dlq::Filter::default(), None, &(), &stop)
        .await
        .expect("requeue");
    let requeue_rate = requeued.moved as f64 / t.elapsed().as_secs_f64();
    assert_eq!(requeued.moved as usize, n);

    println!(
        "\n{:<10} {:>12} {:>14} {:>8} {:>10} {:>6}",
        "phase", "warren msg/s", "raw lapin msg/s", "ratio", "target", ""
    );
    row("drain", drain_rate, raw_consume_rate);
    row("requeue", requeue_rate, raw_move_rate);
    row("replay", replay_rate, raw_move_rate);

    let out = std::env::var("BENCH_DLQ_OUT")
        .unwrap_or_else(|_| root.join("target/bench/dlq.json").display().to_string());
    if let Some(parent) = Path::new(&out).parent() {
        std::fs::create_dir_all(parent).expect("mkdir");
    }
    let json = serde_json::json!({
        "n": n,
        "raw_consume_per_s": raw_consume_rate,
        "raw_move_per_s": raw_move_rate,
        "drain_per_s": drain_rate,
        "requeue_per_s": requeue_rate,
        "replay_per_s": replay_rate,
        "drain_ratio": drain_rate / raw_consume_rate,
        "requeue_ratio": requeue_rate / raw_move_rate,
        "replay_ratio": replay_rate / raw_move_rate,
    });
    std::fs::write(&out, serde_json::to_string_pretty(&json).expect("json")).expect("write");
    println!("\nwrote {out}");

    for name in [q.clone(), dlq, raw_a, raw_b] {
        let _ = ch
            .queue_delete(name.as_str().into(), QueueDeleteOptions::default())
            .await;
    }
}
