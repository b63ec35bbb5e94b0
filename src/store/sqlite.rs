//! The embedded SQLite adapter: one file, WAL journal (<https://sqlite.org/wal.html>), so
//! `warren run` needs nothing else. Only SQLite's SQL, type mapping, opening and error
//! classification live here; the store's logic is [`super::engine`].
//!
//! Every batched write (the group commits, [`super::JobStore::insert_many`]) runs on one
//! dedicated connection, taken in turn (a FIFO lock) instead of meeting at SQLite's write
//! lock, whose busy handler sleeps 1, 2, 5… ms between tries; one connection also keeps its
//! page cache valid between batches. Reads and the rarer single writes use a pool of four.
//!
//! WAL checkpoints (copying committed pages into the database file, with an fsync) run on a
//! pool connection, paced so that each copies about [`CHECKPOINT_FRAMES`] frames: every
//! [`CHECKPOINT_EVERY`] while the store is written fast, up to [`CHECKPOINT_IDLE_MAX`] apart
//! while it is written slowly or not at all, never inside a commit: SQLite's automatic
//! checkpoint would run one in whichever commit crosses 1,000 WAL pages and hold every request
//! of that batch for the fsync (it was the POST→202 p99 tail in BENCHMARKS.md). A passive
//! checkpoint does not block the writer (<https://sqlite.org/wal.html#ckpt>).

use std::collections::{BTreeMap, HashSet};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use sqlx::Row;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteRow, SqliteSynchronous,
};
use tokio::sync::{Mutex, OwnedMutexGuard};
use uuid::Uuid;

use super::backend::{Backend, migrate_error, newest_migration, parse_status};
#[cfg(test)]
use super::engine::SqlStore;
use super::model::{
    ActiveCounts, Bucket, Claimed, Inserted, JobRecord, JobRow, JobStatus, NewJob, Overdue,
    OwnedClaim, ScheduleState, Success, to_u32,
};
use super::{OpenOptions, StoreErrorKind};
use crate::error::{Error, Result};

/// The store on SQLite.
#[cfg(test)]
pub(crate) type SqliteStore = SqlStore<Sqlite>;

/// The SQLite adapter (see the module docs).
#[derive(Debug)]
pub(crate) struct Sqlite {
    pool: SqlitePool,
    writer: Arc<Mutex<SqliteConnection>>,
    /// Stops the checkpoint task when the adapter is dropped.
    _checkpoints: tokio_util::sync::DropGuard,
}

/// Most rows in one multi-row statement (11 or 4 bound values a row; SQLite allows 32,766);
/// a power of two, so that at most 9 distinct statements exist and all stay prepared.
const CHUNK: usize = 256;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

const JOB_COLUMNS: &str = "id, queue, status, attempts, max_attempts, last_error, result, \
    correlation_id, idempotency_key, created_at, started_at, finished_at, next_attempt_at, discarded_at, \
    schedule";

#[cfg(test)]
impl SqliteStore {
    /// Opens (creating if missing) and migrates the database at `url` (`sqlite://PATH` or
    /// `sqlite::memory:`). Shorthand for [`super::open`] with this URL.
    ///
    /// # Errors
    /// As [`Sqlite::open`].
    pub(crate) async fn open(url: &str) -> Result<Self> {
        Ok(SqlStore::new(Sqlite::open(&OpenOptions::new(url)).await?))
    }
}

impl Sqlite {
    /// Opens the database at `opts.url`, creating it if missing, and migrates it unless
    /// `opts.migrate` is false.
    ///
    /// Connections use WAL with `synchronous = NORMAL` (durable across a process crash; the
    /// job itself is durable in RabbitMQ) and a 5 s busy timeout.
    ///
    /// # Errors
    /// [`crate::ErrorKind::Store`] when the file cannot be opened, is read-only or cannot be
    /// migrated ([`StoreErrorKind::Schema`] for a database migrated by a newer warren).
    pub(crate) async fn open(opts: &OpenOptions) -> Result<Self> {
        let url = opts.url.as_str();
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|e| {
                Error::store_kind(
                    StoreErrorKind::Config,
                    format!("invalid store URL `{url}`: {e}"),
                )
            })?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(BUSY_TIMEOUT)
            // Checkpoints run in the background (see `checkpoints`), not inside a commit.
            .pragma("wal_autocheckpoint", "0");
        // Processes started together (an intake and a worker on one file) meet at the first
        // connection's switch to WAL, where SQLite answers "database is locked" without
        // waiting for its busy timeout, and at the migrations, which sqlx does not lock on
        // SQLite: try again, with jittered backoff.
        let migrate = opts.migrate;
        let pool = (|| open_and_migrate(url, options.clone(), migrate))
            .retry(
                ExponentialBuilder::default()
                    .with_min_delay(Duration::from_millis(20))
                    .with_max_delay(Duration::from_secs(1))
                    .with_max_times(30)
                    .with_jitter(),
            )
            .when(|e| e.locked)
            .await
            .map_err(|e| e.error)?;
        let writer = pool.acquire().await.map_err(Self::err)?.detach();
        let stop = tokio_util::sync::CancellationToken::new();
        tokio::spawn(checkpoints(pool.clone(), stop.clone()));
        Ok(Self {
            pool,
            writer: Arc::new(Mutex::new(writer)),
            _checkpoints: stop.drop_guard(),
        })
    }
}

/// Why opening the store failed, and whether it was only another process holding the lock.
struct OpenError {
    error: Error,
    locked: bool,
}

/// True for SQLITE_BUSY and SQLITE_LOCKED (<https://sqlite.org/rescode.html>), with their
/// extended codes.
fn is_locked_code(code: &str) -> bool {
    code.parse::<i32>().is_ok_and(|c| matches!(c & 0xff, 5 | 6))
}

fn is_locked(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(d) => d.code().is_some_and(|c| is_locked_code(&c)),
        _ => false,
    }
}

/// True when a migration failed because another process applied the same DDL first. SQLite
/// reports that as the generic SQLITE_ERROR, so only its text tells.
fn applied_elsewhere(e: &sqlx::Error) -> bool {
    let text = e.to_string();
    text.contains("already exists") || text.contains("duplicate column name")
}

