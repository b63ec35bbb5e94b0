//! `Idempotency-Key` (Stripe's semantics): the same request again returns the original job,
//! a different request with the key is refused, and concurrent duplicates make one job.

mod common;

use common::{Raw, Setup};
use serde_json::json;
use warren::Role;

#[tokio::test]
async fn twenty_concurrent_posts_with_one_key_make_one_job() {
    // Intake only: every published message stays in the queue to be counted.
    let w = Setup::new()
        .queue("pay", "handler = \"noop\"")
        .role(Role::Intake)
        .start()
        .await;
    let url = format!("{}/v1/queues/{}/jobs", w.base, w.q("pay"));
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(20));
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let (http, url, barrier) = (w.http.clone(), url.clone(), barrier.clone());
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            http.post(&url)
                .header("idempotency-key", "charge-order-77")
                .json(&json!({"payload": {"amount": 1999, "currency": "eur"}}))
                .send()
                .await
                .expect("post")
        }));
    }
    let mut ids = std::collections::BTreeSet::new();
    let mut replayed = 0;
    for t in tasks {
        let resp = t.await.expect("join");
        assert_eq!(resp.status(), 202);
        if resp
            .headers()
            .get("idempotent-replayed")
            .is_some_and(|v| v == "true")
        {
            replayed += 1;
        }
        ids.insert(
            resp.json::<serde_json::Value>().await.expect("json")["id"]
                .as_str()
                .expect("id")
                .to_owned(),
        );
    }
    assert_eq!(ids.len(), 1, "one job for one key: {ids:?}");
    assert_eq!(replayed, 19);
    assert_eq!(
        Raw::connect().await.depth(&w.q("pay")).await,
        Some(1),
        "one message published"
    );
    w.stop().await.expect("clean stop");
}

#[tokio::test]
async fn same_key_same_body_replays_and_a_different_body_is_422() {
    let w = Setup::new()
        .queue("pay", "handler = \"noop\"")
        .role(Role::Intake)
        .start()
        .await;
    let url = format!("{}/v1/queues/{}/jobs", w.base, w.q("pay"));
    let post = |body: &'static str| {
        w.http
            .post(&url)
            .header("idempotency-key", "k-1")
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let first = post(r#"{"payload": {"a": 1, "b": 2}}"#)
        .await
        .expect("post");
    assert_eq!(first.status(), 202);
    assert!(first.headers().get("idempotent-replayed").is_none());
    let id = first.json::<serde_json::Value>().await.expect("json")["id"].clone();

    // Same meaning, other spacing and key order: a replay.
    let again = post(r#"{ "payload": {"b": 2, "a": 1} }"#)
        .await
        .expect("post");
    assert_eq!(again.status(), 202);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(
        again.json::<serde_json::Value>().await.expect("json")["id"],
        id
    );

    let other = post(r#"{"payload": {"a": 2}}"#).await.expect("post");
    assert_eq!(other.status(), 422);
    assert_eq!(
        other.json::<serde_json::Value>().await.expect("json")["type"],
        "/problems/idempotency-key-reused"
    );

    // The key belongs to one queue only; without a key every POST is a new job.
    let plain = w.post("pay", &json!({"payload": {"a": 1, "b": 2}})).await;
    assert_ne!(
        plain.json::<serde_json::Value>().await.expect("json")["id"],
        id
    );
    assert_eq!(Raw::connect().await.depth(&w.q("pay")).await, Some(2));
    w.stop().await.expect("clean stop");
}
