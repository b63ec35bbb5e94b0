//! The DLQ archive format: one JSON object per dead letter, one per line (JSON Lines).
//! `dlq/README.md` is the contract; this module writes and reads it.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldArray, FieldTable, LongString};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;
use uuid::Uuid;

use crate::message::{
    H_ATTEMPT, H_ATTEMPTS, H_FAILED_AT, H_LAST_ERROR, H_ORIGINAL_QUEUE, header_string, header_u32,
};

/// One dead letter as an archive line.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = DeadLetter)]
#[serde(deny_unknown_fields)]
pub struct ArchiveLine {
    /// Job id (= `message_id`), when the message has a UUID one.
    pub id: Option<String>,
    /// The work queue the job belongs to.
    pub queue: String,
    /// AMQP basic properties.
    pub properties: ArchiveProperties,
    /// All AMQP headers, as JSON.
    #[schema(value_type = Object)]
    pub headers: BTreeMap<String, Value>,
    /// The body as JSON (minified, key order kept), when it is JSON.
    #[schema(value_type = Option<serde_json::Value>)]
    pub payload: Option<Box<RawValue>>,
    /// The raw body, base64, when it is not JSON.
    pub payload_base64: Option<String>,
    /// `x-warren-last-error`.
    pub last_error: Option<String>,
    /// `x-warren-attempts`.
    pub attempts: Option<u32>,
    /// `x-warren-failed-at`.
    pub failed_at: Option<String>,
}

/// The AMQP properties kept in an archive line.
#[derive(Debug, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = DeadLetterProperties)]
#[serde(deny_unknown_fields)]
pub struct ArchiveProperties {
    /// `message_id`.
    pub message_id: Option<String>,
    /// `correlation_id`.
    pub correlation_id: Option<String>,
    /// `content_type`.
    pub content_type: Option<String>,
    /// `timestamp`, seconds since the Unix epoch.
    pub timestamp: Option<u64>,
    /// `type`.
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// `delivery_mode`.
    pub delivery_mode: Option<u8>,
}

impl ArchiveLine {
    /// The line for a dead letter of `queue` with these properties and body.
    pub fn from_message(queue: &str, props: &BasicProperties, body: &[u8]) -> Self {
        let headers = props.headers().as_ref();
        let text = std::str::from_utf8(body).ok();
        let payload = text
            .filter(|t| serde_json::from_str::<serde::de::IgnoredAny>(t).is_ok())
            .and_then(|t| RawValue::from_string(minify_json(t)).ok());
        let payload_base64 = payload.is_none().then(|| BASE64.encode(body));
        let message_id = props.message_id().as_ref().map(|m| m.to_string());
        Self {
            id: message_id
                .as_deref()
                .and_then(|m| Uuid::parse_str(m).ok())
                .map(|u| u.to_string()),
            queue: queue.to_owned(),
            properties: ArchiveProperties {
                message_id,
                correlation_id: props.correlation_id().as_ref().map(|c| c.to_string()),
                content_type: props.content_type().as_ref().map(|c| c.to_string()),
                timestamp: *props.timestamp(),
                kind: props.kind().as_ref().map(|c| c.to_string()),
                delivery_mode: *props.delivery_mode(),
            },
            headers: headers
                .map(|h| {
                    h.inner()
                        .iter()
                        .map(|(k, v)| (k.to_string(), amqp_to_json(v)))
                        .collect()
                })
                .unwrap_or_default(),
            payload,
            payload_base64,
            last_error: header_string(headers, H_LAST_ERROR),
            attempts: header_u32(headers, H_ATTEMPTS),
            failed_at: header_string(headers, H_FAILED_AT),
        }
    }

    /// Parses and checks one line. `Err` says what is wrong (the caller adds the line
    /// number).
    pub fn parse(line: &str) -> Result<Self, String> {
        let parsed: Self = serde_json::from_str(line).map_err(|e| e.to_string())?;
        if parsed.queue.is_empty() {
            return Err("`queue` is empty".to_owned());
        }
        if let Some(id) = &parsed.id
            && Uuid::parse_str(id).is_err()
        {
            return Err(format!("`id` {id:?} is not a UUID"));
        }
        if let Some(b64) = &parsed.payload_base64 {
            BASE64
                .decode(b64)
                .map_err(|e| format!("`payload_base64` is not base64: {e}"))?;
        }
        if parsed.id.is_none() && parsed.properties.message_id.is_none() {
            return Err("no `id` and no `properties.message_id`: warren cannot run it".to_owned());
        }
        Ok(parsed)
    }

