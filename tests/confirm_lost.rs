//! A publish whose confirm is lost: the broker took the message, but warren never heard so
//! and answered 503. The client's retry with the same `Idempotency-Key` must get that same
//! job, not a second one (DESIGN §2, guarantees 1 and 3; a charge made twice is the bug).

mod common;

use std::time::Duration;

use common::proxy::Proxy;
use common::{Raw, Setup, amqp_url};
use serde_json::json;
use warren::Role;

#[tokio::test]
async fn a_retry_after_a_lost_confirm_gets_the_same_job() {
    let proxy = Proxy::start(&amqp_url()).await;
    // Intake only: every published copy stays in the queue to be counted.
    let w = Setup::new()
        .queue("pay", "handler = \"noop\"")
        .role(Role::Intake)
        .amqp_url(proxy.url())
        .extra("[broker]\nconfirm_timeout = \"1s\"\n")
        .start()
        .await;
    w.wait_ready().await;
    let raw = Raw::connect().await;
    let url = format!("{}/v1/queues/{}/jobs", w.base, w.q("pay"));
    let post = |key: &str| {
        w.http
            .post(&url)
            .header("idempotency-key", key.to_owned())
            .json(&json!({"payload": {"amount": 1999, "currency": "eur"}}))
            .send()
    };
    // The publisher's channel is open before the broker's replies are held back.
    let warm = post("warm-up").await.expect("post");
    assert_eq!(warm.status(), 202);
    raw.wait_depth(&w.q("pay"), 1, Duration::from_secs(10))
        .await;

    proxy.hold_replies();
    let first = post("charge-order-77").await.expect("post");
    assert_eq!(first.status(), 503, "no confirm, no 202");
    proxy.release();
    // The broker had taken the message all the same.
    raw.wait_depth(&w.q("pay"), 2, Duration::from_secs(10))
        .await;

    // The client retries as told: 409 `request-in-progress` while the first request could
    // still be awaiting its confirm, each with `Retry-After`.
    let mut second = post("charge-order-77").await.expect("post");
    for _ in 0..5 {
        if second.status() != 409 {
            break;
        }
        let wait: u64 = second
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()?.parse().ok())
            .expect("409 with Retry-After");
        tokio::time::sleep(Duration::from_secs(wait)).await;
        second = post("charge-order-77").await.expect("post");
    }
    assert_eq!(second.status(), 202);
    assert_eq!(
        second
            .headers()
            .get("idempotent-replayed")
            .and_then(|v| v.to_str().ok()),
        Some("true"),
        "the retry answers the job of the first request"
    );
    let job: serde_json::Value = second.json().await.expect("json");
    let id = job["id"].as_str().expect("id").to_owned();
    raw.wait_depth(&w.q("pay"), 3, Duration::from_secs(10))
        .await;

    // Both copies of the charge carry one job id, which the worker's claim runs once.
    let mut ids = raw.take_all_ids(&w.q("pay")).await;
    ids.sort();
    let warm_id = ids
        .iter()
        .find(|m| **m != id)
        .cloned()
        .expect("the warm-up job");
    assert_eq!(
        ids.iter().filter(|m| **m == id).count(),
        2,
        "the retry republished the first request's job: {ids:?}"
    );
    assert!(ids.iter().all(|m| *m == id || *m == warm_id), "{ids:?}");
    assert_eq!(w.stored_jobs().await, 2, "one job per key in the store");
    w.stop().await.expect("clean stop");
}
