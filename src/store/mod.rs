//! The status store: job status, claims (leases) and idempotency keys (DESIGN §7).
//!
//! [`Store`] is the one interface the intake and the workers use; [`sqlite::SqliteStore`] is
//! the embedded default. All SQL lives in the adapter modules. Times are milliseconds since the
//! Unix epoch ([`now_ms`]).

pub mod sqlite;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use uuid::Uuid;

use crate::error::{Error, Result};

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    /// Accepted and waiting in its work queue (or a delay).
    Queued,
    /// Claimed by a worker and running.
    Running,
    /// Failed, waiting for its next attempt.
    Retrying,
    /// Done; never runs again.
    Succeeded,
    /// Out of attempts or failed permanently; its message is in `{queue}.dlq`.
    Dead,
    /// Cancelled before it started.
    Cancelled,
}

impl JobStatus {
    /// The lowercase name stored and shown over HTTP.
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Running => "running",
            JobStatus::Retrying => "retrying",
            JobStatus::Succeeded => "succeeded",
            JobStatus::Dead => "dead",
            JobStatus::Cancelled => "cancelled",
        }
    }

    /// Parses [`JobStatus::as_str`] output.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "queued" => JobStatus::Queued,
            "running" => JobStatus::Running,
            "retrying" => JobStatus::Retrying,
            "succeeded" => JobStatus::Succeeded,
            "dead" => JobStatus::Dead,
            "cancelled" => JobStatus::Cancelled,
            _ => return None,
        })
    }

    /// True for `succeeded`, `dead` and `cancelled`: a delivery of such a job is acked, not run.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            JobStatus::Succeeded | JobStatus::Dead | JobStatus::Cancelled
        )
    }
}

/// A job as the store keeps it; `GET /v1/jobs/{id}` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRecord {
    /// Job id.
    pub id: Uuid,
    /// Queue name.
    pub queue: String,
    /// Current status.
    pub status: JobStatus,
    /// Runs started so far.
    pub attempts: u32,
    /// Attempt budget.
    pub max_attempts: u32,
    /// The last failure's reason.
    pub last_error: Option<String>,
    /// The handler's result (text, truncated to 64 KiB).
    pub result: Option<String>,
    /// Correlation id.
    pub correlation_id: Option<String>,
    /// The client's idempotency key.
    pub idempotency_key: Option<String>,
    /// Accepted at (ms).
    pub created_at: i64,
    /// First run started at (ms).
    pub started_at: Option<i64>,
    /// Reached a final status at (ms).
    pub finished_at: Option<i64>,
    /// Next attempt is due at (ms), while `queued` with a delay or `retrying`.
    pub next_attempt_at: Option<i64>,
    /// When its dead letter was purged (ms), for a `dead` job.
    pub discarded_at: Option<i64>,
}

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
    pub created_at: String,
    /// First run started at.
    pub started_at: Option<String>,
    /// Reached a final status at.
    pub finished_at: Option<String>,
    /// Next attempt due at.
    pub next_attempt_at: Option<String>,
    /// Correlation id (from `X-Correlation-ID`, else the job id).
    pub correlation_id: Option<String>,
    /// When its dead letter was purged from the DLQ (`warren dlq purge`), for a `dead` job.
    pub discarded_at: Option<String>,
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
        }
    }
}

/// A job to insert at intake.
#[derive(Debug, Clone)]
pub struct NewJob {
    /// Job id.
    pub id: Uuid,
    /// Queue name.
    pub queue: String,
    /// Attempt budget.
    pub max_attempts: u32,
    /// Correlation id.
    pub correlation_id: Option<String>,
    /// The client's idempotency key.
    pub idempotency_key: Option<String>,
    /// Hash of the request (for idempotency checks).
    pub request_hash: Option<String>,
    /// Now (ms).
    pub created_at: i64,
    /// When the first attempt is due (ms), for delayed jobs.
    pub next_attempt_at: Option<i64>,
}

/// A worker's request to run a delivered job.
#[derive(Debug, Clone)]
pub struct ClaimRequest<'a> {
    /// Job id.
    pub id: Uuid,
    /// Queue it was delivered from (used if the store has no row yet).
    pub queue: &'a str,
    /// Attempt budget from the message (used if the store has no row yet).
    pub max_attempts: u32,
    /// Correlation id from the message (used if the store has no row yet).
    pub correlation_id: Option<&'a str>,
    /// Who claims: a worker id unique per process.
    pub owner: &'a str,
    /// Now (ms).
    pub now: i64,
    /// How long the claim (lease) lasts: the queue's timeout plus a margin.
    pub lease: Duration,
}

/// The answer to a claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The caller owns the job now and must run it; `attempt` is this run's number (1-based)
    /// and `max_attempts` the job's budget.
    Claimed {
        /// This run's attempt number.
        attempt: u32,
        /// The job's attempt budget.
        max_attempts: u32,
    },
    /// The job already reached this final status: ack the delivery, do not run it.
    Final(JobStatus),
    /// Another worker holds a live lease until this time (ms).
    Busy {
        /// Lease end (ms).
        until: i64,
    },
}

/// The answer to [`Store::insert`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inserted {
    /// The job is new.
    New,
    /// A job with the same idempotency key exists in this queue.
    Existing {
        /// That job.
        record: Box<JobRecord>,
        /// Its request hash.
        request_hash: Option<String>,
        /// False while its publish still awaits the broker's confirm.
        accepted: bool,
    },
}

