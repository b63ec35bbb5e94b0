//! Faults under load (DESIGN §2): while a load generator POSTs a steady ~150 jobs/s to a
//! `warren serve` intake, and a `warren work` process runs them with an `exec` handler that
//! records every execution of every job id, the broker is stopped and started twice
//! (`rabbitmqctl stop_app` / `start_app`) and restarted once in full (`rabbitmqctl stop`, then
//! `scripts/ensure-rabbitmq`), the worker is killed with SIGKILL five times and restarted, and
//! the intake gets SIGTERM mid-load and is restarted.
//!
//! Then: every job that got a 202 ends `succeeded`; each ran exactly once, except jobs in
//! flight at a SIGKILL, which may run twice; no request sent while the broker was stopped got
//! a 202; every 503 carried `Retry-After`; after each outage the intake accepted again within
//! 5 s of the broker. The figures are printed and written to `target/faults.json`
//! (`target/faults-postgres.json` on PostgreSQL; RELIABILITY.md holds a run's numbers).
//!
//! Alone in its test binary, bounded to 8 minutes: it stops and restarts the shared broker,
//! which must be a local one that `rabbitmqctl` controls. The store is the one
//! `WARREN_TEST_STORE` picks (SQLite, or a PostgreSQL database of the test's own), read
//! through warren's store trait.

mod common;

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::process::{
    Children, executions, rabbitmqctl, signal_group, spawn_warren, wait_ready,
    write_recording_queue,
};
use common::{QueueCleanup, TestStore, unique};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

/// POSTs per second of the load generator.
const RATE: u64 = 150;
/// SIGKILLs of the worker.
const KILLS: usize = 5;
/// The worker's `concurrency`: at most this many jobs are in flight at a SIGKILL.
const CONCURRENCY: usize = 8;
/// Longest the intake may take to accept again once the broker is back.
const RECOVERY_BOUND: Duration = Duration::from_secs(5);

/// What one POST of the load generator got.
#[derive(Clone, Debug)]
enum Outcome {
    Accepted(String),
    Unavailable { retry_after: bool },
    Status(u16),
    NoAnswer,
}

#[derive(Clone, Debug)]
struct Sample {
    sent: Instant,
    done: Instant,
    outcome: Outcome,
}

type Samples = Arc<Mutex<Vec<Sample>>>;

fn lock(s: &Samples) -> std::sync::MutexGuard<'_, Vec<Sample>> {
    s.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Posts `RATE` jobs per second, each request on its own task (so a slow answer during an
/// outage does not slow the rate), until `stop`.
async fn load(url: String, samples: Samples, stop: CancellationToken) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / RATE));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let tasks = tokio_util::task::TaskTracker::new();
    let mut n = 0u64;
    while !stop.is_cancelled() {
        tick.tick().await;
        n += 1;
        let (http, url, samples) = (http.clone(), url.clone(), samples.clone());
        tasks.spawn(async move {
            let sent = Instant::now();
            let outcome = match http
                .post(&url)
                .json(&json!({"payload": {"n": n}}))
                .send()
                .await
            {
                Ok(resp) if resp.status() == 202 => match resp.json::<Value>().await {
                    Ok(job) => Outcome::Accepted(job["id"].as_str().unwrap_or_default().to_owned()),
                    Err(_) => Outcome::NoAnswer,
                },
                Ok(resp) if resp.status() == 503 => Outcome::Unavailable {
                    retry_after: resp.headers().contains_key("retry-after"),
                },
                Ok(resp) => Outcome::Status(resp.status().as_u16()),
                Err(_) => Outcome::NoAnswer,
            };
            lock(&samples).push(Sample {
                sent,
                done: Instant::now(),
                outcome,
            });
        });
    }
    tasks.close();
    tasks.wait().await;
}

