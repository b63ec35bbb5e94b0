//! The embedded SQLite store: one file, WAL journal (<https://sqlite.org/wal.html>), so
//! `warren run` needs nothing else.

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
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use super::{Cancel, Claim, ClaimRequest, Inserted, JobRecord, JobStatus, NewJob, Store};
use crate::error::{Error, Result};

/// A [`Store`] on one SQLite database file.
///
/// [`Store::insert`] is group-committed: concurrent inserts queue for one writer task, which
/// stores every insert waiting (up to [`GROUP_COMMIT_MAX`]) with multi-row `INSERT`s (a
/// statement is its own transaction: one commit for many rows). Under load many requests share
/// a statement and a commit and never contend for SQLite's write lock among themselves; alone,
/// an insert is a batch of one (the writer waits for no timer, only lets the tasks that are
/// ready run first: `join_ready`). The worker writes' commit does the same.
///
/// The workers' hot path, [`Store::claim`] and [`Store::succeed`], is group-committed the same
/// way by a second writer: every claim and success waiting (up to [`GROUP_COMMIT_MAX`]) runs in
/// one transaction, in arrival order, each with its own answer. One commit and one hand-off to
/// SQLite's thread per batch instead of per job; a claim stays atomic (each is one conditional
/// `UPDATE` inside the writer's transaction, and there is one writer).
///
/// Every writer that batches (the two group commits and [`Store::insert_many`]) writes on one
/// dedicated connection, taking turns on its lock (FIFO) instead of meeting at SQLite's write
/// lock, whose busy handler sleeps 1, 2, 5… ms between tries; one connection also keeps its
/// page cache valid between batches. Reads and the rarer single writes use the pool.
///
/// WAL checkpoints (copying committed pages into the database file, with an fsync) run on a
/// pool connection every [`CHECKPOINT_EVERY`] while the store is written (backing off to
/// [`CHECKPOINT_IDLE_MAX`] while it is not), never inside a commit: SQLite's automatic
/// checkpoint would run one in whichever commit crosses 1,000 WAL pages and hold every request
/// of that batch for the fsync (it was the POST→202 p99 tail in BENCHMARKS.md). A passive
/// checkpoint does not block the writer (<https://sqlite.org/wal.html#ckpt>).
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    writer: Writer,
    inserts: mpsc::Sender<(NewJob, oneshot::Sender<Result<Inserted>>)>,
    worker_writes: mpsc::Sender<WorkerWrite>,
    /// Stops the checkpoint task when the last clone of the store is dropped.
    _checkpoints: Arc<tokio_util::sync::DropGuard>,
}

/// The dedicated writer connection (see [`SqliteStore`]).
type Writer = Arc<tokio::sync::Mutex<SqliteConnection>>;

/// A worker's write, queued for the worker-write group commit (see [`SqliteStore`]).
#[derive(Debug)]
enum WorkerWrite {
    Claim(OwnedClaim, oneshot::Sender<Result<Claim>>),
    Succeed {
        id: Uuid,
        owner: String,
        result: Option<String>,
        now: i64,
        reply: oneshot::Sender<Result<()>>,
    },
}

/// A [`ClaimRequest`] that can wait in a queue.
#[derive(Debug)]
struct OwnedClaim {
    id: Uuid,
    queue: String,
    max_attempts: u32,
    correlation_id: Option<String>,
    owner: String,
    now: i64,
    lease: Duration,
}

/// Most inserts the group-commit writer takes into one transaction.
const GROUP_COMMIT_MAX: usize = 256;
/// Most rows in one multi-row `INSERT` (9 bound values a row; SQLite allows 32,766); a power
/// of two.
const INSERT_CHUNK: usize = 256;

const JOB_COLUMNS: &str = "id, queue, status, attempts, max_attempts, last_error, result, \
    correlation_id, idempotency_key, created_at, started_at, finished_at, next_attempt_at, discarded_at";

impl SqliteStore {
    /// Opens (creating if missing) and migrates the database at `url` (`sqlite://PATH`).
    ///
    /// Connections use WAL with `synchronous = NORMAL` (durable across a process crash; the
    /// job itself is durable in RabbitMQ) and a 5 s busy timeout.
    ///
    /// # Errors
    /// [`crate::ErrorKind::Store`] when the file cannot be opened, is read-only or cannot be
    /// migrated.
    pub async fn open(url: &str) -> Result<Self> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|e| Error::store(format!("invalid store URL: {e}")))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(5))
            // Checkpoints run in the background (see `checkpoints`), not inside a commit.
            .pragma("wal_autocheckpoint", "0");
        // Processes started together (an intake and a worker on one file) meet at the first
        // connection's switch to WAL, where SQLite answers "database is locked" without
        // waiting for its busy timeout, and at the migrations, which sqlx does not lock on
        // SQLite: try again, with jittered backoff.
        let pool = (|| open_and_migrate(url, options.clone()))
            .retry(
                ExponentialBuilder::default()
                    .with_min_delay(Duration::from_millis(20))
                    .with_max_delay(Duration::from_secs(1))
                    .with_max_times(30)
                    .with_jitter(),
            )
            .when(|e| e.locked)
            .await
            .map_err(|e| Error::store(e.message))?;
        let writer: Writer = Arc::new(tokio::sync::Mutex::new(
            pool.acquire().await.map_err(Error::from)?.detach(),
        ));
        let (inserts, queued) = mpsc::channel(4 * GROUP_COMMIT_MAX);
        tokio::spawn(group_commit(writer.clone(), queued));
        let (worker_writes, writes) = mpsc::channel(4 * GROUP_COMMIT_MAX);
        tokio::spawn(worker_writer(writer.clone(), writes));
        let stop = tokio_util::sync::CancellationToken::new();
        tokio::spawn(checkpoints(pool.clone(), stop.clone()));
        Ok(Self {
            pool,
            writer,
            inserts,
            worker_writes,
            _checkpoints: Arc::new(stop.drop_guard()),
        })
    }
}

/// Why opening the store failed, and whether it was only another process holding the lock.
struct OpenError {
    message: String,
    locked: bool,
}

/// True for SQLITE_BUSY and SQLITE_LOCKED (<https://sqlite.org/rescode.html>), with their
/// extended codes.
fn is_locked(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(d) => d
            .code()
            .and_then(|c| c.parse::<i32>().ok())
            .is_some_and(|c| matches!(c & 0xff, 5 | 6)),
        _ => false,
    }
}

