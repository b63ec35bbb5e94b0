//! `POST /v1/queues/{queue}/jobs/batch`: one result per item, each item under the single
//! POST's rules (idempotency keys, the queue's payload limit, no 202 without its confirm:
//! guarantee 1); an item that breaks the document's schema refuses the whole batch, and bad
//! input changes nothing (guarantee 8).

mod common;

use common::{Raw, Setup};
use serde_json::{Value, json};
use warren::Role;

async fn post_batch(w: &common::TestWarren, alias: &str, body: &Value) -> reqwest::Response {
    w.http
        .post(format!("{}/v1/queues/{}/jobs/batch", w.base, w.q(alias)))
        .json(body)
        .send()
        .await
        .expect("POST reaches the intake")
}

#[tokio::test]
async fn a_mixed_batch_gets_one_result_per_item_and_publishes_only_the_valid_ones() {
    // Intake only: nothing consumes, so the queue's depth is what was published.
    let w = Setup::new()
        .queue("in", "handler = \"noop\"\nmax_payload_bytes = 100")
        .role(Role::Intake)
        .start()
        .await;
    let body = json!({ "jobs": [
        { "payload": { "n": 1 } },
        { "payload": "x".repeat(200) },
        { "payload": 3, "max_attempts": 30.0 },
        { "payload": 4, "max_attempts": 101.5 },
    ]});
    // An item that breaks the document's BatchItem schema refuses the whole batch, naming
    // the item; nothing is accepted.
    let resp = post_batch(&w, "in", &body).await;
    assert_eq!(resp.status(), 400);
    assert_eq!(resp.headers()["content-type"], "application/problem+json");
    let p: Value = resp.json().await.expect("json");
    assert!(
        p["detail"]
            .as_str()
            .is_some_and(|d| d.starts_with("jobs[3]:") && d.contains("max_attempts")),
        "{p}"
    );
    for bad in [
        json!({ "data": 4 }),
        json!({ "payload": 3, "max_attempts": 0 }),
        json!({ "payload": 8, "max_attempts": 101 }),
        json!({ "payload": 8, "idempotency_key": "" }),
    ] {
        let resp = post_batch(&w, "in", &json!({ "jobs": [{ "payload": 1 }, bad] })).await;
        assert_eq!(resp.status(), 400, "{bad}");
        let p: Value = resp.json().await.expect("json");
        assert!(
            p["detail"]
                .as_str()
                .is_some_and(|d| d.starts_with("jobs[1]:")),
            "{p}"
        );
    }
    assert_eq!(w.stored_jobs().await, 0, "a refused batch stores nothing");

    // What the schema cannot say is each item's own result.
    let body = json!({ "jobs": [
        { "payload": { "n": 1 } },
        { "payload": "x".repeat(200) },
        { "payload": 3, "max_attempts": 30.0 },
        { "payload": 4, "delay_ms": 0.0 },
        { "payload": { "n": 5 }, "idempotency_key": "k-5", "delay_ms": 0 },
        { "payload": { "n": 5 }, "idempotency_key": "k-5", "delay_ms": 0 },
        { "payload": { "n": 7 }, "idempotency_key": "k-5", "delay_ms": 0 },
        { "payload": 8, "max_attempts": 100 },
        { "payload": [9] },
    ]});
    let resp = post_batch(&w, "in", &body).await;
    assert_eq!(resp.status(), 200);
    let answer: Value = resp.json().await.expect("json");
    let results = answer["results"].as_array().expect("results");
    let statuses: Vec<u64> = results
        .iter()
        .map(|r| r["status"].as_u64().expect("status"))
        .collect();
    assert_eq!(statuses, [202, 413, 202, 202, 202, 202, 422, 202, 202]);
    assert_eq!(results[1]["problem"]["type"], "/problems/payload-too-large");
    assert_eq!(
        results[2]["job"]["max_attempts"], 30,
        "30.0 is the integer 30"
    );
    assert_eq!(
        results[6]["problem"]["type"],
        "/problems/idempotency-key-reused"
    );
    // The repeated key replays the first job with that key.
    assert_eq!(results[5]["job"]["id"], results[4]["job"]["id"]);
    assert_eq!(results[5]["replayed"], true);
    assert!(results[4].get("replayed").is_none());

    for i in [0, 2, 3, 4, 7, 8] {
        let job = &results[i]["job"];
        assert_eq!(job["status"], "queued");
        let id = job["id"].as_str().expect("id");
        assert_eq!(w.job(id).await["status"], "queued");
    }
    let raw = Raw::connect().await;
    assert_eq!(
        raw.depth(&w.q("in")).await,
        Some(6),
        "only the accepted jobs"
    );
    assert_eq!(w.stored_jobs().await, 6);

    // The keyed job is on the broker with its key; a single POST with that key replays it.
    let single = w
        .http
        .post(format!("{}/v1/queues/{}/jobs", w.base, w.q("in")))
        .header("idempotency-key", "k-5")
        .json(&json!({ "payload": { "n": 5 }, "delay_ms": 0 }))
        .send()
        .await
        .expect("POST");
    assert_eq!(single.status(), 202);
    assert_eq!(single.headers()["idempotent-replayed"], "true");
    let job: Value = single.json().await.expect("json");
    assert_eq!(job["id"], results[4]["job"]["id"]);
    w.stop().await.expect("clean stop");
}

