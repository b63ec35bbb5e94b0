//! The store's logic, written once for every adapter: [`SqlStore`] implements [`JobStore`]
//! and [`Maintenance`] on top of a [`Backend`]'s statements.
//!
//! - **Group commit.** Inserts go through one [`Batcher`]; claims and successes, the
//!   workers' hot path, through another. A batch of inserts is one multi-row statement per
//!   chunk (each atomic on its own: a statement is its own transaction); a batch of claims and
//!   successes is one transaction, answered only after its commit. A batch that fails for a
//!   reason other than an unreachable store is tried again one write at a time, so that what
//!   failed fails only its own request.
//! - **Insert-or-find.** A job whose idempotency key is taken gets the job holding it; should
//!   that job vanish meanwhile (its publish failed and it was forgotten), the insert is tried
//!   again.
//! - **Claim classification.** A claim not granted by the batched `UPDATE` is looked at
//!   alone: a final job is [`Claim::Final`], a live lease [`Claim::Busy`], a missing row is
//!   created from the message and claimed.
//! - **Chunked pruning.** Bounded deletes, oldest first, each starting where the last one
//!   ended, with a pause three times as long as each took, so a prune of millions of rows
//!   never holds a lock for long or takes more than a quarter of the store's time.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use uuid::Uuid;

use super::backend::{Backend, Conn};
use super::group_commit::Batcher;
use super::model::{
    ActiveCounts, Bucket, Cancel, Claim, ClaimRequest, Claimed, Inserted, JobRecord, JobRow,
    JobStatus, NewJob, Overdue, OwnedClaim, StoreStatus, Success,
};
use super::model::{Cursor, JobFilter, JobPage, ScheduleState, StatusCounts, Tokens};
use super::traits::{FlowControl, JobSearch, JobStore, Maintenance, QueueControl, Schedules};
use super::{StoreError, StoreErrorKind};
use crate::error::{Error, ErrorKind, Result};

/// After each prune chunk, a pause this many times as long as the chunk took.
const PRUNE_PAUSE_FACTOR: u32 = 3;

/// Most times an insert-or-find or a claim goes round when the row keeps changing under it
/// (another process deleting or releasing it between two statements).
const MAX_PASSES: usize = 8;

/// A worker's write, queued for the worker-write group commit.
#[derive(Debug)]
enum WorkerWrite {
    Claim(OwnedClaim),
    Succeed(Success),
}

/// The answer to a [`WorkerWrite`].
#[derive(Debug)]
enum Written {
    Claim(Claim),
    /// `true`: the job is watched (see [`JobStore::watch`]).
    Succeeded(bool),
}

/// A [`super::Store`] on a SQL database; `B` holds the SQL. See the module docs.
pub(crate) struct SqlStore<B: Backend> {
    backend: Arc<B>,
    inserts: Batcher<NewJob, Inserted>,
    worker_writes: Batcher<WorkerWrite, Written>,
}

impl<B: Backend> std::fmt::Debug for SqlStore<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlStore")
            .field("backend", &B::NAME)
            .finish_non_exhaustive()
    }
}

impl<B: Backend> Clone for SqlStore<B> {
    fn clone(&self) -> Self {
        Self {
            backend: self.backend.clone(),
            inserts: self.inserts.clone(),
            worker_writes: self.worker_writes.clone(),
        }
    }
}

impl<B: Backend> SqlStore<B> {
    /// Starts the group-commit writers over `backend`.
    pub(crate) fn new(backend: B) -> Self {
        let backend = Arc::new(backend);
        let inserts = {
            let b = backend.clone();
            Batcher::start("intake", move |jobs| {
                let b = b.clone();
                async move { insert_batch(&*b, jobs).await }
            })
        };
        let worker_writes = {
            let b = backend.clone();
            Batcher::start("worker", move |writes| {
                let b = b.clone();
                async move { worker_batch(&*b, writes).await }
            })
        };
        Self {
            backend,
            inserts,
            worker_writes,
        }
    }
}

