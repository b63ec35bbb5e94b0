//! The wire format of a job message (DESIGN §4): what warren puts on a message and how it reads
//! one back.
//!
//! Body: the job's `payload` JSON, unchanged. Properties: `message_id` = job id (UUIDv7),
//! `correlation_id`, `content_type: application/json`, `delivery_mode: 2` (persistent),
//! `timestamp` (seconds since the Unix epoch), `type` = queue name. Headers are prefixed
//! `x-warren-`.

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use uuid::Uuid;

/// Header: attempt number this message is for (1-based, `long-uint`).
pub const H_ATTEMPT: &str = "x-warren-attempt";
/// Header: the job's attempt budget (`long-uint`).
pub const H_MAX_ATTEMPTS: &str = "x-warren-max-attempts";
/// Header: the client's `Idempotency-Key`, when it sent one.
pub const H_IDEMPOTENCY_KEY: &str = "x-warren-idempotency-key";
/// Header: the job's concurrency key (`crate::concurrency_key`), when its queue has one.
pub const H_CONCURRENCY_KEY: &str = "x-warren-concurrency-key";
/// Header: how often this delivery was parked because its concurrency key was at its limit
/// (`long-uint`; absent before the first park). Not an attempt.
pub const H_PARKED: &str = "x-warren-parked";
/// Dead-letter header: the work queue the job came from.
pub const H_ORIGINAL_QUEUE: &str = "x-warren-original-queue";
/// Dead-letter header: attempts made (`long-uint`).
pub const H_ATTEMPTS: &str = "x-warren-attempts";
/// Dead-letter header: why the job died.
pub const H_LAST_ERROR: &str = "x-warren-last-error";
/// Dead-letter header: when it died, RFC 3339 UTC.
pub const H_FAILED_AT: &str = "x-warren-failed-at";

/// AMQP `delivery_mode` 2: persistent (AMQP 0-9-1 §4.2.6.1).
const PERSISTENT: u8 = 2;

/// A job as it travels on the broker.
#[derive(Debug, Clone)]
pub struct JobMessage {
    /// Job id (`message_id`).
    pub id: Uuid,
    /// Work queue name (`type`).
    pub queue: String,
    /// Attempt this message is for, 1-based.
    pub attempt: u32,
    /// Attempt budget.
    pub max_attempts: u32,
    /// `correlation_id`.
    pub correlation_id: Option<String>,
    /// The client's idempotency key.
    pub idempotency_key: Option<String>,
    /// The job's concurrency key (`X-Concurrency-Key`, or the payload at the queue's
    /// `concurrency_key` pointer).
    pub concurrency_key: Option<String>,
    /// The payload JSON, raw.
    pub payload: Bytes,
}

impl JobMessage {
    /// AMQP properties for publishing this job.
    pub fn properties(&self) -> BasicProperties {
        let mut headers = FieldTable::default();
        headers.insert(H_ATTEMPT.into(), AMQPValue::LongUInt(self.attempt));
        headers.insert(
            H_MAX_ATTEMPTS.into(),
            AMQPValue::LongUInt(self.max_attempts),
        );
        if let Some(key) = &self.idempotency_key {
            headers.insert(
                H_IDEMPOTENCY_KEY.into(),
                AMQPValue::LongString(key.as_str().into()),
            );
        }
        if let Some(key) = &self.concurrency_key {
            headers.insert(
                H_CONCURRENCY_KEY.into(),
                AMQPValue::LongString(key.as_str().into()),
            );
        }
        let mut props = BasicProperties::default()
            .with_message_id(self.id.to_string().into())
            .with_content_type("application/json".into())
            .with_delivery_mode(PERSISTENT)
            .with_timestamp(unix_seconds(SystemTime::now()))
            .with_type(short(&self.queue))
            .with_headers(headers);
        if let Some(c) = &self.correlation_id {
            props = props.with_correlation_id(short(c));
        }
        props
    }

