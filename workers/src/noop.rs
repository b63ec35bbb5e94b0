//! The `noop` handler.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use crate::handler::{Handler, HandlerFuture};
use crate::job::Job;
use crate::outcome::Outcome;

/// A handler that does nothing and always reports
/// `Outcome::Success { result: None }`.
///
/// Used by benchmarks to measure warren's own overhead (DESIGN.md §6). It is
/// as cheap as the trait allows: the boxed future is zero-sized, so boxing
/// it does not allocate.
#[derive(Debug, Clone, Copy, Default)]
pub struct Noop;

impl Handler for Noop {
    fn handle<'a>(&'a self, _job: &'a Job) -> HandlerFuture<'a> {
        Box::pin(NoopFuture)
    }
}

/// A zero-sized future that is ready at once with a result-less success.
struct NoopFuture;

impl Future for NoopFuture {
    type Output = Outcome;

    fn poll(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Outcome> {
        Poll::Ready(Outcome::Success { result: None })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn noop_succeeds_without_result() {
        let job = Job {
            id: "0190b7a4-0000-7000-8000-000000000001".into(),
            queue: "bench".into(),
            attempt: 1,
            max_attempts: 1,
            correlation_id: None,
            idempotency_key: None,
            payload: bytes::Bytes::from_static(b"{}"),
        };
        assert_eq!(Noop.handle(&job).await, Outcome::Success { result: None });
    }
}