/// The same error again, for answering every write of a failed batch with it.
fn again(e: &Error) -> Error {
    match e.kind() {
        ErrorKind::Store(s) => StoreError::new(s.kind(), s).into(),
        other => Error::store_kind(StoreErrorKind::Other, other),
    }
}

/// True when a failed batch is worth trying again write by write: the store answered, but
/// refused something (a store that cannot be reached would fail each write the same way,
/// one timeout after the other).
fn worth_one_by_one(e: &Error) -> bool {
    !matches!(e.kind(), ErrorKind::Store(s) if s.kind() == StoreErrorKind::Unavailable)
}

/// One group commit of inserts (see the module docs).
async fn insert_batch<B: Backend>(b: &B, jobs: Vec<NewJob>) -> Vec<Result<Inserted>> {
    let whole = async {
        let mut conn = b.writer().await?;
        insert_or_find::<B>(&mut conn, &jobs).await
    };
    match whole.await {
        Ok(answers) => answers,
        // The multi-row insert stored nothing: one at a time, so that whatever failed fails
        // only its own request.
        Err(e) if jobs.len() > 1 && worth_one_by_one(&e) => {
            tracing::debug!(error = %e, jobs = jobs.len(), "group insert failed; inserting one by one");
            let mut out = Vec::with_capacity(jobs.len());
            for job in &jobs {
                let one = async {
                    let mut conn = b.writer().await?;
                    insert_or_find_one::<B>(&mut conn, job, false).await
                };
                out.push(one.await);
            }
            out
        }
        Err(e) => jobs.iter().map(|_| Err(again(&e))).collect(),
    }
}

/// Inserts `jobs` on `conn` and answers for each in order: a job whose idempotency key is
/// taken (by an earlier job, maybe of this batch) gets that job.
///
/// `Err` when the insert itself failed, which stores none of `jobs`. Once it succeeded, the
/// jobs it stored are answered [`Inserted::New`] whatever happens next, and a job whose key
/// was taken gets its own answer (an error only for itself): a stored job is never reported
/// as refused.
async fn insert_or_find<B: Backend>(
    conn: &mut Conn<B>,
    jobs: &[NewJob],
) -> Result<Vec<Result<Inserted>>> {
    let present = B::insert_rows(conn, jobs).await?;
    let mut out = Vec::with_capacity(jobs.len());
    for job in jobs {
        out.push(if present.contains(&job.id) {
            Ok(Inserted::New)
        } else {
            insert_or_find_one::<B>(conn, job, true).await
        });
    }
    Ok(out)
}

/// One job's insert-or-find. `tried`: its insert was just refused, so look for the key's
/// holder first.
async fn insert_or_find_one<B: Backend>(
    conn: &mut Conn<B>,
    job: &NewJob,
    mut tried: bool,
) -> Result<Inserted> {
    for _ in 0..MAX_PASSES {
        match &job.idempotency_key {
            // Without a key only the job's own id can be taken: the same job, inserted before.
            None if tried => return Ok(Inserted::New),
            Some(key) if tried => {
                if let Some(existing) = B::find_by_key(conn, &job.queue, key).await? {
                    return Ok(existing);
                }
                // The key's holder vanished (its publish failed): insert after all.
            }
            _ => {}
        }
        if B::insert_rows(conn, std::slice::from_ref(job))
            .await?
            .contains(&job.id)
        {
            return Ok(Inserted::New);
        }
        tried = true;
    }
    Err(Error::store_kind(
        StoreErrorKind::Conflict,
        format!(
            "idempotency key of job {} kept changing hands; try again",
            job.id
        ),
    ))
}

