//! Job handlers for warren: the [`Handler`] trait and the built-in handlers.
//!
//! This crate knows nothing of AMQP or of warren's store. warren consumes a
//! message, builds a [`Job`] from it, calls the queue's handler (held as
//! `Arc<dyn Handler>`, wrapped in the queue's timeout) and turns the returned
//! [`Outcome`] into an ack, a delayed retry or a dead letter (DESIGN.md §6):
//!
//! - [`Outcome::Success`]: the job is done; its optional result text is kept
//!   in the job's status.
//! - [`Outcome::Retry`]: a transient failure; the job is tried again later
//!   (until `max_attempts`), optionally no sooner than `retry_after`.
//! - [`Outcome::Permanent`]: the job can never succeed (bad input); it is
//!   dead-lettered at once.
//!
//! Cancellation is by dropping: when a job times out or warren shuts down,
//! the future returned by [`Handler::handle`] is dropped, so handlers must
//! release what they hold on drop (the exec handler kills its child).
//!
//! Built-in handlers:
//!
//! - [`Noop`]: always succeeds with no result; for benchmarks.
//! - [`HttpHandler`]: POSTs the payload to a URL; 2xx succeeds, 408/429/5xx
//!   and transport errors retry (honouring `Retry-After`), other statuses
//!   are permanent. With a [`WebhookSigner`] it signs every request as the
//!   Standard Webhooks specification defines (`webhook-id`,
//!   `webhook-timestamp`, `webhook-signature`).
//! - [`ExecHandler`]: runs a program (no shell) with the payload on stdin;
//!   exit 0 succeeds, exit 65 (`EX_DATAERR`) is permanent, anything else
//!   retries.
//!
//! Tests and embedders can write handlers as closures with [`handler_fn`].
//! Result and error texts are capped at [`MAX_RESULT_BYTES`].

mod exec;
mod handler;
mod http;
mod job;
mod noop;
mod outcome;
pub mod signing;
mod truncate;

pub use exec::ExecHandler;
pub use handler::{Handler, HandlerFuture, handler_fn};
pub use http::HttpHandler;
pub use job::Job;
pub use noop::Noop;
pub use outcome::{MAX_RESULT_BYTES, Outcome};
pub use signing::{SecretError, WebhookSigner};