/// True when a migration failed because another process applied the same DDL first.
fn applied_elsewhere(e: &sqlx::Error) -> bool {
    let text = e.to_string();
    text.contains("already exists") || text.contains("duplicate column name")
}

/// Connects to `url` and runs the migrations.
async fn open_and_migrate(
    url: &str,
    options: SqliteConnectOptions,
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
            message: format!("cannot open {url}: {e}"),
        })?;
    sqlx::migrate!("./migrations/sqlite")
        .run(&pool)
        .await
        .map_err(|e| OpenError {
            // Another process ran the same migration first (sqlx takes no lock on SQLite);
            // each migration is one transaction, so trying again finds it applied.
            locked: matches!(&e, sqlx::migrate::MigrateError::ExecuteMigration(inner, _)
                    if is_locked(inner) || applied_elsewhere(inner))
                || matches!(&e, sqlx::migrate::MigrateError::Execute(inner) if is_locked(inner)),
            message: format!("cannot migrate {url}: {e}"),
        })?;
    Ok(pool)
}

/// The group-commit writer (see [`SqliteStore`]); ends when every store handle is dropped.
async fn group_commit(
    writer: Writer,
    mut queued: mpsc::Receiver<(NewJob, oneshot::Sender<Result<Inserted>>)>,
) {
    let mut batch = Vec::with_capacity(GROUP_COMMIT_MAX);
    while queued.recv_many(&mut batch, GROUP_COMMIT_MAX).await > 0 {
        join_ready(&mut queued, &mut batch).await;
        let mut conn = writer.lock().await;
        let (jobs, replies): (Vec<NewJob>, Vec<_>) = batch.drain(..).unzip();
        metrics::histogram!(crate::telemetry::STORE_WRITE_BATCH, "writer" => "intake")
            .record(jobs.len() as f64);
        let inserted = insert_rows_or_find(&mut conn, &jobs).await;
        match inserted {
            Ok(answers) => {
                for (reply, answer) in replies.into_iter().zip(answers) {
                    let _ = reply.send(Ok(answer));
                }
            }
            // One at a time, so that whatever failed fails only its own request.
            Err(e) if jobs.len() > 1 => {
                tracing::debug!(error = %e, jobs = jobs.len(), "group insert failed; inserting one by one");
                for (job, reply) in jobs.iter().zip(replies) {
                    let _ = reply.send(insert_one(&mut conn, job).await);
                }
            }
            Err(e) => {
                if let Some(reply) = replies.into_iter().next() {
                    let _ = reply.send(Err(e));
                }
            }
        }
    }
}

/// Before a group commit of fewer than [`GROUP_COMMIT_MAX`] writes, lets the tasks that are
/// ready to run go first (one `yield_now`, which tokio defers until it has polled for I/O)
/// and takes what they queue meanwhile into `batch`. Under load those are requests about to
/// queue writes of their own, and joining this commit costs them far less than a commit of
/// their own (each costs SQLite the same file locks and WAL frames); idle, it costs one pass
/// of the scheduler.
async fn join_ready<T>(queued: &mut mpsc::Receiver<T>, batch: &mut Vec<T>) {
    if batch.len() >= GROUP_COMMIT_MAX {
        return;
    }
    tokio::task::yield_now().await;
    while batch.len() < GROUP_COMMIT_MAX {
        match queued.try_recv() {
            Ok(item) => batch.push(item),
            Err(_) => break,
        }
    }
}

/// How often the background task checkpoints the WAL while it is written (see
/// [`SqliteStore`]).
const CHECKPOINT_EVERY: Duration = Duration::from_millis(100);
/// The longest wait between checkpoints while nothing is written: an idle store wakes once a
/// second, and a burst after a quiet spell waits at most this long for its first checkpoint.
const CHECKPOINT_IDLE_MAX: Duration = Duration::from_secs(1);

/// Checkpoints the WAL (`PRAGMA wal_checkpoint(PASSIVE)`,
/// <https://sqlite.org/pragma.html#pragma_wal_checkpoint>) until `stop` is cancelled or the
/// pool closes, then once more; waits between them as [`next_checkpoint_wait`] says. A
/// checkpoint that fails (another process's checkpoint holds the lock, say) is tried again
/// next time.
async fn checkpoints(pool: SqlitePool, stop: tokio_util::sync::CancellationToken) {
    let mut wait = CHECKPOINT_EVERY;
    // (frames in the WAL, frames checkpointed) after the last checkpoint.
    let mut last = None;
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
                let unchanged = last.replace((log, checkpointed)) == Some((log, checkpointed));
                wait = next_checkpoint_wait(wait, unchanged);
            }
        }
        if stopping {
            return;
        }
    }
}

/// The wait before the next checkpoint, after one that waited `last`: [`CHECKPOINT_EVERY`]
/// when the WAL had changed since the checkpoint before (something was written), otherwise
/// twice `last`, up to [`CHECKPOINT_IDLE_MAX`].
fn next_checkpoint_wait(last: Duration, unchanged: bool) -> Duration {
    if unchanged {
        (last * 2).min(CHECKPOINT_IDLE_MAX)
    } else {
        CHECKPOINT_EVERY
    }
}

/// Inserts one job with an autocommit statement (see [`Store::insert`]).
async fn insert_one(conn: &mut SqliteConnection, job: &NewJob) -> Result<Inserted> {
    loop {
        if let Some(inserted) = insert_on(conn, job).await? {
            return Ok(inserted);
        }
    }
}

/// Inserts `jobs` with multi-row statements on `conn` and answers for each in order: a job
/// whose idempotency key is taken (by an earlier job, maybe of this batch) gets that job.
/// Each statement is atomic; run it in a transaction to make the whole batch so.
async fn insert_rows_or_find(
    conn: &mut SqliteConnection,
    jobs: &[NewJob],
) -> Result<Vec<Inserted>> {
    let mut out = Vec::with_capacity(jobs.len());
    let mut rest = jobs;
    while !rest.is_empty() {
        // Chunks of a power of two rows: at most 9 distinct statements, all kept prepared.
        let n = INSERT_CHUNK.min(1 << rest.len().ilog2());
        let (chunk, tail) = rest.split_at(n);
        rest = tail;
        let fresh = insert_rows(conn, chunk).await?;
        for job in chunk {
            if fresh.contains(&job.id) {
                out.push(Inserted::New);
                continue;
            }
            // Its key was taken: read that job (or, if it vanished meanwhile because its
            // publish failed, insert this one after all).
            loop {
                if let Some(inserted) = insert_on(conn, job).await? {
                    out.push(inserted);
                    break;
                }
            }
        }
    }
    Ok(out)
}

