//! What an adapter (SQLite, PostgreSQL) provides: its SQL, its type mapping and its error
//! classification, as small statements. Everything above the SQL — group commit,
//! insert-or-find, the claim classification, chunked pruning — is written once, in
//! [`super::engine`], on top of this trait.
//!
//! Statements that a batch runs take a connection (`&mut Conn<Self>`), so the engine decides
//! what shares a transaction; the rest run on the adapter's pool.

use std::collections::{BTreeMap, HashSet};

use uuid::Uuid;

use super::model::{
    ActiveCounts, Bucket, Claimed, Inserted, JobRecord, JobRow, JobStatus, NewJob, Overdue,
    OwnedClaim, ScheduleState, Success,
};
use super::{StoreError, StoreErrorKind};
use crate::error::{Error, Result};

/// A connection of the adapter's database.
pub(crate) type Conn<B> = <<B as Backend>::Db as sqlx::Database>::Connection;

/// One adapter. See the module docs.
#[async_trait::async_trait]
pub(crate) trait Backend: Send + Sync + 'static {
    /// sqlx's database type.
    type Db: sqlx::Database;

    /// `sqlite` or `postgres` (for `warren store status`).
    const NAME: &'static str;

    /// Most rows one prune statement deletes: what the adapter can delete while the
    /// intake's writes wait no more than a few ms.
    const PRUNE_CHUNK: u32;

    /// A connection for batched writes, held while the batch runs.
    type Writer: std::ops::DerefMut<Target = Conn<Self>> + Send;

    /// The connection batched writes use: SQLite's one dedicated writer connection (taken in
    /// turn, FIFO), or one of PostgreSQL's pool.
    async fn writer(&self) -> Result<Self::Writer>;

    /// The class of a database error, from its code (PostgreSQL's SQLSTATE, SQLite's
    /// extended result code).
    fn classify(code: &str) -> StoreErrorKind;

    /// A sqlx error as warren's, classified by [`Backend::classify`].
    fn err(e: sqlx::Error) -> Error {
        StoreError::from_sqlx(&e, Self::classify).into()
    }

    // --- statements a batch runs on its connection --------------------------------------

    /// Inserts `jobs` as `queued` (any number; the adapter chunks), skipping a job whose id
    /// or whose (queue, idempotency key) is taken; atomic as a whole (an error stores none
    /// of `jobs`). Returns the ids that have their row now: every job inserted, and may
    /// include keyless jobs whose id was already present.
    async fn insert_rows(conn: &mut Conn<Self>, jobs: &[NewJob]) -> Result<HashSet<Uuid>>;

    /// The job holding `key` in `queue`, as [`Inserted::Existing`].
    async fn find_by_key(conn: &mut Conn<Self>, queue: &str, key: &str)
    -> Result<Option<Inserted>>;

    /// Claims every job of `reqs` that is claimable now (`queued`, `retrying`, or `running`
    /// with its lease ended at the request's `now`) in one statement: `running`, attempts + 1,
    /// the request's owner and lease. A job requested twice is claimed once. Returns the
    /// claims made.
    async fn claim_rows(conn: &mut Conn<Self>, reqs: &[OwnedClaim]) -> Result<Vec<Claimed>>;

    /// A job's status and lease end, for classifying a claim that was not granted.
    async fn claim_state(
        conn: &mut Conn<Self>,
        id: Uuid,
    ) -> Result<Option<(JobStatus, Option<i64>)>>;

    /// Creates the row of a delivered job the store does not know (`queued`, from the
    /// message), unless it exists.
    async fn insert_missing(conn: &mut Conn<Self>, req: &OwnedClaim) -> Result<()>;

    /// Serialises keyed claims of `key` in `queue` until the transaction on `conn` ends:
    /// PostgreSQL takes a transaction-scoped advisory lock on the pair; SQLite needs none,
    /// since the claim's first statement, a write, takes the database's write lock.
    async fn lock_key(conn: &mut Conn<Self>, queue: &str, key: &str) -> Result<()>;

    /// Sets the concurrency key of the job `id`, just claimed, and counts the jobs of `queue`
    /// with `key` running with a lease that lasts past `now` (ms), this one included.
    async fn key_running(
        conn: &mut Conn<Self>,
        id: Uuid,
        queue: &str,
        key: &str,
        now: i64,
    ) -> Result<u64>;

    /// Reads `queue`'s bucket for a take, creating it with `full` tokens at `now` when it is
    /// missing, and holds the row (a write) until the transaction on `conn` ends.
    async fn bucket_for_update(
        conn: &mut Conn<Self>,
        queue: &str,
        full: f64,
        now: i64,
    ) -> Result<Bucket>;

    /// Writes `queue`'s bucket.
    async fn bucket_write(conn: &mut Conn<Self>, queue: &str, bucket: Bucket) -> Result<()>;

    /// Records the successes of jobs nobody waits for in one statement (per chunk); one
    /// whose lease another owner holds, or whose job is watched, changes nothing. Returns how
    /// many rows changed.
    async fn succeed_rows(conn: &mut Conn<Self>, reqs: &[Success]) -> Result<u64>;

    /// Records the successes [`Backend::succeed_rows`] left: those of watched jobs. Returns
    /// the ids of the jobs it changed.
    async fn succeed_watched_rows(conn: &mut Conn<Self>, reqs: &[Success]) -> Result<Vec<Uuid>>;

    // --- single statements on the pool ---------------------------------------------------

    /// The job with this id.
    async fn get(&self, id: Uuid) -> Result<Option<JobRecord>>;
    /// See [`super::JobStore::mark_accepted`].
    async fn mark_accepted(&self, id: Uuid) -> Result<()>;
    /// Marks job `id` as waited for (see [`super::JobStore::watch`]).
    async fn watch(&self, id: Uuid) -> Result<()>;
    /// See [`super::JobStore::forget_unpublished`].
    async fn forget_unpublished(&self, id: Uuid) -> Result<()>;
    /// See [`super::JobStore::retry`].
    async fn retry(
        &self,
        id: Uuid,
        owner: &str,
        error: &str,
        next_attempt_at: i64,
        payload: &[u8],
    ) -> Result<()>;
    /// See [`super::JobStore::take_overdue`] (one statement).
    async fn take_overdue(
        &self,
        queues: &[String],
        due_before: i64,
        recheck_at: i64,
        limit: u32,
    ) -> Result<Vec<Overdue>>;
    /// Cancels the job if it is `queued` or `retrying`; the cancelled job, else `None`.
    async fn cancel_row(&self, id: Uuid, now: i64) -> Result<Option<JobRecord>>;
    /// See [`super::JobStore::dead`].
    async fn dead(&self, id: Uuid, error: &str, now: i64) -> Result<()>;
    /// See [`super::JobStore::release`].
    async fn release(&self, id: Uuid, owner: &str) -> Result<()>;
    /// See [`super::JobStore::revive`] (one transaction).
    async fn revive(&self, ids: &[Uuid], queue: &str) -> Result<()>;
    /// See [`super::JobStore::discard`] (one transaction).
    async fn discard(&self, ids: &[Uuid], now: i64) -> Result<()>;
    /// See [`super::JobStore::active_counts`].
    async fn active_counts(&self) -> Result<BTreeMap<String, ActiveCounts>>;
    /// A trivial query.
    async fn ping(&self) -> Result<()>;
    /// Deletes up to `limit` jobs that finished at or after `from` and before `cutoff` (ms),
    /// oldest first. Returns how many, and the latest `finished_at` among them: the next
    /// chunk starts there, so that its index scan does not step again over the entries of
    /// rows already deleted (PostgreSQL keeps them until a vacuum).
    async fn prune_chunk(&self, from: i64, cutoff: i64, limit: u32) -> Result<(u64, Option<i64>)>;
    /// Jobs by queue and status.
    async fn counts(&self) -> Result<Vec<(String, JobStatus, u64)>>;
    /// The oldest job's `created_at` (ms).
    async fn oldest_created_at(&self) -> Result<Option<i64>>;
    /// The newest migration applied to the database, and the newest this binary carries.
    async fn schema_versions(&self) -> Result<(Option<i64>, i64)>;
    /// See [`super::Maintenance::export`].
    async fn export(&self, after: Option<Uuid>, limit: u32) -> Result<Vec<JobRow>>;
    /// See [`super::Maintenance::last_id`].
    async fn last_id(&self) -> Result<Option<Uuid>>;
    /// See [`super::Maintenance::import`].
    async fn import(&self, rows: &[JobRow]) -> Result<u64>;
    /// See [`super::QueueControl::queue_pause`].
    async fn queue_pause(&self, queue: &str, now: i64) -> Result<bool>;
    /// See [`super::QueueControl::queue_resume`].
    async fn queue_resume(&self, queue: &str) -> Result<bool>;
    /// See [`super::QueueControl::queues_paused`].
    async fn queues_paused(&self) -> Result<BTreeMap<String, i64>>;
    /// See [`super::FlowControl::buckets`].
    async fn buckets(&self) -> Result<BTreeMap<String, Bucket>>;
    /// See [`super::FlowControl::throttle`].
    async fn throttle(&self, queue: &str, until: i64, reason: &str) -> Result<()>;
    /// See [`super::FlowControl::throttles`].
    async fn throttles(&self, now: i64) -> Result<BTreeMap<String, i64>>;
    /// Schedule `name`'s state, `None` when it has no row (a read, no lock).
    async fn schedule_find(&self, name: &str) -> Result<Option<ScheduleState>>;
    /// Schedule `name`'s state, its row created with `last_tick = now` (ms) and no job when
    /// absent; a row present (another process's, made meanwhile) is returned unchanged. One
    /// statement.
    async fn schedule_create(&self, name: &str, now: i64) -> Result<ScheduleState>;
    /// See [`super::Schedules::schedule_advance`] (one statement).
    async fn schedule_advance(&self, name: &str, tick: i64, job: Option<Uuid>) -> Result<()>;
    /// See [`super::Schedules::schedule_states`].
    async fn schedule_states(&self) -> Result<BTreeMap<String, ScheduleState>>;

    // --- search (the SQL is built once, in `super::search`) ------------------------------

    /// The adapter's placeholders and case-insensitive `LIKE`.
    const DIALECT: super::search::Dialect;
    /// Runs a statement of [`super::search::list_sql`]: the jobs it selects, in its order.
    async fn list_rows(&self, sql: &super::search::Sql) -> Result<Vec<JobRecord>>;
    /// See [`super::JobSearch::cancel_many`] (one statement).
    async fn cancel_rows(&self, ids: &[Uuid], now: i64) -> Result<Vec<Uuid>>;
}

