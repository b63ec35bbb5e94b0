//! `POST /v1/queues/{queue}/jobs` and `GET /v1/jobs/{id}`.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::value::RawValue;
use uuid::Uuid;

use super::extract::{Path, int};
use super::openapi::ProblemDocument;
use super::{IntakeState, Problem};
use crate::config::QueueConfig;
use crate::enqueue::{JobSpec, Prepared, Refused};
use crate::error::ErrorKind;
use crate::store::{Cancel, JobRecord, now_ms};
use crate::view::JobView;

/// Bytes allowed in a request body beyond the queue's payload limit, for the envelope
/// (`{"payload": …, "max_attempts": …}`).
pub(super) const ENVELOPE_SLACK: usize = 4 * 1024;
/// Longest accepted `Idempotency-Key` / `X-Correlation-ID` (bytes). The value travels as an
/// AMQP short string, which holds at most 255 bytes.
const MAX_KEY_BYTES: usize = 255;
/// Largest accepted `max_attempts`.
const MAX_ATTEMPTS_LIMIT: u32 = 100;

/// The request body of `POST /v1/queues/{queue}/jobs`. Unknown fields are refused
/// (`additionalProperties: false`); the integers are JSON Schema integers (`30.0` is 30).
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct JobRequest {
    /// Any JSON; becomes the message body byte for byte (at most the queue's
    /// `max_payload_bytes`, else 413).
    #[schema(value_type = serde_json::Value, example = json!({"customer": 42, "items": 3}))]
    pub(super) payload: Box<RawValue>,
    /// Wait this long before the first attempt (ms, 0 to 1,048,575,000: about 12 days).
    #[serde(default, deserialize_with = "int::delay_ms")]
    #[schema(minimum = 0, maximum = 1_048_575_000)]
    pub(super) delay_ms: Option<u64>,
    /// Override the queue's attempt budget (1 to 100).
    #[serde(default, deserialize_with = "int::max_attempts")]
    #[schema(minimum = 1, maximum = 100)]
    pub(super) max_attempts: Option<u32>,
}

pub(super) fn is_json(headers: &HeaderMap) -> bool {
    let Some(ct) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let mime = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
}

/// A header's value as text: absent → `None`; present but empty, too long or not visible
/// ASCII → 400.
pub(super) fn token_header(headers: &HeaderMap, name: &str) -> Result<Option<String>, Problem> {
    headers
        .get(name)
        .map(|v| token(name, v.to_str().unwrap_or("")))
        .transpose()
}

/// `value` of the key or id called `name`, checked: 1 to [`MAX_KEY_BYTES`] visible ASCII
/// characters (it travels as an AMQP short string), else 400.
pub(super) fn token(name: &str, value: &str) -> Result<String, Problem> {
    let ok = !value.is_empty()
        && value.len() <= MAX_KEY_BYTES
        && value.bytes().all(|b| b.is_ascii_graphic() || b == b' ');
    if !ok {
        return Err(Problem::bad_request(format!(
            "{name} must be 1 to {MAX_KEY_BYTES} visible ASCII characters"
        )));
    }
    Ok(value.to_owned())
}

/// The queue `queue`'s configuration, or 404 `unknown-queue`.
pub(super) fn configured_queue<'a>(
    state: &'a IntakeState,
    queue: &str,
) -> Result<&'a QueueConfig, Problem> {
    state.config.queue(queue).ok_or_else(|| {
        Problem::new(
            StatusCode::NOT_FOUND,
            "unknown-queue",
            "Unknown queue",
            format!(
                "no queue named `{}` is configured",
                crate::message::truncate(queue, 200)
            ),
        )
    })
}

/// 415 unless the request says `Content-Type: application/json` (or `+json`).
pub(super) fn require_json(headers: &HeaderMap) -> Result<(), Problem> {
    if is_json(headers) {
        return Ok(());
    }
    Err(Problem::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported-media-type",
        "Unsupported media type",
        "send the job as Content-Type: application/json",
    ))
}

/// 413 `payload-too-large` for queue `q`.
pub(super) fn too_large(q: &QueueConfig) -> Problem {
    Problem::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload-too-large",
        "Payload too large",
        format!(
            "queue `{}` accepts payloads of at most {} bytes",
            q.name, q.max_payload_bytes
        ),
    )
}

