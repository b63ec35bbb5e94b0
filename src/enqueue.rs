//! Enqueueing: the one path from a checked job to a job the broker holds.
//!
//! Insert the row (`queued`; a keyed job un-accepted) → publish the message (persistent,
//! mandatory) and wait for the publisher confirm → mark a keyed job accepted; or, when the
//! publish failed, forget the row (guarantee 1 of DESIGN §2: nothing is "accepted" without a
//! confirm). The single POST and the batch (`src/intake/`) and the scheduler
//! (`src/schedule/`) all enqueue through [`Enqueuer::enqueue`]; they differ only in how they
//! check their input and how they report a [`Refused`]. The DLQ tools (`src/dlq/`) send dead
//! jobs back through [`Enqueuer::revive`]: the same order (the store first, so a worker
//! receiving the message at once runs it; then the confirmed publish; undo on failure).
//!
//! Idempotency keys follow Stripe's semantics: the same key with the same request gives the
//! original job (replayed), with a different request [`Refused::KeyReused`]. The scheduler
//! relies on this to make each tick's job exactly once across processes: its key names the
//! schedule and the tick.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use lapin::BasicProperties;
use uuid::Uuid;

use crate::config::QueueConfig;
use crate::error::{Error, ErrorKind};
use crate::message::JobMessage;
use crate::publisher::Publisher;
use crate::store::{Inserted, JobRecord, JobStatus, NewJob, Store, now_ms};

/// Added to two confirm timeouts before an un-accepted keyed job counts as orphaned (ms):
/// room for the store's insert and clocks of intakes on different hosts.
const ORPHAN_SLACK_MS: i64 = 1_000;

/// A job to enqueue, checked by its caller: what it is, not yet a row or a message.
#[derive(Debug, Clone)]
pub(crate) struct JobSpec {
    /// The message body: the payload JSON, raw (at most the queue's `max_payload_bytes`).
    pub(crate) payload: Bytes,
    /// The wait before the first attempt (at most [`crate::delay::MAX_DELAY`]).
    pub(crate) delay: Duration,
    /// The attempt budget when it differs from the queue's.
    pub(crate) max_attempts: Option<u32>,
    /// The idempotency key (1 to 255 visible ASCII characters).
    pub(crate) idempotency_key: Option<String>,
    /// The correlation id (default: the job id).
    pub(crate) correlation_id: Option<String>,
    /// The concurrency key for the queue's per-key limit.
    pub(crate) concurrency_key: Option<String>,
    /// The schedule that makes the job, for a scheduled job.
    pub(crate) schedule: Option<String>,
}

/// A job ready to enqueue: its store row and its message, not yet either.
pub(crate) struct Prepared {
    /// The row to insert.
    pub(crate) new: NewJob,
    payload: Bytes,
    delay: Duration,
    concurrency_key: Option<String>,
}

impl Prepared {
    /// Gives `spec` an id (UUIDv7) and a creation time in queue `q`.
    pub(crate) fn new(q: &QueueConfig, spec: JobSpec) -> Self {
        let id = Uuid::now_v7();
        let now = now_ms();
        let next_attempt_at = (!spec.delay.is_zero())
            .then(|| now.saturating_add(i64::try_from(spec.delay.as_millis()).unwrap_or(i64::MAX)));
        let request_hash = spec.idempotency_key.as_ref().map(|_| request_hash(&spec));
        Prepared {
            new: NewJob {
                id,
                queue: q.name.clone(),
                max_attempts: spec.max_attempts.unwrap_or(q.max_attempts),
                correlation_id: Some(spec.correlation_id.unwrap_or_else(|| id.to_string())),
                request_hash,
                idempotency_key: spec.idempotency_key,
                created_at: now,
                next_attempt_at,
                // A delayed job waits in the delay levels: the sweeper can publish it again
                // should its delayed message be lost (`crate::sweeper`).
                resend_payload: next_attempt_at.map(|_| spec.payload.to_vec()),
                schedule: spec.schedule,
            },
            payload: spec.payload,
            delay: spec.delay,
            concurrency_key: spec.concurrency_key,
        }
    }
}

/// A job the broker holds (or an earlier request's job, replayed for its key).
#[derive(Debug)]
pub(crate) struct Accepted {
    /// The job.
    pub(crate) record: JobRecord,
    /// True when an earlier request with the same idempotency key made it.
    pub(crate) replayed: bool,
}

