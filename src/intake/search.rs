//! `GET /v1/jobs`: the job search (DESIGN §3), and the list filters as `POST /v1/jobs/cancel`
//! and `POST /v1/jobs/requeue` take them in a body.
//!
//! A filter on a queue that is not configured is `404 unknown-queue`, as everywhere else a
//! queue is named; a cursor that is not one this API gave is `400 malformed-request`.

use std::sync::Arc;

use axum::Json;
use axum::extract::{RawQuery, State};
use serde::{Deserialize, Serialize};

use super::openapi::ProblemDocument;
use super::{IntakeState, Problem};
use crate::store::{Cursor, DEFAULT_PAGE_LIMIT, JobFilter, JobStatus, PAGE_LIMITS};
use crate::view::JobView;

/// Longest `error_contains` (characters).
pub(super) const MAX_ERROR_TEXT: usize = 256;

/// The answer to `GET /v1/jobs`.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct JobList {
    /// Up to `limit` jobs, newest first, each as `GET /v1/jobs/{id}` shows it.
    jobs: Vec<JobView>,
    /// Pass as `cursor` for the next (older) page; `null` on the last page.
    next_cursor: Option<String>,
}

/// The list filters as a JSON object (the `filter` of a bulk action); every field optional,
/// unknown ones refused.
#[derive(Deserialize, Serialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct FilterBody {
    /// Only jobs of this configured queue.
    #[schema(pattern = "^[A-Za-z0-9_.-]{1,200}$", min_length = 1, max_length = 200)]
    queue: Option<String>,
    /// Only jobs in one of these statuses.
    #[schema(value_type = Option<Vec<JobStatus>>)]
    status: Option<Vec<String>>,
    /// Only jobs created at or after this time (RFC 3339).
    #[schema(format = DateTime)]
    created_after: Option<String>,
    /// Only jobs created before this time (RFC 3339).
    #[schema(format = DateTime)]
    created_before: Option<String>,
    /// Only jobs with this correlation id.
    #[schema(pattern = "^[ -~]{1,255}$", min_length = 1, max_length = 255)]
    correlation_id: Option<String>,
    /// Only jobs with this idempotency key.
    #[schema(pattern = "^[ -~]{1,255}$", min_length = 1, max_length = 255)]
    idempotency_key: Option<String>,
    /// Only jobs whose last error contains this text, ignoring case.
    #[schema(
        pattern = "^[^\\u0000-\\u001f]{1,256}$",
        min_length = 1,
        max_length = 256
    )]
    error_contains: Option<String>,
    /// Only jobs of this schedule (`[schedules.NAME]`).
    #[schema(pattern = "^[A-Za-z0-9_.-]{1,100}$", min_length = 1, max_length = 100)]
    schedule: Option<String>,
}

/// A filter's raw values, from a query string, a body or the dashboard's form, checked into a
/// [`JobFilter`].
#[derive(Default)]
pub(super) struct Raw {
    pub(super) queue: Option<String>,
    pub(super) statuses: Vec<String>,
    pub(super) created_after: Option<String>,
    pub(super) created_before: Option<String>,
    pub(super) correlation_id: Option<String>,
    pub(super) idempotency_key: Option<String>,
    pub(super) error_contains: Option<String>,
    pub(super) schedule: Option<String>,
}

