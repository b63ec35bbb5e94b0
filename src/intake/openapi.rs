//! The OpenAPI 3.1 description of the HTTP API, served at `GET /openapi.json` (utoipa; the
//! JSON only, no UI assets).
//!
//! Each handler carries its own `#[utoipa::path]`; the route table (`super::routes`) lists
//! the handlers, so the document's paths are the routes the router serves; [`ApiDoc`] adds the
//! schemas of every request, response and problem type ([`spec`] joins the two). The types
//! here exist for the document only: the handlers read and write the same JSON with leaner
//! types of their own.

use std::borrow::Cow;
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::Method;
use serde::Serialize;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder, Server};
use utoipa::{OpenApi, PartialSchema, ToSchema};

use crate::dlq::ArchiveLine;
use crate::dlq::archive::ArchiveProperties;
use crate::overview::{Overview, QueueOverview};
use crate::store::JobStatus;
use crate::view::JobView;

/// Every problem `type` the API answers with: (slug, statuses and meaning). The document's
/// `type` is `/problems/{slug}`.
pub(crate) const PROBLEM_TYPES: &[(&str, &str)] = &[
    (
        "malformed-request",
        "400: bad JSON, missing `payload`, unknown field, bad `max_attempts`, `delay_ms`, header, path or query value, or an unknown query parameter; `detail` names it",
    ),
    ("unknown-queue", "404: no such configured queue"),
    ("unknown-job", "404: no job with this id"),
    ("not-found", "404: no such endpoint"),
    (
        "method-not-allowed",
        "405 with Allow: the endpoint does not take this method",
    ),
    (
        "request-timeout",
        "408: the request took too long to arrive",
    ),
    (
        "body-too-large",
        "413: the request body is over the endpoint's limit (64 KiB for a requeue)",
    ),
    (
        "not-cancellable",
        "409: the job runs or has finished; only queued or retrying jobs can be cancelled",
    ),
    (
        "request-in-progress",
        "409 with Retry-After: the first request with this Idempotency-Key still awaits its confirm",
    ),
    (
        "idempotency-key-reused",
        "422: the Idempotency-Key was used with a different request",
    ),
    (
        "missing-concurrency-key",
        "400: the queue limits jobs per concurrency key (`concurrency_key`) and the payload has no scalar at its pointer, nor did the request send X-Concurrency-Key; nothing was published",
    ),
    (
        "payload-too-large",
        "413: `payload` is over the queue's `max_payload_bytes`",
    ),
    (
        "batch-too-large",
        "413: more than 1,000 jobs or 16 MiB in one batch",
    ),
    (
        "unsupported-media-type",
        "415: send Content-Type: application/json",
    ),
    (
        "queue-full",
        "429 with Retry-After: the queue is at its `max_length`",
    ),
    (
        "unavailable",
        "503 with Retry-After: broker down, publish not confirmed, or store unreachable; nothing was accepted",
    ),
    ("dlq-failed", "500: a DLQ operation failed"),
    ("internal-error", "500: warren failed; the log says why"),
    (
        "http-error",
        "another 4xx the HTTP layer answered; `detail` says why",
    ),
    (
        "unauthorized",
        "401 with WWW-Authenticate: no bearer token, or one that is not valid (only when tokens are configured)",
    ),
    (
        "forbidden",
        "403 with WWW-Authenticate: the token's scope is not enough (DLQ endpoints, cancel, the bulk actions, pause and resume need `admin`)",
    ),
];

/// The problem `type` URI (documentation type; see [`PROBLEM_TYPES`]).
pub(crate) struct ProblemType;