/// One group commit of worker writes (see the module docs).
async fn worker_batch<B: Backend>(b: &B, writes: Vec<WorkerWrite>) -> Vec<Result<Written>> {
    let whole = async {
        let mut conn = b.writer().await?;
        if let [one] = writes.as_slice() {
            // A write alone (light load): its statement is its own transaction. A
            // `BEGIN`/`COMMIT` around it would be two more round trips to the store (on
            // SQLite, two more hand-offs to sqlx's connection thread, each waiting for the
            // runtime to take the answer) for nothing to group.
            return apply_worker_writes::<B>(&mut conn, std::slice::from_ref(one)).await;
        }
        let mut tx = sqlx::Connection::begin(&mut *conn).await.map_err(B::err)?;
        let answers = apply_worker_writes::<B>(&mut tx, &writes).await?;
        // Nothing is answered before the commit: an answer is a promise that it is stored.
        tx.commit().await.map_err(B::err)?;
        Ok::<_, Error>(answers)
    };
    match whole.await {
        Ok(answers) => answers.into_iter().map(Ok).collect(),
        Err(e) if writes.len() > 1 && worth_one_by_one(&e) => {
            tracing::debug!(error = %e, writes = writes.len(), "batched worker writes failed; writing one by one");
            let mut out = Vec::with_capacity(writes.len());
            for w in &writes {
                let one = async {
                    let mut conn = b.writer().await?;
                    let mut answers =
                        apply_worker_writes::<B>(&mut conn, std::slice::from_ref(w)).await?;
                    answers.pop().ok_or_else(|| {
                        Error::store_kind(StoreErrorKind::Other, "a write went unanswered")
                    })
                };
                out.push(one.await);
            }
            out
        }
        Err(e) => writes.iter().map(|_| Err(again(&e))).collect(),
    }
}

/// Claims, then successes, of `writes` on `conn`, answered in the order of `writes`. The
/// claims are one batched statement; those it did not grant (a missing row, a final job, a
/// live lease, an id twice in the batch) are classified one by one by [`claim_one`].
async fn apply_worker_writes<B: Backend>(
    conn: &mut Conn<B>,
    writes: &[WorkerWrite],
) -> Result<Vec<Written>> {
    let claims: Vec<OwnedClaim> = writes
        .iter()
        .filter_map(|w| match w {
            WorkerWrite::Claim(c) => Some(c.clone()),
            WorkerWrite::Succeed(_) => None,
        })
        .collect();
    let successes: Vec<Success> = writes
        .iter()
        .filter_map(|w| match w {
            WorkerWrite::Succeed(s) => Some(s.clone()),
            WorkerWrite::Claim(_) => None,
        })
        .collect();
    let mut granted: BTreeMap<Uuid, Claimed> = if claims.is_empty() {
        BTreeMap::new()
    } else {
        B::claim_rows(conn, &claims)
            .await?
            .into_iter()
            .map(|c| (c.id, c))
            .collect()
    };
    let mut claim_answers = Vec::with_capacity(claims.len());
    for req in &claims {
        // The first request for an id gets the claim the batch made; any other goes alone.
        claim_answers.push(match granted.remove(&req.id) {
            Some(c) => Claim::Claimed {
                attempt: c.attempt,
                max_attempts: c.max_attempts,
            },
            None => claim_one::<B>(conn, req).await?,
        });
    }
    // Jobs nobody waits for in one statement; should it leave any (a watched job, or a lease
    // taken over), a second one records the watched ones and names them.
    let mut watched = std::collections::HashSet::new();
    if !successes.is_empty() && B::succeed_rows(conn, &successes).await? < successes.len() as u64 {
        watched.extend(B::succeed_watched_rows(conn, &successes).await?);
    }
    let mut claim_answers = claim_answers.into_iter();
    Ok(writes
        .iter()
        .map(|w| match w {
            WorkerWrite::Claim(_) => claim_answers
                .next()
                .map_or(Written::Succeeded(false), Written::Claim),
            WorkerWrite::Succeed(s) => Written::Succeeded(watched.contains(&s.id)),
        })
        .collect())
}

