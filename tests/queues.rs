//! `GET /v1/queues` and `warren queues` show, per queue, what waits where: ready, unacked,
//! running, consumers, retrying and dead, and the message rates.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{Raw, Setup, queue_entry as entry, wait_queue_entry as wait_entry};
use serde_json::{Value, json};
use warren::workers::{Outcome, handler_fn};

#[tokio::test]
async fn ready_and_dead_counts_match_what_is_in_the_queues_over_http_and_the_cli() {
    // Intake only: nothing consumes, so the jobs stay ready.
    let w = Setup::new()
        .queue("depth", "handler = \"noop\"")
        .role(warren::Role::Intake)
        .start()
        .await;
    let q = w.q("depth");
    for n in 0..3 {
        w.submit("depth", json!({ "n": n })).await;
    }
    Raw::connect()
        .await
        .dead_letters(&q, 2, |i| format!("boom {i}"))
        .await;

    let (e, all) = entry(&w, &q).await;
    assert_eq!(e["dlq"], format!("{q}.dlq"));
    assert_eq!(e["ready"], 3, "{all}");
    assert_eq!(e["dead"], 2, "{all}");
    assert_eq!(e["consumers"], 0, "{all}");
    assert_eq!(e["retrying"], 0, "{all}");
    assert_eq!(e["paused"], false, "{all}");
    assert_eq!(all["management"], "ok", "the local management API answers");
    let node = all["broker_node"].as_str().unwrap_or_default();
    assert!(
        node.starts_with("amqp") && !node.contains(":guest@"),
        "the broker node is named, without its password: {all}"
    );
    // Unacked comes from the management API once it has sampled the queue.
    let e = wait_entry(&w, &q, |e| !e["unacked"].is_null()).await;
    assert_eq!(e["unacked"], 0);

    // `warren queues` reads the same broker and store.
    let config = w.dir().join("cli.toml");
    std::fs::write(
        &config,
        format!(
            "[store]\nurl = \"{}\"\n[queues.\"{q}\"]\nhandler = \"noop\"\n",
            w.store().url()
        ),
    )
    .expect("write config");
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_warren"))
            .arg("--config")
            .arg(&config)
            .args(args)
            .env("WARREN_AMQP_URL", common::amqp_url())
            .env_remove("WARREN_STORE_URL")
            .output()
            .expect("run warren queues");
        assert!(
            out.status.success(),
            "warren {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8")
    };
    let table = run(&["queues"]);
    let header: Vec<&str> = table
        .lines()
        .next()
        .expect("header")
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        [
            "QUEUE",
            "READY",
            "UNACKED",
            "RUNNING",
            "CONSUMERS",
            "RETRYING",
            "DEAD",
            "PAUSED",
            "ACKED/S"
        ]
    );
    let row: Vec<&str> = table
        .lines()
        .find(|l| l.starts_with(&q))
        .unwrap_or_else(|| panic!("no row for {q}:\n{table}"))
        .split_whitespace()
        .collect();
    assert_eq!(row[0], q);
    assert_eq!(row[1], "3", "ready:\n{table}");
    assert_eq!(row[3], "0", "running:\n{table}");
    assert_eq!(row[4], "0", "consumers:\n{table}");
    assert_eq!(row[5], "0", "retrying:\n{table}");
    assert_eq!(row[6], "2", "dead:\n{table}");
    assert_eq!(row[7], "no", "paused:\n{table}");
    let json: Value = serde_json::from_str(&run(&["queues", "--json"])).expect("JSON");
    assert_eq!(json["queues"][0]["queue"], q.as_str());
    assert_eq!(json["queues"][0]["ready"], 3);
    assert_eq!(json["queues"][0]["dead"], 2);
    w.stop().await.expect("clean stop");
}

#[tokio::test]
async fn running_and_retrying_jobs_show_as_running_unacked_and_retrying() {
    let (gate, busy) = common::Gate::new();
    let w = Setup::new()
        .queue("busy", "handler = \"noop\"")
        // Each attempt fails and asks for 3 s (Retry-After): the job is `retrying` for at
        // least that long, then dead after its second attempt (leaving nothing in the delay
        // levels behind).
        .queue("again", "handler = \"noop\"\nmax_attempts = 2")
        .handler("busy", busy)
        .handler(
            "again",
            handler_fn(|_job| async {
                Outcome::Retry {
                    error: "later".into(),
                    retry_after: Some(Duration::from_secs(3)),
                }
            }),
        )
        .start()
        .await;
    let (busy_q, again_q) = (w.q("busy"), w.q("again"));
    let busy_id = w.submit("busy", json!({})).await;
    gate.started.notified().await;
    let again_id = w.submit("again", json!({})).await;
    w.wait_status(&again_id, "retrying", Duration::from_secs(15))
        .await;

    let (e, all) = entry(&w, &again_q).await;
    assert_eq!(e["retrying"], 1, "{all}");
    assert_eq!(e["ready"], 0, "{e}");
    assert_eq!(e["consumers"], 1, "{e}");
    assert_eq!(
        e["running"], 0,
        "between attempts a job is not running: {e}"
    );
    let e = wait_entry(&w, &busy_q, |e| e["unacked"] == 1).await;
    assert_eq!(e["ready"], 0, "{e}");
    assert_eq!(e["consumers"], 1, "{e}");
    assert_eq!(e["running"], 1, "the gated job holds its claim: {e}");
    assert_eq!(e["retrying"], 0, "{e}");

    gate.release.notify_one();
    w.wait_status(&busy_id, "succeeded", Duration::from_secs(15))
        .await;
    let (e, _) = entry(&w, &busy_q).await;
    assert_eq!(e["running"], 0, "a finished job is not running: {e}");
    // Rates come from the management API once it has sampled the queue: an object with the
    // rates now and the last hour minute by minute.
    let e = wait_entry(&w, &busy_q, |e| !e["rates"].is_null()).await;
    assert!(e["rates"]["acked_per_s"].is_number(), "{e}");
    assert!(e["rates"]["acked_last_hour"].is_array(), "{e}");
    w.wait_status(&again_id, "dead", Duration::from_secs(20))
        .await;
    let (e, all) = entry(&w, &again_q).await;
    assert_eq!(e["retrying"], 0, "{all}");
    assert_eq!(e["dead"], 1, "{all}");
    w.stop().await.expect("clean stop");
}