    /// Reads a delivery back into a job.
    ///
    /// `queue` is the queue the delivery came from (used when the `type` property is missing).
    ///
    /// `max_payload_bytes` is the queue's `max_payload_bytes`: the intake never publishes a
    /// larger body, so a larger one was published by hand and is refused here too.
    ///
    /// # Errors
    /// A human-readable reason when the message is malformed: no or invalid `message_id`, a
    /// `content_type` other than JSON (`application/json` or `…+json`, parameters allowed;
    /// none at all is taken as JSON), a body over `max_payload_bytes`, or a body that is not
    /// JSON. Such a message is dead-lettered with that reason.
    pub fn from_delivery(
        queue: &str,
        props: &BasicProperties,
        body: Bytes,
        max_payload_bytes: usize,
    ) -> Result<Self, String> {
        let id = match props.message_id() {
            None => return Err("malformed message: no message_id property".to_owned()),
            Some(raw) => Uuid::parse_str(raw.as_str()).map_err(|_| {
                format!(
                    "malformed message: message_id `{}` is not a UUID",
                    truncate(raw.as_str(), 80)
                )
            })?,
        };
        if let Some(ct) = props.content_type() {
            let essence = ct.as_str().split(';').next().unwrap_or_default().trim();
            let essence = essence.to_ascii_lowercase();
            if essence != "application/json" && !essence.ends_with("+json") {
                return Err(format!(
                    "malformed message: content_type `{}` is not application/json",
                    truncate(ct.as_str(), 80)
                ));
            }
        }
        if body.len() > max_payload_bytes {
            return Err(format!(
                "malformed message: body of {} bytes is over the queue's max_payload_bytes ({max_payload_bytes})",
                body.len()
            ));
        }
        if let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(&body) {
            return Err(format!("malformed message: body is not JSON ({e})"));
        }
        let headers = props.headers().as_ref();
        let attempt = header_u32(headers, H_ATTEMPT).unwrap_or(1).max(1);
        Ok(Self {
            id,
            queue: queue.to_owned(),
            attempt,
            max_attempts: header_u32(headers, H_MAX_ATTEMPTS).unwrap_or(0),
            correlation_id: props.correlation_id().as_ref().map(|c| c.to_string()),
            idempotency_key: header_string(headers, H_IDEMPOTENCY_KEY),
            concurrency_key: header_string(headers, H_CONCURRENCY_KEY),
            payload: body,
        })
    }
}

/// Properties for publishing `original` again as attempt `attempt` (a retry or a parked
/// delivery): the same id, correlation id and headers, `x-warren-attempt` set, and the
/// broker's own dead-letter history (`x-death`, `x-first-death-*`, `x-last-death-*`) removed:
/// RabbitMQ drops a message that is dead-lettered twice through the same queue without a
/// rejection in between ("Dead Letter Exchanges", cycle detection), which a message going
/// through the delay levels a second time would otherwise look like.
pub fn republish_properties(original: &BasicProperties, attempt: u32) -> BasicProperties {
    let mut headers = without_death_history(original);
    headers.insert(H_ATTEMPT.into(), AMQPValue::LongUInt(attempt));
    original
        .clone()
        .with_delivery_mode(PERSISTENT)
        .with_headers(headers)
}

/// Properties for parking `original` (its concurrency key at its limit) in the delay levels:
/// as [`republish_properties`] for the same attempt, with [`H_PARKED`] counted up. Returns
/// them and the park's number (1 for the first).
pub fn park_properties(original: &BasicProperties, attempt: u32) -> (BasicProperties, u32) {
    let parks = header_u32(original.headers().as_ref(), H_PARKED)
        .unwrap_or(0)
        .saturating_add(1);
    let mut headers = without_death_history(original);
    headers.insert(H_ATTEMPT.into(), AMQPValue::LongUInt(attempt));
    headers.insert(H_PARKED.into(), AMQPValue::LongUInt(parks));
    let props = original
        .clone()
        .with_delivery_mode(PERSISTENT)
        .with_headers(headers);
    (props, parks)
}

