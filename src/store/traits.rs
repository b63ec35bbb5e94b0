//! The store's interface, by capability: [`JobStore`] (what the intake and the workers do to
//! jobs), [`Maintenance`] (upkeep and operations), [`QueueControl`] (the fleet's shared queue
//! state: pauses), [`JobSearch`] (finding jobs), [`FlowControl`] (rate limits and throttles),
//! [`Schedules`] (the schedules' ticks), and [`Store`], their sum, which the rest of warren
//! holds as `Arc<dyn Store>`.
//!
//! Every adapter gives the same answers: `src/store/conformance.rs` runs one suite of tests
//! on each.

use std::collections::BTreeMap;

use uuid::Uuid;

use super::model::{
    ActiveCounts, Bucket, Cancel, Claim, ClaimRequest, Cursor, Inserted, JobFilter, JobPage,
    JobRecord, JobRow, NewJob, Overdue, ScheduleState, StatusCounts, StoreStatus, Tokens,
};
use crate::error::Result;

/// Jobs through their life: intake, claims, outcomes, cancels, DLQ moves.
///
/// Atomicity, across every process sharing the store: of concurrent claims of one job exactly
/// one gets [`Claim::Claimed`] while its lease lives; of concurrent inserts with one
/// idempotency key in one queue exactly one gets [`Inserted::New`].
///
/// Every method fails with [`crate::ErrorKind::Store`] when the store cannot be reached or
/// refuses the write; [`crate::store::StoreError::is_transient`] says whether to try again.
#[async_trait::async_trait]
pub trait JobStore: Send + Sync + 'static {
    /// Records a new job as `queued`. A job with an idempotency key is inserted unless one
    /// with the same key exists in its queue, which is returned instead. Keyed jobs start
    /// un-accepted until [`JobStore::mark_accepted`]. Concurrent inserts are group-committed
    /// (many requests, one statement and one commit).
    async fn insert(&self, job: &NewJob) -> Result<Inserted>;

    /// [`JobStore::insert`] for many jobs in one transaction: the answers are in the order
    /// of `jobs`, each as `insert` would give it (a later job with the key of an earlier one
    /// in the same batch gets [`Inserted::Existing`]). All or nothing: on an error no job of
    /// the batch is stored.
    async fn insert_many(&self, jobs: &[NewJob]) -> Result<Vec<Inserted>>;

    /// Marks a keyed job's publish as confirmed, so requests repeating its key replay it.
    async fn mark_accepted(&self, id: Uuid) -> Result<()>;

    /// Removes a job whose publish failed (the client got a 503, so it was never accepted).
    /// Only removes it while it is still `queued` and never ran.
    async fn forget_unpublished(&self, id: Uuid) -> Result<()>;

    /// The job with this id.
    async fn get(&self, id: Uuid) -> Result<Option<JobRecord>>;

    /// Marks job `id` as waited for, then reads it ([`JobStore::get`]). The mark is written
    /// before the read, so a success recorded after the read answers `true` (and is
    /// announced) while one recorded before it shows in the read.
    async fn watch(&self, id: Uuid) -> Result<Option<JobRecord>>;

    /// Claims a delivered job for running (see [`Claim`]); creates the row from the message
    /// when the store has none (a message published by hand or whose row was pruned).
    /// Group-committed like [`JobStore::insert`].
    async fn claim(&self, req: &ClaimRequest<'_>) -> Result<Claim>;

    /// [`JobStore::claim`] for a job with concurrency key `key` on a queue that runs at most
    /// `limit` jobs per key at once: claimed only while fewer than `limit` jobs of `queue`
    /// with `key` are `running` with a live lease (counting this one, a job whose lease
    /// ended does not hold a slot); else [`Claim::KeyBusy`] and nothing changes. The claim
    /// and the count are one transaction, serialised per key across every process sharing
    /// the store. Not group-committed.
    async fn claim_keyed(&self, req: &ClaimRequest<'_>, key: &str, limit: u32) -> Result<Claim>;

    /// Records success for a job claimed by `owner`: `succeeded`, result kept. A success
    /// whose lease was taken over by another owner changes nothing. `true` when the success
    /// was recorded on a job somebody waits for ([`JobStore::watch`]): it must be announced.
    async fn succeed(&self, id: Uuid, owner: &str, result: Option<&str>, now: i64) -> Result<bool>;

    /// Records a failed attempt of a job claimed by `owner`: `retrying`, with the error and
    /// when the next attempt is due (ms); the lease is released. `payload` is kept until the
    /// job is claimed again, so that [`JobStore::take_overdue`] can hand it out should the
    /// retry's delayed message not come back.
    async fn retry(
        &self,
        id: Uuid,
        owner: &str,
        error: &str,
        next_attempt_at: i64,
        payload: &[u8],
    ) -> Result<()>;

    /// Hands out up to `limit` jobs of `queues` whose delayed message is overdue: `queued` or
    /// `retrying` with a payload kept and due before `due_before` (ms), oldest due first. Each
    /// job handed out is due again at `recheck_at` (ms), so that of concurrent callers (every
    /// worker process sweeps) exactly one gets it, and it is handed out again only if it is
    /// still waiting then. A claim clears the payload: a job that ran is not handed out.
    async fn take_overdue(
        &self,
        queues: &[String],
        due_before: i64,
        recheck_at: i64,
        limit: u32,
    ) -> Result<Vec<Overdue>>;

    /// Cancels a job that has not started (`queued` or `retrying`).
    async fn cancel(&self, id: Uuid, now: i64) -> Result<Cancel>;

    /// Records a final failure: `dead`, with the error (a job already `succeeded` or
    /// `cancelled` stays so).
    async fn dead(&self, id: Uuid, error: &str, now: i64) -> Result<()>;

    /// Gives a claim back without running to completion (shutdown, hand-back): the job returns
    /// to `queued`, its attempt uncounted, and the next delivery may claim it at once.
    async fn release(&self, id: Uuid, owner: &str) -> Result<()>;

    /// Brings dead jobs back for a DLQ replay or requeue: `dead` → `queued` in `queue`,
    /// attempts reset to 0, `discarded_at` cleared. Other statuses are left alone (a job that
    /// succeeded stays succeeded, so a replayed copy is skipped); unknown ids are fine (the
    /// worker creates their row).
    async fn revive(&self, ids: &[Uuid], queue: &str) -> Result<()>;

    /// Marks dead jobs whose dead letters were purged: `discarded_at` = `now` (ms).
    async fn discard(&self, ids: &[Uuid], now: i64) -> Result<()>;

    /// Jobs now `running` (claimed by a worker, lease held) and `retrying` (failed at least
    /// once, next attempt waiting in the delay levels), by queue name; queues with neither are
    /// absent. For `GET /v1/queues`, `warren queues` and the dashboard's overview. Cheap
    /// however many finished jobs the table holds (an index on the status).
    async fn active_counts(&self) -> Result<BTreeMap<String, ActiveCounts>>;
}

/// Upkeep and operations: health, retention, status, moving jobs between stores.
#[async_trait::async_trait]
pub trait Maintenance: Send + Sync + 'static {
    /// Checks the store answers (for `/readyz`).
    async fn ping(&self) -> Result<()>;

    /// Deletes finished jobs (and so their idempotency keys) that finished before `cutoff`
    /// (ms), in bounded chunks with pauses between them, so that neither SQLite's write lock
    /// nor PostgreSQL's row locks and WAL are held long, and a large prune takes at most a
    /// quarter of the store's time; returns how many.
    async fn prune(&self, cutoff: i64) -> Result<u64>;

    /// Schema version, jobs by queue and status, the oldest job (`warren store status`).
    async fn status(&self) -> Result<StoreStatus>;

    /// Up to `limit` whole rows with ids greater than `after` (all when `None`), in id order:
    /// keyset pages for `warren store copy` (UUIDv7 ids sort by creation time).
    async fn export(&self, after: Option<Uuid>, limit: u32) -> Result<Vec<JobRow>>;

    /// The greatest job id (UUIDv7: the newest job), where a resumed copy goes on.
    async fn last_id(&self) -> Result<Option<Uuid>>;

    /// Stores whole rows as they are, in one transaction; a row whose id is present is
    /// skipped (so a copy can be resumed). Returns how many were new.
    async fn import(&self, rows: &[JobRow]) -> Result<u64>;
}

