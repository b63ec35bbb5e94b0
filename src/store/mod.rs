//! The status store: job status, claims (leases), idempotency keys (DESIGN §7).
//!
//! [`Store`] is the one interface the intake, the workers and the tools use, held as
//! `Arc<dyn Store>`; [`open`] picks the adapter from the URL: embedded SQLite (`sqlite.rs`,
//! the default, one host) or PostgreSQL (`postgres.rs`, many hosts). The store's
//! logic — group commit, insert-or-find, the claim classification, chunked pruning — is
//! written once (`engine.rs`); each adapter holds only its SQL, type mapping, opening and
//! error classification (`backend.rs`). `conformance.rs` runs one suite of tests on both.
//! Times are milliseconds since the Unix epoch ([`now_ms`]).

mod backend;
#[cfg(test)]
mod conformance;
pub mod copy;
mod engine;
mod error;
mod group_commit;
mod model;
mod postgres;
mod search;
mod sqlite;
mod traits;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use error::{StoreError, StoreErrorKind};
pub use model::{
    ActiveCounts, Bucket, Cursor, DEFAULT_PAGE_LIMIT, JobFilter, JobPage, PAGE_LIMITS,
    ScheduleState, StatusCounts, Tokens,
};
pub use model::{
    Cancel, Claim, ClaimRequest, Inserted, JobRecord, JobRow, JobStatus, NewJob, Overdue,
    StoreStatus,
};
pub use traits::{FlowControl, JobSearch, JobStore, Maintenance, QueueControl, Schedules, Store};

use crate::error::{Error, Result};

/// How to open a store: its URL and, for PostgreSQL, the pool's settings.
#[derive(Debug, Clone)]
pub struct OpenOptions {
    /// `sqlite://PATH`, `sqlite::memory:`, or `postgres://user:password@host:port/database`
    /// (also `postgresql://`).
    pub url: String,
    /// Most connections the PostgreSQL pool opens (`store.max_connections`, default 16).
    pub max_connections: u32,
    /// PostgreSQL's `statement_timeout` for every session (`store.statement_timeout`,
    /// default 10 s): a statement running longer is cancelled and the request fails (503 at
    /// the intake, a hand-back in a worker).
    pub statement_timeout: Duration,
    /// Run the migrations (default true). `warren store status` opens without.
    pub migrate: bool,
}

impl OpenOptions {
    /// `url` with the default settings.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            max_connections: 16,
            statement_timeout: Duration::from_secs(10),
            migrate: true,
        }
    }
}

/// Which adapter serves `url`: `sqlite` or `postgres`, or `None` for an unknown scheme.
pub fn backend_of(url: &str) -> Option<&'static str> {
    if url.starts_with("sqlite:") {
        Some("sqlite")
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Some("postgres")
    } else {
        None
    }
}

/// Opens (and, unless `opts.migrate` is false, migrates) the store at `opts.url`.
///
/// # Errors
/// [`crate::ErrorKind::Store`] when it cannot be opened or migrated (the message names the
/// host and database, never a password), or the scheme is unknown.
pub async fn open(opts: &OpenOptions) -> Result<Arc<dyn Store>> {
    match backend_of(&opts.url) {
        Some("sqlite") => Ok(Arc::new(engine::SqlStore::new(
            sqlite::Sqlite::open(opts).await?,
        ))),
        Some(_) => Ok(Arc::new(engine::SqlStore::new(
            postgres::Postgres::open(opts).await?,
        ))),
        None => Err(Error::store_kind(
            StoreErrorKind::Config,
            format!(
                "unsupported store URL `{}`: use sqlite://PATH or postgres://USER:PASSWORD@HOST:PORT/DATABASE",
                crate::redact::redact(&opts.url)
            ),
        )),
    }
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    to_ms(SystemTime::now())
}

/// Milliseconds since the Unix epoch of `t`.
pub fn to_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// RFC 3339 UTC text (millisecond precision) of a time in ms since the epoch.
pub fn rfc3339_ms(ms: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    humantime::format_rfc3339_millis(t).to_string()
}
