//! Bulk actions: `POST /v1/jobs/cancel` by ids and by filter changes only jobs that have not
//! started, and their messages are then skipped by the worker; `POST /v1/jobs/requeue` by
//! filter moves exactly the matching dead jobs back (confirm, then ack) and they succeed;
//! both need the `admin` scope; `warren jobs cancel` counts with `--dry-run` and asks for
//! `--yes`.

mod common;

use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use common::{Raw, Setup, TestWarren};
use serde_json::{Value, json};
use tokio::sync::Notify;
use warren::workers::{Outcome, handler_fn};

/// `POST path` with a JSON body (and a bearer token): status and body.
async fn post(w: &TestWarren, path: &str, body: &Value, token: Option<&str>) -> (u16, Value) {
    let mut req = w.http.post(format!("{}{path}", w.base)).json(body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.expect("POST");
    let status = resp.status().as_u16();
    (status, resp.json().await.expect("json body"))
}

/// A handler that counts its runs and holds any job whose payload says `"hold": true`
/// until `release` is notified (announcing it on `started`).
struct Held {
    runs: Arc<AtomicUsize>,
    started: Arc<Notify>,
    release: Arc<Notify>,
}

fn held() -> (Held, impl warren::workers::Handler) {
    let h = Held {
        runs: Arc::default(),
        started: Arc::default(),
        release: Arc::default(),
    };
    let (runs, started, release) = (h.runs.clone(), h.started.clone(), h.release.clone());
    let handler = handler_fn(move |job| {
        let payload: Value = serde_json::from_slice(&job.payload).unwrap_or(Value::Null);
        let (runs, started, release) = (runs.clone(), started.clone(), release.clone());
        async move {
            runs.fetch_add(1, Ordering::SeqCst);
            if payload["hold"] == true {
                started.notify_one();
                release.notified().await;
            }
            Outcome::success()
        }
    });
    (h, handler)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_by_ids_and_by_filter_changes_only_jobs_not_started_and_workers_skip_them() {
    let (h, handler) = held();
    let w = Setup::new()
        .queue("held", "handler = \"noop\"\nprefetch = 1")
        .handler("held", handler)
        .queue("other", "handler = \"noop\"")
        .start()
        .await;
    let q = w.q("held");
    let first = w.submit("held", json!({"hold": true})).await;
    h.started.notified().await;
    let mut waiting = Vec::new();
    for n in 0..4 {
        waiting.push(w.submit("held", json!({"n": n})).await);
    }
    let done = w.submit("other", json!({})).await;
    w.wait_status(&done, "succeeded", Duration::from_secs(15))
        .await;
    let unknown = uuid::Uuid::now_v7().to_string();

    // By ids: the two waiting jobs change; the running one, the finished one and an
    // unknown id do not.
    let (status, body) = post(
        &w,
        "/v1/jobs/cancel",
        &json!({"ids": [waiting[0], waiting[1], first, done, unknown, waiting[0]]}),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"cancelled": 2, "not_cancellable": 3}));
    // By filter: the rest of the queue's waiting jobs.
    let (status, body) = post(
        &w,
        "/v1/jobs/cancel",
        &json!({"filter": {"queue": q}}),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"cancelled": 2, "not_cancellable": 3}));
    for id in &waiting {
        assert_eq!(w.job(id).await["status"], "cancelled");
    }
    assert_eq!(w.job(&first).await["status"], "running");
    assert_eq!(w.job(&done).await["status"], "succeeded");

    // The held job finishes; the cancelled ones are delivered after it and skipped, so a
    // job posted last is the second to run.
    h.release.notify_one();
    let last = w.submit("held", json!({})).await;
    w.wait_status(&last, "succeeded", Duration::from_secs(15))
        .await;
    assert_eq!(h.runs.load(Ordering::SeqCst), 2, "cancelled jobs never ran");
    for id in &waiting {
        assert_eq!(w.job(id).await["status"], "cancelled");
    }
    assert_eq!(Raw::connect().await.depth(&q).await, Some(0));

    // Bad requests change nothing.
    let ids: Vec<String> = (0..1_001)
        .map(|_| uuid::Uuid::now_v7().to_string())
        .collect();
    for (body, status) in [
        (json!({}), 400),
        (json!({"ids": [], "filter": {}}), 400),
        (json!({"ids": ids}), 400),
        (json!({"ids": ["not-a-uuid"]}), 400),
        (json!({"filter": {"status": ["finished"]}}), 400),
        (json!({"filter": {"queue": "no-such-queue"}}), 404),
        (json!({"filter": {"sort": "id"}}), 400),
    ] {
        let (got, problem) = post(&w, "/v1/jobs/cancel", &body, None).await;
        assert_eq!(got, status, "{problem}");
    }
}