/// `props`' headers without the broker's dead-letter history (`x-death`,
/// `x-first-death-*`, `x-last-death-*`), which the delay levels add at every hop.
fn without_death_history(props: &BasicProperties) -> FieldTable {
    let mut headers = FieldTable::default();
    if let Some(h) = props.headers() {
        for (k, v) in h.inner() {
            let name = k.as_str();
            if name == "x-death"
                || name.starts_with("x-first-death")
                || name.starts_with("x-last-death")
            {
                continue;
            }
            headers.insert(k.clone(), v.clone());
        }
    }
    headers
}

/// Why and when a message was dead-lettered (DESIGN guarantee 6).
#[derive(Debug, Clone)]
pub struct DeadLetterInfo<'a> {
    /// The work queue it came from.
    pub original_queue: &'a str,
    /// Attempts made.
    pub attempts: u32,
    /// The last error.
    pub last_error: &'a str,
    /// When it died.
    pub failed_at: SystemTime,
}

/// The properties of a dead letter: the original message's properties and headers (less the
/// delay levels' `x-death` history, so that a replay is not taken for a dead-letter cycle),
/// plus the `x-warren-` dead-letter headers.
pub fn dead_letter_properties(
    original: &BasicProperties,
    info: &DeadLetterInfo<'_>,
) -> BasicProperties {
    let mut headers = without_death_history(original);
    headers.insert(
        H_ORIGINAL_QUEUE.into(),
        AMQPValue::LongString(info.original_queue.into()),
    );
    headers.insert(H_ATTEMPTS.into(), AMQPValue::LongUInt(info.attempts));
    headers.insert(
        H_LAST_ERROR.into(),
        AMQPValue::LongString(truncate(info.last_error, 4096).into()),
    );
    headers.insert(
        H_FAILED_AT.into(),
        AMQPValue::LongString(
            humantime::format_rfc3339_millis(info.failed_at)
                .to_string()
                .into(),
        ),
    );
    original
        .clone()
        .with_delivery_mode(PERSISTENT)
        .with_headers(headers)
}

/// Reads a header as `u32`, accepting any AMQP integer type (other clients and the management
/// UI publish headers with varying integer widths).
pub fn header_u32(headers: Option<&FieldTable>, key: &str) -> Option<u32> {
    let v = headers?.inner().get(key)?;
    let n: i64 = match v {
        AMQPValue::ShortShortInt(n) => i64::from(*n),
        AMQPValue::ShortShortUInt(n) => i64::from(*n),
        AMQPValue::ShortInt(n) => i64::from(*n),
        AMQPValue::ShortUInt(n) => i64::from(*n),
        AMQPValue::LongInt(n) => i64::from(*n),
        AMQPValue::LongUInt(n) => i64::from(*n),
        AMQPValue::LongLongInt(n) => *n,
        AMQPValue::LongString(s) => std::str::from_utf8(s.as_bytes())
            .ok()?
            .trim()
            .parse()
            .ok()?,
        _ => return None,
    };
    u32::try_from(n).ok()
}