/// Why a job was not enqueued. Nothing was accepted: the client may try again (with the same
/// idempotency key, to be safe).
#[derive(Debug, thiserror::Error)]
pub(crate) enum Refused {
    /// The store failed (insert, or reading the original of a key); the store's error text,
    /// already logged.
    #[error("the status store is unavailable: {0}")]
    Store(String),
    /// The broker did not confirm the message: a nack (`queue_full` when the queue has a
    /// `max_length`, whose overflow setting rejects publishes), a returned (unroutable)
    /// message, a lost connection or no confirm in time.
    #[error("the broker did not confirm the job: {error}")]
    Publish {
        /// The publish's error.
        error: Error,
        /// True for a nack of a queue with a `max_length`: the queue is full.
        queue_full: bool,
    },
    /// The idempotency key was used with a different request.
    #[error("this idempotency key was used with a different request")]
    KeyReused,
    /// A request with the same key is still being accepted; try again in `retry_after_s`.
    #[error("a request with this idempotency key is still being accepted")]
    InProgress {
        /// When to try again (s, at least 1).
        retry_after_s: u64,
    },
}

/// What it takes to enqueue: the store, the publisher and the confirm timeout.
#[derive(Clone, Copy)]
pub(crate) struct Enqueuer<'a> {
    /// The status store.
    pub(crate) store: &'a dyn Store,
    /// The confirmed publisher.
    pub(crate) publisher: &'a Publisher,
    /// How long a publish waits for its confirm (`broker.confirm_timeout`).
    pub(crate) confirm_timeout: Duration,
}

