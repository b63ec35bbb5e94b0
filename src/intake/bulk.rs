//! `POST /v1/jobs/cancel` and `POST /v1/jobs/requeue` (admin): act on jobs chosen by id or
//! by the list filters of `GET /v1/jobs` ([`crate::bulk`]).

use std::sync::Arc;

use axum::Json;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::openapi::ProblemDocument;
use super::search::FilterBody;
use super::{IntakeState, Problem};
use crate::bulk::{MAX_IDS, Selection};
use crate::store::now_ms;

/// Largest bulk request body (bytes): 1,000 ids fit with room to spare.
const MAX_BODY: usize = 64 * 1024;

/// The body of a bulk action, as documented: exactly one of `ids` and `filter`.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(untagged)]
#[schema(as = BulkRequest)]
#[allow(dead_code)] // For the document only: `BulkRequest` reads the body.
pub(crate) enum BulkRequestDoc {
    /// These jobs.
    Ids(ByIds),
    /// Every job matching the filter.
    Filter(ByFilter),
}

/// `{"ids": [...]}`.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ByIds {
    /// These jobs (0 to 1,000 ids; repeats count once).
    #[schema(max_items = 1000)]
    ids: Vec<Uuid>,
}

/// `{"filter": {...}}`.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ByFilter {
    /// Every job matching these filters (those of `GET /v1/jobs`) when the action starts.
    filter: FilterBody,
}

/// The body of a bulk action: exactly one of `ids` and `filter`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct BulkRequest {
    ids: Option<Vec<Uuid>>,
    filter: Option<FilterBody>,
}

/// The answer to `POST /v1/jobs/cancel`.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct CancelResult {
    /// Jobs cancelled (they were `queued` or `retrying`).
    cancelled: u64,
    /// Jobs chosen that were not cancelled: running, finished, or (by id) unknown.
    not_cancellable: u64,
}

/// The answer to `POST /v1/jobs/requeue`.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct BulkRequeueResult {
    /// Dead jobs whose dead letters moved back to their work queues.
    requeued: u64,
    /// Jobs chosen that were not requeued: not `dead`, unknown, or with no dead letter in
    /// their DLQ (purged or drained).
    not_requeued: u64,
}

/// Reads and checks a bulk request's body.
async fn selection(state: &IntakeState, request: Request) -> Result<Selection, Problem> {
    let (parts, body) = request.into_parts();
    super::jobs::require_json(&parts.headers)?;
    let bytes = axum::body::to_bytes(body, MAX_BODY).await.map_err(|_| {
        Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body-too-large",
            "Request body too large",
            format!("a bulk request body is at most {MAX_BODY} bytes"),
        )
    })?;
    super::extract::require_object(&bytes, "the body")?;
    let req: BulkRequest = serde_json::from_slice(&bytes).map_err(|e| {
        Problem::bad_request(format!(
            "the body must be {{\"ids\": [...]}} or {{\"filter\": {{...}}}}: {e}"
        ))
    })?;
    match (req.ids, req.filter) {
        (Some(ids), None) => {
            if ids.len() > MAX_IDS {
                return Err(Problem::bad_request(format!(
                    "at most {MAX_IDS} ids in one request; use a filter for more"
                )));
            }
            Ok(Selection::Ids(ids))
        }
        (None, Some(f)) => Ok(Selection::Filter(f.check(state)?)),
        _ => Err(Problem::bad_request(
            "give exactly one of `ids` and `filter`",
        )),
    }
}

/// `POST /v1/jobs/cancel`.
#[utoipa::path(
    post,
    path = "/v1/jobs/cancel",
    tag = "jobs",
    summary = "Cancel many jobs",
    description = "Cancels the `queued` and `retrying` jobs among those chosen by `ids` or by `filter` (exactly one); running and finished jobs are left alone and counted as not cancellable. A filter is worked through in pages and takes the jobs that matched when the request started. Each cancelled job's message is acked and skipped when it arrives. Needs the `admin` scope when tokens are configured.",
    request_body(content = BulkRequestDoc, content_type = "application/json",
        example = json!({"filter": {"queue": "reports", "status": ["queued"]}})),
    responses(
        (status = 200, description = "How many were cancelled and how many were not", body = CancelResult),
        (status = 400, description = "`malformed-request`: not exactly one of `ids` and `filter`, more than 1,000 ids, or a bad filter value", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 404, description = "`unknown-queue`: the filter names a queue that is not configured", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 413, description = "`body-too-large`: over 64 KiB", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 415, description = "`unsupported-media-type`", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 503, description = "`unavailable`: the store failed (pages done before stay cancelled)", body = ProblemDocument, content_type = "application/problem+json"),
    )
)]
pub(super) async fn cancel_jobs(
    State(state): State<Arc<IntakeState>>,
    request: Request,
) -> Result<Json<CancelResult>, Problem> {
    let selection = selection(&state, request).await?;
    let report = crate::bulk::cancel(&*state.store, &selection, now_ms(), false)
        .await
        .map_err(|e| super::search::store_failed(&e))?;
    tracing::info!(
        cancelled = report.cancelled,
        not_cancellable = report.not_cancellable,
        "bulk cancel"
    );
    Ok(Json(CancelResult {
        cancelled: report.cancelled,
        not_cancellable: report.not_cancellable,
    }))
}

/// `POST /v1/jobs/requeue`.
#[utoipa::path(
    post,
    path = "/v1/jobs/requeue",
    tag = "dead letters",
    summary = "Requeue many dead jobs",
    description = "Moves the dead letters of the `dead` jobs among those chosen by `ids` or by `filter` (exactly one; a filter takes the `dead` jobs it matches) back to their work queues, each acked in its DLQ only after the broker confirmed its copy; the jobs are `queued` again with their attempts reset. Needs the `admin` scope when tokens are configured.",
    request_body(content = BulkRequestDoc, content_type = "application/json",
        example = json!({"filter": {"queue": "reports", "error_contains": "timeout"}})),
    responses(
        (status = 200, description = "How many were requeued and how many were not", body = BulkRequeueResult),
        (status = 400, description = "`malformed-request`: not exactly one of `ids` and `filter`, more than 1,000 ids, or a bad filter value", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 404, description = "`unknown-queue`", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 413, description = "`body-too-large`: over 64 KiB", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 415, description = "`unsupported-media-type`", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 500, description = "`dlq-failed`", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 503, description = "`unavailable`: the broker or the store failed (what was confirmed stays moved)", body = ProblemDocument, content_type = "application/problem+json"),
    )
)]
pub(super) async fn requeue_jobs(
    State(state): State<Arc<IntakeState>>,
    request: Request,
) -> Result<Json<BulkRequeueResult>, Problem> {
    let selection = selection(&state, request).await?;
    let report = crate::bulk::requeue(&super::dead::dlq(&state), &state.store, &selection)
        .await
        .map_err(|e| super::dead::failed(&e))?;
    tracing::info!(
        requeued = report.requeued,
        not_requeued = report.not_requeued,
        "bulk requeue"
    );
    Ok(Json(BulkRequeueResult {
        requeued: report.requeued,
        not_requeued: report.not_requeued,
    }))
}
