//! What the store keeps and answers: jobs, their statuses, and the answers of its operations.
//! Times are milliseconds since the Unix epoch.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;
use uuid::Uuid;

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, utoipa::ToSchema)]
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

    /// Every status, in the order of a job's life.
    pub const ALL: [JobStatus; 6] = [
        JobStatus::Queued,
        JobStatus::Running,
        JobStatus::Retrying,
        JobStatus::Succeeded,
        JobStatus::Dead,
        JobStatus::Cancelled,
    ];

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
    /// The schedule that enqueued the job (`[schedules.NAME]`), `None` for a job posted by a
    /// client.
    pub schedule: Option<String>,
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
    /// The payload, kept for a delayed job (with `next_attempt_at`) so that the retry sweeper
    /// can publish it again if its delayed message is lost; `None` for a job published to
    /// its work queue at once.
    pub resend_payload: Option<Vec<u8>>,
    /// The schedule that enqueued the job (`[schedules.NAME]`), `None` for a job posted by a
    /// client.
    pub schedule: Option<String>,
}

/// A job whose delayed message is overdue (see [`crate::store::JobStore::take_overdue`]):
/// what it takes to publish it again. The message's attempt is `attempts + 1`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Overdue {
    /// Job id.
    pub id: Uuid,
    /// Its work queue.
    pub queue: String,
    /// Runs started so far.
    pub attempts: u32,
    /// Attempt budget.
    pub max_attempts: u32,
    /// Correlation id.
    pub correlation_id: Option<String>,
    /// The client's idempotency key.
    pub idempotency_key: Option<String>,
    /// The payload JSON, as posted.
    pub payload: Vec<u8>,
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
    /// ([`super::JobStore::claim_keyed`] only) The job's concurrency key already has its
    /// limit of jobs running with a live lease: nothing changed (attempts included).
    KeyBusy,
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

/// A job row with everything the store keeps, for moving jobs between stores
/// ([`crate::store::Maintenance::export`], [`crate::store::Maintenance::import`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRow {
    /// The job as it is shown (its schedule included: [`JobRecord::schedule`]).
    pub record: JobRecord,
    /// Hash of the request, for `Idempotency-Key` checks.
    pub request_hash: Option<String>,
    /// False while a keyed job's publish awaits its confirm.
    pub accepted: bool,
    /// The worker holding its claim.
    pub lease_owner: Option<String>,
    /// The claim is live until then (ms).
    pub lease_until: Option<i64>,
    /// The payload kept while the job waits in the delay levels.
    pub resend_payload: Option<Vec<u8>>,
}

/// What `warren store status` shows.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct StoreStatus {
    /// `sqlite` or `postgres`.
    pub backend: &'static str,
    /// The newest migration applied to the database (`None` before the first).
    pub schema_version: Option<i64>,
    /// The newest migration this binary carries.
    pub binary_schema_version: i64,
    /// Jobs by queue, then by status name.
    pub counts: BTreeMap<String, BTreeMap<String, u64>>,
    /// Jobs in all.
    pub total: u64,
    /// The oldest job's `created_at` (ms).
    pub oldest_created_at: Option<i64>,
}

/// A claim the store granted in a batch: the job and its attempt numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Claimed {
    pub(crate) id: Uuid,
    pub(crate) attempt: u32,
    pub(crate) max_attempts: u32,
}

/// A [`ClaimRequest`] that can wait in a queue for a group commit.
#[derive(Debug, Clone)]
pub(crate) struct OwnedClaim {
    pub(crate) id: Uuid,
    pub(crate) queue: String,
    pub(crate) max_attempts: u32,
    pub(crate) correlation_id: Option<String>,
    pub(crate) owner: String,
    pub(crate) now: i64,
    /// `now` + the lease (ms).
    pub(crate) lease_until: i64,
}

impl OwnedClaim {
    pub(crate) fn new(req: &ClaimRequest<'_>) -> Self {
        Self {
            id: req.id,
            queue: req.queue.to_owned(),
            max_attempts: req.max_attempts,
            correlation_id: req.correlation_id.map(str::to_owned),
            owner: req.owner.to_owned(),
            now: req.now,
            lease_until: req
                .now
                .saturating_add(i64::try_from(req.lease.as_millis()).unwrap_or(i64::MAX)),
        }
    }
}

/// A worker's success, waiting for a group commit.
#[derive(Debug, Clone)]
pub(crate) struct Success {
    pub(crate) id: Uuid,
    pub(crate) owner: String,
    pub(crate) result: Option<String>,
    pub(crate) now: i64,
}

/// A count stored as a signed integer, as a `u32` (0 when out of range).
pub(crate) fn to_u32(v: i64) -> u32 {
    u32::try_from(v).unwrap_or(0)
}

/// Which jobs a search ([`crate::store::JobSearch::list`]) or a bulk action takes: every
/// condition that is set must hold (`GET /v1/jobs`, `warren jobs list`, DESIGN §3).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobFilter {
    /// Only jobs of this queue.
    pub queue: Option<String>,
    /// Only jobs in one of these statuses (empty: any status).
    pub statuses: Vec<JobStatus>,
    /// Only jobs created at or after this time (ms).
    pub created_after: Option<i64>,
    /// Only jobs created before this time (ms). The search also bounds the job id (UUIDv7,
    /// made at creation) to before this time plus 1 s, so that an old range is an index seek
    /// rather than a walk from the newest job; a job whose id is more than 1 s later than
    /// its `created_at` (a row written by hand, or by hosts whose clocks differ more) may be
    /// left out.
    pub created_before: Option<i64>,
    /// Only jobs with exactly this correlation id.
    pub correlation_id: Option<String>,
    /// Only jobs with exactly this idempotency key.
    pub idempotency_key: Option<String>,
    /// Only jobs whose `last_error` contains this text, ignoring case (ASCII letters only
    /// on SQLite; `%` and `_` are plain characters).
    pub error_contains: Option<String>,
    /// Only jobs enqueued by the schedule of exactly this name (`[schedules.NAME]`).
    pub schedule: Option<String>,
}