/// Claims one job on `conn`: the claim classification (see [`Claim`]).
async fn claim_one<B: Backend>(conn: &mut Conn<B>, req: &OwnedClaim) -> Result<Claim> {
    for _ in 0..MAX_PASSES {
        if let Some(c) = B::claim_rows(conn, std::slice::from_ref(req))
            .await?
            .first()
        {
            return Ok(Claim::Claimed {
                attempt: c.attempt,
                max_attempts: c.max_attempts,
            });
        }
        match B::claim_state(conn, req.id).await? {
            Some((status, _)) if status.is_final() => return Ok(Claim::Final(status)),
            Some((JobStatus::Running, Some(until))) if until > req.now => {
                return Ok(Claim::Busy { until });
            }
            // Claimable by now (released or expired between the two statements): again.
            Some(_) => {}
            None => B::insert_missing(conn, req).await?,
        }
    }
    Err(Error::store_kind(
        StoreErrorKind::Conflict,
        format!(
            "job {} kept changing while being claimed; try again",
            req.id
        ),
    ))
}

/// The answer a worker write gets when the writer answered with the other kind.
fn mismatched() -> Error {
    Error::store_kind(
        StoreErrorKind::Other,
        "the worker writer answered out of turn",
    )
}

#[async_trait::async_trait]
impl<B: Backend> JobStore for SqlStore<B> {
    async fn insert(&self, job: &NewJob) -> Result<Inserted> {
        self.inserts.submit(job.clone()).await
    }

    async fn insert_many(&self, jobs: &[NewJob]) -> Result<Vec<Inserted>> {
        let mut conn = self.backend.writer().await?;
        let mut tx = sqlx::Connection::begin(&mut *conn).await.map_err(B::err)?;
        // All or nothing: any job's error rolls the whole batch back (the dropped `tx`).
        let out = insert_or_find::<B>(&mut tx, jobs)
            .await?
            .into_iter()
            .collect::<Result<Vec<_>>>()?;
        tx.commit().await.map_err(B::err)?;
        Ok(out)
    }

    async fn mark_accepted(&self, id: Uuid) -> Result<()> {
        self.backend.mark_accepted(id).await
    }

    async fn forget_unpublished(&self, id: Uuid) -> Result<()> {
        self.backend.forget_unpublished(id).await
    }

    async fn get(&self, id: Uuid) -> Result<Option<JobRecord>> {
        self.backend.get(id).await
    }

    async fn watch(&self, id: Uuid) -> Result<Option<JobRecord>> {
        self.backend.watch(id).await?;
        self.backend.get(id).await
    }

    async fn claim(&self, req: &ClaimRequest<'_>) -> Result<Claim> {
        match self
            .worker_writes
            .submit(WorkerWrite::Claim(OwnedClaim::new(req)))
            .await?
        {
            Written::Claim(c) => Ok(c),
            Written::Succeeded(_) => Err(mismatched()),
        }
    }

    async fn claim_keyed(&self, req: &ClaimRequest<'_>, key: &str, limit: u32) -> Result<Claim> {
        let owned = OwnedClaim::new(req);
        let mut conn = self.backend.writer().await?;
        let mut tx = sqlx::Connection::begin(&mut *conn).await.map_err(B::err)?;
        B::lock_key(&mut tx, req.queue, key).await?;
        let claim = claim_one::<B>(&mut tx, &owned).await?;
        if matches!(claim, Claim::Claimed { .. }) {
            let running = B::key_running(&mut tx, req.id, req.queue, key, req.now).await?;
            if running > u64::from(limit) {
                // Over the limit: the dropped transaction rolls the claim back.
                return Ok(Claim::KeyBusy);
            }
        }
        tx.commit().await.map_err(B::err)?;
        Ok(claim)
    }

