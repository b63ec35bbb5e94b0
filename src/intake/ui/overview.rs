//! `/ui/`: the overview, per configured queue what waits where (the numbers of
//! `GET /v1/queues`, from [`crate::overview::overview`]), refreshed in place through
//! `/ui/live/overview`.

use std::sync::Arc;

use axum::Extension;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};

use super::page::{Page, layout};
use super::session::{ActForm, Viewer};
use crate::intake::IntakeState;
use crate::overview::{Overview, QueueOverview};

/// `GET /ui/`: the overview page.
pub(super) async fn page(
    State(state): State<Arc<IntakeState>>,
    Extension(viewer): Extension<Viewer>,
) -> Response {
    match load(&state).await {
        Ok(o) => layout(
            "Overview",
            Some(&viewer),
            html! {
                h1 { "Queues" }
                div #overview data-live="/ui/live/overview" { (table(&o, &viewer)) }
            },
        )
        .into_response(),
        Err(p) => p.into_response(),
    }
}

/// `GET /ui/live/overview`: the overview's table alone, for the page's refresh.
pub(super) async fn live(
    State(state): State<Arc<IntakeState>>,
    Extension(viewer): Extension<Viewer>,
) -> Response {
    match load(&state).await {
        Ok(o) => table(&o, &viewer).into_response(),
        Err(p) => p.into_response(),
    }
}

async fn load(state: &IntakeState) -> Result<Overview, Page> {
    crate::overview::overview(&state.config, state.publisher.broker(), &state.store)
        .await
        .map_err(|e| Page::unavailable(&e))
}

fn count(n: Option<u64>) -> Markup {
    html! {
        @match n {
            Some(n) => (n),
            None => span.muted title="unknown" { "–" },
        }
    }
}

/// Whether the queue is paused and, for an `admin` session, the form that pauses or resumes
/// it (with the session's CSRF token).
fn paused_cell(q: &QueueOverview, viewer: &Viewer) -> Markup {
    let (action, label) = if q.paused {
        ("resume", "Resume")
    } else {
        ("pause", "Pause")
    };
    html! {
        @if q.paused { span.status.retrying { "paused" } } @else { span.muted { "no" } }
        @if viewer.admin() {
            form.inline method="post" action={ "/ui/queues/" (super::encode_segment(&q.queue)) "/" (action) } {
                input type="hidden" name="csrf" value=(viewer.csrf);
                button type="submit" name="do" value=(action) { (label) }
            }
        }
    }
}

fn row(q: &QueueOverview, viewer: &Viewer) -> Markup {
    html! {
        tr data-queue=(q.queue) {
            td data-label="queue" { a href={ "/ui/jobs?queue=" (super::encode_query(&q.queue)) } { (q.queue) } }
            td.num.ready data-label="ready" { (count(q.ready)) }
            td.num.unacked data-label="unacked" { (count(q.unacked)) }
            td.num.consumers data-label="consumers" { (count(q.consumers)) }
            td.num.retrying data-label="retrying" { (q.retrying) }
            td.num.dead data-label="dead" {
                a href=(super::dead_url(&q.queue)) title="dead letters" { (count(q.dead)) }
            }
            td.paused data-label="paused" { (paused_cell(q, viewer)) }
        }
    }
}

/// `POST /ui/queues/{queue}/pause` (`paused`) and `/resume`: as the API's endpoints (admin,
/// and the form's CSRF token), then back to the overview.
async fn set(state: &IntakeState, queue: &str, paused: bool) -> Response {
    match crate::intake::pause::set_paused(state, queue, paused).await {
        Ok(_) => Redirect::to("/ui/").into_response(),
        Err(p) => Page::error(p.status(), "Not changed", p.detail()).into_response(),
    }
}

/// `POST /ui/queues/{queue}/pause`.
pub(super) async fn pause(
    State(state): State<Arc<IntakeState>>,
    Path(queue): Path<String>,
    _form: ActForm,
) -> Response {
    set(&state, &queue, true).await
}

/// `POST /ui/queues/{queue}/resume`.
pub(super) async fn resume(
    State(state): State<Arc<IntakeState>>,
    Path(queue): Path<String>,
    _form: ActForm,
) -> Response {
    set(&state, &queue, false).await
}

/// The overview's table and the lines under it.
fn table(o: &Overview, viewer: &Viewer) -> Markup {
    html! {
        table.responsive.queues {
            thead { tr {
                th { "queue" }
                th.num title="messages ready for delivery" { "ready" }
                th.num title="delivered to a worker, not yet acked (from the management API; lags up to 5 s)" { "unacked" }
                th.num { "consumers" }
                th.num title="jobs waiting for another attempt" { "retrying" }
                th.num title="dead letters in {queue}.dlq" { "dead" }
                th { "paused" }
            } }
            tbody {
                @for q in &o.queues { (row(q, viewer)) }
            }
        }
        p.muted.small {
            "Broker node " code { (o.broker_node) } ". "
            @if o.management != "ok" { "Management API: " (o.management) ". " }
            @if let Some(n) = o.unroutable.filter(|n| *n > 0) {
                (n) " delayed message(s) in " code { "warren.unroutable" } " (their queue was gone). "
            }
            "Refreshes every " (super::REFRESH_MS / 1000) " s."
        }
    }
}
