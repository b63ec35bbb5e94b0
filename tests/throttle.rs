//! A target that answers 429 with `Retry-After` holds the whole queue: no job of the queue
//! starts until the hold ends (not only the throttled job's retry), then every job runs; the
//! hold shows in `GET /v1/queues` and is counted once in `/metrics`.

mod common;

use std::time::Duration;

use axum::http::StatusCode;
use common::target::{Reply, Target};
use common::{Setup, wait_queue_entry};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_with_retry_after_stops_every_start_of_the_queue_for_that_long() {
    // The first request is refused with Retry-After: 2; every other one succeeds.
    let target = Target::start(|_, n| {
        if n == 0 {
            Reply {
                status: StatusCode::TOO_MANY_REQUESTS,
                retry_after: Some(2),
                hold: Duration::ZERO,
            }
        } else {
            Reply::ok(Duration::ZERO)
        }
    })
    .await;
    let w = Setup::new()
        .queue(
            "hook",
            &format!(
                "handler = {{ http = \"{}\" }}\nprefetch = 8\nconcurrency = 4\n\
                 backoff = {{ base = \"100ms\", max = \"10s\" }}",
                target.url()
            ),
        )
        .start()
        .await;
    let q = w.q("hook");
    let first = w.submit("hook", json!({ "n": 0 })).await;
    let refused = target.wait_calls(1, Duration::from_secs(15)).await[0].clone();
    // The hold is in force (the worker wrote it to the store after holding the queue
    // itself); jobs posted now wait for it, in the worker and the broker.
    let e = wait_queue_entry(&w, &q, |e| !e["held_until"].is_null()).await;
    assert!(e["held_until"].is_string(), "{e}");
    let mut later = Vec::new();
    for n in 1..=10 {
        later.push(w.submit("hook", json!({ "n": n })).await);
    }

    for id in later.iter().chain(std::iter::once(&first)) {
        w.wait_status(id, "succeeded", Duration::from_secs(30))
            .await;
    }
    let calls = target.wait_calls(12, Duration::from_secs(5)).await;
    let next = calls[1..]
        .iter()
        .map(|c| c.start - refused.start)
        .min()
        .unwrap_or_default();
    println!("throttle: first start after the 429 (Retry-After: 2) came {next:?} after it");
    for c in &calls[1..] {
        let after = c.start - refused.start;
        assert!(
            after >= Duration::from_secs(2),
            "job {} started {after:?} after the 429, inside its 2 s Retry-After",
            c.body
        );
    }
    assert_eq!(
        w.job(&first).await["attempts"],
        2,
        "the refused job ran again"
    );
    let metrics = reqwest::get(format!("{}/metrics", w.base))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("text");
    let line = metrics
        .lines()
        .find(|l| l.starts_with("warren_throttled_total") && l.contains(&format!("\"{q}\"")))
        .unwrap_or_else(|| panic!("warren_throttled_total for {q}:\n{metrics}"));
    assert!(line.ends_with(" 1"), "one hold, counted once: {line}");
    w.stop().await.expect("clean stop");
}
