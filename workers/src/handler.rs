//! The [`Handler`] trait and the [`handler_fn`] closure adapter.

use std::future::Future;
use std::pin::Pin;

use crate::job::Job;
use crate::outcome::Outcome;

/// The future a [`Handler`] returns: boxed, `Send`, borrowing the handler
/// and the job for `'a`.
pub type HandlerFuture<'a> = Pin<Box<dyn Future<Output = Outcome> + Send + 'a>>;

/// Runs jobs of a queue.
///
/// Object safe: warren holds one `Arc<dyn Handler>` per queue and calls
/// [`Handler::handle`] concurrently (up to the queue's prefetch), so
/// implementations take `&self` and keep per-job state in the future.
///
/// Contract (DESIGN.md §6):
/// - Report failures as [`Outcome::Retry`] or [`Outcome::Permanent`]; do
///   not panic.
/// - The future may be dropped at any await point (the queue's timeout, or
///   shutdown); a dropped run counts as a retryable failure, so anything
///   the handler started (child processes, requests) must stop on drop.
/// - A job may be delivered more than once (at-least-once delivery): make
///   side effects idempotent, e.g. keyed on [`Job::idempotency_key`] or
///   [`Job::id`].
pub trait Handler: Send + Sync + 'static {
    /// Runs one attempt of `job` and reports its [`Outcome`].
    fn handle<'a>(&'a self, job: &'a Job) -> HandlerFuture<'a>;
}

/// Wraps an async closure as a [`Handler`], e.g.
/// `handler_fn(|job: Job| async move { Outcome::success() })`.
///
/// The closure gets its own clone of the [`Job`] (so its future can be
/// `'static`); cloning copies the id and queue strings, the payload is shared.
pub fn handler_fn<F, Fut>(f: F) -> impl Handler
where
    F: Fn(Job) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Outcome> + Send + 'static,
{
    HandlerFn { f }
}

/// The [`Handler`] behind [`handler_fn`].
struct HandlerFn<F> {
    f: F,
}

impl<F, Fut> Handler for HandlerFn<F>
where
    F: Fn(Job) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Outcome> + Send + 'static,
{
    fn handle<'a>(&'a self, job: &'a Job) -> HandlerFuture<'a> {
        Box::pin((self.f)(job.clone()))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    fn job() -> Job {
        Job {
            id: "0190b7a4-0000-7000-8000-000000000001".into(),
            queue: "q".into(),
            attempt: 2,
            max_attempts: 5,
            correlation_id: None,
            idempotency_key: None,
            payload: bytes::Bytes::from_static(br#"{"n":1}"#),
        }
    }

    #[tokio::test]
    async fn handler_fn_runs_the_closure() {
        let calls = Arc::new(AtomicU32::new(0));
        let seen = Arc::clone(&calls);
        let handler = handler_fn(move |job: Job| {
            let seen = Arc::clone(&seen);
            async move {
                seen.fetch_add(1, Ordering::SeqCst);
                if job.attempt == 2 {
                    Outcome::success_with(String::from_utf8_lossy(&job.payload).into_owned())
                } else {
                    Outcome::retry("wrong attempt")
                }
            }
        });
        // Object safety: warren holds handlers as `Arc<dyn Handler>`.
        let handler: Arc<dyn Handler> = Arc::new(handler);
        let outcome = handler.handle(&job()).await;
        assert_eq!(outcome, Outcome::success_with(r#"{"n":1}"#));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
}
