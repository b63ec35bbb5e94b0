//! Many processes, one store (DESIGN §2 guarantee 9, §11): two `warren serve` intakes and two
//! `warren work` processes share one store (the chosen one: a PostgreSQL database, or one
//! SQLite file on this host).
//!
//! 1. 20 concurrent POSTs with one `Idempotency-Key`, spread over both intakes and released
//!    by one barrier, make one job.
//! 2. 5,000 jobs are posted through both intakes (16 clients, alternating) while both worker
//!    processes run them with an `exec` handler that records every execution of every job
//!    id and which worker ran it; one worker process group is killed with SIGKILL mid-load
//!    and started again.
//!
//! Then: every job that got a 202 ends `succeeded`; each ran at least once; none ran more
//! than twice, and at most the killed process's `concurrency` ran twice (jobs in flight at
//! the kill); every execution happened on one of the two worker processes, and both took
//! work. The figures are printed (RELIABILITY.md holds a run's numbers).

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::process::{
    Children, executions, free_port, signal_group, spawn_intake, spawn_worker, wait_ready,
    write_recording_queue,
};
use common::{QueueCleanup, Raw, TestStore, unique};
use serde_json::{Value, json};
use warren::store::JobStatus;

/// Jobs posted through the two intakes.
const JOBS: usize = 5_000;
/// Concurrent HTTP clients of the load.
const CLIENTS: usize = 16;
/// Each worker process's `concurrency`: at most this many jobs are in flight at the SIGKILL.
const CONCURRENCY: usize = 8;
/// Accepted jobs before the SIGKILL.
const KILL_AFTER: usize = 2_000;

