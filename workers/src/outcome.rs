//! What a handler reports.

use std::time::Duration;

use crate::truncate::truncate_string;

/// The most bytes of a result or error text that a handler reports
/// (64 KiB). Longer texts are cut on a UTF-8 character boundary and end in
/// the marker `…[truncated]`; the marker counts towards the limit.
pub const MAX_RESULT_BYTES: usize = 64 * 1024;

/// What a handler reports for one run of a job.
///
/// Texts built with the constructors ([`Outcome::success_with`],
/// [`Outcome::retry`], [`Outcome::permanent`]) are already truncated to
/// [`MAX_RESULT_BYTES`]; the built-in handlers only use those.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The job is done; `result` (at most [`MAX_RESULT_BYTES`]) is kept in
    /// the job's status. `None` means "no result".
    Success {
        /// The result text, e.g. the HTTP response body or the program's stdout.
        result: Option<String>,
    },
    /// The job failed but may work later: warren retries it (with backoff)
    /// until `max_attempts` is reached.
    Retry {
        /// Why the run failed, for the job's status and logs.
        error: String,
        /// A lower bound on the retry delay suggested by the downstream, e.g.
        /// from an HTTP `Retry-After` header. `None` leaves the delay to the
        /// queue's backoff.
        retry_after: Option<Duration>,
    },
    /// The downstream is over its own rate limit (HTTP 429, or 503 with
    /// `Retry-After`): warren retries the job like [`Outcome::Retry`] after at
    /// least `retry_after`, and holds the whole queue's dispatch for that long
    /// across every worker of the fleet, so the other jobs do not hammer a
    /// target that asked for a pause.
    Throttled {
        /// Why the run failed, for the job's status and logs.
        error: String,
        /// How long the downstream asked to be left alone.
        retry_after: Duration,
    },
    /// The job can never succeed (bad input): warren dead-letters it at once
    /// without further attempts.
    Permanent {
        /// Why the job was rejected, for the job's status and logs.
        error: String,
    },
}

impl Outcome {
    /// Success with no result text.
    pub fn success() -> Self {
        Outcome::Success { result: None }
    }

    /// Success with a result text, truncated to [`MAX_RESULT_BYTES`].
    pub fn success_with(result: impl Into<String>) -> Self {
        Outcome::Success {
            result: Some(truncate_string(result.into(), MAX_RESULT_BYTES)),
        }
    }

    /// A retryable failure with no `retry_after` hint; the error text is
    /// truncated to [`MAX_RESULT_BYTES`].
    pub fn retry(error: impl Into<String>) -> Self {
        Outcome::Retry {
            error: truncate_string(error.into(), MAX_RESULT_BYTES),
            retry_after: None,
        }
    }

    /// A permanent failure (dead-letter at once); the error text is
    /// truncated to [`MAX_RESULT_BYTES`].
    pub fn permanent(error: impl Into<String>) -> Self {
        Outcome::Permanent {
            error: truncate_string(error.into(), MAX_RESULT_BYTES),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constructors_truncate() {
        let long = "x".repeat(MAX_RESULT_BYTES * 2);
        for outcome in [
            Outcome::success_with(long.clone()),
            Outcome::retry(long.clone()),
            Outcome::permanent(long.clone()),
        ] {
            let text = match outcome {
                Outcome::Success { result } => result.expect("success_with sets a result"),
                Outcome::Retry { error, retry_after } => {
                    assert_eq!(retry_after, None);
                    error
                }
                Outcome::Permanent { error } | Outcome::Throttled { error, .. } => error,
            };
            assert!(text.len() <= MAX_RESULT_BYTES);
            assert!(text.ends_with("…[truncated]"));
        }
        assert_eq!(Outcome::success(), Outcome::Success { result: None });
        assert_eq!(
            Outcome::success_with("ok"),
            Outcome::Success {
                result: Some("ok".to_owned())
            }
        );
    }
}
