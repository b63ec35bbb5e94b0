//! Retries waiting in several delay levels survive a broker restart (`rabbitmqctl stop_app`
//! / `start_app`) and each runs within the retry sweeper's bound of its due time; the intake
//! answers 503 while the broker is away, and the workers reconnect by themselves. Alone in
//! its test binary: it restarts the shared broker.

mod common;

use std::collections::HashMap;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::Setup;
use common::process::rabbitmqctl;
use serde_json::json;
use warren::workers::{Outcome, handler_fn};

/// `worker.retry_sweep_after` in this test: a retry overdue by more is published again from
/// the store.
const SWEEP_AFTER: Duration = Duration::from_secs(5);
/// How late a retry may run after it is due (or after the broker is back, if it was due while
/// the broker was away): the sweep bound, plus one sweep period (a third of it, ±20 %), plus
/// a second for the run itself and a busy machine.
const LATE_BOUND: Duration = Duration::from_millis(5_000 + 2_000 + 1_000);
/// The retries' waits, in seconds: in binary they use delay levels 0 to 4.
const WAITS: [u64; 5] = [2, 5, 9, 14, 17];

/// `rabbitmqctl list_queues` lines of the queues that hold messages: where a missing retry
/// waits (a delay level, the work queue), for the failure message.
fn queues_holding_messages() -> String {
    let out = Command::new("rabbitmqctl")
        .args([
            "list_queues",
            "-q",
            "--no-table-headers",
            "name",
            "messages",
            "messages_ready",
            "messages_unacknowledged",
        ])
        .output();
    match out {
        Ok(out) => String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.split_whitespace().nth(1).is_some_and(|n| n != "0"))
            .collect::<Vec<_>>()
            .join("\n"),
        Err(e) => format!("(rabbitmqctl list_queues failed: {e})"),
    }
}

#[tokio::test]
async fn a_waiting_retry_survives_a_broker_restart() {
    // A restart is the one place a broker may stop answering mid-call: bound the whole test.
    tokio::time::timeout(Duration::from_secs(180), scenario())
        .await
        .expect("the broker-restart scenario finished within 3 minutes");
}

/// When each job's retry was due and when it ran, by job id.
#[derive(Default)]
struct Times {
    due: HashMap<String, Instant>,
    ran: HashMap<String, Instant>,
}

async fn scenario() {
    let times = Arc::new(Mutex::new(Times::default()));
    let recorder = times.clone();
    let w = Setup::new()
        .queue("durable", "handler = \"noop\"\nmax_attempts = 3")
        .extra(&format!(
            "[worker]\nretry_sweep_after = \"{}s\"\n",
            SWEEP_AFTER.as_secs()
        ))
        .handler(
            "durable",
            handler_fn(move |job| {
                let times = recorder.clone();
                async move {
                    let wait: serde_json::Value =
                        serde_json::from_slice(&job.payload).unwrap_or_default();
                    let wait = Duration::from_secs(wait["wait_s"].as_u64().unwrap_or(6));
                    let mut t = times
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    if job.attempt == 1 {
                        t.due.insert(job.id.clone(), Instant::now() + wait);
                        Outcome::Retry {
                            error: "try again later".into(),
                            retry_after: Some(wait),
                        }
                    } else {
                        t.ran.insert(job.id.clone(), Instant::now());
                        Outcome::success_with("\"made it\"")
                    }
                }
            }),
        )
        .start()
        .await;
    let mut ids = Vec::new();
    for wait_s in WAITS {
        ids.push(w.submit("durable", json!({"wait_s": wait_s})).await);
    }
    for id in &ids {
        w.wait_status(id, "retrying", Duration::from_secs(10)).await;
    }

    rabbitmqctl(&["stop_app"]);
    // While the broker is away nothing is accepted.
    let resp = w.post("durable", &json!({"payload": 1})).await;
    assert_eq!(resp.status(), 503);
    assert!(resp.headers().contains_key("retry-after"));
    rabbitmqctl(&["start_app"]);
    rabbitmqctl(&["await_startup"]);
    let back = Instant::now();

    for id in &ids {
        let job = match w
            .try_wait_status(id, "succeeded", Duration::from_secs(60))
            .await
        {
            Ok(job) => job,
            Err(last) => panic!(
                "the retry did not come back within 60 s of the restart; last seen: {last}\n\
                 where the broker holds messages (name, total, ready, unacked):\n{}",
                queues_holding_messages()
            ),
        };
        assert_eq!(job["attempts"], 2, "{job}");
        assert_eq!(job["result"], "made it");
    }
    let late: Vec<(u64, Duration)> = {
        let t = times
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        ids.iter()
            .zip(WAITS)
            .map(|(id, wait_s)| {
                let (Some(due), Some(ran)) = (t.due.get(id), t.ran.get(id)) else {
                    panic!("job {id} has no recorded run");
                };
                (wait_s, ran.saturating_duration_since((*due).max(back)))
            })
            .collect()
    };
    for (wait_s, lateness) in late {
        eprintln!(
            "retry after {wait_s:>2} s: ran {lateness:?} after it was due (and the broker back)"
        );
        assert!(
            lateness <= LATE_BOUND,
            "the retry after {wait_s} s ran {lateness:?} late (bound {LATE_BOUND:?})"
        );
    }

    // And the intake accepts again.
    let again = w.submit("durable", json!({"after": "restart"})).await;
    w.wait_status(&again, "succeeded", Duration::from_secs(30))
        .await;
    w.stop().await.expect("clean stop");
}
