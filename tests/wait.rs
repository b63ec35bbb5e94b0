//! Waiting for a job's result (DESIGN §3, issue 20): `GET /v1/jobs/{id}?wait=`,
//! `POST /v1/queues/{queue}/jobs?wait=` and `warren job ID --wait`.
//!
//! The intake and the workers run as two separate apps (each its own broker connection, its
//! store pool, its own process state), as `warren serve` and `warren work` on two hosts would:
//! the worker that finishes a job announces it on the broker, and the intake that holds the
//! waiting request learns of it only from there. The job runs in a handler the test holds
//! (a gate), so the test knows the instant the job is let go; a waiter is known to be in
//! place once the broker shows its binding to `warren.events` for the job's id (management
//! API), so no test sleeps to guess it.
//!
//! On the store `WARREN_TEST_STORE` picks (SQLite, the default, or PostgreSQL).

mod common;

use std::str::FromStr as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Gate, Setup, TestWarren};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use warren::workers::{Outcome, handler_fn};
use warren::{App, Role};

/// How soon after the job finishes a waiting request must answer.
const PROMPT: Duration = Duration::from_millis(100);

/// A worker app of its own (not the intake's), on the intake's config and store, running
/// queue `queue` with `handler`. Stopped when the returned token is cancelled.
async fn worker(
    intake: &TestWarren,
    queue: &str,
    handler: impl warren::workers::Handler,
) -> (
    CancellationToken,
    tokio::task::JoinHandle<warren::Result<()>>,
) {
    let app = App::builder(intake.app().config().clone())
        .queue_handler(queue, handler)
        .build()
        .await
        .expect("the worker app builds");
    let stop = CancellationToken::new();
    let task = {
        let stop = stop.clone();
        tokio::spawn(async move { app.run(Role::Workers(Vec::new()), None, stop).await })
    };
    (stop, task)
}

/// An intake alone (no workers) with one queue `w`.
async fn intake() -> TestWarren {
    Setup::new()
        .queue("w", "handler = \"noop\"\nmax_attempts = 1")
        .role(Role::Intake)
        .start()
        .await
}

