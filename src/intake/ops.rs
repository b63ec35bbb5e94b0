//! Operator endpoints: `GET /v1/queues` (the queue overview) and `GET /metrics` (Prometheus).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::openapi::ProblemDocument;
use super::{IntakeState, Problem};
use crate::overview::Overview;

/// `GET /v1/queues`: per configured queue, ready, unacked, consumers, retrying and dead (see
/// [`crate::overview`]).
#[utoipa::path(
    get,
    path = "/v1/queues",
    tag = "queues",
    summary = "Queue overview",
    description = "Per configured queue: `ready`, `consumers` and `dead` (the .dlq's depth) from a passive declare on the broker; `unacked` and `rates` (per second now, and per minute over the last hour) from the RabbitMQ management API (null when it cannot be reached; `management` says why; reused for 2.5 s); `running` and `retrying` from the store (jobs claimed by a worker, and jobs waiting in the shared delay levels for their next attempt); `paused` from the store.",
    responses(
        (status = 200, description = "One entry per configured queue", body = Overview),
        (status = 503, description = "`unavailable`: the broker or the store cannot be reached", body = ProblemDocument, content_type = "application/problem+json"),
    )
)]
pub(super) async fn list_queues(
    State(state): State<Arc<IntakeState>>,
) -> Result<Json<Overview>, Problem> {
    state.overview().await.map(Json).map_err(|e| {
        tracing::warn!(error = %e, "queue overview failed");
        Problem::unavailable(format!(
            "the queue overview is unavailable: {}",
            crate::redact(&e.to_string())
        ))
    })
}

/// `GET /metrics`: every metric in the Prometheus text exposition format (version 0.0.4).
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    summary = "Prometheus metrics",
    description = "The Prometheus text exposition format (0.0.4). The README's Metrics section lists every metric.",
    responses(
        (status = 200, description = "The metrics", body = String, content_type = "text/plain; version=0.0.4"),
        (status = 503, description = "`unavailable`: another metrics recorder was installed in this process before warren's", body = ProblemDocument, content_type = "application/problem+json"),
    )
)]
pub(super) async fn metrics() -> Response {
    let Some(handle) = crate::telemetry::handle() else {
        return Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "Service unavailable",
            "warren's metrics recorder is not installed: the embedding program installed its own",
        )
        .into_response();
    };
    let mut resp = handle.render().into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    resp
}
