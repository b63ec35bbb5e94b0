//! Bad input gets the documented error and changes nothing (DESIGN guarantee 8): a matrix of
//! HTTP requests (one row per input), a matrix of messages published by hand to a work
//! queue, and a property-based fuzz of the intake.

mod common;

use std::time::Duration;

use common::{Raw, Setup, TestWarren};
use lapin::BasicProperties;
use proptest::prelude::*;
use serde_json::{Value, json};
use warren::Role;
use warren::message::{H_LAST_ERROR, header_string};

/// One HTTP row: what it is, path after the base URL, content type, body, extra headers and
/// the status it must get.
struct Row {
    what: &'static str,
    path: String,
    content_type: Option<&'static str>,
    body: Vec<u8>,
    headers: Vec<(&'static str, Vec<u8>)>,
    status: u16,
}

fn row(what: &'static str, path: &str, body: impl Into<Vec<u8>>, status: u16) -> Row {
    Row {
        what,
        path: path.to_owned(),
        content_type: Some("application/json"),
        body: body.into(),
        headers: Vec::new(),
        status,
    }
}

/// Asserts `resp` is an RFC 7807 problem with `status`.
async fn assert_problem(resp: reqwest::Response, status: u16, what: &str) {
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
            .is_some_and(|t| t.starts_with("/problems/"))
            && problem["title"].is_string()
            && problem["detail"].is_string(),
        "{what}: {problem}"
    );
}

