//! How a job is shown: `GET /v1/jobs/{id}` and `warren job` (times as RFC 3339 UTC).

use serde::Serialize;
use uuid::Uuid;

use crate::store::{JobRecord, JobStatus, rfc3339_ms};

/// A job as `GET /v1/jobs/{id}` and `warren job` show it: times as RFC 3339 UTC, `result`
/// as JSON when the handler's result parses as JSON, else as a string.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(as = Job)]
pub struct JobView {
    /// Job id.
    pub id: Uuid,
    /// Queue name.
    pub queue: String,
    /// `queued`, `running`, `retrying`, `succeeded`, `dead` or `cancelled`.
    #[schema(value_type = JobStatus)]
    pub status: &'static str,
    /// Runs started so far.
    pub attempts: u32,
    /// Attempt budget.
    pub max_attempts: u32,
    /// The last failure's reason.
    pub last_error: Option<String>,
    /// The handler's result.
    #[schema(value_type = Option<serde_json::Value>)]
    pub result: Option<serde_json::Value>,
    /// Accepted at.
    #[schema(format = DateTime)]
    pub created_at: String,
    /// First run started at.
    #[schema(format = DateTime)]
    pub started_at: Option<String>,
    /// Reached a final status at.
    #[schema(format = DateTime)]
    pub finished_at: Option<String>,
    /// Next attempt due at.
    #[schema(format = DateTime)]
    pub next_attempt_at: Option<String>,
    /// Correlation id (from `X-Correlation-ID`, else the job id).
    pub correlation_id: Option<String>,
    /// When its dead letter was purged from the DLQ (`warren dlq purge`), for a `dead` job.
    #[schema(format = DateTime)]
    pub discarded_at: Option<String>,
    /// The schedule that enqueued the job (`[schedules.NAME]`); `null` for a job a client
    /// posted. Its idempotency key is `schedule:{name}:{tick}`.
    pub schedule: Option<String>,
}

impl From<JobRecord> for JobView {
    fn from(r: JobRecord) -> Self {
        // A result that is JSON is shown as JSON, anything else as a string.
        let result = r
            .result
            .map(|text| serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)));
        Self {
            id: r.id,
            queue: r.queue,
            status: r.status.as_str(),
            attempts: r.attempts,
            max_attempts: r.max_attempts,
            last_error: r.last_error,
            result,
            created_at: rfc3339_ms(r.created_at),
            started_at: r.started_at.map(rfc3339_ms),
            finished_at: r.finished_at.map(rfc3339_ms),
            next_attempt_at: r.next_attempt_at.map(rfc3339_ms),
            correlation_id: r.correlation_id,
            discarded_at: r.discarded_at.map(rfc3339_ms),
            schedule: r.schedule,
        }
    }
}
