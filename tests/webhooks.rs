//! Signed webhooks (Standard Webhooks): an `http` handler with a signing secret signs every
//! request, and a receiver verifies it with the specification's reference library (the
//! `standardwebhooks` crate), not with warren's code. The `webhook-id` is the same on a
//! retried attempt; two secrets (a rotation) give two signatures, each verifying alone; a
//! missing secret variable stops `warren run` at start naming it, and no error quotes a
//! secret; the example receiver (`examples/webhook_sink.rs`) prints `signature ok` for a
//! warren delivery and answers 401 to a tampered body, an old timestamp and a wrong secret.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, SystemTime};

use axum::http::{HeaderMap, HeaderValue, StatusCode};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use common::process::{Children, free_port, signal_group, spawn_warren, wait_ready};
use common::target::{Reply, Target};
use common::{QueueCleanup, Setup, TestStore, job_at, post_job, unique};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use standardwebhooks::Webhook;
use tokio::io::AsyncBufReadExt as _;

/// A fresh `whsec_` secret: 32 random bytes.
fn new_secret() -> String {
    format!("whsec_{}", BASE64.encode(rand::random::<[u8; 32]>()))
}

/// Writes `secrets` (one per line) to a file in `dir`; returns its absolute path.
fn secret_file(dir: &Path, secrets: &[&str]) -> PathBuf {
    let path = dir.join("hook.secret");
    std::fs::write(&path, secrets.join("\n") + "\n").expect("write the secret file");
    path
}

