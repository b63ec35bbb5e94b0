//! `warren dlq requeue` with filters moves exactly the matching dead letters; peek leaves
//! them; purge needs --yes and counts; the same over HTTP.

mod common;

use std::collections::HashSet;
use std::process::Command;

use common::{Raw, Setup};
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use warren::Role;
use warren::dlq::Filter;

#[tokio::test]
async fn requeue_with_an_error_filter_moves_exactly_the_matching_ones() {
    let w = Setup::new()
        .queue("mail", "handler = \"noop\"")
        .role(Role::Intake)
        .start()
        .await;
    let q = w.q("mail");
    let raw = Raw::connect().await;
    let ids = raw
        .dead_letters(&q, 10, |i| {
            if i % 3 == 0 {
                "SMTP timeout".into()
            } else {
                "mailbox full".into()
            }
        })
        .await;
    let timeouts: HashSet<&String> = ids
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 3 == 0)
        .map(|(_, id)| id)
        .collect();

    let filter = Filter {
        error_contains: Some("timeout".into()),
        ..Filter::default()
    };
    let report = w
        .app()
        .dlq()
        .requeue(&q, &filter, None, &(), &CancellationToken::new())
        .await
        .expect("requeue");
    assert_eq!((report.moved, report.kept), (4, 6));
    let moved: HashSet<String> = raw.take_all_ids(&q).await.into_iter().collect();
    assert_eq!(moved.len(), 4);
    assert!(
        moved.iter().all(|id| timeouts.contains(id)),
        "only the timeouts moved"
    );
    let left: HashSet<String> = raw
        .take_all_ids(&format!("{q}.dlq"))
        .await
        .into_iter()
        .collect();
    assert_eq!(left.len(), 6);
    assert!(left.iter().all(|id| !timeouts.contains(id)));
    w.stop().await.expect("clean stop");
}

#[tokio::test]
async fn requeue_by_failed_at_and_limit() {
    let w = Setup::new()
        .queue("mail", "handler = \"noop\"")
        .role(Role::Intake)
        .start()
        .await;
    let q = w.q("mail");
    let raw = Raw::connect().await;
    raw.dead_letters(&q, 3, |_| "old".into()).await;
    let cut = std::time::SystemTime::now();
    let newer: HashSet<String> = raw
        .dead_letters(&q, 5, |_| "new".into())
        .await
        .into_iter()
        .collect();
    let filter = Filter {
        failed_after: Some(cut),
        ..Filter::default()
    };
    let report = w
        .app()
        .dlq()
        .requeue(&q, &filter, Some(2), &(), &CancellationToken::new())
        .await
        .expect("requeue");
    assert_eq!(report.moved, 2, "limit respected");
    let moved = raw.take_all_ids(&q).await;
    assert_eq!(moved.len(), 2);
    assert!(moved.iter().all(|id| newer.contains(id)));
    assert_eq!(raw.depth(&format!("{q}.dlq")).await, Some(6));
    w.stop().await.expect("clean stop");
}

#[tokio::test]
async fn requeued_dead_job_runs_again_and_succeeds() {
    let fixed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let handler = {
        let fixed = fixed.clone();
        warren::workers::handler_fn(move |_job| {
            let ok = fixed.load(std::sync::atomic::Ordering::SeqCst);
            async move {
                if ok {
                    warren::workers::Outcome::success()
                } else {
                    warren::workers::Outcome::permanent("downstream bug")
                }
            }
        })
    };
    let w = Setup::new()
        .queue("w", "handler = \"noop\"")
        .handler("w", handler)
        .start()
        .await;
    let id = w.submit("w", serde_json::json!({"x": 1})).await;
    w.wait_status(&id, "dead", std::time::Duration::from_secs(10))
        .await;
    fixed.store(true, std::sync::atomic::Ordering::SeqCst);
    let resp = w
        .http
        .post(format!("{}/v1/queues/{}/dead/requeue", w.base, w.q("w")))
        .json(&serde_json::json!({"error_contains": "downstream"}))
        .send()
        .await
        .expect("requeue over HTTP");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.json::<Value>().await.expect("json")["moved"], 1);
    let job = w
        .wait_status(&id, "succeeded", std::time::Duration::from_secs(10))
        .await;
    assert_eq!(job["attempts"], 1);
    w.stop().await.expect("clean stop");
}

