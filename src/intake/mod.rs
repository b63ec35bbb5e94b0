//! The HTTP intake (DESIGN §3): axum routes that accept jobs, publish them with a confirm and
//! report their status.

mod auth;
mod batch;
mod bulk;
mod dead;
mod extract;
mod jobs;
pub(crate) mod openapi;
mod ops;
mod pause;
mod problem;
mod query;
pub(crate) mod routes;
mod schedules;
mod search;
mod ui;
mod wait;

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde_json::json;

use crate::config::Config;
use crate::publisher::Publisher;
use crate::store::Store;

pub use problem::Problem;

/// What the HTTP handlers share.
#[derive(Clone)]
pub(crate) struct IntakeState {
    pub(crate) config: Arc<Config>,
    pub(crate) store: Arc<dyn Store>,
    pub(crate) publisher: Arc<Publisher>,
    /// Cancelled once the topology is declared; until then the intake is not ready.
    pub(crate) topology_ready: tokio_util::sync::CancellationToken,
    /// The management API's statistics, shared by `GET /v1/queues` and the dashboard.
    pub(crate) stats: Arc<crate::overview::StatsCache>,
    /// This intake's waiters for finished jobs (`?wait=`, [`wait`]).
    pub(crate) waiters: Arc<crate::events::Waiters>,
}

impl IntakeState {
    /// The one enqueue path ([`crate::enqueue`]) with this intake's store and publisher.
    pub(crate) fn enqueuer(&self) -> crate::enqueue::Enqueuer<'_> {
        crate::enqueue::Enqueuer {
            store: &*self.store,
            publisher: &self.publisher,
            confirm_timeout: self.config.broker.confirm_timeout,
        }
    }

    /// The queue overview of `GET /v1/queues` and the dashboard, with this intake's cached
    /// management API statistics.
    ///
    /// # Errors
    /// As [`crate::overview::overview`].
    pub(crate) async fn overview(&self) -> crate::error::Result<crate::overview::Overview> {
        crate::overview::overview(
            &self.config,
            self.publisher.broker(),
            &self.store,
            &self.stats,
        )
        .await
    }
}

/// The intake's routes, from the route table [`routes::ROUTES`]. The state is shared behind
/// one `Arc`, so a request clones one pointer rather than each field. With no tokens
/// configured every route is open (DESIGN §9), so the token check is not layered at all.
///
/// Every error is a problem document: handlers and extractors answer with [`Problem`]s,
/// unknown query parameters are refused by [`query::refuse_unknown`], an unknown route gets
/// `404 not-found`, and [`problems_only`] turns whatever else answers an error without one
/// (axum's `405` with its `Allow` header, a rejection of a framework extractor) into one.
/// The dashboard's routes (`/ui/…`, [`ui`]) are the exception: HTML pages, errors included.
pub(crate) fn router(state: IntakeState) -> Router {
    let state = Arc::new(state);
    let router = routes::ROUTES
        .iter()
        .fold(Router::new(), |router, r| {
            router.route(r.path, (r.handler)())
        })
        .route_layer(axum::middleware::from_fn(query::refuse_unknown));
    let router = if state.config.auth.tokens.is_empty() {
        router
    } else {
        router.route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require,
        ))
    };
    // The dashboard (`/ui/…`) is merged after the API's layers: it has its own session
    // check and HTML error pages, and is not part of the OpenAPI document.
    let dashboard = ui::router(&state);
    router
        .fallback(not_found)
        .layer(axum::middleware::from_fn(problems_only))
        .merge(dashboard)
        .with_state(state)
}

/// Middleware: an error response (4xx, 5xx) that is not already a problem document (nor
/// `/readyz`'s JSON report) is replaced by one with the same status (a `422` of a framework
/// extractor becomes `400`), keeping its headers (`Allow`, `Retry-After`,
/// `WWW-Authenticate`); see [`Problem::from_status`].
async fn problems_only(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let method = req.method().clone();
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .cloned();
    let resp = next.run(req).await;
    let status = resp.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return resp;
    }
    let content_type = resp
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if content_type.starts_with("application/problem+json")
        || content_type.starts_with("application/json")
    {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let text = axum::body::to_bytes(body, 4096).await.unwrap_or_default();
    // axum adds `Allow` to a 405 outside this layer; the document says the same.
    let allow = route
        .filter(|_| status == StatusCode::METHOD_NOT_ALLOWED)
        .map(|r| query::methods(r.as_str()).join(", "))
        .and_then(|m| axum::http::HeaderValue::from_str(&m).ok());
    let problem = Problem::from_status(status, &method, allow.as_ref(), &text);
    let mut fresh = problem.into_response();
    parts.headers.remove(axum::http::header::CONTENT_LENGTH);
    for (name, value) in fresh.headers() {
        parts.headers.insert(name.clone(), value.clone());
    }
    *fresh.headers_mut() = parts.headers;
    fresh
}

/// `GET /healthz`: the process is up.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    summary = "Liveness",
    responses((status = 200, description = "The process is up", body = openapi::Health))
)]
async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// `GET /readyz`: the broker and the store answer and the topology is declared. 503 names
/// what is missing (never with credentials).
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    summary = "Readiness",
    responses(
        (status = 200, description = "The broker and the store answer and the topology is declared", body = openapi::Readiness),
        (status = 503, description = "Something is missing; the body says what", body = openapi::Readiness),
    )
)]
async fn readyz(State(state): State<Arc<IntakeState>>) -> Response {
    let broker = match state.publisher.broker().channel().await {
        Ok(ch) => {
            let _ = ch.close(200, "readyz".into()).await;
            Ok(())
        }
        Err(e) => Err(e.to_string()),
    };
    let store = state.store.ping().await.map_err(|e| e.to_string());
    let topology = state.topology_ready.is_cancelled();
    let ready = broker.is_ok() && store.is_ok() && topology;
    let show = |r: &Result<(), String>| match r {
        Ok(()) => json!("ok"),
        Err(e) => json!(crate::redact::redact(e)),
    };
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(json!({
            "status": if ready { "ready" } else { "unavailable" },
            "broker": show(&broker),
            "broker_node": state.publisher.broker().display_url(),
            "store": show(&store),
            "topology": if topology { "declared" } else { "pending" },
        })),
    )
        .into_response()
}

async fn not_found() -> Problem {
    Problem::new(
        StatusCode::NOT_FOUND,
        "not-found",
        "Not found",
        "no such endpoint; GET /openapi.json lists them",
    )
}
