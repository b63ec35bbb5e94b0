//! The DLQ over HTTP (admin): `GET /v1/queues/{queue}/dead` peeks, `POST …/dead/requeue`
//! and `POST …/dead/purge` act, mirroring `warren dlq peek|requeue|purge`.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::extract::{Path, Query, int};
use super::openapi::{DeadLetters, ProblemDocument, PurgeResult, RequeueResult};
use super::{IntakeState, Problem};
use crate::dlq::{Dlq, Filter};
use crate::error::Error;

/// Most dead letters one peek returns.
const MAX_PEEK: u64 = 100;
/// Largest `limit` of a purge or requeue: the integer range clients share (`i64`).
const MAX_PURGE: u64 = i64::MAX as u64;
/// Largest requeue request body (bytes).
const MAX_REQUEUE_BODY: usize = 64 * 1024;

pub(super) fn dlq(state: &IntakeState) -> Dlq<'_> {
    Dlq {
        config: &state.config,
        broker: state.publisher.broker(),
        publisher: &state.publisher,
        store: &state.store,
    }
}

/// `404 unknown-queue` unless `queue` is configured.
pub(super) fn known(state: &IntakeState, queue: &str) -> Result<(), Problem> {
    if state.config.queue(queue).is_some() {
        return Ok(());
    }
    Err(Problem::new(
        StatusCode::NOT_FOUND,
        "unknown-queue",
        "Unknown queue",
        format!(
            "no queue named `{}` is configured",
            crate::message::truncate(queue, 200)
        ),
    ))
}

pub(super) fn failed(e: &Error) -> Problem {
    tracing::warn!(error = %e, "DLQ operation failed");
    if e.is_unavailable() {
        Problem::unavailable(format!("DLQ operation failed: {e}"))
    } else {
        Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "dlq-failed",
            "DLQ operation failed",
            e.to_string(),
        )
    }
}

/// `?limit=N`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct LimitQuery {
    limit: Option<u64>,
}

/// `GET /v1/queues/{queue}/dead?limit=N`: the DLQ's depth and up to N (default 10, at most
/// 100) dead letters from its head, in the archive format of `dlq/README.md`; nothing moves.
#[utoipa::path(
    get,
    path = "/v1/queues/{queue}/dead",
    tag = "dead letters",
    summary = "Peek at a queue's dead letters",
    description = "The DLQ's depth and up to `limit` dead letters from its head, in the archive format of dlq/README.md; nothing moves.",
    params(
        ("queue" = String, Path, description = "A configured queue"),
        ("limit" = Option<u64>, Query, minimum = 0, maximum = 100, description = "How many dead letters (default 10, at most 100)"),
    ),
    responses(
        (status = 200, description = "The DLQ's depth and its first dead letters", body = DeadLetters),
        (status = 400, description = "`malformed-request`: bad query string", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 404, description = "`unknown-queue`", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 500, description = "`dlq-failed`", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 503, description = "`unavailable`: the broker cannot be reached", body = ProblemDocument, content_type = "application/problem+json"),
    )
)]
pub(super) async fn peek(
    State(state): State<Arc<IntakeState>>,
    Path(queue): Path<String>,
    Query(q): Query<LimitQuery>,
) -> Result<Json<Value>, Problem> {
    known(&state, &queue)?;
    let n = q.limit.unwrap_or(10);
    if n > MAX_PEEK {
        return Err(Problem::bad_request(format!(
            "limit must be at most {MAX_PEEK}"
        )));
    }
    let n = usize::try_from(n).unwrap_or(usize::MAX);
    let lines = dlq(&state).peek(&queue, n).await.map_err(|e| failed(&e))?;
    let summary = dlq(&state).list().await.map_err(|e| failed(&e))?;
    let depth = summary
        .iter()
        .find(|s| s.queue == queue)
        .and_then(|s| s.depth);
    Ok(Json(json!({
        "queue": queue,
        "dlq": crate::topology::dlq_name(&queue),
        "depth": depth,
        "dead_letters": lines,
    })))
}

/// The body of a requeue: all fields optional, unknown ones refused.
#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RequeueRequest {
    /// Move at most this many.
    #[serde(default, deserialize_with = "int::limit")]
    #[schema(minimum = 0, maximum = 9_223_372_036_854_775_807_i64)]
    limit: Option<u64>,
    /// Only dead letters whose last error contains this text.
    error_contains: Option<String>,
    /// Only those that failed at or after this time (RFC 3339).
    #[schema(format = DateTime)]
    failed_after: Option<String>,
    /// Only those that failed before this time (RFC 3339).
    #[schema(format = DateTime)]
    failed_before: Option<String>,
}

