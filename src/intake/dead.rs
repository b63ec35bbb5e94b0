//! The DLQ over HTTP (admin): peek, requeue and purge under `/v1/queues/{queue}/dead`,
//! mirroring `warren dlq peek|requeue|purge`.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::openapi::{DeadLetters, ProblemDocument, PurgeResult, RequeueResult};
use super::{IntakeState, Problem};
use crate::dlq::{Dlq, Filter};
use crate::error::Error;

/// Most dead letters one peek returns.
const MAX_PEEK: usize = 100;

fn dlq(state: &IntakeState) -> Dlq<'_> {
    Dlq {
        config: &state.config,
        broker: state.publisher.broker(),
        publisher: &state.publisher,
        store: &state.store,
    }
}

fn known(state: &IntakeState, queue: &str) -> Result<(), Problem> {
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

fn failed(e: &Error) -> Problem {
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
        ("limit" = Option<u64>, Query, description = "How many dead letters (default 10, at most 100)"),
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
    let n = q
        .limit
        .map_or(10, |l| usize::try_from(l).unwrap_or(MAX_PEEK))
        .min(MAX_PEEK);
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

/// The body of a requeue: all fields optional.
#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RequeueRequest {
    /// Move at most this many.
    limit: Option<u64>,
    /// Only dead letters whose last error contains this text.
    error_contains: Option<String>,
    /// Only those that failed at or after this time (RFC 3339).
    failed_after: Option<String>,
    /// Only those that failed before this time (RFC 3339).
    failed_before: Option<String>,
}

/// `POST /v1/queues/{queue}/dead/requeue`: moves matching dead letters back to the work
/// queue (confirm, then ack); answers how many moved and how many stay.
#[utoipa::path(
    post,
    path = "/v1/queues/{queue}/dead/requeue",
    tag = "dead letters",
    summary = "Move dead letters back to the work queue",
    description = "Moves the matching dead letters present now back to the work queue (each acked in the DLQ only after the broker confirmed its copy). The body is optional.",
    params(("queue" = String, Path, description = "A configured queue")),
    request_body(content = Option<RequeueRequest>, content_type = "application/json"),
    responses(
        (status = 200, description = "How many moved and how many did not match and stay", body = RequeueResult),
        (status = 400, description = "`malformed-request`", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 404, description = "`unknown-queue`", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 500, description = "`dlq-failed`", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 503, description = "`unavailable`", body = ProblemDocument, content_type = "application/problem+json"),
    )
)]
pub(super) async fn requeue(
    State(state): State<Arc<IntakeState>>,
    Path(queue): Path<String>,
    body: Option<Json<RequeueRequest>>,
) -> Result<Json<Value>, Problem> {
    known(&state, &queue)?;
    let req = body.map(|Json(b)| b).unwrap_or_default();
    let time = |field: &str, v: Option<String>| {
        v.map(|t| {
            humantime::parse_rfc3339_weak(&t)
                .map_err(|_| Problem::bad_request(format!("`{field}` must be an RFC 3339 time")))
        })
        .transpose()
    };
    let filter = Filter {
        error_contains: req.error_contains,
        failed_after: time("failed_after", req.failed_after)?,
        failed_before: time("failed_before", req.failed_before)?,
    };
    let report = dlq(&state)
        .requeue(&queue, &filter, req.limit, &(), &CancellationToken::new())
        .await
        .map_err(|e| failed(&e))?;
    Ok(Json(
        json!({ "queue": queue, "moved": report.moved, "kept": report.kept }),
    ))
}

/// `DELETE /v1/queues/{queue}/dead?limit=N`: deletes the dead letters present now (at most
/// N), marking their jobs discarded; answers how many.
#[utoipa::path(
    delete,
    path = "/v1/queues/{queue}/dead",
    tag = "dead letters",
    summary = "Purge a queue's dead letters",
    description = "Deletes the dead letters present now (at most `limit`) for good; their jobs get `discarded_at`.",
    params(
        ("queue" = String, Path, description = "A configured queue"),
        ("limit" = Option<u64>, Query, description = "Purge at most this many"),
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
    let n = dlq(&state)
        .purge(&queue, q.limit, &(), &CancellationToken::new())
        .await
        .map_err(|e| failed(&e))?;
    Ok(Json(json!({ "queue": queue, "purged": n })))
}