/// Connects to `url` and runs the migrations (when `migrate`).
async fn open_and_migrate(
    url: &str,
    options: SqliteConnectOptions,
    migrate: bool,
) -> std::result::Result<SqlitePool, OpenError> {
    let pool = SqlitePoolOptions::new()
        .max_connections(4)
        .acquire_timeout(Duration::from_secs(5))
        // An embedded file has no connection to lose; sqlx's ping before each acquire is
        // only one more round trip to the connection's thread.
        .test_before_acquire(false)
        .connect_with(options)
        .await
        .map_err(|e| OpenError {
            locked: is_locked(&e),
            error: Error::store_kind(
                StoreErrorKind::Unavailable,
                format!("cannot open the store {url}: {e}"),
            ),
        })?;
    if migrate {
        let mut conn = pool.acquire().await.map_err(|e| OpenError {
            locked: is_locked(&e),
            error: Sqlite::err(e),
        })?;
        if let Err(e) = MIGRATOR.run_direct(&mut *conn).await {
            use sqlx::migrate::MigrateError as M;
            return Err(OpenError {
                // Another process ran the same migration first (sqlx takes no lock on
                // SQLite); each migration is one transaction, so trying again finds it applied.
                locked: matches!(&e, M::ExecuteMigration(inner, _) if is_locked(inner) || applied_elsewhere(inner))
                    || matches!(&e, M::Execute(inner) if is_locked(inner)),
                error: migrate_error(&e, &MIGRATOR, url),
            });
        }
    }
    Ok(pool)
}

/// How long a statement waits for another process's write lock before it fails
/// (SQLITE_BUSY, <https://sqlite.org/c3ref/busy_timeout.html>).
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// How long [`Backend::ping`] waits for the write lock: longer than any of warren's own
/// batches holds it, short enough for a readiness probe.
const PING_BUSY_TIMEOUT: Duration = Duration::from_secs(1);

/// The shortest wait between two checkpoints, while the store is written fast (see the
/// module docs).
const CHECKPOINT_EVERY: Duration = Duration::from_millis(100);
/// The longest wait between checkpoints, while little or nothing is written: a quiet store
/// wakes once a second, and a burst after a quiet spell waits at most this long for its
/// first checkpoint.
const CHECKPOINT_IDLE_MAX: Duration = Duration::from_secs(1);
/// About how many WAL frames (pages, 4 KiB each) one checkpoint should copy: SQLite's own
/// automatic checkpoint threshold (<https://sqlite.org/pragma.html#pragma_wal_autocheckpoint>).
/// A store written at a few hundred jobs a second fills that in about a second, so its
/// checkpoints wake the pool once a second instead of ten times.
const CHECKPOINT_FRAMES: i64 = 1_000;

/// Checkpoints the WAL (`PRAGMA wal_checkpoint(PASSIVE)`,
/// <https://sqlite.org/pragma.html#pragma_wal_checkpoint>) until `stop` is cancelled or the
/// pool closes, then once more; waits between them as [`next_checkpoint_wait`] says. A
/// checkpoint that fails (another process's checkpoint holds the lock, say) is tried again
/// next time.
async fn checkpoints(pool: SqlitePool, stop: tokio_util::sync::CancellationToken) {
    let mut wait = CHECKPOINT_EVERY;
    // (frames in the WAL, frames checkpointed) after the last checkpoint.
    let mut last = (0, 0);
    loop {
        let stopping = tokio::select! {
            () = stop.cancelled() => true,
            () = tokio::time::sleep(wait) => false,
        };
        match sqlx::query_as::<_, (i64, i64, i64)>("PRAGMA wal_checkpoint(PASSIVE)")
            .fetch_one(&pool)
            .await
        {
            Err(sqlx::Error::PoolClosed) => return,
            Err(e) => tracing::debug!(error = %e, "WAL checkpoint failed; trying again later"),
            Ok((_busy, log, checkpointed)) => {
                wait = next_checkpoint_wait(wait, new_frames(last, (log, checkpointed)));
                last = (log, checkpointed);
            }
        }
        if stopping {
            return;
        }
    }
}

/// WAL frames written between two checkpoints that answered `before` and `now` (frames in
/// the WAL, frames checkpointed): the WAL's growth past what the first had copied or, when
/// the WAL started over from its beginning (it does once every frame was copied and no
/// reader needs it), its whole length.
fn new_frames(before: (i64, i64), now: (i64, i64)) -> i64 {
    if now.0 >= before.0 {
        now.0 - before.1
    } else {
        now.0
    }
    .max(0)
}

/// The wait before the next checkpoint, after one that waited `last` and found `frames`
/// new frames: `last` scaled so that the next finds about [`CHECKPOINT_FRAMES`] at the same
/// pace, within [`CHECKPOINT_EVERY`]..=[`CHECKPOINT_IDLE_MAX`] (and at most twice `last`, so a
/// quiet spell backs off step by step).
fn next_checkpoint_wait(last: Duration, frames: i64) -> Duration {
    let pace = CHECKPOINT_FRAMES as f64 / frames.max(1) as f64;
    last.mul_f64(pace.min(2.0))
        .clamp(CHECKPOINT_EVERY, CHECKPOINT_IDLE_MAX)
}

/// The success `UPDATE` of `n` rows (bound by [`bind_successes`]), with `tail` (a further
/// condition, or a `RETURNING`) at its end.
fn succeed_sql(n: usize, tail: &str) -> String {
    let rows = vec!["(?, ?, ?, ?)"; n].join(", ");
    format!(
        "UPDATE jobs SET status = 'succeeded', result = v.column3, finished_at = v.column4, \
         lease_owner = NULL, lease_until = NULL \
         FROM (VALUES {rows}) AS v WHERE jobs.id = v.column1 AND jobs.lease_owner = v.column2 {tail}"
    )
}

fn bind_successes<'q>(
    mut query: sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'q>>,
    chunk: &'q [Success],
) -> sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'q>> {
    for s in chunk {
        query = query
            .bind(s.id.to_string())
            .bind(&s.owner)
            .bind(&s.result)
            .bind(s.now);
    }
    query
}

/// Chunks of a power of two rows, up to [`CHUNK`].
fn chunks<T>(mut rest: &[T]) -> impl Iterator<Item = &[T]> {
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let n = CHUNK.min(1 << rest.len().ilog2());
        let (chunk, tail) = rest.split_at(n);
        rest = tail;
        Some(chunk)
    })
}

