//! A retry waiting in a delay queue survives a broker restart (`rabbitmqctl stop_app` /
//! `start_app`), the intake answers 503 while the broker is away, and the workers reconnect
//! by themselves. Alone in its test binary: it restarts the shared broker.

mod common;

use std::process::Command;
use std::time::Duration;

use common::Setup;
use common::process::rabbitmqctl;
use serde_json::json;
use warren::workers::{Outcome, handler_fn};

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

async fn scenario() {
    let w = Setup::new()
        .queue("durable", "handler = \"noop\"\nmax_attempts = 3")
        .handler(
            "durable",
            handler_fn(|job| async move {
                if job.attempt == 1 {
                    Outcome::Retry {
                        error: "try again later".into(),
                        retry_after: Some(Duration::from_secs(6)),
                    }
                } else {
                    Outcome::success_with("\"made it\"")
                }
            }),
        )
        .start()
        .await;
    let id = w.submit("durable", json!({"keep": "me"})).await;
    w.wait_status(&id, "retrying", Duration::from_secs(10))
        .await;

    rabbitmqctl(&["stop_app"]);
    // While the broker is away nothing is accepted.
    let resp = w.post("durable", &json!({"payload": 1})).await;
    assert_eq!(resp.status(), 503);
    assert!(resp.headers().contains_key("retry-after"));
    rabbitmqctl(&["start_app"]);
    rabbitmqctl(&["await_startup"]);

    let job = match w
        .try_wait_status(&id, "succeeded", Duration::from_secs(60))
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

    // And the intake accepts again.
    let again = w.submit("durable", json!({"after": "restart"})).await;
    w.wait_status(&again, "succeeded", Duration::from_secs(30))
        .await;
    w.stop().await.expect("clean stop");
}
