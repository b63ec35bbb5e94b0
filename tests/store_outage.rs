//! The store goes away and comes back, on the store `WARREN_TEST_STORE` picks (SQLite: another
//! process holds its write lock; PostgreSQL: the server ends warren's sessions and refuses new
//! ones, as a restart does): `/readyz` says `store` is down meanwhile, and the workers lose no
//! job. A job whose success cannot be recorded, and a delivery that cannot be claimed, are
//! handed back (nack, requeue); once the store answers the worker goes on by itself (the pool
//! reconnects), every accepted job ends `succeeded`, and only a job that was running when the
//! store failed may run a second time (after its lease, as the claim allows).

mod common;

use std::collections::HashMap;
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use common::{Raw, Setup};
use serde_json::{Value, json};
use warren::workers::{Handler, Outcome, handler_fn};

/// Everything warren logs in this test binary (text, no colours), for waiting on what the
/// worker reports and for showing it when an assertion fails.
fn logs() -> &'static Mutex<Vec<u8>> {
    static LOGS: OnceLock<&'static Mutex<Vec<u8>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buf: &'static Mutex<Vec<u8>> = Box::leak(Box::new(Mutex::new(Vec::new())));
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(
                "info,sqlx=warn,lapin=warn",
            ))
            .with_ansi(false)
            .with_writer(move || LogWriter(buf))
            .try_init();
        buf
    })
}