impl Enqueuer<'_> {
    /// Enqueues one job of queue `q`: insert, publish, confirm, accept (see the module).
    ///
    /// # Errors
    /// [`Refused`]; nothing was accepted.
    pub(crate) async fn enqueue(
        &self,
        q: &QueueConfig,
        job: Prepared,
    ) -> Result<Accepted, Refused> {
        let inserted = self.store.insert(&job.new).await.map_err(|e| {
            tracing::warn!(queue = %q.name, error = %e, "store failed; job refused");
            Refused::Store(e.to_string())
        })?;
        self.accept(q, job, inserted).await
    }

    /// Enqueues many jobs of queue `q`: their rows in one transaction, then every publish in
    /// flight at once. One answer per job, in order.
    pub(crate) async fn enqueue_many(
        &self,
        q: &QueueConfig,
        jobs: Vec<Prepared>,
    ) -> Vec<Result<Accepted, Refused>> {
        let news: Vec<NewJob> = jobs.iter().map(|p| p.new.clone()).collect();
        match self.store.insert_many(&news).await {
            Ok(inserted) => {
                futures::future::join_all(
                    jobs.into_iter()
                        .zip(inserted)
                        .map(|(job, ins)| self.accept(q, job, ins)),
                )
                .await
            }
            Err(e) => {
                tracing::warn!(queue = %q.name, error = %e, jobs = jobs.len(), "store failed; batch refused");
                let text = e.to_string();
                jobs.iter()
                    .map(|_| Err(Refused::Store(text.clone())))
                    .collect()
            }
        }
    }

    /// Accepts a prepared job whose row the store answered `inserted` for: replays the job of
    /// an existing key, else publishes the message (persistent, mandatory) and returns only
    /// once the broker confirmed it.
    ///
    /// A keyed job whose publish failed in a way that may still have reached the queue (no
    /// confirm in time, the connection lost while waiting) keeps its row, un-accepted: a
    /// retry with the same idempotency key republishes that job, with the same id, rather
    /// than making a second one (see [`Enqueuer::replay`]). Should the first copy have
    /// reached the queue after all, the two messages carry one job id, and the worker's claim
    /// runs it once.
    async fn accept(
        &self,
        q: &QueueConfig,
        job: Prepared,
        inserted: Inserted,
    ) -> Result<Accepted, Refused> {
        let record = match inserted {
            Inserted::New => pending_record(&job.new),
            Inserted::Existing {
                record,
                request_hash,
                accepted,
            } => match self
                .replay(*record, request_hash, accepted, &job.new)
                .await?
            {
                Replay::Done(record) => {
                    return Ok(Accepted {
                        record,
                        replayed: true,
                    });
                }
                // The original's row is gone (its publish was refused) and this request's
                // row took its place: publish it as a new job.
                Replay::PublishNew => pending_record(&job.new),
                Replay::Republish(record) => {
                    let record = self.publish(q, record, job, true).await?;
                    return Ok(Accepted {
                        record,
                        replayed: true,
                    });
                }
            },
        };
        let record = self.publish(q, record, job, false).await?;
        Ok(Accepted {
            record,
            replayed: false,
        })
    }

    /// Publishes the first message of the job `record` (its row stored, un-accepted when
    /// keyed) and waits for the confirm (see [`Enqueuer::accept`]); `again` when an earlier
    /// request's publish of the same job failed. Its log lines name job id, queue, attempt
    /// and correlation id as fields of their own rather than through a span: a span per job
    /// cost 6–9 % of the intake's CPU (BENCHMARKS.md), and nothing below logs.
    async fn publish(
        &self,
        q: &QueueConfig,
        record: JobRecord,
        job: Prepared,
        again: bool,
    ) -> Result<JobRecord, Refused> {
        let msg = JobMessage {
            id: record.id,
            queue: record.queue.clone(),
            attempt: 1,
            max_attempts: record.max_attempts,
            correlation_id: record.correlation_id.clone(),
            idempotency_key: record.idempotency_key.clone(),
            concurrency_key: job.concurrency_key,
            payload: job.payload,
        };
        let delay = job.delay;
        // A line about this job, with the fields every such line carries.
        macro_rules! job_event {
            ($level:expr, $($rest:tt)+) => {
                tracing::event!(
                    $level,
                    job_id = %msg.id,
                    queue = %msg.queue,
                    attempt = 1,
                    correlation_id = msg.correlation_id.as_deref().unwrap_or(""),
                    $($rest)+
                )
            };
        }
        if let Err(e) = crate::delay::publish(
            self.publisher,
            &msg.queue,
            &msg.payload,
            msg.properties(),
            delay,
        )
        .await
        {
            if msg.idempotency_key.is_some() && may_have_arrived(&e) {
                job_event!(
                    tracing::Level::WARN,
                    error = %e,
                    "publish failed and may have reached the queue; job refused, kept for a retry with its idempotency key"
                );
            } else {
                job_event!(tracing::Level::WARN, error = %e, "publish failed; job refused");
                if let Err(forget) = self.store.forget_unpublished(msg.id).await {
                    job_event!(tracing::Level::WARN, error = %forget, "could not remove unpublished job");
                }
            }
            let queue_full = matches!(e.kind(), ErrorKind::Nacked { .. }) && q.max_length.is_some();
            return Err(Refused::Publish {
                error: e,
                queue_full,
            });
        }
        if msg.idempotency_key.is_some()
            && let Err(e) = self.store.mark_accepted(msg.id).await
        {
            // The job is on the broker and will run; only replays of its key wait longer.
            job_event!(tracing::Level::WARN, error = %e, "could not mark keyed job accepted");
        }
        crate::telemetry::count(crate::telemetry::JOBS_ACCEPTED, &msg.queue);
        job_event!(
            tracing::Level::DEBUG,
            delay_ms = delay.as_millis() as u64,
            republished = again,
            "job accepted"
        );
        Ok(record)
    }

    /// A request whose idempotency key is taken (Stripe's semantics): same request → the
    /// original job; a different request → [`Refused::KeyReused`].
    ///
    /// While the original's publish may still await its confirm, wait for it (at most one
    /// confirm timeout, then [`Refused::InProgress`]): a publish takes at most two confirm
    /// timeouts (opening a channel, then the confirm), so a row still un-accepted that long
    /// after its `created_at` belongs to a request that failed (or an intake that died)
    /// between insert and confirm, and this request publishes the job again
    /// ([`Replay::Republish`]). Two messages with one job id are safe: the worker's claim
    /// runs the job once.
    async fn replay(
        &self,
        mut record: JobRecord,
        hash: Option<String>,
        mut accepted: bool,
        new: &NewJob,
    ) -> Result<Replay, Refused> {
        if hash != new.request_hash {
            return Err(Refused::KeyReused);
        }
        let timeout_ms = i64::try_from(self.confirm_timeout.as_millis()).unwrap_or(i64::MAX);
        let orphaned_at = |r: &JobRecord| {
            r.created_at
                .saturating_add(timeout_ms.saturating_mul(2))
                .saturating_add(ORPHAN_SLACK_MS)
        };
        let deadline = tokio::time::Instant::now() + self.confirm_timeout;
        while !accepted {
            let now = now_ms();
            if now >= orphaned_at(&record) {
                return Ok(Replay::Republish(record));
            }
            if tokio::time::Instant::now() >= deadline {
                let wait_s = ((orphaned_at(&record) - now + 999) / 1000).max(1);
                return Err(Refused::InProgress {
                    retry_after_s: u64::try_from(wait_s).unwrap_or(1),
                });
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
            match self.store.insert(new).await {
                Ok(Inserted::New) => return Ok(Replay::PublishNew),
                Ok(Inserted::Existing {
                    record: r,
                    accepted: a,
                    ..
                }) => {
                    record = *r;
                    accepted = a || record.status != JobStatus::Queued || record.attempts > 0;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "store failed during idempotent replay");
                    return Err(Refused::Store(e.to_string()));
                }
            }
        }
        Ok(Replay::Done(record))
    }
}

