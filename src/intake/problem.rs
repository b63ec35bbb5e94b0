//! RFC 7807 `application/problem+json` error responses.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// An HTTP API error as an RFC 7807 problem document.
///
/// `type` is a relative URI `/problems/{slug}`; the README lists the slugs.
#[derive(Debug, Clone)]
pub struct Problem {
    status: StatusCode,
    slug: &'static str,
    title: &'static str,
    detail: String,
    retry_after_s: Option<u64>,
}

#[derive(Serialize)]
struct Body<'a> {
    #[serde(rename = "type")]
    kind: String,
    title: &'a str,
    status: u16,
    detail: &'a str,
}

impl Problem {
    /// A problem with this status, slug (`type` = `/problems/{slug}`), title and detail.
    pub fn new(
        status: StatusCode,
        slug: &'static str,
        title: &'static str,
        detail: impl Into<String>,
    ) -> Self {
        Self {
            status,
            slug,
            title,
            detail: detail.into(),
            retry_after_s: None,
        }
    }

    /// Adds a `Retry-After` header (seconds, RFC 9110 §10.2.3).
    pub fn retry_after(mut self, seconds: u64) -> Self {
        self.retry_after_s = Some(seconds);
        self
    }

    /// 400 `malformed-request`.
    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "malformed-request",
            "Malformed request",
            detail,
        )
    }

    /// 503 `broker-unavailable` with `Retry-After: 1`.
    pub fn unavailable(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "Service unavailable",
            detail,
        )
        .retry_after(1)
    }

    /// The problem for an error response the HTTP layer made without one (axum's `405`, a
    /// framework extractor's rejection): the same status, except that `422` becomes `400`
    /// (warren answers malformed input with 400 everywhere). `method` and `allow` (the
    /// `Allow` header) word a 405's detail; `text` (the original body) is the detail
    /// otherwise, when there is one. Slugs: `malformed-request` (400, 422), `not-found`
    /// (404), `method-not-allowed` (405), `request-timeout` (408), `body-too-large` (413),
    /// `unsupported-media-type` (415), `unavailable` (503), `internal-error` (500 and any
    /// other 5xx), `http-error` (any other 4xx).
    pub fn from_status(
        status: StatusCode,
        method: &axum::http::Method,
        allow: Option<&HeaderValue>,
        text: &[u8],
    ) -> Self {
        let text = String::from_utf8_lossy(text).trim().to_owned();
        let or = |fallback: &str| {
            if text.is_empty() {
                fallback.to_owned()
            } else {
                text.clone()
            }
        };
        let (status, slug, title, detail) = match status.as_u16() {
            400 | 422 => (
                StatusCode::BAD_REQUEST,
                "malformed-request",
                "Malformed request",
                or("the request is malformed"),
            ),
            404 => (
                status,
                "not-found",
                "Not found",
                or("no such endpoint; see /openapi.json"),
            ),
            405 => (
                status,
                "method-not-allowed",
                "Method not allowed",
                format!(
                    "{method} is not allowed here; this endpoint allows {}",
                    allow
                        .and_then(|a| a.to_str().ok())
                        .unwrap_or("other methods")
                ),
            ),
            408 => (
                status,
                "request-timeout",
                "Request timeout",
                or("the request took too long"),
            ),
            413 => (
                status,
                "body-too-large",
                "Request body too large",
                or("the request body is over this endpoint's limit"),
            ),
            415 => (
                status,
                "unsupported-media-type",
                "Unsupported media type",
                or("send Content-Type: application/json"),
            ),
            503 => (
                status,
                "unavailable",
                "Service unavailable",
                or("the service is unavailable"),
            ),
            s if s >= 500 => (
                status,
                "internal-error",
                "Internal error",
                or("the server failed"),
            ),
            _ => (status, "http-error", "HTTP error", or("the request failed")),
        };
        Self::new(status, slug, title, detail)
    }

    /// The `detail`: what went wrong with this request.
    pub fn detail(&self) -> &str {
        &self.detail
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The problem document (`type`, `title`, `status`, `detail`), e.g. for one item of a
    /// batch answer.
    pub fn document(&self) -> serde_json::Value {
        serde_json::to_value(self.body()).unwrap_or_default()
    }

    fn body(&self) -> Body<'_> {
        Body {
            kind: format!("/problems/{}", self.slug),
            title: self.title,
            status: self.status.as_u16(),
            detail: &self.detail,
        }
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let json = serde_json::to_vec(&self.body()).unwrap_or_default();
        let mut resp = (self.status, json).into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(s) = self.retry_after_s {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::Method;

    #[test]
    fn what_the_http_layer_answers_becomes_a_problem_with_a_stable_type() {
        let doc = |status: u16, body: &str| {
            let status = StatusCode::from_u16(status).expect("status");
            Problem::from_status(status, &Method::PUT, None, body.as_bytes()).document()
        };
        let p = doc(
            422,
            "Failed to deserialize the JSON body into the target type: x",
        );
        assert_eq!(p["status"], 400, "a framework 422 is warren's 400");
        assert_eq!(p["type"], "/problems/malformed-request");
        assert!(
            p["detail"]
                .as_str()
                .is_some_and(|d| d.contains("JSON body"))
        );
        assert_eq!(
            doc(413, "length limit exceeded")["type"],
            "/problems/body-too-large"
        );
        assert_eq!(doc(408, "")["type"], "/problems/request-timeout");
        assert_eq!(doc(408, "")["detail"], "the request took too long");
        assert_eq!(doc(502, "")["type"], "/problems/internal-error");
        assert_eq!(doc(418, "")["type"], "/problems/http-error");
        let allow = HeaderValue::from_static("GET, POST");
        let p = Problem::from_status(
            StatusCode::METHOD_NOT_ALLOWED,
            &Method::PUT,
            Some(&allow),
            b"",
        )
        .document();
        assert_eq!(p["type"], "/problems/method-not-allowed");
        assert_eq!(
            p["detail"],
            "PUT is not allowed here; this endpoint allows GET, POST"
        );
    }
}
