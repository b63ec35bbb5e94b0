//! Pausing a queue over HTTP (admin): `POST /v1/queues/{queue}/pause` and `…/resume`, mirroring
//! `warren queues pause|resume`. The state is written to the store; every worker process of
//! the fleet reads it within about a second (`crate::admission`). The intake goes on
//! accepting the queue's jobs, which wait `ready` in the broker.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use serde::Serialize;

use super::extract::Path;
use super::openapi::ProblemDocument;
use super::{IntakeState, Problem};
use crate::store::now_ms;

/// The answer to a pause or a resume.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct PauseState {
    /// The work queue.
    #[schema(example = "reports")]
    queue: String,
    /// Whether the queue is paused now.
    paused: bool,
    /// False when the queue was already in that state (the request changed nothing).
    changed: bool,
}

/// `POST /v1/queues/{queue}/pause`: every worker of the queue stops taking deliveries within
/// 2 s; jobs already running finish.
#[utoipa::path(
    post,
    path = "/v1/queues/{queue}/pause",
    tag = "queues",
    summary = "Pause a queue",
    description = "Every worker of the queue, in every process on every host, stops taking deliveries within 2 s (its AMQP consumer is cancelled); jobs already running, and deliveries a worker already holds (at most the queue's `prefetch`), finish. New jobs are still accepted and wait `ready` in the broker. The pause is kept in the store: it survives restarts until `POST /v1/queues/{queue}/resume`. Pausing a paused queue changes nothing (`changed: false`).",
    params(("queue" = String, Path, description = "A configured queue")),
    responses(
        (status = 200, description = "The queue is paused", body = PauseState),
        (status = 404, description = "`unknown-queue`", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 503, description = "`unavailable`: the store cannot be reached; nothing changed", body = ProblemDocument, content_type = "application/problem+json"),
    )
)]
pub(super) async fn pause(
    State(state): State<Arc<IntakeState>>,
    Path(queue): Path<String>,
) -> Result<Json<PauseState>, Problem> {
    let changed = set_paused(&state, &queue, true).await?;
    Ok(Json(PauseState {
        queue,
        paused: true,
        changed,
    }))
}

/// `POST /v1/queues/{queue}/resume`: every worker of the queue takes deliveries again within
/// 2 s.
#[utoipa::path(
    post,
    path = "/v1/queues/{queue}/resume",
    tag = "queues",
    summary = "Resume a paused queue",
    description = "Every worker of the queue, in every process on every host, consumes again within 2 s. Resuming a queue that is not paused changes nothing (`changed: false`).",
    params(("queue" = String, Path, description = "A configured queue")),
    responses(
        (status = 200, description = "The queue is not paused", body = PauseState),
        (status = 404, description = "`unknown-queue`", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 503, description = "`unavailable`: the store cannot be reached; nothing changed", body = ProblemDocument, content_type = "application/problem+json"),
    )
)]
pub(super) async fn resume(
    State(state): State<Arc<IntakeState>>,
    Path(queue): Path<String>,
) -> Result<Json<PauseState>, Problem> {
    let changed = set_paused(&state, &queue, false).await?;
    Ok(Json(PauseState {
        queue,
        paused: false,
        changed,
    }))
}

/// Pauses (`paused`) or resumes the configured queue `queue` in the store, for every worker
/// of the fleet; true when this call changed it. The one path of the API and the dashboard.
///
/// # Errors
/// 404 `unknown-queue`; 503 when the store cannot be written (nothing changed).
pub(super) async fn set_paused(
    state: &IntakeState,
    queue: &str,
    paused: bool,
) -> Result<bool, Problem> {
    super::dead::known(state, queue)?;
    let changed = if paused {
        state.store.queue_pause(queue, now_ms()).await
    } else {
        state.store.queue_resume(queue).await
    }
    .map_err(|e| failed(&e))?;
    if changed {
        tracing::info!(queue = %queue, "queue {}", if paused { "paused" } else { "resumed" });
    }
    Ok(changed)
}

/// A store failure as a problem: 503 `unavailable` (the store is the only thing asked).
fn failed(e: &crate::Error) -> Problem {
    tracing::warn!(error = %e, "cannot write the queue's pause state");
    Problem::unavailable(format!(
        "the status store is unavailable: {}",
        crate::redact(&e.to_string())
    ))
}