/// 400 unless `max_attempts` (when given) is 1 to 100 and `delay_ms` at most
/// [`crate::delay::MAX_DELAY`]: the constraints the document's `JobRequest` schema states.
pub(super) fn validate(req: &JobRequest) -> Result<(), Problem> {
    if let Some(n) = req.max_attempts
        && !(1..=MAX_ATTEMPTS_LIMIT).contains(&n)
    {
        return Err(Problem::bad_request(format!(
            "max_attempts must be between 1 and {MAX_ATTEMPTS_LIMIT}"
        )));
    }
    if std::time::Duration::from_millis(req.delay_ms.unwrap_or(0)) > crate::delay::MAX_DELAY {
        return Err(Problem::bad_request(format!(
            "delay_ms must be at most {} ({} days)",
            crate::delay::MAX_DELAY.as_millis(),
            crate::delay::MAX_DELAY.as_secs() / 86_400
        )));
    }
    Ok(())
}

/// Checks one job request for queue `q` (payload size, `max_attempts`, `delay_ms`, the
/// concurrency key of a queue with `concurrency_key`) and gives it an id; `idempotency_key`,
/// `correlation_id` and `concurrency_key` (the `X-Concurrency-Key` header) are already
/// checked with [`token`]. The one validation path of the single and the batch endpoint.
pub(super) fn prepare(
    q: &QueueConfig,
    req: &JobRequest,
    idempotency_key: Option<String>,
    correlation_id: Option<String>,
    concurrency_key: Option<String>,
) -> Result<Prepared, Problem> {
    if req.payload.get().len() > q.max_payload_bytes {
        return Err(too_large(q));
    }
    validate(req)?;
    let concurrency_key = concurrency_key.or_else(|| {
        q.concurrency_key
            .as_deref()
            .and_then(|p| crate::concurrency_key::key_at(req.payload.get().as_bytes(), p))
    });
    if let (Some(pointer), None) = (&q.concurrency_key, &concurrency_key) {
        return Err(Problem::new(
            StatusCode::BAD_REQUEST,
            "missing-concurrency-key",
            "Missing concurrency key",
            format!(
                "queue `{}` limits jobs per concurrency key: the payload has no string, number or boolean at `{pointer}`, and no X-Concurrency-Key header was sent; nothing was published",
                q.name
            ),
        ));
    }
    Ok(Prepared::new(
        q,
        JobSpec {
            payload: bytes::Bytes::copy_from_slice(req.payload.get().as_bytes()),
            delay: std::time::Duration::from_millis(req.delay_ms.unwrap_or(0)),
            max_attempts: req.max_attempts,
            idempotency_key,
            correlation_id,
            concurrency_key,
            schedule: None,
        },
    ))
}

