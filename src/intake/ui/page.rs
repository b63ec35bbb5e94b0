//! The frame every dashboard page shares (head, navigation, log out) and the HTML error page.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use maud::{DOCTYPE, Markup, html};

use super::REFRESH_MS;
use super::session::Viewer;

/// A whole page: `title`, the navigation (with the session's scope and a log-out button when
/// `viewer` logged in), then `body`.
pub(super) fn layout(title: &str, viewer: Option<&Viewer>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · warren" }
                link rel="stylesheet" href=(super::assets::CSS_URL);
                script src=(super::assets::JS_URL) defer {}
            }
            body data-refresh-ms=(REFRESH_MS) {
                header.top {
                    nav {
                        a.brand href="/ui/" { "warren" }
                        a href="/ui/" { "Overview" }
                        a href="/ui/jobs" { "Jobs" }
                        a href="/ui/schedules" { "Schedules" }
                    }
                    @if let Some(v) = viewer {
                        form.find method="get" action="/ui/find" {
                            label.hidden for="find-id" { "Job id" }
                            input #find-id type="search" name="id" placeholder="job id" required;
                            button type="submit" { "Open" }
                        }
                        div.who {
                            span.scope title="what this session may do" { (v.scope.as_str()) }
                            @if v.logged_in {
                                form method="post" action="/ui/logout" {
                                    input type="hidden" name="csrf" value=(v.csrf);
                                    button.link type="submit" { "Log out" }
                                }
                            }
                        }
                    }
                }
                main { (body) }
            }
        }
    }
}

/// A page with a status code other than 200: an error, or a form answered with a problem.
pub(super) struct Page {
    status: StatusCode,
    markup: Markup,
}

impl Page {
    /// An error page: `status`, a heading and a sentence saying what happened.
    pub(super) fn error(status: StatusCode, title: &str, detail: impl AsRef<str>) -> Self {
        let markup = layout(
            title,
            None,
            html! {
                h1 { (title) }
                p.notice.bad role="alert" { (detail.as_ref()) }
                p { a href="/ui/" { "Back to the overview" } }
            },
        );
        Self { status, markup }
    }

    /// 404 for a job, queue or page that does not exist.
    pub(super) fn not_found(what: &str) -> Self {
        Self::error(StatusCode::NOT_FOUND, "Not found", what)
    }

    /// 503 for a broker or store that cannot be reached (the detail has no credentials).
    pub(super) fn unavailable(e: &crate::Error) -> Self {
        tracing::warn!(error = %e, "dashboard: a source is unavailable");
        Self::error(
            StatusCode::SERVICE_UNAVAILABLE,
            "Unavailable",
            format!(
                "warren could not answer this page: {}",
                crate::redact(&e.to_string())
            ),
        )
    }
}

impl IntoResponse for Page {
    fn into_response(self) -> Response {
        (self.status, self.markup).into_response()
    }
}
