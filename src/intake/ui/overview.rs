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
use crate::overview::{Overview, QueueOverview, QueueRates};

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
    state.overview().await.map_err(|e| Page::unavailable(&e))
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

/// The sparkline's size in SVG user units: one unit per minute, [`SPARK_HEIGHT`] tall.
const SPARK_WIDTH: usize = 60;
const SPARK_HEIGHT: u64 = 16;

/// The points of a sparkline of `per_minute` (oldest first), scaled to its largest value and
/// right-aligned (the newest minute at the right edge).
fn spark_points(per_minute: &[u64]) -> String {
    let max = per_minute.iter().copied().max().unwrap_or(0).max(1);
    let skip = per_minute.len().saturating_sub(SPARK_WIDTH);
    let shown = &per_minute[skip..];
    let x0 = SPARK_WIDTH - shown.len();
    shown
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let y = SPARK_HEIGHT - v * SPARK_HEIGHT / max;
            format!("{},{y}", x0 + i)
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// A queue's rates: acked per second now, dead letters per second when any, and a sparkline
/// of acks per minute over the last hour (inline SVG, no script).
fn rates_cell(rates: Option<&QueueRates>) -> Markup {
    let Some(r) = rates else {
        return html! { span.muted title="the management API has not sampled this queue" { "–" } };
    };
    let acked: u64 = r.acked_last_hour.iter().sum();
    let dead: u64 = r.dead_last_hour.iter().sum();
    html! {
        span.rate title={ "in " (format!("{:.1}", r.in_per_s)) "/s, acked " (format!("{:.1}", r.acked_per_s)) "/s, dead " (format!("{:.1}", r.dead_per_s)) "/s" } {
            (format!("{:.1}", r.acked_per_s)) "/s"
        }
        @if r.acked_last_hour.len() > 1 {
            " "
            svg.spark viewBox={ "0 0 " (SPARK_WIDTH) " " (SPARK_HEIGHT) } width="60" height="16"
                role="img" aria-label={ (acked) " acked, " (dead) " dead in the last hour" } {
                title { (acked) " acked, " (dead) " dead in the last hour" }
                polyline fill="none" stroke="currentColor" stroke-width="1" points=(spark_points(&r.acked_last_hour)) {}
            }
        }
        @if dead > 0 {
            " " span.status.dead title="dead letters in the last hour" { (dead) " dead" }
        }
    }
}

fn row(q: &QueueOverview, viewer: &Viewer) -> Markup {
    html! {
        tr data-queue=(q.queue) {
            td data-label="queue" { a href={ "/ui/jobs?queue=" (super::encode_query(&q.queue)) } { (q.queue) } }
            td.num.ready data-label="ready" { (count(q.ready)) }
            td.num.unacked data-label="unacked" { (count(q.unacked)) }
            td.num.running data-label="running" { (q.running) }
            td.num.consumers data-label="consumers" { (count(q.consumers)) }
            td.num.retrying data-label="retrying" { (q.retrying) }
            td.num.dead data-label="dead" {
                a href=(super::dead_url(&q.queue)) title="dead letters" { (count(q.dead)) }
            }
            td.paused data-label="paused" { (paused_cell(q, viewer)) }
            td.rates data-label="last hour" { (rates_cell(q.rates.as_ref())) }
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
                th.num title="jobs a worker is running now, fleet-wide" { "running" }
                th.num { "consumers" }
                th.num title="jobs waiting for another attempt" { "retrying" }
                th.num title="dead letters in {queue}.dlq" { "dead" }
                th { "paused" }
                th title="acked per second now, and per minute over the last hour (from the management API)" { "last hour" }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sparkline_scales_to_its_peak_and_ends_at_the_right_edge() {
        assert_eq!(spark_points(&[0, 8, 16]), "57,16 58,8 59,0");
        assert_eq!(spark_points(&[0, 0]), "58,16 59,16");
        let long: Vec<u64> = (0..90).collect();
        let pts = spark_points(&long);
        assert!(pts.starts_with("0,"), "{pts}");
        assert_eq!(pts.split(' ').count(), SPARK_WIDTH);
        assert!(pts.ends_with("59,0"), "{pts}");
    }
}
