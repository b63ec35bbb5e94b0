//! The retry sweeper: publishes again, from the store, a retry or a delayed job whose delayed
//! message did not come back from the broker's delay levels in time.
//!
//! Retries and delayed jobs wait in the broker (DESIGN §2, guarantee 5: the delay levels of
//! [`crate::delay`]), and come back by the quorum queues' at-least-once dead-lettering. That
//! path can stall: after a broker restart a delay level's dead-letter worker may find the next
//! level's exchange not yet there and stop forwarding (rabbitmq-server issue #12625), and an
//! operator may purge a level or reset a node. The store knows when each such job is due
//! (`next_attempt_at`) and keeps its payload while it waits (the intake for a delayed job,
//! [`crate::store::JobStore::retry`] for a retry), so every worker process, for the queues it
//! serves, looks every [`sweep_every`] for jobs overdue by more than `worker.retry_sweep_after`
//! (default 30 s) and publishes each straight to its work queue, with a confirm.
//!
//! A paused queue is not swept (`crate::admission`), nor for one `retry_sweep_after` after it
//! was last seen paused: its delayed messages come back to the work queue and wait there
//! unclaimed, so they would look lost, and each sweep would publish another copy.
//!
//! Nothing runs twice for it: [`crate::store::JobStore::take_overdue`] hands each overdue job
//! to one process and makes it due again one more `retry_sweep_after` later (so a publish that
//! fails is tried again then), a claim clears the kept payload, and a late original that
//! arrives after the copy meets the claim like any duplicate (acked if the job finished,
//! parked while it runs).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::admission::{Admission, Pauses};
use crate::message::JobMessage;
use crate::publisher::Publisher;
use crate::store::{Overdue, Store, now_ms};

/// Most jobs one store statement hands out; a sweep repeats while it gets this many.
const BATCH: u32 = 500;

/// How often a process sweeps for a given `retry_sweep_after`: a third of it, between 250 ms
/// and 10 s, so that an overdue job waits at most about `retry_sweep_after` + this.
pub(crate) fn sweep_every(retry_sweep_after: Duration) -> Duration {
    (retry_sweep_after / 3).clamp(Duration::from_millis(250), Duration::from_secs(10))
}

/// Sweeps `queues` until `stop`, leaving out the ones `pauses` says are paused: see the
/// module docs.
pub(crate) async fn run(
    store: Arc<dyn Store>,
    publisher: Arc<Publisher>,
    queues: Vec<String>,
    retry_sweep_after: Duration,
    pauses: Arc<Pauses>,
    stop: CancellationToken,
) {
    let every = sweep_every(retry_sweep_after);
    let after_ms = i64::try_from(retry_sweep_after.as_millis()).unwrap_or(i64::MAX);
    let mut last_paused: HashMap<String, Instant> = HashMap::new();
    loop {
        // Jittered (±20 %), so that the processes of a fleet do not sweep in step.
        let wait = every.mul_f64(rand::rng().random_range(0.8..1.2));
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
        let active = sweepable(
            &queues,
            |q| pauses.admission(q),
            &mut last_paused,
            Instant::now(),
            retry_sweep_after,
        );
        if active.is_empty() {
            continue;
        }
        if let Err(e) = sweep(&*store, &publisher, &active, after_ms, &stop).await {
            warn!(error = %e, "sweeping for overdue retries failed; will try again");
        }
    }
}

/// The queues of `queues` to sweep at `now`: not those `admission` parks (paused), nor those
/// seen parked within the last `quiet` (their delayed messages that came back during the pause
/// still wait in the work queue). `last_paused` keeps when each queue was last seen parked.
fn sweepable(
    queues: &[String],
    admission: impl Fn(&str) -> Admission,
    last_paused: &mut HashMap<String, Instant>,
    now: Instant,
    quiet: Duration,
) -> Vec<String> {
    for q in queues {
        if admission(q) == Admission::Park {
            last_paused.insert(q.clone(), now);
        }
    }
    queues
        .iter()
        .filter(|q| {
            last_paused
                .get(*q)
                .is_none_or(|at| now.duration_since(*at) >= quiet)
        })
        .cloned()
        .collect()
}

