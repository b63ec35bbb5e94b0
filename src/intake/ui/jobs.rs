//! `/ui/jobs?<the list filters of DESIGN §3>`: the job list, and `/ui/schedules`.
//!
//! The filter form is complete and its URL is the stable, shareable one; the rows need the
//! job search API (`Store::list`, `GET /v1/jobs`), which this build does not have yet, so the
//! page says so. [`rows`] renders a page of jobs and its next-page link; wiring the search
//! in means: turn [`Filters`] into the store's list filter, call it, and pass the jobs and
//! the next cursor to [`rows`] where [`page`] now shows the notice.

use axum::Extension;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};

use super::FormData;
use super::page::{Page, layout};
use super::session::Viewer;
use crate::store::JobStatus;
use crate::view::JobView;

/// The list filters of `GET /v1/jobs` (DESIGN §3), as the page's query string carries them.
#[derive(Debug, Default)]
pub(super) struct Filters {
    queue: Option<String>,
    /// Repeatable.
    status: Vec<String>,
    created_after: Option<String>,
    created_before: Option<String>,
    correlation_id: Option<String>,
    idempotency_key: Option<String>,
    error_contains: Option<String>,
    limit: Option<String>,
    #[expect(
        dead_code,
        reason = "read when the job search API lands (see the module)"
    )]
    cursor: Option<String>,
}

impl Filters {
    fn parse(query: Option<&str>) -> Self {
        let f = FormData::parse(query.unwrap_or("").as_bytes());
        let one = |name: &str| f.get(name).filter(|v| !v.is_empty()).map(str::to_owned);
        Self {
            queue: one("queue"),
            status: f
                .all("status")
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
                .collect(),
            created_after: one("created_after"),
            created_before: one("created_before"),
            correlation_id: one("correlation_id"),
            idempotency_key: one("idempotency_key"),
            error_contains: one("error_contains"),
            limit: one("limit"),
            cursor: one("cursor"),
        }
    }

    /// The query string of these filters with `cursor` (for the next page's link).
    fn query_with_cursor(&self, cursor: &str) -> String {
        let mut q = form_urlencoded::Serializer::new(String::new());
        let pairs = [
            ("queue", &self.queue),
            ("created_after", &self.created_after),
            ("created_before", &self.created_before),
            ("correlation_id", &self.correlation_id),
            ("idempotency_key", &self.idempotency_key),
            ("error_contains", &self.error_contains),
            ("limit", &self.limit),
        ];
        for (k, v) in pairs {
            if let Some(v) = v {
                q.append_pair(k, v);
            }
        }
        for s in &self.status {
            q.append_pair("status", s);
        }
        q.append_pair("cursor", cursor);
        q.finish()
    }
}

const STATUSES: [JobStatus; 6] = [
    JobStatus::Queued,
    JobStatus::Running,
    JobStatus::Retrying,
    JobStatus::Succeeded,
    JobStatus::Dead,
    JobStatus::Cancelled,
];

fn filter_form(f: &Filters) -> Markup {
    let text = |v: &Option<String>| v.clone().unwrap_or_default();
    html! {
        form.filters.card method="get" action="/ui/jobs" {
            label { "queue" input type="text" name="queue" value=(text(&f.queue)); }
            fieldset {
                legend { "status" }
                @for s in STATUSES {
                    label.inline {
                        input type="checkbox" name="status" value=(s.as_str()) checked[f.status.iter().any(|x| x == s.as_str())];
                        (s.as_str())
                    }
                }
            }
            label { "created after" input type="text" name="created_after" placeholder="2026-01-02T03:04:05Z" value=(text(&f.created_after)); }
            label { "created before" input type="text" name="created_before" value=(text(&f.created_before)); }
            label { "correlation id" input type="text" name="correlation_id" value=(text(&f.correlation_id)); }
            label { "idempotency key" input type="text" name="idempotency_key" value=(text(&f.idempotency_key)); }
            label { "error contains" input type="text" name="error_contains" value=(text(&f.error_contains)); }
            label { "per page" input type="number" name="limit" min="1" max="500" placeholder="50" value=(text(&f.limit)); }
            button.primary type="submit" { "Filter" }
        }
    }
}

