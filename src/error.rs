//! The library's error type: an [`Error`] that wraps a `#[non_exhaustive]` [`ErrorKind`].

use std::fmt;

/// Everything that can go wrong inside warren, as one type.
///
/// The binary turns it into a message and a non-zero exit at its edge; the HTTP intake maps
/// [`ErrorKind`] to an RFC 7807 problem.
#[derive(Debug)]
pub struct Error {
    kind: ErrorKind,
}

/// What went wrong. New kinds may be added: match with a wildcard arm.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ErrorKind {
    /// `queues.toml` could not be read or is invalid; the text names the file, line and key.
    #[error("{0}")]
    Config(String),
    /// The broker could not be reached or closed the connection/channel.
    #[error("broker unavailable: {0}")]
    BrokerUnavailable(String),
    /// A publish could not be sent: no channel to the broker could be opened (the broker is
    /// unreachable or did not answer in time). Unlike [`ErrorKind::BrokerUnavailable`] after a
    /// send, the message certainly did not reach the broker.
    #[error("broker unavailable, nothing sent: {0}")]
    NotSent(String),
    /// The broker negatively acknowledged a publish (e.g. a full queue with
    /// `x-overflow = reject-publish`).
    #[error("broker rejected the message (nack) for queue `{queue}`")]
    Nacked {
        /// The queue the message was meant for.
        queue: String,
    },
    /// A mandatory publish could not be routed to any queue (AMQP reply 312 NO_ROUTE).
    #[error("message for queue `{queue}` was unroutable (is the topology applied?)")]
    Unroutable {
        /// The queue the message was meant for.
        queue: String,
    },
    /// The broker did not confirm a publish within the confirm timeout.
    #[error("broker did not confirm the publish within {0} ms")]
    ConfirmTimeout(u64),
    /// An existing queue was declared with different arguments (AMQP 406 PRECONDITION_FAILED).
    #[error("{0}")]
    TopologyMismatch(String),
    /// Any other AMQP protocol error.
    #[error("AMQP error: {0}")]
    Amqp(String),
    /// The status store failed (SQLite or PostgreSQL); [`crate::store::StoreError::is_transient`]
    /// says whether trying again may help.
    #[error("store error: {0}")]
    Store(crate::store::StoreError),
    /// A file could not be read or written.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}

impl Error {
    /// The kind of this error.
    pub fn kind(&self) -> &ErrorKind {
        &self.kind
    }

    pub(crate) fn config(msg: impl Into<String>) -> Self {
        ErrorKind::Config(msg.into()).into()
    }

    /// A store error of `kind` with `message` (already free of credentials).
    pub(crate) fn store_kind(
        kind: crate::store::StoreErrorKind,
        message: impl fmt::Display,
    ) -> Self {
        ErrorKind::Store(crate::store::StoreError::new(kind, message)).into()
    }

    /// True when retrying later may succeed (the broker or store was unreachable).
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self.kind,
            ErrorKind::BrokerUnavailable(_)
                | ErrorKind::NotSent(_)
                | ErrorKind::ConfirmTimeout(_)
                | ErrorKind::Store(_)
        )
    }

    /// True when the same operation may succeed if tried again soon: the broker was
    /// unreachable or did not confirm in time, or the store failed transiently (see
    /// [`crate::store::StoreError::is_transient`]). Retries are decided by this, never by an
    /// error's text.
    pub fn is_transient(&self) -> bool {
        match &self.kind {
            ErrorKind::BrokerUnavailable(_) | ErrorKind::ConfirmTimeout(_) => true,
            ErrorKind::Store(e) => e.is_transient(),
            _ => false,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.kind, f)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.kind.source()
    }
}

impl From<ErrorKind> for Error {
    fn from(kind: ErrorKind) -> Self {
        Self { kind }
    }
}

impl From<crate::store::StoreError> for Error {
    fn from(err: crate::store::StoreError) -> Self {
        ErrorKind::Store(err).into()
    }
}

impl From<std::io::Error> for Error {
    fn from(err: std::io::Error) -> Self {
        ErrorKind::Io(err).into()
    }
}

impl From<lapin::Error> for Error {
    fn from(err: lapin::Error) -> Self {
        use lapin::ErrorKind as L;
        let kind = match err.kind() {
            L::ProtocolError(amqp) => ErrorKind::Amqp(amqp.to_string()),
            _ => ErrorKind::BrokerUnavailable(crate::redact::redact(&err.to_string())),
        };
        kind.into()
    }
}

/// `Result` with warren's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
