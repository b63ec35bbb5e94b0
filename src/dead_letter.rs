//! The worker-side DLQ move: a failed or malformed message goes to `{queue}.dlq` with why it
//! died (DESIGN guarantee 6), and only after the broker confirmed the dead letter is the
//! original acked (guarantee 7).
//!
//! The work queue's own dead-letter exchange (`x-dead-letter-exchange`) stays as the broker's
//! safety net for messages past `x-delivery-limit`; those carry RabbitMQ's `x-death` header
//! instead of warren's.

use std::time::SystemTime;

use lapin::BasicProperties;

use crate::error::Result;
use crate::message::{DeadLetterInfo, dead_letter_properties};
use crate::publisher::Publisher;
use crate::topology::{DLX, dlq_name};

/// Publishes a dead letter of `queue`'s message (`properties`, `body` as delivered) with the
/// `x-warren-` dead-letter headers, and waits for the broker's confirm. The caller acks the
/// original only when this returns `Ok`.
///
/// # Errors
/// As [`Publisher::publish`]; the caller then hands the original back (nack, requeue).
pub async fn publish(
    publisher: &Publisher,
    queue: &str,
    properties: &BasicProperties,
    body: &[u8],
    attempts: u32,
    error: &str,
) -> Result<()> {
    let props = dead_letter_properties(
        properties,
        &DeadLetterInfo {
            original_queue: queue,
            attempts,
            last_error: error,
            failed_at: SystemTime::now(),
        },
    );
    publisher
        .publish(DLX, queue, body, props, &dlq_name(queue))
        .await
}