/// The fleet's shared queue state: which queues are paused (DESIGN §3, §7). Every worker
/// process reads [`QueueControl::queues_paused`] about once a second (`src/admission.rs`), so a
/// pause written by any process reaches every worker of the queue on every host.
///
/// Every method fails with [`crate::ErrorKind::Store`] when the store cannot be reached.
/// Queue names are not checked against the configuration here: callers do that.
#[async_trait::async_trait]
pub trait QueueControl: Send + Sync + 'static {
    /// Pauses `queue` as of `now` (ms). True when this call paused it; false when it was
    /// paused already (its first `paused_at` stays).
    async fn queue_pause(&self, queue: &str, now: i64) -> Result<bool>;

    /// Resumes `queue`. True when this call resumed it; false when it was not paused.
    async fn queue_resume(&self, queue: &str) -> Result<bool>;

    /// Every paused queue, with when it was paused (ms). One query over a table of at most
    /// one row per queue.
    async fn queues_paused(&self) -> Result<BTreeMap<String, i64>>;
}

/// Finding jobs and acting on many at once: `GET /v1/jobs`, `POST /v1/jobs/cancel`,
/// `warren jobs list|cancel`, the dashboard's counts.
#[async_trait::async_trait]
pub trait JobSearch: Send + Sync + 'static {
    /// One page of the jobs matching `filter`, newest first (by id: UUIDv7 ids sort by
    /// creation time), starting after `after` (the page before's
    /// [`JobPage::next_cursor`]; `None` for the first page), at most `limit` jobs (the
    /// caller keeps it within [`super::PAGE_LIMITS`]). Keyset-paginated: walking the pages
    /// sees every job that matched when it started exactly once, however jobs are added
    /// meanwhile (new jobs are newer than any cursor). With 1,000,000 jobs a page of 50 with
    /// any single filter takes a few ms (BENCHMARKS.md); `error_contains` reads every job
    /// with an error, newest first, until the page is full.
    async fn list(&self, filter: &JobFilter, after: Option<Cursor>, limit: u32) -> Result<JobPage>;

    /// Jobs by queue, then by status. Counts the whole table (an index-only scan): for
    /// operators' overviews, not a request path that runs per job.
    async fn status_counts(&self) -> Result<StatusCounts>;

    /// [`JobStore::cancel`] for many jobs in one statement: those of `ids` that are
    /// `queued` or `retrying` become `cancelled` (`finished_at` = `now`, ms); the others,
    /// and unknown ids, are left alone. Returns the ids cancelled.
    async fn cancel_many(&self, ids: &[Uuid], now: i64) -> Result<Vec<Uuid>>;
}