/// Where a page of a search starts: after the last job of the page before, as
/// [`JobPage::next_cursor`] gave it. Opaque to clients: [`Cursor::encode`] is a
/// base64url (unpadded, no stray bits) text of a version byte and the last job's id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    /// The last job of the page before; the next page holds older jobs (smaller ids).
    pub(crate) before: uuid::Uuid,
}

/// The version byte that starts an encoded [`Cursor`].
const CURSOR_V1: u8 = 1;

impl Cursor {
    /// The cursor of a page that starts after (older than) job `id`.
    pub fn after(id: uuid::Uuid) -> Self {
        Self { before: id }
    }

    /// The text clients pass back (`cursor=`, `--cursor`): 17 bytes as 23 base64url
    /// characters (`^A[Q-T][A-Za-z0-9_-]{20}[AEIMQUYcgkosw048]$`).
    pub fn encode(&self) -> String {
        use base64::Engine as _;
        let mut bytes = Vec::with_capacity(17);
        bytes.push(CURSOR_V1);
        bytes.extend_from_slice(self.before.as_bytes());
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    }

    /// Reads [`Cursor::encode`]'s text; `None` for anything else (a malformed cursor is the
    /// caller's 400).
    pub fn decode(text: &str) -> Option<Self> {
        use base64::Engine as _;
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(text)
            .ok()?;
        match bytes.split_first() {
            Some((&CURSOR_V1, id)) => Some(Self {
                before: uuid::Uuid::from_slice(id).ok()?,
            }),
            _ => None,
        }
    }
}

/// Fewest and most jobs one page of a search holds.
pub const PAGE_LIMITS: std::ops::RangeInclusive<u32> = 1..=500;
/// Jobs in a page when the caller does not say.
pub const DEFAULT_PAGE_LIMIT: u32 = 50;

/// One page of a search: newest first (by id: UUIDv7 ids sort by creation time).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobPage {
    /// Up to the page's limit of jobs, newest first.
    pub jobs: Vec<JobRecord>,
    /// Where the next (older) page starts; `None` on the last page.
    pub next_cursor: Option<Cursor>,
}

/// Jobs by queue, then by status (statuses without jobs are absent).
pub type StatusCounts = BTreeMap<String, BTreeMap<JobStatus, u64>>;

/// One queue's jobs in progress ([`super::JobStore::active_counts`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ActiveCounts {
    /// Jobs `running`: claimed by a worker whose lease has not ended.
    pub running: u64,
    /// Jobs `retrying`: failed at least once, the next attempt waiting in the delay levels.
    pub retrying: u64,
}

impl ActiveCounts {
    /// Folds `(queue, status, count)` rows (statuses `running` and `retrying`) into counts by
    /// queue; another status, or a negative count, adds nothing.
    pub(crate) fn by_queue(rows: Vec<(String, String, i64)>) -> BTreeMap<String, Self> {
        let mut out = BTreeMap::<String, Self>::new();
        for (queue, status, n) in rows {
            let n = u64::try_from(n).unwrap_or(0);
            let counts = out.entry(queue).or_default();
            match status.as_str() {
                "running" => counts.running += n,
                "retrying" => counts.retrying += n,
                _ => {}
            }
        }
        out
    }
}

/// A schedule's shared state (see [`crate::store::Schedules`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScheduleState {
    /// The latest tick fired, or when the schedule was first seen (ms since the epoch).
    pub last_tick: i64,
    /// The job of the latest tick fired, `None` before the first.
    pub last_job: Option<Uuid>,
}

/// The answer to [`super::FlowControl::take_tokens`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tokens {
    /// Tokens taken: each allows one handler start.
    pub granted: u32,
    /// When none was granted, how long until the bucket holds one again (ms); else 0.
    pub wait_ms: u64,
}

/// A token bucket's state ([`super::FlowControl::take_tokens`]'s arithmetic): `tokens` at
/// `updated_at` (ms), refilled at `per_second` up to `burst`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bucket {
    /// Tokens left at `updated_at`.
    pub tokens: f64,
    /// When (ms since the Unix epoch).
    pub updated_at: i64,
}

impl Bucket {
    /// The tokens the bucket holds at `now` (ms) with this refill rate and size.
    pub fn at(&self, now: i64, per_second: f64, burst: u32) -> f64 {
        let elapsed_ms = (now - self.updated_at).max(0) as f64;
        (self.tokens + elapsed_ms * per_second / 1000.0).min(f64::from(burst))
    }

    /// Takes up to `want` whole tokens at `now`: the bucket after, and what was taken.
    pub fn take(&self, now: i64, want: u32, per_second: f64, burst: u32) -> (Self, Tokens) {
        let have = self.at(now, per_second, burst);
        let granted = (have.floor().max(0.0) as u32).min(want);
        let left = have - f64::from(granted);
        let wait_ms = if granted == 0 {
            ((1.0 - left) * 1000.0 / per_second).ceil().max(1.0) as u64
        } else {
            0
        };
        (
            Self {
                tokens: left,
                updated_at: now.max(self.updated_at),
            },
            Tokens { granted, wait_ms },
        )
    }
}