struct LogWriter(&'static Mutex<Vec<u8>>);

impl Write for LogWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .extend_from_slice(b);
        Ok(b.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The log lines (so far) that contain every one of `needles`.
fn log_lines(needles: &[&str]) -> Vec<String> {
    let text = String::from_utf8_lossy(
        &logs()
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    )
    .into_owned();
    text.lines()
        .filter(|l| needles.iter().all(|n| l.contains(n)))
        .map(str::to_owned)
        .collect()
}

/// A handler that counts the runs of each job and holds every run until [`Latch::open`].
#[derive(Clone)]
struct Latch {
    started: Arc<AtomicUsize>,
    runs: Arc<Mutex<HashMap<String, u32>>>,
    open: Arc<tokio::sync::watch::Sender<bool>>,
}

impl Latch {
    fn new() -> (Self, impl Handler) {
        let latch = Self {
            started: Arc::default(),
            runs: Arc::default(),
            open: Arc::new(tokio::sync::watch::Sender::new(false)),
        };
        let l = latch.clone();
        let handler = handler_fn(move |job| {
            let l = l.clone();
            async move {
                *l.runs
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .entry(job.id.clone())
                    .or_default() += 1;
                l.started.fetch_add(1, Ordering::SeqCst);
                let _ = l.open.subscribe().wait_for(|open| *open).await;
                Outcome::success()
            }
        });
        (latch, handler)
    }

    /// Lets every held run, and every later one, succeed.
    fn open(&self) {
        self.open.send_replace(true);
    }

    /// Runs of `id` so far.
    fn runs(&self, id: &str) -> u32 {
        self.runs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(id)
            .copied()
            .unwrap_or(0)
    }

    /// Waits (at most `within`) until `n` runs have started.
    async fn wait_started(&self, n: usize, within: Duration) {
        let deadline = Instant::now() + within;
        while self.started.load(Ordering::SeqCst) < n {
            assert!(
                Instant::now() < deadline,
                "{} of {n} runs started within {within:?}",
                self.started.load(Ordering::SeqCst)
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// `GET /readyz`: its status and JSON body.
async fn readyz(w: &common::TestWarren) -> (u16, Value) {
    let resp = w
        .http
        .get(format!("{}/readyz", w.base))
        .send()
        .await
        .expect("GET /readyz");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// Polls `/readyz` until `done(status, body)` (at most `within`) and returns the last answer.
async fn readyz_until(
    w: &common::TestWarren,
    within: Duration,
    done: impl Fn(u16, &Value) -> bool,
) -> (u16, Value) {
    let deadline = Instant::now() + within;
    loop {
        let (status, body) = readyz(w).await;
        if done(status, &body) || Instant::now() >= deadline {
            return (status, body);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn readyz_says_the_store_is_down_while_it_is_and_ready_once_it_is_back() {
    logs();
    let w = Setup::new()
        .queue("ready", "handler = \"noop\"")
        .start()
        .await;
    let backend = w.store().backend().name();
    let (status, body) = readyz(&w).await;
    assert_eq!(status, 200, "ready before the outage: {body}");

    let outage = w.store_down().await;
    let down_at = Instant::now();
    let (status, body) = readyz_until(&w, Duration::from_secs(30), |s, _| s == 503).await;
    assert_eq!(
        status, 503,
        "{backend}: /readyz while the store is down: {body}"
    );
    let store = body["store"].as_str().unwrap_or_default();
    assert!(
        !store.is_empty() && store != "ok",
        "{backend}: /readyz names the store as what is missing: {body}"
    );
    assert_eq!(body["broker"], "ok", "only the store is down: {body}");
    assert_eq!(body["status"], "unavailable", "{body}");
    eprintln!(
        "{backend}: /readyz 503 {} ms after the outage began: {body}",
        down_at.elapsed().as_millis()
    );

    outage.end().await;
    let up_at = Instant::now();
    let (status, body) = readyz_until(&w, Duration::from_secs(30), |s, _| s == 200).await;
    assert_eq!(
        status, 200,
        "{backend}: /readyz once the store is back: {body}"
    );
    assert_eq!(body["store"], "ok", "{body}");
    eprintln!(
        "{backend}: /readyz 200 {} ms after the store came back",
        up_at.elapsed().as_millis()
    );
    w.stop().await.expect("clean stop");
}

/// Jobs running when the store fails.
const HELD: usize = 4;
/// Jobs prefetched behind them, not yet started when the store fails.
const BEHIND: usize = 4;
/// Jobs posted once the store is back.
const AFTER: usize = 4;

#[tokio::test]
async fn jobs_whose_workers_meet_a_store_outage_all_succeed_and_the_worker_goes_on_by_itself() {
    logs();
    let (latch, handler) = Latch::new();
    // Lease = timeout (10 s) + 5 s: a job whose success could not be recorded runs again
    // once its lease has passed.
    let w = Setup::new()
        .queue(
            "out",
            &format!("handler = \"noop\"\nprefetch = {}\nconcurrency = {HELD}\ntimeout = \"10s\"\nmax_attempts = 5", HELD + BEHIND),
        )
        .handler("out", handler)
        .start()
        .await;
    let backend = w.store().backend().name();
    let q = w.q("out");
    let raw = Raw::connect().await;

    let mut held = Vec::new();
    for n in 0..HELD {
        held.push(w.submit("out", json!({ "held": n })).await);
    }
    latch.wait_started(HELD, Duration::from_secs(20)).await;
    let mut behind = Vec::new();
    for n in 0..BEHIND {
        behind.push(w.submit("out", json!({ "behind": n })).await);
    }
    // Every run holds a slot, so the later jobs wait in the worker's prefetch or the queue.
    for id in &behind {
        let job = w.job(id).await;
        assert_eq!(job["status"], "queued", "{job}");
    }

    // The store fails under the running jobs, then they finish: their successes cannot be
    // recorded; the jobs behind them cannot be claimed until it is back.
    let outage = w.store_down().await;
    let down_at = Instant::now();
    latch.open();
    // Wait until the worker has handed back (nack, requeue) every running job: it tried to
    // record the success and gave up.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let handed_back = held
            .iter()
            .filter(|id| !log_lines(&[id.as_str(), "handing"]).is_empty())
            .count();
        if handed_back == HELD {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{backend}: {handed_back} of {HELD} running jobs were handed back within 120 s of the store going down; the log:\n{}",
            log_lines(&[&q]).join("\n")
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let outage_took = down_at.elapsed();
    outage.end().await;
    let up_at = Instant::now();

    // Nothing is lost: every job ends `succeeded`, none dead-lettered.
    for id in held.iter().chain(&behind) {
        w.wait_status(id, "succeeded", Duration::from_secs(90))
            .await;
    }
    let recovered_in = up_at.elapsed();
    assert_eq!(
        raw.depth(&format!("{q}.dlq")).await,
        Some(0),
        "{backend}: nothing was dead-lettered"
    );

    // The worker goes on without a restart: new jobs are accepted at once and run once.
    let mut after = Vec::new();
    for n in 0..AFTER {
        after.push(w.submit("out", json!({ "after": n })).await);
    }
    for id in &after {
        w.wait_status(id, "succeeded", Duration::from_secs(30))
            .await;
    }
    assert_eq!(raw.depth(&q).await, Some(0), "the work queue is empty");

    // Runs: a job that was running when the store failed ran again after its lease (its
    // success was not recorded); the others ran once.
    let held_runs: Vec<u32> = held.iter().map(|id| latch.runs(id)).collect();
    let behind_runs: Vec<u32> = behind.iter().map(|id| latch.runs(id)).collect();
    let after_runs: Vec<u32> = after.iter().map(|id| latch.runs(id)).collect();
    let mut attempts = Vec::new();
    for id in &held {
        attempts.push(w.job(id).await["attempts"].as_u64().unwrap_or(0));
    }
    let claim_handbacks = behind
        .iter()
        .map(|id| log_lines(&[id.as_str(), "handing"]).len())
        .sum::<usize>();
    eprintln!(
        "{backend}: outage {} ms until every running job was handed back; all {} earlier jobs \
         succeeded {} ms after the store came back; runs: held {held_runs:?} (attempts \
         {attempts:?}), behind {behind_runs:?}, after {after_runs:?}; hand-backs of the jobs \
         behind: {claim_handbacks}",
        outage_took.as_millis(),
        HELD + BEHIND,
        recovered_in.as_millis(),
    );
    assert!(
        held_runs.iter().all(|n| (1..=2).contains(n)),
        "{backend}: a running job runs at most twice (once more after its lease): {held_runs:?}"
    );
    assert!(
        behind_runs.iter().all(|n| *n == 1),
        "{backend}: a job not yet started when the store failed runs once: {behind_runs:?}"
    );
    assert!(
        after_runs.iter().all(|n| *n == 1),
        "{backend}: jobs after the outage run once: {after_runs:?}"
    );
    w.stop().await.expect("clean stop");
}

/// Jobs whose first attempt is due while the store is down.
const DUE_IN_OUTAGE: usize = 3;

#[tokio::test]
async fn a_delivery_that_cannot_be_claimed_is_handed_back_and_runs_once_the_store_is_back() {
    logs();
    let (latch, handler) = Latch::new();
    latch.open();
    let w = Setup::new()
        .queue("late", "handler = \"noop\"")
        .handler("late", handler)
        .start()
        .await;
    let backend = w.store().backend().name();
    let q = w.q("late");
    let raw = Raw::connect().await;

    // Accepted now, delivered from the delay levels in about 2 s: into the outage.
    let mut late = Vec::new();
    for n in 0..DUE_IN_OUTAGE {
        let resp = w
            .post(
                "late",
                &json!({ "payload": { "late": n }, "delay_ms": 2000 }),
            )
            .await;
        late.push(common::accepted_id(resp).await);
    }
    let outage = w.store_down().await;
    let down_at = Instant::now();
    // Wait until the worker met the outage with one of them: it could not claim it and
    // handed the delivery back (nack, requeue).
    let deadline = Instant::now() + Duration::from_secs(120);
    let met = loop {
        let met: Vec<&String> = late
            .iter()
            .filter(|id| !log_lines(&[id.as_str(), "handing"]).is_empty())
            .collect();
        if !met.is_empty() {
            break met.len();
        }
        assert!(
            Instant::now() < deadline,
            "{backend}: no delivery was handed back within 120 s of the store going down; the log:\n{}",
            log_lines(&[&q]).join("\n")
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let outage_took = down_at.elapsed();
    assert_eq!(
        latch.started.load(Ordering::SeqCst),
        0,
        "{backend}: nothing runs without a claim"
    );
    outage.end().await;
    let up_at = Instant::now();

    for id in &late {
        w.wait_status(id, "succeeded", Duration::from_secs(60))
            .await;
    }
    let recovered_in = up_at.elapsed();
    let runs: Vec<u32> = late.iter().map(|id| latch.runs(id)).collect();
    let handbacks: usize = late
        .iter()
        .map(|id| log_lines(&[id.as_str(), "handing"]).len())
        .sum();
    eprintln!(
        "{backend}: {met} of {DUE_IN_OUTAGE} deliveries handed back {} ms into the outage \
         ({handbacks} hand-backs in all); all succeeded {} ms after the store came back; runs \
         {runs:?}",
        outage_took.as_millis(),
        recovered_in.as_millis()
    );
    assert!(
        runs.iter().all(|n| *n == 1),
        "{backend}: a job never claimed before runs once: {runs:?}"
    );
    assert_eq!(
        raw.depth(&format!("{q}.dlq")).await,
        Some(0),
        "{backend}: nothing was dead-lettered"
    );
    // And the worker goes on: a new job runs at once.
    let id = w.submit("late", json!({ "after": true })).await;
    w.wait_status(&id, "succeeded", Duration::from_secs(30))
        .await;
    assert_eq!(latch.runs(&id), 1);
    w.stop().await.expect("clean stop");
}