/// Runs `rabbitmqctl args`, failing loudly when it is missing or fails.
struct Scenario {
    dir: PathBuf,
    store: TestStore,
    port: u16,
    samples: Samples,
    events: Vec<(String, Duration)>,
    recoveries: Vec<(String, Duration)>,
    outages: Vec<(Instant, Instant)>,
    start: Instant,
    children: Children,
}

impl Scenario {
    fn note(&mut self, what: &str) {
        self.events.push((what.to_owned(), self.start.elapsed()));
        eprintln!("[{:>6.1}s] {what}", self.start.elapsed().as_secs_f64());
    }

    fn accepted(&self) -> usize {
        lock(&self.samples)
            .iter()
            .filter(|s| matches!(s.outcome, Outcome::Accepted(_)))
            .count()
    }

    /// Waits until `n` more jobs were accepted (paces the scenario by the load, not a clock).
    async fn wait_accepted(&self, n: usize, what: &str) {
        let target = self.accepted() + n;
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.accepted() < target {
            assert!(
                Instant::now() < deadline,
                "{what}: fewer than {n} jobs accepted in 60 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits for an answer that matches `pred` to a request sent after `since`; returns
    /// when it arrived.
    async fn wait_answer(
        &self,
        since: Instant,
        what: &str,
        pred: impl Fn(&Outcome) -> bool,
    ) -> Instant {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(s) = lock(&self.samples)
                .iter()
                .filter(|s| s.sent >= since && pred(&s.outcome))
                .min_by_key(|s| s.done)
            {
                return s.done;
            }
            assert!(Instant::now() < deadline, "{what}: not seen within 60 s");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn wait_ready(&self) {
        wait_ready(
            &format!("http://127.0.0.1:{}", self.port),
            &self.dir,
            "intake.log",
        )
        .await;
    }

    fn spawn(&mut self, args: &[&str], log: &str) -> Child {
        let child = spawn_warren(&self.dir, self.store.url(), args, self.port, log, &[]);
        self.children.0.push(child.id());
        child
    }

    /// One broker outage: `stop` it, see a 503 with Retry-After, `start` it, and measure the
    /// time from the broker being back to the intake's first 202.
    async fn outage(&mut self, what: &str, stop: impl FnOnce(), start: impl FnOnce()) {
        self.note(&format!("{what}: stopping the broker"));
        stop();
        let down = Instant::now();
        self.wait_answer(down, "a 503 during the outage", |o| {
            matches!(o, Outcome::Unavailable { .. })
        })
        .await;
        // Keep the broker away for a second's worth of requests, all of which must be
        // refused (checked at the end).
        let deadline = Instant::now() + Duration::from_secs(30);
        while lock(&self.samples)
            .iter()
            .filter(|x| x.sent >= down)
            .count()
            < RATE as usize
        {
            assert!(Instant::now() < deadline, "{what}: the load stalled");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.note(&format!("{what}: intake answers 503; starting the broker"));
        let up_begin = Instant::now();
        start();
        let up = Instant::now();
        self.outages.push((down, up_begin));
        let first = self
            .wait_answer(up, "a 202 after the outage", |o| {
                matches!(o, Outcome::Accepted(_))
            })
            .await;
        let took = first.saturating_duration_since(up);
        self.recoveries.push((what.to_owned(), took));
        self.note(&format!(
            "{what}: broker back; intake accepting again after {} ms",
            took.as_millis()
        ));
    }
}

#[tokio::test]
async fn nothing_accepted_is_lost_through_broker_restarts_worker_kills_and_an_intake_restart() {
    tokio::time::timeout(Duration::from_secs(480), scenario())
        .await
        .expect("the faults scenario finished within 8 minutes");
}

async fn scenario() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().to_path_buf();
    let q = unique("faults");
    let _cleanup = QueueCleanup(vec![q.clone(), format!("{q}.dlq")]);
    write_recording_queue(&dir, &q, CONCURRENCY);
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let mut s = Scenario {
        dir: dir.clone(),
        store: TestStore::new(&dir).await,
        port,
        samples: Samples::default(),
        events: Vec::new(),
        recoveries: Vec::new(),
        outages: Vec::new(),
        start: Instant::now(),
        children: Children::default(),
    };

    let mut worker = s.spawn(&["work"], "worker.log");
    let mut intake = s.spawn(&["serve"], "intake.log");
    s.wait_ready().await;
    let stop_load = CancellationToken::new();
    let load_task = tokio::spawn(load(
        format!("http://127.0.0.1:{port}/v1/queues/{q}/jobs"),
        s.samples.clone(),
        stop_load.clone(),
    ));
    s.note("load started");
    s.wait_accepted(300, "warm-up").await;

    for i in 1..=2 {
        s.outage(
            &format!("stop_app #{i}"),
            || rabbitmqctl(&["stop_app"]),
            || {
                rabbitmqctl(&["start_app"]);
                rabbitmqctl(&["await_startup"]);
            },
        )
        .await;
        s.wait_accepted(300, "after stop_app").await;
    }
    let repo = common::repo();
    s.outage(
        "full restart",
        || rabbitmqctl(&["stop"]),
        || {
            let status = Command::new(repo.join("scripts/ensure-rabbitmq"))
                .status()
                .expect("scripts/ensure-rabbitmq");
            assert!(
                status.success(),
                "scripts/ensure-rabbitmq could not start the broker"
            );
            rabbitmqctl(&["await_startup"]);
        },
    )
    .await;
    s.wait_accepted(300, "after the full restart").await;

    for i in 1..=KILLS {
        signal_group(worker.id(), "KILL");
        let _ = worker.wait();
        s.note(&format!("worker SIGKILLed #{i}; restarting it"));
        worker = s.spawn(&["work"], "worker.log");
        s.wait_accepted(150, "between worker kills").await;
    }

    s.note("intake SIGTERM");
    signal_group(intake.id(), "TERM");
    let status = tokio::task::spawn_blocking(move || intake.wait())
        .await
        .expect("join")
        .expect("wait");
    assert!(status.success(), "the intake stops cleanly on SIGTERM");
    intake = s.spawn(&["serve"], "intake.log");
    s.wait_ready().await;
    s.note("intake restarted");
    s.wait_accepted(300, "after the intake restart").await;

    stop_load.cancel();
    load_task.await.expect("load task");
    s.note("load stopped");

    // Every accepted job must end succeeded.
    let samples = lock(&s.samples).clone();
    let accepted: Vec<String> = samples
        .iter()
        .filter_map(|x| match &x.outcome {
            Outcome::Accepted(id) => Some(id.clone()),
            _ => None,
        })
        .collect();
    let statuses = wait_all_finished(&s.store, &accepted).await;
    s.note("every accepted job finished");
    signal_group(worker.id(), "TERM");
    signal_group(intake.id(), "TERM");
    let _ = worker.wait();
    let _ = intake.wait();

    // Executions per job id, from the handler's own record.
    let mut runs: HashMap<String, u32> = HashMap::new();
    for (id, _) in executions(&dir) {
        *runs.entry(id).or_default() += 1;
    }
    let lost: Vec<&String> = accepted
        .iter()
        .filter(|id| statuses.get(*id).map(String::as_str) != Some("succeeded"))
        .collect();
    let never_ran: Vec<&String> = accepted
        .iter()
        .filter(|id| !runs.contains_key(*id))
        .collect();
    let twice: Vec<(&String, &u32)> = runs.iter().filter(|(_, n)| **n > 1).collect();
    let unavailable: Vec<&Sample> = samples
        .iter()
        .filter(|x| matches!(x.outcome, Outcome::Unavailable { .. }))
        .collect();
    let without_retry_after = unavailable
        .iter()
        .filter(|x| matches!(x.outcome, Outcome::Unavailable { retry_after: false }))
        .count();
    let accepted_during_outage = samples
        .iter()
        .filter(|x| matches!(x.outcome, Outcome::Accepted(_)))
        .filter(|x| {
            s.outages
                .iter()
                .any(|(down, up)| x.sent > *down && x.done < *up)
        })
        .count();
    let other: Vec<u16> = samples
        .iter()
        .filter_map(|x| match x.outcome {
            Outcome::Status(c) => Some(c),
            _ => None,
        })
        .collect();
    let no_answer = samples
        .iter()
        .filter(|x| matches!(x.outcome, Outcome::NoAnswer))
        .count();

    let backend = s.store.backend().name();
    let report = json!({
        "store": backend,
        "rate_per_s": RATE,
        "duration_s": s.start.elapsed().as_secs_f64(),
        "sent": samples.len(),
        "accepted": accepted.len(),
        "succeeded": accepted.len() - lost.len(),
        "lost": lost.len(),
        "refused_503": unavailable.len(),
        "refused_503_without_retry_after": without_retry_after,
        "accepted_while_broker_stopped": accepted_during_outage,
        "no_answer": no_answer,
        "other_statuses": other,
        "executions": runs.values().sum::<u32>(),
        "jobs_run_twice": twice.len(),
        "worker_kills": KILLS,
        "recovery_ms": s.recoveries.iter().map(|(w, d)| json!({"after": w, "ms": d.as_millis()})).collect::<Vec<_>>(),
        "events": s.events.iter().map(|(w, t)| json!({"at_s": t.as_secs_f64(), "what": w})).collect::<Vec<_>>(),
    });
    // target/faults.json on SQLite (RELIABILITY.md's figures), faults-postgres.json beside it.
    let out = common::repo().join(match s.store.backend() {
        common::store::Backend::Sqlite => "target/faults.json",
        common::store::Backend::Postgres => "target/faults-postgres.json",
    });
    let _ = std::fs::write(&out, serde_json::to_vec_pretty(&report).unwrap_or_default());
    println!(
        "{}",
        serde_json::to_string_pretty(&report).unwrap_or_default()
    );

    assert!(lost.is_empty(), "accepted jobs not succeeded: {lost:?}");
    assert!(
        never_ran.is_empty(),
        "succeeded without running: {never_ran:?}"
    );
    assert!(
        twice.iter().all(|(_, n)| **n == 2),
        "a job ran more than twice: {twice:?}"
    );
    assert!(
        twice.len() <= KILLS * CONCURRENCY,
        "{} jobs ran twice; at most {} can be in flight at {KILLS} kills",
        twice.len(),
        KILLS * CONCURRENCY
    );
    assert_eq!(
        accepted_during_outage, 0,
        "a 202 while the broker was stopped"
    );
    assert_eq!(without_retry_after, 0, "every 503 carries Retry-After");
    assert!(other.is_empty(), "unexpected statuses: {other:?}");
    for (what, took) in &s.recoveries {
        assert!(
            *took <= RECOVERY_BOUND,
            "after {what} the intake took {} ms to accept again",
            took.as_millis()
        );
    }
}

/// Polls the store until every id in `ids` is `succeeded`, `dead` or `cancelled` (at most
/// 3 minutes: a job in flight at a SIGKILL waits out its lease first) and returns the
/// statuses.
async fn wait_all_finished(store: &TestStore, ids: &[String]) -> HashMap<String, String> {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let statuses: HashMap<String, String> = store
            .statuses()
            .await
            .into_iter()
            .map(|(id, status)| (id, status.as_str().to_owned()))
            .collect();
        let open = ids
            .iter()
            .filter(|id| {
                !matches!(
                    statuses.get(*id).map(String::as_str),
                    Some("succeeded" | "dead" | "cancelled")
                )
            })
            .count();
        if open == 0 || Instant::now() > deadline {
            return statuses;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
