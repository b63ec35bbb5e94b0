//! `GET /v1/schedules`: the configured schedules, their next run and their latest job.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;

use super::openapi::ProblemDocument;
use super::{IntakeState, Problem};
use crate::schedule::ScheduleView;

/// The answer of `GET /v1/schedules`.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(crate) struct ScheduleList {
    /// One entry per configured schedule, by name.
    schedules: Vec<ScheduleView>,
}

/// `GET /v1/schedules`.
#[utoipa::path(
    get,
    path = "/v1/schedules",
    tag = "schedules",
    summary = "Schedules",
    description = "Every `[schedules.NAME]` of the configuration: queue, cron expression, timezone, catch-up policy, the next tick and the job of the latest tick fired (its id, status and when it was enqueued). Every intake fires each tick; the tick's idempotency key `schedule:{name}:{tick}` makes exactly one job of it.",
    responses(
        (status = 200, description = "The schedules", body = ScheduleList),
        (status = 503, description = "`unavailable`: the store cannot be read", body = ProblemDocument, content_type = "application/problem+json"),
    )
)]
pub(super) async fn list_schedules(
    State(state): State<Arc<IntakeState>>,
) -> Result<Json<ScheduleList>, Problem> {
    crate::schedule::views(&state.config, &*state.store, crate::store::now_ms())
        .await
        .map(|schedules| Json(ScheduleList { schedules }))
        .map_err(|e| {
            tracing::warn!(error = %e, "schedules: store read failed");
            Problem::unavailable("the status store is unavailable")
        })
}
