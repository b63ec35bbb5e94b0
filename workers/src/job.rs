//! The job as a handler sees it.

use bytes::Bytes;

/// One run (attempt) of a job, as a handler sees it.
///
/// warren builds this from the AMQP message and its headers; handlers only
/// read it. Cloning is cheap apart from the strings: the payload is a
/// reference-counted [`Bytes`].
#[derive(Debug, Clone)]
pub struct Job {
    /// The job id: a UUIDv7 in its hyphenated text form.
    pub id: String,
    /// The name of the queue the job was submitted to (a `queues.toml` key).
    pub queue: String,
    /// The attempt number, 1-based: 1 on the first run, 2 on the first retry.
    pub attempt: u32,
    /// The most attempts the queue allows before the job is dead-lettered.
    pub max_attempts: u32,
    /// The caller's correlation id (`X-Correlation-ID` at submission), if any.
    pub correlation_id: Option<String>,
    /// The caller's idempotency key (`Idempotency-Key` at submission), if any.
    pub idempotency_key: Option<String>,
    /// The job's JSON payload, as the raw bytes submitted (not re-encoded).
    pub payload: Bytes,
}
