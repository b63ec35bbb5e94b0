//! Retries wait in the broker with full-jitter backoff; exhausted jobs are dead with why;
//! delayed jobs start on time; a completed job never runs again.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Raw, Setup};
use lapin::BasicProperties;
use serde_json::json;
use warren::message::{H_ATTEMPTS, H_LAST_ERROR, H_ORIGINAL_QUEUE, header_string, header_u32};
use warren::workers::{Job, Outcome, handler_fn};

/// Calls a handler saw: (job id, when).
type Calls = Arc<Mutex<Vec<(String, Instant)>>>;

fn recorder(
    calls: &Calls,
    outcome: impl Fn(u32) -> Outcome + Send + Sync + 'static,
) -> impl warren::workers::Handler {
    let calls = calls.clone();
    let outcome = Arc::new(outcome);
    handler_fn(move |job: Job| {
        let calls = calls.clone();
        let outcome = outcome.clone();
        async move {
            calls
                .lock()
                .expect("lock")
                .push((job.id.clone(), Instant::now()));
            outcome(job.attempt)
        }
    })
}

fn times(calls: &Calls, id: &str) -> Vec<Instant> {
    calls
        .lock()
        .expect("lock")
        .iter()
        .filter(|(i, _)| i == id)
        .map(|(_, t)| *t)
        .collect()
}

#[tokio::test]
async fn fails_twice_then_succeeds_with_waits_inside_the_backoff_bounds() {
    let calls = Calls::default();
    let w = Setup::new()
        .queue(
            "flaky",
            "handler = \"noop\"\nmax_attempts = 5\nbackoff = { base = \"1s\", max = \"2s\" }",
        )
        .handler(
            "flaky",
            recorder(&calls, |attempt| {
                if attempt < 3 {
                    Outcome::retry(format!("flake {attempt}"))
                } else {
                    Outcome::success()
                }
            }),
        )
        .start()
        .await;
    let id = w.submit("flaky", json!({"try": "hard"})).await;
    let job = w
        .wait_status(&id, "succeeded", Duration::from_secs(20))
        .await;
    assert_eq!(job["attempts"], 3, "{job}");
    let t = times(&calls, &id);
    assert_eq!(t.len(), 3);
    // Full jitter: wait n is within [0, min(max, base * 2^(n-1))], rounded up to whole seconds
    // by the delay levels, plus the broker's hops.
    let slack = Duration::from_millis(900);
    assert!(
        t[1] - t[0] <= Duration::from_secs(1) + slack,
        "first wait {:?}",
        t[1] - t[0]
    );
    assert!(
        t[2] - t[1] <= Duration::from_secs(2) + slack,
        "second wait {:?}",
        t[2] - t[1]
    );
    let raw = Raw::connect().await;
    assert_eq!(raw.depth(&format!("{}.dlq", w.q("flaky"))).await, Some(0));
    w.stop().await.expect("clean stop");
}

#[tokio::test]
async fn a_waiting_retry_shows_retrying_with_its_error_and_due_time() {
    let calls = Calls::default();
    let w = Setup::new()
        .queue(
            "later",
            "handler = \"noop\"\nbackoff = { base = \"1s\", max = \"5s\" }",
        )
        .handler(
            "later",
            recorder(&calls, |attempt| {
                if attempt == 1 {
                    Outcome::Retry {
                        error: "busy downstream".into(),
                        retry_after: Some(Duration::from_secs(2)),
                    }
                } else {
                    Outcome::success()
                }
            }),
        )
        .start()
        .await;
    let id = w.submit("later", json!(1)).await;
    let job = w
        .wait_status(&id, "retrying", Duration::from_secs(10))
        .await;
    assert_eq!(job["last_error"], "busy downstream");
    assert_eq!(job["attempts"], 1);
    let due = humantime::parse_rfc3339(job["next_attempt_at"].as_str().expect("next_attempt_at"))
        .expect("rfc3339");
    assert!(
        due > std::time::SystemTime::now(),
        "due in the future: {job}"
    );
    let job = w
        .wait_status(&id, "succeeded", Duration::from_secs(10))
        .await;
    assert_eq!(job["attempts"], 2);
    let t = times(&calls, &id);
    assert!(
        t[1] - t[0] >= Duration::from_secs(2),
        "Retry-After is honoured: {:?}",
        t[1] - t[0]
    );
    w.stop().await.expect("clean stop");
}