/// One multi-row `INSERT … ON CONFLICT DO NOTHING`: the ids that have their row now.
///
/// Without idempotency keys in `jobs` only a fresh UUIDv7 could conflict, so the statement
/// runs without `RETURNING` (one answer instead of a row per job through sqlx's row channel)
/// and its row count says all went in; should it not, the ids present are read back.
async fn insert_chunk(conn: &mut SqliteConnection, jobs: &[NewJob]) -> Result<HashSet<Uuid>> {
    let keyless = jobs.iter().all(|j| j.idempotency_key.is_none());
    let mut sql = String::with_capacity(200 + 40 * jobs.len());
    sql.push_str(
        "INSERT INTO jobs (id, queue, status, max_attempts, correlation_id, idempotency_key, \
         request_hash, accepted, created_at, next_attempt_at, resend_payload, schedule) VALUES ",
    );
    for i in 0..jobs.len() {
        if i > 0 {
            sql.push(',');
        }
        sql.push_str("(?, ?, 'queued', ?, ?, ?, ?, ?, ?, ?, ?, ?)");
    }
    sql.push_str(" ON CONFLICT DO NOTHING");
    if !keyless {
        sql.push_str(" RETURNING id");
    }
    let mut query = sqlx::query(&sql);
    for job in jobs {
        query = query
            .bind(job.id.to_string())
            .bind(&job.queue)
            .bind(i64::from(job.max_attempts))
            .bind(&job.correlation_id)
            .bind(&job.idempotency_key)
            .bind(&job.request_hash)
            .bind(job.idempotency_key.is_none())
            .bind(job.created_at)
            .bind(job.next_attempt_at)
            .bind(job.resend_payload.as_deref())
            .bind(&job.schedule);
    }
    if keyless {
        let inserted = query
            .execute(&mut *conn)
            .await
            .map_err(Sqlite::err)?
            .rows_affected();
        if usize::try_from(inserted).is_ok_and(|n| n == jobs.len()) {
            return Ok(jobs.iter().map(|j| j.id).collect());
        }
        return present_ids(conn, jobs).await;
    }
    ids(&query.fetch_all(&mut *conn).await.map_err(Sqlite::err)?)
}

/// The `id` column of `rows`, parsed.
fn ids(rows: &[SqliteRow]) -> Result<HashSet<Uuid>> {
    rows.iter().map(|row| uuid_at(row, "id")).collect()
}

fn uuid_at(row: &SqliteRow, column: &str) -> Result<Uuid> {
    let id: String = row.try_get(column).map_err(Sqlite::err)?;
    Uuid::parse_str(&id).map_err(|e| {
        Error::store_kind(
            StoreErrorKind::Data,
            format!("bad job id `{id}` in store: {e}"),
        )
    })
}

/// Which of `jobs` have a row (by id).
async fn present_ids(conn: &mut SqliteConnection, jobs: &[NewJob]) -> Result<HashSet<Uuid>> {
    let marks = vec!["?"; jobs.len()].join(", ");
    let sql = format!("SELECT id FROM jobs WHERE id IN ({marks})");
    let mut query = sqlx::query(&sql);
    for job in jobs {
        query = query.bind(job.id.to_string());
    }
    ids(&query.fetch_all(&mut *conn).await.map_err(Sqlite::err)?)
}

fn record(row: &SqliteRow) -> Result<JobRecord> {
    let get = |e| Sqlite::err(e);
    let status: String = row.try_get("status").map_err(get)?;
    Ok(JobRecord {
        id: uuid_at(row, "id")?,
        queue: row.try_get("queue").map_err(get)?,
        status: parse_status(&status)?,
        attempts: to_u32(row.try_get("attempts").map_err(get)?),
        max_attempts: to_u32(row.try_get("max_attempts").map_err(get)?),
        last_error: row.try_get("last_error").map_err(get)?,
        result: row.try_get("result").map_err(get)?,
        correlation_id: row.try_get("correlation_id").map_err(get)?,
        idempotency_key: row.try_get("idempotency_key").map_err(get)?,
        created_at: row.try_get("created_at").map_err(get)?,
        started_at: row.try_get("started_at").map_err(get)?,
        finished_at: row.try_get("finished_at").map_err(get)?,
        next_attempt_at: row.try_get("next_attempt_at").map_err(get)?,
        discarded_at: row.try_get("discarded_at").map_err(get)?,
        schedule: row.try_get("schedule").map_err(get)?,
    })
}

/// Runs `sql` once per id in one transaction, binding `first` then the id.
async fn per_id<'a, T>(pool: &SqlitePool, sql: &'a str, first: T, ids: &[Uuid]) -> Result<()>
where
    T: sqlx::Encode<'a, sqlx::Sqlite> + sqlx::Type<sqlx::Sqlite> + Clone + Send + 'a,
{
    let mut tx = pool.begin().await.map_err(Sqlite::err)?;
    for id in ids {
        sqlx::query(sql)
            .bind(first.clone())
            .bind(id.to_string())
            .execute(&mut *tx)
            .await
            .map_err(Sqlite::err)?;
    }
    tx.commit().await.map_err(Sqlite::err)
}

#[async_trait::async_trait]
impl Backend for Sqlite {
    type Db = sqlx::Sqlite;
    type Writer = OwnedMutexGuard<SqliteConnection>;
    const NAME: &'static str = "sqlite";
    const PRUNE_CHUNK: u32 = 500;

    async fn writer(&self) -> Result<Self::Writer> {
        Ok(self.writer.clone().lock_owned().await)
    }

    fn classify(code: &str) -> StoreErrorKind {
        if is_locked_code(code) {
            return StoreErrorKind::Unavailable;
        }
        match code.parse::<i32>().map(|c| c & 0xff) {
            // SQLITE_IOERR, SQLITE_FULL, SQLITE_CANTOPEN, SQLITE_READONLY
            Ok(10 | 13 | 14 | 8) => StoreErrorKind::Unavailable,
            // SQLITE_CORRUPT, SQLITE_NOTADB
            Ok(11 | 26) => StoreErrorKind::Data,
            _ => StoreErrorKind::Other,
        }
    }

