//! The correlation id: from `X-Correlation-ID` (or the job id when absent) to the AMQP
//! `correlation_id`, the handler (`WARREN_CORRELATION_ID` for `exec`), `GET /v1/jobs/{id}`,
//! and every log line about the job (`--log-format json`).

mod common;

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{QueueCleanup, Raw, Setup, unique};
use lapin::types::AMQPValue;
use serde_json::{Value, json};

const SETTLE: Duration = Duration::from_secs(15);

/// An exec handler that answers with the correlation id and job id it was given.
fn env_script(dir: &Path) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("env.sh");
    std::fs::write(
        &path,
        "#!/bin/sh\ncat >/dev/null\nprintf '{\"correlation_id\":\"%s\",\"job_id\":\"%s\"}' \"$WARREN_CORRELATION_ID\" \"$WARREN_JOB_ID\"\n",
    )
    .expect("write script");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path
}

async fn post(w: &common::TestWarren, path: &str, corr: Option<&str>, body: Value) -> Value {
    let mut req = w.http.post(format!("{}{path}", w.base)).json(&body);
    if let Some(c) = corr {
        req = req.header("x-correlation-id", c);
    }
    let resp = req.send().await.expect("POST");
    let status = resp.status();
    let body: Value = resp.json().await.expect("json");
    assert!(status.is_success(), "{status}: {body}");
    body
}

#[tokio::test]
async fn the_correlation_id_reaches_the_exec_handler_and_the_job_status() {
    let scripts = tempfile::tempdir().expect("tempdir");
    let script = env_script(scripts.path());
    let w = Setup::new()
        .queue(
            "corr",
            &format!("handler = {{ exec = [\"{}\"] }}", script.display()),
        )
        .start()
        .await;
    let jobs = format!("/v1/queues/{}/jobs", w.q("corr"));

    // Given: it travels unchanged.
    let job = post(&w, &jobs, Some("checkout-42"), json!({"payload": {"n": 1}})).await;
    assert_eq!(job["correlation_id"], "checkout-42", "the 202 shows it");
    let id = job["id"].as_str().expect("id").to_owned();
    let done = w.wait_status(&id, "succeeded", SETTLE).await;
    assert_eq!(done["correlation_id"], "checkout-42");
    assert_eq!(
        done["result"],
        json!({"correlation_id": "checkout-42", "job_id": id}),
        "WARREN_CORRELATION_ID in the handler's environment"
    );

    // Absent: the job id is the correlation id, everywhere.
    let job = post(&w, &jobs, None, json!({"payload": {"n": 2}})).await;
    let id = job["id"].as_str().expect("id").to_owned();
    let done = w.wait_status(&id, "succeeded", SETTLE).await;
    assert_eq!(done["correlation_id"], id.as_str());
    assert_eq!(done["result"]["correlation_id"], id.as_str());

    // A batch's header applies to every job.
    let batch = post(
        &w,
        &format!("{jobs}/batch"),
        Some("import-7"),
        json!({"jobs": [{"payload": 1}, {"payload": 2}]}),
    )
    .await;
    for r in batch["results"].as_array().expect("results") {
        let id = r["job"]["id"].as_str().expect("id");
        let done = w.wait_status(id, "succeeded", SETTLE).await;
        assert_eq!(done["result"]["correlation_id"], "import-7", "{done}");
    }
    w.stop().await.expect("clean stop");
}

