//! Drain, fix a payload by hand, replay: every job ends `succeeded`, the edited one with the
//! edited payload. A broken archive publishes nothing and names the line.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Raw, Setup};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use warren::workers::{Job, Outcome, handler_fn};

#[tokio::test]
async fn drain_edit_replay_runs_every_job_with_the_edited_payload() {
    // Payloads with "amount" < 0 fail permanently; the fix is to edit them.
    let seen: Arc<Mutex<HashMap<String, Value>>> = Arc::default();
    let handler = {
        let seen = seen.clone();
        handler_fn(move |job: Job| {
            let seen = seen.clone();
            async move {
                let payload: Value = serde_json::from_slice(&job.payload).unwrap_or(Value::Null);
                if payload["amount"].as_i64().unwrap_or(0) < 0 {
                    return Outcome::permanent("negative amount");
                }
                seen.lock().expect("lock").insert(job.id.clone(), payload);
                Outcome::success()
            }
        })
    };
    let w = Setup::new()
        .queue("pay", "handler = \"noop\"")
        .handler("pay", handler)
        .start()
        .await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(w.submit("pay", json!({"amount": -1, "order": i})).await);
    }
    for id in &ids {
        w.wait_status(id, "dead", Duration::from_secs(10)).await;
    }
    let dlq = w.app().dlq();
    let path = w.dir().join("pay.jsonl");
    let drained = dlq
        .drain(&w.q("pay"), &path, None, &(), &CancellationToken::new())
        .await
        .expect("drain");
    assert_eq!(drained.moved, 5);

    // Edit every line's amount, as `jq -c '.payload.amount = 10'` would; one gets 99.
    let edited = &ids[2];
    let text = std::fs::read_to_string(&path).expect("archive");
    let fixed: Vec<String> = text
        .lines()
        .map(|l| {
            let mut v: Value = serde_json::from_str(l).expect("json line");
            let amount = if v["id"] == edited.as_str() { 99 } else { 10 };
            v["payload"]["amount"] = json!(amount);
            v.to_string()
        })
        .collect();
    let fixed_path = w.dir().join("pay-fixed.jsonl");
    std::fs::write(&fixed_path, fixed.join("\n") + "\n").expect("write");

    let report = dlq
        .replay(&fixed_path, None, false, &(), &CancellationToken::new())
        .await
        .expect("replay");
    assert_eq!(report.moved, 5);
    for id in &ids {
        let job = w
            .wait_status(id, "succeeded", Duration::from_secs(10))
            .await;
        assert_eq!(job["attempts"], 1, "attempts were reset: {job}");
    }
    let seen = std::mem::take(&mut *seen.lock().expect("lock"));
    assert_eq!(seen[edited], json!({"amount": 99, "order": 2}));
    assert_eq!(seen[&ids[0]], json!({"amount": 10, "order": 0}));

    // Replaying the same file again runs nothing twice.
    dlq.replay(&fixed_path, None, false, &(), &CancellationToken::new())
        .await
        .expect("replay again");
    let sentinel = w.submit("pay", json!({"amount": 1})).await;
    w.wait_status(&sentinel, "succeeded", Duration::from_secs(10))
        .await;
    assert_eq!(seen.len(), 5);
    assert_eq!(w.job(edited).await["attempts"], 1);
    w.stop().await.expect("clean stop");
}

#[tokio::test]
async fn a_broken_line_publishes_nothing_and_is_named() {
    let w = Setup::new()
        .queue("pay", "handler = \"noop\"")
        .role(warren::Role::Intake)
        .start()
        .await;
    let raw = Raw::connect().await;
    raw.dead_letters(&w.q("pay"), 3, |_| "x".into()).await;
    let path = w.dir().join("a.jsonl");
    w.app()
        .dlq()
        .drain(&w.q("pay"), &path, None, &(), &CancellationToken::new())
        .await
        .expect("drain");
    let mut lines: Vec<String> = std::fs::read_to_string(&path)
        .expect("read")
        .lines()
        .map(str::to_owned)
        .collect();
    lines[1] = lines[1][..lines[1].len() / 2].to_owned();
    std::fs::write(&path, lines.join("\n") + "\n").expect("write");

    let err = w
        .app()
        .dlq()
        .replay(&path, None, false, &(), &CancellationToken::new())
        .await
        .expect_err("broken file");
    let msg = err.to_string();
    assert!(msg.contains("a.jsonl:2:"), "names the line: {msg}");
    assert!(msg.contains("nothing was published"), "{msg}");
    assert_eq!(raw.depth(&w.q("pay")).await, Some(0), "nothing published");

    // A line for a queue that is not configured is refused the same way.
    let mut v: Value = serde_json::from_str(&lines[0]).expect("json");
    v["queue"] = json!("nowhere");
    std::fs::write(&path, format!("{v}\n")).expect("write");
    let err = w
        .app()
        .dlq()
        .replay(&path, None, true, &(), &CancellationToken::new())
        .await
        .expect_err("unknown queue");
    assert!(
        err.to_string()
            .contains("a.jsonl:1: `nowhere` is not a configured queue"),
        "{err}"
    );
    w.stop().await.expect("clean stop");
}
