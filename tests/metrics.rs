//! `GET /metrics` shows, per queue, what happened to its jobs: accepted, published, succeeded,
//! retried, dead-lettered, duplicates skipped, handlers in flight and their durations.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{Raw, Setup};
use lapin::BasicProperties;
use serde_json::json;
use warren::workers::{Outcome, handler_fn};

const SETTLE: Duration = Duration::from_secs(15);

/// One sample of the Prometheus text format: name, labels, value.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Parses the Prometheus text exposition format (no escapes in warren's label values).
fn parse(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text.lines() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("`series value`");
        let value: f64 = value.parse().expect("numeric value");
        let (name, labels) = match series.split_once('{') {
            None => (series.to_owned(), BTreeMap::new()),
            Some((name, rest)) => {
                let body = rest.strip_suffix('}').expect("closing brace");
                let labels = body
                    .split("\",")
                    .filter(|kv| !kv.is_empty())
                    .map(|kv| {
                        let (k, v) = kv.split_once("=\"").expect("label=\"value\"");
                        (k.to_owned(), v.trim_end_matches('"').to_owned())
                    })
                    .collect();
                (name.to_owned(), labels)
            }
        };
        out.push(Sample {
            name,
            labels,
            value,
        });
    }
    out
}

/// The value of `name` with exactly these labels among `samples`.
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| {
            s.name == name
                && s.labels.len() == labels.len()
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
}

async fn scrape(w: &common::TestWarren) -> (String, Vec<Sample>) {
    let resp = w
        .http
        .get(format!("{}/metrics", w.base))
        .send()
        .await
        .expect("GET /metrics");
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .expect("ascii")
            .starts_with("text/plain")
    );
    let text = resp.text().await.expect("body");
    let samples = parse(&text);
    (text, samples)
}

/// A series (name and labels) and the value it should have.
type Expect<'a> = (&'a str, Vec<(&'a str, &'a str)>, f64);

