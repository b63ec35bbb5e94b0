//! Bad input gets a clear RFC 7807 problem and changes nothing (DESIGN guarantee 8); a broker
//! that is down gets 503 with Retry-After, never 202 (guarantee 1).

mod common;

use common::{Raw, Setup};
use serde_json::Value;
use warren::Role;

async fn rows_in_store(dir: &std::path::Path) -> i64 {
    use sqlx::Connection as _;
    let url = format!("sqlite://{}", dir.join("warren.db").display());
    let mut conn = sqlx::SqliteConnection::connect(&url)
        .await
        .expect("open store");
    sqlx::query_scalar("SELECT COUNT(*) FROM jobs")
        .fetch_one(&mut conn)
        .await
        .expect("count")
}

/// (what, url, content type, body, extra header, expected status)
type Case<'a> = (
    &'a str,
    String,
    Option<&'a str>,
    String,
    Option<(&'a str, &'a str)>,
    u16,
);

#[tokio::test]
async fn bad_requests_get_problem_json_and_publish_nothing() {
    // Intake only: nothing consumes, so anything published would stay in the queue.
    let w = Setup::new()
        .queue("in", "handler = \"noop\"\nmax_payload_bytes = 100")
        .role(Role::Intake)
        .start()
        .await;
    let url = format!("{}/v1/queues/{}/jobs", w.base, w.q("in"));
    let big = format!(r#"{{"payload": "{}"}}"#, "x".repeat(200));
    let huge = format!(r#"{{"payload": "{}"}}"#, "x".repeat(1024 * 1024));
    let long_key = "k".repeat(300);
    let cases: Vec<Case<'_>> = vec![
        (
            "malformed JSON",
            url.clone(),
            Some("application/json"),
            r#"{"payload": "#.into(),
            None,
            400,
        ),
        (
            "missing payload",
            url.clone(),
            Some("application/json"),
            r#"{"data": 1}"#.into(),
            None,
            400,
        ),
        (
            "not an object",
            url.clone(),
            Some("application/json"),
            "[1,2]".into(),
            None,
            400,
        ),
        (
            "unknown field",
            url.clone(),
            Some("application/json"),
            r#"{"payload": 1, "priority": 9}"#.into(),
            None,
            400,
        ),
        (
            "max_attempts 0",
            url.clone(),
            Some("application/json"),
            r#"{"payload": 1, "max_attempts": 0}"#.into(),
            None,
            400,
        ),
        (
            "negative delay",
            url.clone(),
            Some("application/json"),
            r#"{"payload": 1, "delay_ms": -5}"#.into(),
            None,
            400,
        ),
        (
            "wrong content type",
            url.clone(),
            Some("text/plain"),
            r#"{"payload": 1}"#.into(),
            None,
            415,
        ),
        (
            "no content type",
            url.clone(),
            None,
            r#"{"payload": 1}"#.into(),
            None,
            415,
        ),
        (
            "payload past the queue limit",
            url.clone(),
            Some("application/json"),
            big,
            None,
            413,
        ),
        (
            "body far past the limit",
            url.clone(),
            Some("application/json"),
            huge,
            None,
            413,
        ),
        (
            "unknown queue",
            format!("{}/v1/queues/nope-{}/jobs", w.base, w.q("in")),
            Some("application/json"),
            r#"{"payload": 1}"#.into(),
            None,
            404,
        ),
        (
            "path trick",
            format!("{}/v1/queues/..%2f{}/jobs", w.base, w.q("in")),
            Some("application/json"),
            r#"{"payload": 1}"#.into(),
            None,
            404,
        ),
        (
            "idempotency key too long",
            url.clone(),
            Some("application/json"),
            r#"{"payload": 1}"#.into(),
            Some(("idempotency-key", long_key.as_str())),
            400,
        ),
    ];
    for (what, url, ct, body, header, status) in cases {
        let mut req = w.http.post(&url).body(body);
        if let Some(ct) = ct {
            req = req.header("content-type", ct);
        }
        if let Some((k, v)) = header {
            req = req.header(k, v);
        }
        let resp = req.send().await.expect("request");
        assert_eq!(resp.status().as_u16(), status, "{what}");
        assert_eq!(
            resp.headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok()),
            Some("application/problem+json"),
            "{what}"
        );
        let problem: Value = resp.json().await.expect("problem body is JSON");
        assert_eq!(problem["status"], status, "{what}: {problem}");
        assert!(
            problem["type"]
                .as_str()
                .is_some_and(|t| t.starts_with("/problems/")),
            "{what}: {problem}"
        );
        assert!(
            problem["title"].is_string() && problem["detail"].is_string(),
            "{what}: {problem}"
        );
    }

    // Nothing was published and nothing was stored.
    let raw = Raw::connect().await;
    assert_eq!(raw.depth(&w.q("in")).await, Some(0));
    assert_eq!(rows_in_store(w.dir()).await, 0);

    // And a good request still works.
    let ok = w.submit("in", serde_json::json!({"fine": true})).await;
    assert_eq!(w.job(&ok).await["status"], "queued");
    assert_eq!(raw.depth(&w.q("in")).await, Some(1));
    w.stop().await.expect("clean stop");
}

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
        rows_in_store(w.dir()).await,
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