/// The answer to [`Store::cancel`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cancel {
    /// The job was `queued` or `retrying` and is `cancelled` now.
    Cancelled(Box<JobRecord>),
    /// The job is in this status and cannot be cancelled.
    Conflict(JobStatus),
    /// No such job.
    NotFound,
}

/// The store interface. Implementations must make [`Store::claim`] atomic: of two concurrent
/// claims for one job, exactly one gets [`Claim::Claimed`].
#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    /// Records a new job as `queued`. A job with an idempotency key is inserted unless one
    /// with the same key exists in its queue, which is returned instead (atomically: of two
    /// concurrent inserts with one key, one gets [`Inserted::New`]). Keyed jobs start
    /// un-accepted until [`Store::mark_accepted`].
    ///
    /// # Errors
    /// [`crate::ErrorKind::Store`] when the store is unreachable or read-only.
    async fn insert(&self, job: &NewJob) -> Result<Inserted>;

    /// [`Store::insert`] for many jobs in one transaction (one commit for the batch): the
    /// answers are in the order of `jobs`, each as `insert` would give it (a later job with
    /// the key of an earlier one in the same batch gets [`Inserted::Existing`]). All or
    /// nothing: on an error no job of the batch is stored.
    ///
    /// # Errors
    /// [`crate::ErrorKind::Store`] when the store is unreachable or read-only.
    async fn insert_many(&self, jobs: &[NewJob]) -> Result<Vec<Inserted>>;

    /// Marks a keyed job's publish as confirmed, so requests repeating its key replay it.
    async fn mark_accepted(&self, id: Uuid) -> Result<()>;

    /// Removes a job whose publish failed (the client got a 503, so it was never accepted).
    /// Only removes it while it is still `queued` and never ran.
    async fn forget_unpublished(&self, id: Uuid) -> Result<()>;

    /// The job with this id.
    async fn get(&self, id: Uuid) -> Result<Option<JobRecord>>;

    /// Claims a delivered job for running (see [`Claim`]); creates the row from the message
    /// when the store has none (a message published by hand or whose row was pruned).
    async fn claim(&self, req: &ClaimRequest<'_>) -> Result<Claim>;

    /// Records success for a job claimed by `owner`: `succeeded`, result kept.
    async fn succeed(&self, id: Uuid, owner: &str, result: Option<&str>, now: i64) -> Result<()>;

    /// Records a failed attempt of a job claimed by `owner`: `retrying`, with the error and
    /// when the next attempt is due (ms); the lease is released.
    async fn retry(&self, id: Uuid, owner: &str, error: &str, next_attempt_at: i64) -> Result<()>;

    /// Cancels a job that has not started (`queued` or `retrying`).
    async fn cancel(&self, id: Uuid, now: i64) -> Result<Cancel>;

    /// Deletes finished jobs (and so their idempotency keys) that finished before `cutoff`
    /// (ms); returns how many.
    async fn prune(&self, cutoff: i64) -> Result<u64>;

    /// Records a final failure: `dead`, with the error.
    async fn dead(&self, id: Uuid, error: &str, now: i64) -> Result<()>;

    /// Gives a claim back without running to completion (shutdown, hand-back): the job returns
    /// to `queued` and the next delivery may claim it at once.
    async fn release(&self, id: Uuid, owner: &str) -> Result<()>;

    /// Brings dead jobs back for a DLQ replay or requeue: `dead` → `queued` in `queue`,
    /// attempts reset to 0, `discarded_at` cleared. Other statuses are left alone (a job that
    /// succeeded stays succeeded, so a replayed copy is skipped); unknown ids are fine (the
    /// worker creates their row).
    async fn revive(&self, ids: &[Uuid], queue: &str) -> Result<()>;

    /// Marks dead jobs whose dead letters were purged: `discarded_at` = `now` (ms).
    async fn discard(&self, ids: &[Uuid], now: i64) -> Result<()>;

    /// Checks the store answers (for `/readyz`).
    async fn ping(&self) -> Result<()>;

    /// Jobs now `retrying` (failed at least once, next attempt waiting in the delay levels),
    /// by queue name; queues without any are absent. For `GET /v1/queues` and `warren queues`.
    ///
    /// # Errors
    /// [`crate::ErrorKind::Store`] when the store is unreachable.
    async fn retrying_counts(&self) -> Result<std::collections::BTreeMap<String, u64>>;
}

/// Opens the store named by `url`: `sqlite://PATH` (created if missing, WAL) or
/// `sqlite::memory:`.
///
/// # Errors
/// [`crate::ErrorKind::Store`] when it cannot be opened or migrated, or the scheme is unknown.
pub async fn open(url: &str) -> Result<Arc<dyn Store>> {
    if url.starts_with("sqlite:") {
        return Ok(Arc::new(sqlite::SqliteStore::open(url).await?));
    }
    Err(Error::store(format!(
        "unsupported store URL `{}`: use sqlite://PATH (PostgreSQL support is planned)",
        crate::redact::redact(url)
    )))
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    to_ms(SystemTime::now())
}

/// Milliseconds since the Unix epoch of `t`.
pub fn to_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// RFC 3339 UTC text (millisecond precision) of a time in ms since the epoch.
pub fn rfc3339_ms(ms: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    humantime::format_rfc3339_millis(t).to_string()
}
