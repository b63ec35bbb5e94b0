//! Pausing a queue: every worker of it, in every process, stops taking deliveries within 2 s
//! (jobs posted meanwhile wait `ready` in the broker and `queued` in the store), jobs already
//! running finish, the pause survives a worker's restart, and after a resume every job runs.
//! Deliveries a worker already held run once rather than being handed back. Only an `admin`
//! token pauses; an unknown queue is a 404 problem.

mod common;

use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use common::process::{Children, executions, free_port, signal_group, spawn_warren, wait_ready};
use common::{QueueCleanup, Raw, Setup, TestStore, unique};
use reqwest::header::WWW_AUTHENTICATE;
use serde_json::{Value, json};

/// What a consumer logs once its queue is paused and its AMQP consumer cancelled.
const PAUSED: &str = "queue paused; consumer cancelled";
/// What a consumer logs when it starts on a paused queue.
const PARKED: &str = "queue is paused; not consuming until it is resumed";
/// What a consumer logs when its queue is resumed.
const RESUMED: &str = "queue resumed; consuming again";
/// The contract: every worker stops (starts) within this long of a pause (resume).
const WITHIN: Duration = Duration::from_secs(2);

/// Lines of `dir/log` that contain `what` and name `queue`.
fn logged(dir: &Path, log: &str, what: &str, queue: &str) -> usize {
    std::fs::read_to_string(dir.join(log))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(what) && l.contains(queue))
        .count()
}

