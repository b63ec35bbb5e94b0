//! The dashboard at `/ui/` in a real browser (headless Chromium over WebDriver): what an
//! operator sees and does on the overview, a job's page and a queue's dead letters, and that
//! what jobs carry is shown as text (DESIGN §12).

#[path = "common/browser.rs"]
mod browser;
mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use browser::Browser;
use common::{Raw, Setup};
use serde_json::json;
use warren::Role;
use warren::workers::{Outcome, handler_fn};

const SETTLE: Duration = Duration::from_secs(15);
/// Two refreshes at the default rate (5 s), and some.
const REFRESHED: Duration = Duration::from_secs(15);

#[tokio::test]
async fn the_overview_shows_a_queues_counts_and_updates_them_without_a_reload() {
    // Intake only: posted jobs stay ready in the work queue.
    let w = Setup::new()
        .queue("ov", "handler = \"noop\"")
        .role(Role::Intake)
        .start()
        .await;
    let q = w.q("ov");
    let b = Browser::start().await;
    b.goto(&format!("{}/ui/", w.base)).await;
    let cell = format!("tr[data-queue=\"{q}\"] td.ready");
    assert_eq!(b.text(&cell).await, "0");
    // A mark on the page's window: a reload would lose it.
    b.js("window.warrenMark = 42").await;
    for i in 0..3 {
        w.submit("ov", json!({ "n": i })).await;
    }
    b.wait_text(&cell, REFRESHED, |t| t == "3").await;
    assert_eq!(
        b.js("return window.warrenMark").await,
        json!(42),
        "the page reloaded"
    );
    assert_eq!(
        b.text(&format!("tr[data-queue=\"{q}\"] td.dead")).await,
        "0"
    );
    // The queue links to its dead letters.
    b.click(&format!("tr[data-queue=\"{q}\"] td.dead a")).await;
    b.wait_text("h1", SETTLE, |t| t == format!("Dead letters of {q}"))
        .await;
    b.close().await;

    // Every answer forbids inline script and style; errors are HTML pages, not problem+json.
    let resp = w
        .http
        .get(format!("{}/ui/", w.base))
        .send()
        .await
        .expect("GET /ui/");
    assert_eq!(resp.status(), 200);
    let csp = resp.headers()["content-security-policy"]
        .to_str()
        .expect("ascii");
    assert!(csp.starts_with("default-src 'self'"), "{csp}");
    let resp = w
        .http
        .get(format!("{}/ui/nowhere", w.base))
        .send()
        .await
        .expect("GET");
    assert_eq!(resp.status(), 404);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .expect("ascii")
            .starts_with("text/html")
    );
    assert!(resp.headers().contains_key("content-security-policy"));
    // The API keeps its problem documents.
    let resp = w
        .http
        .get(format!("{}/v1/nowhere", w.base))
        .send()
        .await
        .expect("GET");
    assert_eq!(resp.headers()["content-type"], "application/problem+json");
}

#[tokio::test]
async fn a_dead_jobs_page_shows_its_payload_and_requeueing_it_makes_it_succeed() {
    let fixed = Arc::new(AtomicBool::new(false));
    let handler = {
        let fixed = fixed.clone();
        handler_fn(move |_job| {
            let fixed = fixed.load(Ordering::SeqCst);
            async move {
                if fixed {
                    Outcome::success_with("{\"pages\": 3}")
                } else {
                    Outcome::permanent("template missing")
                }
            }
        })
    };
    let w = Setup::new()
        .queue("req", "handler = \"noop\"\nmax_attempts = 1")
        .handler("req", handler)
        .start()
        .await;
    let id = w.submit("req", json!({ "report": "quarterly-42" })).await;
    w.wait_status(&id, "dead", SETTLE).await;

    let b = Browser::start().await;
    // From the overview to the dead letters to the job, by links.
    b.goto(&format!("{}/ui/", w.base)).await;
    let q = w.q("req");
    b.wait_text(&format!("tr[data-queue=\"{q}\"] td.dead"), REFRESHED, |t| {
        t == "1"
    })
    .await;
    b.click(&format!("tr[data-queue=\"{q}\"] td.dead a")).await;
    b.click(&format!("tr[data-job=\"{id}\"] a")).await;
    assert_eq!(b.text("#status").await, "dead");
    assert!(b.text("#last-error").await.contains("template missing"));
    let payload = b.text(".payload-text").await;
    assert!(payload.contains("quarterly-42"), "{payload}");
    assert!(
        b.client
            .current_url()
            .await
            .expect("url")
            .path()
            .ends_with(&id),
        "on the job's page"
    );

    // The cause is fixed; requeue from the job's page, then watch it succeed in place.
    fixed.store(true, Ordering::SeqCst);
    b.click("button[name=one]").await;
    b.wait_text("p.notice", SETTLE, |t| t.contains("Requeued"))
        .await;
    b.wait_text("#status", REFRESHED, |t| t == "succeeded")
        .await;
    assert!(b.text("#result").await.contains("\"pages\": 3"));
    b.close().await;
    let job = w.wait_status(&id, "succeeded", SETTLE).await;
    assert_eq!(job["result"], json!({"pages": 3}));
    assert_eq!(
        Raw::connect().await.depth(&format!("{q}.dlq")).await,
        Some(0)
    );
}