impl PartialSchema for ProblemType {
    fn schema() -> RefOr<Schema> {
        let table: Vec<String> = PROBLEM_TYPES
            .iter()
            .map(|(slug, meaning)| format!("- `/problems/{slug}`: {meaning}"))
            .collect();
        ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some(format!(
                "Which problem this is, a relative URI `/problems/{{slug}}`:\n{}",
                table.join("\n")
            )))
            .enum_values(Some(
                PROBLEM_TYPES
                    .iter()
                    .map(|(slug, _)| format!("/problems/{slug}")),
            ))
            // Names for generated enums (`UNKNOWN_QUEUE` rather than `VALUE_1`).
            .extensions(Some(
                [(
                    "x-enum-varnames",
                    serde_json::Value::from(
                        PROBLEM_TYPES
                            .iter()
                            .map(|(slug, _)| slug.to_ascii_uppercase().replace('-', "_"))
                            .collect::<Vec<_>>(),
                    ),
                )]
                .into_iter()
                .collect(),
            ))
            .into()
    }
}

impl ToSchema for ProblemType {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("ProblemType")
    }
}

/// An RFC 7807 problem document (`application/problem+json`), the body of every error.
#[derive(Serialize, ToSchema)]
#[schema(as = Problem)]
pub(crate) struct ProblemDocument {
    /// `/problems/{slug}`; see [`ProblemType`].
    #[serde(rename = "type")]
    #[schema(value_type = ProblemType)]
    kind: String,
    /// A short, fixed summary of the problem type.
    #[schema(example = "Unknown queue")]
    title: String,
    /// The HTTP status.
    #[schema(example = 404)]
    status: u16,
    /// What went wrong with this request, for a human.
    #[schema(example = "no queue named `reprots` is configured")]
    detail: String,
}

/// The body of `POST /v1/queues/{queue}/jobs/batch`.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = BatchRequest)]
pub(crate) struct BatchRequestDoc {
    /// 1 to 1,000 jobs. An item that breaks this schema is the whole request's 400 (nothing
    /// accepted); what the schema cannot say (the queue's payload limit, a reused key, a
    /// full queue) is that item's own result.
    #[schema(min_items = 1, max_items = 1000)]
    jobs: Vec<BatchItemDoc>,
}

/// One job of a batch: the single POST's body plus its idempotency key.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = BatchItem)]
pub(crate) struct BatchItemDoc {
    /// Any JSON; becomes the message body byte for byte (at most the queue's
    /// `max_payload_bytes`, else this item's 413).
    #[schema(value_type = serde_json::Value)]
    payload: serde_json::Value,
    /// Wait this long before the first attempt (ms, 0 to 1,048,575,000: about 12 days).
    #[schema(minimum = 0, maximum = 1_048_575_000)]
    delay_ms: Option<u64>,
    /// Override the queue's attempt budget (1 to 100).
    #[schema(minimum = 1, maximum = 100)]
    max_attempts: Option<u32>,
    /// This job's idempotency key (the batch takes no Idempotency-Key header): 1 to 255
    /// printable ASCII characters.
    #[schema(pattern = "^[ -~]{1,255}$", max_length = 255, min_length = 1)]
    idempotency_key: Option<String>,
}

/// The answer to a batch: one result per job, in request order.
#[derive(Serialize, ToSchema)]
#[schema(as = BatchResponse)]
pub(crate) struct BatchResponseDoc {
    /// One per job, in request order.
    results: Vec<BatchItemResultDoc>,
}

/// One job's result in a batch: `{"status": 202, "job": …}` (with `"replayed": true` for an
/// idempotent replay) or `{"status": 4xx/5xx, "problem": …}`.
#[derive(Serialize, ToSchema)]
#[schema(as = BatchItemResult)]
pub(crate) struct BatchItemResultDoc {
    /// 202 when accepted, else the problem's status.
    status: u16,
    /// The job, when accepted.
    job: Option<JobView>,
    /// True when an earlier request with the same idempotency key made the job.
    replayed: Option<bool>,
    /// Why the job was refused; nothing was accepted for it.
    problem: Option<ProblemDocument>,
}