/// `GET /ui/jobs?…`: the filter form; the rows once the search API is in (see the module).
pub(super) async fn page(Extension(viewer): Extension<Viewer>, req: Request) -> Response {
    let filters = Filters::parse(req.uri().query());
    layout(
        "Jobs",
        Some(&viewer),
        html! {
            h1 { "Jobs" }
            (filter_form(&filters))
            p.notice #list-unavailable {
                "Listing jobs needs the job search API, which this build does not have yet. "
                "Open a job by its id (box at the top), or a queue's dead letters from the "
                a href="/ui/" { "overview" } "."
            }
        },
    )
    .into_response()
}

/// A page of jobs (newest first) and the link to the next page when there is one.
#[cfg_attr(
    not(test),
    expect(dead_code, reason = "wired in when the job search API lands")
)]
fn rows(jobs: &[JobView], filters: &Filters, next_cursor: Option<&str>) -> Markup {
    html! {
        table.responsive.jobs {
            thead { tr { th { "job" } th { "queue" } th { "status" } th.num { "attempts" } th { "created" } th { "last error" } } }
            tbody {
                @for j in jobs {
                    tr data-job=(j.id) {
                        td.mono data-label="job" { a href=(super::job_url(&j.id.to_string())) { (j.id) } }
                        td data-label="queue" { (j.queue) }
                        td data-label="status" { span class={ "status " (j.status) } { (j.status) } }
                        td.num data-label="attempts" { (j.attempts) " / " (j.max_attempts) }
                        td data-label="created" { (j.created_at) }
                        td data-label="last error" { (j.last_error.as_deref().map(|e| crate::message::truncate(e, 200)).unwrap_or_default()) }
                    }
                }
            }
        }
        @if jobs.is_empty() { p.muted { "No job matches." } }
        @if let Some(c) = next_cursor {
            p { a rel="next" href={ "/ui/jobs?" (filters.query_with_cursor(c)) } { "Next page →" } }
        }
    }
}

/// `GET /ui/find?id=ID`: to the job's page (the box in the navigation).
pub(super) async fn find(req: Request) -> Response {
    let f = FormData::parse(req.uri().query().unwrap_or("").as_bytes());
    match f.get("id").map(str::trim).filter(|s| !s.is_empty()) {
        Some(id) => Redirect::to(&super::job_url(id)).into_response(),
        None => Page::error(
            StatusCode::BAD_REQUEST,
            "No job id",
            "Type a job id to open it.",
        )
        .into_response(),
    }
}

/// `GET /ui/schedules`: the schedules (none can be configured in this build).
pub(super) async fn schedules(Extension(viewer): Extension<Viewer>) -> Response {
    layout(
        "Schedules",
        Some(&viewer),
        html! {
            h1 { "Schedules" }
            p.muted #no-schedules { "No schedules are configured: this build of warren has no schedules yet." }
        },
    )
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_escape_what_they_show_and_link_the_next_page_with_the_filters() {
        let job = JobView {
            id: uuid::Uuid::now_v7(),
            queue: "q".into(),
            status: "dead",
            attempts: 1,
            max_attempts: 1,
            last_error: Some("<img src=x onerror=alert(1)>".into()),
            result: None,
            created_at: "2026-01-01T00:00:00.000Z".into(),
            started_at: None,
            finished_at: None,
            next_attempt_at: None,
            correlation_id: None,
            discarded_at: None,
        };
        let f = Filters::parse(Some("queue=q&status=dead&status=retrying"));
        let html = rows(&[job], &f, Some("abc")).into_string();
        assert!(
            html.contains("&lt;img src=x onerror=alert(1)&gt;"),
            "{html}"
        );
        assert!(!html.contains("<img"), "{html}");
        assert!(
            html.contains("/ui/jobs?queue=q&amp;status=dead&amp;status=retrying&amp;cursor=abc"),
            "{html}"
        );
    }
}