/// Reads a header as text (long or short string).
pub fn header_string(headers: Option<&FieldTable>, key: &str) -> Option<String> {
    match headers?.inner().get(key)? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

/// Seconds since the Unix epoch (AMQP `timestamp` is 64-bit POSIX time).
pub fn unix_seconds(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// A short string (AMQP limit 255 bytes), cut on a char boundary if longer.
fn short(s: &str) -> ShortString {
    ShortString::from(truncate(s, 255))
}

/// `s` cut to at most `max` bytes on a char boundary.
pub(crate) fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// A `LongString` header or argument value from text.
pub fn long_value(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job() -> JobMessage {
        JobMessage {
            id: Uuid::now_v7(),
            queue: "mail".into(),
            attempt: 2,
            max_attempts: 5,
            correlation_id: Some("corr-1".into()),
            idempotency_key: Some("key-1".into()),
            concurrency_key: None,
            payload: Bytes::from_static(br#"{"to":"a@b"}"#),
        }
    }

    #[test]
    fn properties_round_trip() {
        let j = job();
        let props = j.properties();
        assert_eq!(props.delivery_mode(), &Some(2));
        assert_eq!(
            props.content_type().as_ref().map(|c| c.as_str()),
            Some("application/json")
        );
        assert_eq!(props.kind().as_ref().map(|c| c.as_str()), Some("mail"));
        let back =
            JobMessage::from_delivery("mail", &props, j.payload.clone(), 1 << 20).expect("valid");
        assert_eq!(back.id, j.id);
        assert_eq!(back.attempt, 2);
        assert_eq!(back.max_attempts, 5);
        assert_eq!(back.correlation_id.as_deref(), Some("corr-1"));
        assert_eq!(back.idempotency_key.as_deref(), Some("key-1"));
    }

    #[test]
    fn malformed_messages_are_explained() {
        let e = JobMessage::from_delivery(
            "q",
            &BasicProperties::default(),
            Bytes::from_static(b"{}"),
            1 << 20,
        )
        .expect_err("no id");
        assert!(e.contains("no message_id"), "{e}");
        let props = BasicProperties::default().with_message_id("abc".into());
        let e = JobMessage::from_delivery("q", &props, Bytes::from_static(b"{}"), 1 << 20)
            .expect_err("bad id");
        assert!(e.contains("not a UUID"), "{e}");
        let props = job().properties();
        let e = JobMessage::from_delivery("q", &props, Bytes::from_static(b"not json"), 1 << 20)
            .expect_err("body");
        assert!(e.contains("not JSON"), "{e}");
        let text = job().properties().with_content_type("text/plain".into());
        let e = JobMessage::from_delivery("q", &text, Bytes::from_static(b"{}"), 1 << 20)
            .expect_err("content type");
        assert!(e.contains("`text/plain` is not application/json"), "{e}");
        let e = JobMessage::from_delivery("q", &props, Bytes::from_static(b"[1,2,3]"), 4)
            .expect_err("size");
        assert!(e.contains("7 bytes is over"), "{e}");
        let cloud = job()
            .properties()
            .with_content_type("application/cloudevents+json; charset=utf-8".into());
        JobMessage::from_delivery("q", &cloud, Bytes::from_static(b"{}"), 1 << 20)
            .expect("a +json type with parameters is JSON");
    }

    #[test]
    fn dead_letter_keeps_headers_and_adds_why() {
        let props = job().properties();
        let dl = dead_letter_properties(
            &props,
            &DeadLetterInfo {
                original_queue: "mail",
                attempts: 3,
                last_error: "boom",
                failed_at: UNIX_EPOCH,
            },
        );
        let h = dl.headers().as_ref();
        assert_eq!(header_u32(h, H_ATTEMPT), Some(2));
        assert_eq!(header_u32(h, H_ATTEMPTS), Some(3));
        assert_eq!(header_string(h, H_LAST_ERROR).as_deref(), Some("boom"));
        assert_eq!(header_string(h, H_ORIGINAL_QUEUE).as_deref(), Some("mail"));
        assert_eq!(
            header_string(h, H_FAILED_AT).as_deref(),
            Some("1970-01-01T00:00:00.000Z")
        );
        assert_eq!(dl.message_id(), props.message_id());
    }

    #[test]
    fn republish_drops_death_history_and_sets_attempt() {
        let mut props = job().properties();
        let mut h = props.headers().clone().unwrap_or_default();
        h.insert("x-death".into(), AMQPValue::FieldArray(Default::default()));
        h.insert("x-first-death-queue".into(), long_value("warren.delay.00"));
        props = props.with_headers(h);
        let again = republish_properties(&props, 3);
        let h = again.headers().as_ref();
        assert_eq!(header_u32(h, H_ATTEMPT), Some(3));
        assert_eq!(
            header_string(h, H_IDEMPOTENCY_KEY).as_deref(),
            Some("key-1")
        );
        let inner = h.expect("headers").inner();
        assert!(!inner.contains_key("x-death") && !inner.contains_key("x-first-death-queue"));
        assert_eq!(again.message_id(), props.message_id());
    }

    #[test]
    fn truncate_respects_char_boundaries() {
        assert_eq!(truncate("héllo", 2), "h");
        assert_eq!(truncate("abc", 10), "abc");
    }
}