#[tokio::test]
async fn every_bad_request_gets_its_problem_and_changes_nothing() {
    // Intake only: nothing consumes, so anything published would stay in the queue.
    let w = Setup::new()
        .queue("in", "handler = \"noop\"\nmax_payload_bytes = 100")
        .role(Role::Intake)
        .start()
        .await;
    let raw = Raw::connect().await;
    let q = w.q("in");
    let existing = w.submit("in", json!({"before": true})).await;
    let before = w.job(&existing).await;

    let jobs = format!("/v1/queues/{q}/jobs");
    let job = format!("/v1/jobs/{existing}");
    let mut rows = vec![
        row("malformed JSON", &jobs, r#"{"payload": "#, 400),
        row("truncated JSON", &jobs, r#"{"payload": {"a": [1, 2"#, 400),
        row("empty body", &jobs, "", 400),
        row("missing payload", &jobs, r#"{"data": 1}"#, 400),
        row("not an object", &jobs, "[1,2]", 400),
        row(
            "unknown field",
            &jobs,
            r#"{"payload": 1, "priority": 9}"#,
            400,
        ),
        row(
            "non-UTF-8 body",
            &jobs,
            b"{\"payload\": \"\xff\xfe\"}".to_vec(),
            400,
        ),
        row(
            "max_attempts 0",
            &jobs,
            r#"{"payload": 1, "max_attempts": 0}"#,
            400,
        ),
        row(
            "max_attempts huge",
            &jobs,
            r#"{"payload": 1, "max_attempts": 1000000}"#,
            400,
        ),
        row(
            "negative delay_ms",
            &jobs,
            r#"{"payload": 1, "delay_ms": -5}"#,
            400,
        ),
        row(
            "enormous delay_ms",
            &jobs,
            r#"{"payload": 1, "delay_ms": 99999999999999}"#,
            400,
        ),
        row(
            "delay_ms past u64",
            &jobs,
            r#"{"payload": 1, "delay_ms": 1e30}"#,
            400,
        ),
        row(
            "delay_ms a string",
            &jobs,
            r#"{"payload": 1, "delay_ms": "5s"}"#,
            400,
        ),
        row(
            "payload past the queue limit",
            &jobs,
            format!(r#"{{"payload": "{}"}}"#, "x".repeat(200)),
            413,
        ),
        row(
            "body far past the limit",
            &jobs,
            format!(r#"{{"payload": "{}"}}"#, "x".repeat(4 << 20)),
            413,
        ),
        row(
            "unknown queue",
            &format!("/v1/queues/nope-{q}/jobs"),
            r#"{"payload": 1}"#,
            404,
        ),
        row(
            "path trick ..%2f",
            &format!("/v1/queues/..%2f{q}/jobs"),
            r#"{"payload": 1}"#,
            404,
        ),
        row(
            "path trick %2e%2e",
            &format!("/v1/queues/%2e%2e/{q}/jobs"),
            r#"{"payload": 1}"#,
            404,
        ),
        row(
            "queue name with a NUL",
            &format!("/v1/queues/{q}%00/jobs"),
            r#"{"payload": 1}"#,
            404,
        ),
        row(
            "job id not a UUID",
            "/v1/jobs/..%2f..%2fetc%2fpasswd",
            "",
            404,
        ),
        row(
            "batch of nothing",
            &format!("{jobs}/batch"),
            r#"{"jobs": []}"#,
            400,
        ),
        row(
            "batch not a list",
            &format!("{jobs}/batch"),
            r#"{"jobs": {"payload": 1}}"#,
            400,
        ),
    ];
    let mut wrong_ct = row("wrong content type", &jobs, r#"{"payload": 1}"#, 415);
    wrong_ct.content_type = Some("text/plain");
    let mut no_ct = row("no content type", &jobs, r#"{"payload": 1}"#, 415);
    no_ct.content_type = None;
    let mut form = row("form content type", &jobs, "payload=1", 415);
    form.content_type = Some("application/x-www-form-urlencoded");
    let mut long_key = row(
        "Idempotency-Key of 300 bytes",
        &jobs,
        r#"{"payload": 1}"#,
        400,
    );
    long_key.headers.push(("idempotency-key", vec![b'k'; 300]));
    let mut bin_key = row("Idempotency-Key not UTF-8", &jobs, r#"{"payload": 1}"#, 400);
    bin_key
        .headers
        .push(("idempotency-key", b"key-\xff\xfe".to_vec()));
    let mut long_corr = row(
        "X-Correlation-ID of 10 KiB",
        &jobs,
        r#"{"payload": 1}"#,
        400,
    );
    long_corr
        .headers
        .push(("x-correlation-id", vec![b'c'; 10 * 1024]));
    rows.extend([wrong_ct, no_ct, form, long_key, bin_key, long_corr]);

    for r in rows {
        let mut req = w.http.post(format!("{}{}", w.base, r.path)).body(r.body);
        if r.path.starts_with("/v1/jobs/") {
            req = w.http.get(format!("{}{}", w.base, r.path));
        }
        if let Some(ct) = r.content_type {
            req = req.header("content-type", ct);
        }
        for (k, v) in r.headers {
            req = req.header(
                k,
                reqwest::header::HeaderValue::from_bytes(&v).expect("header bytes"),
            );
        }
        assert_problem(req.send().await.expect("request"), r.status, r.what).await;
    }

    // What the framework refuses before a handler runs is a problem too: bad or unknown
    // query parameters, an undocumented method (405, with Allow), an unknown route, a
    // requeue body that is not a JSON object or not JSON.
    let dead = format!("/v1/queues/{q}/dead");
    let framework = [
        (
            reqwest::Method::GET,
            format!("{dead}?limit=-255"),
            None,
            400,
            "limit",
        ),
        (
            reqwest::Method::GET,
            format!("{dead}?limit=101"),
            None,
            400,
            "limit",
        ),
        (
            reqwest::Method::GET,
            format!("{dead}?limt=5"),
            None,
            400,
            "limt",
        ),
        (
            reqwest::Method::GET,
            format!("{dead}?limit=1&limit=2"),
            None,
            400,
            "limit",
        ),
        (
            reqwest::Method::POST,
            format!("{dead}/purge?limit=x"),
            None,
            400,
            "limit",
        ),
        (
            reqwest::Method::POST,
            format!("{jobs}?priority=9"),
            None,
            400,
            "priority",
        ),
        (
            reqwest::Method::GET,
            format!("{job}?verbose=1"),
            None,
            400,
            "verbose",
        ),
        (reqwest::Method::DELETE, job.clone(), None, 405, "GET"),
        (reqwest::Method::DELETE, dead.clone(), None, 405, "GET"),
        (
            reqwest::Method::PUT,
            "/v1/queues".to_owned(),
            None,
            405,
            "PUT",
        ),
        (
            reqwest::Method::GET,
            "/v1/nope".to_owned(),
            None,
            404,
            "endpoint",
        ),
        (
            reqwest::Method::POST,
            format!("{dead}/requeue"),
            Some(("application/json", "[1]")),
            400,
            "object",
        ),
        (
            reqwest::Method::POST,
            format!("{dead}/requeue"),
            Some(("application/json", "\t")),
            400,
            "object",
        ),
        (
            reqwest::Method::POST,
            format!("{dead}/requeue"),
            Some(("application/json", r#"{"limit": -1}"#)),
            400,
            "limit",
        ),
        (
            reqwest::Method::POST,
            format!("{dead}/requeue"),
            Some(("application/json", r#"{"failed_after": "yesterday"}"#)),
            400,
            "failed_after",
        ),
        (
            reqwest::Method::POST,
            format!("{dead}/requeue"),
            Some(("text/plain", "x")),
            415,
            "application/json",
        ),
    ];
    for (method, path, body, status, names) in framework {
        let what = format!("{method} {path} {body:?}");
        let mut req = w.http.request(method, format!("{}{path}", w.base));
        if let Some((ct, text)) = body {
            req = req.header("content-type", ct).body(text);
        }
        let resp = req.send().await.expect("request");
        if status == 405 {
            assert!(resp.headers().contains_key("allow"), "{what}: no Allow");
        }
        let text = resp.headers().get("content-type").cloned();
        let status_got = resp.status().as_u16();
        let problem: Value = resp.json().await.expect("problem body is JSON");
        assert_eq!(status_got, status, "{what}: {problem}");
        assert_eq!(
            text.as_ref().and_then(|v| v.to_str().ok()),
            Some("application/problem+json"),
            "{what}"
        );
        assert!(
            problem["detail"]
                .as_str()
                .is_some_and(|d| d.contains(names)),
            "{what}: the detail should name `{names}`: {problem}"
        );
    }

    // Headers of 1 MiB in all: refused before any handler runs (hyper's limit).
    let resp = w
        .http
        .post(format!("{}{jobs}", w.base))
        .header("content-type", "application/json")
        .header("x-padding", "p".repeat(1 << 20))
        .body(r#"{"payload": 1}"#)
        .send()
        .await;
    assert_eq!(
        resp.expect("hyper answers").status().as_u16(),
        431,
        "huge headers"
    );
    // A cancel of a job that is not a UUID, and of the existing job with a trick suffix.
    for path in [
        format!("{job}%2f..%2f/cancel"),
        "/v1/jobs/not-a-uuid/cancel".to_owned(),
    ] {
        let resp = w
            .http
            .post(format!("{}{path}", w.base))
            .send()
            .await
            .expect("cancel");
        assert_problem(resp, 404, &path).await;
    }

    // Nothing was published, nothing stored, the existing job untouched, and the intake
    // still works.
    assert_eq!(raw.depth(&q).await, Some(1), "only the job posted before");
    assert_eq!(w.stored_jobs().await, 1);
    assert_eq!(w.job(&existing).await, before);
    let ok = w.submit("in", json!({"after": true})).await;
    assert_eq!(w.job(&ok).await["status"], "queued");
    w.stop().await.expect("clean stop");
}

#[tokio::test]
async fn bad_messages_published_by_hand_are_dead_lettered_with_the_reason() {
    let w = Setup::new()
        .queue("in", "handler = \"noop\"\nmax_payload_bytes = 1024")
        .start()
        .await;
    let raw = Raw::connect().await;
    let dlq = format!("{}.dlq", w.q("in"));
    let id = || BasicProperties::default().with_message_id(uuid::Uuid::now_v7().to_string().into());
    let huge = format!("\"{}\"", "x".repeat(2 << 20));
    let rows: Vec<(&str, Vec<u8>, BasicProperties, &str)> = vec![
        (
            "no message_id",
            br#"{"a":1}"#.to_vec(),
            BasicProperties::default(),
            "no message_id",
        ),
        (
            "message_id not a UUID",
            br#"{"a":1}"#.to_vec(),
            BasicProperties::default().with_message_id("42".into()),
            "not a UUID",
        ),
        ("body not JSON", b"\xff not json".to_vec(), id(), "not JSON"),
        ("empty body", Vec::new(), id(), "not JSON"),
        (
            "wrong content type",
            br#"{"a":1}"#.to_vec(),
            id().with_content_type("text/plain".into()),
            "`text/plain` is not application/json",
        ),
        (
            "huge body",
            huge.into_bytes(),
            id(),
            "over the queue's max_payload_bytes",
        ),
    ];
    for (what, body, props, reason) in rows {
        raw.publish(&w.q("in"), &body, props).await;
        let dead = raw
            .get_one(&dlq, Duration::from_secs(10))
            .await
            .unwrap_or_else(|| panic!("{what}: no dead letter"));
        let h = dead.delivery.properties.headers().as_ref();
        let error = header_string(h, H_LAST_ERROR).unwrap_or_default();
        assert!(error.contains(reason), "{what}: {error}");
        assert_eq!(dead.delivery.data, body, "{what}: body kept as it was");
    }
    // No job row came from any of them, and the worker still runs jobs.
    assert_eq!(w.stored_jobs().await, 0);
    let ok = w.submit("in", json!({"still": "alive"})).await;
    w.wait_status(&ok, "succeeded", Duration::from_secs(10))
        .await;
    w.stop().await.expect("clean stop");
}

/// Any JSON value, a few levels deep.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        ".{0,20}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{1,12}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Request bodies: raw bytes, arbitrary JSON, and objects built from the real fields with
/// values of any type plus a stray key now and then.
fn body() -> impl Strategy<Value = Vec<u8>> {
    let field = prop_oneof![
        Just("payload".to_owned()),
        Just("delay_ms".to_owned()),
        Just("max_attempts".to_owned()),
        "[a-z_]{1,10}"
    ];
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..64),
        json_value().prop_map(|v| v.to_string().into_bytes()),
        prop::collection::btree_map(field, json_value(), 0..4)
            .prop_map(|m| serde_json::to_vec(&m).unwrap_or_default()),
        // A well-formed envelope around any payload, so that every run reaches the accepting
        // path. The maps above make one only as `{"payload": …}` alone with a JSON content
        // type, about 1 case in 100 by count, so 300 cases missed it in about 1 run in 20
        // (seen once in CI, 2026-11-22).
        json_value().prop_map(|v| json!({ "payload": v }).to_string().into_bytes()),
    ]
}

/// What one fuzzed POST got back, checked against the API's rules.
async fn fuzz_one(w: &TestWarren, url: &str, body: Vec<u8>, ct: &str) -> bool {
    let resp = w
        .http
        .post(url)
        .header("content-type", ct)
        .body(body)
        .send()
        .await
        .expect("the intake answers");
    let status = resp.status().as_u16();
    let ctype = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let doc: Value = resp.json().await.expect("every answer is JSON");
    match status {
        202 => {
            assert_eq!(doc["status"], "queued", "{doc}");
            true
        }
        400 | 413 | 415 => {
            assert_eq!(ctype, "application/problem+json");
            assert_eq!(doc["status"], status, "{doc}");
            false
        }
        other => panic!("unexpected {other}: {doc}"),
    }
}

#[test]
fn fuzzed_requests_get_202_or_a_problem_and_only_202s_are_published() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let w = rt.block_on(
        Setup::new()
            .queue("fz", "handler = \"noop\"\nmax_payload_bytes = 512")
            .role(Role::Intake)
            .start(),
    );
    let url = format!("{}/v1/queues/{}/jobs", w.base, w.q("fz"));
    let accepted = std::sync::atomic::AtomicU32::new(0);
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 300,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let ct = prop_oneof![
        Just("application/json"),
        Just("application/json; charset=utf-8"),
        Just("text/plain"),
        Just("application/x-www-form-urlencoded"),
    ];
    let result = runner.run(&(body(), ct), |(body, ct)| {
        if rt.block_on(fuzz_one(&w, &url, body, ct)) {
            accepted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    let accepted = accepted.into_inner();
    assert!(accepted > 0, "the fuzz reached the accepting path too");
    let raw = rt.block_on(Raw::connect());
    assert_eq!(
        rt.block_on(raw.depth(&w.q("fz"))),
        Some(accepted),
        "exactly the accepted jobs were published"
    );
    assert_eq!(rt.block_on(w.stored_jobs()), u64::from(accepted));
    rt.block_on(w.stop()).expect("clean stop");
}
