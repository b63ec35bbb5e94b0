//! A queue's `rate_limit` holds across every worker process: with `per_second = 20` and
//! `burst = 5`, 400 jobs served by two processes start at 20 per second (the mean within
//! ±5 %) and no one-second window sees more than 25 starts; the limit and the bucket show in
//! `GET /v1/queues`, the waiting in `/metrics`. Bad settings are config errors naming the key
//! and its line.

mod common;

use std::time::{Duration, Instant};

use common::process::{Children, free_port, spawn_warren, wait_ready};
use common::target::{Reply, Target};
use common::{QueueCleanup, Raw, TestStore, unique};
use serde_json::{Value, json};

const RATE: f64 = 20.0;
const BURST: usize = 5;
const JOBS: usize = 400;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_share_one_token_bucket() {
    let target = Target::start(|_, _| Reply::ok(Duration::ZERO)).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let dir = dir.path();
    let q = unique("rate");
    let _cleanup = QueueCleanup(vec![q.clone(), format!("{q}.dlq")]);
    std::fs::write(
        dir.join("queues.toml"),
        format!(
            "[queues.\"{q}\"]\nhandler = {{ http = \"{}\" }}\nprefetch = 8\n\
             rate_limit = {{ per_second = {RATE}, burst = {BURST} }}\n",
            target.url()
        ),
    )
    .expect("config");
    let store = TestStore::new(dir).await;
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let a = spawn_warren(dir, store.url(), &["run"], port, "a.log", &[]).id();
    let b = spawn_warren(dir, store.url(), &["work"], free_port(), "b.log", &[]).id();
    let _children = Children(vec![a, b]);
    wait_ready(&base, dir, "a.log").await;
    let raw = Raw::connect().await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while raw.consumers(&q).await != Some(2) {
        assert!(Instant::now() < deadline, "two consumers on {q}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // All 400 at once: the backlog is there, only the bucket paces the starts.
    let http = reqwest::Client::new();
    let jobs: Vec<Value> = (0..JOBS)
        .map(|n| json!({ "payload": { "n": n } }))
        .collect();
    common::post_batch(&http, &base, &q, jobs).await;

    // While it drains: the limit and the bucket in the overview.
    let (entry, _) = common::queue_entry_at(&http, &base, &q).await;
    assert_eq!(entry["rate_limit"]["per_second"], RATE, "{entry}");
    assert_eq!(entry["rate_limit"]["burst"], BURST, "{entry}");
    let tokens = entry["rate_limit"]["tokens"].as_f64().expect("tokens");
    assert!((0.0..=BURST as f64).contains(&tokens), "{entry}");

    let calls = target.wait_calls(JOBS, Duration::from_secs(60)).await;
    let starts: Vec<Instant> = calls.iter().map(|c| c.start).collect();
    let first = starts[0];
    let ms: Vec<u128> = starts.iter().map(|s| (*s - first).as_millis()).collect();
    // No window of one second, wherever it begins, holds more than R + B starts.
    for (i, from) in ms.iter().enumerate() {
        let within = ms[i..].iter().take_while(|t| **t < from + 1_000).count();
        assert!(
            within <= RATE as usize + BURST,
            "{within} starts in the second from {from} ms: {ms:?}"
        );
    }
    // After the burst, the starts follow the rate: mean within ±5 %.
    let span = (starts[JOBS - 1] - starts[BURST]).as_secs_f64();
    let mean = (JOBS - 1 - BURST) as f64 / span;
    assert!(
        (RATE * 0.95..=RATE * 1.05).contains(&mean),
        "mean {mean:.2} starts/s over {span:.2} s"
    );
    let busiest = ms
        .iter()
        .enumerate()
        .map(|(i, from)| ms[i..].iter().take_while(|t| **t < from + 1_000).count())
        .max()
        .unwrap_or(0);
    println!(
        "rate limit: {JOBS} starts through two processes, mean {mean:.2}/s after the burst, \
         busiest second {busiest} starts (limit {})",
        RATE as usize + BURST
    );
    let metrics = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("text");
    let waited = metrics
        .lines()
        .find(|l| {
            l.starts_with("warren_rate_limited_seconds_total") && l.contains(&format!("\"{q}\""))
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("warren_rate_limited_seconds_total for {q}:\n{metrics}"));
    assert!(waited >= 1.0, "process a waited for tokens: {waited}");
}

#[test]
fn bad_rate_limits_are_config_errors_naming_key_and_line() {
    for (table, key) in [
        ("rate_limit = { per_second = 0 }", "rate_limit.per_second"),
        (
            "rate_limit = { per_second = -2.5 }",
            "rate_limit.per_second",
        ),
        (
            "rate_limit = { per_second = 10, burst = -1 }",
            "rate_limit.burst",
        ),
        ("rate_limit = { per_seconds = 10 }", "per_seconds"),
        ("concurrency_key = \"customer_id\"", "concurrency_key"),
        ("concurrency_key = \"/a~2\"", "concurrency_key"),
        ("concurrency_per_key = 0", "concurrency_per_key"),
    ] {
        let text = format!("[queues.q]\nhandler = \"noop\"\n{table}\n");
        let err = warren::Config::parse(
            &text,
            std::path::Path::new("queues.toml"),
            &warren::config::EnvOverrides::default(),
        )
        .expect_err(table)
        .to_string();
        assert!(err.contains("line 3"), "{table}: {err}");
        assert!(err.contains(key), "{table}: {err}");
    }
}