/// Waits until the broker holds a binding of `warren.events` with the job's id as its key:
/// some process waits for the job (read from the management API, which shows bindings as
/// they are, without the statistics' lag).
async fn until_waited_for(id: &str) {
    let base = std::env::var("WARREN_TEST_MGMT_URL")
        .unwrap_or_else(|_| "http://127.0.0.1:15672".to_owned());
    let uri = lapin::uri::AMQPUri::from_str(&common::amqp_url()).expect("AMQP URL");
    let url = format!(
        "{base}/api/exchanges/{}/warren.events/bindings/source",
        uri.vhost.replace('/', "%2F")
    );
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let bindings: Value = http
            .get(&url)
            .basic_auth(
                &uri.authority.userinfo.username,
                Some(&uri.authority.userinfo.password),
            )
            .send()
            .await
            .expect("the management API answers")
            .json()
            .await
            .expect("json");
        if bindings
            .as_array()
            .is_some_and(|b| b.iter().any(|b| b["routing_key"] == id))
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "nobody waits for {id} within 15 s: {bindings}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `GET /v1/jobs/{id}?wait=…` on `w`, in a task: (status, body, when it answered).
fn get_waiting(
    w: &TestWarren,
    id: &str,
    wait: &str,
) -> tokio::task::JoinHandle<(u16, Value, Instant)> {
    let (http, url) = (
        w.http.clone(),
        format!("{}/v1/jobs/{id}?wait={wait}", w.base),
    );
    tokio::spawn(async move {
        let resp = http.get(url).send().await.expect("GET reaches the intake");
        let status = resp.status().as_u16();
        let body = resp.json().await.expect("json");
        (status, body, Instant::now())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_waiting_get_answers_within_100ms_of_the_job_finishing_in_another_process() {
    let w = intake().await;
    let q = w.q("w");
    let (gate, handler) = Gate::new();
    let (stop, task) = worker(&w, &q, handler).await;
    let id = w.submit("w", json!({"n": 1})).await;
    gate.started.notified().await;

    let waiting = get_waiting(&w, &id, "30s");
    until_waited_for(&id).await;
    let released = Instant::now();
    gate.release.notify_one();
    let (status, job, answered) = waiting.await.expect("the GET task");
    let took = answered.duration_since(released);
    eprintln!(
        "store {}: answered {took:?} after the job was let go",
        w.store().backend().name()
    );
    assert_eq!(status, 200);
    assert_eq!(job["status"], "succeeded", "{job}");
    assert!(
        took < PROMPT,
        "the waiting GET answered {took:?} after the job was let go, not within {PROMPT:?}"
    );
    stop.cancel();
    task.await
        .expect("worker task")
        .expect("worker stops cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_wait_that_ends_first_answers_with_the_job_as_it_stands() {
    let w = intake().await;
    let q = w.q("w");
    let (gate, handler) = Gate::new();
    let (stop, task) = worker(&w, &q, handler).await;
    let id = w.submit("w", json!({"n": 2})).await;
    gate.started.notified().await;

    let asked = Instant::now();
    let (status, job, answered) = get_waiting(&w, &id, "700ms").await.expect("the GET task");
    let took = answered.duration_since(asked);
    assert_eq!(status, 200);
    assert_eq!(job["status"], "running", "{job}");
    assert!(
        took >= Duration::from_millis(700)
            && took < Duration::from_millis(700) + Duration::from_secs(1),
        "a 700 ms wait answered after {took:?}"
    );
    // No wait (or 0) answers at once.
    let (_, job, _) = get_waiting(&w, &id, "0").await.expect("the GET task");
    assert_eq!(job["status"], "running", "{job}");

    gate.release.notify_one();
    w.wait_status(&id, "succeeded", Duration::from_secs(10))
        .await;
    stop.cancel();
    task.await
        .expect("worker task")
        .expect("worker stops cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cancelling_a_job_wakes_its_waiter() {
    // No workers: the job stays queued until it is cancelled.
    let w = intake().await;
    let id = w.submit("w", json!({"n": 3})).await;
    let waiting = get_waiting(&w, &id, "30s");
    until_waited_for(&id).await;
    let cancelled_at = Instant::now();
    let resp = w
        .http
        .post(format!("{}/v1/jobs/{id}/cancel", w.base))
        .send()
        .await
        .expect("cancel");
    assert_eq!(resp.status(), 200);
    let (status, job, answered) = waiting.await.expect("the GET task");
    let took = answered.duration_since(cancelled_at);
    assert_eq!(status, 200);
    assert_eq!(job["status"], "cancelled", "{job}");
    eprintln!(
        "store {}: answered {took:?} after the cancel",
        w.store().backend().name()
    );
    assert!(
        took < PROMPT,
        "answered {took:?} after the cancel, not within {PROMPT:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_job_that_dies_wakes_its_waiter() {
    let w = intake().await;
    let q = w.q("w");
    let release = Arc::new(tokio::sync::Notify::new());
    let handler = {
        let release = release.clone();
        handler_fn(move |_job| {
            let release = release.clone();
            async move {
                release.notified().await;
                Outcome::permanent("the test says no")
            }
        })
    };
    let (stop, task) = worker(&w, &q, handler).await;
    let id = w.submit("w", json!({"n": 4})).await;
    let waiting = get_waiting(&w, &id, "30s");
    until_waited_for(&id).await;
    release.notify_one();
    let (_, job, _) = waiting.await.expect("the GET task");
    let answered = std::time::SystemTime::now();
    assert_eq!(job["status"], "dead", "{job}");
    assert_eq!(
        job["last_error"], "permanent failure: the test says no",
        "{job}"
    );
    // Dying publishes the dead letter (confirmed) before the store records `dead`: measured
    // from `finished_at`, the instant the store recorded it (ms; same host, same clock).
    let finished = job["finished_at"]
        .as_str()
        .and_then(|t| humantime::parse_rfc3339_weak(t).ok())
        .expect("finished_at");
    let took = answered.duration_since(finished).unwrap_or_default();
    eprintln!(
        "store {}: answered {took:?} after the store recorded the job dead",
        w.store().backend().name()
    );
    assert!(
        took < PROMPT,
        "answered {took:?} after the job died, not within {PROMPT:?}"
    );
    stop.cancel();
    task.await
        .expect("worker task")
        .expect("worker stops cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_waiting_post_answers_202_with_the_job_once_it_is_final() {
    let w = intake().await;
    let q = w.q("w");
    let (gate, handler) = Gate::new();
    let (stop, task) = worker(&w, &q, handler).await;
    let posting = {
        let (http, url) = (
            w.http.clone(),
            format!("{}/v1/queues/{q}/jobs?wait=30s", w.base),
        );
        tokio::spawn(async move {
            let resp = http
                .post(url)
                .json(&json!({"payload": {"n": 5}}))
                .send()
                .await
                .expect("POST reaches the intake");
            let location = resp
                .headers()
                .get("location")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let status = resp.status().as_u16();
            let body: Value = resp.json().await.expect("json");
            (status, location, body, Instant::now())
        })
    };
    gate.started.notified().await;
    // The job's id is known only from the answer: find the running job in the store.
    let id = {
        let store = w.store().open().await;
        let page = store
            .list(
                &warren::store::JobFilter {
                    queue: Some(q.clone()),
                    ..Default::default()
                },
                None,
                10,
            )
            .await
            .expect("list");
        assert_eq!(page.jobs.len(), 1, "one job posted");
        page.jobs[0].id.to_string()
    };
    until_waited_for(&id).await;
    let released = Instant::now();
    gate.release.notify_one();
    let (status, location, job, answered) = posting.await.expect("the POST task");
    let took = answered.duration_since(released);
    assert_eq!(status, 202, "a waiting POST still answers 202: {job}");
    assert_eq!(location.as_deref(), Some(format!("/v1/jobs/{id}").as_str()));
    assert_eq!(job["id"], id.as_str());
    assert_eq!(job["status"], "succeeded", "{job}");
    eprintln!(
        "store {}: the POST answered {took:?} after the job was let go",
        w.store().backend().name()
    );
    assert!(took < PROMPT, "answered {took:?} after the job was let go");

    // A POST whose wait ends first shows the job as it stands (here: queued or running).
    let resp = w
        .http
        .post(format!("{}/v1/queues/{q}/jobs?wait=300ms", w.base))
        .json(&json!({"payload": {"n": 6}}))
        .send()
        .await
        .expect("POST");
    assert_eq!(resp.status(), 202);
    let job: Value = resp.json().await.expect("json");
    assert!(
        job["status"] == "queued" || job["status"] == "running",
        "{job}"
    );
    gate.release.notify_one();
    stop.cancel();
    task.await
        .expect("worker task")
        .expect("worker stops cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_wait_over_60s_or_not_a_duration_is_refused_and_changes_nothing() {
    let w = intake().await;
    let q = w.q("w");
    let id = w.submit("w", json!({"n": 7})).await;
    for (query, says) in [
        ("wait=61s", "at most 60 s"),
        ("wait=2m", "at most 60 s"),
        ("wait=90", "at most 60 s"),
        ("wait=soon", "a duration"),
        ("wait=", "a duration"),
        ("wait=1s&wait=2s", "more than once"),
    ] {
        let resp = w
            .http
            .get(format!("{}/v1/jobs/{id}?{query}", w.base))
            .send()
            .await
            .expect("GET");
        assert_eq!(resp.status(), 400, "GET ?{query}");
        let content_type = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        assert_eq!(content_type, "application/problem+json");
        let problem: Value = resp.json().await.expect("json");
        assert_eq!(problem["type"], "/problems/malformed-request", "{problem}");
        let detail = problem["detail"].as_str().unwrap_or("");
        assert!(detail.contains(says), "GET ?{query}: {detail}");
        assert!(detail.contains("60"), "the limit is named: {detail}");
    }
    // A POST with a bad wait is refused before anything is accepted.
    let before = w.stored_jobs().await;
    let resp = w
        .http
        .post(format!("{}/v1/queues/{q}/jobs?wait=2m", w.base))
        .json(&json!({"payload": {"n": 8}}))
        .send()
        .await
        .expect("POST");
    assert_eq!(resp.status(), 400);
    let problem: Value = resp.json().await.expect("json");
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|d| d.contains("at most 60 s")),
        "{problem}"
    );
    assert_eq!(w.stored_jobs().await, before, "nothing was accepted");
    // Up to the limit is fine (the job is queued with no worker: a short wait ends).
    let resp = w
        .http
        .get(format!("{}/v1/jobs/{id}?wait=250ms", w.base))
        .send()
        .await
        .expect("GET");
    assert_eq!(resp.status(), 200);
    // An unknown job is 404 at once, whatever the wait.
    let asked = Instant::now();
    let resp = w
        .http
        .get(format!(
            "{}/v1/jobs/{}?wait=30s",
            w.base,
            uuid::Uuid::now_v7()
        ))
        .send()
        .await
        .expect("GET");
    assert_eq!(resp.status(), 404);
    assert!(asked.elapsed() < Duration::from_secs(5));
}

/// Writes the `queues.toml` the `warren` binary reads in `w`'s directory (its broker and
/// store come from the environment).
fn write_config(w: &TestWarren, queue: &str) {
    std::fs::write(
        w.dir().join("queues.toml"),
        format!("[queues.\"{queue}\"]\nhandler = \"noop\"\n"),
    )
    .expect("write queues.toml");
}

/// `warren job ID --wait DURATION` against the test's broker and store: (exit code, stdout).
async fn warren_job_wait(w: &TestWarren, id: &str, wait: &str) -> (Option<i32>, Value, Instant) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_warren"))
        .args(["job", id, "--wait", wait])
        .current_dir(w.dir())
        .env("WARREN_AMQP_URL", common::amqp_url())
        .env("WARREN_STORE_URL", w.store().url())
        .env_remove("WARREN_CONFIG")
        .env_remove("WARREN_BIND")
        .output()
        .await
        .expect("run warren job");
    let job = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
        panic!(
            "warren job printed no JSON; stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code(), job, Instant::now())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn warren_job_wait_exits_0_once_final_and_3_when_the_wait_ends_first() {
    let w = intake().await;
    let q = w.q("w");
    let (gate, handler) = Gate::new();
    let (stop, task) = worker(&w, &q, handler).await;
    write_config(&w, &q);
    let id = w.submit("w", json!({"n": 9})).await;
    gate.started.notified().await;

    let (code, job, _) = warren_job_wait(&w, &id, "500ms").await;
    assert_eq!(job["status"], "running", "{job}");
    assert_eq!(code, Some(3), "the wait ended with the job not final");

    let waiting = {
        let (w_dir, store_url, id) = (
            w.dir().to_path_buf(),
            w.store().url().to_owned(),
            id.clone(),
        );
        tokio::spawn(async move {
            let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_warren"))
                .args(["job", &id, "--wait", "30s"])
                .current_dir(w_dir)
                .env("WARREN_AMQP_URL", common::amqp_url())
                .env("WARREN_STORE_URL", store_url)
                .env_remove("WARREN_CONFIG")
                .env_remove("WARREN_BIND")
                .output()
                .await
                .expect("run warren job");
            (out, Instant::now())
        })
    };
    until_waited_for(&id).await;
    let released = Instant::now();
    gate.release.notify_one();
    let (out, answered) = waiting.await.expect("the CLI task");
    let job: Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(out.status.code(), Some(0), "final: exit 0");
    let took = answered.duration_since(released);
    eprintln!(
        "store {}: the CLI exited {took:?} after the job was let go",
        w.store().backend().name()
    );
    // The process's exit is part of it (closing its broker connection and its store).
    assert!(
        took < Duration::from_secs(2),
        "the CLI answered {took:?} after the job was let go"
    );

    // A job already final answers at once, exit 0.
    let asked = Instant::now();
    let (code, job, _) = warren_job_wait(&w, &id, "30s").await;
    assert_eq!((code, job["status"].as_str()), (Some(0), Some("succeeded")));
    assert!(asked.elapsed() < Duration::from_secs(10));

    stop.cancel();
    task.await
        .expect("worker task")
        .expect("worker stops cleanly");
}