/// The answer to `GET /v1/queues/{queue}/dead`.
#[derive(Serialize, ToSchema)]
pub(crate) struct DeadLetters {
    /// The work queue.
    queue: String,
    /// Its dead-letter queue, `{queue}.dlq`.
    dlq: String,
    /// Dead letters waiting (null when the DLQ does not exist).
    depth: Option<u64>,
    /// Up to `limit` dead letters from the head, in the archive format (dlq/README.md).
    dead_letters: Vec<ArchiveLine>,
}

/// The answer to `POST /v1/queues/{queue}/dead/requeue`.
#[derive(Serialize, ToSchema)]
pub(crate) struct RequeueResult {
    /// The work queue.
    queue: String,
    /// Dead letters moved back to the work queue.
    moved: u64,
    /// Dead letters that did not match the filter and stay.
    kept: u64,
}

/// The answer to `POST /v1/queues/{queue}/dead/purge`.
#[derive(Serialize, ToSchema)]
pub(crate) struct PurgeResult {
    /// The work queue.
    queue: String,
    /// Dead letters deleted for good.
    purged: u64,
}

/// The answer to `GET /healthz`.
#[derive(Serialize, ToSchema)]
pub(crate) struct Health {
    /// Always `ok`.
    #[schema(example = "ok")]
    status: String,
}

/// The answer to `GET /readyz`.
#[derive(Serialize, ToSchema)]
pub(crate) struct Readiness {
    /// `ready` or `unavailable`.
    #[schema(example = "ready")]
    status: String,
    /// `ok`, or why the broker cannot be reached (no credentials).
    #[schema(example = "ok")]
    broker: String,
    /// The broker node this process is connected to (or will try first), as its AMQP URL
    /// with the password hidden: on a cluster, which node a process uses.
    #[schema(example = "amqp://guest:***@127.0.0.1:5672/%2f")]
    broker_node: String,
    /// `ok`, or why the store cannot be reached.
    #[schema(example = "ok")]
    store: String,
    /// `declared` or `pending`.
    #[schema(example = "declared")]
    topology: String,
}

/// The OpenAPI document of the v1 API without its paths: its description, schemas and tags.
/// The paths come from the route table ([`super::routes::RoutePaths`]); [`spec`] joins them.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "warren",
        description = "HTTP intake of warren, a work-queue job backend on RabbitMQ: jobs are accepted (202) only once the broker confirmed their persistent message. Every error is an RFC 7807 / RFC 9457 problem document (`application/problem+json`, see `ProblemType`), including what the HTTP layer refuses (a 405 with `Allow`, an unknown route); bad input changes nothing. Unknown query parameters are refused (400) on every operation. Integers are JSON Schema integers (`30.0` is 30)."
    ),
    components(schemas(
        super::jobs::JobRequest,
        JobView,
        JobStatus,
        BatchRequestDoc,
        BatchItemDoc,
        BatchResponseDoc,
        BatchItemResultDoc,
        Overview,
        QueueOverview,
        crate::overview::QueueRates,
        crate::overview::RateLimitView,
        DeadLetters,
        ArchiveLine,
        ArchiveProperties,
        super::dead::RequeueRequest,
        super::pause::PauseState,
        super::schedules::ScheduleList,
        crate::schedule::ScheduleView,
        RequeueResult,
        PurgeResult,
        super::search::JobList,
        super::search::FilterBody,
        super::bulk::BulkRequestDoc,
        super::bulk::ByIds,
        super::bulk::ByFilter,
        super::bulk::CancelResult,
        super::bulk::BulkRequeueResult,
        Health,
        Readiness,
        ProblemDocument,
        ProblemType,
    )),
    tags(
        (name = "jobs", description = "Submit jobs and follow them"),
        (name = "queues", description = "What waits where"),
        (name = "schedules", description = "Periodic jobs (`[schedules.NAME]`)"),
        (name = "dead letters", description = "The DLQs over HTTP, mirroring `warren dlq`"),
        (name = "operations", description = "Health, readiness, metrics and this document"),
    )
)]
pub(crate) struct ApiDoc;