    /// The message body: `payload_base64` decoded when set, else `payload` as written.
    pub fn body(&self) -> Vec<u8> {
        if let Some(b64) = &self.payload_base64
            && let Ok(bytes) = BASE64.decode(b64)
        {
            return bytes;
        }
        match &self.payload {
            Some(raw) => raw.get().as_bytes().to_vec(),
            None => b"null".to_vec(),
        }
    }

    /// The job id to publish under: `id`, else `properties.message_id`.
    pub fn message_id(&self) -> Option<&str> {
        self.id.as_deref().or(self.properties.message_id.as_deref())
    }

    /// Properties for publishing this dead letter back to `queue` as a fresh job: the same
    /// id, correlation id and other headers, attempt 1, and without the dead-letter headers
    /// (`x-warren-original-queue`, `-attempts`, `-last-error`, `-failed-at`, `x-death`…).
    pub fn replay_properties(&self, queue: &str) -> BasicProperties {
        let mut headers = FieldTable::default();
        for (k, v) in &self.headers {
            if is_dead_letter_header(k) {
                continue;
            }
            headers.insert(k.as_str().into(), json_to_amqp(v));
        }
        headers.insert(H_ATTEMPT.into(), AMQPValue::LongUInt(1));
        let mut props = BasicProperties::default()
            .with_content_type(
                self.properties
                    .content_type
                    .as_deref()
                    .unwrap_or("application/json")
                    .into(),
            )
            .with_delivery_mode(2)
            .with_type(queue.into())
            .with_timestamp(crate::message::unix_seconds(std::time::SystemTime::now()))
            .with_headers(headers);
        if let Some(id) = self.message_id() {
            props = props.with_message_id(id.into());
        }
        if let Some(c) = &self.properties.correlation_id {
            props = props.with_correlation_id(c.as_str().into());
        }
        props
    }
}

/// Headers a replay or requeue removes: warren's dead-letter headers and the broker's
/// dead-letter history.
pub fn is_dead_letter_header(name: &str) -> bool {
    matches!(
        name,
        H_ORIGINAL_QUEUE | H_ATTEMPTS | H_LAST_ERROR | H_FAILED_AT
    ) || name == "x-death"
        || name.starts_with("x-first-death")
        || name.starts_with("x-last-death")
        || name == "x-delivery-count"
}

/// An AMQP field value as JSON (see `dlq/README.md`).
pub fn amqp_to_json(v: &AMQPValue) -> Value {
    match v {
        AMQPValue::Boolean(b) => Value::Bool(*b),
        AMQPValue::ShortShortInt(n) => Value::from(*n),
        AMQPValue::ShortShortUInt(n) => Value::from(*n),
        AMQPValue::ShortInt(n) => Value::from(*n),
        AMQPValue::ShortUInt(n) => Value::from(*n),
        AMQPValue::LongInt(n) => Value::from(*n),
        AMQPValue::LongUInt(n) => Value::from(*n),
        AMQPValue::LongLongInt(n) => Value::from(*n),
        AMQPValue::Float(f) => Value::from(*f),
        AMQPValue::Double(f) => Value::from(*f),
        AMQPValue::DecimalValue(d) => {
            Value::from(f64::from(d.value) / 10f64.powi(i32::from(d.scale)))
        }
        AMQPValue::ShortString(s) => Value::String(s.to_string()),
        AMQPValue::LongString(s) => {
            Value::String(String::from_utf8_lossy(s.as_bytes()).into_owned())
        }
        AMQPValue::FieldArray(a) => Value::Array(a.as_slice().iter().map(amqp_to_json).collect()),
        AMQPValue::Timestamp(t) => Value::from(*t),
        AMQPValue::FieldTable(t) => Value::Object(
            t.inner()
                .iter()
                .map(|(k, v)| (k.to_string(), amqp_to_json(v)))
                .collect(),
        ),
        AMQPValue::ByteArray(b) => Value::String(BASE64.encode(b.as_slice())),
        AMQPValue::Void => Value::Null,
    }
}