/// The whole store: what `Arc<dyn Store>` offers.
pub trait Store:
    JobStore + Maintenance + JobSearch + QueueControl + FlowControl + Schedules
{
}

impl<T: JobStore + Maintenance + JobSearch + QueueControl + FlowControl + Schedules> Store for T {}

/// The fleet-wide limits' shared state: token buckets of rate-limited queues
/// (`src/rate_limit.rs`) and queues throttled by a target's 429 (`src/throttle.rs`). Per-key
/// concurrency is counted by the claim itself ([`JobStore::claim_keyed`]).
///
/// Every method fails with [`crate::ErrorKind::Store`] when the store cannot be reached.
#[async_trait::async_trait]
pub trait FlowControl: Send + Sync + 'static {
    /// Takes up to `want` tokens from `queue`'s token bucket of rate `per_second` and size
    /// `burst` at `now` (ms), atomically across every process sharing the store; a bucket
    /// not yet in the store starts full. See [`Bucket::take`] for the arithmetic.
    async fn take_tokens(
        &self,
        queue: &str,
        want: u32,
        per_second: f64,
        burst: u32,
        now: i64,
    ) -> Result<Tokens>;

    /// Every token bucket, by queue, as last written.
    async fn buckets(&self) -> Result<BTreeMap<String, Bucket>>;

    /// Holds `queue`'s dispatch until `until` (ms) because of `reason`; a later hold already
    /// in place stays.
    async fn throttle(&self, queue: &str, until: i64, reason: &str) -> Result<()>;

    /// The holds of [`FlowControl::throttle`] that end after `now` (ms), by queue.
    async fn throttles(&self, now: i64) -> Result<BTreeMap<String, i64>>;
}

/// The schedules' shared state (DESIGN §7 "schedule ticks"): per schedule name, the latest tick
/// fired and its job. Every intake process evaluates every schedule (`src/schedule/`); the tick's
/// job is made exactly once by the idempotency key, and this state only tells a process which
/// ticks are already done, and, after downtime, which were missed.
///
/// Every method fails with [`crate::ErrorKind::Store`] when the store cannot be reached.
/// Schedule names are not checked against the configuration here: callers do that.
#[async_trait::async_trait]
pub trait Schedules: Send + Sync + 'static {
    /// The state of schedule `name`, created when absent with `last_tick = now` (ms) and no job
    /// (a new schedule fires from now on, not for ticks before it existed). Concurrent callers get
    /// the same row.
    async fn schedule_start(&self, name: &str, now: i64) -> Result<ScheduleState>;
    /// Records that the tick at `tick` (ms) of schedule `name` fired as job `job` (`None`: the
    /// tick was skipped, by the schedule's `catch_up`): `last_tick` becomes
    /// `max(last_tick, tick)`, and `last_job` becomes `job` when `tick >= last_tick` and `job`
    /// is given (a slower process recording an older tick does not move it back; a skip keeps
    /// the last job). Creates the row when absent.
    async fn schedule_advance(&self, name: &str, tick: i64, job: Option<Uuid>) -> Result<()>;
    /// Every schedule's state, by name (one query over a table of one row per schedule).
    async fn schedule_states(&self) -> Result<BTreeMap<String, ScheduleState>>;
}
