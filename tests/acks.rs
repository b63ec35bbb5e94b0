//! Acknowledgements: a worker coalesces its acks (one `basic.ack` with `multiple` for a run of
//! finished deliveries) but never holds finished jobs' acks behind a job that still runs, so
//! a long job neither stalls the prefetch window nor leaves finished jobs to be redelivered.

mod common;

use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Setup, wait_queue_entry};
use serde_json::{Value, json};
use warren::workers::{Outcome, handler_fn};

#[tokio::test]
async fn finished_jobs_are_acked_while_an_older_one_still_runs() {
    let (started, release) = (
        Arc::new(tokio::sync::Notify::new()),
        Arc::new(tokio::sync::Notify::new()),
    );
    let handler = {
        let (started, release) = (started.clone(), release.clone());
        handler_fn(move |job| {
            let (started, release) = (started.clone(), release.clone());
            async move {
                if job.payload.as_ref() == br#"{"slow":true}"# {
                    started.notify_one();
                    release.notified().await;
                }
                Outcome::success()
            }
        })
    };
    let w = Setup::new()
        .queue("acks", "handler = \"noop\"\nprefetch = 64")
        .handler("acks", handler)
        .start()
        .await;
    let q = w.q("acks");

    // The oldest delivery is the slow one; 40 later ones finish at once.
    let slow = w.submit("acks", json!({"slow": true})).await;
    started.notified().await;
    let mut fast = Vec::new();
    for i in 0..40 {
        fast.push(w.submit("acks", json!({ "n": i })).await);
    }
    for id in &fast {
        w.wait_status(id, "succeeded", Duration::from_secs(10))
            .await;
    }
    assert_eq!(w.job(&slow).await["status"], "running");
    // While the slow job still runs, the broker counts the 40 finished ones acked (and
    // only them): their acks were not held behind the older, unsettled delivery.
    let deadline = Instant::now() + common::STATS_LAG;
    loop {
        let stats = management_queue(&q).await;
        let acked = stats["message_stats"]["ack"].as_u64().unwrap_or(0);
        if acked >= 40 {
            assert_eq!(acked, 40, "the slow job is not finished: {stats}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the finished jobs were not acked while the slow one ran: {stats}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(w.job(&slow).await["status"], "running");

    release.notify_one();
    w.wait_status(&slow, "succeeded", Duration::from_secs(10))
        .await;
    wait_queue_entry(&w, &q, |e| e["unacked"] == 0 && e["ready"] == 0).await;
    w.stop().await.expect("clean stop");
}

/// The management API's view of `queue` (statistics sampled every 5 s), with the
/// credentials of the test broker's AMQP URL.
async fn management_queue(queue: &str) -> Value {
    let base = std::env::var("WARREN_TEST_MGMT_URL")
        .unwrap_or_else(|_| "http://127.0.0.1:15672".to_owned());
    let uri = lapin::uri::AMQPUri::from_str(&common::amqp_url()).expect("AMQP URL");
    let resp = reqwest::Client::new()
        .get(format!(
            "{base}/api/queues/{}/{queue}",
            uri.vhost.replace('/', "%2F")
        ))
        .basic_auth(
            &uri.authority.userinfo.username,
            Some(&uri.authority.userinfo.password),
        )
        .send()
        .await
        .expect("the management API answers");
    assert_eq!(resp.status(), 200, "GET /api/queues/…/{queue}");
    resp.json().await.expect("json")
}
