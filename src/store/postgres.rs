//! The PostgreSQL adapter, for warren on many hosts sharing one store (DESIGN §11). Only
//! PostgreSQL's SQL, type mapping, opening and error classification live here; the store's
//! logic is [`super::engine`].
//!
//! Batches bind one array per column and `unnest` them (one statement, one round trip and
//! one plan for any batch size). Atomicity across processes comes from the statements
//! themselves under READ COMMITTED: a claim is one conditional `UPDATE` (a concurrent claim
//! of the same row waits for the first to commit, then re-checks the condition and finds the
//! job `running`); an idempotency key is a unique index, and `INSERT … ON CONFLICT DO
//! NOTHING` waits for a concurrent insert of the same key to commit or roll back
//! (<https://www.postgresql.org/docs/15/sql-insert.html#SQL-ON-CONFLICT>).
//!
//! Migrations run at start-up under sqlx's advisory lock (`pg_advisory_lock`), so processes
//! starting together do not race.

use std::collections::{BTreeMap, HashSet};
use std::str::FromStr;
use std::time::Duration;

use sqlx::Row;
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions, PgRow};
use uuid::Uuid;

use super::backend::{Backend, migrate_error, newest_migration, parse_status};
use super::model::{
    ActiveCounts, Bucket, Claimed, Inserted, JobRecord, JobRow, JobStatus, NewJob, Overdue,
    OwnedClaim, ScheduleState, Success, to_u32,
};
use super::{OpenOptions, StoreError, StoreErrorKind};
use crate::error::{Error, Result};

/// Binds `reqs` as the four arrays of [`sql::SUCCEED_ROWS`] and [`sql::SUCCEED_WATCHED_ROWS`].
fn bind_successes<'q>(
    query: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    reqs: &[Success],
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    query
        .bind(reqs.iter().map(|s| s.id).collect::<Vec<_>>())
        .bind(reqs.iter().map(|s| s.owner.clone()).collect::<Vec<_>>())
        .bind(reqs.iter().map(|s| s.result.clone()).collect::<Vec<_>>())
        .bind(reqs.iter().map(|s| s.now).collect::<Vec<_>>())
}

/// The PostgreSQL adapter (see the module docs).
#[derive(Debug)]
pub(crate) struct Postgres {
    pool: PgPool,
}

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// How long a request waits for a pooled connection before the store counts as unavailable
/// (the intake then answers 503). sqlx keeps trying a refused connection until then.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);

