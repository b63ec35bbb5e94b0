//! warren: a work-queue job processing backend on RabbitMQ.
//!
//! Clients post jobs over HTTP and get a tracking id at once; each job becomes a durable,
//! confirmed RabbitMQ message; prefetch-limited workers claim it in the status store, run its
//! handler and ack; failures are dead-lettered to `{queue}.dlq` with why they died.
//!
//! The public surface is small: [`Config`] (read `queues.toml`), [`App`] (run the intake and
//! workers), [`Error`]. Handlers come from the [`workers`] crate.
//!
//! ```no_run
//! # async fn demo() -> Result<(), warren::Error> {
//! let config = warren::Config::load(None)?;
//! let app = warren::App::builder(config).build().await?;
//! let listener = tokio::net::TcpListener::bind(app.config().http.bind).await?;
//! app.run(warren::Role::All, Some(listener), tokio_util::sync::CancellationToken::new()).await
//! # }
//! ```

mod admission;
mod app;
pub mod auth;
mod broker;
pub mod bulk;
pub mod concurrency_key;
pub mod config;
mod consumer;
mod dead_letter;
pub mod delay;
pub mod dlq;
mod enqueue;
mod error;
pub mod events;
mod intake;
mod maintenance;
pub mod message;
pub mod overview;
mod periodic;
mod publisher;
pub mod rate_limit;
mod redact;
pub mod retry;
pub mod schedule;
mod settle;
pub mod store;
mod store_gate;
mod sweeper;
pub mod telemetry;
pub mod topology;
pub mod view;

pub use app::{App, AppBuilder, Role};
pub use broker::Broker;
pub use config::Config;
pub use error::{Error, ErrorKind, Result};
pub use redact::redact;
pub use warren_workers as workers;