/// `POST /v1/queues/{queue}/dead/requeue`: moves matching dead letters back to the work
/// queue (confirm, then ack); answers how many moved and how many stay.
#[utoipa::path(
    post,
    path = "/v1/queues/{queue}/dead/requeue",
    tag = "dead letters",
    summary = "Move dead letters back to the work queue",
    description = "Moves the matching dead letters present now back to the work queue (each acked in the DLQ only after the broker confirmed its copy). The body is optional: none (or `{}`) moves every dead letter present now.",
    params(("queue" = String, Path, description = "A configured queue")),
    request_body(content = Option<RequeueRequest>, content_type = "application/json",
        example = json!({"error_contains": "timeout", "failed_after": "2026-01-02T03:04:05Z", "limit": 10})),
    responses(
        (status = 200, description = "How many moved and how many did not match and stay", body = RequeueResult),
        (status = 400, description = "`malformed-request`: not a JSON object of the fields below, or a time that is not RFC 3339", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 404, description = "`unknown-queue`", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 413, description = "`body-too-large`: over 64 KiB", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 415, description = "`unsupported-media-type`: a body that is not `application/json`", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 500, description = "`dlq-failed`", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 503, description = "`unavailable`", body = ProblemDocument, content_type = "application/problem+json"),
    )
)]
pub(super) async fn requeue(
    State(state): State<Arc<IntakeState>>,
    Path(queue): Path<String>,
    request: Request,
) -> Result<Json<Value>, Problem> {
    known(&state, &queue)?;
    let (parts, body) = request.into_parts();
    let bytes = axum::body::to_bytes(body, MAX_REQUEUE_BODY)
        .await
        .map_err(|_| {
            Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body-too-large",
                "Request body too large",
                format!("a requeue request body is at most {MAX_REQUEUE_BODY} bytes"),
            )
        })?;
    // No body, or `null`, is `{}`: requeue everything. (Whitespace alone is not JSON.)
    let trimmed = bytes.trim_ascii();
    let req: RequeueRequest = if bytes.is_empty() || trimmed == b"null" {
        RequeueRequest::default()
    } else {
        super::jobs::require_json(&parts.headers)?;
        super::extract::require_object(trimmed, "the body")?;
        serde_json::from_slice(&bytes).map_err(|e| {
            Problem::bad_request(format!(
                "the body must be a JSON object of `limit`, `error_contains`, `failed_after`, `failed_before`: {e}"
            ))
        })?
    };
    let time = |field: &str, v: Option<String>| {
        v.map(|t| {
            super::extract::rfc3339(&t).ok_or_else(|| {
                Problem::bad_request(format!(
                    "`{field}` must be an RFC 3339 date-time, e.g. 2026-01-02T03:04:05Z"
                ))
            })
        })
        .transpose()
    };
    if req.limit.is_some_and(|l| l > MAX_PURGE) {
        return Err(Problem::bad_request(format!(
            "limit must be at most {MAX_PURGE}"
        )));
    }
    let filter = Filter {
        error_contains: req.error_contains,
        failed_after: time("failed_after", req.failed_after)?,
        failed_before: time("failed_before", req.failed_before)?,
        ..Filter::default()
    };
    let report = dlq(&state)
        .requeue(&queue, &filter, req.limit, &(), &CancellationToken::new())
        .await
        .map_err(|e| failed(&e))?;
    Ok(Json(
        json!({ "queue": queue, "moved": report.moved, "kept": report.kept }),
    ))
}

/// `POST /v1/queues/{queue}/dead/purge?limit=N`: deletes the dead letters present now (at
/// most N), marking their jobs discarded; answers how many. A POST action beside `requeue`
/// rather than a `DELETE` of `/dead`: the DLQ itself stays, and `GET …/dead` still answers.
#[utoipa::path(
    post,
    path = "/v1/queues/{queue}/dead/purge",
    tag = "dead letters",
    summary = "Purge a queue's dead letters",
    description = "Deletes the dead letters present now (at most `limit`) for good; their jobs get `discarded_at`. The DLQ itself stays.",
    params(
        ("queue" = String, Path, description = "A configured queue"),
        ("limit" = Option<u64>, Query, minimum = 0, maximum = 9_223_372_036_854_775_807_i64, description = "Purge at most this many (default: all present now)"),
    ),
    responses(
        (status = 200, description = "How many were purged", body = PurgeResult),
        (status = 400, description = "`malformed-request`: bad query string", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 404, description = "`unknown-queue`", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 500, description = "`dlq-failed`", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 503, description = "`unavailable`", body = ProblemDocument, content_type = "application/problem+json"),
    )
)]
pub(super) async fn purge(
    State(state): State<Arc<IntakeState>>,
    Path(queue): Path<String>,
    Query(q): Query<LimitQuery>,
) -> Result<Json<Value>, Problem> {
    known(&state, &queue)?;
    if q.limit.is_some_and(|l| l > MAX_PURGE) {
        return Err(Problem::bad_request(format!(
            "limit must be at most {MAX_PURGE}"
        )));
    }
    let n = dlq(&state)
        .purge(&queue, q.limit, &(), &CancellationToken::new())
        .await
        .map_err(|e| failed(&e))?;
    Ok(Json(json!({ "queue": queue, "purged": n })))
}