/// How long the first connection at start-up may take (a host that drops packets).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The SQL of every statement, by name: the adapter runs them, and the index test
/// (`tests::every_statement_uses_an_index`) explains them on a table of 1,000,000 rows.
pub(crate) mod sql {
    /// [`super::Backend::insert_rows`]: rows in order, keys taken skipped.
    pub(crate) const INSERT_ROWS: &str = "INSERT INTO jobs (id, queue, status, max_attempts, \
        correlation_id, idempotency_key, request_hash, accepted, created_at, next_attempt_at, \
        resend_payload, schedule) \
        SELECT id, queue, 'queued', max_attempts, correlation_id, idempotency_key, request_hash, \
               accepted, created_at, next_attempt_at, resend_payload, schedule \
        FROM unnest($1::uuid[], $2::text[], $3::int[], $4::text[], $5::text[], $6::text[], \
                    $7::bool[], $8::bigint[], $9::bigint[], $10::bytea[], $11::text[]) \
             WITH ORDINALITY \
             AS v(id, queue, max_attempts, correlation_id, idempotency_key, request_hash, \
                  accepted, created_at, next_attempt_at, resend_payload, schedule, n) \
        ORDER BY n \
        ON CONFLICT DO NOTHING RETURNING id";
    /// [`super::Backend::find_by_key`].
    pub(crate) const FIND_BY_KEY: &str = "SELECT id, queue, status, attempts, max_attempts, \
        last_error, result, correlation_id, idempotency_key, created_at, started_at, finished_at, \
        next_attempt_at, discarded_at, schedule, request_hash, accepted \
        FROM jobs WHERE queue = $1 AND idempotency_key = $2";
    /// [`super::Backend::claim_rows`].
    pub(crate) const CLAIM_ROWS: &str = "UPDATE jobs SET status = 'running', \
        attempts = jobs.attempts + 1, started_at = COALESCE(jobs.started_at, v.now), \
        next_attempt_at = NULL, resend_payload = NULL, lease_owner = v.owner, \
        lease_until = v.lease_until \
        FROM unnest($1::uuid[], $2::bigint[], $3::text[], $4::bigint[]) AS v(id, now, owner, lease_until) \
        WHERE jobs.id = v.id AND (jobs.status IN ('queued', 'retrying') \
          OR (jobs.status = 'running' AND (jobs.lease_until IS NULL OR jobs.lease_until <= v.now))) \
        RETURNING jobs.id, jobs.attempts, jobs.max_attempts";
    /// [`super::Backend::claim_state`].
    pub(crate) const CLAIM_STATE: &str = "SELECT status, lease_until FROM jobs WHERE id = $1";
    /// [`super::Backend::insert_missing`].
    pub(crate) const INSERT_MISSING: &str = "INSERT INTO jobs (id, queue, status, max_attempts, \
        correlation_id, created_at) VALUES ($1, $2, 'queued', $3, $4, $5) ON CONFLICT DO NOTHING";
    /// The success `UPDATE` both success statements share (bound by `bind_successes`).
    macro_rules! succeed_update {
        () => {
            "UPDATE jobs SET status = 'succeeded', \
            result = v.result, finished_at = v.now, lease_owner = NULL, lease_until = NULL \
            FROM unnest($1::uuid[], $2::text[], $3::text[], $4::bigint[]) AS v(id, owner, result, now) \
            WHERE jobs.id = v.id AND jobs.lease_owner = v.owner"
        };
    }
    /// [`super::Backend::succeed_rows`].
    pub(crate) const SUCCEED_ROWS: &str = concat!(succeed_update!(), " AND NOT jobs.watched");
    /// [`super::Backend::succeed_watched_rows`].
    pub(crate) const SUCCEED_WATCHED_ROWS: &str = concat!(succeed_update!(), " RETURNING jobs.id");
    /// [`super::Backend::watch`].
    pub(crate) const WATCH: &str = "UPDATE jobs SET watched = TRUE WHERE id = $1 AND NOT watched";
    /// [`super::Backend::get`].
    pub(crate) const GET: &str = "SELECT id, queue, status, attempts, max_attempts, last_error, \
        result, correlation_id, idempotency_key, created_at, started_at, finished_at, \
        next_attempt_at, discarded_at, schedule FROM jobs WHERE id = $1";
    /// [`super::Backend::mark_accepted`].
    pub(crate) const MARK_ACCEPTED: &str = "UPDATE jobs SET accepted = TRUE WHERE id = $1";
    /// [`super::Backend::forget_unpublished`].
    pub(crate) const FORGET_UNPUBLISHED: &str =
        "DELETE FROM jobs WHERE id = $1 AND status = 'queued' AND attempts = 0";
    /// [`super::Backend::retry`].
    pub(crate) const RETRY: &str = "UPDATE jobs SET status = 'retrying', last_error = $1, \
        next_attempt_at = $2, resend_payload = $5, lease_owner = NULL, lease_until = NULL \
        WHERE id = $3 AND lease_owner = $4";
    /// [`super::Backend::take_overdue`]: the partial index `jobs_due`; rows another
    /// transaction holds (a claim, another sweeper) are left to it.
    pub(crate) const TAKE_OVERDUE: &str = "UPDATE jobs SET next_attempt_at = $1 WHERE id IN \
        (SELECT id FROM jobs WHERE resend_payload IS NOT NULL AND next_attempt_at < $2 \
         AND status IN ('queued', 'retrying') AND queue = ANY($3) \
         ORDER BY next_attempt_at LIMIT $4 FOR UPDATE SKIP LOCKED) \
        RETURNING id, queue, attempts, max_attempts, correlation_id, idempotency_key, \
        resend_payload";
    /// [`super::Backend::cancel_row`].
    pub(crate) const CANCEL: &str = "UPDATE jobs SET status = 'cancelled', finished_at = $1, \
        next_attempt_at = NULL, resend_payload = NULL WHERE id = $2 AND status IN ('queued', 'retrying') \
        RETURNING id, queue, status, attempts, max_attempts, last_error, result, correlation_id, \
        idempotency_key, created_at, started_at, finished_at, next_attempt_at, discarded_at, \
        schedule";
    /// [`super::Backend::dead`].
    pub(crate) const DEAD: &str = "UPDATE jobs SET status = 'dead', last_error = $1, \
        finished_at = $2, next_attempt_at = NULL, resend_payload = NULL, lease_owner = NULL, \
        lease_until = NULL WHERE id = $3 AND status NOT IN ('succeeded', 'cancelled')";
    /// [`super::Backend::release`].
    pub(crate) const RELEASE: &str = "UPDATE jobs SET status = 'queued', \
        attempts = GREATEST(attempts - 1, 0), lease_owner = NULL, lease_until = NULL \
        WHERE id = $1 AND status = 'running' AND lease_owner = $2";
    /// [`super::Backend::revive`].
    pub(crate) const REVIVE: &str = "UPDATE jobs SET status = 'queued', queue = $1, attempts = 0, \
        finished_at = NULL, next_attempt_at = NULL, discarded_at = NULL \
        WHERE id = ANY($2) AND status = 'dead'";
    /// [`super::Backend::discard`].
    pub(crate) const DISCARD: &str =
        "UPDATE jobs SET discarded_at = $1 WHERE id = ANY($2) AND status = 'dead'";
    /// [`super::Backend::prune_chunk`]: the partial index `jobs_finished`, oldest first from
    /// `$1`; rows another transaction holds are left for the next pass.
    pub(crate) const PRUNE_CHUNK: &str = "WITH gone AS (DELETE FROM jobs WHERE id IN \
        (SELECT id FROM jobs WHERE finished_at IS NOT NULL AND finished_at >= $1 \
         AND finished_at < $2 ORDER BY finished_at LIMIT $3 FOR UPDATE SKIP LOCKED) \
        RETURNING finished_at) SELECT COUNT(*), MAX(finished_at) FROM gone";
    /// [`super::Backend::oldest_created_at`]: UUIDv7 ids sort by creation time.
    pub(crate) const OLDEST: &str = "SELECT created_at FROM jobs ORDER BY id LIMIT 1";
    /// [`super::Backend::export`].
    pub(crate) const EXPORT: &str = "SELECT id, queue, status, attempts, max_attempts, \
        last_error, result, correlation_id, idempotency_key, created_at, started_at, finished_at, \
        next_attempt_at, discarded_at, schedule, request_hash, accepted, lease_owner, \
        lease_until, resend_payload FROM jobs WHERE id > $1 ORDER BY id LIMIT $2";
    /// [`super::Backend::last_id`].
    pub(crate) const LAST_ID: &str = "SELECT id FROM jobs ORDER BY id DESC LIMIT 1";
    /// [`super::Backend::counts`]: a whole-table count by nature (`warren store status`
    /// only), not on any request's path.
    pub(crate) const COUNTS: &str =
        "SELECT queue, status, COUNT(*) FROM jobs GROUP BY queue, status";
    /// [`super::Backend::import`].
    pub(crate) const IMPORT: &str = "INSERT INTO jobs (id, queue, status, attempts, max_attempts, \
        last_error, result, correlation_id, idempotency_key, created_at, started_at, finished_at, \
        next_attempt_at, discarded_at, request_hash, accepted, lease_owner, lease_until, \
        resend_payload, schedule) \
        SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::int[], $5::int[], \
            $6::text[], $7::text[], $8::text[], $9::text[], $10::bigint[], $11::bigint[], \
            $12::bigint[], $13::bigint[], $14::bigint[], $15::text[], $16::bool[], $17::text[], \
            $18::bigint[], $19::bytea[], $20::text[]) \
        ON CONFLICT (id) DO NOTHING";
    /// [`super::Backend::queue_pause`]: a queue paused already keeps its first `paused_at`.
    pub(crate) const QUEUE_PAUSE: &str = "INSERT INTO paused_queues (queue, paused_at) \
        VALUES ($1, $2) ON CONFLICT (queue) DO NOTHING";
    /// [`super::Backend::queue_resume`].
    pub(crate) const QUEUE_RESUME: &str = "DELETE FROM paused_queues WHERE queue = $1";
    /// [`super::Backend::queues_paused`]: the whole (small) table.
    pub(crate) const QUEUES_PAUSED: &str = "SELECT queue, paused_at FROM paused_queues";
    /// [`super::Backend::lock_key`]: a transaction-scoped advisory lock on the (queue, key)
    /// pair's 64-bit hash (a collision only serialises two keys' claims, never mixes counts).
    pub(crate) const LOCK_KEY: &str =
        "SELECT pg_advisory_xact_lock(hashtextextended($1 || chr(31) || $2, 7))";
    /// [`super::Backend::key_running`], first statement.
    pub(crate) const SET_KEY: &str = "UPDATE jobs SET concurrency_key = $1 WHERE id = $2";
    /// [`super::Backend::key_running`]: the partial index `jobs_running_key`.
    pub(crate) const KEY_RUNNING: &str = "SELECT COUNT(*) FROM jobs WHERE queue = $1 \
        AND concurrency_key = $2 AND status = 'running' AND concurrency_key IS NOT NULL \
        AND lease_until > $3";
    /// [`super::Backend::bucket_for_update`]: an upsert that always writes, so the row stays
    /// locked until the transaction ends.
    pub(crate) const BUCKET_FOR_UPDATE: &str = "INSERT INTO rate_buckets (queue, tokens, updated_at) \
        VALUES ($1, $2, $3) ON CONFLICT (queue) DO UPDATE SET queue = EXCLUDED.queue \
        RETURNING tokens, updated_at";
    /// [`super::Backend::bucket_write`].
    pub(crate) const BUCKET_WRITE: &str =
        "UPDATE rate_buckets SET tokens = $1, updated_at = $2 WHERE queue = $3";
    /// [`super::Backend::buckets`].
    pub(crate) const BUCKETS: &str = "SELECT queue, tokens, updated_at FROM rate_buckets";
    /// [`super::Backend::throttle`]: a later hold wins.
    pub(crate) const THROTTLE: &str = "INSERT INTO queue_throttles (queue, until_ms, reason) \
        VALUES ($1, $2, $3) ON CONFLICT (queue) DO UPDATE SET \
        reason = CASE WHEN EXCLUDED.until_ms > queue_throttles.until_ms THEN EXCLUDED.reason \
        ELSE queue_throttles.reason END, \
        until_ms = GREATEST(queue_throttles.until_ms, EXCLUDED.until_ms)";
    /// [`super::Backend::throttles`].
    pub(crate) const THROTTLES: &str =
        "SELECT queue, until_ms FROM queue_throttles WHERE until_ms > $1";
    /// [`super::Backend::schedule_find`]: the primary key.
    pub(crate) const SCHEDULE_FIND: &str =
        "SELECT last_tick, last_job FROM schedules WHERE name = $1";
    /// [`super::Backend::schedule_create`]: an upsert that changes nothing in a row present
    /// but returns it (`DO NOTHING` would return no row for one a concurrent transaction
    /// committed after the statement began).
    pub(crate) const SCHEDULE_CREATE: &str = "INSERT INTO schedules (name, last_tick, last_job) \
        VALUES ($1, $2, NULL) ON CONFLICT (name) DO UPDATE SET name = EXCLUDED.name \
        RETURNING last_tick, last_job";
    /// [`super::Backend::schedule_advance`]: never moves the state back (a later tick wins;
    /// the row is locked by the upsert, so concurrent advances apply one after the other).
    pub(crate) const SCHEDULE_ADVANCE: &str = "INSERT INTO schedules (name, last_tick, last_job) \
        VALUES ($1, $2, $3) ON CONFLICT (name) DO UPDATE SET \
        last_job = CASE WHEN EXCLUDED.last_tick >= schedules.last_tick THEN COALESCE(EXCLUDED.last_job, schedules.last_job) \
        ELSE schedules.last_job END, \
        last_tick = GREATEST(schedules.last_tick, EXCLUDED.last_tick)";
    /// [`super::Backend::schedule_states`]: the whole (small) table.
    pub(crate) const SCHEDULE_STATES: &str = "SELECT name, last_tick, last_job FROM schedules";
    /// [`super::Backend::cancel_rows`]: [`CANCEL`] for a list of ids.
    pub(crate) const CANCEL_MANY: &str = "UPDATE jobs SET status = 'cancelled', finished_at = $1, \
        next_attempt_at = NULL, resend_payload = NULL WHERE id = ANY($2) \
        AND status IN ('queued', 'retrying') RETURNING id";
}