/// The document's static part: [`ApiDoc`] with the paths of every route in the route table
/// ([`super::routes::ROUTES`]), each operation as its handler's `#[utoipa::path]` describes it.
pub(crate) fn spec() -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    doc.merge(super::routes::RoutePaths::openapi());
    doc
}

/// Queue names as configuration allows them (`config::validate_queue_name`): 1 to 200
/// letters, digits, `_`, `-` and `.` (a name that is not configured is a 404).
pub(crate) const QUEUE_PATTERN: &str = "^[A-Za-z0-9_.-]{1,200}$";
/// `Idempotency-Key`, `X-Correlation-ID` and `X-Concurrency-Key` headers: 1 to 255 printable ASCII characters
/// that neither start nor end with a space (HTTP strips those, RFC 9110 §5.5), as the
/// intake's `token` check accepts them; they travel as AMQP short strings.
pub(crate) const HEADER_TOKEN_PATTERN: &str = "^[!-~]([ -~]{0,253}[!-~])?$";

/// The document as this server runs it: the server path `/`, warren's version, the exact
/// form of each path and header parameter, the `400` every operation may answer (an
/// unknown query parameter, a malformed path), and, only when `tokens` (API tokens are
/// configured, DESIGN §9), the bearer-token security of each operation from
/// the route table ([`super::routes::scope`], as the middleware reads it): its scope as the
/// requirement's role (OpenAPI 3.1 §4.8.30), and its 401/403 answers. Without tokens no
/// operation has a security requirement, because none is checked.
pub(crate) fn document(tokens: bool) -> utoipa::openapi::OpenApi {
    let mut doc = spec();
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    doc.servers = Some(vec![Server::new("/")]);
    if tokens && let Some(c) = doc.components.as_mut() {
        c.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
    let problem = |what: &str| {
        RefOr::T(
            ResponseBuilder::new()
                .description(what)
                .content(
                    "application/problem+json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("Problem")))
                        .build(),
                )
                .build(),
        )
    };
    for (path, item) in doc.paths.paths.iter_mut() {
        let ops = [
            (Method::GET, item.get.as_mut()),
            (Method::POST, item.post.as_mut()),
            (Method::DELETE, item.delete.as_mut()),
        ];
        for (method, op) in ops {
            let Some(op) = op else { continue };
            for p in op.parameters.iter_mut().flatten() {
                let schema = match p.name.as_str() {
                    "queue" => ObjectBuilder::new()
                        .schema_type(Type::String)
                        .pattern(Some(QUEUE_PATTERN))
                        .min_length(Some(1))
                        .max_length(Some(200)),
                    "id" => ObjectBuilder::new().schema_type(Type::String).format(Some(
                        utoipa::openapi::SchemaFormat::KnownFormat(
                            utoipa::openapi::KnownFormat::Uuid,
                        ),
                    )),
                    "created_after" | "created_before" => ObjectBuilder::new()
                        .schema_type(Type::String)
                        .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(
                            utoipa::openapi::KnownFormat::DateTime,
                        ))),
                    "Idempotency-Key" | "X-Correlation-ID" | "X-Concurrency-Key" => {
                        ObjectBuilder::new()
                            .schema_type(Type::String)
                            .pattern(Some(HEADER_TOKEN_PATTERN))
                            .min_length(Some(1))
                            .max_length(Some(255))
                    }
                    _ => continue,
                };
                p.schema = Some(schema.into());
            }
            op.responses
                .responses
                .entry("400".into())
                .or_insert_with(|| {
                    problem("`malformed-request`: an unknown query parameter or a malformed path")
                });
            if !tokens {
                continue;
            }
            let Some(scope) = super::routes::scope(&method, path) else {
                continue;
            };
            op.security = Some(vec![SecurityRequirement::new("bearer", [scope.as_str()])]);
            op.responses.responses.insert(
                "401".into(),
                problem("`unauthorized` (with WWW-Authenticate): no valid bearer token"),
            );
            if scope == crate::auth::Scope::Admin {
                op.responses.responses.insert(
                    "403".into(),
                    problem(
                        "`forbidden` (with WWW-Authenticate): the token lacks the `admin` scope",
                    ),
                );
            }
        }
    }
    doc
}