/// Scrapes until every `(name, labels, value)` holds (the counters move right after the store
/// write a test waits for), or fails with what it last saw.
async fn wait_for(w: &common::TestWarren, expected: &[Expect<'_>]) {
    let deadline = Instant::now() + SETTLE;
    loop {
        let (text, samples) = scrape(w).await;
        let missing: Vec<String> = expected
            .iter()
            .filter(|(name, labels, v)| value(&samples, name, labels) != Some(*v))
            .map(|(name, labels, v)| {
                format!(
                    "{name}{labels:?} = {v} (is {:?})",
                    value(&samples, name, labels)
                )
            })
            .collect();
        if missing.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "metrics not as expected within {SETTLE:?}:\n{}\n--- /metrics ---\n{text}",
            missing.join("\n")
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn per_queue_counters_follow_what_happened_to_the_jobs() {
    // `flaky` fails its first attempt (retryable) and succeeds on the second; `doomed` fails
    // permanently; `fine` just succeeds.
    let flaky = handler_fn(|job| async move {
        if job.attempt == 1 {
            Outcome::retry("first try fails")
        } else {
            Outcome::success()
        }
    });
    let doomed = handler_fn(|_job| async { Outcome::permanent("bad input") });
    let w = Setup::new()
        .queue("fine", "handler = \"noop\"")
        .queue(
            "flaky",
            "handler = \"noop\"\nbackoff = { base = \"1ms\", max = \"1ms\" }",
        )
        .queue("doomed", "handler = \"noop\"")
        .handler("flaky", flaky)
        .handler("doomed", doomed)
        .start()
        .await;

    // Before any job, every configured queue is there at 0.
    let fine = w.q("fine");
    wait_for(
        &w,
        &[
            (
                "warren_jobs_accepted_total",
                vec![("queue", fine.as_str())],
                0.0,
            ),
            ("warren_jobs_in_flight", vec![("queue", fine.as_str())], 0.0),
            ("warren_broker_connected", vec![], 1.0),
        ],
    )
    .await;

    let mut fine_ids = Vec::new();
    for n in 0..3 {
        fine_ids.push(w.submit("fine", json!({ "n": n })).await);
    }
    let flaky_id = w.submit("flaky", json!({"n": 1})).await;
    let doomed_id = w.submit("doomed", json!({"n": 1})).await;
    for id in &fine_ids {
        w.wait_status(id, "succeeded", SETTLE).await;
    }
    w.wait_status(&flaky_id, "succeeded", SETTLE).await;
    w.wait_status(&doomed_id, "dead", SETTLE).await;

    // A duplicate delivery of a finished job is acked and counted, not run.
    let raw = Raw::connect().await;
    raw.publish(
        &fine,
        br#"{"n":0}"#,
        BasicProperties::default()
            .with_message_id(fine_ids[0].as_str().into())
            .with_content_type("application/json".into()),
    )
    .await;

    let (flaky, doomed) = (w.q("flaky"), w.q("doomed"));
    let (f, fl, d) = (fine.as_str(), flaky.as_str(), doomed.as_str());
    wait_for(
        &w,
        &[
            ("warren_jobs_accepted_total", vec![("queue", f)], 3.0),
            ("warren_jobs_published_total", vec![("queue", f)], 3.0),
            ("warren_jobs_succeeded_total", vec![("queue", f)], 3.0),
            ("warren_jobs_retried_total", vec![("queue", f)], 0.0),
            ("warren_jobs_dead_lettered_total", vec![("queue", f)], 0.0),
            ("warren_duplicates_skipped_total", vec![("queue", f)], 1.0),
            ("warren_jobs_in_flight", vec![("queue", f)], 0.0),
            (
                "warren_handler_duration_seconds_count",
                vec![("queue", f), ("outcome", "succeeded")],
                3.0,
            ),
            // flaky: one job, two publishes (first attempt and retry), one retry.
            ("warren_jobs_accepted_total", vec![("queue", fl)], 1.0),
            ("warren_jobs_published_total", vec![("queue", fl)], 2.0),
            ("warren_jobs_retried_total", vec![("queue", fl)], 1.0),
            ("warren_jobs_succeeded_total", vec![("queue", fl)], 1.0),
            (
                "warren_handler_duration_seconds_count",
                vec![("queue", fl), ("outcome", "retried")],
                1.0,
            ),
            // doomed: dead-lettered at once.
            ("warren_jobs_accepted_total", vec![("queue", d)], 1.0),
            ("warren_jobs_dead_lettered_total", vec![("queue", d)], 1.0),
            ("warren_jobs_succeeded_total", vec![("queue", d)], 0.0),
            (
                "warren_handler_duration_seconds_count",
                vec![("queue", d), ("outcome", "dead")],
                1.0,
            ),
        ],
    )
    .await;

    // Confirm latencies per destination, and the store's write batches.
    let (text, samples) = scrape(&w).await;
    assert!(
        value(
            &samples,
            "warren_publish_confirm_seconds_count",
            &[("queue", f)]
        )
        .is_some_and(|n| n >= 3.0),
        "{text}"
    );
    let dlq = format!("{d}.dlq");
    assert_eq!(
        value(
            &samples,
            "warren_publish_confirm_seconds_count",
            &[("queue", &dlq)]
        ),
        Some(1.0),
        "{text}"
    );
    assert!(
        value(
            &samples,
            "warren_publish_confirm_seconds_bucket",
            &[("queue", f), ("le", "+Inf")]
        )
        .is_some_and(|n| n >= 3.0),
        "confirm latency is a histogram with buckets: {text}"
    );
    for writer in ["intake", "worker"] {
        assert!(
            value(
                &samples,
                "warren_store_write_batch_size_count",
                &[("writer", writer)]
            )
            .is_some_and(|n| n >= 1.0),
            "{writer} batches: {text}"
        );
    }
    assert!(
        text.contains("# HELP warren_jobs_accepted_total "),
        "{text}"
    );
    w.stop().await.expect("clean stop");
}

#[tokio::test]
async fn jobs_in_flight_counts_running_handlers() {
    let (gate, slow) = common::Gate::new();
    let w = Setup::new()
        .queue("slow", "handler = \"noop\"\nconcurrency = 2")
        .handler("slow", slow)
        .start()
        .await;
    let q = w.q("slow");
    let id = w.submit("slow", json!({})).await;
    gate.started.notified().await;
    wait_for(
        &w,
        &[("warren_jobs_in_flight", vec![("queue", q.as_str())], 1.0)],
    )
    .await;
    gate.release.notify_one();
    w.wait_status(&id, "succeeded", SETTLE).await;
    wait_for(
        &w,
        &[("warren_jobs_in_flight", vec![("queue", q.as_str())], 0.0)],
    )
    .await;
    w.stop().await.expect("clean stop");
}
