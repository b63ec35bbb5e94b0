//! `concurrency_per_key` across the fleet: at most N jobs with the same key run at once, a
//! hot key never blocks the others and still runs at its limit, a POST without a key is a
//! 400 problem that publishes nothing, and a worker killed while holding a key's slot frees
//! it when its lease ends.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::process::{Children, free_port, signal_group, spawn_warren, wait_ready};
use common::target::{Call, Reply, Target};
use common::{QueueCleanup, Raw, Setup, TestStore, unique};
use serde_json::{Value, json};

/// Each job holds the target this long: long enough that a job's own bookkeeping (claim,
/// record, ack: a few ms) is not what the hot key's pace measures.
const JOB: Duration = Duration::from_millis(50);
const PER_KEY: usize = 2;
const HOT_JOBS: usize = 1_000;
const OTHER_KEYS: usize = 20;
const PER_OTHER_KEY: usize = 10;

/// The most jobs of `key` the target saw at once.
fn max_overlap(calls: &[Call], key: &str) -> usize {
    let mut events: Vec<(Instant, i32)> = Vec::new();
    for c in calls.iter().filter(|c| c.body["customer"] == key) {
        events.push((c.start, 1));
        events.push((c.end.expect("answered"), -1));
    }
    // Ends before starts at the same instant: a slot handed on is not an overlap.
    events.sort();
    let (mut now, mut most) = (0, 0);
    for (_, d) in events {
        now += d;
        most = most.max(now);
    }
    usize::try_from(most).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hot_key_runs_at_its_limit_without_holding_up_the_other_keys() {
    let target = Target::start(|_, _| Reply::ok(JOB)).await;
    let w = Setup::new()
        .queue(
            "fair",
            &format!(
                "handler = {{ http = \"{}\" }}\nprefetch = 200\nconcurrency = 20\n\
                 concurrency_key = \"/customer\"\nconcurrency_per_key = {PER_KEY}",
                target.url()
            ),
        )
        .start()
        .await;
    let q = w.q("fair");
    let http = reqwest::Client::new();
    // The hot key's backlog first, then the others behind it in the queue.
    common::post_batch(
        &http,
        &w.base,
        &q,
        (0..HOT_JOBS)
            .map(|n| json!({ "payload": { "customer": "hot", "n": n } }))
            .collect(),
    )
    .await;
    common::post_batch(
        &http,
        &w.base,
        &q,
        (0..OTHER_KEYS * PER_OTHER_KEY)
            .map(|n| json!({ "payload": { "customer": format!("c{}", n % OTHER_KEYS), "n": n } }))
            .collect(),
    )
    .await;
    let total = HOT_JOBS + OTHER_KEYS * PER_OTHER_KEY;
    let calls = target.wait_calls(total, Duration::from_secs(120)).await;
    assert_eq!(calls.len(), total, "every job ran once");

    let mut keys: BTreeMap<String, usize> = BTreeMap::new();
    for c in &calls {
        *keys
            .entry(c.body["customer"].as_str().unwrap_or_default().to_owned())
            .or_default() += 1;
    }
    for key in keys.keys() {
        let most = max_overlap(&calls, key);
        assert!(most <= PER_KEY, "{key} ran {most} jobs at once");
    }
    let mut hot_ends: Vec<Instant> = calls
        .iter()
        .filter(|c| c.body["customer"] == "hot")
        .filter_map(|c| c.end)
        .collect();
    hot_ends.sort();
    let others_done = calls
        .iter()
        .filter(|c| c.body["customer"] != "hot")
        .filter_map(|c| c.end)
        .max()
        .expect("others ran");
    assert!(
        others_done < hot_ends[HOT_JOBS / 2],
        "the other keys finished after half the hot backlog"
    );
    let hot_start = calls
        .iter()
        .filter(|c| c.body["customer"] == "hot")
        .map(|c| c.start)
        .min()
        .expect("hot ran");
    let took = hot_ends[HOT_JOBS - 1] - hot_start;
    let most_hot = max_overlap(&calls, "hot");
    println!(
        "fairness: hot key at most {most_hot} at once (limit {PER_KEY}); other keys done {:?} \
         after the first hot start, hot half done after {:?}, hot backlog done after {took:?} \
         ({:?} back to back)",
        others_done - hot_start,
        hot_ends[HOT_JOBS / 2] - hot_start,
        JOB * u32::try_from(HOT_JOBS / PER_KEY).unwrap_or(u32::MAX)
    );
    let back_to_back = JOB * u32::try_from(HOT_JOBS / PER_KEY).unwrap_or(u32::MAX);
    assert!(
        took <= back_to_back.mul_f64(1.5),
        "the hot key took {took:?}; its {PER_KEY} slots back to back take {back_to_back:?}"
    );
    let job = w.job(&calls[0].job_id).await;
    assert_eq!(job["attempts"], 1, "parking is not an attempt: {job}");
    w.stop().await.expect("clean stop");
}

#[tokio::test]
async fn a_post_without_a_key_is_refused_and_the_header_names_one() {
    let target = Target::start(|_, _| Reply::ok(Duration::ZERO)).await;
    let w = Setup::new()
        .queue(
            "keyed",
            &format!(
                "handler = {{ http = \"{}\" }}\nconcurrency_key = \"/customer/id\"\nconcurrency_per_key = 1",
                target.url()
            ),
        )
        .start()
        .await;
    let q = w.q("keyed");
    for payload in [
        json!({}),
        json!({ "customer": { "id": null } }),
        json!({ "customer": { "id": [1] } }),
    ] {
        let resp = w.post("keyed", &json!({ "payload": payload })).await;
        assert_eq!(resp.status(), 400, "{payload}");
        let problem: Value = resp.json().await.expect("problem");
        assert!(
            problem["type"]
                .as_str()
                .is_some_and(|t| t.ends_with("missing-concurrency-key")),
            "{problem}"
        );
        assert!(
            problem["detail"]
                .as_str()
                .is_some_and(|d| d.contains("/customer/id")),
            "{problem}"
        );
    }
    assert_eq!(
        Raw::connect().await.depth(&q).await,
        Some(0),
        "nothing was published"
    );
    let listed: Value = reqwest::get(format!("{}/v1/jobs?queue={q}", w.base))
        .await
        .expect("GET /v1/jobs")
        .json()
        .await
        .expect("json");
    assert_eq!(listed["jobs"], json!([]), "nothing was stored");

    // The header names the key when the payload has none; a number at the pointer is one.
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/queues/{q}/jobs", w.base))
        .header("x-concurrency-key", "tenant-7")
        .json(&json!({ "payload": {} }))
        .send()
        .await
        .expect("POST");
    let by_header = common::accepted_id(resp).await;
    let by_number = w.submit("keyed", json!({ "customer": { "id": 42 } })).await;
    for id in [&by_header, &by_number] {
        w.wait_status(id, "succeeded", Duration::from_secs(15))
            .await;
    }
    w.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_workers_slot_frees_when_its_lease_ends() {
    // Job "a" holds the target long enough for its worker to be killed mid-job.
    let target = Target::start(|body, _| {
        Reply::ok(if body["hold"] == true {
            Duration::from_secs(30)
        } else {
            Duration::ZERO
        })
    })
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let dir = dir.path();
    let q = unique("keylease");
    let _cleanup = QueueCleanup(vec![q.clone(), format!("{q}.dlq")]);
    // timeout 2 s: a claim's lease lasts 2 s + 5 s.
    std::fs::write(
        dir.join("queues.toml"),
        format!(
            "[queues.\"{q}\"]\nhandler = {{ http = \"{}\" }}\ntimeout = \"2s\"\nmax_attempts = 10\n\
             backoff = {{ base = \"100ms\", max = \"1s\" }}\n\
             concurrency_key = \"/customer\"\nconcurrency_per_key = 1\n",
            target.url()
        ),
    )
    .expect("config");
    let store = TestStore::new(dir).await;
    // The intake alone, and one worker to kill.
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let intake = spawn_warren(dir, store.url(), &["serve"], port, "intake.log", &[]).id();
    let doomed = spawn_warren(dir, store.url(), &["work"], free_port(), "doomed.log", &[]).id();
    let mut children = Children(vec![intake, doomed]);
    wait_ready(&base, dir, "intake.log").await;
    let http = reqwest::Client::new();
    let post = |payload: Value| common::post_job(&http, &base, &q, payload);
    let held = post(json!({ "customer": "k", "hold": true })).await;
    let first = target.wait_started(1, Duration::from_secs(30)).await[0].clone();
    signal_group(doomed, "KILL");
    let next = post(json!({ "customer": "k", "n": 2 })).await;
    let rescuer = spawn_warren(dir, store.url(), &["work"], free_port(), "rescuer.log", &[]).id();
    children.0.push(rescuer);

    // `next` starts only once the killed worker's lease (claimed just before `first`
    // reached the target) has ended, and then runs.
    let deadline = Instant::now() + Duration::from_secs(40);
    while common::job_at(&http, &base, &next).await["status"] != "succeeded" {
        assert!(
            Instant::now() < deadline,
            "{next} did not succeed: {}",
            common::job_at(&http, &base, &next).await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let calls = target.calls();
    let next_call = calls
        .iter()
        .find(|c| c.job_id == next)
        .expect("next reached the target");
    let waited = next_call.start - first.start;
    println!(
        "killed worker: its key's next job started {waited:?} after the killed one (lease 7 s)"
    );
    assert!(
        waited >= Duration::from_millis(6_500),
        "the key's slot was free {waited:?} after the killed job started, inside its 7 s lease"
    );
    assert!(
        max_overlap_finished(&calls) <= 1,
        "one job of the key at a time"
    );
    let _ = held;
}

/// The most answered jobs the target held at once (any key: this test has one).
fn max_overlap_finished(calls: &[Call]) -> usize {
    let done: Vec<Call> = calls.iter().filter(|c| c.end.is_some()).cloned().collect();
    max_overlap(&done, "k")
}