    async fn insert_rows(conn: &mut SqliteConnection, jobs: &[NewJob]) -> Result<HashSet<Uuid>> {
        // One statement is atomic on its own; several share a transaction (a savepoint
        // inside the caller's), so that an error stores none of `jobs`.
        if jobs.len() <= CHUNK && jobs.len().is_power_of_two() {
            return insert_chunk(conn, jobs).await;
        }
        let mut tx = sqlx::Connection::begin(&mut *conn)
            .await
            .map_err(Self::err)?;
        let mut present = HashSet::with_capacity(jobs.len());
        for chunk in chunks(jobs) {
            present.extend(insert_chunk(&mut tx, chunk).await?);
        }
        tx.commit().await.map_err(Self::err)?;
        Ok(present)
    }

    async fn find_by_key(
        conn: &mut SqliteConnection,
        queue: &str,
        key: &str,
    ) -> Result<Option<Inserted>> {
        let row = sqlx::query(&format!(
            "SELECT {JOB_COLUMNS}, request_hash, accepted FROM jobs WHERE queue = ? AND idempotency_key = ?"
        ))
        .bind(queue)
        .bind(key)
        .fetch_optional(&mut *conn)
        .await
        .map_err(Self::err)?;
        row.map(|row| {
            Ok(Inserted::Existing {
                record: Box::new(record(&row)?),
                request_hash: row.try_get("request_hash").map_err(Self::err)?,
                accepted: row.try_get("accepted").map_err(Self::err)?,
            })
        })
        .transpose()
    }

    async fn claim_rows(conn: &mut SqliteConnection, reqs: &[OwnedClaim]) -> Result<Vec<Claimed>> {
        let mut out = Vec::with_capacity(reqs.len());
        for chunk in chunks(reqs) {
            let rows = vec!["(?, ?, ?, ?)"; chunk.len()].join(", ");
            // A job twice in `reqs` matches twice, but an `UPDATE … FROM` changes a row once.
            let sql = format!(
                "UPDATE jobs SET status = 'running', attempts = attempts + 1, \
                 started_at = COALESCE(started_at, v.column2), next_attempt_at = NULL, \
                 resend_payload = NULL, lease_owner = v.column3, lease_until = v.column4 \
                 FROM (VALUES {rows}) AS v \
                 WHERE jobs.id = v.column1 AND (jobs.status IN ('queued', 'retrying') \
                   OR (jobs.status = 'running' AND (jobs.lease_until IS NULL OR jobs.lease_until <= v.column2))) \
                 RETURNING jobs.id, jobs.attempts, jobs.max_attempts"
            );
            let mut query = sqlx::query(&sql);
            for r in chunk {
                query = query
                    .bind(r.id.to_string())
                    .bind(r.now)
                    .bind(&r.owner)
                    .bind(r.lease_until);
            }
            for row in query.fetch_all(&mut *conn).await.map_err(Self::err)? {
                out.push(Claimed {
                    id: uuid_at(&row, "id")?,
                    attempt: to_u32(row.try_get("attempts").map_err(Self::err)?),
                    max_attempts: to_u32(row.try_get("max_attempts").map_err(Self::err)?),
                });
            }
        }
        Ok(out)
    }

    async fn claim_state(
        conn: &mut SqliteConnection,
        id: Uuid,
    ) -> Result<Option<(JobStatus, Option<i64>)>> {
        let row = sqlx::query("SELECT status, lease_until FROM jobs WHERE id = ?")
            .bind(id.to_string())
            .fetch_optional(&mut *conn)
            .await
            .map_err(Self::err)?;
        row.map(|row| {
            let status: String = row.try_get("status").map_err(Self::err)?;
            Ok((
                parse_status(&status)?,
                row.try_get("lease_until").map_err(Self::err)?,
            ))
        })
        .transpose()
    }

    async fn insert_missing(conn: &mut SqliteConnection, req: &OwnedClaim) -> Result<()> {
        sqlx::query(
            "INSERT OR IGNORE INTO jobs (id, queue, status, max_attempts, correlation_id, \
             created_at) VALUES (?, ?, 'queued', ?, ?, ?)",
        )
        .bind(req.id.to_string())
        .bind(&req.queue)
        .bind(i64::from(req.max_attempts.max(1)))
        .bind(&req.correlation_id)
        .bind(req.now)
        .execute(&mut *conn)
        .await
        .map_err(Self::err)?;
        Ok(())
    }

    async fn lock_key(_conn: &mut SqliteConnection, _queue: &str, _key: &str) -> Result<()> {
        // The claim's first statement is an UPDATE: it takes the database's write lock,
        // which every other writer (any process) waits for until this transaction ends.
        Ok(())
    }

    async fn key_running(
        conn: &mut SqliteConnection,
        id: Uuid,
        queue: &str,
        key: &str,
        now: i64,
    ) -> Result<u64> {
        sqlx::query("UPDATE jobs SET concurrency_key = ? WHERE id = ?")
            .bind(key)
            .bind(id.to_string())
            .execute(&mut *conn)
            .await
            .map_err(Self::err)?;
        // Served by the partial index `jobs_running_key` (migration 0007).
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM jobs WHERE queue = ? AND concurrency_key = ? \
             AND status = 'running' AND concurrency_key IS NOT NULL AND lease_until > ?",
        )
        .bind(queue)
        .bind(key)
        .bind(now)
        .fetch_one(&mut *conn)
        .await
        .map_err(Self::err)?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn bucket_for_update(
        conn: &mut SqliteConnection,
        queue: &str,
        full: f64,
        now: i64,
    ) -> Result<Bucket> {
        // An upsert that always writes: it takes the write lock before the read.
        let (tokens, updated_at) = sqlx::query_as::<_, (f64, i64)>(
            "INSERT INTO rate_buckets (queue, tokens, updated_at) VALUES (?, ?, ?) \
             ON CONFLICT (queue) DO UPDATE SET queue = excluded.queue \
             RETURNING tokens, updated_at",
        )
        .bind(queue)
        .bind(full)
        .bind(now)
        .fetch_one(&mut *conn)
        .await
        .map_err(Self::err)?;
        Ok(Bucket { tokens, updated_at })
    }

