//! `/ui/jobs/{id}`: one job, every status field, its last error and result, and its timeline,
//! refreshed in place through `/ui/live/jobs/{id}`; for a dead job, the payload read from its
//! dead letter (the store does not keep payloads). Admin sessions get its actions: cancel a
//! `queued` or `retrying` job, requeue a dead one.

use std::sync::Arc;

use axum::Extension;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use uuid::Uuid;

use super::page::{Page, layout};
use super::session::{ActForm, Viewer};
use crate::dlq::ArchiveLine;
use crate::intake::IntakeState;
use crate::store::{Cancel, JobRecord, JobStatus, now_ms, rfc3339_ms};

/// How many dead letters a job page looks through for the job's payload.
const PAYLOAD_SEARCH: usize = 100;

async fn load(state: &IntakeState, id: &str) -> Result<JobRecord, Page> {
    let missing = || Page::not_found(&format!("No job has the id {id}."));
    let uuid = Uuid::parse_str(id).map_err(|_| missing())?;
    match state.store.get(uuid).await {
        Ok(Some(job)) => Ok(job),
        Ok(None) => Err(missing()),
        Err(e) => Err(Page::unavailable(&e)),
    }
}

/// `?requeued=1` / `?cancelled=1`: what the last action did, to say so once.
#[derive(serde::Deserialize, Default)]
pub(super) struct Done {
    requeued: Option<u64>,
    cancelled: Option<u64>,
}

/// `GET /ui/jobs/{id}`: the job's page.
pub(super) async fn page(
    State(state): State<Arc<IntakeState>>,
    Extension(viewer): Extension<Viewer>,
    Path(id): Path<String>,
    Query(done): Query<Done>,
) -> Response {
    let job = match load(&state, &id).await {
        Ok(j) => j,
        Err(p) => return p.into_response(),
    };
    let letter = if job.status == JobStatus::Dead && job.discarded_at.is_none() {
        Some(find_dead_letter(&state, &job).await)
    } else {
        None
    };
    let live = format!("/ui/live/jobs/{}", super::encode_segment(&id));
    layout(
        &format!("Job {id}"),
        Some(&viewer),
        html! {
            h1 { "Job " span.mono { (job.id) } }
            @if done.requeued.is_some() { p.notice role="status" { "Requeued: the job is back in its queue." } }
            @if done.cancelled.is_some() { p.notice role="status" { "Cancelled." } }
            div #job data-live=(live) { (details(&job, &viewer)) }
            h2 { "Payload" }
            div.card.payload {
                @match &letter {
                    None => p.muted { "warren keeps no payloads in its store; a dead job's payload is shown from its dead letter." },
                    Some(Ok(Some(line))) => (dead_letter(line)),
                    Some(Ok(None)) => p.muted { "Its dead letter is not among the first " (PAYLOAD_SEARCH) " of " a href=(super::dead_url(&job.queue)) { (crate::topology::dlq_name(&job.queue)) } "." },
                    Some(Err(e)) => p.notice.bad { "The dead letters could not be read: " (e) },
                }
            }
        },
    )
    .into_response()
}

/// `GET /ui/live/jobs/{id}`: the job's fields, timeline and actions alone.
pub(super) async fn live(
    State(state): State<Arc<IntakeState>>,
    Extension(viewer): Extension<Viewer>,
    Path(id): Path<String>,
) -> Response {
    match load(&state, &id).await {
        Ok(job) => details(&job, &viewer).into_response(),
        Err(p) => p.into_response(),
    }
}

/// The job's dead letter, looked for among the first [`PAYLOAD_SEARCH`] of its DLQ.
async fn find_dead_letter(
    state: &IntakeState,
    job: &JobRecord,
) -> Result<Option<ArchiveLine>, String> {
    let id = job.id.to_string();
    super::dead::dlq(state)
        .peek(&job.queue, PAYLOAD_SEARCH)
        .await
        .map(|lines| {
            lines
                .into_iter()
                .find(|l| l.id.as_deref() == Some(id.as_str()))
        })
        .map_err(|e| crate::redact(&e.to_string()))
}

/// A dead letter's payload (pretty JSON, or base64 when it is not JSON), as text.
pub(super) fn payload_text(line: &ArchiveLine) -> String {
    match (&line.payload, &line.payload_base64) {
        (Some(raw), _) => serde_json::from_str::<serde_json::Value>(raw.get())
            .ok()
            .and_then(|v| serde_json::to_string_pretty(&v).ok())
            .unwrap_or_else(|| raw.get().to_owned()),
        (None, Some(b64)) => format!("(not JSON; base64) {b64}"),
        (None, None) => String::new(),
    }
}

fn dead_letter(line: &ArchiveLine) -> Markup {
    html! {
        pre.payload-text { (payload_text(line)) }
        dl.fields {
            dt { "failed at" } dd { (line.failed_at.as_deref().unwrap_or("–")) }
            dt { "attempts" } dd { (line.attempts.map_or("–".to_owned(), |a| a.to_string())) }
            dt { "dead-letter queue" } dd { a href=(super::dead_url(&line.queue)) { (crate::topology::dlq_name(&line.queue)) } }
        }
    }
}