/// [`document`] as JSON, with OpenAPI links (3.1 §4.8.20) from an accepted job to what can
/// be done with it next, so that clients and tools (schemathesis' stateful phase) follow
/// `id` from the answer to `GET /v1/jobs/{id}` and `POST /v1/jobs/{id}/cancel`. (The links
/// are written as JSON: utoipa 5.5 spells a link's `operationId` as `operation_id`.)
pub(crate) fn document_json(tokens: bool) -> serde_json::Value {
    let mut doc = serde_json::to_value(document(tokens)).unwrap_or_default();
    // (Not from a batch: its first item may have been refused, with no job to follow.)
    let targets = [("/v1/queues/{queue}/jobs", "202", "/id")];
    for (path, status, pointer) in targets {
        let resp = &mut doc["paths"][path]["post"]["responses"][status];
        if resp.is_object() {
            let id = format!("$response.body#{pointer}");
            resp["links"] = serde_json::json!({
                "GetJob": { "operationId": "get_job", "parameters": { "id": id } },
                "CancelJob": { "operationId": "cancel_job", "parameters": { "id": id } },
            });
        }
    }
    doc
}

/// `GET /openapi.json`: this API's OpenAPI 3.1 document, as this server runs (see
/// [`document`]).
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "operations",
    summary = "This OpenAPI document",
    responses((status = 200, description = "The OpenAPI 3.1 document", content_type = "application/json"))
)]
pub(super) async fn openapi_json(
    State(state): State<Arc<super::IntakeState>>,
) -> Json<serde_json::Value> {
    Json(document_json(!state.config.auth.tokens.is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every slug handed to `Problem::new` in the intake's sources, plus the helpers'.
    fn slugs_in_sources() -> Vec<String> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/intake");
        let mut slugs = vec!["malformed-request".to_owned(), "unavailable".to_owned()];
        let entries = std::fs::read_dir(&dir).expect("src/intake is readable");
        // The API's own files (the dashboard's pages, in `ui/`, answer HTML, not problems).
        for entry in entries.flatten() {
            if entry.path().extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let text = std::fs::read_to_string(entry.path()).expect("source is readable");
            for (at, _) in text.match_indices("Problem::new(") {
                // The first string literal after `Problem::new(` is the slug (the status is
                // a `StatusCode::…` constant).
                let rest = &text[at..];
                if let Some(open) = rest.find('"') {
                    let lit = &rest[open + 1..];
                    if let Some(close) = lit.find('"') {
                        let slug = &lit[..close];
                        // (This file's own `Problem::new(` above is not a call.)
                        if !slug.is_empty()
                            && slug.bytes().all(|b| b.is_ascii_lowercase() || b == b'-')
                        {
                            slugs.push(slug.to_owned());
                        }
                    }
                }
            }
        }
        slugs.sort();
        slugs.dedup();
        slugs
    }

    #[test]
    fn every_problem_type_in_the_code_is_documented() {
        let documented: Vec<&str> = PROBLEM_TYPES.iter().map(|(s, _)| *s).collect();
        for slug in slugs_in_sources() {
            assert!(
                documented.contains(&slug.as_str()),
                "problem type `{slug}` is used but missing from PROBLEM_TYPES (the OpenAPI document)"
            );
        }
    }

    #[test]
    fn the_document_serializes_and_names_its_version() {
        let json = document_json(false);
        assert_eq!(
            json["paths"]["/v1/queues/{queue}/jobs"]["post"]["responses"]["202"]["links"]["GetJob"]
                ["operationId"],
            "get_job"
        );
        assert_eq!(json["openapi"], "3.1.0");
        assert_eq!(json["info"]["version"], env!("CARGO_PKG_VERSION"));
        assert!(json["components"]["schemas"]["ProblemType"]["enum"].is_array());
    }
}