/// Dead letters of kind `a` or `b` fail until `fixed`; requeue-by-filter moves exactly the
/// `a` ones, which then succeed, and leaves the `b` ones in the DLQ.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requeue_by_filter_moves_exactly_the_matching_dead_jobs_and_they_succeed() {
    let fixed = Arc::new(AtomicBool::new(false));
    let handler = {
        let fixed = fixed.clone();
        handler_fn(move |job| {
            let payload: Value = serde_json::from_slice(&job.payload).unwrap_or(Value::Null);
            let fixed = fixed.load(Ordering::SeqCst);
            async move {
                if fixed {
                    Outcome::success()
                } else {
                    Outcome::permanent(format!(
                        "kind {} broke",
                        payload["kind"].as_str().unwrap_or("?")
                    ))
                }
            }
        })
    };
    let w = Setup::new()
        .queue("fragile", "handler = \"noop\"")
        .handler("fragile", handler)
        .start()
        .await;
    let q = w.q("fragile");
    let mut a = Vec::new();
    let mut b = Vec::new();
    for n in 0..7 {
        let kind = if n % 2 == 0 { "a" } else { "b" };
        let id = w.submit("fragile", json!({"kind": kind, "n": n})).await;
        if kind == "a" { a.push(id) } else { b.push(id) }
    }
    for id in a.iter().chain(&b) {
        w.wait_status(id, "dead", Duration::from_secs(15)).await;
    }
    let raw = Raw::connect().await;
    let dlq = format!("{q}.dlq");
    raw.wait_depth(&dlq, 7, Duration::from_secs(15)).await;
    fixed.store(true, Ordering::SeqCst);

    let (status, body) = post(
        &w,
        "/v1/jobs/requeue",
        &json!({"filter": {"queue": q, "error_contains": "KIND A BROKE"}}),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"requeued": 4, "not_requeued": 0}));
    for id in &a {
        let job = w
            .wait_status(id, "succeeded", Duration::from_secs(15))
            .await;
        assert_eq!(job["attempts"], 1, "attempts reset by the requeue");
    }
    for id in &b {
        assert_eq!(w.job(id).await["status"], "dead");
    }
    raw.wait_depth(&dlq, 3, Duration::from_secs(15)).await;

    // By ids: one dead job, one that succeeded meanwhile, one unknown.
    let unknown = uuid::Uuid::now_v7().to_string();
    let (status, body) = post(
        &w,
        "/v1/jobs/requeue",
        &json!({"ids": [b[0], a[0], unknown]}),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"requeued": 1, "not_requeued": 2}));
    w.wait_status(&b[0], "succeeded", Duration::from_secs(15))
        .await;
    raw.wait_depth(&dlq, 2, Duration::from_secs(15)).await;
    let (status, body) = post(
        &w,
        "/v1/jobs/requeue",
        &json!({"filter": {"status": ["queued"]}}),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"requeued": 0, "not_requeued": 0}),
        "a requeue takes dead jobs only"
    );

    // `warren jobs requeue`: counts with --dry-run, refuses without --yes, then moves the
    // last two dead jobs back, and they succeed.
    let rest = &b[1..];
    let out = warren_jobs(&w, "fragile", "requeue", &["--queue", &q, "--dry-run"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("2 dead job(s) would be requeued; 0 not requeuable"),
        "{}",
        text(&out)
    );
    let out = warren_jobs(&w, "fragile", "requeue", &["--queue", &q]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("add --yes"), "{}", text(&out));
    for id in rest {
        assert_eq!(w.job(id).await["status"], "dead", "nothing changed yet");
    }
    let out = warren_jobs(
        &w,
        "fragile",
        "requeue",
        &["--queue", &q, "--status", "dead", "--yes"],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("requeued 2 job(s)"), "{}", text(&out));
    for id in rest {
        w.wait_status(id, "succeeded", Duration::from_secs(15))
            .await;
    }
    raw.wait_depth(&dlq, 0, Duration::from_secs(15)).await;
}