/// One multi-row `INSERT … ON CONFLICT DO NOTHING`: the ids of the jobs inserted (a job whose
/// idempotency key is taken is not).
///
/// Without idempotency keys in `jobs` only a fresh UUIDv7 could conflict, so the statement
/// runs without `RETURNING` (one answer instead of a row per job through sqlx's row channel)
/// and its row count says all went in; should it not, the ids present are read back.
async fn insert_rows(conn: &mut SqliteConnection, jobs: &[NewJob]) -> Result<HashSet<Uuid>> {
    let keyless = jobs.iter().all(|j| j.idempotency_key.is_none());
    let mut sql = String::with_capacity(200 + 40 * jobs.len());
    sql.push_str(
        "INSERT INTO jobs (id, queue, status, max_attempts, correlation_id, idempotency_key, \
         request_hash, accepted, created_at, next_attempt_at) VALUES ",
    );
    for i in 0..jobs.len() {
        if i > 0 {
            sql.push(',');
        }
        sql.push_str("(?, ?, 'queued', ?, ?, ?, ?, ?, ?, ?)");
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
            .bind(job.next_attempt_at);
    }
    if keyless {
        let inserted = query.execute(&mut *conn).await?.rows_affected();
        if usize::try_from(inserted).is_ok_and(|n| n == jobs.len()) {
            return Ok(jobs.iter().map(|j| j.id).collect());
        }
        return present_ids(conn, jobs).await;
    }
    ids(&query.fetch_all(&mut *conn).await?)
}

/// The `id` column of `rows`, parsed.
fn ids(rows: &[SqliteRow]) -> Result<HashSet<Uuid>> {
    rows.iter()
        .map(|row| {
            let id: String = row.try_get("id")?;
            Uuid::parse_str(&id).map_err(Error::store)
        })
        .collect()
}

/// Which of `jobs` have a row (by id).
async fn present_ids(conn: &mut SqliteConnection, jobs: &[NewJob]) -> Result<HashSet<Uuid>> {
    let marks = vec!["?"; jobs.len()].join(", ");
    let sql = format!("SELECT id FROM jobs WHERE id IN ({marks})");
    let mut query = sqlx::query(&sql);
    for job in jobs {
        query = query.bind(job.id.to_string());
    }
    ids(&query.fetch_all(&mut *conn).await?)
}

fn to_u32(v: i64) -> u32 {
    u32::try_from(v).unwrap_or(0)
}

fn record(row: &SqliteRow) -> Result<JobRecord> {
    let id: String = row.try_get("id")?;
    let status: String = row.try_get("status")?;
    Ok(JobRecord {
        id: Uuid::parse_str(&id).map_err(Error::store)?,
        queue: row.try_get("queue")?,
        status: JobStatus::parse(&status)
            .ok_or_else(|| Error::store(format!("unknown status `{status}` in store")))?,
        attempts: to_u32(row.try_get("attempts")?),
        max_attempts: to_u32(row.try_get("max_attempts")?),
        last_error: row.try_get("last_error")?,
        result: row.try_get("result")?,
        correlation_id: row.try_get("correlation_id")?,
        idempotency_key: row.try_get("idempotency_key")?,
        created_at: row.try_get("created_at")?,
        started_at: row.try_get("started_at")?,
        finished_at: row.try_get("finished_at")?,
        next_attempt_at: row.try_get("next_attempt_at")?,
        discarded_at: row.try_get("discarded_at")?,
    })
}

/// Inserts `job` on `conn` (see [`Store::insert`]). `None` when a job with the same key was
/// there but vanished before it could be read (its publish failed): try again.
async fn insert_on(conn: &mut SqliteConnection, job: &NewJob) -> Result<Option<Inserted>> {
    if insert_rows(conn, std::slice::from_ref(job))
        .await?
        .contains(&job.id)
    {
        return Ok(Some(Inserted::New));
    }
    let row = sqlx::query(&format!(
        "SELECT {JOB_COLUMNS}, request_hash, accepted FROM jobs WHERE queue = ? AND idempotency_key = ?"
    ))
    .bind(&job.queue)
    .bind(&job.idempotency_key)
    .fetch_optional(&mut *conn)
    .await?;
    row.map(|row| {
        Ok(Inserted::Existing {
            record: Box::new(record(&row)?),
            request_hash: row.try_get("request_hash")?,
            accepted: row.try_get("accepted")?,
        })
    })
    .transpose()
}

impl SqliteStore {
    async fn submit(&self, write: WorkerWrite) -> Result<()> {
        self.worker_writes
            .send(write)
            .await
            .map_err(|_| writer_gone())
    }
}

fn writer_gone() -> Error {
    Error::store("the store's writer task has stopped")
}

/// The worker-write group commit (see [`SqliteStore`]); ends when every store handle is
/// dropped.
async fn worker_writer(writer: Writer, mut queued: mpsc::Receiver<WorkerWrite>) {
    let mut batch = Vec::with_capacity(GROUP_COMMIT_MAX);
    while queued.recv_many(&mut batch, GROUP_COMMIT_MAX).await > 0 {
        join_ready(&mut queued, &mut batch).await;
        let mut conn = writer.lock().await;
        metrics::histogram!(crate::telemetry::STORE_WRITE_BATCH, "writer" => "worker")
            .record(batch.len() as f64);
        let mut tx = match sqlx::Connection::begin(&mut *conn).await {
            Ok(tx) => tx,
            Err(e) => {
                let msg = e.to_string();
                for w in batch.drain(..) {
                    reply_err(w, &msg);
                }
                continue;
            }
        };
        let mut claim_reqs = Vec::new();
        let mut claim_replies = Vec::new();
        let mut success_reqs = Vec::new();
        let mut success_replies = Vec::new();
        for w in batch.drain(..) {
            match w {
                WorkerWrite::Claim(req, reply) => {
                    claim_reqs.push(req);
                    claim_replies.push(reply);
                }
                WorkerWrite::Succeed {
                    id,
                    owner,
                    result,
                    now,
                    reply,
                } => {
                    success_reqs.push((id, owner, result, now));
                    success_replies.push(reply);
                }
            }
        }
        let claim_answers = claim_all(&mut tx, &claim_reqs).await;
        let success_answers = succeed_all(&mut tx, &success_reqs).await;
        let claims: Vec<_> = claim_replies.into_iter().zip(claim_answers).collect();
        let successes: Vec<_> = success_replies.into_iter().zip(success_answers).collect();
        // Nothing is answered before the commit: an answer is a promise that it is stored.
        match tx.commit().await {
            Ok(()) => {
                for (reply, answer) in claims {
                    let _ = reply.send(answer);
                }
                for (reply, answer) in successes {
                    let _ = reply.send(answer);
                }
            }
            Err(e) => {
                let msg = format!("commit failed: {e}");
                for (reply, _) in claims {
                    let _ = reply.send(Err(Error::store(&msg)));
                }
                for (reply, _) in successes {
                    let _ = reply.send(Err(Error::store(&msg)));
                }
            }
        }
    }
}