/// A dead job going back to its work queue (DLQ replay and requeue): its dead letter's body
/// and properties, as the DLQ archive format holds them.
pub(crate) struct Revival {
    /// The job id (the message's `message_id`); `None` for a message published by hand.
    pub(crate) id: Option<Uuid>,
    /// The work queue it goes to.
    pub(crate) queue: String,
    /// The message body (the payload).
    pub(crate) body: Vec<u8>,
    /// The properties to publish with (dead-letter headers removed, attempt reset).
    pub(crate) properties: BasicProperties,
    /// Its last error, kept when it goes back to `dead`.
    pub(crate) last_error: Option<String>,
}

impl Enqueuer<'_> {
    /// Sends dead jobs back to their work queues: their rows go `dead` → `queued` (attempts
    /// reset) per queue first, so that a worker receiving a message at once runs it; then
    /// every message is published with pipelined confirms. With `dead_again`, a job whose
    /// publish failed goes back to `dead` (without, as for messages of
    /// [`crate::dlq::UNROUTABLE`], its status stays what it was). One answer per job, in
    /// order.
    ///
    /// # Errors
    /// The store's, when the rows cannot be revived (nothing was published).
    pub(crate) async fn revive(
        &self,
        jobs: &[Revival],
        dead_again: bool,
    ) -> crate::Result<Vec<crate::Result<()>>> {
        let mut by_queue: BTreeMap<&str, Vec<Uuid>> = BTreeMap::new();
        for job in jobs {
            if let Some(id) = job.id {
                by_queue.entry(&job.queue).or_default().push(id);
            }
        }
        for (queue, ids) in &by_queue {
            self.store.revive(ids, queue).await?;
        }
        let results = futures::future::join_all(jobs.iter().map(|job| {
            self.publisher.publish(
                crate::topology::JOBS_EXCHANGE,
                &job.queue,
                &job.body,
                job.properties.clone(),
                &job.queue,
            )
        }))
        .await;
        for (job, result) in jobs.iter().zip(&results) {
            if result.is_ok() {
                crate::telemetry::count(crate::telemetry::JOBS_PUBLISHED, &job.queue);
            }
            if dead_again
                && result.is_err()
                && let Some(id) = job.id
            {
                let error = job.last_error.as_deref().unwrap_or("replay failed");
                if let Err(e) = self.store.dead(id, error, now_ms()).await {
                    tracing::warn!(job_id = %id, error = %e, "could not mark job dead again after a failed republish");
                }
            }
        }
        Ok(results)
    }
}

/// What a request whose idempotency key is taken gets: see [`Enqueuer::replay`].
enum Replay {
    /// The original job, accepted: answer it.
    Done(JobRecord),
    /// The original's publish failed and its row is gone; this request's row was inserted.
    PublishNew,
    /// The original's publish failed in a way that may have reached the queue (its row kept,
    /// un-accepted): publish the same job again.
    Republish(JobRecord),
}

/// The record of a job just inserted, before its publish.
fn pending_record(new: &NewJob) -> JobRecord {
    JobRecord {
        id: new.id,
        queue: new.queue.clone(),
        status: JobStatus::Queued,
        attempts: 0,
        max_attempts: new.max_attempts,
        last_error: None,
        result: None,
        correlation_id: new.correlation_id.clone(),
        idempotency_key: new.idempotency_key.clone(),
        created_at: new.created_at,
        started_at: None,
        finished_at: None,
        next_attempt_at: new.next_attempt_at,
        discarded_at: None,
        schedule: new.schedule.clone(),
    }
}

/// True when a publish that failed with `e` may nonetheless have reached the queue: a nack,
/// a returned (unroutable) message and a publish never sent (no channel) say it did not.
fn may_have_arrived(e: &Error) -> bool {
    !matches!(
        e.kind(),
        ErrorKind::Nacked { .. } | ErrorKind::Unroutable { .. } | ErrorKind::NotSent(_)
    )
}

/// SHA-256 (hex) of the request's meaning: payload, delay and attempt budget, in canonical
/// JSON (object keys sorted), so whitespace and key order do not matter.
fn request_hash(spec: &JobSpec) -> String {
    use sha2::Digest as _;
    let payload: serde_json::Value =
        serde_json::from_slice(&spec.payload).unwrap_or(serde_json::Value::Null);
    let canonical = sorted(serde_json::json!({
        "payload": payload,
        "delay_ms": u64::try_from(spec.delay.as_millis()).unwrap_or(u64::MAX),
        "max_attempts": spec.max_attempts,
    }));
    let digest = sha2::Sha256::digest(canonical.to_string().as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// `v` with every object's keys in sorted order, whatever order serde_json's `Map` keeps
/// (a dependency may turn on its `preserve_order` feature, which keeps insertion order).
fn sorted(v: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match v {
        Value::Object(map) => {
            let mut entries: Vec<(String, Value)> = map.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Object(entries.into_iter().map(|(k, v)| (k, sorted(v))).collect())
        }
        Value::Array(items) => Value::Array(items.into_iter().map(sorted).collect()),
        other => other,
    }
}