impl Raw {
    /// The filter, or 400 (a bad value) / 404 (an unconfigured queue) naming the field.
    pub(super) fn check(self, state: &IntakeState) -> Result<JobFilter, Problem> {
        if let Some(q) = &self.queue {
            super::jobs::configured_queue(state, q)?;
        }
        let statuses = self
            .statuses
            .iter()
            .map(|s| {
                JobStatus::parse(s).ok_or_else(|| {
                    Problem::bad_request(format!(
                        "`status` must be one of queued, running, retrying, succeeded, dead, cancelled, not `{}`",
                        crate::message::truncate(s, 40)
                    ))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let time = |field: &str, v: Option<String>| {
            v.map(|t| {
                super::extract::rfc3339(&t)
                    .map(crate::store::to_ms)
                    .ok_or_else(|| {
                        Problem::bad_request(format!(
                            "`{field}` must be an RFC 3339 date-time, e.g. 2026-01-02T03:04:05Z"
                        ))
                    })
            })
            .transpose()
        };
        let token = |field: &str, v: Option<String>| {
            v.map(|t| super::jobs::token(&format!("`{field}`"), &t))
                .transpose()
        };
        let error_contains = self
            .error_contains
            .map(|e| {
                let n = e.chars().count();
                if n == 0 || n > MAX_ERROR_TEXT || e.chars().any(|c| u32::from(c) < 0x20) {
                    return Err(Problem::bad_request(format!(
                        "`error_contains` must be 1 to {MAX_ERROR_TEXT} characters, none of them control characters"
                    )));
                }
                Ok(e)
            })
            .transpose()?;
        Ok(JobFilter {
            queue: self.queue,
            statuses,
            created_after: time("created_after", self.created_after)?,
            created_before: time("created_before", self.created_before)?,
            correlation_id: token("correlation_id", self.correlation_id)?,
            idempotency_key: token("idempotency_key", self.idempotency_key)?,
            error_contains,
            schedule: self
                .schedule
                .map(|s| {
                    if crate::schedule::is_valid_name(&s) {
                        Ok(s)
                    } else {
                        Err(Problem::bad_request(
                            "`schedule` must be a schedule name: 1 to 100 letters, digits, '_', '-' and '.'",
                        ))
                    }
                })
                .transpose()?,
        })
    }
}

impl FilterBody {
    /// The filter, checked as the query string's is.
    pub(super) fn check(self, state: &IntakeState) -> Result<JobFilter, Problem> {
        Raw {
            queue: self.queue,
            statuses: self.status.unwrap_or_default(),
            created_after: self.created_after,
            created_before: self.created_before,
            correlation_id: self.correlation_id,
            idempotency_key: self.idempotency_key,
            error_contains: self.error_contains,
            schedule: self.schedule,
        }
        .check(state)
    }
}

/// 503 for a store that failed a read.
pub(super) fn store_failed(e: &crate::Error) -> Problem {
    tracing::warn!(error = %e, "store failed during a job search");
    Problem::unavailable("the status store is unavailable")
}

/// `GET /v1/jobs?…`: one page of the jobs matching the filters, newest first.
#[utoipa::path(
    get,
    path = "/v1/jobs",
    tag = "jobs",
    summary = "Search jobs",
    description = "One page of the jobs matching every filter given, newest first, keyset-paginated: pass `next_cursor` back as `cursor` for the next page (walking the pages sees each job that matched at the start once). Every filter is optional; `status` may repeat.",
    params(
        ("queue" = Option<String>, Query, description = "Only jobs of this configured queue (404 `unknown-queue` otherwise)", pattern = "^[A-Za-z0-9_.-]{1,200}$", min_length = 1, max_length = 200),
        ("status" = Option<Vec<JobStatus>>, Query, description = "Only jobs in one of these statuses (repeat the parameter for several)"),
        ("created_after" = Option<String>, Query, description = "Only jobs created at or after this time (RFC 3339)"),
        ("created_before" = Option<String>, Query, description = "Only jobs created before this time (RFC 3339)"),
        ("correlation_id" = Option<String>, Query, description = "Only jobs with this correlation id", pattern = "^[ -~]{1,255}$", min_length = 1, max_length = 255),
        ("idempotency_key" = Option<String>, Query, description = "Only jobs with this idempotency key", pattern = "^[ -~]{1,255}$", min_length = 1, max_length = 255),
        ("error_contains" = Option<String>, Query, description = "Only jobs whose last error contains this text, ignoring case (`%` and `_` are plain characters)", pattern = "^[^\\u0000-\\u001f]{1,256}$", min_length = 1, max_length = 256),
        ("schedule" = Option<String>, Query, description = "Only jobs enqueued by this schedule (`[schedules.NAME]`)", pattern = "^[A-Za-z0-9_.-]{1,100}$", min_length = 1, max_length = 100),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 500, description = "Jobs per page (default 50)"),
        ("cursor" = Option<String>, Query, description = "`next_cursor` of the page before, unchanged", pattern = "^A[Q-T][A-Za-z0-9_-]{20}[AEIMQUYcgkosw048]$", min_length = 23, max_length = 23),
    ),
    responses(
        (status = 200, description = "A page of jobs, newest first", body = JobList),
        (status = 400, description = "`malformed-request`: a bad value, a repeated parameter other than `status`, or a cursor this API did not give", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 404, description = "`unknown-queue`", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 503, description = "`unavailable`: the store cannot be read", body = ProblemDocument, content_type = "application/problem+json"),
    )
)]
pub(super) async fn list_jobs(
    State(state): State<Arc<IntakeState>>,
    RawQuery(query): RawQuery,
) -> Result<Json<JobList>, Problem> {
    let mut raw = Raw::default();
    let mut limit = None;
    let mut cursor = None;
    for pair in query.as_deref().unwrap_or("").split('&') {
        if pair.is_empty() {
            continue;
        }
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let (k, v) = (super::query::form_decode(k), super::query::form_decode(v));
        let slot = match k.as_str() {
            "status" => {
                raw.statuses.push(v);
                continue;
            }
            "queue" => &mut raw.queue,
            "created_after" => &mut raw.created_after,
            "created_before" => &mut raw.created_before,
            "correlation_id" => &mut raw.correlation_id,
            "idempotency_key" => &mut raw.idempotency_key,
            "error_contains" => &mut raw.error_contains,
            "schedule" => &mut raw.schedule,
            "limit" => &mut limit,
            "cursor" => &mut cursor,
            // (Unknown names were refused before the handler ran.)
            other => {
                return Err(Problem::bad_request(format!(
                    "unknown query parameter `{}`",
                    crate::message::truncate(other, 100)
                )));
            }
        };
        if slot.replace(v).is_some() {
            return Err(Problem::bad_request(format!(
                "`{k}` is given twice; only `status` may repeat"
            )));
        }
    }
    let limit = match limit {
        None => DEFAULT_PAGE_LIMIT,
        Some(l) => l
            .parse::<u32>()
            .ok()
            .filter(|l| PAGE_LIMITS.contains(l))
            .ok_or_else(|| {
                Problem::bad_request(format!(
                    "`limit` must be an integer from {} to {}",
                    PAGE_LIMITS.start(),
                    PAGE_LIMITS.end()
                ))
            })?,
    };
    let after = cursor
        .map(|c| {
            Cursor::decode(&c).ok_or_else(|| {
                Problem::bad_request(
                    "`cursor` is not one this API gave: pass a page's `next_cursor` unchanged",
                )
            })
        })
        .transpose()?;
    let filter = raw.check(&state)?;
    let page = state
        .store
        .list(&filter, after, limit)
        .await
        .map_err(|e| store_failed(&e))?;
    Ok(Json(JobList {
        jobs: page.jobs.into_iter().map(JobView::from).collect(),
        next_cursor: page.next_cursor.map(|c| c.encode()),
    }))
}
