//! The route table: every HTTP endpoint written once, as (method, path, handler, scope).
//!
//! Three things derive from [`ROUTES`]:
//! - the router ([`super::router`] adds each entry's handler at its path and method);
//! - the bearer-token check ([`scope`], used by [`super::auth::require`] and by the OpenAPI
//!   document's security requirements);
//! - the OpenAPI document's paths ([`RoutePaths`], generated from the same list of handlers;
//!   each handler's `#[utoipa::path]` holds its operation: parameters, bodies, answers).
//!
//! To add an endpoint: write the handler with its `#[utoipa::path(method, path = …)]` and add
//! one line to the `routes!` invocation below. The test at the bottom fails when a line's
//! method or path disagrees with its handler's `#[utoipa::path]`.

use std::sync::Arc;

use axum::http::Method;
use axum::routing::{MethodFilter, MethodRouter};

use super::IntakeState;
use crate::auth::Scope;

/// Open to anyone, even when tokens are configured (probes, metrics, the document).
const OPEN: Option<Scope> = None;
/// A `jobs` or `admin` token.
const JOBS: Option<Scope> = Some(Scope::Jobs);
/// An `admin` token.
const ADMIN: Option<Scope> = Some(Scope::Admin);

/// One endpoint of the HTTP API.
pub(crate) struct Route {
    /// The HTTP method (`GET` also answers `HEAD`, as axum does).
    pub(crate) method: Method,
    /// The route as axum matches it and as the OpenAPI document lists it, e.g.
    /// `/v1/jobs/{id}`.
    pub(crate) path: &'static str,
    /// The token scope it needs when tokens are configured; `None`: open.
    pub(crate) scope: Option<Scope>,
    /// Builds the handler's method router.
    pub(crate) handler: fn() -> MethodRouter<Arc<IntakeState>>,
}

/// Writes [`ROUTES`] and [`RoutePaths`] from one list of
/// `METHOD "path" => module::handler, SCOPE;` lines.
macro_rules! routes {
    ($( $method:ident $path:literal => $($handler:ident)::+ , $scope:ident ; )*) => {
        /// Every endpoint of the HTTP API.
        pub(crate) static ROUTES: &[Route] = &[
            $(
                Route {
                    method: Method::$method,
                    path: $path,
                    scope: $scope,
                    handler: || axum::routing::on(MethodFilter::$method, $($handler)::+),
                },
            )*
        ];

        /// The OpenAPI paths of every handler in [`ROUTES`] (and the schemas they refer
        /// to), merged into the document by [`super::openapi::spec`].
        #[derive(utoipa::OpenApi)]
        #[openapi(paths($( $($handler)::+ ),*))]
        pub(crate) struct RoutePaths;
    };
}

routes! {
    POST "/v1/queues/{queue}/jobs" => super::jobs::post_job, JOBS;
    POST "/v1/queues/{queue}/jobs/batch" => super::batch::post_batch, JOBS;
    GET "/v1/jobs" => super::search::list_jobs, JOBS;
    POST "/v1/jobs/cancel" => super::bulk::cancel_jobs, ADMIN;
    POST "/v1/jobs/requeue" => super::bulk::requeue_jobs, ADMIN;
    GET "/v1/jobs/{id}" => super::jobs::get_job, JOBS;
    POST "/v1/jobs/{id}/cancel" => super::jobs::cancel_job, ADMIN;
    GET "/v1/queues" => super::ops::list_queues, JOBS;
    GET "/v1/schedules" => super::schedules::list_schedules, JOBS;
    POST "/v1/queues/{queue}/pause" => super::pause::pause, ADMIN;
    POST "/v1/queues/{queue}/resume" => super::pause::resume, ADMIN;
    GET "/v1/queues/{queue}/dead" => super::dead::peek, ADMIN;
    POST "/v1/queues/{queue}/dead/requeue" => super::dead::requeue, ADMIN;
    POST "/v1/queues/{queue}/dead/purge" => super::dead::purge, ADMIN;
    GET "/healthz" => super::healthz, OPEN;
    GET "/readyz" => super::readyz, OPEN;
    GET "/metrics" => super::ops::metrics, OPEN;
    GET "/openapi.json" => super::openapi::openapi_json, OPEN;
}

/// The scope a matched route needs (`None`: open). `route` is the matched route (axum's
/// `MatchedPath`, not the raw path, so encodings cannot dodge it). A method the route does
/// not take (it will be answered 405) needs the strictest scope of the route's methods; a
/// route that is not in the table needs `admin`.
pub(crate) fn scope(method: &Method, route: &str) -> Option<Scope> {
    let mut of_path = ROUTES.iter().filter(|r| r.path == route).peekable();
    if of_path.peek().is_none() {
        return ADMIN;
    }
    let mut strictest = OPEN;
    for r in of_path {
        if r.method == method || (method == Method::HEAD && r.method == Method::GET) {
            return r.scope;
        }
        strictest = strictest.max(r.scope);
    }
    strictest
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use utoipa::OpenApi as _;

    use super::*;

    /// The table and the handlers' `#[utoipa::path]` attributes name the same (method, path)
    /// pairs, so the router serves exactly what the document lists.
    #[test]
    fn the_table_agrees_with_the_document() {
        let table: BTreeSet<(String, String)> = ROUTES
            .iter()
            .map(|r| (r.method.as_str().to_ascii_lowercase(), r.path.to_owned()))
            .collect();
        assert_eq!(
            table.len(),
            ROUTES.len(),
            "a (method, path) is listed twice"
        );
        let doc = serde_json::to_value(RoutePaths::openapi()).expect("serializes");
        let mut documented = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for method in item.as_object().expect("path item").keys() {
                documented.insert((method.clone(), path.clone()));
            }
        }
        assert_eq!(
            table, documented,
            "the route table and the handlers' #[utoipa::path] disagree"
        );
    }

    #[test]
    fn dlq_and_cancel_need_admin_and_probes_are_open() {
        assert_eq!(scope(&Method::GET, "/v1/queues/{queue}/dead"), ADMIN);
        assert_eq!(
            scope(&Method::POST, "/v1/queues/{queue}/dead/requeue"),
            ADMIN
        );
        assert_eq!(scope(&Method::POST, "/v1/jobs/{id}/cancel"), ADMIN);
        assert_eq!(scope(&Method::GET, "/v1/jobs/{id}"), JOBS);
        assert_eq!(scope(&Method::HEAD, "/v1/jobs/{id}"), JOBS);
        assert_eq!(scope(&Method::POST, "/v1/queues/{queue}/jobs"), JOBS);
        assert_eq!(scope(&Method::GET, "/readyz"), OPEN);
        assert_eq!(scope(&Method::POST, "/v1/queues/{queue}/pause"), ADMIN);
        assert_eq!(scope(&Method::POST, "/v1/queues/{queue}/resume"), ADMIN);
        // A method the route does not take still needs the route's scope before its 405.
        assert_eq!(scope(&Method::DELETE, "/v1/jobs/{id}/cancel"), ADMIN);
        assert_eq!(scope(&Method::POST, "/healthz"), OPEN);
        assert_eq!(scope(&Method::GET, "/v1/nothing"), ADMIN);
    }
}
