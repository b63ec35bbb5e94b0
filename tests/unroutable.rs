//! Retries whose work queue is removed while they wait land in `warren.unroutable`, where
//! `GET /v1/queues` counts them and `warren dlq` shows them, and go back to their queue once
//! it is configured again (DESIGN §4; the delay levels' alternate exchange, `src/delay.rs`).

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::{Setup, TestWarren};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use warren::Role;
use warren::dlq::{Filter, MoveReport, UNROUTABLE};
use warren::workers::{Outcome, handler_fn};

/// How long the retries wait in the delay levels.
const RETRY_AFTER: Duration = Duration::from_secs(3);

/// `warren dlq requeue warren.unroutable` on `w`'s configuration.
async fn requeue_all(w: &TestWarren) -> MoveReport {
    w.app()
        .dlq()
        .requeue(
            UNROUTABLE,
            &Filter::default(),
            None,
            &(),
            &CancellationToken::new(),
        )
        .await
        .expect("requeue")
}

#[tokio::test]
async fn retries_of_a_removed_queue_land_in_the_unroutable_queue_and_go_back() {
    // 1. Three jobs fail once and wait for their retry in the delay levels; then the queue
    //    is removed (this warren stops, and its queues are deleted from the broker).
    let first = Setup::new()
        .queue("gone", "handler = \"noop\"\nmax_attempts = 3")
        .handler(
            "gone",
            handler_fn(|_job| async move {
                Outcome::Retry {
                    error: "not yet".into(),
                    retry_after: Some(RETRY_AFTER),
                }
            }),
        )
        .start()
        .await;
    let name = first.q("gone");
    let mut ids = BTreeSet::new();
    for i in 0..3 {
        ids.insert(first.submit("gone", json!({"n": i})).await);
    }
    for id in &ids {
        first
            .wait_status(id, "retrying", Duration::from_secs(10))
            .await;
    }
    first.stop().await.expect("clean stop");
    // (`stop` dropped the warren: its queues are deleted now, bindings and all.)

    // 2. A warren without that queue: the retries come out of the delay levels, find no
    //    queue, and wait in warren.unroutable, counted and shown; a requeue keeps them.
    let other = Setup::new()
        .queue("stays", "handler = \"noop\"")
        .role(Role::Intake)
        .start()
        .await;
    let dlq = other.app().dlq();
    let deadline = Instant::now() + RETRY_AFTER + Duration::from_secs(30);
    let seen = loop {
        let lines = dlq.peek(UNROUTABLE, 10_000).await.expect("peek");
        let seen: BTreeSet<String> = lines
            .iter()
            .filter(|l| l.queue == name)
            .filter_map(|l| l.message_id().map(str::to_owned))
            .collect();
        if seen.len() == ids.len() || Instant::now() > deadline {
            break seen;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(
        seen, ids,
        "every retry of the removed queue is in {UNROUTABLE}, named with its queue"
    );
    let overview: Value = other
        .http
        .get(format!("{}/v1/queues", other.base))
        .send()
        .await
        .expect("GET /v1/queues")
        .json()
        .await
        .expect("json");
    assert!(
        overview["unroutable"].as_u64().unwrap_or(0) >= 3,
        "GET /v1/queues counts them: {overview}"
    );
    let listed = dlq.list().await.expect("list");
    assert!(
        listed
            .iter()
            .any(|r| r.queue == UNROUTABLE && r.depth.unwrap_or(0) >= 3),
        "warren dlq list shows {UNROUTABLE}: {listed:?}"
    );
    let kept = requeue_all(&other).await;
    assert!(
        !kept.by_queue.contains_key(&name),
        "a message whose queue is not configured stays: {kept:?}"
    );
    other.stop().await.expect("clean stop");

    // 3. The queue is back (configured and declared): a requeue sends each retry to it, and
    //    the jobs run.
    let back = Setup::new()
        .queue_named("gone", &name, "handler = \"noop\"\nmax_attempts = 3")
        .start()
        .await;
    let report = requeue_all(&back).await;
    assert_eq!(
        report.by_queue.get(&name),
        Some(&3),
        "the three retries went back to {name}: {report:?}"
    );
    for id in &ids {
        let job = back
            .wait_status(id, "succeeded", Duration::from_secs(30))
            .await;
        assert_eq!(job["queue"], name, "{job}");
    }
    let after = back
        .app()
        .dlq()
        .peek(UNROUTABLE, 10_000)
        .await
        .expect("peek");
    assert!(
        !after.iter().any(|l| l.queue == name),
        "nothing of {name} is left in {UNROUTABLE}"
    );
    back.stop().await.expect("clean stop");
}
