//! A token-protected dashboard (DESIGN §9, §12): without a session it asks for a token; a
//! `jobs` session sees but cannot act (no buttons, and a forged action is refused); an
//! `admin` session acts; log out ends the session. Cookies are `HttpOnly`, `SameSite=Strict`
//! and never hold the token.

#[path = "common/browser.rs"]
mod browser;
mod common;

use std::time::Duration;

use browser::Browser;
use common::{Raw, Setup};
use serde_json::json;
use warren::workers::{Outcome, handler_fn};

const ADMIN: &str = "admin-0123456789abcdef0123456789abcdef";
const JOBS: &str = "jobs-fedcba9876543210fedcba9876543210";
const SETTLE: Duration = Duration::from_secs(15);

/// An `application/x-www-form-urlencoded` body.
fn form(pairs: &[(&str, &str)]) -> String {
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

async fn log_in(b: &Browser, base: &str, token: &str) {
    b.goto(&format!("{base}/ui/login")).await;
    b.type_into("#token", token).await;
    b.click("section.login button").await;
}

#[tokio::test]
async fn a_token_protected_dashboard_asks_for_a_token_and_scopes_what_a_session_may_do() {
    let w = Setup::new()
        .queue("sec", "handler = \"noop\"\nmax_attempts = 1")
        .handler(
            "sec",
            handler_fn(|_job| async { Outcome::permanent("broken") }),
        )
        .tokens(&format!("admin:{ADMIN}, jobs:{JOBS}"))
        .start()
        .await;
    let q = w.q("sec");
    // The API needs its bearer token; submit a job that dies.
    let resp = w
        .http
        .post(format!("{}/v1/queues/{q}/jobs", w.base))
        .bearer_auth(JOBS)
        .json(&json!({ "payload": { "x": 1 } }))
        .send()
        .await
        .expect("post");
    let id = common::accepted_id(resp).await;
    let raw = Raw::connect().await;
    let dlq = format!("{q}.dlq");
    let deadline = std::time::Instant::now() + SETTLE;
    while raw.depth(&dlq).await != Some(1) {
        assert!(std::time::Instant::now() < deadline, "the job never died");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let b = Browser::start().await;
    let dead_page = format!("{}/ui/queues/{q}/dead", w.base);
    // Without a session: the log-in form, which refuses a wrong token.
    b.goto(&dead_page).await;
    b.wait_css("#token").await;
    assert_eq!(
        b.client.current_url().await.expect("url").path(),
        "/ui/login"
    );
    assert_eq!(b.count("table").await, 0, "nothing shown before logging in");
    b.type_into("#token", "not-a-token-not-a-token-not-a-token")
        .await;
    b.click("section.login button").await;
    b.wait_text("p.notice", SETTLE, |t| t.contains("not a valid API token"))
        .await;

    // A jobs session: sees the dead letter, but has no buttons that act.
    log_in(&b, &w.base, JOBS).await;
    b.wait_text("header .scope", SETTLE, |t| t == "jobs").await;
    b.goto(&dead_page).await;
    b.wait_css(&format!("tr[data-job=\"{id}\"]")).await;
    assert_eq!(
        b.count("main form[method=post] button").await,
        0,
        "a jobs session sees action buttons"
    );
    assert_eq!(b.count("#purge").await, 0);
    b.goto(&format!("{}/ui/jobs/{id}", w.base)).await;
    assert_eq!(b.text("#status").await, "dead");
    assert_eq!(b.count("main form[method=post]").await, 0);
    // ... and a purge it forges (with its own valid CSRF token) is refused.
    b.goto(&dead_page).await;
    b.js(&format!(
        "const f = document.createElement('form'); f.method = 'post'; \
         f.action = '/ui/queues/{q}/dead/purge'; \
         for (const [k, v] of [['csrf', document.querySelector('header input[name=csrf]').value], ['confirm', '{q}']]) {{ \
           const i = document.createElement('input'); i.type = 'hidden'; i.name = k; i.value = v; f.appendChild(i); }} \
         document.body.appendChild(f); f.submit();"
    ))
    .await;
    b.wait_text("h1", SETTLE, |t| t == "Forbidden").await;
    assert!(b.text("main").await.contains("admin"));
    assert_eq!(raw.depth(&dlq).await, Some(1));

    // Log out: the pages ask for a token again.
    b.goto(&format!("{}/ui/", w.base)).await;
    b.click("header .who form button").await;
    b.wait_css("#token").await;
    b.goto(&format!("{}/ui/", w.base)).await;
    b.wait_css("#token").await;

    // An admin session acts.
    log_in(&b, &w.base, ADMIN).await;
    b.wait_text("header .scope", SETTLE, |t| t == "admin").await;
    b.goto(&dead_page).await;
    b.type_into("#confirm", &q).await;
    b.click("#purge button").await;
    b.wait_text("p.notice", SETTLE, |t| t.contains("Purged 1"))
        .await;
    assert_eq!(raw.depth(&dlq).await, Some(0));
    b.close().await;
}

#[tokio::test]
async fn session_cookies_are_http_only_strict_hold_no_token_and_are_secure_behind_tls() {
    let w = Setup::new()
        .queue("ck", "handler = \"noop\"")
        .tokens(&format!("admin:{ADMIN}"))
        .start()
        .await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    // Without a session: pages go to the log-in form, fragments and forms get 401.
    let resp = http
        .get(format!("{}/ui/", w.base))
        .send()
        .await
        .expect("GET");
    assert_eq!(resp.status(), 303);
    assert_eq!(resp.headers()["location"], "/ui/login?next=%2Fui%2F");
    let resp = http
        .get(format!("{}/ui/live/overview", w.base))
        .send()
        .await
        .expect("GET");
    assert_eq!(resp.status(), 401);
    // A bearer token is not a session.
    let resp = http
        .get(format!("{}/ui/live/overview", w.base))
        .bearer_auth(ADMIN)
        .send()
        .await
        .expect("GET");
    assert_eq!(resp.status(), 401);

    for (proxy, secure) in [(None, false), (Some("https"), true)] {
        let mut get = http.get(format!("{}/ui/login", w.base));
        if let Some(p) = proxy {
            get = get.header("x-forwarded-proto", p);
        }
        let page = get.send().await.expect("GET /ui/login");
        let login_cookie = page.headers()["set-cookie"]
            .to_str()
            .expect("ascii")
            .to_owned();
        let nonce = login_cookie
            .strip_prefix("warren_login=")
            .and_then(|c| c.split(';').next())
            .expect("a log-in cookie")
            .to_owned();
        let html = page.text().await.expect("body");
        assert!(
            html.contains(&format!("value=\"{nonce}\"")),
            "the form carries its nonce"
        );
        let mut post = http
            .post(format!("{}/ui/login", w.base))
            .header("cookie", format!("warren_login={nonce}"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form(&[
                ("token", ADMIN),
                ("csrf", &nonce),
                ("next", "/ui/schedules"),
            ]));
        if let Some(p) = proxy {
            post = post.header("x-forwarded-proto", p);
        }
        let resp = post.send().await.expect("POST /ui/login");
        assert_eq!(resp.status(), 303);
        assert_eq!(resp.headers()["location"], "/ui/schedules");
        let session = resp
            .headers()
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find(|c| c.starts_with("warren_session="))
            .expect("a session cookie")
            .to_owned();
        assert!(session.contains("; HttpOnly"), "{session}");
        assert!(session.contains("; SameSite=Strict"), "{session}");
        assert_eq!(session.contains("; Secure"), secure, "{session}");
        assert!(
            !session.contains(ADMIN) && !session.contains("0123456789abcdef"),
            "{session}"
        );
        let value = session.split(';').next().expect("pair").to_owned();
        let resp = http
            .get(format!("{}/ui/schedules", w.base))
            .header("cookie", &value)
            .send()
            .await
            .expect("GET");
        assert_eq!(resp.status(), 200);
    }

    // The log-in form without its cookie (e.g. posted from another site) is refused.
    let resp = http
        .post(format!("{}/ui/login", w.base))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(&[("token", ADMIN), ("csrf", "x")]))
        .send()
        .await
        .expect("POST");
    assert_eq!(resp.status(), 403);
    assert!(
        resp.headers()
            .get("set-cookie")
            .is_none_or(|c| !c.to_str().unwrap_or("").starts_with("warren_session="))
    );
}
