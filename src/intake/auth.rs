//! Bearer-token checks for the HTTP API (DESIGN §9; tokens and scopes in [`crate::auth`]).
//!
//! Which route needs which scope is written in one place, the route table
//! ([`super::routes::ROUTES`]), and looked up by the route the request matched (not by the
//! raw path, so encodings cannot dodge it): `/healthz`, `/readyz`, `/metrics` and
//! `/openapi.json` are open; the DLQ routes (`/v1/queues/{queue}/dead…`) and
//! `POST /v1/jobs/{id}/cancel` and the bulk actions (`POST /v1/jobs/cancel`, `POST /v1/jobs/requeue`) need `admin`; the other routes need a `jobs` or `admin` token. With no tokens configured every route is open: the
//! router then does not layer this check at all (`super::router`).

use std::sync::Arc;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::{IntakeState, Problem};

/// Middleware (a `route_layer`, so it sees the matched route): answers 401 without a known
/// bearer token and 403 when the token's scope is not enough, both as problem+json with a
/// `WWW-Authenticate` challenge (RFC 6750 §3).
pub(super) async fn require(
    State(state): State<Arc<IntakeState>>,
    route: Option<MatchedPath>,
    req: Request,
    next: Next,
) -> Response {
    let tokens = &state.config.auth.tokens;
    let route = route.as_ref().map_or("", MatchedPath::as_str);
    let Some(needed) = super::routes::scope(req.method(), route) else {
        return next.run(req).await;
    };
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer);
    match presented.and_then(|t| tokens.scope_of(t)) {
        Some(scope) if scope >= needed => next.run(req).await,
        Some(_) => challenge(
            Problem::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "Forbidden",
                format!(
                    "this endpoint needs a token with the `{}` scope",
                    needed.as_str()
                ),
            ),
            &format!(
                "Bearer realm=\"warren\", error=\"insufficient_scope\", scope=\"{}\"",
                needed.as_str()
            ),
        ),
        None => challenge(
            Problem::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "Unauthorized",
                if presented.is_some() {
                    "the bearer token is not valid"
                } else {
                    "send `Authorization: Bearer TOKEN` (tokens come from WARREN_API_TOKENS or auth.tokens_file)"
                },
            ),
            if presented.is_some() {
                "Bearer realm=\"warren\", error=\"invalid_token\""
            } else {
                "Bearer realm=\"warren\""
            },
        ),
    }
}

/// The token of an `Authorization: Bearer TOKEN` value (scheme case-insensitive, RFC 6750 §2.1).
fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

fn challenge(problem: Problem, www_authenticate: &str) -> Response {
    let mut resp = problem.into_response();
    if let Ok(v) = HeaderValue::from_str(www_authenticate) {
        resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_scheme_is_case_insensitive_and_needs_a_token() {
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer abc"), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("Bearer "), None);
    }
}