fn when(ms: Option<i64>) -> Markup {
    html! {
        @match ms {
            Some(ms) => time datetime=(rfc3339_ms(ms)) { (rfc3339_ms(ms)) },
            None => span.muted { "–" },
        }
    }
}

/// The job's fields, result, last error, timeline and (for admin) actions.
fn details(job: &JobRecord, viewer: &Viewer) -> Markup {
    let id = job.id.to_string();
    let mut timeline: Vec<(i64, &str)> = vec![(job.created_at, "accepted")];
    if let Some(t) = job.started_at {
        timeline.push((t, "first run started"));
    }
    if let Some(t) = job.next_attempt_at {
        timeline.push((
            t,
            if job.status == JobStatus::Retrying {
                "next attempt due"
            } else {
                "due (delayed)"
            },
        ));
    }
    if let Some(t) = job.finished_at {
        timeline.push((t, job.status.as_str()));
    }
    if let Some(t) = job.discarded_at {
        timeline.push((t, "dead letter purged"));
    }
    timeline.sort_by_key(|(t, _)| *t);
    let result = job.result.as_deref().map(|r| {
        serde_json::from_str::<serde_json::Value>(r)
            .ok()
            .and_then(|v| serde_json::to_string_pretty(&v).ok())
            .unwrap_or_else(|| r.to_owned())
    });
    html! {
        div.card {
            dl.fields {
                dt { "status" } dd { span class={ "status " (job.status.as_str()) } #status { (job.status.as_str()) } }
                dt { "queue" } dd { (job.queue) }
                dt { "attempts" } dd { (job.attempts) " of " (job.max_attempts) }
                dt { "correlation id" } dd.mono { (job.correlation_id.as_deref().unwrap_or("–")) }
                dt { "idempotency key" } dd.mono { (job.idempotency_key.as_deref().unwrap_or("–")) }
                dt { "created" } dd { (when(Some(job.created_at))) }
                dt { "started" } dd { (when(job.started_at)) }
                dt { "next attempt" } dd { (when(job.next_attempt_at)) }
                dt { "finished" } dd { (when(job.finished_at)) }
                dt { "dead letter purged" } dd { (when(job.discarded_at)) }
            }
            @if viewer.admin() { (actions(job, &id, viewer)) }
        }
        h2 { "Last error" }
        @match &job.last_error {
            Some(e) => pre #last-error { (e) },
            None => p.muted { "none" },
        }
        h2 { "Result" }
        @match &result {
            Some(r) => pre #result { (r) },
            None => p.muted { "none" },
        }
        h2 { "Timeline" }
        ol.timeline {
            @for (t, what) in &timeline {
                li { time datetime=(rfc3339_ms(*t)) { (rfc3339_ms(*t)) } " — " (what) }
            }
        }
    }
}

fn actions(job: &JobRecord, id: &str, viewer: &Viewer) -> Markup {
    html! {
        div.actions {
            @if matches!(job.status, JobStatus::Queued | JobStatus::Retrying) {
                form method="post" action={ (super::job_url(id)) "/cancel" } {
                    input type="hidden" name="csrf" value=(viewer.csrf);
                    button.danger type="submit" { "Cancel job" }
                }
            }
            @if job.status == JobStatus::Dead && job.discarded_at.is_none() {
                form method="post" action={ (super::dead_url(&job.queue)) "/requeue" } {
                    input type="hidden" name="csrf" value=(viewer.csrf);
                    input type="hidden" name="back" value="job";
                    button.primary type="submit" name="one" value=(id) { "Requeue" }
                }
            }
        }
    }
}

/// `POST /ui/jobs/{id}/cancel` (admin, CSRF): cancels a job that has not started, then shows
/// its page; 409 when it is running or final.
pub(super) async fn cancel(
    State(state): State<Arc<IntakeState>>,
    Path(id): Path<String>,
    _form: ActForm,
) -> Response {
    let job = match load(&state, &id).await {
        Ok(j) => j,
        Err(p) => return p.into_response(),
    };
    match state.store.cancel(job.id, now_ms()).await {
        Ok(Cancel::Cancelled(r)) => {
            tracing::info!(job_id = %r.id, queue = %r.queue, "job cancelled from the dashboard");
            Redirect::to(&format!("{}?cancelled=1", super::job_url(&id))).into_response()
        }
        Ok(Cancel::Conflict(status)) => Page::error(
            StatusCode::CONFLICT,
            "Not cancelled",
            format!(
                "The job is {}; only queued or retrying jobs can be cancelled.",
                status.as_str()
            ),
        )
        .into_response(),
        Ok(Cancel::NotFound) => {
            Page::not_found(&format!("No job has the id {id}.")).into_response()
        }
        Err(e) => Page::unavailable(&e).into_response(),
    }
}