/// Waits until every log of `logs` has logged `what` for `queue` (once more than `before`
/// said), failing past `deadline` with the logs.
async fn await_logged(
    dir: &Path,
    logs: &[(&str, usize)],
    what: &str,
    queue: &str,
    deadline: Instant,
) {
    loop {
        if logs
            .iter()
            .all(|(log, before)| logged(dir, log, what, queue) > *before)
        {
            return;
        }
        if Instant::now() >= deadline {
            let all: Vec<String> = logs
                .iter()
                .map(|(log, _)| {
                    format!(
                        "--- {log}:\n{}",
                        std::fs::read_to_string(dir.join(log)).unwrap_or_default()
                    )
                })
                .collect();
            panic!(
                "not every process logged `{what}` in time:\n{}",
                all.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// True when any of `ids` ran (its execution is recorded in `dir`).
fn ran_any(dir: &Path, ids: &[String]) -> bool {
    executions(dir).iter().any(|(id, _)| ids.contains(id))
}

/// Polls until `queue` has `want` consumers on the broker (passive declare).
async fn await_consumers(raw: &Raw, queue: &str, want: u32, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let now = raw.consumers(queue).await;
        if now == Some(want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{queue} has {now:?} consumers, not {want}, after {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Stops `child` with SIGTERM and waits (20 s at most) for it to exit, asserting exit 0.
async fn stop(child: &mut Child) {
    signal_group(child.id(), "TERM");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            assert!(status.success(), "a paused worker stops cleanly: {status}");
            return;
        }
        assert!(Instant::now() < deadline, "warren did not stop within 20 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `GET /v1/queues`'s entry for `queue`.
async fn overview(http: &reqwest::Client, base: &str, queue: &str) -> Value {
    common::queue_entry_at(http, base, queue).await.0
}

/// Runs `warren ARGS` in `dir` against the test's broker and store; asserts success and
/// returns stdout.
fn cli(dir: &Path, store_url: &str, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_warren"))
        .args(args)
        .current_dir(dir)
        .env("WARREN_AMQP_URL", common::amqp_url())
        .env("WARREN_STORE_URL", store_url)
        .env_remove("WARREN_CONFIG")
        .output()
        .expect("run warren");
    assert!(
        out.status.success(),
        "warren {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

/// Writes `dir/queues.toml` with one queue `queue` (prefetch 4, `concurrency`) whose handler,
/// `dir/hold.sh`, records each execution (see `common::process::executions`, with the
/// process's `WORKER_NAME`) and, for a payload containing "hold", runs until the file named
/// by `$RELEASE` exists.
fn write_holding_queue(dir: &Path, queue: &str, concurrency: usize) {
    std::fs::write(
        dir.join("hold.sh"),
        "#!/bin/sh\npayload=$(cat)\nprintf '%s %s %s\\n' \"$WARREN_JOB_ID\" \"$WORKER_NAME\" \"$(date +%s%3N)\" >> \"$EXEC_LOG\"\n\
         case \"$payload\" in *hold*) while [ ! -e \"$RELEASE\" ]; do sleep 0.05; done ;; esac\n",
    )
    .expect("script");
    std::fs::set_permissions(
        dir.join("hold.sh"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod");
    std::fs::write(
        dir.join("queues.toml"),
        format!(
            "[worker]\nshutdown_grace = \"5s\"\n\n[queues.\"{queue}\"]\nhandler = {{ exec = [\"hold.sh\"] }}\n\
             prefetch = 4\nconcurrency = {concurrency}\ntimeout = \"60s\"\n"
        ),
    )
    .expect("config");
}

/// `GET /v1/jobs/{id}` as JSON.
async fn job(http: &reqwest::Client, base: &str, id: &str) -> Value {
    common::job_at(http, base, id).await
}

/// Polls job `id` until it is `succeeded` (30 s at most); returns it.
async fn await_succeeded(http: &reqwest::Client, base: &str, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let now = job(http, base, id).await;
        if now["status"] == "succeeded" {
            return now;
        }
        assert!(Instant::now() < deadline, "job {id} did not succeed: {now}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_pause_stops_every_process_and_a_resume_runs_what_waited() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dir = dir.path();
    let q = unique("pause");
    let _cleanup = QueueCleanup(vec![q.clone(), format!("{q}.dlq")]);
    write_holding_queue(dir, &q, 4);
    let store = TestStore::new(dir).await;
    let release = dir.join("release");
    let release = release.to_str().expect("utf-8 path");

    // Two worker processes: `a` also serves HTTP.
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let env_a = [("WORKER_NAME", "a"), ("RELEASE", release)];
    let env_b = [("WORKER_NAME", "b"), ("RELEASE", release)];
    let mut a = spawn_warren(dir, store.url(), &["run"], port, "a.log", &env_a);
    let mut b = spawn_warren(dir, store.url(), &["work"], free_port(), "b.log", &env_b);
    let mut children = Children(vec![a.id(), b.id()]);
    wait_ready(&base, dir, "a.log").await;
    let raw = Raw::connect().await;
    await_consumers(&raw, &q, 2, Duration::from_secs(30)).await;
    let http = reqwest::Client::new();
    let post = |payload: Value| {
        let (http, url) = (http.clone(), format!("{base}/v1/queues/{q}/jobs"));
        async move {
            common::accepted_id(
                http.post(url)
                    .json(&json!({ "payload": payload }))
                    .send()
                    .await
                    .expect("POST"),
            )
            .await
        }
    };
    let status = |id: String| {
        let (http, url) = (http.clone(), format!("{base}/v1/jobs/{id}"));
        async move {
            let job: Value = http
                .get(url)
                .send()
                .await
                .expect("GET")
                .json()
                .await
                .expect("json");
            job["status"].as_str().unwrap_or_default().to_owned()
        }
    };
    let wait_succeeded = |id: String| async move {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let now = status(id.clone()).await;
            if now == "succeeded" {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "job {id} is `{now}`, not succeeded"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };

    // A job runs (and holds) when the pause comes.
    let held = post(json!("hold")).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    while !executions(dir).iter().any(|(id, _)| *id == held) {
        assert!(Instant::now() < deadline, "the held job did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Pause over HTTP: both processes cancel their consumers within 2 s.
    let resp = http
        .post(format!("{base}/v1/queues/{q}/pause"))
        .send()
        .await
        .expect("pause");
    let paused_at = Instant::now();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body, json!({ "queue": q, "paused": true, "changed": true }));
    await_logged(
        dir,
        &[("a.log", 0), ("b.log", 0)],
        PAUSED,
        &q,
        paused_at + WITHIN,
    )
    .await;
    let e = overview(&http, &base, &q).await;
    assert_eq!(e["paused"], true, "{e}");
    // Pausing again changes nothing.
    let again: Value = http
        .post(format!("{base}/v1/queues/{q}/pause"))
        .send()
        .await
        .expect("pause")
        .json()
        .await
        .expect("json");
    assert_eq!(again["changed"], false, "{again}");

    // The intake keeps accepting; the jobs wait ready in the broker and queued in the store.
    let mut waiting = Vec::new();
    for n in 0..10 {
        waiting.push(post(json!({ "n": n })).await);
    }
    assert_eq!(
        raw.depth(&q).await,
        Some(10),
        "the new jobs wait in the broker"
    );
    for id in &waiting {
        assert_eq!(status(id.clone()).await, "queued", "job {id}");
    }
    assert_eq!(overview(&http, &base, &q).await["ready"], 10);

    // The job that was running when the pause came finishes. (Until its ack, the quorum queue
    // still counts the cancelled consumer that holds it.)
    std::fs::write(release, b"").expect("release");
    wait_succeeded(held.clone()).await;
    await_consumers(&raw, &q, 0, WITHIN).await;
    let e = overview(&http, &base, &q).await;
    assert_eq!(
        (e["ready"].clone(), e["consumers"].clone()),
        (json!(10), json!(0)),
        "{e}"
    );
    assert!(
        !ran_any(dir, &waiting),
        "no job posted during the pause ran"
    );

    // Worker `b` restarts while the queue is paused: it does not consume.
    stop(&mut b).await;
    let mut b2 = spawn_warren(dir, store.url(), &["work"], free_port(), "b2.log", &env_b);
    children.0.push(b2.id());
    await_logged(
        dir,
        &[("b2.log", 0)],
        PARKED,
        &q,
        Instant::now() + Duration::from_secs(30),
    )
    .await;
    assert_eq!(
        raw.consumers(&q).await,
        Some(0),
        "the restarted worker does not consume"
    );
    assert_eq!(raw.depth(&q).await, Some(10));
    assert!(
        !ran_any(dir, &waiting),
        "no job posted during the pause ran"
    );

    // `warren queues` shows it; `warren queues resume` resumes: both processes consume again
    // within 2 s and every job that waited succeeds.
    let table = cli(dir, store.url(), &["queues"]);
    let header: Vec<&str> = table
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    let row: Vec<&str> = table
        .lines()
        .find(|l| l.starts_with(&q))
        .unwrap_or_else(|| panic!("no row for {q}:\n{table}"))
        .split_whitespace()
        .collect();
    let paused = header
        .iter()
        .position(|h| *h == "PAUSED")
        .unwrap_or_else(|| panic!("no PAUSED column:\n{table}"));
    assert_eq!(row.get(paused), Some(&"yes"), "{table}");
    let before = [
        ("a.log", logged(dir, "a.log", RESUMED, &q)),
        ("b2.log", logged(dir, "b2.log", RESUMED, &q)),
    ];
    let out = cli(dir, store.url(), &["queues", "resume", &q]);
    let resumed_at = Instant::now();
    assert!(out.contains(&format!("resumed {q}")), "{out}");
    await_logged(dir, &before, RESUMED, &q, resumed_at + WITHIN).await;
    for id in &waiting {
        wait_succeeded(id.clone()).await;
    }
    let e = overview(&http, &base, &q).await;
    assert_eq!(e["paused"], false, "{e}");
    await_consumers(&raw, &q, 2, Duration::from_secs(5)).await;
    let out = cli(dir, store.url(), &["queues", "resume", &q]);
    assert!(out.contains("was not paused"), "{out}");

    stop(&mut a).await;
    stop(&mut b2).await;
    children.0.clear();
}

const ADMIN: &str = "adm-5e2d3c4b5a6f7e8d9c0b1a2f3e4d5c6b";
const JOBS: &str = "job-1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6e";

#[tokio::test]
async fn only_admin_pauses_and_an_unknown_queue_is_a_404_problem() {
    let w = Setup::new()
        .queue("pq", "handler = \"noop\"")
        .role(warren::Role::Intake)
        .tokens(&format!("admin:{ADMIN}, jobs:{JOBS}"))
        .start()
        .await;
    let q = w.q("pq");
    let url = |q: &str, action: &str| format!("{}/v1/queues/{q}/{action}", w.base);

    for action in ["pause", "resume"] {
        let resp = w.http.post(url(&q, action)).send().await.expect("post");
        assert_eq!(resp.status(), 401, "{action} without a token");
        let resp = w
            .http
            .post(url(&q, action))
            .bearer_auth(JOBS)
            .send()
            .await
            .expect("post");
        assert_eq!(resp.status(), 403, "{action} with a jobs token");
        assert!(
            resp.headers()[WWW_AUTHENTICATE]
                .to_str()
                .expect("ascii")
                .contains("scope=\"admin\"")
        );
        let problem: Value = resp.json().await.expect("problem");
        assert_eq!(problem["type"], "/problems/forbidden");

        let resp = w
            .http
            .post(url("no-such-queue", action))
            .bearer_auth(ADMIN)
            .send()
            .await
            .expect("post");
        assert_eq!(resp.status(), 404, "{action} of an unknown queue");
        assert_eq!(
            resp.headers()["content-type"].to_str().expect("ascii"),
            "application/problem+json"
        );
        let problem: Value = resp.json().await.expect("problem");
        assert_eq!(problem["type"], "/problems/unknown-queue");
    }
    // Nothing was paused by the refused requests.
    let queues = |token: &'static str| {
        let (http, base) = (w.http.clone(), w.base.clone());
        async move {
            let all: Value = http
                .get(format!("{base}/v1/queues"))
                .bearer_auth(token)
                .send()
                .await
                .expect("get")
                .json()
                .await
                .expect("json");
            all
        }
    };
    assert_eq!(queues(JOBS).await["queues"][0]["paused"], false);
    assert!(
        w.store()
            .open()
            .await
            .queues_paused()
            .await
            .expect("read")
            .is_empty()
    );

    let resp = w
        .http
        .post(url(&q, "pause"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status(), 200);
    assert_eq!(queues(JOBS).await["queues"][0]["paused"], true);
    let resp = w
        .http
        .post(url(&q, "resume"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .expect("post");
    let body: Value = resp.json().await.expect("json");
    assert_eq!(
        body,
        json!({ "queue": q, "paused": false, "changed": true })
    );
    assert_eq!(queues(JOBS).await["queues"][0]["paused"], false);
    w.stop().await.expect("clean stop");
}

/// With `concurrency` below `prefetch`, deliveries wait in the worker for a free slot. A pause
/// lets them run (they are not handed back, which would count against the quorum queue's
/// delivery limit): each runs once, on its first attempt, while jobs posted after the pause
/// wait in the broker.
#[tokio::test]
async fn deliveries_a_worker_held_when_paused_run_once_and_later_jobs_wait() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dir = dir.path();
    let q = unique("prefetched");
    let _cleanup = QueueCleanup(vec![q.clone(), format!("{q}.dlq")]);
    write_holding_queue(dir, &q, 1);
    let store = TestStore::new(dir).await;
    let release = dir.join("release");
    let release = release.to_str().expect("utf-8 path");
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let env = [("WORKER_NAME", "a"), ("RELEASE", release)];
    let mut a = spawn_warren(dir, store.url(), &["run"], port, "a.log", &env);
    let mut children = Children(vec![a.id()]);
    wait_ready(&base, dir, "a.log").await;
    let raw = Raw::connect().await;
    await_consumers(&raw, &q, 1, Duration::from_secs(30)).await;
    let http = reqwest::Client::new();
    let post = |payload: Value| {
        let (http, url) = (http.clone(), format!("{base}/v1/queues/{q}/jobs"));
        async move {
            common::accepted_id(
                http.post(url)
                    .json(&json!({ "payload": payload }))
                    .send()
                    .await
                    .expect("POST"),
            )
            .await
        }
    };

    // One job holds the only slot; three more are delivered behind it (prefetch 4).
    let held = post(json!("hold")).await;
    let mut behind = Vec::new();
    for n in 0..3 {
        behind.push(post(json!({ "n": n })).await);
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    while !(executions(dir).iter().any(|(id, _)| *id == held) && raw.depth(&q).await == Some(0)) {
        assert!(Instant::now() < deadline, "the jobs were not delivered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!ran_any(dir, &behind), "the slot is taken");

    let resp = http
        .post(format!("{base}/v1/queues/{q}/pause"))
        .send()
        .await
        .expect("pause");
    assert_eq!(resp.status(), 200);
    await_logged(dir, &[("a.log", 0)], PAUSED, &q, Instant::now() + WITHIN).await;
    let later = post(json!("later")).await;
    std::fs::write(release, b"").expect("release");
    for id in behind.iter().chain([&held]) {
        let done = await_succeeded(&http, &base, id).await;
        assert_eq!(done["attempts"], 1, "ran on its first attempt: {done}");
    }
    let runs = executions(dir);
    for id in &behind {
        assert_eq!(
            runs.iter().filter(|(r, _)| r == id).count(),
            1,
            "{id} ran once"
        );
    }
    assert!(
        logged(
            dir,
            "a.log",
            "started the jobs delivered before the pause took effect",
            &q
        ) == 1,
        "the log says the held deliveries ran"
    );
    // They ran during the pause: handed back, they would wait in the queue with `later`.
    assert_eq!(
        raw.depth(&q).await,
        Some(1),
        "only the job posted after the pause waits"
    );
    assert_eq!(job(&http, &base, &later).await["status"], "queued");

    let resp = http
        .post(format!("{base}/v1/queues/{q}/resume"))
        .send()
        .await
        .expect("resume");
    assert_eq!(resp.status(), 200);
    await_succeeded(&http, &base, &later).await;
    stop(&mut a).await;
    children.0.clear();
}
