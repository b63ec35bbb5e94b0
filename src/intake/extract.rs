//! Request extractors and field parsers whose every rejection is an RFC 7807 problem
//! (RFC 9457, `application/problem+json`) naming what was wrong, instead of axum's
//! `text/plain` rejections (DESIGN §2.8: bad input gets a problem and changes nothing).
//!
//! - [`Path`] and [`Query`] wrap axum's extractors of the same name; a `PathRejection` or
//!   `QueryRejection` becomes `400 malformed-request` whose `detail` is axum's own text,
//!   which names the field (`"Failed to deserialize query string: limit: invalid digit
//!   found in string"`).
//! - [`int`] reads a JSON integer the way JSON Schema defines one (2020-12 §6.1.1: "a number
//!   with a zero fractional part"), so `30.0` and `1e2` are integers; serde's own `u32`
//!   refuses them.
//! - [`rfc3339`] parses an RFC 3339 `date-time` (JSON Schema's `format: date-time`), any
//!   offset, into a [`SystemTime`].

use std::time::{Duration, SystemTime};

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use super::Problem;

/// The path parameters of the matched route, as `T`; a value that does not decode (e.g.
/// percent-encoded bytes that are not UTF-8) is `400 malformed-request`.
pub(super) struct Path<T>(pub(super) T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for Path<T> {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Problem> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(v)| Path(v))
            .map_err(|e| Problem::bad_request(format!("bad path: {}", e.body_text())))
    }
}

/// The query string, as `T` (`serde_urlencoded`); a value of the wrong type, a duplicate
/// or a field `T` refuses is `400 malformed-request`. Unknown parameters are refused for
/// every route before any handler runs (`super::query::refuse_unknown`).
pub(super) struct Query<T>(pub(super) T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for Query<T> {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Problem> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(v)| Query(v))
            .map_err(|e| Problem::bad_request(e.body_text()))
    }
}

/// `deserialize_with` helpers for optional integer fields that follow JSON Schema's
/// `integer`: any JSON number with no fractional part, in the target type's range. Each
/// names its field in its error (serde's own messages do not).
pub(super) mod int {
    use serde::de::{Deserialize, Deserializer, Error};
    use serde_json::Value;

    /// An optional integer called `name` (`null` or absent is `None`) that fits `T`.
    fn named<'de, D, T>(d: D, name: &str) -> Result<Option<T>, D::Error>
    where
        D: Deserializer<'de>,
        T: TryFrom<u64>,
    {
        let bad = |v: &Value| {
            D::Error::custom(format!(
                "`{name}` must be a non-negative integer that fits, not {}",
                crate::message::truncate(&v.to_string(), 40)
            ))
        };
        let v = Value::deserialize(d)?;
        let whole = match &v {
            Value::Null => return Ok(None),
            Value::Number(n) => n.as_u64().or_else(|| {
                n.as_f64()
                    .filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f <= u64::MAX as f64)
                    // In range and whole, checked just above.
                    .map(|f| f as u64)
            }),
            _ => None,
        };
        let whole = whole.ok_or_else(|| bad(&v))?;
        T::try_from(whole).map(Some).map_err(|_| bad(&v))
    }

    /// `delay_ms`.
    pub(in crate::intake) fn delay_ms<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<u64>, D::Error> {
        named(d, "delay_ms")
    }

    /// `max_attempts`.
    pub(in crate::intake) fn max_attempts<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<u32>, D::Error> {
        named(d, "max_attempts")
    }

    /// `limit`.
    pub(in crate::intake) fn limit<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<u64>, D::Error> {
        named(d, "limit")
    }
}

/// 400 unless `body` (trimmed) is a JSON object: serde would read a struct from an array too
/// (`[1, 2]` as its fields in order).
pub(super) fn require_object(body: &[u8], what: &str) -> Result<(), Problem> {
    if body.trim_ascii_start().starts_with(b"{") {
        return Ok(());
    }
    Err(Problem::bad_request(format!(
        "{what} must be a JSON object"
    )))
}