    async fn succeed(&self, id: Uuid, owner: &str, result: Option<&str>, now: i64) -> Result<bool> {
        let write = WorkerWrite::Succeed(Success {
            id,
            owner: owner.to_owned(),
            result: result.map(str::to_owned),
            now,
        });
        match self.worker_writes.submit(write).await? {
            Written::Succeeded(watched) => Ok(watched),
            Written::Claim(_) => Err(mismatched()),
        }
    }

    async fn retry(
        &self,
        id: Uuid,
        owner: &str,
        error: &str,
        next_attempt_at: i64,
        payload: &[u8],
    ) -> Result<()> {
        self.backend
            .retry(id, owner, error, next_attempt_at, payload)
            .await
    }

    async fn take_overdue(
        &self,
        queues: &[String],
        due_before: i64,
        recheck_at: i64,
        limit: u32,
    ) -> Result<Vec<Overdue>> {
        if queues.is_empty() || limit == 0 {
            return Ok(Vec::new());
        }
        self.backend
            .take_overdue(queues, due_before, recheck_at, limit)
            .await
    }

    async fn cancel(&self, id: Uuid, now: i64) -> Result<Cancel> {
        if let Some(r) = self.backend.cancel_row(id, now).await? {
            return Ok(Cancel::Cancelled(Box::new(r)));
        }
        Ok(match self.backend.get(id).await? {
            Some(r) => Cancel::Conflict(r.status),
            None => Cancel::NotFound,
        })
    }

    async fn dead(&self, id: Uuid, error: &str, now: i64) -> Result<()> {
        self.backend.dead(id, error, now).await
    }

    async fn release(&self, id: Uuid, owner: &str) -> Result<()> {
        self.backend.release(id, owner).await
    }

    async fn revive(&self, ids: &[Uuid], queue: &str) -> Result<()> {
        self.backend.revive(ids, queue).await
    }

    async fn discard(&self, ids: &[Uuid], now: i64) -> Result<()> {
        self.backend.discard(ids, now).await
    }

    async fn active_counts(&self) -> Result<BTreeMap<String, ActiveCounts>> {
        self.backend.active_counts().await
    }
}

#[async_trait::async_trait]
impl<B: Backend> Maintenance for SqlStore<B> {
    async fn ping(&self) -> Result<()> {
        self.backend.ping().await
    }

    async fn prune(&self, cutoff: i64) -> Result<u64> {
        let mut total = 0;
        let mut from = i64::MIN;
        loop {
            let started = Instant::now();
            let (n, last) = self
                .backend
                .prune_chunk(from, cutoff, B::PRUNE_CHUNK)
                .await?;
            total += n;
            if n < u64::from(B::PRUNE_CHUNK) {
                return Ok(total);
            }
            from = last.unwrap_or(from);
            // Three times as long for everyone else: a long prune takes at most a quarter of
            // the store's time (and of the CPU it shares with the intake on a small host).
            tokio::time::sleep(started.elapsed() * PRUNE_PAUSE_FACTOR).await;
        }
    }

    async fn status(&self) -> Result<StoreStatus> {
        let (schema_version, binary_schema_version) = self.backend.schema_versions().await?;
        let mut status = StoreStatus {
            backend: B::NAME,
            schema_version,
            binary_schema_version,
            oldest_created_at: self.backend.oldest_created_at().await?,
            ..StoreStatus::default()
        };
        for (queue, job_status, n) in self.backend.counts().await? {
            status.total += n;
            *status
                .counts
                .entry(queue)
                .or_default()
                .entry(job_status.as_str().to_owned())
                .or_default() += n;
        }
        Ok(status)
    }

    async fn export(&self, after: Option<Uuid>, limit: u32) -> Result<Vec<JobRow>> {
        self.backend.export(after, limit).await
    }

    async fn last_id(&self) -> Result<Option<Uuid>> {
        self.backend.last_id().await
    }

    async fn import(&self, rows: &[JobRow]) -> Result<u64> {
        self.backend.import(rows).await
    }
}