/// JSON as an AMQP field value: strings → long strings, integers → 64-bit integers.
pub fn json_to_amqp(v: &Value) -> AMQPValue {
    match v {
        Value::Null => AMQPValue::Void,
        Value::Bool(b) => AMQPValue::Boolean(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => AMQPValue::LongLongInt(i),
            None => AMQPValue::Double(n.as_f64().unwrap_or(0.0)),
        },
        Value::String(s) => AMQPValue::LongString(LongString::from(s.as_str())),
        Value::Array(a) => {
            let mut arr = FieldArray::default();
            for item in a {
                arr.push(json_to_amqp(item));
            }
            AMQPValue::FieldArray(arr)
        }
        Value::Object(o) => {
            let mut t = FieldTable::default();
            for (k, v) in o {
                t.insert(k.as_str().into(), json_to_amqp(v));
            }
            AMQPValue::FieldTable(t)
        }
    }
}

/// `json` (valid JSON text) without insignificant whitespace, everything else (key order,
/// number spelling, escapes) byte for byte, so it fits on one line.
pub fn minify_json(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    let mut in_string = false;
    let mut escaped = false;
    for c in json.chars() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if c == '"' {
            in_string = true;
            out.push(c);
        } else if !c.is_whitespace() {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::long_value;

    fn dead_props() -> BasicProperties {
        let mut h = FieldTable::default();
        h.insert(H_ATTEMPT.into(), AMQPValue::LongUInt(3));
        h.insert(H_ATTEMPTS.into(), AMQPValue::LongUInt(3));
        h.insert(H_LAST_ERROR.into(), long_value("boom"));
        h.insert(H_FAILED_AT.into(), long_value("2026-11-21T14:29:58.123Z"));
        h.insert(H_ORIGINAL_QUEUE.into(), long_value("mail"));
        h.insert("x-custom".into(), AMQPValue::Boolean(true));
        BasicProperties::default()
            .with_message_id("01a1fe81-c580-7d3e-9f1a-2b3c4d5e6f70".into())
            .with_correlation_id("req-42".into())
            .with_content_type("application/json".into())
            .with_delivery_mode(2)
            .with_headers(h)
    }

    #[test]
    fn a_line_is_one_line_and_round_trips() {
        let body = b"{\n  \"b\": 1,\n  \"a\": \"x y\\n\"\n}";
        let line = ArchiveLine::from_message("mail", &dead_props(), body);
        let text = serde_json::to_string(&line).expect("serialize");
        assert!(!text.contains('\n'));
        assert!(text.contains(r#""payload":{"b":1,"a":"x y\n"}"#), "{text}");
        assert!(text.contains(r#""last_error":"boom""#), "{text}");
        let back = ArchiveLine::parse(&text).expect("parse");
        assert_eq!(back.body(), br#"{"b":1,"a":"x y\n"}"#);
        assert_eq!(back.attempts, Some(3));
        let props = back.replay_properties("mail");
        let h = props.headers().as_ref();
        assert_eq!(header_u32(h, H_ATTEMPT), Some(1));
        assert!(header_string(h, H_LAST_ERROR).is_none());
        assert!(h.expect("headers").inner().contains_key("x-custom"));
        assert_eq!(
            props.message_id().as_ref().map(|m| m.as_str()),
            back.id.as_deref()
        );
        assert_eq!(
            props.correlation_id().as_ref().map(|m| m.as_str()),
            Some("req-42")
        );
    }

    #[test]
    fn non_json_bodies_are_kept_as_base64() {
        let line = ArchiveLine::from_message("mail", &dead_props(), b"\xff\x00raw");
        assert!(line.payload.is_none());
        let text = serde_json::to_string(&line).expect("serialize");
        let back = ArchiveLine::parse(&text).expect("parse");
        assert_eq!(back.body(), b"\xff\x00raw");
    }

    #[test]
    fn broken_lines_say_why() {
        assert!(ArchiveLine::parse("{\"id\":").is_err());
        let e = ArchiveLine::parse(r#"{"id":"nope","queue":"q","properties":{},"headers":{},"payload":1,"payload_base64":null,"last_error":null,"attempts":null,"failed_at":null}"#)
            .expect_err("bad id");
        assert!(e.contains("not a UUID"), "{e}");
        let e = ArchiveLine::parse(r#"{"id":null,"queue":"q","properties":{},"headers":{},"payload":1,"payload_base64":null,"last_error":null,"attempts":null,"failed_at":null}"#)
            .expect_err("no id");
        assert!(e.contains("no `id`"), "{e}");
    }

    #[test]
    fn minify_keeps_strings_and_order() {
        assert_eq!(
            minify_json("{ \"z\" : [1, 2.50] ,\"a\":\"s p\\\"\" }"),
            "{\"z\":[1,2.50],\"a\":\"s p\\\"\"}"
        );
    }
}