fn reply_err(write: WorkerWrite, msg: &str) {
    match write {
        WorkerWrite::Claim(_, reply) => {
            let _ = reply.send(Err(Error::store(msg)));
        }
        WorkerWrite::Succeed { reply, .. } => {
            let _ = reply.send(Err(Error::store(msg)));
        }
    }
}

/// Claims a batch of jobs on `conn`, answering each in order. The common case (a job that is
/// `queued` or `retrying`, or whose lease expired) is one multi-row `UPDATE … FROM (VALUES …)
/// RETURNING` for the whole batch; the rest (missing rows, jobs final or leased, an id twice
/// in one batch) go one by one through [`claim_on`].
async fn claim_all(conn: &mut SqliteConnection, reqs: &[OwnedClaim]) -> Vec<Result<Claim>> {
    let mut answers: Vec<Option<Result<Claim>>> = reqs.iter().map(|_| None).collect();
    for (chunk_no, chunk) in reqs.chunks(INSERT_CHUNK).enumerate() {
        let rows = vec!["(?, ?, ?, ?)"; chunk.len()].join(", ");
        let sql = format!(
            "UPDATE jobs SET status = 'running', attempts = attempts + 1, \
             started_at = COALESCE(started_at, v.column2), next_attempt_at = NULL, \
             lease_owner = v.column3, lease_until = v.column4 \
             FROM (VALUES {rows}) AS v \
             WHERE jobs.id = v.column1 AND (jobs.status IN ('queued', 'retrying') \
               OR (jobs.status = 'running' AND (jobs.lease_until IS NULL OR jobs.lease_until <= v.column2))) \
             RETURNING jobs.id, jobs.attempts, jobs.max_attempts"
        );
        // Requests by id, in order: the first one for an id gets its claim.
        let mut waiting: std::collections::HashMap<String, std::collections::VecDeque<usize>> =
            std::collections::HashMap::with_capacity(chunk.len());
        let mut query = sqlx::query(&sql);
        for (i, r) in chunk.iter().enumerate() {
            let id = r.id.to_string();
            waiting
                .entry(id.clone())
                .or_default()
                .push_back(chunk_no * INSERT_CHUNK + i);
            let lease_until = r
                .now
                .saturating_add(i64::try_from(r.lease.as_millis()).unwrap_or(i64::MAX));
            query = query.bind(id).bind(r.now).bind(&r.owner).bind(lease_until);
        }
        match query.fetch_all(&mut *conn).await {
            Ok(claimed) => {
                for row in claimed {
                    let (Ok(id), Ok(attempts), Ok(max_attempts)) = (
                        row.try_get::<String, _>(0),
                        row.try_get::<i64, _>(1),
                        row.try_get::<i64, _>(2),
                    ) else {
                        continue;
                    };
                    if let Some(i) = waiting.get_mut(&id).and_then(|q| q.pop_front()) {
                        answers[i] = Some(Ok(Claim::Claimed {
                            attempt: to_u32(attempts),
                            max_attempts: to_u32(max_attempts),
                        }));
                    }
                }
            }
            Err(e) => tracing::debug!(error = %e, "batched claim failed; claiming one by one"),
        }
    }
    let mut out = Vec::with_capacity(reqs.len());
    for (req, answer) in reqs.iter().zip(answers) {
        out.push(match answer {
            Some(a) => a,
            None => claim_on(conn, req).await,
        });
    }
    out
}

/// Records a batch of successes on `conn` with one multi-row `UPDATE … FROM (VALUES …)`; a
/// success whose lease was lost (another owner) changes nothing, as in [`succeed_on`].
async fn succeed_all(
    conn: &mut SqliteConnection,
    reqs: &[(Uuid, String, Option<String>, i64)],
) -> Vec<Result<()>> {
    let mut out = Vec::with_capacity(reqs.len());
    for chunk in reqs.chunks(INSERT_CHUNK) {
        let rows = vec!["(?, ?, ?, ?)"; chunk.len()].join(", ");
        let sql = format!(
            "UPDATE jobs SET status = 'succeeded', result = v.column3, finished_at = v.column4, \
             lease_owner = NULL, lease_until = NULL \
             FROM (VALUES {rows}) AS v WHERE jobs.id = v.column1 AND jobs.lease_owner = v.column2"
        );
        let mut query = sqlx::query(&sql);
        for (id, owner, result, now) in chunk {
            query = query
                .bind(id.to_string())
                .bind(owner)
                .bind(result)
                .bind(*now);
        }
        match query.execute(&mut *conn).await {
            Ok(_) => out.extend(chunk.iter().map(|_| Ok(()))),
            Err(e) => {
                tracing::debug!(error = %e, "batched success failed; recording one by one");
                for (id, owner, result, now) in chunk {
                    out.push(succeed_on(conn, *id, owner, result.as_deref(), *now).await);
                }
            }
        }
    }
    out
}