/// The test's own Standard Webhooks signature (hmac + sha2 used directly, as the
/// specification's "Signature scheme" says): `v1,` base64 HMAC-SHA256 of `id.timestamp.body`
/// under the base64-decoded part of `secret` after `whsec_`.
fn sign(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> String {
    let key = BASE64
        .decode(secret.strip_prefix("whsec_").expect("a whsec_ secret"))
        .expect("base64 secret");
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("any key length");
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    format!("v1,{}", BASE64.encode(mac.finalize().into_bytes()))
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
    headers
        .get(name)
        .unwrap_or_else(|| panic!("no {name} header in {headers:?}"))
        .to_str()
        .expect("ASCII header")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_requests_verify_and_keep_their_webhook_id_on_a_retry() {
    let secret = new_secret();
    let files = tempfile::tempdir().expect("tempdir");
    let path = secret_file(files.path(), &[&secret]);
    // The first request fails (500), the retry succeeds.
    let target = Target::start(|_, n| Reply {
        status: if n == 0 {
            StatusCode::INTERNAL_SERVER_ERROR
        } else {
            StatusCode::OK
        },
        retry_after: None,
        hold: Duration::ZERO,
    })
    .await;
    let w = Setup::new()
        .queue(
            "hook",
            &format!(
                "handler = {{ http = \"{}\", signing_secret_file = \"{}\" }}\n\
                 backoff = {{ base = \"100ms\", max = \"200ms\" }}",
                target.url(),
                path.display()
            ),
        )
        .start()
        .await;
    let sent_after = now();
    let id = w
        .submit("hook", json!({ "customer": 42, "text": "héllo" }))
        .await;
    w.wait_status(&id, "succeeded", Duration::from_secs(30))
        .await;
    let calls = target.wait_calls(2, Duration::from_secs(5)).await;
    assert_eq!(calls.len(), 2, "one failed attempt and one retry");

    let verifier = Webhook::new(&secret).expect("the reference library takes the secret");
    let stranger = Webhook::new(&new_secret()).expect("another secret");
    for (n, call) in calls.iter().enumerate() {
        assert_eq!(
            header(&call.headers, "x-warren-attempt"),
            (n + 1).to_string()
        );
        verifier
            .verify(&call.raw, &call.headers)
            .unwrap_or_else(|e| panic!("attempt {}: {e}; headers {:?}", n + 1, call.headers));
        assert!(
            stranger.verify(&call.raw, &call.headers).is_err(),
            "another secret must not verify attempt {}",
            n + 1
        );
        let ts: i64 = header(&call.headers, "webhook-timestamp")
            .parse()
            .expect("unix seconds");
        assert!(
            (sent_after..=now()).contains(&ts),
            "webhook-timestamp {ts} is the attempt's time"
        );
        let signatures = header(&call.headers, "webhook-signature");
        assert!(
            signatures.starts_with("v1,") && !signatures.contains(' '),
            "one v1 signature: {signatures}"
        );
    }
    let ids: Vec<&str> = calls
        .iter()
        .map(|c| header(&c.headers, "webhook-id"))
        .collect();
    assert_eq!(ids[0], ids[1], "webhook-id is stable across retries");
    assert_eq!(ids[0], id, "webhook-id is the job id");
    w.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_secrets_give_two_signatures_each_verifying_alone() {
    let (old, new) = (new_secret(), new_secret());
    let files = tempfile::tempdir().expect("tempdir");
    let path = secret_file(files.path(), &[&old, &new]);
    let target = Target::start(|_, _| Reply::ok(Duration::ZERO)).await;
    let w = Setup::new()
        .queue(
            "hook",
            &format!(
                "handler = {{ http = \"{}\", signing_secret_file = \"{}\" }}",
                target.url(),
                path.display()
            ),
        )
        .start()
        .await;
    let id = w.submit("hook", json!({ "rotating": true })).await;
    w.wait_status(&id, "succeeded", Duration::from_secs(30))
        .await;
    let call = target.wait_calls(1, Duration::from_secs(5)).await[0].clone();
    let signatures: Vec<String> = header(&call.headers, "webhook-signature")
        .split(' ')
        .map(str::to_owned)
        .collect();
    assert_eq!(signatures.len(), 2, "{signatures:?}");
    for (secret, signature) in [(&old, &signatures[0]), (&new, &signatures[1])] {
        let mut alone = call.headers.clone();
        alone.insert(
            "webhook-signature",
            HeaderValue::from_str(signature).expect("header value"),
        );
        Webhook::new(secret)
            .expect("secret")
            .verify(&call.raw, &alone)
            .expect("each signature verifies under its own secret");
        // And the test's own computation agrees byte for byte.
        let ts: i64 = header(&call.headers, "webhook-timestamp")
            .parse()
            .expect("unix seconds");
        assert_eq!(&sign(secret, &id, ts, &call.raw), signature);
    }
    w.stop().await.expect("clean stop");
}

/// Runs `warren run` in `dir` (its queues.toml) with `env`, expecting it to stop at once;
/// returns its exit status and stderr.
async fn failed_start(dir: &Path, env: &[(&str, &str)]) -> (std::process::ExitStatus, String) {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_warren"));
    cmd.arg("run")
        .current_dir(dir)
        .env("WARREN_AMQP_URL", common::amqp_url())
        .env("WARREN_BIND", format!("127.0.0.1:{}", free_port()))
        .env_remove("WARREN_CONFIG")
        .env_remove("WARREN_STORE_URL")
        .env_remove("WARREN_API_TOKENS")
        .env_remove("HOOK_SECRET_OF_THIS_TEST")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("warren stops at once on a bad secret")
        .expect("run warren");
    (
        out.status,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_or_bad_secret_stops_warren_at_start_naming_it_and_quoting_no_secret() {
    let dir = tempfile::tempdir().expect("tempdir");
    let good = new_secret();
    secret_file(dir.path(), &[&good]);
    let (a, b) = (unique("signed"), unique("unsigned"));
    // Queue b's handler is on line 5.
    std::fs::write(
        dir.path().join("queues.toml"),
        format!(
            "[queues.\"{a}\"]\nhandler = {{ http = \"http://127.0.0.1:9/h\", signing_secret_file = \"hook.secret\" }}\n\n\
             [queues.\"{b}\"]\nhandler = {{ http = \"http://127.0.0.1:9/h\", signing_secret_env = \"HOOK_SECRET_OF_THIS_TEST\" }}\n"
        ),
    )
    .expect("write queues.toml");
    let good_key = good.trim_start_matches("whsec_");

    let (status, stderr) = failed_start(dir.path(), &[]).await;
    assert!(!status.success(), "{stderr}");
    assert!(
        stderr.contains("environment variable HOOK_SECRET_OF_THIS_TEST is not set"),
        "{stderr}"
    );
    assert!(
        stderr.contains("line 5: `queues.") && stderr.contains(".handler.signing_secret_env`"),
        "{stderr}"
    );
    assert!(
        !stderr.contains(good_key),
        "stderr quotes a secret: {stderr}"
    );

    // A secret too short to be one (the specification wants 24 to 64 bytes), and a secret
    // without its prefix: refused, naming the variable, quoting neither.
    let short = format!("whsec_{}", BASE64.encode(b"only-sixteen-byt"));
    for bad in [short.as_str(), good_key] {
        let (status, stderr) = failed_start(dir.path(), &[("HOOK_SECRET_OF_THIS_TEST", bad)]).await;
        assert!(!status.success(), "{stderr}");
        assert!(
            stderr.contains("environment variable HOOK_SECRET_OF_THIS_TEST: secret 1 of 1"),
            "{stderr}"
        );
        let shown = bad.trim_start_matches("whsec_");
        assert!(!stderr.contains(shown), "stderr quotes a secret: {stderr}");
    }
    // Nothing was declared: the configuration was refused first.
    let raw = common::Raw::connect().await;
    assert_eq!(raw.depth(&a).await, None, "{a} was declared");
}

/// `examples/webhook_sink.rs`, built by cargo for this test (integration tests get no
/// `CARGO_BIN_EXE_` for examples): the path of its executable.
fn build_sink() -> PathBuf {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = std::process::Command::new(cargo);
    cmd.args([
        "build",
        "--example",
        "webhook_sink",
        "--message-format=json-render-diagnostics",
        "--manifest-path",
    ])
    .arg(common::repo().join("Cargo.toml"))
    .stderr(Stdio::inherit());
    // What cargo set for this test binary is not the build's environment: build scripts that
    // watch a variable (ring's watches CARGO_MANIFEST_DIR) would rebuild half the tree, for
    // this build and for the next one from a shell.
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if name == "CARGO"
            || name == "OUT_DIR"
            || name == "CARGO_CRATE_NAME"
            || name == "CARGO_PRIMARY_PACKAGE"
            || name == "CARGO_TARGET_TMPDIR"
            || name == "CARGO_RUSTC_CURRENT_DIR"
            || name.starts_with("CARGO_PKG_")
            || name.starts_with("CARGO_BIN_")
            || name.starts_with("CARGO_MANIFEST_")
        {
            cmd.env_remove(&*name);
        }
    }
    if !cfg!(debug_assertions) {
        cmd.arg("--release");
    }
    let out = cmd
        .output()
        .expect("run cargo build --example webhook_sink");
    assert!(
        out.status.success(),
        "cargo build --example webhook_sink failed"
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == "webhook_sink")
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
        .expect("cargo names the webhook_sink executable")
}

/// The example receiver, running with a secret; its stdout lines arrive on `lines`.
struct Sink {
    addr: String,
    lines: tokio::sync::mpsc::UnboundedReceiver<String>,
    _child: tokio::process::Child,
}

impl Sink {
    async fn start(exe: &Path, secret: &str) -> Self {
        let mut child = tokio::process::Command::new(exe)
            .arg("127.0.0.1:0")
            .env("WEBHOOK_SECRET", secret)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start webhook_sink");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut reader = tokio::io::BufReader::new(stdout).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut sink = Self {
            addr: String::new(),
            lines,
            _child: child,
        };
        let first = sink.line(|l| l.contains("listening on")).await;
        assert!(
            first.contains("verifying signatures with 1 secret"),
            "{first}"
        );
        sink.addr = first
            .split("http://")
            .nth(1)
            .and_then(|rest| rest.split('/').next())
            .expect("the listening line names the address")
            .to_owned();
        sink
    }

    /// The next line that `pred` accepts (failing after 30 s).
    async fn line(&mut self, pred: impl Fn(&str) -> bool) -> String {
        loop {
            let line = tokio::time::timeout(Duration::from_secs(30), self.lines.recv())
                .await
                .expect("webhook_sink printed the expected line within 30 s")
                .expect("webhook_sink is running");
            if pred(&line) {
                return line;
            }
        }
    }

    /// POSTs `body` with the `content-type`, `x-warren-*` and `webhook-*` ones of `headers`
    /// to the sink; returns the status and the line it printed.
    async fn post(&mut self, headers: &HeaderMap, body: &[u8]) -> (u16, String) {
        let mut sent = HeaderMap::new();
        for (name, value) in headers {
            let n = name.as_str();
            if n == "content-type" || n.starts_with("x-warren-") || n.starts_with("webhook-") {
                sent.insert(name.clone(), value.clone());
            }
        }
        let resp = reqwest::Client::new()
            .post(format!("http://{}/hooks", self.addr))
            .headers(sent)
            .body(body.to_vec())
            .send()
            .await
            .expect("POST to webhook_sink");
        let status = resp.status().as_u16();
        let line = self
            .line(|l| l.starts_with("signature ok") || l.starts_with("rejected"))
            .await;
        (status, line)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_receiver_accepts_warren_deliveries_and_refuses_forgeries() {
    let exe = tokio::task::spawn_blocking(build_sink)
        .await
        .expect("build task");
    let secret = new_secret();
    let mut sink = Sink::start(&exe, &secret).await;
    // A second target records a delivery, which the test then replays to the sink altered.
    let recorder = Target::start(|_, _| Reply::ok(Duration::ZERO)).await;

    // `warren run` as a user starts it: the secret in WEBHOOK_SECRET.
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let (to_sink, to_recorder) = (unique("sink"), unique("recorded"));
    let _cleanup = QueueCleanup(vec![
        to_sink.clone(),
        format!("{to_sink}.dlq"),
        to_recorder.clone(),
        format!("{to_recorder}.dlq"),
    ]);
    std::fs::write(
        dir.join("queues.toml"),
        format!(
            "[queues.\"{to_sink}\"]\nhandler = {{ http = \"http://{}/hooks\", signing_secret_env = \"WEBHOOK_SECRET\" }}\n\
             max_attempts = 1\n\n\
             [queues.\"{to_recorder}\"]\nhandler = {{ http = \"{}\", signing_secret_env = \"WEBHOOK_SECRET\" }}\n",
            sink.addr,
            recorder.url()
        ),
    )
    .expect("write queues.toml");
    let store = TestStore::new(dir).await;
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut child = spawn_warren(
        dir,
        store.url(),
        &["run"],
        port,
        "warren.log",
        &[("WEBHOOK_SECRET", secret.as_str())],
    );
    let _children = Children(vec![child.id()]);
    wait_ready(&base, dir, "warren.log").await;
    let http = reqwest::Client::new();

    // A warren delivery: "signature ok", and the job succeeds (the sink answered 200).
    let id = post_job(&http, &base, &to_sink, json!({ "order": 7 })).await;
    let ok = sink.line(|l| l.contains(&id)).await;
    assert!(ok.starts_with("signature ok"), "{ok}");
    assert!(
        ok.contains(r#"{"order":7}"#),
        "the job's payload is printed: {ok}"
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let job = job_at(&http, &base, &id).await;
        if job["status"] == "succeeded" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{job}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A recorded warren delivery, replayed as is: accepted; with its body altered: refused.
    let rid = post_job(&http, &base, &to_recorder, json!({ "amount": 10 })).await;
    let call = recorder.wait_calls(1, Duration::from_secs(30)).await[0].clone();
    assert_eq!(call.job_id, rid);
    let (status, line) = sink.post(&call.headers, &call.raw).await;
    assert_eq!(status, 200, "{line}");
    assert!(
        line.starts_with("signature ok") && line.contains(&rid),
        "{line}"
    );
    let (status, line) = sink.post(&call.headers, br#"{"amount":1000}"#).await;
    assert_eq!(status, 401, "{line}");
    assert!(line.contains("signature invalid"), "{line}");

    // Correctly signed but 10 minutes old: refused (the tolerance is 5 minutes).
    let body = br#"{"amount":10}"#;
    let signed = |secret: &str, ts: i64| {
        let mut h = HeaderMap::new();
        h.insert("content-type", HeaderValue::from_static("application/json"));
        h.insert("webhook-id", HeaderValue::from_str(&rid).expect("id"));
        h.insert("webhook-timestamp", HeaderValue::from(ts));
        h.insert(
            "webhook-signature",
            HeaderValue::from_str(&sign(secret, &rid, ts, body)).expect("signature"),
        );
        h
    };
    let (status, line) = sink.post(&signed(&secret, now() - 600), body).await;
    assert_eq!(status, 401, "{line}");
    assert!(line.contains("too old"), "{line}");
    // Signed now with another secret: refused.
    let (status, line) = sink.post(&signed(&new_secret(), now()), body).await;
    assert_eq!(status, 401, "{line}");
    assert!(line.contains("signature invalid"), "{line}");
    // The test's own signature with the right secret now: accepted (the checks above failed
    // for the reasons they name, not for the way the test signs).
    let (status, line) = sink.post(&signed(&secret, now()), body).await;
    assert_eq!(status, 200, "{line}");
    assert!(line.starts_with("signature ok"), "{line}");

    // warren stops cleanly on SIGTERM; its log never quotes the secret.
    signal_group(child.id(), "TERM");
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .expect("wait task")
        .expect("wait for warren");
    assert!(status.success(), "warren exited with {status}");
    let log = std::fs::read_to_string(dir.join("warren.log")).unwrap_or_default();
    assert!(
        !log.contains(secret.trim_start_matches("whsec_")),
        "warren's log quotes the secret:\n{log}"
    );
}
