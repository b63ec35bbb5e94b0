//! An unknown job is a 404 problem; a broker that is down gets 503 with Retry-After, never
//! 202 (guarantee 1). The bad-input matrix is in bad_input.rs.

mod common;

use common::Setup;
use serde_json::Value;
use warren::Role;

#[tokio::test]
async fn unknown_job_is_404_problem() {
    let w = Setup::new()
        .queue("in", "handler = \"noop\"")
        .role(Role::Intake)
        .start()
        .await;
    for id in [uuid::Uuid::now_v7().to_string(), "not-a-uuid".to_owned()] {
        let resp = w
            .http
            .get(format!("{}/v1/jobs/{id}", w.base))
            .send()
            .await
            .expect("get");
        assert_eq!(resp.status(), 404);
        let p: Value = resp.json().await.expect("json");
        assert_eq!(p["type"], "/problems/unknown-job");
    }
    w.stop().await.expect("clean stop");
}

#[tokio::test]
async fn broker_unreachable_gets_503_with_retry_after_and_nothing_is_kept() {
    // A port nothing listens on: bind one, note it, close it.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let w = Setup::new()
        .queue("in", "handler = \"noop\"")
        .amqp_url(&format!("amqp://guest:hunter2@127.0.0.1:{port}/%2f"))
        .start()
        .await;
    let resp = w.post("in", &serde_json::json!({"payload": 1})).await;
    assert_eq!(resp.status(), 503);
    assert!(resp.headers().contains_key("retry-after"));
    let p: Value = resp.json().await.expect("json");
    assert_eq!(p["status"], 503);
    assert_eq!(
        w.stored_jobs().await,
        0,
        "a refused job leaves no status row"
    );

    let health = w
        .http
        .get(format!("{}/healthz", w.base))
        .send()
        .await
        .expect("healthz");
    assert_eq!(health.status(), 200);
    let ready = w
        .http
        .get(format!("{}/readyz", w.base))
        .send()
        .await
        .expect("readyz");
    assert_eq!(ready.status(), 503);
    let text = ready.text().await.expect("body");
    assert!(text.contains("\"store\":\"ok\""), "{text}");
    assert!(
        !text.contains("hunter2"),
        "credentials leak in /readyz: {text}"
    );
    w.stop().await.expect("clean stop");
}

#[tokio::test]
async fn store_unwritable_gets_503_and_nothing_is_published() {
    let w = Setup::new()
        .queue("in", "handler = \"noop\"")
        .role(warren::Role::Intake)
        .start()
        .await;
    let raw = common::Raw::connect().await;
    // The store goes away (SQLite: another process holds its write lock, and warren's insert
    // waits out its 5 s busy timeout; PostgreSQL: the server ends warren's sessions and
    // refuses new ones, as in a restart).
    let outage = w.store_down().await;
    let resp = w.post("in", &serde_json::json!({"payload": 1})).await;
    assert_eq!(resp.status(), 503);
    assert!(resp.headers().contains_key("retry-after"));
    let p: Value = resp.json().await.expect("json");
    assert!(
        p["detail"].as_str().is_some_and(|d| d.contains("store")),
        "{p}"
    );
    assert_eq!(raw.depth(&w.q("in")).await, Some(0), "nothing published");

    // Once the store is back the same request is accepted.
    outage.end().await;
    let resp = w.post("in", &serde_json::json!({"payload": 1})).await;
    assert_eq!(resp.status(), 202, "accepted once the store is back");
    assert_eq!(raw.depth(&w.q("in")).await, Some(1));
    assert_eq!(w.stored_jobs().await, 1, "only the accepted job is stored");
    w.stop().await.expect("clean stop");
}