/// Claims one job on `conn` (see [`Store::claim`]).
async fn claim_on(conn: &mut SqliteConnection, req: &OwnedClaim) -> Result<Claim> {
    let id = req.id.to_string();
    let lease_until = req
        .now
        .saturating_add(i64::try_from(req.lease.as_millis()).unwrap_or(i64::MAX));
    // Two passes at most: the second after creating a missing row.
    for _ in 0..2 {
        let claimed = sqlx::query(
            "UPDATE jobs SET status = 'running', attempts = attempts + 1, \
                 started_at = COALESCE(started_at, ?1), next_attempt_at = NULL, \
                 lease_owner = ?2, lease_until = ?3 \
                 WHERE id = ?4 AND (status IN ('queued', 'retrying') \
                   OR (status = 'running' AND (lease_until IS NULL OR lease_until <= ?1))) \
                 RETURNING attempts, max_attempts",
        )
        .bind(req.now)
        .bind(&req.owner)
        .bind(lease_until)
        .bind(&id)
        .fetch_optional(&mut *conn)
        .await?;
        if let Some(row) = claimed {
            return Ok(Claim::Claimed {
                attempt: to_u32(row.try_get("attempts")?),
                max_attempts: to_u32(row.try_get("max_attempts")?),
            });
        }
        let current = sqlx::query("SELECT status, lease_until FROM jobs WHERE id = ?")
            .bind(&id)
            .fetch_optional(&mut *conn)
            .await?;
        match current {
            Some(row) => {
                let status: String = row.try_get("status")?;
                let status = JobStatus::parse(&status)
                    .ok_or_else(|| Error::store(format!("unknown status `{status}`")))?;
                if status.is_final() {
                    return Ok(Claim::Final(status));
                }
                let until: Option<i64> = row.try_get("lease_until")?;
                return Ok(Claim::Busy {
                    until: until.unwrap_or(req.now),
                });
            }
            None => {
                sqlx::query(
                    "INSERT OR IGNORE INTO jobs (id, queue, status, max_attempts, correlation_id, \
                         created_at) VALUES (?, ?, 'queued', ?, ?, ?)",
                )
                .bind(&id)
                .bind(&req.queue)
                .bind(i64::from(req.max_attempts.max(1)))
                .bind(&req.correlation_id)
                .bind(req.now)
                .execute(&mut *conn)
                .await?;
            }
        }
    }
    Err(Error::store(format!(
        "job {id} vanished while being claimed"
    )))
}