#[tokio::test]
async fn the_message_tells_an_operator_what_the_job_is() {
    // Intake only: the message stays in the queue for us to read, as "Get messages" in the
    // management UI would.
    let w = Setup::new()
        .queue("wire", "handler = \"noop\"\nmax_attempts = 4")
        .role(warren::Role::Intake)
        .start()
        .await;
    let resp = w
        .http
        .post(format!("{}/v1/queues/{}/jobs", w.base, w.q("wire")))
        .header("x-correlation-id", "order-9")
        .header("idempotency-key", "key-9")
        .json(&json!({"payload": {"order": 9}}))
        .send()
        .await
        .expect("post");
    let id = common::accepted_id(resp).await;
    let msg = Raw::connect()
        .await
        .get_one(&w.q("wire"), SETTLE)
        .await
        .expect("the job's message is in its queue");
    let p = &msg.delivery.properties;
    assert_eq!(
        p.message_id().as_ref().map(|s| s.as_str()),
        Some(id.as_str())
    );
    assert_eq!(
        p.correlation_id().as_ref().map(|s| s.as_str()),
        Some("order-9")
    );
    assert_eq!(
        p.content_type().as_ref().map(|s| s.as_str()),
        Some("application/json")
    );
    assert_eq!(p.kind().as_ref().map(|s| s.to_string()), Some(w.q("wire")));
    assert_eq!(*p.delivery_mode(), Some(2));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let ts = p.timestamp().expect("timestamp");
    assert!(
        ts <= now && now - ts < 60,
        "timestamp {ts} is now-ish ({now})"
    );
    let headers = p.headers().as_ref().expect("headers");
    let h = |k: &str| headers.inner().get(k).cloned();
    assert!(matches!(
        h("x-warren-attempt"),
        Some(AMQPValue::LongUInt(1))
    ));
    assert!(matches!(
        h("x-warren-max-attempts"),
        Some(AMQPValue::LongUInt(4))
    ));
    assert!(
        matches!(h("x-warren-idempotency-key"), Some(AMQPValue::LongString(s)) if s.to_string() == "key-9")
    );
    assert_eq!(msg.delivery.data, br#"{"order":9}"#);
    w.stop().await.expect("clean stop");
}

/// Every field of the event and of its spans, merged (JSON log lines keep span fields under
/// `span` and `spans`).
fn fields(line: &Value) -> serde_json::Map<String, Value> {
    let mut all = serde_json::Map::new();
    for span in line["spans"].as_array().into_iter().flatten() {
        if let Some(o) = span.as_object() {
            all.extend(o.clone());
        }
    }
    if let Some(o) = line["span"].as_object() {
        all.extend(o.clone());
    }
    if let Some(o) = line["fields"].as_object() {
        all.extend(o.clone());
    }
    all
}

#[tokio::test]
async fn every_json_log_line_about_a_job_names_it_its_queue_attempt_and_correlation_id() {
    let dir = tempfile::tempdir().expect("tempdir");
    let q = unique("logs");
    let _cleanup = QueueCleanup(vec![q.clone(), format!("{q}.dlq")]);
    let fail = common::repo().join("workers/examples/fail.sh");
    std::fs::write(
        dir.path().join("queues.toml"),
        format!(
            "[queues.{q}]\nhandler = {{ exec = [\"{}\"] }}\nmax_attempts = 2\nbackoff = {{ base = \"1ms\", max = \"1ms\" }}\n",
            fail.display()
        ),
    )
    .expect("write config");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let store = common::TestStore::new(dir.path()).await;
    let mut child = Command::new(env!("CARGO_BIN_EXE_warren"))
        .args(["--log-format", "json", "run"])
        .current_dir(dir.path())
        .env("WARREN_AMQP_URL", common::amqp_url())
        .env("WARREN_BIND", format!("127.0.0.1:{port}"))
        .env("RUST_LOG", "info,warren=debug")
        .env("WARREN_STORE_URL", store.url())
        .env_remove("WARREN_CONFIG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn warren run");
    let _reaper = common::KillOnDrop {
        pid: child.id(),
        group: false,
    };
    // Lines go to a channel as they come, so the test can wait for the ones it expects.
    let stderr = child.stderr.take().expect("stderr");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });

    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(r) = http.get(format!("{base}/readyz")).send().await
            && r.status() == 200
        {
            break;
        }
        assert!(Instant::now() < deadline, "warren not ready");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let resp = http
        .post(format!("{base}/v1/queues/{q}/jobs"))
        .header("x-correlation-id", "trace-me-7")
        .json(&json!({"payload": {"n": 1}}))
        .send()
        .await
        .expect("post");
    let id = common::accepted_id(resp).await;

    // Read lines until the job is dead-lettered; collect those that mention it.
    let mut about_job: Vec<Value> = Vec::new();
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let line = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .unwrap_or_else(|_| panic!("no `job dead-lettered` line; saw:\n{}", seen.join("\n")))
            .expect("warren is still running");
        seen.push(line.clone());
        let v: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("--log-format json printed a non-JSON line ({e}): {line}"));
        if line.contains(&id) || line.contains("trace-me-7") {
            let done = v["fields"]["message"] == "job dead-lettered";
            about_job.push(v);
            if done {
                break;
            }
        }
    }
    let messages: Vec<&str> = about_job
        .iter()
        .filter_map(|v| v["fields"]["message"].as_str())
        .collect();
    for expected in [
        "job accepted",
        "job failed; retry scheduled",
        "job dead-lettered",
    ] {
        assert!(
            messages.contains(&expected),
            "expected a `{expected}` line among {messages:?}"
        );
    }
    for v in &about_job {
        let f = fields(v);
        assert_eq!(f.get("job_id"), Some(&json!(id)), "job_id in {v}");
        assert_eq!(f.get("queue"), Some(&json!(q)), "queue in {v}");
        assert_eq!(
            f.get("correlation_id"),
            Some(&json!("trace-me-7")),
            "correlation_id in {v}"
        );
        assert!(
            f.get("attempt")
                .and_then(Value::as_u64)
                .is_some_and(|a| a >= 1),
            "attempt in {v}"
        );
    }
    let dead = about_job.last().expect("the dead-letter line");
    assert_eq!(fields(dead).get("attempt"), Some(&json!(2)), "{dead}");
    let _ = child.kill();
    let _ = child.wait();
}