#[tokio::test]
async fn purging_needs_the_queue_name_typed_and_forms_without_a_csrf_token_are_refused() {
    let w = Setup::new()
        .queue("pur", "handler = \"noop\"\nmax_attempts = 1")
        .handler(
            "pur",
            handler_fn(|_job| async { Outcome::permanent("nope") }),
        )
        .start()
        .await;
    let q = w.q("pur");
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(w.submit("pur", json!({ "i": i })).await);
    }
    for id in &ids {
        w.wait_status(id, "dead", SETTLE).await;
    }
    let raw = Raw::connect().await;
    let dlq = format!("{q}.dlq");
    let b = Browser::start().await;
    let page = format!("{}/ui/queues/{q}/dead", w.base);
    b.goto(&page).await;
    assert_eq!(b.text("strong.depth").await, "3");

    // A form stripped of its CSRF token is refused, and nothing moves.
    b.js("document.querySelector('#requeue-all input[name=csrf]').remove()")
        .await;
    b.click("#requeue-all button").await;
    b.wait_text("h1", SETTLE, |t| t == "Form refused").await;
    assert_eq!(raw.depth(&dlq).await, Some(3));

    // The wrong name purges nothing.
    b.goto(&page).await;
    b.type_into("#confirm", "not-the-queue").await;
    b.click("#purge button").await;
    b.wait_text("h1", SETTLE, |t| t == "Not purged").await;
    assert_eq!(raw.depth(&dlq).await, Some(3));

    // Requeue one selected (it dies again: the handler still fails).
    b.goto(&page).await;
    b.click(&format!("input[name=ids][value=\"{}\"]", ids[0]))
        .await;
    b.click("button[name=selected]").await;
    b.wait_text("p.notice", SETTLE, |t| t.contains("Requeued 1"))
        .await;
    w.wait_status(&ids[0], "dead", SETTLE).await;

    // The queue's name purges them all.
    b.goto(&page).await;
    b.type_into("#confirm", &q).await;
    b.click("#purge button").await;
    b.wait_text("p.notice", SETTLE, |t| t.contains("Purged 3"))
        .await;
    assert_eq!(raw.depth(&dlq).await, Some(0));
    assert_eq!(b.text("strong.depth").await, "0");
    b.close().await;
    assert!(w.job(&ids[1]).await["discarded_at"].is_string());
}

#[tokio::test]
async fn a_job_whose_error_is_markup_shows_the_markup_as_text_and_runs_no_script() {
    const XSS: &str = "<img src=x onerror=alert(1)>";
    let w = Setup::new()
        .queue("xss", "handler = \"noop\"\nmax_attempts = 1")
        .handler("xss", handler_fn(|_job| async { Outcome::permanent(XSS) }))
        .start()
        .await;
    let id = w
        .submit("xss", json!({ "note": "<script>alert(2)</script>" }))
        .await;
    w.wait_status(&id, "dead", SETTLE).await;
    let b = Browser::start().await;
    for url in [
        format!("{}/ui/jobs/{id}", w.base),
        format!("{}/ui/queues/{}/dead", w.base, w.q("xss")),
    ] {
        b.goto(&url).await;
        let shown = b.text("pre.last-error, #last-error").await;
        assert!(shown.contains(XSS), "{url}: {shown:?}");
        assert_eq!(b.count("img").await, 0, "{url}: an img element was made");
        assert_eq!(
            b.count("main script").await,
            0,
            "{url}: a script element was made"
        );
        assert!(
            b.client.get_alert_text().await.is_err(),
            "{url}: an alert opened"
        );
    }
    // The job page's refresh puts the same text in place, still as text.
    b.goto(&format!("{}/ui/jobs/{id}", w.base)).await;
    let deadline = std::time::Instant::now() + REFRESHED;
    let mut refreshed = serde_json::Value::Null;
    while refreshed.is_null() {
        assert!(
            std::time::Instant::now() < deadline,
            "the job page never refreshed"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        refreshed = b
            .js("return document.querySelector('#job').dataset.refreshed || null")
            .await;
    }
    assert!(b.text("#last-error").await.contains(XSS));
    assert_eq!(b.count("img").await, 0);
    assert!(b.client.get_alert_text().await.is_err());
    b.close().await;
}

#[tokio::test]
async fn every_page_fits_a_phone_width_screen_and_a_laptop_screen_without_sideways_scrolling() {
    let w = Setup::new()
        .queue("fit", "handler = \"noop\"\nmax_attempts = 1")
        .handler(
            "fit",
            handler_fn(|_job| async {
                Outcome::permanent(
                    "a long error line without spaces: ".to_owned() + &"x".repeat(300),
                )
            }),
        )
        .start()
        .await;
    let id = w
        .submit(
            "fit",
            json!({ "long": "y".repeat(500), "nested": { "a": [1, 2, 3] } }),
        )
        .await;
    w.wait_status(&id, "dead", SETTLE).await;
    let q = w.q("fit");
    let pages = [
        ("/ui/".to_owned(), "table.queues"),
        (format!("/ui/jobs/{id}"), "#status"),
        (format!("/ui/queues/{q}/dead"), "table.dead-letters"),
        (format!("/ui/jobs?queue={q}&status=dead"), "form.filters"),
        ("/ui/schedules".to_owned(), "#no-schedules"),
    ];
    for (width, height) in [(390, 844), (1280, 800)] {
        let b = Browser::start_sized(width, height).await;
        for (path, ready) in &pages {
            b.goto(&format!("{}{path}", w.base)).await;
            b.wait_css(ready).await;
            let sizes = b
                .js("return [document.documentElement.scrollWidth, window.innerWidth]")
                .await;
            let (scroll, inner) = (sizes[0].as_u64(), sizes[1].as_u64());
            assert!(
                scroll <= inner,
                "{path} at {width}x{height}: {scroll:?} px wide in a {inner:?} px window"
            );
        }
        b.close().await;
    }
}