    async fn bucket_write(conn: &mut SqliteConnection, queue: &str, bucket: Bucket) -> Result<()> {
        sqlx::query("UPDATE rate_buckets SET tokens = ?, updated_at = ? WHERE queue = ?")
            .bind(bucket.tokens)
            .bind(bucket.updated_at)
            .bind(queue)
            .execute(&mut *conn)
            .await
            .map_err(Self::err)?;
        Ok(())
    }

    async fn succeed_rows(conn: &mut SqliteConnection, reqs: &[Success]) -> Result<u64> {
        let mut changed = 0;
        for chunk in chunks(reqs) {
            let sql = succeed_sql(chunk.len(), "AND jobs.watched = 0");
            changed += bind_successes(sqlx::query(&sql), chunk)
                .execute(&mut *conn)
                .await
                .map_err(Self::err)?
                .rows_affected();
        }
        Ok(changed)
    }

    async fn succeed_watched_rows(
        conn: &mut SqliteConnection,
        reqs: &[Success],
    ) -> Result<Vec<Uuid>> {
        let mut ids = Vec::new();
        for chunk in chunks(reqs) {
            let sql = succeed_sql(chunk.len(), "RETURNING jobs.id AS id");
            for row in bind_successes(sqlx::query(&sql), chunk)
                .fetch_all(&mut *conn)
                .await
                .map_err(Self::err)?
            {
                ids.push(uuid_at(&row, "id")?);
            }
        }
        Ok(ids)
    }