/// `host:port/database` of `opts`, for messages (no credentials).
fn describe(opts: &PgConnectOptions) -> String {
    format!(
        "{}:{}/{}",
        opts.get_host(),
        opts.get_port(),
        opts.get_database()
            .unwrap_or("(the user's default database)")
    )
}

impl Postgres {
    /// Connects to `opts.url` (`postgres://user:password@host:port/database`; sqlx's
    /// parameters such as `sslmode` and `options` apply), migrates the schema unless
    /// `opts.migrate` is false, and opens a pool of up to `opts.max_connections` whose
    /// sessions have `statement_timeout` = `opts.statement_timeout`.
    ///
    /// The first connection is made at once and not retried, so that a wrong password, an
    /// unknown database or an unreachable host stops start-up with a message naming the host
    /// and database (never the password).
    ///
    /// # Errors
    /// [`crate::ErrorKind::Store`]: [`StoreErrorKind::Config`] for a bad URL, a refused login
    /// or an unknown database; [`StoreErrorKind::Unavailable`] when the server cannot be
    /// reached; [`StoreErrorKind::Schema`] for a database migrated by a newer warren.
    pub(crate) async fn open(opts: &OpenOptions) -> Result<Self> {
        let shown = crate::redact::redact(&opts.url);
        let connect = PgConnectOptions::from_str(&opts.url)
            .map_err(|e| {
                Error::store_kind(
                    StoreErrorKind::Config,
                    format!(
                        "invalid store URL `{shown}`: {}",
                        crate::redact::redact(&e.to_string())
                    ),
                )
            })?
            .application_name("warren")
            .options([
                (
                    "statement_timeout",
                    opts.statement_timeout.as_millis().to_string(),
                ),
                // Plan each statement for its own parameters. A prepared statement may
                // otherwise switch to one generic plan, and one made while `jobs` was small
                // joins a batch's `unnest` by scanning the whole table, and keeps doing so as
                // the table grows (seen in the bench: 5.8 million rows read for 9,239 jobs).
                // A custom plan of these statements costs about 0.1 ms to make.
                ("plan_cache_mode", "force_custom_plan".to_owned()),
            ]);
        let at = describe(&connect);
        let failed = |e: &sqlx::Error| {
            let cause = StoreError::from_sqlx(e, Self::classify);
            Error::store_kind(
                cause.kind(),
                format!("cannot connect to the PostgreSQL store at {at}: {cause}"),
            )
        };
        let mut first = tokio::time::timeout(
            CONNECT_TIMEOUT,
            <PgConnection as sqlx::Connection>::connect_with(&connect),
        )
        .await
        .map_err(|_| {
            Error::store_kind(
                StoreErrorKind::Unavailable,
                format!(
                    "cannot connect to the PostgreSQL store at {at}: no answer within {} s",
                    CONNECT_TIMEOUT.as_secs()
                ),
            )
        })?
        .map_err(|e| failed(&e))?;
        if opts.migrate {
            // Migrations may take longer than a request's statement timeout.
            sqlx::query("SET statement_timeout = 0")
                .execute(&mut first)
                .await
                .map_err(|e| failed(&e))?;
            MIGRATOR
                .run_direct(&mut first)
                .await
                .map_err(|e| migrate_error(&e, &MIGRATOR, &at))?;
        }
        let _ = <PgConnection as sqlx::Connection>::close(first).await;
        let pool = PgPoolOptions::new()
            .max_connections(opts.max_connections.max(1))
            .acquire_timeout(ACQUIRE_TIMEOUT)
            // A connection broken while idle (a server restart) fails its first statement,
            // which the caller retries; sqlx tests every connection as it is returned.
            .test_before_acquire(false)
            .connect_lazy_with(connect);
        tracing::info!(store = %shown, "PostgreSQL store open");
        Ok(Self { pool })
    }
}