/// Records one success on `conn` (see [`Store::succeed`]).
async fn succeed_on(
    conn: &mut SqliteConnection,
    id: Uuid,
    owner: &str,
    result: Option<&str>,
    now: i64,
) -> Result<()> {
    sqlx::query(
        "UPDATE jobs SET status = 'succeeded', result = ?, finished_at = ?, \
         lease_owner = NULL, lease_until = NULL WHERE id = ? AND lease_owner = ?",
    )
    .bind(result)
    .bind(now)
    .bind(id.to_string())
    .bind(owner)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

#[async_trait::async_trait]
impl Store for SqliteStore {
    async fn insert(&self, job: &NewJob) -> Result<Inserted> {
        let stopped = || Error::store("the store's insert writer has stopped");
        let (reply, answer) = oneshot::channel();
        self.inserts
            .send((job.clone(), reply))
            .await
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }

    async fn insert_many(&self, jobs: &[NewJob]) -> Result<Vec<Inserted>> {
        let mut conn = self.writer.lock().await;
        let mut tx = sqlx::Connection::begin(&mut *conn).await?;
        let out = insert_rows_or_find(&mut tx, jobs).await?;
        tx.commit().await?;
        Ok(out)
    }

    async fn mark_accepted(&self, id: Uuid) -> Result<()> {
        sqlx::query("UPDATE jobs SET accepted = 1 WHERE id = ?")
            .bind(id.to_string())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn forget_unpublished(&self, id: Uuid) -> Result<()> {
        sqlx::query("DELETE FROM jobs WHERE id = ? AND status = 'queued' AND attempts = 0")
            .bind(id.to_string())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn get(&self, id: Uuid) -> Result<Option<JobRecord>> {
        let row = sqlx::query(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?"))
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(record).transpose()
    }

    async fn claim(&self, req: &ClaimRequest<'_>) -> Result<Claim> {
        let owned = OwnedClaim {
            id: req.id,
            queue: req.queue.to_owned(),
            max_attempts: req.max_attempts,
            correlation_id: req.correlation_id.map(str::to_owned),
            owner: req.owner.to_owned(),
            now: req.now,
            lease: req.lease,
        };
        let (reply, answer) = oneshot::channel();
        self.submit(WorkerWrite::Claim(owned, reply)).await?;
        answer.await.map_err(|_| writer_gone())?
    }

    async fn succeed(&self, id: Uuid, owner: &str, result: Option<&str>, now: i64) -> Result<()> {
        let (reply, answer) = oneshot::channel();
        self.submit(WorkerWrite::Succeed {
            id,
            owner: owner.to_owned(),
            result: result.map(str::to_owned),
            now,
            reply,
        })
        .await?;
        answer.await.map_err(|_| writer_gone())?
    }

    async fn retry(&self, id: Uuid, owner: &str, error: &str, next_attempt_at: i64) -> Result<()> {
        sqlx::query(
            "UPDATE jobs SET status = 'retrying', last_error = ?, next_attempt_at = ?, \
             lease_owner = NULL, lease_until = NULL WHERE id = ? AND lease_owner = ?",
        )
        .bind(error)
        .bind(next_attempt_at)
        .bind(id.to_string())
        .bind(owner)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn cancel(&self, id: Uuid, now: i64) -> Result<Cancel> {
        let row = sqlx::query(&format!(
            "UPDATE jobs SET status = 'cancelled', finished_at = ?, next_attempt_at = NULL \
             WHERE id = ? AND status IN ('queued', 'retrying') RETURNING {JOB_COLUMNS}"
        ))
        .bind(now)
        .bind(id.to_string())
        .fetch_optional(&self.pool)
        .await?;
        if let Some(row) = row {
            return Ok(Cancel::Cancelled(Box::new(record(&row)?)));
        }
        Ok(match self.get(id).await? {
            Some(r) => Cancel::Conflict(r.status),
            None => Cancel::NotFound,
        })
    }

    async fn prune(&self, cutoff: i64) -> Result<u64> {
        // In chunks, so a large backlog of old rows never holds the write lock for long.
        let mut total = 0;
        loop {
            let n = sqlx::query(
                "DELETE FROM jobs WHERE rowid IN (SELECT rowid FROM jobs \
                 WHERE finished_at IS NOT NULL AND finished_at < ? LIMIT 5000)",
            )
            .bind(cutoff)
            .execute(&self.pool)
            .await?
            .rows_affected();
            total += n;
            if n < 5000 {
                return Ok(total);
            }
        }
    }

    async fn dead(&self, id: Uuid, error: &str, now: i64) -> Result<()> {
        sqlx::query(
            "UPDATE jobs SET status = 'dead', last_error = ?, finished_at = ?, next_attempt_at = NULL, \
             lease_owner = NULL, lease_until = NULL WHERE id = ? AND status NOT IN ('succeeded', 'cancelled')",
        )
        .bind(error)
        .bind(now)
        .bind(id.to_string())
        .execute(&self.pool)
        .await?;
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
        .await?;
        Ok(())
    }

    async fn revive(&self, ids: &[Uuid], queue: &str) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        for id in ids {
            sqlx::query(
                "UPDATE jobs SET status = 'queued', queue = ?, attempts = 0, finished_at = NULL, \
                 next_attempt_at = NULL, discarded_at = NULL WHERE id = ? AND status = 'dead'",
            )
            .bind(queue)
            .bind(id.to_string())
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn discard(&self, ids: &[Uuid], now: i64) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        for id in ids {
            sqlx::query("UPDATE jobs SET discarded_at = ? WHERE id = ? AND status = 'dead'")
                .bind(now)
                .bind(id.to_string())
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn retrying_counts(&self) -> Result<BTreeMap<String, u64>> {
        // Served by the partial index `jobs_retrying` (migration 0003).
        let rows = sqlx::query(
            "SELECT queue, COUNT(*) AS n FROM jobs WHERE status = 'retrying' GROUP BY queue",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let n: i64 = row.try_get("n")?;
                Ok((row.try_get("queue")?, u64::try_from(n).unwrap_or(0)))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::now_ms;

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
        let jobs: Vec<NewJob> = (0..2_000).map(|_| new_job(Uuid::now_v7())).collect();
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
    fn checkpoints_back_off_while_nothing_is_written_and_resume_on_a_write() {
        let mut wait = CHECKPOINT_EVERY;
        let mut idle = Vec::new();
        for _ in 0..6 {
            wait = next_checkpoint_wait(wait, true);
            idle.push(wait.as_millis());
        }
        assert_eq!(idle, [200, 400, 800, 1_000, 1_000, 1_000]);
        assert_eq!(next_checkpoint_wait(wait, false), CHECKPOINT_EVERY);
    }

    fn new_job(id: Uuid) -> NewJob {
        NewJob {
            id,
            queue: "q".into(),
            max_attempts: 3,
            correlation_id: Some("c".into()),
            idempotency_key: None,
            request_hash: None,
            created_at: now_ms(),
            next_attempt_at: None,
        }
    }

    fn claim_req(id: Uuid, owner: &str, now: i64) -> ClaimRequest<'_> {
        ClaimRequest {
            id,
            queue: "q",
            max_attempts: 3,
            correlation_id: None,
            owner,
            now,
            lease: Duration::from_secs(60),
        }
    }

    #[tokio::test]
    async fn claim_then_succeed_then_duplicate_is_final() {
        let (_d, s) = store().await;
        let id = Uuid::now_v7();
        s.insert(&new_job(id)).await.expect("insert");
        let now = now_ms();
        assert_eq!(
            s.claim(&claim_req(id, "w1", now)).await.expect("claim"),
            Claim::Claimed {
                attempt: 1,
                max_attempts: 3
            }
        );
        assert_eq!(
            s.claim(&claim_req(id, "w2", now)).await.expect("claim"),
            Claim::Busy {
                until: now + 60_000
            }
        );
        s.succeed(id, "w1", Some("ok"), now).await.expect("succeed");
        assert_eq!(
            s.claim(&claim_req(id, "w2", now)).await.expect("claim"),
            Claim::Final(JobStatus::Succeeded)
        );
        let r = s.get(id).await.expect("get").expect("row");
        assert_eq!(r.status, JobStatus::Succeeded);
        assert_eq!(r.result.as_deref(), Some("ok"));
        assert_eq!(r.attempts, 1);
    }

    #[tokio::test]
    async fn expired_lease_can_be_claimed_again() {
        let (_d, s) = store().await;
        let id = Uuid::now_v7();
        s.insert(&new_job(id)).await.expect("insert");
        let now = now_ms();
        s.claim(&claim_req(id, "w1", now)).await.expect("claim");
        let later = now + 61_000;
        assert_eq!(
            s.claim(&claim_req(id, "w2", later)).await.expect("claim"),
            Claim::Claimed {
                attempt: 2,
                max_attempts: 3
            }
        );
        // The first owner's late success does not overwrite the new claim.
        s.succeed(id, "w1", Some("late"), later)
            .await
            .expect("succeed");
        let r = s.get(id).await.expect("get").expect("row");
        assert_eq!(r.status, JobStatus::Running);
    }

    #[tokio::test]
    async fn batched_claims_give_each_job_one_winner_and_record_successes() {
        let (_d, s) = store().await;
        let ids: Vec<Uuid> = (0..100).map(|_| Uuid::now_v7()).collect();
        for id in &ids {
            s.insert(&new_job(*id)).await.expect("insert");
        }
        let now = now_ms();
        // Every job claimed twice at once (as by a duplicate delivery), plus one unknown job:
        // the group commit sees them in shared batches.
        let mut tasks = Vec::new();
        for id in ids
            .iter()
            .chain(ids.iter())
            .copied()
            .chain([Uuid::now_v7()])
        {
            let s = s.clone();
            tasks.push(tokio::spawn(async move {
                (id, s.claim(&claim_req(id, "w1", now)).await)
            }));
        }
        let mut claimed = std::collections::HashMap::new();
        let mut busy = 0;
        for t in tasks {
            match t.await.expect("join") {
                (id, Ok(Claim::Claimed { attempt: 1, .. })) => *claimed.entry(id).or_insert(0) += 1,
                (_, Ok(Claim::Busy { .. })) => busy += 1,
                (_, other) => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(claimed.len(), 101);
        assert!(claimed.values().all(|n| *n == 1));
        assert_eq!(busy, 100);
        let mut done = Vec::new();
        for id in &ids {
            let s = s.clone();
            let id = *id;
            done.push(tokio::spawn(async move {
                s.succeed(id, "w1", Some("r"), now).await
            }));
        }
        for d in done {
            d.await.expect("join").expect("succeed");
        }
        for id in &ids {
            let r = s.get(*id).await.expect("get").expect("row");
            assert_eq!(
                (r.status, r.result.as_deref()),
                (JobStatus::Succeeded, Some("r"))
            );
        }
    }

    #[tokio::test]
    async fn claim_creates_missing_rows() {
        let (_d, s) = store().await;
        let id = Uuid::now_v7();
        assert!(matches!(
            s.claim(&claim_req(id, "w1", now_ms()))
                .await
                .expect("claim"),
            Claim::Claimed { attempt: 1, .. }
        ));
        assert_eq!(s.get(id).await.expect("get").expect("row").queue, "q");
    }

    #[tokio::test]
    async fn concurrent_claims_have_one_winner() {
        let (_d, s) = store().await;
        let id = Uuid::now_v7();
        s.insert(&new_job(id)).await.expect("insert");
        let now = now_ms();
        let owners: Vec<String> = (0..8).map(|i| format!("w{i}")).collect();
        let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(owners.len()));
        let mut tasks = Vec::new();
        for owner in owners {
            let s = s.clone();
            let barrier = barrier.clone();
            tasks.push(tokio::spawn(async move {
                barrier.wait().await;
                s.claim(&claim_req(id, &owner, now)).await
            }));
        }
        let mut winners = 0;
        for t in tasks {
            if matches!(
                t.await.expect("join").expect("claim"),
                Claim::Claimed { .. }
            ) {
                winners += 1;
            }
        }
        assert_eq!(winners, 1);
    }

    #[tokio::test]
    async fn idempotency_key_returns_the_existing_job() {
        let (_d, s) = store().await;
        let mut a = new_job(Uuid::now_v7());
        a.idempotency_key = Some("k".into());
        a.request_hash = Some("h1".into());
        assert_eq!(s.insert(&a).await.expect("insert"), Inserted::New);
        let mut b = new_job(Uuid::now_v7());
        b.idempotency_key = Some("k".into());
        match s.insert(&b).await.expect("insert") {
            Inserted::Existing {
                record,
                request_hash,
                accepted,
            } => {
                assert_eq!(record.id, a.id);
                assert_eq!(request_hash.as_deref(), Some("h1"));
                assert!(!accepted);
            }
            other => panic!("{other:?}"),
        }
        s.mark_accepted(a.id).await.expect("accept");
        assert!(matches!(
            s.insert(&b).await.expect("insert"),
            Inserted::Existing { accepted: true, .. }
        ));
        // Another queue may use the same key.
        b.queue = "other".into();
        assert_eq!(s.insert(&b).await.expect("insert"), Inserted::New);
    }

    #[tokio::test]
    async fn insert_many_is_one_transaction_with_per_job_answers() {
        let (_d, s) = store().await;
        let mut keyed = new_job(Uuid::now_v7());
        keyed.idempotency_key = Some("k".into());
        keyed.request_hash = Some("h".into());
        s.insert(&keyed).await.expect("insert");
        let plain = new_job(Uuid::now_v7());
        let mut same_key = new_job(Uuid::now_v7());
        same_key.idempotency_key = Some("k".into());
        let mut fresh_key = new_job(Uuid::now_v7());
        fresh_key.idempotency_key = Some("k2".into());
        let mut repeat = new_job(Uuid::now_v7());
        repeat.idempotency_key = Some("k2".into());
        let answers = s
            .insert_many(&[plain.clone(), same_key, fresh_key.clone(), repeat.clone()])
            .await
            .expect("insert_many");
        assert_eq!(answers.len(), 4);
        assert_eq!(answers[0], Inserted::New);
        assert!(
            matches!(&answers[1], Inserted::Existing { record, request_hash, .. }
            if record.id == keyed.id && request_hash.as_deref() == Some("h"))
        );
        assert_eq!(answers[2], Inserted::New);
        // The key of an earlier job in the same batch: that job, not yet accepted.
        assert!(
            matches!(&answers[3], Inserted::Existing { record, accepted: false, .. }
            if record.id == fresh_key.id)
        );
        for id in [plain.id, fresh_key.id] {
            assert_eq!(
                s.get(id).await.expect("get").expect("row").status,
                JobStatus::Queued
            );
        }
        assert!(s.get(repeat.id).await.expect("get").is_none());
    }

    #[tokio::test]
    async fn a_keyless_batch_whose_row_count_falls_short_reads_back_which_rows_exist() {
        let (_d, s) = store().await;
        let stored = new_job(Uuid::now_v7());
        s.insert(&stored).await.expect("insert");
        // The same id again (only a repeated UUIDv7 can conflict without keys): the
        // statement inserts one row of two, and the answer comes from the rows present.
        let fresh = new_job(Uuid::now_v7());
        let answers = s
            .insert_many(&[stored.clone(), fresh.clone()])
            .await
            .expect("insert_many");
        assert_eq!(answers, vec![Inserted::New, Inserted::New]);
        assert_eq!(
            s.get(fresh.id).await.expect("get").expect("row").status,
            JobStatus::Queued
        );
    }

    /// Writes queued by tasks that were ready to run when a batch began join that batch
    /// instead of waiting for a commit of their own.
    #[tokio::test(flavor = "current_thread")]
    async fn writes_of_tasks_ready_at_the_start_of_a_batch_join_it() {
        let (tx, mut queued) = mpsc::channel(16);
        tx.send(0).await.expect("queue the first write");
        for i in 1..4 {
            let tx = tx.clone();
            // Ready, but on this one-thread runtime not run until the writer yields.
            tokio::spawn(async move { tx.send(i).await.expect("queue a write") });
        }
        let mut batch = Vec::new();
        queued.recv_many(&mut batch, GROUP_COMMIT_MAX).await;
        assert_eq!(batch, [0], "only the first write was queued yet");
        join_ready(&mut queued, &mut batch).await;
        assert_eq!(
            batch,
            [0, 1, 2, 3],
            "the ready tasks' writes join the batch"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_inserts_are_group_committed_with_their_own_answers() {
        let (_d, s) = store().await;
        let mut tasks = Vec::new();
        for i in 0..60 {
            let s = s.clone();
            tasks.push(tokio::spawn(async move {
                let mut job = new_job(Uuid::now_v7());
                if i % 6 == 0 {
                    job.idempotency_key = Some("shared".into());
                }
                (job.id, s.insert(&job).await.expect("insert"))
            }));
        }
        let mut new = Vec::new();
        let mut existing = Vec::new();
        for t in tasks {
            match t.await.expect("join") {
                (id, Inserted::New) => new.push(id),
                (_, Inserted::Existing { record, .. }) => existing.push(record.id),
            }
        }
        // 50 plain jobs and one of the 10 keyed ones are new; the other 9 get that one.
        assert_eq!(new.len(), 51);
        assert_eq!(existing.len(), 9);
        assert!(existing.iter().all(|id| new.contains(id)));
        for id in new {
            assert!(s.get(id).await.expect("get").is_some());
        }
    }

    #[tokio::test]
    async fn insert_many_rolls_back_on_error() {
        let (_d, s) = store().await;
        let good = new_job(Uuid::now_v7());
        // A trigger makes the second insert fail after the first succeeded in the transaction.
        sqlx::query(
            "CREATE TRIGGER refuse BEFORE INSERT ON jobs WHEN NEW.queue = 'refused' \
             BEGIN SELECT RAISE(ABORT, 'refused'); END",
        )
        .execute(&s.pool)
        .await
        .expect("trigger");
        let mut bad = new_job(Uuid::now_v7());
        bad.queue = "refused".into();
        assert!(s.insert_many(&[good.clone(), bad]).await.is_err());
        assert!(s.get(good.id).await.expect("get").is_none());
    }

    #[tokio::test]
    async fn retry_then_claim_counts_attempts() {
        let (_d, s) = store().await;
        let id = Uuid::now_v7();
        s.insert(&new_job(id)).await.expect("insert");
        let now = now_ms();
        s.claim(&claim_req(id, "w1", now)).await.expect("claim");
        s.retry(id, "w1", "boom", now + 1000).await.expect("retry");
        let r = s.get(id).await.expect("get").expect("row");
        assert_eq!(r.status, JobStatus::Retrying);
        assert_eq!(r.last_error.as_deref(), Some("boom"));
        assert_eq!(r.next_attempt_at, Some(now + 1000));
        assert_eq!(
            s.claim(&claim_req(id, "w2", now)).await.expect("claim"),
            Claim::Claimed {
                attempt: 2,
                max_attempts: 3
            }
        );
    }

    #[tokio::test]
    async fn cancel_only_before_start() {
        let (_d, s) = store().await;
        let id = Uuid::now_v7();
        s.insert(&new_job(id)).await.expect("insert");
        assert!(
            matches!(s.cancel(id, now_ms()).await.expect("cancel"), Cancel::Cancelled(r) if r.status == JobStatus::Cancelled)
        );
        assert_eq!(
            s.claim(&claim_req(id, "w1", now_ms()))
                .await
                .expect("claim"),
            Claim::Final(JobStatus::Cancelled)
        );
        let running = Uuid::now_v7();
        s.insert(&new_job(running)).await.expect("insert");
        s.claim(&claim_req(running, "w1", now_ms()))
            .await
            .expect("claim");
        assert_eq!(
            s.cancel(running, now_ms()).await.expect("cancel"),
            Cancel::Conflict(JobStatus::Running)
        );
        assert_eq!(
            s.cancel(Uuid::now_v7(), now_ms()).await.expect("cancel"),
            Cancel::NotFound
        );
    }

    #[tokio::test]
    async fn prune_removes_only_old_finished_jobs() {
        let (_d, s) = store().await;
        let (old, fresh, open) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        for id in [old, fresh, open] {
            s.insert(&new_job(id)).await.expect("insert");
        }
        s.dead(old, "x", 1_000).await.expect("dead");
        s.dead(fresh, "x", 10_000).await.expect("dead");
        assert_eq!(s.prune(5_000).await.expect("prune"), 1);
        assert!(s.get(old).await.expect("get").is_none());
        assert!(s.get(fresh).await.expect("get").is_some());
        assert!(s.get(open).await.expect("get").is_some());
    }

    #[tokio::test]
    async fn revive_brings_back_only_dead_jobs() {
        let (_d, s) = store().await;
        let (dead, done) = (Uuid::now_v7(), Uuid::now_v7());
        for id in [dead, done] {
            s.insert(&new_job(id)).await.expect("insert");
            s.claim(&claim_req(id, "w1", now_ms()))
                .await
                .expect("claim");
        }
        s.dead(dead, "boom", now_ms()).await.expect("dead");
        s.succeed(done, "w1", None, now_ms())
            .await
            .expect("succeed");
        s.discard(&[dead], 5).await.expect("discard");
        s.revive(&[dead, done, Uuid::now_v7()], "q2")
            .await
            .expect("revive");
        let r = s.get(dead).await.expect("get").expect("row");
        assert_eq!(
            (r.status, r.attempts, r.queue.as_str()),
            (JobStatus::Queued, 0, "q2")
        );
        assert_eq!(
            r.last_error.as_deref(),
            Some("boom"),
            "the last error stays for the record"
        );
        let r = s.get(done).await.expect("get").expect("row");
        assert_eq!(r.status, JobStatus::Succeeded);
    }

    #[tokio::test]
    async fn retrying_jobs_are_counted_per_queue() {
        let (_dir, s) = store().await;
        assert!(s.retrying_counts().await.expect("count").is_empty());
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        for id in [a, b] {
            s.insert(&new_job(id)).await.expect("insert");
        }
        let now = now_ms();
        s.claim(&claim_req(a, "w1", now)).await.expect("claim");
        s.retry(a, "w1", "boom", now + 60_000).await.expect("retry");
        let counts = s.retrying_counts().await.expect("count");
        assert_eq!(counts.get("q"), Some(&1), "{counts:?}");
        assert_eq!(counts.len(), 1);
    }

    #[tokio::test]
    async fn release_and_forget() {
        let (_d, s) = store().await;
        let id = Uuid::now_v7();
        s.insert(&new_job(id)).await.expect("insert");
        s.claim(&claim_req(id, "w1", now_ms()))
            .await
            .expect("claim");
        s.release(id, "w1").await.expect("release");
        let r = s.get(id).await.expect("get").expect("row");
        assert_eq!((r.status, r.attempts), (JobStatus::Queued, 0));
        s.forget_unpublished(id).await.expect("forget");
        assert!(s.get(id).await.expect("get").is_none());
    }
}
