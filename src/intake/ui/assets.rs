//! The dashboard's style sheet and script, compiled into the binary (`include_str!`): nothing
//! is fetched from elsewhere. Served at `/ui/assets/app.css` and `/ui/assets/app.js`; the
//! pages link them with `?v=VERSION` so a new release is not served from a stale cache.

use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::page::Page;

const CSS: &str = include_str!("assets/app.css");
const JS: &str = include_str!("assets/app.js");

/// Where the pages find the style sheet.
pub(super) const CSS_URL: &str = concat!("/ui/assets/app.css?v=", env!("CARGO_PKG_VERSION"));
/// Where the pages find the script.
pub(super) const JS_URL: &str = concat!("/ui/assets/app.js?v=", env!("CARGO_PKG_VERSION"));

/// `GET /ui/assets/{file}`: `app.css` or `app.js` (cached for an hour), else 404.
pub(super) async fn serve(Path(file): Path<String>) -> Response {
    let (body, kind) = match file.as_str() {
        "app.css" => (CSS, "text/css; charset=utf-8"),
        "app.js" => (JS, "text/javascript; charset=utf-8"),
        _ => return Page::not_found("There is no such asset.").into_response(),
    };
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(kind)),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=3600"),
            ),
        ],
        body,
    )
        .into_response()
}