#[tokio::test]
async fn exhausted_attempts_are_dead_with_the_dead_letter_headers() {
    let calls = Calls::default();
    let w = Setup::new()
        .queue(
            "doomed",
            "handler = \"noop\"\nmax_attempts = 2\nbackoff = { base = \"1s\", max = \"1s\" }",
        )
        .handler(
            "doomed",
            recorder(&calls, |attempt| {
                Outcome::retry(format!("upstream 503 on try {attempt}"))
            }),
        )
        .start()
        .await;
    let id = w.submit("doomed", json!({"order": 5})).await;
    let job = w.wait_status(&id, "dead", Duration::from_secs(15)).await;
    assert_eq!(job["attempts"], 2);
    assert!(
        job["last_error"]
            .as_str()
            .expect("error")
            .contains("upstream 503 on try 2"),
        "{job}"
    );
    let raw = Raw::connect().await;
    let dead = raw
        .get_one(&format!("{}.dlq", w.q("doomed")), Duration::from_secs(5))
        .await
        .expect("dead letter");
    let h = dead.delivery.properties.headers().as_ref();
    assert_eq!(header_u32(h, H_ATTEMPTS), Some(2));
    assert_eq!(header_string(h, H_ORIGINAL_QUEUE), Some(w.q("doomed")));
    assert!(
        header_string(h, H_LAST_ERROR)
            .expect("error")
            .contains("try 2")
    );
    assert_eq!(dead.delivery.data, br#"{"order":5}"#);
    assert!(
        !h.expect("headers").inner().contains_key("x-death"),
        "the delay levels' history is not carried into the dead letter: {h:?}"
    );
    assert_eq!(times(&calls, &id).len(), 2);
    w.stop().await.expect("clean stop");
}

#[tokio::test]
async fn delayed_job_starts_after_its_delay_and_not_much_later() {
    let calls = Calls::default();
    let w = Setup::new()
        .queue("timer", "handler = \"noop\"")
        .handler("timer", recorder(&calls, |_| Outcome::success()))
        .start()
        .await;
    let posted = Instant::now();
    let resp = w
        .post(
            "timer",
            &json!({"payload": {"remind": "me"}, "delay_ms": 3000}),
        )
        .await;
    assert_eq!(resp.status(), 202);
    let body: serde_json::Value = resp.json().await.expect("json");
    assert_eq!(body["status"], "queued");
    assert!(body["next_attempt_at"].is_string(), "{body}");
    let id = body["id"].as_str().expect("id").to_owned();
    w.wait_status(&id, "succeeded", Duration::from_secs(10))
        .await;
    let started = times(&calls, &id)[0] - posted;
    assert!(
        started >= Duration::from_secs(3),
        "started too early: {started:?}"
    );
    assert!(
        started <= Duration::from_secs(4),
        "started too late: {started:?}"
    );
    w.stop().await.expect("clean stop");
}

#[tokio::test]
async fn a_duplicate_of_a_succeeded_job_is_acked_not_run() {
    let calls = Calls::default();
    // One delivery at a time, so the sentinel is handled after the duplicate.
    let w = Setup::new()
        .queue("once", "handler = \"noop\"\nprefetch = 1\nconcurrency = 1")
        .handler("once", recorder(&calls, |_| Outcome::success()))
        .start()
        .await;
    let id = w.submit("once", json!({"charge": 100})).await;
    w.wait_status(&id, "succeeded", Duration::from_secs(10))
        .await;

    // The same message again, straight into the work queue (a duplicate publish).
    let raw = Raw::connect().await;
    raw.publish(
        &w.q("once"),
        br#"{"charge":100}"#,
        BasicProperties::default().with_message_id(id.as_str().into()),
    )
    .await;
    let sentinel = w.submit("once", json!("after")).await;
    w.wait_status(&sentinel, "succeeded", Duration::from_secs(10))
        .await;
    assert_eq!(times(&calls, &id).len(), 1, "the handler ran the job once");
    assert_eq!(
        raw.depth(&w.q("once")).await,
        Some(0),
        "the duplicate was acked"
    );
    assert_eq!(w.job(&id).await["attempts"], 1);
    w.stop().await.expect("clean stop");
}

#[tokio::test]
async fn a_cancelled_job_is_skipped_when_its_message_arrives() {
    let calls = Calls::default();
    let w = Setup::new()
        .queue(
            "cancel",
            "handler = \"noop\"\nprefetch = 1\nconcurrency = 1",
        )
        .handler("cancel", recorder(&calls, |_| Outcome::success()))
        .start()
        .await;
    let resp = w
        .post("cancel", &json!({"payload": "doomed", "delay_ms": 1000}))
        .await;
    let id = resp.json::<serde_json::Value>().await.expect("json")["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let del = w
        .http
        .post(format!("{}/v1/jobs/{id}/cancel", w.base))
        .send()
        .await
        .expect("cancel");
    assert_eq!(del.status(), 200);
    assert_eq!(
        del.json::<serde_json::Value>().await.expect("json")["status"],
        "cancelled"
    );

    // A later job proves the cancelled one's message came and went.
    let resp = w
        .post("cancel", &json!({"payload": "after", "delay_ms": 2000}))
        .await;
    let after = resp.json::<serde_json::Value>().await.expect("json")["id"]
        .as_str()
        .expect("id")
        .to_owned();
    w.wait_status(&after, "succeeded", Duration::from_secs(10))
        .await;
    assert!(times(&calls, &id).is_empty(), "a cancelled job never runs");
    assert_eq!(w.job(&id).await["status"], "cancelled");

    // Finished jobs cannot be cancelled; unknown ones are 404.
    let del = w
        .http
        .post(format!("{}/v1/jobs/{after}/cancel", w.base))
        .send()
        .await
        .expect("cancel");
    assert_eq!(del.status(), 409);
    let del = w
        .http
        .post(format!(
            "{}/v1/jobs/{}/cancel",
            w.base,
            uuid::Uuid::now_v7()
        ))
        .send()
        .await
        .expect("cancel");
    assert_eq!(del.status(), 404);
    w.stop().await.expect("clean stop");
}

#[tokio::test]
async fn delay_past_the_longest_supported_is_refused() {
    let w = Setup::new()
        .queue("q", "handler = \"noop\"")
        .role(warren::Role::Intake)
        .start()
        .await;
    let resp = w
        .post("q", &json!({"payload": 1, "delay_ms": 2_000_000_000_u64}))
        .await;
    assert_eq!(resp.status(), 400);
    // Seven days is fine.
    let resp = w
        .post("q", &json!({"payload": 1, "delay_ms": 7 * 86_400_000_u64}))
        .await;
    assert_eq!(resp.status(), 202);
    w.stop().await.expect("clean stop");
}