async fn wait_consumers(raw: &Raw, queue: &str, n: u32) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while raw.consumers(queue).await.unwrap_or(0) < n {
        assert!(
            Instant::now() < deadline,
            "{queue}: fewer than {n} consumers within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_intakes_and_two_workers_share_one_store_through_a_worker_kill() {
    tokio::time::timeout(Duration::from_secs(420), scenario())
        .await
        .expect("the scenario finished within 7 minutes");
}

async fn scenario() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().to_path_buf();
    let q = unique("many");
    let _cleanup = QueueCleanup(vec![q.clone(), format!("{q}.dlq")]);
    write_recording_queue(&dir, &q, CONCURRENCY);
    let store = TestStore::new(&dir).await;
    eprintln!("store: {}", store.backend().name());
    let mut children = Children::default();
    let (port_a, port_b) = (free_port(), free_port());
    let intakes = [
        format!("http://127.0.0.1:{port_a}"),
        format!("http://127.0.0.1:{port_b}"),
    ];
    for (port, name) in [(port_a, "intake-a"), (port_b, "intake-b")] {
        children
            .0
            .push(spawn_intake(&dir, store.url(), name, port, &[]));
    }
    let worker = |name: &str| spawn_worker(&dir, store.url(), name, &[]);
    children.0.push(worker("w1"));
    children.0.push(worker("w2"));
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client");
    wait_ready(&intakes[0], &dir, "intake-a.log").await;
    wait_ready(&intakes[1], &dir, "intake-b.log").await;
    let raw = Raw::connect().await;
    wait_consumers(&raw, &q, 2).await;

    // 1. One idempotency key, 20 requests at once through both intakes: one job.
    let barrier = Arc::new(tokio::sync::Barrier::new(20));
    let mut posts = Vec::new();
    for i in 0..20 {
        let (http, barrier) = (http.clone(), barrier.clone());
        let url = format!("{}/v1/queues/{q}/jobs", intakes[i % 2]);
        posts.push(tokio::spawn(async move {
            barrier.wait().await;
            // A request that meets the first one still awaiting its confirm is told to come
            // back (409 with Retry-After), as a client would.
            loop {
                let resp = http
                    .post(&url)
                    .header("idempotency-key", "one-key-two-intakes")
                    .json(&json!({"payload": {"once": true}}))
                    .send()
                    .await
                    .expect("POST reaches an intake");
                match resp.status().as_u16() {
                    202 => {
                        let job: Value = resp.json().await.expect("json");
                        return job["id"].as_str().expect("id").to_owned();
                    }
                    409 => tokio::time::sleep(Duration::from_millis(20)).await,
                    other => panic!(
                        "unexpected {other}: {}",
                        resp.text().await.unwrap_or_default()
                    ),
                }
            }
        }));
    }
    let mut keyed_ids = Vec::new();
    for p in posts {
        keyed_ids.push(p.await.expect("join"));
    }
    keyed_ids.sort();
    keyed_ids.dedup();
    assert_eq!(keyed_ids.len(), 1, "one job for one key: {keyed_ids:?}");

    // 2. The load, with a SIGKILL of one worker process mid-way.
    let next = Arc::new(AtomicUsize::new(0));
    let accepted = Arc::new(std::sync::Mutex::new(Vec::with_capacity(JOBS)));
    let mut clients = Vec::new();
    for c in 0..CLIENTS {
        let (http, next, accepted) = (http.clone(), next.clone(), accepted.clone());
        let urls = intakes
            .clone()
            .map(|base| format!("{base}/v1/queues/{q}/jobs"));
        clients.push(tokio::spawn(async move {
            let mut refused = 0;
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= JOBS {
                    return refused;
                }
                let resp = http
                    .post(&urls[(n + c) % 2])
                    .json(&json!({"payload": {"n": n}}))
                    .send()
                    .await
                    .expect("POST reaches an intake");
                if resp.status() == 202 {
                    let job: Value = resp.json().await.expect("json");
                    let id = job["id"].as_str().expect("id").to_owned();
                    accepted
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .push(id);
                } else {
                    if refused == 0 {
                        eprintln!(
                            "client {c}: {} {}",
                            resp.status(),
                            resp.text().await.unwrap_or_default()
                        );
                    }
                    refused += 1;
                }
            }
        }));
    }
    let count = || {
        accepted
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len()
    };
    let deadline = Instant::now() + Duration::from_secs(180);
    while count() < KILL_AFTER {
        assert!(
            Instant::now() < deadline,
            "load stalled before the kill at {} accepted; intake log:\n{}",
            count(),
            std::fs::read_to_string(dir.join("intake-a.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let w1 = children.0[2];
    signal_group(w1, "KILL");
    let killed_at = count();
    eprintln!("SIGKILL to worker w1 after {killed_at} accepted jobs");
    while count() < killed_at + 500 {
        assert!(Instant::now() < deadline, "load stalled after the kill");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    children.0.push(worker("w1"));
    eprintln!("worker w1 started again after {} accepted jobs", count());
    let mut refused = 0;
    for c in clients {
        refused += c.await.expect("client");
    }
    let accepted = accepted
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    assert_eq!(refused, 0, "both intakes accepted every job");
    assert_eq!(accepted.len(), JOBS);

    // Every accepted job ends `succeeded`.
    let deadline = Instant::now() + Duration::from_secs(180);
    let statuses = loop {
        let statuses = store.statuses().await;
        let done = accepted
            .iter()
            .filter(|id| statuses.get(*id) == Some(&JobStatus::Succeeded))
            .count();
        if done == accepted.len() {
            break statuses;
        }
        assert!(
            Instant::now() < deadline,
            "{done} of {} accepted jobs succeeded within 180 s",
            accepted.len()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(
        statuses.values().all(|s| *s == JobStatus::Succeeded),
        "every job in the store succeeded"
    );

    // Each ran once, but jobs in flight at the kill; all on the two worker processes.
    let log = executions(&dir);
    let mut runs: HashMap<&str, usize> = HashMap::new();
    let mut by_worker: HashMap<&str, usize> = HashMap::new();
    for (id, worker) in &log {
        *runs.entry(id).or_default() += 1;
        *by_worker.entry(worker).or_default() += 1;
    }
    let lost: Vec<&String> = accepted
        .iter()
        .filter(|id| !runs.contains_key(id.as_str()))
        .collect();
    assert!(lost.is_empty(), "accepted but never ran: {lost:?}");
    let twice = runs.values().filter(|n| **n == 2).count();
    let more = runs.values().filter(|n| **n > 2).count();
    eprintln!(
        "accepted {}, succeeded {}, executions {}, ran twice {twice}, by worker {by_worker:?}",
        accepted.len(),
        statuses.len(),
        log.len()
    );
    assert_eq!(more, 0, "no job ran more than twice");
    assert!(
        twice <= CONCURRENCY,
        "{twice} jobs ran twice; only the killed process's {CONCURRENCY} in flight may"
    );
    assert_eq!(
        by_worker
            .keys()
            .copied()
            .collect::<std::collections::BTreeSet<_>>(),
        ["w1", "w2"].into(),
        "every job ran on one of the two worker processes, and both took work"
    );
}
