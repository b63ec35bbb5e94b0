//! Failed and malformed messages end in `{queue}.dlq`, carrying why (DESIGN guarantee 6),
//! and the worker keeps running.

mod common;

use std::time::Duration;

use common::{Raw, Setup};
use lapin::BasicProperties;
use serde_json::json;
use warren::message::{
    H_ATTEMPTS, H_FAILED_AT, H_LAST_ERROR, H_ORIGINAL_QUEUE, header_string, header_u32,
};
use warren::workers::{Outcome, handler_fn};

const SETTLE: Duration = Duration::from_secs(10);

#[tokio::test]
async fn permanent_failure_is_dead_with_its_message_in_the_dlq() {
    let w = Setup::new()
        .queue("pay", "handler = \"noop\"")
        .handler(
            "pay",
            handler_fn(|_job| async { Outcome::permanent("card declined") }),
        )
        .start()
        .await;
    let resp = w
        .http
        .post(format!("{}/v1/queues/{}/jobs", w.base, w.q("pay")))
        .header("x-correlation-id", "corr-9")
        .json(&json!({"payload": {"amount": 10}}))
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status(), 202);
    let id = resp.json::<serde_json::Value>().await.expect("json")["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let job = w.wait_status(&id, "dead", SETTLE).await;
    assert!(
        job["last_error"]
            .as_str()
            .expect("last_error")
            .contains("card declined"),
        "{job}"
    );

    let raw = Raw::connect().await;
    let dlq = format!("{}.dlq", w.q("pay"));
    let dead = raw
        .get_one(&dlq, SETTLE)
        .await
        .expect("a dead letter in the DLQ");
    let props = &dead.delivery.properties;
    // Body and properties are kept.
    assert_eq!(dead.delivery.data, br#"{"amount":10}"#);
    assert_eq!(
        props.message_id().as_ref().map(|m| m.as_str()),
        Some(id.as_str())
    );
    assert_eq!(
        props.correlation_id().as_ref().map(|m| m.as_str()),
        Some("corr-9")
    );
    assert_eq!(props.delivery_mode(), &Some(2));
    // And why it died.
    let h = props.headers().as_ref();
    assert_eq!(header_string(h, H_ORIGINAL_QUEUE), Some(w.q("pay")));
    assert_eq!(header_u32(h, H_ATTEMPTS), Some(1));
    assert!(
        header_string(h, H_LAST_ERROR)
            .expect("last error")
            .contains("card declined")
    );
    let failed_at = header_string(h, H_FAILED_AT).expect("failed-at");
    assert!(humantime::parse_rfc3339(&failed_at).is_ok(), "{failed_at}");
    // Nothing is left in the work queue.
    assert_eq!(raw.depth(&w.q("pay")).await, Some(0));
    w.stop().await.expect("clean stop");
}

#[tokio::test]
async fn panicking_handler_does_not_kill_the_worker() {
    let w = Setup::new()
        .queue("boom", "handler = \"noop\"\nmax_attempts = 1")
        .handler(
            "boom",
            handler_fn(|job| async move {
                if job.payload.as_ref() == b"\"panic\"" {
                    panic!("handler bug");
                }
                Outcome::success()
            }),
        )
        .start()
        .await;
    let bad = w.submit("boom", json!("panic")).await;
    let job = w.wait_status(&bad, "dead", SETTLE).await;
    assert!(
        job["last_error"]
            .as_str()
            .expect("error")
            .contains("panicked: handler bug"),
        "{job}"
    );
    let good = w.submit("boom", json!("fine")).await;
    w.wait_status(&good, "succeeded", SETTLE).await;
    w.stop().await.expect("clean stop");
}

#[tokio::test]
async fn timed_out_handler_fails_with_the_reason() {
    let w = Setup::new()
        .queue(
            "slow",
            "handler = \"noop\"\nmax_attempts = 1\ntimeout = \"200ms\"",
        )
        .handler("slow", handler_fn(|_job| std::future::pending::<Outcome>()))
        .start()
        .await;
    let id = w.submit("slow", json!({})).await;
    let job = w.wait_status(&id, "dead", SETTLE).await;
    assert!(
        job["last_error"]
            .as_str()
            .expect("error")
            .contains("timed out after 200 ms"),
        "{job}"
    );
    w.stop().await.expect("clean stop");
}

#[tokio::test]
async fn a_job_published_by_hand_with_an_id_runs_and_gets_a_status() {
    let w = Setup::new()
        .queue("hand", "handler = \"noop\"")
        .start()
        .await;
    let raw = Raw::connect().await;
    let id = uuid::Uuid::now_v7().to_string();
    raw.publish(
        &w.q("hand"),
        br#"{"by":"hand"}"#,
        BasicProperties::default().with_message_id(id.as_str().into()),
    )
    .await;
    w.wait_status(&id, "succeeded", SETTLE).await;
    w.stop().await.expect("clean stop");
}