/// `POST /v1/queues/{queue}/jobs`: store the job as `queued`, publish it (persistent,
/// mandatory) and answer 202 only once the broker confirmed it.
#[utoipa::path(
    post,
    path = "/v1/queues/{queue}/jobs",
    tag = "jobs",
    summary = "Submit a job",
    description = "Stores the job as `queued`, publishes it (persistent, mandatory) and answers 202 only once RabbitMQ confirmed the message.",
    params(
        ("queue" = String, Path, description = "A configured queue"),
        ("Idempotency-Key" = Option<String>, Header, description = "1 to 255 visible ASCII characters; the same key with the same request returns the original job (Stripe's semantics, per queue)"),
        ("X-Correlation-ID" = Option<String>, Header, description = "1 to 255 visible ASCII characters; travels as the message's correlation_id to the handler (default: the job id)"),
        ("X-Concurrency-Key" = Option<String>, Header, description = "1 to 255 visible ASCII characters; the job's concurrency key for its queue's `concurrency_per_key` limit (overrides the payload at the queue's `concurrency_key` pointer)"),
        ("wait" = Option<String>, Query, description = "After the 202 is decided, hold the answer until the job is final (`succeeded`, `dead`, `cancelled`) or this long has passed; the body shows the job as it stands then (still 202). Seconds (`2.5`) or a whole number with `ms`, `s` or `m` (`500ms`, `10s`, `1m`); at most 60 s (else 400 `malformed-request`, and nothing is accepted); absent or 0: at once", pattern = "^([0-9]{1,9}(\\.[0-9]{1,9})?|[0-9]{1,9}(ms|s|m))$", min_length = 1, max_length = 20, example = "10s"),
    ),
    request_body(content = JobRequest, content_type = "application/json",
        example = json!({"payload": {"customer": 42, "items": 3}, "max_attempts": 5})),
    responses(
        (status = 202, description = "Accepted: the broker confirmed the persistent message", body = JobView,
            headers(
                ("Location" = String, description = "/v1/jobs/{id}"),
                ("Idempotent-Replayed" = Option<String>, description = "`true` when an earlier request with this Idempotency-Key made the job"),
            )),
        (status = 400, description = "`malformed-request` (a bad body, or a `wait` that is not a duration or is over 60 s), or `missing-concurrency-key` (the queue limits jobs per concurrency key and the request names none)", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 404, description = "`unknown-queue`", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 409, description = "`request-in-progress` (with Retry-After)", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 413, description = "`payload-too-large`", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 415, description = "`unsupported-media-type`", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 422, description = "`idempotency-key-reused`", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 429, description = "`queue-full` (with Retry-After)", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 503, description = "`unavailable` (with Retry-After): nothing was accepted", body = ProblemDocument, content_type = "application/problem+json"),
    )
)]
pub(super) async fn post_job(
    State(state): State<Arc<IntakeState>>,
    Path(queue): Path<String>,
    wait: super::wait::Wait,
    request: Request,
) -> Result<Response, Problem> {
    // The request's own headers, not the copy a `HeaderMap` extractor would make.
    let (parts, body) = request.into_parts();
    let headers = &parts.headers;
    let q = configured_queue(&state, &queue)?;
    require_json(headers)?;
    let bytes = axum::body::to_bytes(body, q.max_payload_bytes + ENVELOPE_SLACK)
        .await
        .map_err(|_| too_large(q))?;
    super::extract::require_object(&bytes, "the job")?;
    let req: JobRequest = serde_json::from_slice(&bytes)
        .map_err(|e| Problem::bad_request(format!("invalid job JSON: {e}")))?;
    let job = prepare(
        q,
        &req,
        token_header(headers, "idempotency-key")?,
        token_header(headers, "x-correlation-id")?,
        token_header(headers, "x-concurrency-key")?,
    )?;
    let accepted = state.enqueuer().enqueue(q, job).await?;
    // Accepted: whatever the wait brings (a store that fails meanwhile included), it is a 202.
    let mut record = accepted.record;
    if wait.asked()
        && let Ok(Some(now)) = super::wait::settle(&state, record.id, wait).await
    {
        record = now;
    }
    Ok(accepted_response(record, accepted.replayed))
}

/// 202 with `Location` and the job; `Idempotent-Replayed: true` for a replay.
fn accepted_response(record: JobRecord, replayed: bool) -> Response {
    let id = record.id;
    let mut resp = (StatusCode::ACCEPTED, Json(JobView::from(record))).into_response();
    if let Ok(loc) = HeaderValue::from_str(&format!("/v1/jobs/{id}")) {
        resp.headers_mut().insert(header::LOCATION, loc);
    }
    if replayed {
        resp.headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    resp
}

/// What a client gets for a job that was not enqueued: 503 for the store or the broker
/// (429 for a full queue), 422 for a reused idempotency key, 409 while the key's first
/// request is still being accepted; never a 202.
impl From<Refused> for Problem {
    fn from(r: Refused) -> Self {
        match r {
            Refused::Store(_) => {
                Problem::unavailable("the status store is unavailable; nothing was accepted")
            }
            Refused::Publish { error, queue_full } => match error.kind() {
                ErrorKind::Nacked { queue } if queue_full => Problem::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "queue-full",
                    "Queue full",
                    format!("queue `{queue}` is at its max_length; try again later"),
                )
                .retry_after(1),
                ErrorKind::Unroutable { queue } => Problem::unavailable(format!(
                    "queue `{queue}` does not exist on the broker; run `warren topology apply`"
                )),
                _ => {
                    Problem::unavailable("the broker did not confirm the job; nothing was accepted")
                }
            },
            Refused::KeyReused => Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency-key-reused",
                "Idempotency-Key reused",
                "this Idempotency-Key was used with a different request; use a new key",
            ),
            Refused::InProgress { retry_after_s } => Problem::new(
                StatusCode::CONFLICT,
                "request-in-progress",
                "Request in progress",
                "a request with this Idempotency-Key is still being accepted; retry shortly",
            )
            .retry_after(retry_after_s),
        }
    }
}

