//! `POST /v1/queues/{queue}/jobs/batch`: up to [`MAX_BATCH_JOBS`] jobs in one request, one
//! result per item, in request order.
//!
//! Each item follows the rules of `POST /v1/queues/{queue}/jobs` exactly (the same
//! [`jobs::prepare`] and [`crate::enqueue`]): its own validation, its own idempotency key, and a
//! 202 only once the broker confirmed that item's message. What a batch saves is round trips:
//! the valid items' rows are stored in one transaction, then all their messages are published
//! and their confirms awaited together.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::extract::{Path, int};
use super::jobs::{self, JobRequest};
use super::openapi::{BatchRequestDoc, BatchResponseDoc, ProblemDocument};
use super::{IntakeState, Problem};
use crate::enqueue::{Accepted, Prepared};
use crate::view::JobView;

/// Most jobs in one batch request.
pub(super) const MAX_BATCH_JOBS: usize = 1000;
/// Largest batch request body (bytes): 16 MiB, whatever the queue's payload limit.
const MAX_BATCH_BODY: usize = 16 * 1024 * 1024;

/// The request body: `{"jobs": [...]}`. Items are parsed one by one, so a malformed item is
/// that item's 400, not the whole request's.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchRequest<'a> {
    #[serde(borrow)]
    jobs: Vec<&'a RawValue>,
}

/// One item: the single endpoint's body, plus the `Idempotency-Key` header's value.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchItem {
    payload: Box<RawValue>,
    #[serde(default, deserialize_with = "int::delay_ms")]
    delay_ms: Option<u64>,
    #[serde(default, deserialize_with = "int::max_attempts")]
    max_attempts: Option<u32>,
    idempotency_key: Option<String>,
}

/// One item's answer.
#[derive(Serialize)]
#[serde(untagged)]
enum ItemResult {
    /// 202: the job (stored and confirmed by the broker, or replayed for its key).
    Accepted {
        status: u16,
        job: Box<JobView>,
        /// True when an earlier request with the same idempotency key made the job.
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        replayed: bool,
    },
    /// 4xx/5xx: nothing was accepted for this item.
    Refused {
        status: u16,
        problem: serde_json::Value,
    },
}

impl From<Result<Accepted, Problem>> for ItemResult {
    fn from(r: Result<Accepted, Problem>) -> Self {
        match r {
            Ok(a) => ItemResult::Accepted {
                status: StatusCode::ACCEPTED.as_u16(),
                job: Box::new(JobView::from(a.record)),
                replayed: a.replayed,
            },
            Err(p) => ItemResult::Refused {
                status: p.status().as_u16(),
                problem: p.document(),
            },
        }
    }
}

#[derive(Serialize)]
struct BatchResponse {
    results: Vec<ItemResult>,
}

fn batch_too_large(detail: String) -> Problem {
    Problem::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "batch-too-large",
        "Batch too large",
        detail,
    )
}

/// Parses one item and checks what the document's `BatchItem` schema states (fields, types,
/// ranges, the key's form): a failure is the whole request's 400, naming the item.
fn parse_item(raw: &RawValue) -> Result<(JobRequest, Option<String>), Problem> {
    super::extract::require_object(raw.get().as_bytes(), "a job")?;
    let item: BatchItem = serde_json::from_str(raw.get())
        .map_err(|e| Problem::bad_request(format!("invalid job JSON: {e}")))?;
    let key = item
        .idempotency_key
        .as_deref()
        .map(|k| jobs::token("idempotency_key", k))
        .transpose()?;
    let req = JobRequest {
        payload: item.payload,
        delay_ms: item.delay_ms,
        max_attempts: item.max_attempts,
    };
    jobs::validate(&req)?;
    Ok((req, key))
}

