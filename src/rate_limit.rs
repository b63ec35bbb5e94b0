//! Rate limit per queue: handler starts of a queue, across every worker in every process,
//! follow a token bucket of rate `per_second` and size `burst` (`rate_limit` in queues.toml;
//! Cloud Tasks' `max_dispatches_per_second` and `max_burst_size`).
//!
//! The bucket lives in the store ([`crate::store::FlowControl::take_tokens`]: refill from
//! the time elapsed, take whole tokens, one transaction), so every process draws on the same
//! tokens. A process takes them in small batches, [`BATCH_WINDOW`]'s worth of the rate (at
//! least 1, at most the burst), so at high rates the store sees one take per batch rather
//! than one per job; tokens a process took but did not use within [`TOKEN_LIFE`] are dropped,
//! never used late, so no one-second window sees more than `per_second + burst` starts.
//!
//! A consumer asks for a token after a delivery arrives and before it starts the job
//! ([`Limiter::acquire`]): the delivery waits in the worker holding its prefetch slot, and
//! the next delivery is not taken until it started. When the bucket is empty the take says
//! how long until the next token, and the consumer sleeps that long (with up to 10 % jitter,
//! so processes do not all come back at once).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rand::Rng as _;
use tokio::sync::Mutex;
use tracing::warn;

use crate::config::RateLimit;
use crate::store::{Store, now_ms};

/// How much of the rate one take from the store asks for: 50 ms' worth.
pub const BATCH_WINDOW: Duration = Duration::from_millis(50);

/// How long a token taken from the store may wait in a process before it is dropped.
pub const TOKEN_LIFE: Duration = Duration::from_millis(250);

/// How long to wait before asking again after the store failed.
const STORE_RETRY: Duration = Duration::from_millis(500);

/// One queue's rate limit in one process. See the module docs.
pub struct Limiter {
    queue: String,
    limit: RateLimit,
    batch: u32,
    store: Arc<dyn Store>,
    /// Tokens taken and not used yet, and when they were taken.
    held: Mutex<(u32, Instant)>,
    /// Milliseconds waited in all (for `warren_rate_limited_seconds_total`).
    waited_ms: AtomicU64,
}

impl Limiter {
    /// The limiter of `queue` with `limit`, on `store`.
    pub fn new(queue: &str, limit: RateLimit, store: Arc<dyn Store>) -> Self {
        Self {
            queue: queue.to_owned(),
            limit,
            batch: batch_size(limit),
            store,
            held: Mutex::new((0, Instant::now())),
            waited_ms: AtomicU64::new(0),
        }
    }

    /// Returns once this process may start one job of the queue (a token is used).
    pub async fn acquire(&self) {
        let mut held = self.held.lock().await;
        if held.0 > 0 && held.1.elapsed() < TOKEN_LIFE {
            held.0 -= 1;
            return;
        }
        let started = Instant::now();
        loop {
            let take = self
                .store
                .take_tokens(
                    &self.queue,
                    self.batch,
                    self.limit.per_second,
                    self.limit.burst,
                    now_ms(),
                )
                .await;
            let wait = match take {
                Ok(t) if t.granted > 0 => {
                    *held = (t.granted - 1, Instant::now());
                    break;
                }
                Ok(t) => Duration::from_millis(t.wait_ms),
                Err(e) => {
                    warn!(queue = %self.queue, error = %e, "cannot take a rate-limit token; trying again");
                    STORE_RETRY
                }
            };
            let jitter = rand::rng().random_range(0.0..0.1);
            tokio::time::sleep(wait.mul_f64(1.0 + jitter)).await;
        }
        let waited = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        if waited > 0 {
            let total = self.waited_ms.fetch_add(waited, Ordering::Relaxed) + waited;
            metrics::counter!(crate::telemetry::RATE_LIMITED_SECONDS, "queue" => self.queue.clone())
                .absolute(total / 1000);
        }
    }
}

/// Tokens one take asks for: [`BATCH_WINDOW`] of the rate, rounded down, at least 1 and at
/// most the burst.
pub fn batch_size(limit: RateLimit) -> u32 {
    let window = limit.per_second * BATCH_WINDOW.as_secs_f64();
    (window.floor() as u32).clamp(1, limit.burst.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Bucket;

    fn limit(per_second: f64, burst: u32) -> RateLimit {
        RateLimit { per_second, burst }
    }

    #[test]
    fn batches_are_fifty_ms_of_the_rate_within_one_and_the_burst() {
        assert_eq!(batch_size(limit(20.0, 5)), 1);
        assert_eq!(batch_size(limit(1000.0, 100)), 50);
        assert_eq!(batch_size(limit(1000.0, 10)), 10);
        assert_eq!(batch_size(limit(0.5, 1)), 1);
    }

    #[test]
    fn a_bucket_refills_at_its_rate_up_to_its_size() {
        let b = Bucket {
            tokens: 0.0,
            updated_at: 1_000,
        };
        assert!(
            (b.at(1_500, 10.0, 5) - 5.0).abs() < 1e-9,
            "capped at the burst"
        );
        assert!((b.at(1_200, 10.0, 5) - 2.0).abs() < 1e-9);
        assert!(
            (b.at(900, 10.0, 5) - 0.0).abs() < 1e-9,
            "a clock behind adds none"
        );
        let (after, t) = b.take(1_250, 3, 10.0, 5);
        assert_eq!(t.granted, 2, "2.5 tokens: two whole ones");
        assert!((after.tokens - 0.5).abs() < 1e-9);
        let (_, t) = after.take(1_250, 1, 10.0, 5);
        assert_eq!(t.granted, 0);
        assert_eq!(t.wait_ms, 50, "half a token at 10/s");
    }

    #[test]
    fn over_a_long_run_takes_follow_the_rate_and_never_beat_rate_plus_burst() {
        // One take per ms for 20 s at 20/s, burst 5: the burst, then one token per 50 ms; no
        // 1-second window holds more than 25.
        let mut b = Bucket {
            tokens: 5.0,
            updated_at: 0,
        };
        let mut starts = Vec::new();
        for now in 0..20_000 {
            let (after, t) = b.take(now, 1, 20.0, 5);
            b = after;
            for _ in 0..t.granted {
                starts.push(now);
            }
        }
        assert_eq!(
            starts.len(),
            404,
            "5 at once, then one every 50 ms from 50 to 19,950"
        );
        for w in 0..19 {
            let n = starts
                .iter()
                .filter(|&&s| s >= w * 1_000 && s < (w + 1) * 1_000)
                .count();
            assert!(n <= 25, "window {w}: {n}");
        }
    }
}
