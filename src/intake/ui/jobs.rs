//! `/ui/jobs?<the list filters of DESIGN §3>`: the job list, and `/ui/schedules`.
//!
//! The filters are those of `GET /v1/jobs`, checked by the same code
//! (`super::super::search::Raw`), and the page is the store's same keyset page
//! (`Store::list`): newest first, with a link to the next page that keeps the filters.

use std::sync::Arc;

use axum::Extension;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};

use super::FormData;
use super::page::{Page, layout};
use super::session::Viewer;
use crate::intake::IntakeState;
use crate::store::{Cursor, DEFAULT_PAGE_LIMIT, JobStatus, PAGE_LIMITS};
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
    schedule: Option<String>,
    limit: Option<String>,
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
            schedule: one("schedule"),
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
            ("schedule", &self.schedule),
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
            label { "schedule" input type="text" name="schedule" value=(text(&f.schedule)); }
            label { "per page" input type="number" name="limit" min="1" max="500" placeholder="50" value=(text(&f.limit)); }
            button.primary type="submit" { "Filter" }
        }
    }
}

/// `GET /ui/jobs?…`: the filter form and one page of the matching jobs, newest first. A bad
/// filter value is shown above the (empty) list, naming the field, as the API's 400 does.
pub(super) async fn page(
    State(state): State<Arc<IntakeState>>,
    Extension(viewer): Extension<Viewer>,
    req: Request,
) -> Response {
    let filters = Filters::parse(req.uri().query());
    let listed = list(&state, &filters).await;
    layout(
        "Jobs",
        Some(&viewer),
        html! {
            h1 { "Jobs" }
            (filter_form(&filters))
            @match &listed {
                Ok((jobs, next)) => (rows(jobs, &filters, next.as_deref())),
                Err(why) => p.notice.error #list-error { (why) },
            }
        },
    )
    .into_response()
}

/// The page of jobs `filters` selects and the next page's cursor, or why not (a bad filter
/// value, an unconfigured queue, a store that cannot be read).
async fn list(state: &IntakeState, f: &Filters) -> Result<(Vec<JobView>, Option<String>), String> {
    let filter = crate::intake::search::Raw {
        queue: f.queue.clone(),
        statuses: f.status.clone(),
        created_after: f.created_after.clone(),
        created_before: f.created_before.clone(),
        correlation_id: f.correlation_id.clone(),
        idempotency_key: f.idempotency_key.clone(),
        error_contains: f.error_contains.clone(),
        schedule: f.schedule.clone(),
    }
    .check(state)
    .map_err(|p| p.detail().to_owned())?;
    let limit = match &f.limit {
        None => DEFAULT_PAGE_LIMIT,
        Some(l) => l
            .parse::<u32>()
            .ok()
            .filter(|n| PAGE_LIMITS.contains(n))
            .ok_or_else(|| "per page must be a whole number from 1 to 500".to_owned())?,
    };
    let after = match &f.cursor {
        None => None,
        Some(c) => Some(
            Cursor::decode(c)
                .ok_or_else(|| "this page's cursor is not one warren gave".to_owned())?,
        ),
    };
    let page = state.store.list(&filter, after, limit).await.map_err(|e| {
        tracing::warn!(error = %e, "store failed during a dashboard job search");
        "the status store is unavailable; try again".to_owned()
    })?;
    Ok((
        page.jobs.into_iter().map(JobView::from).collect(),
        page.next_cursor.map(|c| c.encode()),
    ))
}

/// A page of jobs (newest first) and the link to the next page when there is one.
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

/// `GET /ui/schedules`: every schedule with its cron expression, timezone, next run and
/// the job of its latest tick (linked), and a link to all its jobs.
pub(super) async fn schedules(
    State(state): State<Arc<IntakeState>>,
    Extension(viewer): Extension<Viewer>,
) -> Response {
    let views = crate::schedule::views(&state.config, &*state.store, crate::store::now_ms()).await;
    let dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".to_owned());
    layout(
        "Schedules",
        Some(&viewer),
        html! {
            h1 { "Schedules" }
            @match &views {
                Err(e) => p.notice.error #list-error { "The store cannot be read: " (crate::redact(&e.to_string())) },
                Ok(v) if v.is_empty() => p.muted #no-schedules { "No schedules are configured: add a [schedules.NAME] table to the configuration." },
                Ok(v) => table #schedules {
                    thead { tr { th { "Schedule" } th { "Queue" } th { "Cron" } th { "Timezone" } th { "Catch-up" } th { "Next run" } th { "Last run" } th { "Last job" } th { "Jobs" } } }
                    tbody {
                        @for s in v {
                            tr {
                                td { (s.name) }
                                td { (s.queue) }
                                td { code { (s.cron) } }
                                td { (s.timezone) }
                                td { (s.catch_up) }
                                td { (dash(&s.next_run)) }
                                td { (dash(&s.last_run_at)) }
                                td {
                                    @if let Some(id) = s.last_job_id {
                                        a href={ "/ui/jobs/" (id) } { (id) }
                                        " " span.muted { (dash(&s.last_job_status)) }
                                    } @else { "-" }
                                }
                                td { a href={ "/ui/jobs?schedule=" (percent_encoding::utf8_percent_encode(&s.name, percent_encoding::NON_ALPHANUMERIC)) } { "all jobs" } }
                            }
                        }
                    }
                },
            }
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
            schedule: None,
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