/// A `jobs`-scope token and an `admin` one (32 characters or more).
const READER: &str = "reader-0123456789abcdef0123456789abcdef";
const ADMIN: &str = "admin-0123456789abcdef0123456789abcdef";

#[tokio::test]
async fn a_jobs_token_searches_but_cannot_act_in_bulk() {
    let w = Setup::new()
        .queue("q", "handler = \"noop\"")
        .tokens(&format!("jobs:{READER}, admin:{ADMIN}"))
        .start()
        .await;
    let resp = w
        .http
        .get(format!("{}/v1/jobs", w.base))
        .bearer_auth(READER)
        .send()
        .await
        .expect("GET");
    assert_eq!(resp.status(), 200);
    let resp = w
        .http
        .get(format!("{}/v1/jobs", w.base))
        .send()
        .await
        .expect("GET");
    assert_eq!(resp.status(), 401);
    for path in ["/v1/jobs/cancel", "/v1/jobs/requeue"] {
        let body = json!({"ids": []});
        let (status, problem) = post(&w, path, &body, Some(READER)).await;
        assert_eq!(status, 403, "{path}: {problem}");
        assert_eq!(problem["type"], "/problems/forbidden");
        let (status, _) = post(&w, path, &body, Some(ADMIN)).await;
        assert_eq!(status, 200, "{path}");
    }
}

/// `warren jobs cancel` with `args` on the test's store.
fn warren_cancel(w: &TestWarren, args: &[&str]) -> Output {
    warren_jobs(w, "held", "cancel", args)
}

/// `warren jobs ACTION ARGS` on the test's store and broker, with queue `alias` configured.
fn warren_jobs(w: &TestWarren, alias: &str, action: &str, args: &[&str]) -> Output {
    let config = w.dir().join("cli.toml");
    std::fs::write(
        &config,
        format!("[queues.\"{}\"]\nhandler = \"noop\"\n", w.q(alias)),
    )
    .expect("write cli.toml");
    Command::new(env!("CARGO_BIN_EXE_warren"))
        .arg("--config")
        .arg(&config)
        .args(["jobs", action])
        .args(args)
        .current_dir(w.dir())
        .env("WARREN_STORE_URL", w.store().url())
        .env("WARREN_AMQP_URL", common::amqp_url())
        .env_remove("WARREN_BIND")
        .output()
        .unwrap_or_else(|e| panic!("run warren jobs {action}: {e}"))
}

/// A command's stdout and stderr.
fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_counts_with_dry_run_refuses_without_yes_and_cancels_with_it() {
    let (h, handler) = held();
    let w = Setup::new()
        .queue("held", "handler = \"noop\"\nprefetch = 1")
        .handler("held", handler)
        .start()
        .await;
    let q = w.q("held");
    let first = w.submit("held", json!({"hold": true})).await;
    h.started.notified().await;
    let mut waiting = Vec::new();
    for _ in 0..3 {
        waiting.push(w.submit("held", json!({})).await);
    }
    let out = warren_cancel(&w, &["--queue", &q, "--dry-run"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("3 job(s) would be cancelled; 1 not cancellable"),
        "{}",
        text(&out)
    );
    let out = warren_cancel(&w, &["--queue", &q]);
    assert!(!out.status.success());
    assert!(text(&out).contains("add --yes"), "{}", text(&out));
    let out = warren_cancel(&w, &[]);
    assert!(!out.status.success(), "no jobs named");
    for id in &waiting {
        assert_eq!(w.job(id).await["status"], "queued", "nothing changed yet");
    }
    let out = warren_cancel(&w, &["--id", &waiting[0], "--yes"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("cancelled 1 job(s)"), "{}", text(&out));
    let out = warren_cancel(&w, &["--queue", &q, "--status", "queued", "--yes"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("cancelled 2 job(s)"), "{}", text(&out));
    for id in &waiting {
        assert_eq!(w.job(id).await["status"], "cancelled");
    }
    assert_eq!(w.job(&first).await["status"], "running");
    h.release.notify_one();
    w.wait_status(&first, "succeeded", Duration::from_secs(15))
        .await;
}
