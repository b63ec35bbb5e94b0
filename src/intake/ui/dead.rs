//! `/ui/queues/{queue}/dead`: a queue's dead letters, peeked from the head of `{queue}.dlq`
//! (nothing moves), and for admin sessions the actions of `warren dlq`: requeue one, the
//! selected, or all (optionally those whose last error contains a text), and purge after the
//! queue's name is typed as confirmation. Moves use the DLQ tools' confirm-then-ack
//! ([`crate::dlq`]). This page does not refresh itself (a refresh would clear a selection).

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::Extension;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use tokio_util::sync::CancellationToken;

use super::page::{Page, layout};
use super::session::{ActForm, Viewer};
use crate::dlq::{ArchiveLine, Dlq, Filter};
use crate::intake::IntakeState;

/// Dead letters a page shows by default, and at most.
const DEFAULT_PEEK: usize = 50;
const MAX_PEEK: usize = 100;
/// Characters of a payload shown in the list (the job's page shows all of it).
const PAYLOAD_PREVIEW: usize = 2_000;

/// The DLQ tools on the intake's broker, publisher and store (as `/v1/queues/{q}/dead` uses).
pub(super) fn dlq(state: &IntakeState) -> Dlq<'_> {
    Dlq {
        config: &state.config,
        broker: state.publisher.broker(),
        publisher: &state.publisher,
        store: &state.store,
    }
}

fn known(state: &IntakeState, queue: &str) -> Result<(), Page> {
    if state.config.queue(queue).is_some() {
        Ok(())
    } else {
        Err(Page::not_found(&format!(
            "No queue named {} is configured.",
            crate::message::truncate(queue, 200)
        )))
    }
}

/// `?limit=N&requeued=N&purged=N`: how many to show, and what the last action did.
#[derive(serde::Deserialize, Default)]
pub(super) struct PageQuery {
    limit: Option<usize>,
    requeued: Option<u64>,
    purged: Option<u64>,
}

/// `GET /ui/queues/{queue}/dead`: the first dead letters (default 50, at most 100).
pub(super) async fn page(
    State(state): State<Arc<IntakeState>>,
    Extension(viewer): Extension<Viewer>,
    Path(queue): Path<String>,
    Query(q): Query<PageQuery>,
) -> Response {
    if let Err(p) = known(&state, &queue) {
        return p.into_response();
    }
    let n = q.limit.unwrap_or(DEFAULT_PEEK).min(MAX_PEEK);
    let dlq_name = crate::topology::dlq_name(&queue);
    let depth = match crate::topology::inspect(state.publisher.broker(), &dlq_name).await {
        Ok(s) => s.messages.map(u64::from),
        Err(e) => return Page::unavailable(&e).into_response(),
    };
    let lines = match dlq(&state).peek(&queue, n).await {
        Ok(l) => l,
        Err(e) => return Page::unavailable(&e).into_response(),
    };
    let url = super::dead_url(&queue);
    layout(
        &format!("Dead letters of {queue}"),
        Some(&viewer),
        html! {
            h1 { "Dead letters of " (queue) }
            @if let Some(n) = q.requeued { p.notice role="status" { "Requeued " (n) " dead letter(s)." } }
            @if let Some(n) = q.purged { p.notice role="status" { "Purged " (n) " dead letter(s)." } }
            p #depth {
                code { (dlq_name) } " holds "
                strong.depth { (depth.map_or("an unknown number of".to_owned(), |d| d.to_string())) }
                " dead letter(s); the first " (lines.len()) " are shown (peeked: nothing moved). "
                a href=(url) { "Reload" }
            }
            @if viewer.admin() && !lines.is_empty() {
                div.actions {
                    form #requeue-all method="post" action={ (url) "/requeue" } {
                        input type="hidden" name="csrf" value=(viewer.csrf);
                        input type="hidden" name="all" value="1";
                        label for="error_contains" { "whose last error contains" }
                        input #error_contains type="text" name="error_contains" placeholder="(any)";
                        button.primary type="submit" { "Requeue all" }
                    }
                }
            }
            @if lines.is_empty() {
                p.muted { "No dead letters." }
            } @else {
                form #selected method="post" action={ (url) "/requeue" } {
                    @if viewer.admin() {
                        input type="hidden" name="csrf" value=(viewer.csrf);
                        div.actions { button.primary type="submit" name="selected" value="1" { "Requeue selected" } }
                    }
                    (table(&lines, &viewer))
                }
            }
            @if viewer.admin() {
                div.card.danger-zone {
                    h2 { "Purge" }
                    p { "Deletes every dead letter present now, for good; their jobs stay " code { "dead" } " and get a purge time. Type the queue's name to confirm." }
                    form #purge method="post" action={ (url) "/purge" } {
                        input type="hidden" name="csrf" value=(viewer.csrf);
                        label.hidden for="confirm" { "queue name" }
                        input #confirm type="text" name="confirm" placeholder=(queue) autocomplete="off" required;
                        button.danger type="submit" { "Purge" }
                    }
                }
            }
        },
    )
    .into_response()
}