fn uuid_text(id: Option<Uuid>) -> Uuid {
    id.unwrap_or(Uuid::nil())
}

fn record(row: &PgRow) -> Result<JobRecord> {
    let get = |e| Postgres::err(e);
    let status: String = row.try_get("status").map_err(get)?;
    Ok(JobRecord {
        id: row.try_get("id").map_err(get)?,
        queue: row.try_get("queue").map_err(get)?,
        status: parse_status(&status)?,
        attempts: to_u32(i64::from(row.try_get::<i32, _>("attempts").map_err(get)?)),
        max_attempts: to_u32(i64::from(
            row.try_get::<i32, _>("max_attempts").map_err(get)?,
        )),
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

fn to_i32(v: u32) -> i32 {
    i32::try_from(v).unwrap_or(i32::MAX)
}

#[async_trait::async_trait]
impl Backend for Postgres {
    type Db = sqlx::Postgres;
    type Writer = PoolConnection<sqlx::Postgres>;
    const NAME: &'static str = "postgres";
    const PRUNE_CHUNK: u32 = 2_000;

    async fn writer(&self) -> Result<Self::Writer> {
        self.pool.acquire().await.map_err(Self::err)
    }

    /// By SQLSTATE (<https://www.postgresql.org/docs/15/errcodes-appendix.html>).
    fn classify(code: &str) -> StoreErrorKind {
        match code {
            // Connection exceptions, insufficient resources (too many connections), a server
            // shutting down or starting, a database closed to connections, a standby.
            c if c.starts_with("08") || c.starts_with("53") => StoreErrorKind::Unavailable,
            "57P01" | "57P02" | "57P03" | "55000" | "25006" => StoreErrorKind::Unavailable,
            // Serialization failure, deadlock, lock not available, statement timeout.
            "40001" | "40P01" | "55P03" | "57014" => StoreErrorKind::Conflict,
            // Invalid authorization, unknown database.
            c if c.starts_with("28") || c == "3D000" => StoreErrorKind::Config,
            _ => StoreErrorKind::Other,
        }
    }

    async fn insert_rows(conn: &mut PgConnection, jobs: &[NewJob]) -> Result<HashSet<Uuid>> {
        let col = |f: fn(&NewJob) -> Option<String>| jobs.iter().map(f).collect::<Vec<_>>();
        let rows: Vec<Uuid> = sqlx::query_scalar(sql::INSERT_ROWS)
            .bind(jobs.iter().map(|j| j.id).collect::<Vec<_>>())
            .bind(jobs.iter().map(|j| j.queue.clone()).collect::<Vec<_>>())
            .bind(
                jobs.iter()
                    .map(|j| to_i32(j.max_attempts))
                    .collect::<Vec<_>>(),
            )
            .bind(col(|j| j.correlation_id.clone()))
            .bind(col(|j| j.idempotency_key.clone()))
            .bind(col(|j| j.request_hash.clone()))
            .bind(
                jobs.iter()
                    .map(|j| j.idempotency_key.is_none())
                    .collect::<Vec<_>>(),
            )
            .bind(jobs.iter().map(|j| j.created_at).collect::<Vec<_>>())
            .bind(jobs.iter().map(|j| j.next_attempt_at).collect::<Vec<_>>())
            .bind(
                jobs.iter()
                    .map(|j| j.resend_payload.clone())
                    .collect::<Vec<_>>(),
            )
            .bind(col(|j| j.schedule.clone()))
            .fetch_all(&mut *conn)
            .await
            .map_err(Self::err)?;
        Ok(rows.into_iter().collect())
    }

    async fn find_by_key(
        conn: &mut PgConnection,
        queue: &str,
        key: &str,
    ) -> Result<Option<Inserted>> {
        let row = sqlx::query(sql::FIND_BY_KEY)
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

    async fn claim_rows(conn: &mut PgConnection, reqs: &[OwnedClaim]) -> Result<Vec<Claimed>> {
        let rows = sqlx::query_as::<_, (Uuid, i32, i32)>(sql::CLAIM_ROWS)
            .bind(reqs.iter().map(|r| r.id).collect::<Vec<_>>())
            .bind(reqs.iter().map(|r| r.now).collect::<Vec<_>>())
            .bind(reqs.iter().map(|r| r.owner.clone()).collect::<Vec<_>>())
            .bind(reqs.iter().map(|r| r.lease_until).collect::<Vec<_>>())
            .fetch_all(&mut *conn)
            .await
            .map_err(Self::err)?;
        Ok(rows
            .into_iter()
            .map(|(id, attempts, max_attempts)| Claimed {
                id,
                attempt: to_u32(i64::from(attempts)),
                max_attempts: to_u32(i64::from(max_attempts)),
            })
            .collect())
    }

    async fn claim_state(
        conn: &mut PgConnection,
        id: Uuid,
    ) -> Result<Option<(JobStatus, Option<i64>)>> {
        let row = sqlx::query_as::<_, (String, Option<i64>)>(sql::CLAIM_STATE)
            .bind(id)
            .fetch_optional(&mut *conn)
            .await
            .map_err(Self::err)?;
        row.map(|(status, until)| Ok((parse_status(&status)?, until)))
            .transpose()
    }

    async fn insert_missing(conn: &mut PgConnection, req: &OwnedClaim) -> Result<()> {
        sqlx::query(sql::INSERT_MISSING)
            .bind(req.id)
            .bind(&req.queue)
            .bind(to_i32(req.max_attempts.max(1)))
            .bind(&req.correlation_id)
            .bind(req.now)
            .execute(&mut *conn)
            .await
            .map_err(Self::err)?;
        Ok(())
    }

    async fn lock_key(conn: &mut PgConnection, queue: &str, key: &str) -> Result<()> {
        sqlx::query(sql::LOCK_KEY)
            .bind(queue)
            .bind(key)
            .execute(&mut *conn)
            .await
            .map_err(Self::err)?;
        Ok(())
    }

    async fn key_running(
        conn: &mut PgConnection,
        id: Uuid,
        queue: &str,
        key: &str,
        now: i64,
    ) -> Result<u64> {
        sqlx::query(sql::SET_KEY)
            .bind(key)
            .bind(id)
            .execute(&mut *conn)
            .await
            .map_err(Self::err)?;
        let n: i64 = sqlx::query_scalar(sql::KEY_RUNNING)
            .bind(queue)
            .bind(key)
            .bind(now)
            .fetch_one(&mut *conn)
            .await
            .map_err(Self::err)?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn bucket_for_update(
        conn: &mut PgConnection,
        queue: &str,
        full: f64,
        now: i64,
    ) -> Result<Bucket> {
        let (tokens, updated_at) = sqlx::query_as::<_, (f64, i64)>(sql::BUCKET_FOR_UPDATE)
            .bind(queue)
            .bind(full)
            .bind(now)
            .fetch_one(&mut *conn)
            .await
            .map_err(Self::err)?;
        Ok(Bucket { tokens, updated_at })
    }

    async fn bucket_write(conn: &mut PgConnection, queue: &str, bucket: Bucket) -> Result<()> {
        sqlx::query(sql::BUCKET_WRITE)
            .bind(bucket.tokens)
            .bind(bucket.updated_at)
            .bind(queue)
            .execute(&mut *conn)
            .await
            .map_err(Self::err)?;
        Ok(())
    }

    async fn succeed_rows(conn: &mut PgConnection, reqs: &[Success]) -> Result<u64> {
        Ok(bind_successes(sqlx::query(sql::SUCCEED_ROWS), reqs)
            .execute(&mut *conn)
            .await
            .map_err(Self::err)?
            .rows_affected())
    }

    async fn succeed_watched_rows(conn: &mut PgConnection, reqs: &[Success]) -> Result<Vec<Uuid>> {
        let rows = bind_successes(sqlx::query(sql::SUCCEED_WATCHED_ROWS), reqs)
            .fetch_all(&mut *conn)
            .await
            .map_err(Self::err)?;
        rows.iter()
            .map(|r| r.try_get::<Uuid, _>(0).map_err(Self::err))
            .collect()
    }

    async fn get(&self, id: Uuid) -> Result<Option<JobRecord>> {
        let row = sqlx::query(sql::GET)
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(Self::err)?;
        row.as_ref().map(record).transpose()
    }

    async fn mark_accepted(&self, id: Uuid) -> Result<()> {
        sqlx::query(sql::MARK_ACCEPTED)
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(Self::err)?;
        Ok(())
    }

    async fn watch(&self, id: Uuid) -> Result<()> {
        sqlx::query(sql::WATCH)
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(Self::err)?;
        Ok(())
    }

    async fn forget_unpublished(&self, id: Uuid) -> Result<()> {
        sqlx::query(sql::FORGET_UNPUBLISHED)
            .bind(id)
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
        sqlx::query(sql::RETRY)
            .bind(error)
            .bind(next_attempt_at)
            .bind(id)
            .bind(owner)
            .bind(payload)
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
        let rows = sqlx::query(sql::TAKE_OVERDUE)
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
                    id: row.try_get("id").map_err(Self::err)?,
                    queue: row.try_get("queue").map_err(Self::err)?,
                    attempts: to_u32(i64::from(
                        row.try_get::<i32, _>("attempts").map_err(Self::err)?,
                    )),
                    max_attempts: to_u32(i64::from(
                        row.try_get::<i32, _>("max_attempts").map_err(Self::err)?,
                    )),
                    correlation_id: row.try_get("correlation_id").map_err(Self::err)?,
                    idempotency_key: row.try_get("idempotency_key").map_err(Self::err)?,
                    payload: row.try_get("resend_payload").map_err(Self::err)?,
                })
            })
            .collect()
    }

    async fn cancel_row(&self, id: Uuid, now: i64) -> Result<Option<JobRecord>> {
        let row = sqlx::query(sql::CANCEL)
            .bind(now)
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(Self::err)?;
        row.as_ref().map(record).transpose()
    }

    async fn dead(&self, id: Uuid, error: &str, now: i64) -> Result<()> {
        sqlx::query(sql::DEAD)
            .bind(error)
            .bind(now)
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(Self::err)?;
        Ok(())
    }

    async fn release(&self, id: Uuid, owner: &str) -> Result<()> {
        sqlx::query(sql::RELEASE)
            .bind(id)
            .bind(owner)
            .execute(&self.pool)
            .await
            .map_err(Self::err)?;
        Ok(())
    }

    async fn revive(&self, ids: &[Uuid], queue: &str) -> Result<()> {
        sqlx::query(sql::REVIVE)
            .bind(queue)
            .bind(ids)
            .execute(&self.pool)
            .await
            .map_err(Self::err)?;
        Ok(())
    }

    async fn discard(&self, ids: &[Uuid], now: i64) -> Result<()> {
        sqlx::query(sql::DISCARD)
            .bind(now)
            .bind(ids)
            .execute(&self.pool)
            .await
            .map_err(Self::err)?;
        Ok(())
    }

    async fn active_counts(&self) -> Result<BTreeMap<String, ActiveCounts>> {
        // Served by the index `jobs_status_id` (migration 0003).
        let rows = sqlx::query_as::<_, (String, String, i64)>(super::search::ACTIVE_COUNTS)
            .fetch_all(&self.pool)
            .await
            .map_err(Self::err)?;
        Ok(ActiveCounts::by_queue(rows))
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(Self::err)?;
        Ok(())
    }

    async fn prune_chunk(&self, from: i64, cutoff: i64, limit: u32) -> Result<(u64, Option<i64>)> {
        let (n, last) = sqlx::query_as::<_, (i64, Option<i64>)>(sql::PRUNE_CHUNK)
            .bind(from)
            .bind(cutoff)
            .bind(i64::from(limit))
            .fetch_one(&self.pool)
            .await
            .map_err(Self::err)?;
        Ok((u64::try_from(n).unwrap_or(0), last))
    }

    async fn counts(&self) -> Result<Vec<(String, JobStatus, u64)>> {
        let rows = sqlx::query_as::<_, (String, String, i64)>(sql::COUNTS)
            .fetch_all(&self.pool)
            .await
            .map_err(Self::err)?;
        rows.into_iter()
            .map(|(q, s, n)| Ok((q, parse_status(&s)?, u64::try_from(n).unwrap_or(0))))
            .collect()
    }

    async fn oldest_created_at(&self) -> Result<Option<i64>> {
        sqlx::query_scalar(sql::OLDEST)
            .fetch_optional(&self.pool)
            .await
            .map_err(Self::err)
    }

    async fn schema_versions(&self) -> Result<(Option<i64>, i64)> {
        // No table yet (a database never migrated): no version.
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
        let rows = sqlx::query(sql::EXPORT)
            .bind(uuid_text(after))
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
        sqlx::query_scalar(sql::LAST_ID)
            .fetch_optional(&self.pool)
            .await
            .map_err(Self::err)
    }

    async fn import(&self, rows: &[JobRow]) -> Result<u64> {
        let col = |f: fn(&JobRow) -> Option<String>| rows.iter().map(f).collect::<Vec<_>>();
        let at = |f: fn(&JobRow) -> Option<i64>| rows.iter().map(f).collect::<Vec<_>>();
        let done = sqlx::query(sql::IMPORT)
            .bind(rows.iter().map(|r| r.record.id).collect::<Vec<_>>())
            .bind(
                rows.iter()
                    .map(|r| r.record.queue.clone())
                    .collect::<Vec<_>>(),
            )
            .bind(
                rows.iter()
                    .map(|r| r.record.status.as_str().to_owned())
                    .collect::<Vec<_>>(),
            )
            .bind(
                rows.iter()
                    .map(|r| to_i32(r.record.attempts))
                    .collect::<Vec<_>>(),
            )
            .bind(
                rows.iter()
                    .map(|r| to_i32(r.record.max_attempts))
                    .collect::<Vec<_>>(),
            )
            .bind(col(|r| r.record.last_error.clone()))
            .bind(col(|r| r.record.result.clone()))
            .bind(col(|r| r.record.correlation_id.clone()))
            .bind(col(|r| r.record.idempotency_key.clone()))
            .bind(rows.iter().map(|r| r.record.created_at).collect::<Vec<_>>())
            .bind(at(|r| r.record.started_at))
            .bind(at(|r| r.record.finished_at))
            .bind(at(|r| r.record.next_attempt_at))
            .bind(at(|r| r.record.discarded_at))
            .bind(col(|r| r.request_hash.clone()))
            .bind(rows.iter().map(|r| r.accepted).collect::<Vec<_>>())
            .bind(col(|r| r.lease_owner.clone()))
            .bind(at(|r| r.lease_until))
            .bind(
                rows.iter()
                    .map(|r| r.resend_payload.clone())
                    .collect::<Vec<_>>(),
            )
            .bind(col(|r| r.record.schedule.clone()))
            .execute(&self.pool)
            .await
            .map_err(Self::err)?;
        Ok(done.rows_affected())
    }

    async fn queue_pause(&self, queue: &str, now: i64) -> Result<bool> {
        let done = sqlx::query(sql::QUEUE_PAUSE)
            .bind(queue)
            .bind(now)
            .execute(&self.pool)
            .await
            .map_err(Self::err)?;
        Ok(done.rows_affected() == 1)
    }

    async fn queue_resume(&self, queue: &str) -> Result<bool> {
        let done = sqlx::query(sql::QUEUE_RESUME)
            .bind(queue)
            .execute(&self.pool)
            .await
            .map_err(Self::err)?;
        Ok(done.rows_affected() == 1)
    }

    async fn queues_paused(&self) -> Result<BTreeMap<String, i64>> {
        let rows = sqlx::query_as::<_, (String, i64)>(sql::QUEUES_PAUSED)
            .fetch_all(&self.pool)
            .await
            .map_err(Self::err)?;
        Ok(rows.into_iter().collect())
    }

    async fn buckets(&self) -> Result<BTreeMap<String, Bucket>> {
        let rows = sqlx::query_as::<_, (String, f64, i64)>(sql::BUCKETS)
            .fetch_all(&self.pool)
            .await
            .map_err(Self::err)?;
        Ok(rows
            .into_iter()
            .map(|(q, tokens, updated_at)| (q, Bucket { tokens, updated_at }))
            .collect())
    }

    async fn throttle(&self, queue: &str, until: i64, reason: &str) -> Result<()> {
        sqlx::query(sql::THROTTLE)
            .bind(queue)
            .bind(until)
            .bind(reason)
            .execute(&self.pool)
            .await
            .map_err(Self::err)?;
        Ok(())
    }

    async fn throttles(&self, now: i64) -> Result<BTreeMap<String, i64>> {
        let rows = sqlx::query_as::<_, (String, i64)>(sql::THROTTLES)
            .bind(now)
            .fetch_all(&self.pool)
            .await
            .map_err(Self::err)?;
        Ok(rows.into_iter().collect())
    }

    async fn schedule_find(&self, name: &str) -> Result<Option<ScheduleState>> {
        let row = sqlx::query_as::<_, (i64, Option<Uuid>)>(sql::SCHEDULE_FIND)
            .bind(name)
            .fetch_optional(&self.pool)
            .await
            .map_err(Self::err)?;
        Ok(row.map(|(last_tick, last_job)| ScheduleState {
            last_tick,
            last_job,
        }))
    }

    async fn schedule_create(&self, name: &str, now: i64) -> Result<ScheduleState> {
        let (last_tick, last_job) = sqlx::query_as::<_, (i64, Option<Uuid>)>(sql::SCHEDULE_CREATE)
            .bind(name)
            .bind(now)
            .fetch_one(&self.pool)
            .await
            .map_err(Self::err)?;
        Ok(ScheduleState {
            last_tick,
            last_job,
        })
    }

    async fn schedule_advance(&self, name: &str, tick: i64, job: Option<Uuid>) -> Result<()> {
        sqlx::query(sql::SCHEDULE_ADVANCE)
            .bind(name)
            .bind(tick)
            .bind(job)
            .execute(&self.pool)
            .await
            .map_err(Self::err)?;
        Ok(())
    }

    async fn schedule_states(&self) -> Result<BTreeMap<String, ScheduleState>> {
        let rows = sqlx::query_as::<_, (String, i64, Option<Uuid>)>(sql::SCHEDULE_STATES)
            .fetch_all(&self.pool)
            .await
            .map_err(Self::err)?;
        Ok(rows
            .into_iter()
            .map(|(name, last_tick, last_job)| {
                (
                    name,
                    ScheduleState {
                        last_tick,
                        last_job,
                    },
                )
            })
            .collect())
    }

    const DIALECT: super::search::Dialect = super::search::Dialect {
        placeholder: |n| format!("${n}"),
        ilike: "ILIKE",
    };

    async fn list_rows(&self, sql: &super::search::Sql) -> Result<Vec<JobRecord>> {
        use super::search::Value;
        let mut query = sqlx::query(&sql.text);
        for v in &sql.values {
            query = match v {
                Value::Text(t) => query.bind(t.as_str()),
                Value::Int(i) => query.bind(*i),
                Value::Id(id) => query.bind(*id),
            };
        }
        let rows = query.fetch_all(&self.pool).await.map_err(Self::err)?;
        rows.iter().map(record).collect()
    }

    async fn cancel_rows(&self, ids: &[Uuid], now: i64) -> Result<Vec<Uuid>> {
        sqlx::query_scalar(sql::CANCEL_MANY)
            .bind(now)
            .bind(ids)
            .fetch_all(&self.pool)
            .await
            .map_err(Self::err)
    }
}

#[cfg(test)]
mod tests {
    use sqlx::Connection as _;
    use uuid::Uuid;

    use super::sql;
    use crate::store::conformance::test_pg;
    use crate::store::{OpenOptions, open};

    /// Every statement the adapter runs on a request's or a worker's path, and the periodic
    /// ones, is served by an index on a table of 1,000,000 jobs: its plan never reads the
    /// whole `jobs` table (no `Seq Scan` on it). `COUNTS` (`warren store status`) counts the
    /// whole table by nature and is left out.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_statement_uses_an_index() {
        let db = test_pg::Database::create().await;
        drop(open(&OpenOptions::new(&db.url)).await.expect("migrate"));
        let mut conn = sqlx::PgConnection::connect(&db.url).await.expect("connect");
        // 1,000,000 jobs, mostly finished, as a store a week into production holds them.
        sqlx::query(
            "INSERT INTO jobs (id, queue, status, attempts, max_attempts, created_at, \
               started_at, finished_at, next_attempt_at, idempotency_key, lease_owner, lease_until, \
               resend_payload, schedule) \
             SELECT gen_random_uuid(), 'q' || (i % 10), \
               CASE WHEN i % 100 = 0 THEN 'retrying' WHEN i % 100 = 1 THEN 'queued' \
                    WHEN i % 100 = 2 THEN 'running' WHEN i % 100 = 3 THEN 'dead' ELSE 'succeeded' END, \
               1, 5, i, i, CASE WHEN i % 100 > 2 THEN i + 10 END, \
               CASE WHEN i % 100 = 0 THEN i + 1000 END, \
               CASE WHEN i % 3 = 0 THEN 'key-' || i END, \
               CASE WHEN i % 100 = 2 THEN 'w' END, CASE WHEN i % 100 = 2 THEN i + 60000 END, \
               CASE WHEN i % 100 = 0 THEN '{}'::bytea END, \
               CASE WHEN i % 50 = 7 THEN 'nightly' END \
             FROM generate_series(1, 1000000) AS i",
        )
        .execute(&mut conn)
        .await
        .expect("seed");
        sqlx::query("ANALYZE jobs")
            .execute(&mut conn)
            .await
            .expect("analyze");
        let ids: Vec<Uuid> = sqlx::query_scalar("SELECT id FROM jobs LIMIT 50")
            .fetch_all(&mut conn)
            .await
            .expect("ids");
        let id = ids[0];
        let texts = |n: usize, s: &str| vec![Some(s.to_owned()); n];
        let longs = |n: usize, v: i64| vec![v; n];
        let n = ids.len();

        let mut plans = Vec::new();
        macro_rules! explain {
            ($name:literal, $sql:expr $(, $bind:expr)*) => {{
                let plan: serde_json::Value = sqlx::query_scalar(&format!("EXPLAIN (FORMAT JSON) {}", $sql))
                    $(.bind($bind))*
                    .fetch_one(&mut conn)
                    .await
                    .unwrap_or_else(|e| panic!("EXPLAIN {}: {e}", $name));
                plans.push(($name, plan));
            }};
        }
        let fresh: Vec<Uuid> = (0..n).map(|_| Uuid::now_v7()).collect();
        explain!(
            "INSERT_ROWS",
            sql::INSERT_ROWS,
            &fresh,
            vec!["q0".to_owned(); n],
            vec![5_i32; n],
            texts(n, "c"),
            texts(n, "k"),
            texts(n, "h"),
            vec![false; n],
            longs(n, 1),
            vec![None::<i64>; n],
            vec![None::<Vec<u8>>; n],
            texts(n, "nightly")
        );
        explain!("FIND_BY_KEY", sql::FIND_BY_KEY, "q0", "key-30");
        explain!(
            "CLAIM_ROWS",
            sql::CLAIM_ROWS,
            &ids,
            longs(n, 5),
            vec!["w".to_owned(); n],
            longs(n, 9)
        );
        explain!("CLAIM_STATE", sql::CLAIM_STATE, id);
        explain!(
            "INSERT_MISSING",
            sql::INSERT_MISSING,
            Uuid::now_v7(),
            "q0",
            5_i32,
            "c",
            1_i64
        );
        explain!(
            "SUCCEED_ROWS",
            sql::SUCCEED_ROWS,
            &ids,
            vec!["w".to_owned(); n],
            texts(n, "r"),
            longs(n, 5)
        );
        explain!("GET", sql::GET, id);
        explain!("MARK_ACCEPTED", sql::MARK_ACCEPTED, id);
        explain!("FORGET_UNPUBLISHED", sql::FORGET_UNPUBLISHED, id);
        explain!("RETRY", sql::RETRY, "e", 5_i64, id, "w", b"{}".as_slice());
        explain!(
            "TAKE_OVERDUE",
            sql::TAKE_OVERDUE,
            9_000_i64,
            5_000_i64,
            vec!["q0".to_owned(), "q1".to_owned()],
            500_i64
        );
        explain!("CANCEL", sql::CANCEL, 5_i64, id);
        explain!("DEAD", sql::DEAD, "e", 5_i64, id);
        explain!("RELEASE", sql::RELEASE, id, "w");
        explain!("REVIVE", sql::REVIVE, "q0", &ids);
        explain!("DISCARD", sql::DISCARD, 5_i64, &ids);
        explain!("ACTIVE_COUNTS", crate::store::search::ACTIVE_COUNTS);
        explain!(
            "PRUNE_CHUNK",
            sql::PRUNE_CHUNK,
            400_000_i64,
            500_000_i64,
            2_000_i64
        );
        explain!("OLDEST", sql::OLDEST);
        explain!("EXPORT", sql::EXPORT, id, 1_000_i64);
        explain!("LAST_ID", sql::LAST_ID);
        explain!(
            "IMPORT",
            sql::IMPORT,
            &fresh,
            vec!["q0".to_owned(); n],
            vec!["queued".to_owned(); n],
            vec![0_i32; n],
            vec![5_i32; n],
            texts(n, "e"),
            texts(n, "r"),
            texts(n, "c"),
            texts(n, "k2"),
            longs(n, 1),
            vec![None::<i64>; n],
            vec![None::<i64>; n],
            vec![None::<i64>; n],
            vec![None::<i64>; n],
            texts(n, "h"),
            vec![true; n],
            texts(n, "w"),
            vec![None::<i64>; n],
            vec![None::<Vec<u8>>; n],
            vec![None::<String>; n]
        );

        explain!("CANCEL_MANY", sql::CANCEL_MANY, 5_i64, &ids);
        // The job search: one page of 51 for each filter, and a deep page.
        {
            use crate::store::model::{JobFilter, JobStatus};
            use crate::store::search::{Value, list_sql};
            let filters = [
                JobFilter::default(),
                JobFilter {
                    statuses: vec![JobStatus::Dead],
                    ..JobFilter::default()
                },
                JobFilter {
                    statuses: vec![JobStatus::Queued, JobStatus::Retrying],
                    ..JobFilter::default()
                },
                JobFilter {
                    queue: Some("q3".into()),
                    ..JobFilter::default()
                },
                JobFilter {
                    queue: Some("q3".into()),
                    statuses: vec![JobStatus::Dead],
                    ..JobFilter::default()
                },
                JobFilter {
                    created_after: Some(400_000),
                    created_before: Some(500_000),
                    ..JobFilter::default()
                },
                JobFilter {
                    correlation_id: Some("c".into()),
                    ..JobFilter::default()
                },
                JobFilter {
                    idempotency_key: Some("key-30".into()),
                    ..JobFilter::default()
                },
                JobFilter {
                    error_contains: Some("timeout".into()),
                    ..JobFilter::default()
                },
                JobFilter {
                    schedule: Some("nightly".into()),
                    ..JobFilter::default()
                },
                JobFilter {
                    queue: Some("q7".into()),
                    schedule: Some("nightly".into()),
                    ..JobFilter::default()
                },
            ];
            for (i, f) in filters.iter().enumerate() {
                for before in [None, Some(id)] {
                    let q = list_sql(<super::Postgres as super::Backend>::DIALECT, f, before, 51);
                    let text = format!("EXPLAIN (FORMAT JSON) {}", q.text);
                    let mut query = sqlx::query_scalar::<_, serde_json::Value>(&text);
                    for v in &q.values {
                        query = match v {
                            Value::Text(t) => query.bind(t.clone()),
                            Value::Int(n) => query.bind(*n),
                            Value::Id(u) => query.bind(*u),
                        };
                    }
                    let plan = query
                        .fetch_one(&mut conn)
                        .await
                        .unwrap_or_else(|e| panic!("EXPLAIN list {f:?}: {e}"));
                    assert!(
                        !seq_scan_on_jobs(&plan),
                        "list #{i} {f:?} reads the whole jobs table: {plan}"
                    );
                }
            }
        }

        for (name, plan) in &plans {
            let text = plan.to_string();
            assert!(
                !seq_scan_on_jobs(plan),
                "{name} reads the whole jobs table: {}",
                serde_json::to_string_pretty(plan).unwrap_or(text)
            );
        }
        assert_eq!(plans.len(), 23, "every statement but COUNTS is explained");
        // The check sees a whole-table read where there is one.
        let counts: serde_json::Value =
            sqlx::query_scalar(&format!("EXPLAIN (FORMAT JSON) {}", sql::COUNTS))
                .fetch_one(&mut conn)
                .await
                .expect("EXPLAIN COUNTS");
        assert!(seq_scan_on_jobs(&counts), "{counts}");
    }

    /// True when a plan (EXPLAIN's JSON) has a sequential scan of `jobs`.
    fn seq_scan_on_jobs(node: &serde_json::Value) -> bool {
        match node {
            serde_json::Value::Object(o) => {
                (o.get("Node Type").and_then(|v| v.as_str()) == Some("Seq Scan")
                    && o.get("Relation Name").and_then(|v| v.as_str()) == Some("jobs"))
                    || o.values().any(seq_scan_on_jobs)
            }
            serde_json::Value::Array(a) => a.iter().any(seq_scan_on_jobs),
            _ => false,
        }
    }
}
