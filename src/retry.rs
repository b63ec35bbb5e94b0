//! The retry decision: what happens to a job after one attempt.
//!
//! One place decides, from the handler's [`Outcome`], the attempt number and the queue's
//! policy, whether a job succeeded, waits for another attempt (and how long), or is dead.

use std::time::Duration;

use rand::Rng;
use warren_workers::Outcome;

use crate::config::Backoff;

/// What to do with a job after an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Record the result and ack.
    Succeed {
        /// The handler's result.
        result: Option<String>,
    },
    /// Publish the next attempt after `delay`, then ack.
    Retry {
        /// Why this attempt failed.
        error: String,
        /// How long the next attempt waits in the broker.
        delay: Duration,
    },
    /// Dead-letter with `error`, then ack.
    Dead {
        /// Why the job died.
        error: String,
    },
}

/// Decides after attempt `attempt` (1-based) of `max_attempts`.
///
/// A retryable failure waits "full jitter" backoff (AWS Architecture Blog, "Exponential
/// Backoff And Jitter", 2015): uniform in `[0, min(max, base · 2^(attempt-1))]`, but never
/// less than a downstream's `Retry-After` hint (itself capped at `max`). A permanent failure,
/// or a retryable one on the last attempt, is dead.
pub fn decide(
    outcome: Outcome,
    attempt: u32,
    max_attempts: u32,
    backoff: &Backoff,
    rng: &mut impl Rng,
) -> Decision {
    match outcome {
        Outcome::Success { result } => Decision::Succeed { result },
        Outcome::Permanent { error } => Decision::Dead {
            error: format!("permanent failure: {error}"),
        },
        Outcome::Retry { error, .. } | Outcome::Throttled { error, .. }
            if attempt >= max_attempts =>
        {
            Decision::Dead {
                error: format!("gave up after {attempt} attempt(s): {error}"),
            }
        }
        Outcome::Throttled { error, retry_after } => decide(
            Outcome::Retry {
                error,
                retry_after: Some(retry_after),
            },
            attempt,
            max_attempts,
            backoff,
            rng,
        ),
        Outcome::Retry { error, retry_after } => {
            let ceiling = backoff_ceiling(attempt, backoff);
            let ceiling_ms = u64::try_from(ceiling.as_millis()).unwrap_or(u64::MAX);
            let jittered = Duration::from_millis(rng.random_range(0..=ceiling_ms));
            let floor = retry_after.unwrap_or_default().min(backoff.max);
            Decision::Retry {
                error,
                delay: jittered.max(floor),
            }
        }
    }
}

/// `min(max, base · 2^(attempt-1))`: the upper bound of the wait after attempt `attempt`.
pub fn backoff_ceiling(attempt: u32, backoff: &Backoff) -> Duration {
    let exp = attempt.saturating_sub(1).min(32);
    backoff
        .base
        .checked_mul(1u32 << exp.min(31))
        .unwrap_or(backoff.max)
        .min(backoff.max)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn policy() -> Backoff {
        Backoff {
            base: Duration::from_secs(1),
            max: Duration::from_secs(60),
        }
    }

    #[test]
    fn success_and_permanent() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        assert_eq!(
            decide(Outcome::success_with("r"), 1, 5, &policy(), &mut rng),
            Decision::Succeed {
                result: Some("r".into())
            }
        );
        assert!(matches!(
            decide(Outcome::permanent("bad"), 1, 5, &policy(), &mut rng),
            Decision::Dead { error } if error.contains("bad")
        ));
    }

    #[test]
    fn last_attempt_is_dead() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        assert!(matches!(
            decide(Outcome::retry("x"), 5, 5, &policy(), &mut rng),
            Decision::Dead { error } if error.contains("5 attempt")
        ));
    }

    #[test]
    fn retry_delay_stays_within_full_jitter_bounds() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for attempt in 1..=10 {
            let ceiling = backoff_ceiling(attempt, &policy());
            assert_eq!(
                ceiling,
                Duration::from_secs((1u64 << (attempt - 1)).min(60))
            );
            for _ in 0..200 {
                match decide(Outcome::retry("x"), attempt, 100, &policy(), &mut rng) {
                    Decision::Retry { delay, .. } => assert!(delay <= ceiling),
                    other => panic!("expected retry, got {other:?}"),
                }
            }
        }
    }

    #[test]
    fn retry_after_is_a_floor_capped_at_max() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let out = Outcome::Retry {
            error: "429".into(),
            retry_after: Some(Duration::from_secs(30)),
        };
        match decide(out, 1, 5, &policy(), &mut rng) {
            Decision::Retry { delay, .. } => assert!(delay >= Duration::from_secs(30)),
            other => panic!("{other:?}"),
        }
        let out = Outcome::Retry {
            error: "429".into(),
            retry_after: Some(Duration::from_secs(3600)),
        };
        match decide(out, 1, 5, &policy(), &mut rng) {
            Decision::Retry { delay, .. } => assert_eq!(delay, Duration::from_secs(60)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn huge_attempt_numbers_do_not_overflow() {
        assert_eq!(
            backoff_ceiling(u32::MAX, &policy()),
            Duration::from_secs(60)
        );
    }
}