#[tokio::test]
async fn oversized_and_empty_batches_are_refused_whole() {
    let w = Setup::new()
        .queue("in", "handler = \"noop\"")
        .role(Role::Intake)
        .start()
        .await;
    let jobs: Vec<Value> = (0..1001).map(|i| json!({ "payload": i })).collect();
    let resp = post_batch(&w, "in", &json!({ "jobs": jobs })).await;
    assert_eq!(resp.status(), 413);
    assert_eq!(resp.headers()["content-type"], "application/problem+json");
    let p: Value = resp.json().await.expect("json");
    assert_eq!(p["type"], "/problems/batch-too-large");

    for (body, status) in [
        (json!({ "jobs": [] }), 400),
        (json!({ "jobs": 1 }), 400),
        (json!({ "job": [{ "payload": 1 }] }), 400),
    ] {
        let resp = post_batch(&w, "in", &body).await;
        assert_eq!(resp.status(), status, "{body}");
    }
    let unknown = w
        .http
        .post(format!("{}/v1/queues/nope/jobs/batch", w.base))
        .json(&json!({ "jobs": [{ "payload": 1 }] }))
        .send()
        .await
        .expect("POST");
    assert_eq!(unknown.status(), 404);

    let raw = Raw::connect().await;
    assert_eq!(raw.depth(&w.q("in")).await, Some(0), "nothing published");
    assert_eq!(w.stored_jobs().await, 0);

    // Exactly the limit is fine.
    let jobs: Vec<Value> = (0..1000).map(|i| json!({ "payload": i })).collect();
    let resp = post_batch(&w, "in", &json!({ "jobs": jobs })).await;
    assert_eq!(resp.status(), 200);
    let answer: Value = resp.json().await.expect("json");
    let results = answer["results"].as_array().expect("results");
    assert_eq!(results.len(), 1000);
    assert!(results.iter().all(|r| r["status"] == 202));
    let ids: Vec<&str> = results
        .iter()
        .map(|r| r["job"]["id"].as_str().expect("id"))
        .collect();
    assert_eq!(
        ids.iter().collect::<std::collections::HashSet<_>>().len(),
        1000
    );
    assert_eq!(raw.depth(&w.q("in")).await, Some(1000));
    w.stop().await.expect("clean stop");
}

#[tokio::test]
async fn broker_down_refuses_every_item_with_503_and_keeps_nothing() {
    // A port nothing listens on: bind one, note it, close it.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let w = Setup::new()
        .queue("in", "handler = \"noop\"")
        .amqp_url(&format!("amqp://guest:guest@127.0.0.1:{port}/%2f"))
        .role(Role::Intake)
        .start()
        .await;
    let body = json!({ "jobs": [
        { "payload": 1 },
        { "payload": 2, "idempotency_key": "a" },
        { "payload": 3, "delay_ms": 5000 },
    ]});
    let resp = post_batch(&w, "in", &body).await;
    assert_eq!(resp.status(), 200);
    let answer: Value = resp.json().await.expect("json");
    let results = answer["results"].as_array().expect("results");
    assert_eq!(results.len(), 3);
    for r in results {
        assert_eq!(r["status"], 503, "{r}");
        assert_eq!(r["problem"]["type"], "/problems/unavailable");
        assert!(r.get("job").is_none());
    }
    assert_eq!(w.stored_jobs().await, 0, "refused jobs leave no status row");
    w.stop().await.expect("clean stop");
}
