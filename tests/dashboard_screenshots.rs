//! Regenerates docs/img/dashboard-*.png, the dashboard's screenshots in docs/operating.md:
//! a warren with a few jobs (some dead, one whose error is markup), each page photographed
//! by headless Chromium at 1280×800, and the overview and a job at phone width (390×844).
//! Not part of the suite (`#[ignore]`); run by hand:
//!
//! ```text
//! cargo test --test dashboard_screenshots -- --ignored
//! ```

#[path = "common/browser.rs"]
mod browser;
mod common;

use std::path::PathBuf;
use std::time::Duration;

use browser::Browser;
use common::Setup;
use serde_json::json;
use warren::workers::{Outcome, handler_fn};

const SETTLE: Duration = Duration::from_secs(15);

fn out(name: &str) -> PathBuf {
    common::repo()
        .join("docs/img")
        .join(format!("dashboard-{name}.png"))
}

async fn shoot(b: &Browser, url: &str, ready: &str, name: &str) {
    b.goto(url).await;
    b.wait_css(ready).await;
    let png = b.screenshot().await;
    std::fs::write(out(name), png).expect("write the screenshot");
}

#[tokio::test]
#[ignore = "writes docs/img/dashboard-*.png; run by hand"]
async fn screenshots_of_every_page() {
    let w = Setup::new()
        // Readable names (deleted again at the end); not the sample queues' own names.
        .queue_named(
            "reports",
            "demo-reports",
            "handler = \"noop\"\nmax_attempts = 1",
        )
        .handler(
            "reports",
            handler_fn(|job| async move {
                if job.payload.windows(6).any(|w| w == b"broken") {
                    Outcome::permanent("template `quarterly` not found")
                } else {
                    Outcome::success_with("{\"pages\": 12}")
                }
            }),
        )
        .queue_named("webhooks", "demo-webhooks", "handler = \"noop\"")
        .extra(
            "[schedules.nightly-report]\nqueue = \"demo-reports\"\ncron = \"0 3 * * *\"\ntimezone = \"Europe/Berlin\"\npayload = { kind = \"nightly\" }\n\n\
             [schedules.heartbeat]\nqueue = \"demo-webhooks\"\ncron = \"*/5 * * * * *\"\n",
        )
        .start()
        .await;
    let mut dead = Vec::new();
    for i in 0..4 {
        w.submit("reports", json!({ "report": i, "template": "ok" }))
            .await;
        dead.push(
            w.submit("reports", json!({ "report": i, "template": "broken" }))
                .await,
        );
    }
    let ok = w
        .submit("reports", json!({ "report": 9, "template": "ok" }))
        .await;
    for id in &dead {
        w.wait_status(id, "dead", SETTLE).await;
    }
    w.wait_status(&ok, "succeeded", SETTLE).await;
    let reports = w.q("reports");

    let b = Browser::start().await;
    shoot(&b, &format!("{}/ui/", w.base), "table.queues", "overview").await;
    shoot(
        &b,
        &format!("{}/ui/jobs/{}", w.base, dead[0]),
        "#status",
        "job-dead",
    )
    .await;
    shoot(&b, &format!("{}/ui/jobs/{ok}", w.base), "#status", "job").await;
    shoot(
        &b,
        &format!("{}/ui/queues/{reports}/dead", w.base),
        "table.dead-letters",
        "dead-letters",
    )
    .await;
    shoot(
        &b,
        &format!("{}/ui/jobs?queue={reports}&status=dead", w.base),
        "form.filters",
        "jobs",
    )
    .await;
    shoot(
        &b,
        &format!("{}/ui/schedules", w.base),
        "#schedules",
        "schedules",
    )
    .await;
    b.close().await;

    let phone = Browser::start_sized(390, 844).await;
    shoot(
        &phone,
        &format!("{}/ui/", w.base),
        "table.queues",
        "overview-phone",
    )
    .await;
    shoot(
        &phone,
        &format!("{}/ui/queues/{reports}/dead", w.base),
        "table.dead-letters",
        "dead-letters-phone",
    )
    .await;
    phone.close().await;

    let w2 = Setup::new()
        .queue("q", "handler = \"noop\"")
        .tokens("admin:admin-0123456789abcdef0123456789abcdef")
        .start()
        .await;
    let b = Browser::start().await;
    shoot(&b, &format!("{}/ui/", w2.base), "#token", "login").await;
    b.close().await;
}
