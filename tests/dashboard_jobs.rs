//! The dashboard's jobs list and pause/resume in a real browser (headless Chromium over
//! WebDriver): filter jobs by status and open one; pause a queue, post, watch `ready` grow,
//! resume, and see the jobs succeed (issue 18's browser scenarios).

#[path = "common/browser.rs"]
mod browser;
mod common;

use std::time::Duration;

use browser::Browser;
use common::Setup;
use serde_json::json;
use warren::workers::{Outcome, handler_fn};

const SETTLE: Duration = Duration::from_secs(15);
/// Two refreshes at the default rate (5 s), and some.
const REFRESHED: Duration = Duration::from_secs(15);

#[tokio::test]
async fn filtering_jobs_by_status_lists_only_those_and_links_to_each() {
    // A job whose payload says so fails for good; the others succeed.
    let handler = handler_fn(|job| {
        let fail = String::from_utf8_lossy(&job.payload).contains("\"fail\":true");
        async move {
            if fail {
                Outcome::permanent("report template missing")
            } else {
                Outcome::success()
            }
        }
    });
    let w = Setup::new()
        .queue("jl", "handler = \"noop\"\nmax_attempts = 1")
        .handler("jl", handler)
        .start()
        .await;
    let q = w.q("jl");
    let mut dead = Vec::new();
    let mut ok = Vec::new();
    for i in 0..6 {
        let fail = i % 2 == 0;
        let id = w.submit("jl", json!({ "n": i, "fail": fail })).await;
        if fail { dead.push(id) } else { ok.push(id) }
    }
    for id in &dead {
        w.wait_status(id, "dead", SETTLE).await;
    }
    for id in &ok {
        w.wait_status(id, "succeeded", SETTLE).await;
    }

    let b = Browser::start().await;
    // From the overview's queue link to the jobs page, filtered to that queue.
    b.goto(&format!("{}/ui/", w.base)).await;
    b.click(&format!("tr[data-queue=\"{q}\"] td a")).await;
    b.wait_text("h1", SETTLE, |t| t == "Jobs").await;
    assert_eq!(b.count("tr[data-job]").await, 6, "every job of the queue");
    // Tick `dead` and filter.
    b.click("input[name=status][value=dead]").await;
    b.click("form.filters button[type=submit]").await;
    let deadline = std::time::Instant::now() + SETTLE;
    while b.count("tr[data-job]").await != dead.len() {
        assert!(
            std::time::Instant::now() < deadline,
            "the filter did not apply"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let url = b.js("return location.search").await;
    let url = url.as_str().expect("string");
    assert!(url.contains("status=dead"), "a shareable URL: {url}");
    for id in &dead {
        assert_eq!(
            b.count(&format!("tr[data-job=\"{id}\"]")).await,
            1,
            "dead job {id} listed"
        );
    }
    // The API agrees with the page.
    let api: serde_json::Value = w
        .http
        .get(format!("{}/v1/jobs?queue={q}&status=dead", w.base))
        .send()
        .await
        .expect("GET /v1/jobs")
        .json()
        .await
        .expect("json");
    let mut listed: Vec<String> = api["jobs"]
        .as_array()
        .expect("jobs")
        .iter()
        .map(|j| j["id"].as_str().expect("id").to_owned())
        .collect();
    listed.sort();
    let mut want = dead.clone();
    want.sort();
    assert_eq!(listed, want);
    // Open one: its page shows it dead, with its error as text.
    b.click(&format!("tr[data-job=\"{}\"] a", dead[0])).await;
    b.wait_text("#status", SETTLE, |t| t == "dead").await;
    assert!(b.text("body").await.contains("report template missing"));
    // A bad filter value is explained, not a crash.
    b.goto(&format!("{}/ui/jobs?status=nonsense", w.base)).await;
    b.wait_text("#list-error", SETTLE, |t| t.contains("status"))
        .await;
    b.close().await;
}

#[tokio::test]
async fn pausing_from_the_overview_holds_new_jobs_until_resume() {
    let w = Setup::new().queue("pz", "handler = \"noop\"").start().await;
    let q = w.q("pz");
    let row = format!("tr[data-queue=\"{q}\"]");
    let b = Browser::start().await;
    b.goto(&format!("{}/ui/", w.base)).await;
    b.wait_text(&format!("{row} td.paused span"), SETTLE, |t| t == "no")
        .await;
    b.click(&format!("{row} td.paused button")).await;
    b.wait_text(&format!("{row} td.paused span"), SETTLE, |t| t == "paused")
        .await;
    // The worker lets go of the queue (its consumer is cancelled).
    b.wait_text(&format!("{row} td.consumers"), REFRESHED, |t| t == "0")
        .await;
    let ids: Vec<String> = {
        let mut ids = Vec::new();
        for i in 0..3 {
            ids.push(w.submit("pz", json!({ "n": i })).await);
        }
        ids
    };
    // The jobs wait in the broker, and the page shows them growing.
    b.wait_text(&format!("{row} td.ready"), REFRESHED, |t| t == "3")
        .await;
    for id in &ids {
        assert_eq!(
            w.job(id).await["status"],
            "queued",
            "nothing runs while paused"
        );
    }
    b.click(&format!("{row} td.paused button")).await;
    b.wait_text(&format!("{row} td.paused span"), SETTLE, |t| t == "no")
        .await;
    for id in &ids {
        w.wait_status(id, "succeeded", SETTLE).await;
    }
    b.wait_text(&format!("{row} td.ready"), REFRESHED, |t| t == "0")
        .await;
    b.close().await;
}
