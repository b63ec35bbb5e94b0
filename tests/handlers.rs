//! Each built-in handler takes a job from POST to `succeeded` on the real broker.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::HeaderMap;
use axum::routing::post;
use common::Setup;
use serde_json::json;

const SETTLE: Duration = Duration::from_secs(10);

#[tokio::test]
async fn noop_job_succeeds_and_its_message_is_gone() {
    let w = Setup::new()
        .queue("noop", "handler = \"noop\"")
        .start()
        .await;
    let id = w.submit("noop", json!({"n": 1})).await;
    let job = w.wait_status(&id, "succeeded", SETTLE).await;
    assert_eq!(job["attempts"], 1);
    assert_eq!(job["queue"], w.q("noop"));
    assert!(job["finished_at"].is_string());
    let raw = common::Raw::connect().await;
    assert_eq!(raw.depth(&w.q("noop")).await, Some(0));
    assert_eq!(raw.depth(&format!("{}.dlq", w.q("noop"))).await, Some(0));
    w.stop().await.expect("clean stop");
}

#[tokio::test]
async fn exec_job_runs_the_script_with_the_payload_and_keeps_stdout() {
    let script = common::repo().join("workers/examples/echo.sh");
    let w = Setup::new()
        .queue(
            "exec",
            &format!("handler = {{ exec = [\"{}\"] }}", script.display()),
        )
        .start()
        .await;
    let id = w
        .submit("exec", json!({"to": "ops@example.com", "n": [1, 2, 3]}))
        .await;
    let job = w.wait_status(&id, "succeeded", SETTLE).await;
    // echo.sh prints its stdin: the result is the payload itself.
    assert_eq!(
        job["result"],
        json!({"to": "ops@example.com", "n": [1, 2, 3]})
    );
    w.stop().await.expect("clean stop");
}

#[tokio::test]
async fn sample_report_script_writes_its_report() {
    let script = common::repo().join("workers/examples/report.sh");
    let w = Setup::new()
        .queue(
            "reports",
            &format!("handler = {{ exec = [\"{}\"] }}", script.display()),
        )
        .start()
        .await;
    let id = w.submit("reports", json!({"customer": 42})).await;
    let job = w.wait_status(&id, "succeeded", SETTLE).await;
    // The script runs in the config file's directory and reports where it wrote.
    let report = job["result"]["report"]
        .as_str()
        .expect("report path in result");
    let text = std::fs::read_to_string(w.dir().join(report)).expect("report file exists");
    assert!(text.contains(&id), "report names the job: {text}");
    assert!(
        text.contains(r#"{"customer":42}"#),
        "report holds the payload: {text}"
    );
    w.stop().await.expect("clean stop");
}

#[tokio::test]
async fn http_job_is_posted_to_the_webhook_with_warren_headers() {
    let seen: Arc<Mutex<Vec<(HeaderMap, String)>>> = Arc::default();
    let sink = {
        let seen = seen.clone();
        axum::Router::new().route(
            "/hook",
            post(move |headers: HeaderMap, body: String| {
                let seen = seen.clone();
                async move {
                    seen.lock().expect("lock").push((headers, body));
                    r#"{"delivered":true}"#
                }
            }),
        )
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, sink).await });

    let w = Setup::new()
        .queue(
            "hooks",
            &format!("handler = {{ http = \"http://{addr}/hook\" }}"),
        )
        .start()
        .await;
    let resp = w
        .http
        .post(format!("{}/v1/queues/{}/jobs", w.base, w.q("hooks")))
        .header("x-correlation-id", "order-7")
        .json(&json!({"payload": {"event": "paid"}}))
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status(), 202);
    let id = resp.json::<serde_json::Value>().await.expect("json")["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let job = w.wait_status(&id, "succeeded", SETTLE).await;
    assert_eq!(job["result"], json!({"delivered": true}));
    assert_eq!(job["correlation_id"], "order-7");

    let seen = std::mem::take(&mut *seen.lock().expect("lock"));
    assert_eq!(seen.len(), 1, "delivered exactly once");
    let (headers, body) = &seen[0];
    assert_eq!(body, r#"{"event":"paid"}"#);
    assert_eq!(headers["x-warren-job-id"], id.as_str());
    assert_eq!(headers["x-warren-attempt"], "1");
    assert_eq!(headers["x-correlation-id"], "order-7");
    assert_eq!(headers["idempotency-key"], id.as_str());
    w.stop().await.expect("clean stop");
}

#[tokio::test]
async fn in_process_rust_handler_sees_job_fields() {
    let seen: Arc<Mutex<Vec<warren::workers::Job>>> = Arc::default();
    let handler = {
        let seen = seen.clone();
        warren::workers::handler_fn(move |job| {
            let seen = seen.clone();
            async move {
                seen.lock().expect("lock").push(job);
                warren::workers::Outcome::success_with("\"done\"")
            }
        })
    };
    let w = Setup::new()
        .queue("rust", "handler = \"noop\"\nmax_attempts = 3")
        .handler("rust", handler)
        .start()
        .await;
    let id = w.submit("rust", json!([1, "two"])).await;
    let job = w.wait_status(&id, "succeeded", SETTLE).await;
    assert_eq!(job["result"], "done");
    let seen = std::mem::take(&mut *seen.lock().expect("lock"));
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].id, id);
    assert_eq!(seen[0].attempt, 1);
    assert_eq!(seen[0].max_attempts, 3);
    assert_eq!(&seen[0].payload[..], br#"[1,"two"]"#);
    w.stop().await.expect("clean stop");
}