    async fn get(&self, id: Uuid) -> Result<Option<JobRecord>> {
        let row = sqlx::query(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?"))
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(Self::err)?;
        row.as_ref().map(record).transpose()
    }

    async fn mark_accepted(&self, id: Uuid) -> Result<()> {
        sqlx::query("UPDATE jobs SET accepted = 1 WHERE id = ?")
            .bind(id.to_string())
            .execute(&self.pool)
            .await
            .map_err(Self::err)?;
        Ok(())
    }

    async fn watch(&self, id: Uuid) -> Result<()> {
        sqlx::query("UPDATE jobs SET watched = 1 WHERE id = ? AND watched = 0")
            .bind(id.to_string())
            .execute(&self.pool)
            .await
            .map_err(Self::err)?;
        Ok(())
    }

    async fn forget_unpublished(&self, id: Uuid) -> Result<()> {
        sqlx::query("DELETE FROM jobs WHERE id = ? AND status = 'queued' AND attempts = 0")
            .bind(id.to_string())
            .execute(&self.pool)
            .await
            .map_err(Self::err)?;
        Ok(())
    }

    async fn retry(
        &self,
        id: Uuid,
        owner: &str,
        error: &str,
        next_attempt_at: i64,
        payload: &[u8],
    ) -> Result<()> {
        sqlx::query(
            "UPDATE jobs SET status = 'retrying', last_error = ?, next_attempt_at = ?, \
             resend_payload = ?, lease_owner = NULL, lease_until = NULL \
             WHERE id = ? AND lease_owner = ?",
        )
        .bind(error)
        .bind(next_attempt_at)
        .bind(payload)
        .bind(id.to_string())
        .bind(owner)
        .execute(&self.pool)
        .await
        .map_err(Self::err)?;
        Ok(())
    }

    async fn take_overdue(
        &self,
        queues: &[String],
        due_before: i64,
        recheck_at: i64,
        limit: u32,
    ) -> Result<Vec<Overdue>> {
        // One statement: SQLite runs one writer at a time, so no other process can claim or
        // take a row between the lookup and the update. `jobs_due` (migration 0004) serves
        // the lookup.
        let queues = serde_json::to_string(queues).map_err(|e| {
            Error::store_kind(StoreErrorKind::Other, format!("queue names as JSON: {e}"))
        })?;
        let rows = sqlx::query(
            "UPDATE jobs SET next_attempt_at = ? WHERE id IN \
             (SELECT id FROM jobs WHERE resend_payload IS NOT NULL AND next_attempt_at < ? \
              AND status IN ('queued', 'retrying') AND queue IN (SELECT value FROM json_each(?)) \
              ORDER BY next_attempt_at LIMIT ?) \
             RETURNING id, queue, attempts, max_attempts, correlation_id, idempotency_key, \
             resend_payload",
        )
        .bind(recheck_at)
        .bind(due_before)
        .bind(queues)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(Self::err)?;
        rows.iter()
            .map(|row| {
                Ok(Overdue {
                    id: uuid_at(row, "id")?,
                    queue: row.try_get("queue").map_err(Self::err)?,
                    attempts: to_u32(row.try_get("attempts").map_err(Self::err)?),
                    max_attempts: to_u32(row.try_get("max_attempts").map_err(Self::err)?),
                    correlation_id: row.try_get("correlation_id").map_err(Self::err)?,
                    idempotency_key: row.try_get("idempotency_key").map_err(Self::err)?,
                    payload: row.try_get("resend_payload").map_err(Self::err)?,
                })
            })
            .collect()
    }

    async fn cancel_row(&self, id: Uuid, now: i64) -> Result<Option<JobRecord>> {
        let row = sqlx::query(&format!(
            "UPDATE jobs SET status = 'cancelled', finished_at = ?, next_attempt_at = NULL, \
             resend_payload = NULL WHERE id = ? AND status IN ('queued', 'retrying') RETURNING {JOB_COLUMNS}"
        ))
        .bind(now)
        .bind(id.to_string())
        .fetch_optional(&self.pool)
        .await
        .map_err(Self::err)?;
        row.as_ref().map(record).transpose()
    }

    async fn dead(&self, id: Uuid, error: &str, now: i64) -> Result<()> {
        sqlx::query(
            "UPDATE jobs SET status = 'dead', last_error = ?, finished_at = ?, next_attempt_at = NULL, \
             resend_payload = NULL, lease_owner = NULL, lease_until = NULL WHERE id = ? AND status NOT IN ('succeeded', 'cancelled')",
        )
        .bind(error)
        .bind(now)
        .bind(id.to_string())
        .execute(&self.pool)
        .await
        .map_err(Self::err)?;
        Ok(())
    }

    async fn release(&self, id: Uuid, owner: &str) -> Result<()> {
        sqlx::query(
            "UPDATE jobs SET status = 'queued', attempts = MAX(attempts - 1, 0), \
             lease_owner = NULL, lease_until = NULL WHERE id = ? AND status = 'running' AND lease_owner = ?",
        )
        .bind(id.to_string())
        .bind(owner)
        .execute(&self.pool)
        .await
        .map_err(Self::err)?;
        Ok(())
    }

    async fn revive(&self, ids: &[Uuid], queue: &str) -> Result<()> {
        per_id(
            &self.pool,
            "UPDATE jobs SET status = 'queued', queue = ?, attempts = 0, finished_at = NULL, \
             next_attempt_at = NULL, discarded_at = NULL WHERE id = ? AND status = 'dead'",
            queue.to_owned(),
            ids,
        )
        .await
    }

    async fn discard(&self, ids: &[Uuid], now: i64) -> Result<()> {
        per_id(
            &self.pool,
            "UPDATE jobs SET discarded_at = ? WHERE id = ? AND status = 'dead'",
            now,
            ids,
        )
        .await
    }

    async fn active_counts(&self) -> Result<BTreeMap<String, ActiveCounts>> {
        // Served by the index `jobs_status_id` (migration 0005).
        let rows = sqlx::query_as::<_, (String, String, i64)>(super::search::ACTIVE_COUNTS)
            .fetch_all(&self.pool)
            .await
            .map_err(Self::err)?;
        Ok(ActiveCounts::by_queue(rows))
    }

    /// Takes the write lock and gives it back (`BEGIN IMMEDIATE; ROLLBACK`), waiting up to
    /// [`PING_BUSY_TIMEOUT`] for it: a store another process holds locked, or a read-only
    /// file, cannot take jobs, though a `SELECT` would still answer.
    async fn ping(&self) -> Result<()> {
        let mut conn = self.pool.acquire().await.map_err(Self::err)?;
        let set_busy = |ms: u128| format!("PRAGMA busy_timeout = {ms}");
        sqlx::query(&set_busy(PING_BUSY_TIMEOUT.as_millis()))
            .execute(&mut *conn)
            .await
            .map_err(Self::err)?;
        let probe = async {
            sqlx::query("BEGIN IMMEDIATE").execute(&mut *conn).await?;
            sqlx::query("ROLLBACK").execute(&mut *conn).await
        }
        .await;
        // The pool's connections keep their usual busy timeout, whatever the probe found.
        let restored = sqlx::query(&set_busy(BUSY_TIMEOUT.as_millis()))
            .execute(&mut *conn)
            .await;
        if probe.is_err() || restored.is_err() {
            // Not returned to the pool half-way (in a transaction, or with the short timeout).
            conn.close_on_drop();
        }
        probe.map_err(Self::err)?;
        restored.map_err(Self::err)?;
        Ok(())
    }

    /// On the writer connection, in turn with the group commits: a chunk delays them by
    /// its own few ms instead of making them sleep in SQLite's busy handler (1, 2, 5… ms
    /// between tries) while it holds the write lock.
    async fn prune_chunk(&self, from: i64, cutoff: i64, limit: u32) -> Result<(u64, Option<i64>)> {
        let mut conn = self.writer().await?;
        // Served by the partial index `jobs_finished`.
        let finished: Vec<i64> = sqlx::query_scalar(
            "DELETE FROM jobs WHERE rowid IN (SELECT rowid FROM jobs \
             WHERE finished_at IS NOT NULL AND finished_at >= ? AND finished_at < ? \
             ORDER BY finished_at LIMIT ?) RETURNING finished_at",
        )
        .bind(from)
        .bind(cutoff)
        .bind(i64::from(limit))
        .fetch_all(&mut *conn)
        .await
        .map_err(Self::err)?;
        Ok((finished.len() as u64, finished.into_iter().max()))
    }

    async fn counts(&self) -> Result<Vec<(String, JobStatus, u64)>> {
        let rows = sqlx::query_as::<_, (String, String, i64)>(
            "SELECT queue, status, COUNT(*) FROM jobs GROUP BY queue, status",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(Self::err)?;
        rows.into_iter()
            .map(|(q, s, n)| Ok((q, parse_status(&s)?, u64::try_from(n).unwrap_or(0))))
            .collect()
    }

    async fn oldest_created_at(&self) -> Result<Option<i64>> {
        // UUIDv7 ids sort by creation time: the first id is the oldest job.
        sqlx::query_scalar("SELECT created_at FROM jobs ORDER BY id LIMIT 1")
            .fetch_optional(&self.pool)
            .await
            .map_err(Self::err)
    }

    async fn schema_versions(&self) -> Result<(Option<i64>, i64)> {
        let applied: Option<i64> =
            sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations WHERE success")
                .fetch_optional(&self.pool)
                .await
                .ok()
                .flatten()
                .flatten();
        Ok((applied, newest_migration(&MIGRATOR)))
    }

    async fn export(&self, after: Option<Uuid>, limit: u32) -> Result<Vec<JobRow>> {
        let rows = sqlx::query(&format!(
            "SELECT {JOB_COLUMNS}, request_hash, accepted, lease_owner, lease_until, \
             resend_payload FROM jobs WHERE id > ? ORDER BY id LIMIT ?"
        ))
        .bind(after.map_or_else(String::new, |id| id.to_string()))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(Self::err)?;
        rows.iter()
            .map(|row| {
                Ok(JobRow {
                    record: record(row)?,
                    request_hash: row.try_get("request_hash").map_err(Self::err)?,
                    accepted: row.try_get("accepted").map_err(Self::err)?,
                    lease_owner: row.try_get("lease_owner").map_err(Self::err)?,
                    lease_until: row.try_get("lease_until").map_err(Self::err)?,
                    resend_payload: row.try_get("resend_payload").map_err(Self::err)?,
                })
            })
            .collect()
    }

    async fn last_id(&self) -> Result<Option<Uuid>> {
        let id: Option<String> = sqlx::query_scalar("SELECT id FROM jobs ORDER BY id DESC LIMIT 1")
            .fetch_optional(&self.pool)
            .await
            .map_err(Self::err)?;
        id.map(|id| {
            Uuid::parse_str(&id).map_err(|e| {
                Error::store_kind(
                    StoreErrorKind::Data,
                    format!("bad job id `{id}` in store: {e}"),
                )
            })
        })
        .transpose()
    }

    async fn import(&self, rows: &[JobRow]) -> Result<u64> {
        let mut conn = self.writer().await?;
        let mut tx = sqlx::Connection::begin(&mut *conn)
            .await
            .map_err(Self::err)?;
        let mut inserted = 0;
        // 20 values a row: chunks of 1,024 rows stay under SQLite's 32,766 bound values.
        for chunk in rows.chunks(1_024) {
            let marks =
                vec!["(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"; chunk.len()]
                    .join(", ");
            let sql = format!(
                "INSERT INTO jobs ({JOB_COLUMNS}, request_hash, accepted, lease_owner, lease_until, \
                 resend_payload) VALUES {marks} ON CONFLICT (id) DO NOTHING"
            );
            let mut query = sqlx::query(&sql);
            for row in chunk {
                let r = &row.record;
                query = query
                    .bind(r.id.to_string())
                    .bind(&r.queue)
                    .bind(r.status.as_str())
                    .bind(i64::from(r.attempts))
                    .bind(i64::from(r.max_attempts))
                    .bind(&r.last_error)
                    .bind(&r.result)
                    .bind(&r.correlation_id)
                    .bind(&r.idempotency_key)
                    .bind(r.created_at)
                    .bind(r.started_at)
                    .bind(r.finished_at)
                    .bind(r.next_attempt_at)
                    .bind(r.discarded_at)
                    .bind(&r.schedule)
                    .bind(&row.request_hash)
                    .bind(row.accepted)
                    .bind(&row.lease_owner)
                    .bind(row.lease_until)
                    .bind(row.resend_payload.as_deref());
            }
            inserted += query
                .execute(&mut *tx)
                .await
                .map_err(Self::err)?
                .rows_affected();
        }
        tx.commit().await.map_err(Self::err)?;
        Ok(inserted)
    }

    async fn queue_pause(&self, queue: &str, now: i64) -> Result<bool> {
        let done = sqlx::query(
            "INSERT INTO paused_queues (queue, paused_at) VALUES (?, ?) ON CONFLICT (queue) DO NOTHING",
        )
        .bind(queue)
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(Self::err)?;
        Ok(done.rows_affected() == 1)
    }

    async fn queue_resume(&self, queue: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM paused_queues WHERE queue = ?")
            .bind(queue)
            .execute(&self.pool)
            .await
            .map_err(Self::err)?;
        Ok(done.rows_affected() == 1)
    }

    async fn queues_paused(&self) -> Result<BTreeMap<String, i64>> {
        let rows = sqlx::query_as::<_, (String, i64)>("SELECT queue, paused_at FROM paused_queues")
            .fetch_all(&self.pool)
            .await
            .map_err(Self::err)?;
        Ok(rows.into_iter().collect())
    }

    async fn buckets(&self) -> Result<BTreeMap<String, Bucket>> {
        let rows = sqlx::query_as::<_, (String, f64, i64)>(
            "SELECT queue, tokens, updated_at FROM rate_buckets",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(Self::err)?;
        Ok(rows
            .into_iter()
            .map(|(q, tokens, updated_at)| (q, Bucket { tokens, updated_at }))
            .collect())
    }

    async fn throttle(&self, queue: &str, until: i64, reason: &str) -> Result<()> {
        sqlx::query(
            "INSERT INTO queue_throttles (queue, until_ms, reason) VALUES (?, ?, ?) \
             ON CONFLICT (queue) DO UPDATE SET \
             reason = CASE WHEN excluded.until_ms > until_ms THEN excluded.reason ELSE reason END, \
             until_ms = MAX(until_ms, excluded.until_ms)",
        )
        .bind(queue)
        .bind(until)
        .bind(reason)
        .execute(&self.pool)
        .await
        .map_err(Self::err)?;
        Ok(())
    }

    async fn throttles(&self, now: i64) -> Result<BTreeMap<String, i64>> {
        let rows = sqlx::query_as::<_, (String, i64)>(
            "SELECT queue, until_ms FROM queue_throttles WHERE until_ms > ?",
        )
        .bind(now)
        .fetch_all(&self.pool)
        .await
        .map_err(Self::err)?;
        Ok(rows.into_iter().collect())
    }

    async fn schedule_find(&self, name: &str) -> Result<Option<ScheduleState>> {
        let row = sqlx::query("SELECT last_tick, last_job FROM schedules WHERE name = ?")
            .bind(name)
            .fetch_optional(&self.pool)
            .await
            .map_err(Self::err)?;
        row.as_ref().map(schedule_state).transpose()
    }

    async fn schedule_create(&self, name: &str, now: i64) -> Result<ScheduleState> {
        // Writes the row only when absent; a concurrent creator's row is returned as it is.
        let row = sqlx::query(
            "INSERT INTO schedules (name, last_tick, last_job) VALUES (?, ?, NULL) \
             ON CONFLICT (name) DO UPDATE SET name = excluded.name \
             RETURNING last_tick, last_job",
        )
        .bind(name)
        .bind(now)
        .fetch_one(&self.pool)
        .await
        .map_err(Self::err)?;
        schedule_state(&row)
    }

    async fn schedule_advance(&self, name: &str, tick: i64, job: Option<Uuid>) -> Result<()> {
        // In `DO UPDATE SET` every unqualified column is the row's value before the update.
        sqlx::query(
            "INSERT INTO schedules (name, last_tick, last_job) VALUES (?, ?, ?) \
             ON CONFLICT (name) DO UPDATE SET \
             last_job = CASE WHEN excluded.last_tick >= last_tick THEN COALESCE(excluded.last_job, last_job) \
             ELSE last_job END, \
             last_tick = MAX(last_tick, excluded.last_tick)",
        )
        .bind(name)
        .bind(tick)
        .bind(job.map(|j| j.to_string()))
        .execute(&self.pool)
        .await
        .map_err(Self::err)?;
        Ok(())
    }

    async fn schedule_states(&self) -> Result<BTreeMap<String, ScheduleState>> {
        let rows = sqlx::query("SELECT name, last_tick, last_job FROM schedules")
            .fetch_all(&self.pool)
            .await
            .map_err(Self::err)?;
        rows.iter()
            .map(|row| {
                let name: String = row.try_get("name").map_err(Self::err)?;
                Ok((name, schedule_state(row)?))
            })
            .collect()
    }

    const DIALECT: super::search::Dialect = super::search::Dialect {
        placeholder: |n| format!("?{n}"),
        ilike: "LIKE",
    };

    async fn list_rows(&self, sql: &super::search::Sql) -> Result<Vec<JobRecord>> {
        use super::search::Value;
        let mut query = sqlx::query(&sql.text);
        for v in &sql.values {
            query = match v {
                Value::Text(t) => query.bind(t.as_str()),
                Value::Int(i) => query.bind(*i),
                Value::Id(id) => query.bind(id.to_string()),
            };
        }
        let rows = query.fetch_all(&self.pool).await.map_err(Self::err)?;
        rows.iter().map(record).collect()
    }

    async fn cancel_rows(&self, ids: &[Uuid], now: i64) -> Result<Vec<Uuid>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        // The single cancel's statement (`cancel_row`), for a list of ids.
        let sql = "UPDATE jobs SET status = 'cancelled', finished_at = ?, next_attempt_at = NULL, \
             resend_payload = NULL WHERE id IN (SELECT value FROM json_each(?)) \
             AND status IN ('queued', 'retrying') RETURNING id";
        let list = serde_json::to_string(&ids.iter().map(Uuid::to_string).collect::<Vec<_>>())
            .map_err(|e| Error::store_kind(StoreErrorKind::Other, format!("ids as JSON: {e}")))?;
        let mut conn = self.writer().await?;
        let rows = sqlx::query(sql)
            .bind(now)
            .bind(list)
            .fetch_all(&mut *conn)
            .await
            .map_err(Self::err)?;
        ids_in_order(&rows)
    }
}

/// A row of `schedules` (`last_tick`, `last_job`) as a [`ScheduleState`].
fn schedule_state(row: &SqliteRow) -> Result<ScheduleState> {
    let last_job: Option<String> = row.try_get("last_job").map_err(Sqlite::err)?;
    Ok(ScheduleState {
        last_tick: row.try_get("last_tick").map_err(Sqlite::err)?,
        last_job: last_job
            .map(|id| {
                Uuid::parse_str(&id).map_err(|e| {
                    Error::store_kind(
                        StoreErrorKind::Data,
                        format!("bad job id `{id}` in the schedules table: {e}"),
                    )
                })
            })
            .transpose()?,
    })
}

/// The `id` column of `rows`, parsed, in row order.
fn ids_in_order(rows: &[SqliteRow]) -> Result<Vec<Uuid>> {
    rows.iter().map(|row| uuid_at(row, "id")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::JobStore;
    use crate::store::conformance::new_job;

    async fn store() -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        (dir, SqliteStore::open(&url).await.expect("open"))
    }

    #[tokio::test]
    async fn stores_opened_together_on_a_new_file_all_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let opened = futures::future::join_all((0..6).map(|_| SqliteStore::open(&url))).await;
        for o in opened {
            if let Err(e) = o {
                panic!("{e}");
            }
        }
    }

    /// Commits never checkpoint (`wal_autocheckpoint = 0`), so rows reach the database file
    /// only through the background checkpoints; without them the WAL would grow for ever.
    #[tokio::test]
    async fn committed_rows_are_checkpointed_into_the_database_file() {
        let (dir, s) = store().await;
        let file = dir.path().join("t.db");
        let size = || std::fs::metadata(&file).map_or(0, |m| m.len());
        let before = size();
        let jobs: Vec<NewJob> = (0..2_000).map(|_| new_job("q")).collect();
        s.insert_many(&jobs).await.expect("insert_many");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while size() < before + 100_000 {
            assert!(
                std::time::Instant::now() < deadline,
                "no checkpoint within 10 s: {before} → {} bytes",
                size()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(
            s.get(jobs[1_999].id).await.expect("get").map(|r| r.id),
            Some(jobs[1_999].id)
        );
    }

    #[test]
    fn checkpoints_back_off_while_little_is_written_and_speed_up_under_load() {
        let mut wait = CHECKPOINT_EVERY;
        let mut idle = Vec::new();
        for _ in 0..6 {
            wait = next_checkpoint_wait(wait, 0);
            idle.push(wait.as_millis());
        }
        assert_eq!(idle, [200, 400, 800, 1_000, 1_000, 1_000]);
        // A few hundred jobs a second: a few hundred frames a second stay a second apart.
        assert_eq!(next_checkpoint_wait(wait, 300), CHECKPOINT_IDLE_MAX);
        // Written fast: back to the shortest wait at once.
        assert_eq!(next_checkpoint_wait(wait, 20_000), CHECKPOINT_EVERY);
        // In between: paced to about `CHECKPOINT_FRAMES` a checkpoint.
        let paced = next_checkpoint_wait(Duration::from_millis(400), 2 * CHECKPOINT_FRAMES);
        assert_eq!(paced.as_millis(), 200);
    }

    #[test]
    fn new_frames_count_growth_past_the_last_copy_or_a_restarted_wal() {
        assert_eq!(new_frames((100, 100), (250, 250)), 150);
        assert_eq!(new_frames((100, 80), (100, 100)), 20);
        // The WAL started over from its beginning.
        assert_eq!(new_frames((900, 900), (40, 40)), 40);
        assert_eq!(new_frames((0, 0), (0, 0)), 0);
    }

    #[test]
    fn chunks_are_powers_of_two_up_to_the_limit() {
        let rows: Vec<u32> = (0..600).collect();
        let sizes: Vec<usize> = chunks(&rows).map(<[u32]>::len).collect();
        assert_eq!(sizes, [256, 256, 64, 16, 8]);
    }

    /// A keyless batch whose row count falls short (only a repeated id can make it so)
    /// reads back which rows exist, and its jobs are all answered as stored.
    #[tokio::test]
    async fn a_keyless_batch_whose_row_count_falls_short_reads_back_which_rows_exist() {
        let (_d, s) = store().await;
        let stored = new_job("q");
        s.insert(&stored).await.expect("insert");
        let fresh = new_job("q");
        let answers = s
            .insert_many(&[stored.clone(), fresh.clone()])
            .await
            .expect("insert_many");
        assert_eq!(answers, vec![Inserted::New, Inserted::New]);
        for id in [stored.id, fresh.id] {
            assert!(s.get(id).await.expect("get").is_some(), "{id} is stored");
        }
    }
}