fn table(lines: &[ArchiveLine], viewer: &Viewer) -> Markup {
    html! {
        table.responsive.dead-letters {
            thead { tr {
                @if viewer.admin() {
                    th { label.hidden for="select-all" { "select all" } input #select-all type="checkbox" data-select-all; }
                }
                th { "job" } th { "failed at" } th.num { "attempts" } th { "last error" } th { "payload" }
                @if viewer.admin() { th {} }
            } }
            tbody {
                @for line in lines {
                    @let id = line.id.clone().unwrap_or_default();
                    tr data-job=(id) {
                        @if viewer.admin() {
                            td data-label="select" {
                                @if !id.is_empty() { input type="checkbox" name="ids" value=(id) aria-label="select"; }
                            }
                        }
                        td.mono data-label="job" {
                            @if id.is_empty() { span.muted { "(no job id)" } }
                            @else { a href=(super::job_url(&id)) { (id) } }
                        }
                        td data-label="failed at" { (line.failed_at.as_deref().unwrap_or("–")) }
                        td.num data-label="attempts" { (line.attempts.map_or("–".to_owned(), |a| a.to_string())) }
                        td data-label="last error" { pre.last-error { (line.last_error.as_deref().unwrap_or("")) } }
                        td data-label="payload" { pre.payload { (preview(&super::job::payload_text(line))) } }
                        @if viewer.admin() {
                            td {
                                @if !id.is_empty() {
                                    button type="submit" name="one" value=(id) { "Requeue" }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn preview(text: &str) -> String {
    if text.chars().count() > PAYLOAD_PREVIEW {
        let cut: String = text.chars().take(PAYLOAD_PREVIEW).collect();
        format!("{cut}… (cut; the job's page shows all)")
    } else {
        text.to_owned()
    }
}

/// `POST /ui/queues/{queue}/dead/requeue` (admin, CSRF): moves dead letters back to the work
/// queue: `one=ID` that one; `ids=ID…` the selected ones; `all=1` every one present
/// (with `error_contains`, those whose last error contains it). Then back to the page (or to
/// the job's page with `back=job`), saying how many moved.
pub(super) async fn requeue(
    State(state): State<Arc<IntakeState>>,
    Path(queue): Path<String>,
    form: ActForm,
) -> Response {
    if let Err(p) = known(&state, &queue) {
        return p.into_response();
    }
    let f = &form.data;
    let one = f.get("one").filter(|s| !s.is_empty());
    let report = if f.get("all") == Some("1") && one.is_none() {
        let filter = Filter {
            error_contains: f
                .get("error_contains")
                .filter(|s| !s.is_empty())
                .map(str::to_owned),
            ..Filter::default()
        };
        dlq(&state)
            .requeue(&queue, &filter, None, &(), &CancellationToken::new())
            .await
    } else {
        let ids: BTreeSet<String> = match one {
            Some(id) => BTreeSet::from([id.to_owned()]),
            None => f
                .all("ids")
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect(),
        };
        if ids.is_empty() {
            return Page::error(
                StatusCode::BAD_REQUEST,
                "Nothing selected",
                "Select the dead letters to requeue first. Nothing was done.",
            )
            .into_response();
        }
        let limit = Some(ids.len() as u64);
        dlq(&state)
            .requeue_where(
                &queue,
                &|l: &ArchiveLine| l.id.as_ref().is_some_and(|id| ids.contains(id)),
                limit,
                &(),
                &CancellationToken::new(),
            )
            .await
    };
    let moved = match report {
        Ok(r) => r.moved,
        Err(e) => return Page::unavailable(&e).into_response(),
    };
    tracing::info!(queue = %queue, moved, "dead letters requeued from the dashboard");
    match (f.get("back"), one) {
        (Some("job"), Some(id)) => {
            Redirect::to(&format!("{}?requeued={moved}", super::job_url(id))).into_response()
        }
        _ => Redirect::to(&format!("{}?requeued={moved}", super::dead_url(&queue))).into_response(),
    }
}

/// `POST /ui/queues/{queue}/dead/purge` (admin, CSRF, `confirm` = the queue's name): deletes
/// the dead letters present now; 400 and nothing purged when `confirm` differs.
pub(super) async fn purge(
    State(state): State<Arc<IntakeState>>,
    Path(queue): Path<String>,
    form: ActForm,
) -> Response {
    if let Err(p) = known(&state, &queue) {
        return p.into_response();
    }
    if form.data.get("confirm").map(str::trim) != Some(queue.as_str()) {
        return Page::error(
            StatusCode::BAD_REQUEST,
            "Not purged",
            format!("Type the queue's name, {queue}, to confirm a purge. Nothing was purged."),
        )
        .into_response();
    }
    match dlq(&state)
        .purge(&queue, None, &(), &CancellationToken::new())
        .await
    {
        Ok(n) => {
            tracing::info!(queue = %queue, purged = n, "dead letters purged from the dashboard");
            Redirect::to(&format!("{}?purged={n}", super::dead_url(&queue))).into_response()
        }
        Err(e) => Page::unavailable(&e).into_response(),
    }
}