#[tokio::test]
async fn peek_leaves_dead_letters_and_purge_removes_them_over_http() {
    let w = Setup::new()
        .queue("p", "handler = \"noop\"")
        .role(Role::Intake)
        .start()
        .await;
    let q = w.q("p");
    let raw = Raw::connect().await;
    let ids = raw.dead_letters(&q, 4, |i| format!("boom {i}")).await;

    let resp = w
        .http
        .get(format!("{}/v1/queues/{q}/dead?limit=2", w.base))
        .send()
        .await
        .expect("peek");
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["depth"], 4);
    let peeked = body["dead_letters"].as_array().expect("array");
    assert_eq!(peeked.len(), 2);
    assert_eq!(peeked[0]["id"], ids[0].as_str());
    assert_eq!(peeked[0]["last_error"], "boom 0");
    assert_eq!(
        raw.depth(&format!("{q}.dlq")).await,
        Some(4),
        "peek moved nothing"
    );

    let resp = w
        .http
        .post(format!("{}/v1/queues/{q}/dead/purge", w.base))
        .send()
        .await
        .expect("purge");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.json::<Value>().await.expect("json")["purged"], 4);
    assert_eq!(raw.depth(&format!("{q}.dlq")).await, Some(0));

    let resp = w
        .http
        .get(format!("{}/v1/queues/nope/dead", w.base))
        .send()
        .await
        .expect("peek");
    assert_eq!(resp.status(), 404);
    w.stop().await.expect("clean stop");
}

#[tokio::test]
async fn cli_purge_needs_yes_and_list_shows_depth() {
    let dir = tempfile::tempdir().expect("tempdir");
    let q = common::unique("clipurge");
    let _cleanup = common::QueueCleanup(vec![q.clone(), format!("{q}.dlq")]);
    std::fs::write(
        dir.path().join("queues.toml"),
        format!("[queues.{q}]\nhandler = \"noop\"\n"),
    )
    .expect("config");
    let store = common::TestStore::new(dir.path()).await;
    let warren = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_warren"))
            .args(args)
            .current_dir(dir.path())
            .env("WARREN_AMQP_URL", common::amqp_url())
            .env("WARREN_STORE_URL", store.url())
            .env_remove("WARREN_CONFIG")
            .output()
            .expect("run warren")
    };
    assert!(warren(&["topology", "apply"]).status.success());
    let raw = Raw::connect().await;
    raw.dead_letters(&q, 3, |_| "kaput".into()).await;

    let list = warren(&["dlq", "list"]);
    assert!(list.status.success());
    let out = String::from_utf8_lossy(&list.stdout);
    let row = out
        .lines()
        .find(|l| l.starts_with(&q))
        .expect("a row for the queue");
    assert!(row.split_whitespace().nth(1) == Some("3"), "{out}");

    let peek = warren(&["dlq", "peek", &q, "-n", "1"]);
    assert!(String::from_utf8_lossy(&peek.stdout).contains("kaput"));

    let refused = warren(&["dlq", "purge", &q]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--yes"));
    assert_eq!(raw.depth(&format!("{q}.dlq")).await, Some(3));

    let purged = warren(&["dlq", "purge", &q, "--yes"]);
    assert!(
        purged.status.success(),
        "{}",
        String::from_utf8_lossy(&purged.stderr)
    );
    assert!(String::from_utf8_lossy(&purged.stdout).contains("purged 3"));
    assert_eq!(raw.depth(&format!("{q}.dlq")).await, Some(0));
}
