//! Store errors with a typed cause, so that callers decide retries by kind, never by text.

use std::fmt;

/// Why a store operation failed. Carried by [`crate::ErrorKind::Store`].
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct StoreError {
    kind: StoreErrorKind,
    message: String,
}

/// The class of a store failure. New kinds may be added: match with a wildcard arm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreErrorKind {
    /// The database cannot be reached now: connection refused or lost, the pool timed out,
    /// the server is shutting down or restarting (PostgreSQL SQLSTATE classes 08, 53, 57P0x),
    /// SQLite's lock is held by another process (SQLITE_BUSY, SQLITE_LOCKED). Transient.
    Unavailable,
    /// The statement lost a race it may win when tried again: a deadlock (40P01), a
    /// serialization failure (40001), a lock or statement timeout (55P03, 57014). Transient.
    Conflict,
    /// The URL or settings are wrong: bad URL, wrong password, unknown database. Permanent.
    Config,
    /// The database's schema is not the one this binary knows (newer, or a migration
    /// failed). Permanent.
    Schema,
    /// A row the store holds cannot be read back (an unknown status, a bad id). Permanent.
    Data,
    /// Anything else the database refused (a constraint, a syntax error). Permanent.
    Other,
}

impl StoreError {
    /// A new error of `kind`; `message` is shown as is (redact credentials before).
    pub fn new(kind: StoreErrorKind, message: impl fmt::Display) -> Self {
        Self {
            kind,
            message: message.to_string(),
        }
    }

    /// Its class.
    pub fn kind(&self) -> StoreErrorKind {
        self.kind
    }

    /// True when the same operation may succeed if tried again later ([`StoreErrorKind::Unavailable`],
    /// [`StoreErrorKind::Conflict`]).
    pub fn is_transient(&self) -> bool {
        matches!(
            self.kind,
            StoreErrorKind::Unavailable | StoreErrorKind::Conflict
        )
    }

    /// Classifies an error of sqlx: connection-level failures are
    /// [`StoreErrorKind::Unavailable`]; database errors by their code as the adapter that
    /// raised them says (`classify`, given the SQLSTATE or SQLite result code).
    pub(crate) fn from_sqlx(err: &sqlx::Error, classify: fn(&str) -> StoreErrorKind) -> Self {
        use sqlx::Error as E;
        let kind = match err {
            E::Io(_)
            | E::Tls(_)
            | E::PoolTimedOut
            | E::PoolClosed
            | E::WorkerCrashed
            | E::Protocol(_) => StoreErrorKind::Unavailable,
            E::Configuration(_) => StoreErrorKind::Config,
            E::Database(d) => d.code().map_or(StoreErrorKind::Other, |c| classify(&c)),
            E::ColumnDecode { .. }
            | E::Decode(_)
            | E::ColumnNotFound(_)
            | E::TypeNotFound { .. } => StoreErrorKind::Data,
            E::Migrate(_) => StoreErrorKind::Schema,
            _ => StoreErrorKind::Other,
        };
        Self::new(kind, crate::redact::redact(&err.to_string()))
    }
}