/// `POST /v1/queues/{queue}/jobs/batch`: 200 with one result per item (`{"status": 202,
/// "job": …}` or `{"status": 4xx/5xx, "problem": …}`), in request order. The request as a
/// whole is refused (a problem, nothing accepted) for an unknown queue (404), a non-JSON
/// content type (415), a body that is not `{"jobs": [...]}`, holds no job or an item that
/// breaks the document's `BatchItem` schema (400, naming the item: `jobs[3]: …`), more than
/// [`MAX_BATCH_JOBS`] jobs or a body past 16 MiB (413). What the schema cannot say is each
/// item's own result: a payload over the queue's limit (413), a reused idempotency key
/// (422), a full queue (429), the broker or the store unavailable (503).
/// `X-Correlation-ID` applies to every item; idempotency keys go in the items
/// (`idempotency_key`), not in a header.
#[utoipa::path(
    post,
    path = "/v1/queues/{queue}/jobs/batch",
    tag = "jobs",
    summary = "Submit up to 1,000 jobs",
    description = "One result per job, in request order; each job follows the single POST's rules (its own validation and idempotency key; 202 only once its own message is confirmed).",
    params(
        ("queue" = String, Path, description = "A configured queue"),
        ("X-Correlation-ID" = Option<String>, Header, description = "Correlation id for every job of the batch (default: each job's id)"),
        ("X-Concurrency-Key" = Option<String>, Header, description = "Concurrency key for every job of the batch (default: each payload's scalar at the queue's `concurrency_key` pointer; an item without one fails with `missing-concurrency-key`)"),
    ),
    request_body(content = BatchRequestDoc, content_type = "application/json",
        example = json!({"jobs": [{"payload": {"n": 1}}, {"payload": {"n": 2}, "delay_ms": 1000, "idempotency_key": "order-2"}]})),
    responses(
        (status = 200, description = "One result per job, in request order", body = BatchResponseDoc),
        (status = 400, description = "`malformed-request`: not `{\"jobs\": [...]}`, no job, or an Idempotency-Key header", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 404, description = "`unknown-queue`", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 413, description = "`batch-too-large`: over 1,000 jobs or 16 MiB", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 415, description = "`unsupported-media-type`", body = ProblemDocument, content_type = "application/problem+json"),
    )
)]
pub(super) async fn post_batch(
    State(state): State<Arc<IntakeState>>,
    Path(queue): Path<String>,
    request: Request,
) -> Result<Response, Problem> {
    // The request's own headers, not the copy a `HeaderMap` extractor would make.
    let (parts, body) = request.into_parts();
    let headers = &parts.headers;
    let q = jobs::configured_queue(&state, &queue)?;
    jobs::require_json(headers)?;
    if headers.contains_key("idempotency-key") {
        return Err(Problem::bad_request(
            "a batch takes no Idempotency-Key header; give each job its `idempotency_key`",
        ));
    }
    let correlation_id = jobs::token_header(headers, "x-correlation-id")?;
    let concurrency_key = jobs::token_header(headers, "x-concurrency-key")?;
    let limit = MAX_BATCH_JOBS
        .saturating_mul(q.max_payload_bytes + jobs::ENVELOPE_SLACK)
        .min(MAX_BATCH_BODY);
    let bytes = axum::body::to_bytes(body, limit).await.map_err(|_| {
        batch_too_large(format!(
            "a batch request body is at most {limit} bytes; send fewer jobs per request"
        ))
    })?;
    super::extract::require_object(&bytes, "the batch")?;
    let req: BatchRequest<'_> = serde_json::from_slice(&bytes)
        .map_err(|e| Problem::bad_request(format!("invalid batch JSON: {e}")))?;
    if req.jobs.is_empty() {
        return Err(Problem::bad_request("`jobs` holds no job"));
    }
    if req.jobs.len() > MAX_BATCH_JOBS {
        return Err(batch_too_large(format!(
            "a batch holds at most {MAX_BATCH_JOBS} jobs, this one {}",
            req.jobs.len()
        )));
    }

    // Every item must fit the schema, or nothing is accepted.
    let mut items = Vec::with_capacity(req.jobs.len());
    for (i, raw) in req.jobs.iter().enumerate() {
        let item = parse_item(raw)
            .map_err(|p| Problem::bad_request(format!("jobs[{i}]: {}", p.detail())))?;
        items.push(item);
    }
    // Each item's own limits; keep the valid ones with their place in the request.
    let mut results: Vec<Option<ItemResult>> = Vec::with_capacity(items.len());
    let mut valid: Vec<(usize, Prepared)> = Vec::with_capacity(items.len());
    for (i, (item, key)) in items.iter().enumerate() {
        match jobs::prepare(
            q,
            item,
            key.clone(),
            correlation_id.clone(),
            concurrency_key.clone(),
        ) {
            Ok(p) => {
                results.push(None);
                valid.push((i, p));
            }
            Err(p) => results.push(Some(Err(p).into())),
        }
    }
    drop(items);
    drop(req);
    drop(bytes);

    if !valid.is_empty() {
        // One transaction for all rows, then every publish in flight at once.
        let (places, jobs): (Vec<usize>, Vec<Prepared>) = valid.into_iter().unzip();
        let answers = state.enqueuer().enqueue_many(q, jobs).await;
        for (i, r) in places.into_iter().zip(answers) {
            results[i] = Some(r.map_err(Problem::from).into());
        }
    }
    let results = results
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err(Problem::unavailable("the job was not processed")).into()))
        .collect();
    Ok((StatusCode::OK, Json(BatchResponse { results })).into_response())
}
