//! The web dashboard at `/ui/` (DESIGN §12): server-rendered HTML pages over the same store
//! and services as the `/v1` API (the overview of [`crate::overview`], the store's `get` and
//! `cancel`, the DLQ tools of [`crate::dlq`]), never HTTP calls to itself.
//!
//! Pages, each at a stable URL: `/ui/` (overview; pause and resume), `/ui/jobs` (the job
//! list: the filters of `GET /v1/jobs`, keyset pages), `/ui/jobs/{id}` (one job), `/ui/queues/{queue}/dead`
//! (dead letters: peek, requeue one, selected or all matching, purge with a typed
//! confirmation), `/ui/schedules`, `/ui/login`. HTML is written with `maud`, which escapes
//! every value it interpolates, so payloads, errors and results are shown as text.
//!
//! The pages need no script; `/ui/assets/app.js` (a few lines, no library) refreshes the
//! parts marked `data-live` by fetching their fragment (`/ui/live/…`) every
//! [`REFRESH_MS`] milliseconds while the tab is visible, without reloading the page. The
//! script and the style sheet are compiled into the binary; nothing comes from elsewhere, so
//! the dashboard works offline. Every answer carries `Content-Security-Policy: default-src
//! 'self'` (plus `frame-ancestors 'none'`, `form-action 'self'`, `base-uri 'none'`), so no
//! inline script or style runs.
//!
//! Sessions, scopes and CSRF tokens: [`session`]. The UI routes are not part of the `/v1`
//! API: they are merged into the intake's router after its problem+json and query-parameter
//! layers, are absent from `/openapi.json`, and answer errors with HTML pages
//! ([`html_errors`]).

mod assets;
mod dead;
mod job;
mod jobs;
mod overview;
mod page;
mod session;

use std::sync::Arc;

use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{any, get, post};
use axum::{Extension, Router};

use super::IntakeState;
use page::Page;

/// How often an open page refreshes its live parts (milliseconds): the default rate, shown to
/// the script as the page's `data-refresh-ms`.
pub const REFRESH_MS: u64 = 5_000;

/// What the dashboard's handlers share beyond the intake's state.
pub(super) struct Ui {
    keys: session::Keys,
}

/// The dashboard's routes, to be merged into the intake's router (they carry their own
/// session check, headers and HTML error pages).
pub(super) fn router(state: &IntakeState) -> Router<Arc<IntakeState>> {
    let ui = Arc::new(Ui {
        keys: session::Keys::new(&state.config.auth.tokens),
    });
    Router::new()
        .route("/ui", get(|| async { Redirect::permanent("/ui/") }))
        .route("/ui/", get(overview::page))
        .route("/ui/live/overview", get(overview::live))
        .route("/ui/jobs", get(jobs::page))
        .route("/ui/find", get(jobs::find))
        .route("/ui/jobs/{id}", get(job::page))
        .route("/ui/live/jobs/{id}", get(job::live))
        .route("/ui/jobs/{id}/cancel", post(job::cancel))
        .route("/ui/queues/{queue}/dead", get(dead::page))
        .route("/ui/queues/{queue}/dead/requeue", post(dead::requeue))
        .route("/ui/queues/{queue}/dead/purge", post(dead::purge))
        .route("/ui/queues/{queue}/pause", post(overview::pause))
        .route("/ui/queues/{queue}/resume", post(overview::resume))
        .route("/ui/schedules", get(jobs::schedules))
        .route("/ui/login", get(session::login_page).post(session::login))
        .route("/ui/logout", post(session::logout))
        .route("/ui/assets/{file}", get(assets::serve))
        .route("/ui/{*rest}", any(not_found))
        .layer(axum::middleware::from_fn(session::middleware))
        .layer(axum::middleware::from_fn(html_errors))
        .layer(Extension(ui))
}

async fn not_found() -> Page {
    Page::error(
        StatusCode::NOT_FOUND,
        "Not found",
        "There is no such dashboard page.",
    )
}

/// Middleware (outermost): every answer gets the security headers; an error answer that is
/// not already an HTML page (axum's 405, an extractor's rejection) becomes one with the same
/// status and headers.
async fn html_errors(req: Request, next: Next) -> Response {
    let resp = next.run(req).await;
    let status = resp.status();
    let is_html = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/html"));
    let mut resp = if (status.is_client_error() || status.is_server_error()) && !is_html {
        let (mut parts, body) = resp.into_parts();
        let text = axum::body::to_bytes(body, 4096).await.unwrap_or_default();
        let text = String::from_utf8_lossy(&text).trim().to_owned();
        let detail = if text.is_empty() {
            status.canonical_reason().unwrap_or("error").to_owned()
        } else {
            text
        };
        let fresh = Page::error(status, status.canonical_reason().unwrap_or("Error"), detail)
            .into_response();
        parts.headers.remove(header::CONTENT_LENGTH);
        parts.headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
        Response::from_parts(parts, fresh.into_body())
    } else {
        resp
    };
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    resp
}

/// A parsed `application/x-www-form-urlencoded` body or query string: every pair in order
/// (a name may repeat, e.g. the selected `ids` of a requeue).
#[derive(Debug, Default)]
pub(super) struct FormData(Vec<(String, String)>);

impl FormData {
    pub(super) fn parse(bytes: &[u8]) -> Self {
        Self(
            form_urlencoded::parse(bytes)
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }

    /// The first value of `name`.
    pub(super) fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of `name`, in order.
    pub(super) fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// What a path segment cannot hold as is (RFC 3986 §3.3: `/`, `?`, `#`, `%`, and what is not
/// a visible ASCII character or is unsafe in HTML attributes).
const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'/')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'`')
    .add(b'{')
    .add(b'}')
    .add(b'\\')
    .add(b'^')
    .add(b'|')
    .add(b'[')
    .add(b']')
    .add(b'\'');

/// `s` percent-encoded as one path segment.
pub(super) fn encode_segment(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, SEGMENT).to_string()
}

/// `s` encoded as a query-string value.
pub(super) fn encode_query(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// The dead-letter page of `queue`.
pub(super) fn dead_url(queue: &str) -> String {
    format!("/ui/queues/{}/dead", encode_segment(queue))
}

/// A job's page.
pub(super) fn job_url(id: &str) -> String {
    format!("/ui/jobs/{}", encode_segment(id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_keep_repeated_names_and_urls_are_encoded() {
        let f = FormData::parse(b"ids=a&ids=b&csrf=x%20y&empty=");
        assert_eq!(f.all("ids").collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(f.get("csrf"), Some("x y"));
        assert_eq!(f.get("empty"), Some(""));
        assert_eq!(f.get("missing"), None);
        assert_eq!(dead_url("a b/c"), "/ui/queues/a%20b%2Fc/dead");
        assert_eq!(encode_query("/ui/jobs?x=1&y"), "%2Fui%2Fjobs%3Fx%3D1%26y");
    }
}
