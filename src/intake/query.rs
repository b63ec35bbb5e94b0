//! Unknown query parameters are refused, on every route, the same way: `400
//! malformed-request` naming the parameter and the ones the endpoint takes.
//!
//! Which parameters an operation takes is read from the OpenAPI document (its `in: query`
//! parameters), so the server cannot accept what the document does not list, nor the
//! document list what the server ignores. Refusing rather than ignoring keeps a typo from
//! changing what a request does (`POST …/dead/purge?limt=5` would otherwise purge every dead
//! letter).

use std::collections::HashMap;
use std::sync::LazyLock;

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use utoipa::openapi::path::ParameterIn;

use super::Problem;

/// (method in lower case, route) → the names of its query parameters, from the document.
static ALLOWED: LazyLock<HashMap<(String, String), Vec<String>>> = LazyLock::new(|| {
    let doc = super::openapi::spec();
    let mut map = HashMap::new();
    for (path, item) in &doc.paths.paths {
        let ops = [
            ("get", item.get.as_ref()),
            ("post", item.post.as_ref()),
            ("delete", item.delete.as_ref()),
            ("put", item.put.as_ref()),
            ("patch", item.patch.as_ref()),
        ];
        for (method, op) in ops {
            let Some(op) = op else { continue };
            let names = op
                .parameters
                .iter()
                .flatten()
                .filter(|p| matches!(p.parameter_in, ParameterIn::Query))
                .map(|p| p.name.clone())
                .collect();
            map.insert((method.to_owned(), path.clone()), names);
        }
    }
    map
});

/// The query parameters `method` on `route` takes, or `None` for an undocumented operation.
pub(super) fn allowed(method: &str, route: &str) -> Option<&'static [String]> {
    let method = match method.to_ascii_lowercase().as_str() {
        "head" => "get".to_owned(),
        m => m.to_owned(),
    };
    ALLOWED.get(&(method, route.to_owned())).map(Vec::as_slice)
}

/// The methods `route` takes, per the document (upper case, sorted), e.g. `["GET"]`.
pub(super) fn methods(route: &str) -> Vec<String> {
    let mut m: Vec<String> = ALLOWED
        .keys()
        .filter(|(_, r)| r == route)
        .map(|(m, _)| m.to_ascii_uppercase())
        .collect();
    m.sort();
    m
}

/// Middleware (a `route_layer`, so it sees the matched route): `400 malformed-request` for
/// the first query parameter the operation does not take; otherwise the request goes on.
pub(super) async fn refuse_unknown(
    route: Option<MatchedPath>,
    req: Request,
    next: Next,
) -> Response {
    let (Some(route), Some(query)) = (route, req.uri().query()) else {
        return next.run(req).await;
    };
    // A method the route does not take goes on to its 405.
    let Some(takes) = allowed(req.method().as_str(), route.as_str()) else {
        return next.run(req).await;
    };
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let raw = pair.split_once('=').map_or(pair, |(k, _)| k);
        let name = percent_decode(raw);
        if !takes.contains(&name) {
            let detail = if takes.is_empty() {
                format!(
                    "unknown query parameter `{}`: {} {} takes none",
                    crate::message::truncate(&name, 100),
                    req.method(),
                    route.as_str()
                )
            } else {
                format!(
                    "unknown query parameter `{}`: {} {} takes {}",
                    crate::message::truncate(&name, 100),
                    req.method(),
                    route.as_str(),
                    takes
                        .iter()
                        .map(|t| format!("`{t}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            };
            return Problem::bad_request(detail).into_response();
        }
    }
    next.run(req).await
}

/// `application/x-www-form-urlencoded` decoding of a name or a value (see
/// [`percent_decode`]).
pub(super) fn form_decode(s: &str) -> String {
    percent_decode(s)
}

/// `application/x-www-form-urlencoded` decoding of a name (`+` is a space, `%XX` a byte;
/// bytes that are not UTF-8 are replaced).
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(byte) => {
                        out.push(byte);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_query_parameters_are_the_allowed_ones() {
        let names = |m, r| allowed(m, r).map(<[String]>::to_vec);
        assert_eq!(
            names("GET", "/v1/queues/{queue}/dead"),
            Some(vec!["limit".to_owned()])
        );
        assert_eq!(
            names("POST", "/v1/queues/{queue}/dead/purge"),
            Some(vec!["limit".to_owned()])
        );
        assert_eq!(names("GET", "/v1/jobs/{id}"), Some(vec!["wait".to_owned()]));
        assert_eq!(
            names("GET", "/v1/jobs"),
            Some(
                [
                    "queue",
                    "status",
                    "created_after",
                    "created_before",
                    "correlation_id",
                    "idempotency_key",
                    "error_contains",
                    "schedule",
                    "limit",
                    "cursor"
                ]
                .map(String::from)
                .to_vec()
            )
        );
        assert_eq!(names("HEAD", "/healthz"), Some(vec![]));
        assert_eq!(names("TRACE", "/healthz"), None);
        assert_eq!(methods("/v1/jobs/{id}/cancel"), ["POST"]);
    }

    #[test]
    fn names_are_form_decoded() {
        assert_eq!(percent_decode("li%6Dit"), "limit");
        assert_eq!(percent_decode("a+b"), "a b");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
    }
}