/// One sweep: takes overdue jobs in batches and publishes each again. Returns how many were
/// published.
///
/// # Errors
/// The store's, when it cannot hand out overdue jobs. A failed publish is logged, not
/// returned: the job is due again one `retry_sweep_after` later.
pub(crate) async fn sweep(
    store: &dyn Store,
    publisher: &Publisher,
    queues: &[String],
    after_ms: i64,
    stop: &CancellationToken,
) -> crate::Result<u64> {
    let mut resent = 0;
    loop {
        let now = now_ms();
        let due = store
            .take_overdue(
                queues,
                now.saturating_sub(after_ms),
                now.saturating_add(after_ms),
                BATCH,
            )
            .await?;
        let full = due.len() == BATCH as usize;
        for job in due {
            if stop.is_cancelled() {
                return Ok(resent);
            }
            resent += u64::from(resend(publisher, job, now).await);
        }
        if !full {
            return Ok(resent);
        }
    }
}

/// Publishes `job` to its work queue as the attempt after its last; true when confirmed.
async fn resend(publisher: &Publisher, job: Overdue, now: i64) -> bool {
    let msg = JobMessage {
        id: job.id,
        queue: job.queue,
        attempt: job.attempts.saturating_add(1),
        max_attempts: job.max_attempts,
        correlation_id: job.correlation_id,
        idempotency_key: job.idempotency_key,
        concurrency_key: None,
        payload: job.payload.into(),
    };
    let published = crate::delay::publish(
        publisher,
        &msg.queue,
        &msg.payload,
        msg.properties(),
        Duration::ZERO,
    )
    .await;
    match published {
        Ok(()) => {
            crate::telemetry::count(crate::telemetry::JOBS_RESENT, &msg.queue);
            info!(job_id = %msg.id, queue = %msg.queue, attempt = msg.attempt, at_ms = now,
                "a delayed message was overdue; published the job again from the store");
            true
        }
        Err(e) => {
            warn!(job_id = %msg.id, queue = %msg.queue, error = %e,
                "cannot publish an overdue job again; will try at the next sweep");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paused_queues_are_left_out_until_a_quiet_period_after_their_resume() {
        let queues = vec!["a".to_owned(), "b".to_owned()];
        let quiet = Duration::from_secs(30);
        let mut last = HashMap::new();
        let t0 = Instant::now();
        let paused_a = |q: &str| {
            if q == "a" {
                Admission::Park
            } else {
                Admission::Admit
            }
        };
        assert_eq!(sweepable(&queues, paused_a, &mut last, t0, quiet), ["b"]);
        let none = |_: &str| Admission::Admit;
        let soon = t0 + Duration::from_secs(10);
        assert_eq!(
            sweepable(&queues, none, &mut last, soon, quiet),
            ["b"],
            "resumed 10 s ago"
        );
        let later = t0 + quiet;
        assert_eq!(
            sweepable(&queues, none, &mut last, later, quiet),
            ["a", "b"]
        );
    }

    #[test]
    fn sweeps_a_third_as_often_as_the_bound_within_limits() {
        assert_eq!(
            sweep_every(Duration::from_secs(30)),
            Duration::from_secs(10)
        );
        assert_eq!(sweep_every(Duration::from_secs(3)), Duration::from_secs(1));
        assert_eq!(
            sweep_every(Duration::from_secs(1)),
            Duration::from_nanos(333_333_333)
        );
        assert_eq!(
            sweep_every(Duration::from_millis(300)),
            Duration::from_millis(250)
        );
        assert_eq!(
            sweep_every(Duration::from_secs(3600)),
            Duration::from_secs(10)
        );
    }
}