#[async_trait::async_trait]
impl<B: Backend> QueueControl for SqlStore<B> {
    async fn queue_pause(&self, queue: &str, now: i64) -> Result<bool> {
        self.backend.queue_pause(queue, now).await
    }

    async fn queue_resume(&self, queue: &str) -> Result<bool> {
        self.backend.queue_resume(queue).await
    }

    async fn queues_paused(&self) -> Result<BTreeMap<String, i64>> {
        self.backend.queues_paused().await
    }
}

#[async_trait::async_trait]
impl<B: Backend> FlowControl for SqlStore<B> {
    async fn take_tokens(
        &self,
        queue: &str,
        want: u32,
        per_second: f64,
        burst: u32,
        now: i64,
    ) -> Result<Tokens> {
        let mut conn = self.backend.writer().await?;
        let mut tx = sqlx::Connection::begin(&mut *conn).await.map_err(B::err)?;
        let bucket = B::bucket_for_update(&mut tx, queue, f64::from(burst), now).await?;
        let (after, tokens) = bucket.take(now, want, per_second, burst);
        B::bucket_write(&mut tx, queue, after).await?;
        tx.commit().await.map_err(B::err)?;
        Ok(tokens)
    }

    async fn buckets(&self) -> Result<BTreeMap<String, Bucket>> {
        self.backend.buckets().await
    }

    async fn throttle(&self, queue: &str, until: i64, reason: &str) -> Result<()> {
        self.backend.throttle(queue, until, reason).await
    }

    async fn throttles(&self, now: i64) -> Result<BTreeMap<String, i64>> {
        self.backend.throttles(now).await
    }
}

#[async_trait::async_trait]
impl<B: Backend> Schedules for SqlStore<B> {
    async fn schedule_start(&self, name: &str, now: i64) -> Result<ScheduleState> {
        // A read first: a known schedule (every call but the first) writes nothing. The row
        // is never deleted, so once seen it stays; concurrent first callers all go through
        // the upsert, which returns the row the first of them made.
        if let Some(state) = self.backend.schedule_find(name).await? {
            return Ok(state);
        }
        self.backend.schedule_create(name, now).await
    }

    async fn schedule_advance(&self, name: &str, tick: i64, job: Option<Uuid>) -> Result<()> {
        self.backend.schedule_advance(name, tick, job).await
    }

    async fn schedule_states(&self) -> Result<BTreeMap<String, ScheduleState>> {
        self.backend.schedule_states().await
    }
}

#[async_trait::async_trait]
impl<B: Backend> JobSearch for SqlStore<B> {
    async fn list(&self, filter: &JobFilter, after: Option<Cursor>, limit: u32) -> Result<JobPage> {
        let limit = limit.clamp(*super::PAGE_LIMITS.start(), *super::PAGE_LIMITS.end());
        // One more than the page: whether a next page exists, without a count.
        let sql = super::search::list_sql(B::DIALECT, filter, after.map(|c| c.before), limit + 1);
        let mut jobs = self.backend.list_rows(&sql).await?;
        let more = jobs.len() > limit as usize;
        jobs.truncate(limit as usize);
        let next_cursor = if more {
            jobs.last().map(|j| Cursor::after(j.id))
        } else {
            None
        };
        Ok(JobPage { jobs, next_cursor })
    }

    async fn status_counts(&self) -> Result<StatusCounts> {
        let mut out = StatusCounts::new();
        for (queue, status, n) in self.backend.counts().await? {
            *out.entry(queue).or_default().entry(status).or_default() += n;
        }
        Ok(out)
    }

    async fn cancel_many(&self, ids: &[Uuid], now: i64) -> Result<Vec<Uuid>> {
        let mut out = Vec::new();
        for chunk in ids.chunks(500) {
            out.extend(self.backend.cancel_rows(chunk, now).await?);
        }
        Ok(out)
    }
}
