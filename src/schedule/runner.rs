//! The scheduler: one pass evaluates every schedule and fires its due ticks
//! ([`Scheduler::pass`]); [`Scheduler::run`] repeats passes, waking at the next tick of any
//! schedule. Every process running the intake runs one; there is no leader (see the module
//! above for why each tick still makes exactly one job).

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{Schedule, plan, tick_key};
use crate::config::Config;
use crate::enqueue::{Enqueuer, JobSpec, Prepared};
use crate::error::Result;
use crate::publisher::Publisher;
use crate::store::{Store, now_ms};

/// Longest wait between passes (30 s): a pass also notices the state other processes wrote
/// and a clock that moved.
const MAX_WAIT: Duration = Duration::from_secs(30);
/// The wait before the next pass after a failed one (1 s).
const AFTER_FAILURE: Duration = Duration::from_secs(1);

/// A tick that fired in a pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fired {
    /// The schedule.
    pub schedule: String,
    /// The tick (ms since the epoch).
    pub tick: i64,
    /// The tick's job.
    pub job: Uuid,
    /// True when the job existed already (another process fired the tick first).
    pub replayed: bool,
}

/// What one pass did.
#[derive(Debug, Default)]
pub struct Pass {
    /// Ticks fired, by schedule then oldest first.
    pub fired: Vec<Fired>,
    /// Schedules whose pass failed (store or broker): their due ticks stay due.
    pub failed: Vec<String>,
}

/// Evaluates the configured schedules against the store and enqueues their jobs.
pub struct Scheduler {
    config: Arc<Config>,
    store: Arc<dyn Store>,
    publisher: Arc<Publisher>,
}

impl Scheduler {
    /// A scheduler of `config`'s schedules.
    pub(crate) fn new(
        config: Arc<Config>,
        store: Arc<dyn Store>,
        publisher: Arc<Publisher>,
    ) -> Self {
        Scheduler {
            config,
            store,
            publisher,
        }
    }

    /// One pass at `now` (ms): for every schedule, the ticks [`plan`] says are due are
    /// enqueued, oldest first, each with its tick's idempotency key, and the schedule's state
    /// moves to the newest tick due. A schedule whose enqueue fails stops there (logged); its
    /// remaining ticks are due again at the next pass.
    ///
    /// # Errors
    /// The store's, when the schedules' states cannot be read.
    pub async fn pass(&self, now: i64) -> Result<Pass> {
        let states = self.store.schedule_states().await?;
        let mut pass = Pass::default();
        for s in self.config.schedules.values() {
            let last_tick = match states.get(&s.name) {
                Some(state) => state.last_tick,
                None => match self.store.schedule_start(&s.name, now).await {
                    Ok(state) => state.last_tick,
                    Err(e) => {
                        tracing::warn!(schedule = %s.name, error = %e, "cannot read the schedule's state; will try again");
                        pass.failed.push(s.name.clone());
                        continue;
                    }
                },
            };
            if let Err(e) = self.fire_due(s, last_tick, now, &mut pass.fired).await {
                tracing::warn!(schedule = %s.name, error = %e, "schedule tick not enqueued; will try again");
                pass.failed.push(s.name.clone());
            }
        }
        Ok(pass)
    }

    /// Fires `s`'s due ticks (see [`Scheduler::pass`]).
    async fn fire_due(
        &self,
        s: &Schedule,
        last_tick: i64,
        now: i64,
        fired: &mut Vec<Fired>,
    ) -> std::result::Result<(), String> {
        let p = plan(s, last_tick, now);
        // The newest due tick when `catch_up` skips it rather than firing it.
        let skipped_newest = p.newest.filter(|n| p.fire.last() != Some(n));
        if p.skipped {
            tracing::info!(schedule = %s.name, catch_up = s.catch_up.as_str(), "missed ticks skipped");
        }
        let Some(q) = self.config.queue(&s.queue) else {
            return Err(format!("queue `{}` is not configured", s.queue));
        };
        let enqueuer = Enqueuer {
            store: &*self.store,
            publisher: &self.publisher,
            confirm_timeout: self.config.broker.confirm_timeout,
        };
        for tick in p.fire {
            let spec = JobSpec {
                payload: s.payload.clone(),
                delay: Duration::ZERO,
                max_attempts: s.max_attempts,
                idempotency_key: Some(tick_key(&s.name, tick)),
                correlation_id: None,
                concurrency_key: q
                    .concurrency_key
                    .as_deref()
                    .and_then(|p| crate::concurrency_key::key_at(&s.payload, p)),
                schedule: Some(s.name.clone()),
            };
            let accepted = enqueuer
                .enqueue(q, Prepared::new(q, spec))
                .await
                .map_err(|e| e.to_string())?;
            let job = accepted.record.id;
            self.store
                .schedule_advance(&s.name, tick, Some(job))
                .await
                .map_err(|e| e.to_string())?;
            if accepted.replayed {
                tracing::debug!(schedule = %s.name, tick, job_id = %job, "tick fired by another process");
            } else {
                tracing::info!(schedule = %s.name, queue = %s.queue, tick = %super::tick_key(&s.name, tick), job_id = %job, "schedule fired");
            }
            fired.push(Fired {
                schedule: s.name.clone(),
                tick,
                job,
                replayed: accepted.replayed,
            });
        }
        if let Some(newest) = skipped_newest {
            // The newest due tick was skipped: move past it, so it is not planned again.
            self.store
                .schedule_advance(&s.name, newest, None)
                .await
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// How long after `now` (ms) the next pass is due: at the earliest next tick of any
    /// schedule, at most [`MAX_WAIT`].
    pub fn wait_after(&self, now: i64) -> Duration {
        self.config
            .schedules
            .values()
            .filter_map(|s| s.next_after(now))
            .min()
            .map_or(MAX_WAIT, |t| {
                Duration::from_millis(u64::try_from(t.saturating_sub(now)).unwrap_or(0))
                    .min(MAX_WAIT)
            })
    }

    /// Passes until `stop`, each at the next tick; nothing to do without schedules.
    pub(crate) async fn run(self, stop: CancellationToken) {
        if self.config.schedules.is_empty() {
            return;
        }
        crate::periodic::run(stop, || async {
            let now = now_ms();
            match self.pass(now).await {
                Ok(p) if p.failed.is_empty() => self.wait_after(now_ms()),
                Ok(_) => AFTER_FAILURE,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the schedules' state; will try again");
                    AFTER_FAILURE
                }
            }
        })
        .await;
    }
}