/// A failed migration as an error an operator can act on: a database migrated by a newer
/// warren is refused with that said. `what` names the store (credentials redacted).
pub(crate) fn migrate_error(
    e: &sqlx::migrate::MigrateError,
    migrator: &sqlx::migrate::Migrator,
    what: &str,
) -> Error {
    use sqlx::migrate::MigrateError as M;
    let newest = newest_migration(migrator);
    let message = match e {
        M::VersionMissing(v) => format!(
            "the store {what} has schema version {v}, newer than this warren binary knows \
             (up to {newest}): it was migrated by a newer warren; run that version, or upgrade \
             this one"
        ),
        M::VersionMismatch(v) => format!(
            "the store {what} has a migration {v} that differs from this binary's: it was \
             changed after it was applied"
        ),
        M::Dirty(v) => {
            format!("the store {what} has a failed migration {v}; fix or roll it back by hand")
        }
        other => format!("cannot migrate the store {what}: {other}"),
    };
    let kind = match e {
        M::Execute(sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut) => StoreErrorKind::Unavailable,
        _ => StoreErrorKind::Schema,
    };
    Error::store_kind(kind, crate::redact::redact(&message))
}

/// The newest migration `migrator` carries.
pub(crate) fn newest_migration(migrator: &sqlx::migrate::Migrator) -> i64 {
    migrator.iter().map(|m| m.version).max().unwrap_or(0)
}

/// A status read from the store, or a [`StoreErrorKind::Data`] error naming it.
pub(crate) fn parse_status(s: &str) -> Result<JobStatus> {
    JobStatus::parse(s).ok_or_else(|| {
        Error::store_kind(
            StoreErrorKind::Data,
            format!("unknown status `{s}` in store"),
        )
    })
}
