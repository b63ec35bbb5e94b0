//! A retry or a delayed job whose delayed message never comes back from the broker's delay
//! levels (purged here; stalled dead-lettering after a broker restart in the field) is
//! published again from the store once it is overdue by `worker.retry_sweep_after`, and runs
//! once; an original that comes back late after the copy is skipped as a duplicate.
//!
//! It takes its own messages out of the shared delay level `warren.delay.03` (those of other
//! tests go back); the tests of this file run one at a time.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Raw, Setup, TestWarren};
use lapin::Channel;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicGetOptions, BasicNackOptions};
use serde_json::json;
use warren::workers::{Outcome, handler_fn};

/// The sweeper's bound in these tests: 1 s (the default is 30 s).
const SWEEP: &str = "[worker]\nretry_sweep_after = \"1s\"\n";

/// The tests of this file one at a time: each takes messages from [`LEVEL_8S`].
static LEVELS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The delay level that holds a message for 8 s (`warren.delay.03`): the first hop of an
/// 8-second delay, long enough for the test to find the message there.
const LEVEL_8S: &str = "warren.delay.03";

/// Starts a warren whose queue `sweep` retries attempt 1 after 8 s and succeeds afterwards;
/// returns it with the count of runs per job.
async fn start() -> (TestWarren, Arc<runs::Runs>) {
    let runs = Arc::new(runs::Runs::default());
    let seen = runs.clone();
    let w = Setup::new()
        .queue("sweep", "handler = \"noop\"\nmax_attempts = 3")
        .handler(
            "sweep",
            handler_fn(move |job| {
                let seen = seen.clone();
                async move {
                    seen.add(&job.id);
                    if job.attempt == 1 && job.payload.starts_with(b"{\"do\":\"retry\"") {
                        Outcome::Retry {
                            error: "try again later".into(),
                            retry_after: Some(Duration::from_secs(8)),
                        }
                    } else {
                        Outcome::success_with("\"done\"")
                    }
                }
            }),
        )
        .extra(SWEEP)
        .start()
        .await;
    (w, runs)
}

/// Takes job `id`'s delayed message from `queue` on `ch`, unacked, within 5 s; messages of
/// other jobs (other tests share the delay levels) go back to the queue.
async fn take_the_message_of(ch: &Channel, queue: &str, id: &str) -> Delivery {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut others = Vec::new();
        let mut found = None;
        while let Some(msg) = ch
            .basic_get(queue.into(), BasicGetOptions { no_ack: false })
            .await
            .expect("basic.get")
        {
            if msg
                .delivery
                .properties
                .message_id()
                .as_ref()
                .map(|m| m.as_str())
                == Some(id)
            {
                found = Some(msg.delivery);
                break;
            }
            others.push(msg.delivery.delivery_tag);
        }
        for tag in others {
            ch.basic_nack(
                tag,
                BasicNackOptions {
                    multiple: false,
                    requeue: true,
                },
            )
            .await
            .expect("nack");
        }
        if let Some(d) = found {
            return d;
        }
        assert!(
            Instant::now() < deadline,
            "the delayed message of {id} did not reach {queue} within 5 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_lost_retry_and_a_lost_delayed_job_run_once_from_the_store() {
    let _levels = LEVELS.lock().await;
    let (w, runs) = start().await;
    let raw = Raw::connect().await;
    let ch = raw.channel().await;

    // A retry whose delayed message is lost.
    let retried = w.submit("sweep", json!({"do": "retry"})).await;
    w.wait_status(&retried, "retrying", Duration::from_secs(10))
        .await;
    // The retry's delayed message is lost.
    take_the_message_of(&ch, LEVEL_8S, &retried)
        .await
        .acker
        .ack(BasicAckOptions::default())
        .await
        .expect("ack");
    let job = w
        .wait_status(&retried, "succeeded", Duration::from_secs(30))
        .await;
    assert_eq!(job["attempts"], 2, "{job}");
    assert_eq!(runs.get(&retried), 2, "attempt 1 and the resent attempt 2");

    // A delayed job whose delayed message is lost.
    let resp = w
        .post(
            "sweep",
            &json!({"payload": {"do": "once"}, "delay_ms": 8000}),
        )
        .await;
    let delayed = common::accepted_id(resp).await;
    take_the_message_of(&ch, LEVEL_8S, &delayed)
        .await
        .acker
        .ack(BasicAckOptions::default())
        .await
        .expect("ack");
    let job = w
        .wait_status(&delayed, "succeeded", Duration::from_secs(30))
        .await;
    assert_eq!(job["attempts"], 1, "{job}");
    assert_eq!(runs.get(&delayed), 1);
    w.stop().await.expect("clean stop");
}

#[tokio::test]
async fn an_original_back_after_its_copy_is_skipped() {
    let _levels = LEVELS.lock().await;
    let (w, runs) = start().await;
    let raw = Raw::connect().await;
    let ch = raw.channel().await;

    let id = w.submit("sweep", json!({"do": "retry"})).await;
    w.wait_status(&id, "retrying", Duration::from_secs(10))
        .await;
    // Hold the delayed message (unacked): it is late for as long as this channel keeps it.
    let held = take_the_message_of(&ch, LEVEL_8S, &id).await;
    let job = w
        .wait_status(&id, "succeeded", Duration::from_secs(30))
        .await;
    assert_eq!(job["attempts"], 2, "{job}");
    // Let it go: back in its level, past its TTL, it goes on to the work queue at once.
    ch.basic_nack(
        held.delivery_tag,
        BasicNackOptions {
            multiple: false,
            requeue: true,
        },
    )
    .await
    .expect("nack");
    let q = w.q("sweep");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let skipped = duplicates_skipped(&w, &q).await;
        if skipped >= 1.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the late original was not skipped within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        runs.get(&id),
        2,
        "the late original did not run the job again"
    );
    w.stop().await.expect("clean stop");
}

/// `warren_duplicates_skipped_total{queue}` from `GET /metrics`.
async fn duplicates_skipped(w: &TestWarren, queue: &str) -> f64 {
    let text = reqwest::get(format!("{}/metrics", w.base))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics text");
    let prefix = format!("warren_duplicates_skipped_total{{queue=\"{queue}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Runs per job id, counted by the handler.
mod runs {
    use std::collections::HashMap;
    use std::sync::Mutex;

    #[derive(Default)]
    pub struct Runs(Mutex<HashMap<String, u32>>);

    impl Runs {
        pub fn add(&self, id: &str) {
            let mut m = self
                .0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            *m.entry(id.to_owned()).or_default() += 1;
        }

        pub fn get(&self, id: &str) -> u32 {
            let m = self
                .0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            m.get(id).copied().unwrap_or(0)
        }
    }
}
