//! A worker re-declares what it needs when it reconnects: a work queue deleted under it (as
//! after a broker reset) comes back, and jobs run again.

mod common;

use std::time::{Duration, Instant};

use common::{Raw, Setup};
use lapin::options::QueueDeleteOptions;
use serde_json::json;

#[tokio::test]
async fn a_deleted_work_queue_is_declared_again_and_jobs_run() {
    let w = Setup::new()
        .queue("gone", "handler = \"noop\"")
        .start()
        .await;
    let q = w.q("gone");
    let raw = Raw::connect().await;
    raw.channel()
        .await
        .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
        .await
        .expect("delete the work queue");

    // The broker cancels the worker's consumer; its supervisor reconnects, re-declares the
    // queue and its bindings, then consumes again.
    let deadline = Instant::now() + Duration::from_secs(30);
    while raw.consumers(&q).await.unwrap_or(0) == 0 {
        assert!(
            Instant::now() < deadline,
            "{q} not declared again within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let id = w.submit("gone", json!({"after": "delete"})).await;
    w.wait_status(&id, "succeeded", Duration::from_secs(30))
        .await;
    w.stop().await.expect("clean stop");
}