/// 404 `unknown-job` for the job id (or non-id) `id`.
fn unknown_job(id: &str) -> Problem {
    Problem::new(
        StatusCode::NOT_FOUND,
        "unknown-job",
        "Unknown job",
        format!("no job with id `{}`", crate::message::truncate(id, 64)),
    )
}

/// `GET /v1/jobs/{id}`.
#[utoipa::path(
    get,
    path = "/v1/jobs/{id}",
    tag = "jobs",
    summary = "A job's status",
    description = "With `wait`, answers as soon as the job is final (`succeeded`, `dead`, `cancelled`), or when the wait ends with the job as it stands then: the process that finishes the job announces it, so the answer comes within milliseconds of it, wherever the job ran.",
    params(
        ("id" = String, Path, description = "The job id (a UUID) from the 202"),
        ("wait" = Option<String>, Query, description = "Hold the answer until the job is final or this long has passed: seconds (`2.5`) or a whole number with `ms`, `s` or `m` (`500ms`, `10s`, `1m`); at most 60 s (else 400 `malformed-request`); absent or 0: at once", pattern = "^([0-9]{1,9}(\\.[0-9]{1,9})?|[0-9]{1,9}(ms|s|m))$", min_length = 1, max_length = 20, example = "10s"),
    ),
    responses(
        (status = 200, description = "The job (with `wait`: final, or as it stands when the wait ended)", body = JobView),
        (status = 400, description = "`malformed-request`: a `wait` that is not a duration or is over 60 s", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 404, description = "`unknown-job`", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 503, description = "`unavailable`: the store cannot be read", body = ProblemDocument, content_type = "application/problem+json"),
    )
)]
pub(super) async fn get_job(
    State(state): State<Arc<IntakeState>>,
    Path(id): Path<String>,
    wait: super::wait::Wait,
) -> Result<Json<JobView>, Problem> {
    let not_found = || unknown_job(&id);
    let uuid = Uuid::parse_str(&id).map_err(|_| not_found())?;
    match super::wait::settle(&state, uuid, wait).await? {
        Some(r) => Ok(Json(JobView::from(r))),
        None => Err(not_found()),
    }
}

/// `POST /v1/jobs/{id}/cancel`: cancels a job that has not started (`queued` or
/// `retrying`); its message is acked and skipped when it arrives. 409 once it runs or has
/// finished. The job stays readable (`GET /v1/jobs/{id}` shows it `cancelled`): cancelling
/// is a change of state, not a deletion, hence a POST rather than a `DELETE`.
#[utoipa::path(
    post,
    path = "/v1/jobs/{id}/cancel",
    tag = "jobs",
    summary = "Cancel a job that has not started",
    description = "Cancels a `queued` or `retrying` job; its message is acked and skipped when it arrives. The job stays readable as `cancelled`. Needs the `admin` scope when tokens are configured.",
    params(("id" = String, Path, description = "The job id (a UUID)")),
    responses(
        (status = 200, description = "Cancelled; its message is acked and skipped when it arrives", body = JobView),
        (status = 404, description = "`unknown-job`", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 409, description = "`not-cancellable`: the job runs or has finished", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 503, description = "`unavailable`", body = ProblemDocument, content_type = "application/problem+json"),
    )
)]
pub(super) async fn cancel_job(
    State(state): State<Arc<IntakeState>>,
    Path(id): Path<String>,
) -> Result<Json<JobView>, Problem> {
    let not_found = || unknown_job(&id);
    let uuid = Uuid::parse_str(&id).map_err(|_| not_found())?;
    match state.store.cancel(uuid, now_ms()).await {
        Ok(Cancel::Cancelled(r)) => {
            tracing::info!(job_id = %uuid, queue = %r.queue, attempt = r.attempts, correlation_id = r.correlation_id.as_deref().unwrap_or(""), "job cancelled");
            Ok(Json(JobView::from(*r)))
        }
        Ok(Cancel::Conflict(status)) => Err(Problem::new(
            StatusCode::CONFLICT,
            "not-cancellable",
            "Job cannot be cancelled",
            format!(
                "job {uuid} is {}; only queued or retrying jobs can be cancelled",
                status.as_str()
            ),
        )),
        Ok(Cancel::NotFound) => Err(not_found()),
        Err(e) => {
            tracing::warn!(error = %e, "store failed during cancel");
            Err(Problem::unavailable("the status store is unavailable"))
        }
    }
}