/// An RFC 3339 `date-time` (`2026-01-02T03:04:05Z`, `…05.123+02:00`; `T`/`t`/space and
/// `Z`/`z` accepted, leap second `60` read as `59`), or `None` when `s` is not one.
pub(super) fn rfc3339(s: &str) -> Option<SystemTime> {
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = b.get(r)?;
        part.iter()
            .all(u8::is_ascii_digit)
            .then(|| part.iter().fold(0i64, |n, d| n * 10 + i64::from(d - b'0')))
    };
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    if !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let month_days = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if !(1..=12).contains(&month)
        || day < 1
        || day > month_days[usize::try_from(month - 1).ok()?]
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let mut at = 19;
    let mut nanos = 0u32;
    if b[at] == b'.' {
        let start = at + 1;
        at = start;
        while at < b.len() && b[at].is_ascii_digit() {
            at += 1;
        }
        if at == start {
            return None;
        }
        // Nanoseconds: the first nine digits, padded.
        let digits = &s[start..at.min(start + 9)];
        nanos = format!("{digits:0<9}").parse().ok()?;
    }
    let offset_s = match b.get(at..)? {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), _, _, b':', _, _] => {
            let (h, m) = (num(at + 1..at + 3)?, num(at + 4..at + 6)?);
            if h > 23 || m > 59 {
                return None;
            }
            let o = h * 3600 + m * 60;
            if *sign == b'+' { o } else { -o }
        }
        _ => return None,
    };
    // Days since 1970-01-01 (Howard Hinnant's days_from_civil).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second.min(59) - offset_s;
    let base = if secs >= 0 {
        SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(secs.unsigned_abs()))?
    } else {
        SystemTime::UNIX_EPOCH.checked_sub(Duration::from_secs(secs.unsigned_abs()))?
    };
    base.checked_add(Duration::from_nanos(u64::from(nanos)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(t: SystemTime) -> i64 {
        match t.duration_since(SystemTime::UNIX_EPOCH) {
            Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
        }
    }

    #[test]
    fn rfc3339_reads_offsets_fractions_and_leap_years() {
        let at = |s: &str| rfc3339(s).map(secs);
        assert_eq!(at("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(at("2026-01-02T03:04:05Z"), Some(1_767_323_045));
        assert_eq!(at("2026-01-02T05:04:05+02:00"), Some(1_767_323_045));
        assert_eq!(at("2026-01-02t03:04:05.999z"), Some(1_767_323_045));
        assert_eq!(at("1969-12-31T23:59:59Z"), Some(-1));
        assert_eq!(at("0001-01-01T00:00:00Z"), Some(-62_135_596_800));
        assert!(at("2024-02-29T00:00:00Z").is_some());
        for bad in [
            "2023-02-29T00:00:00Z",
            "2026-13-01T00:00:00Z",
            "2026-01-02T03:04:05",
            "2026-01-02T03:04:05+0200",
            "2026-01-02T24:00:00Z",
            "2026-01-02T03:04:05.Z",
            "yesterday",
        ] {
            assert_eq!(at(bad), None, "{bad}");
        }
    }

    #[test]
    fn integers_follow_json_schema() {
        #[derive(serde::Deserialize)]
        struct T {
            #[serde(default, deserialize_with = "int::max_attempts")]
            n: Option<u32>,
        }
        let n = |s: &str| serde_json::from_str::<T>(s).map(|t| t.n).ok();
        assert_eq!(n(r#"{"n": 30}"#), Some(Some(30)));
        assert_eq!(n(r#"{"n": 30.0}"#), Some(Some(30)));
        assert_eq!(n(r#"{"n": 1e2}"#), Some(Some(100)));
        assert_eq!(n(r#"{"n": null}"#), Some(None));
        assert_eq!(n(r#"{}"#), Some(None));
        assert_eq!(n(r#"{"n": 30.5}"#), None);
        assert_eq!(n(r#"{"n": -1}"#), None);
        assert_eq!(n(r#"{"n": 5000000000}"#), None);
        assert_eq!(n(r#"{"n": "5"}"#), None);
    }
}
