//! `?wait=` on `GET /v1/jobs/{id}` and `POST /v1/queues/{queue}/jobs` (DESIGN §3): answer as
//! soon as the job is final, or when the wait ends, with the job as it stands then.
//!
//! The handlers take a [`Wait`] (the parsed parameter) and call [`settle`]; the waiting itself
//! (a binding per waited-for job on the broker's `warren.events`, woken by the process that
//! finished the job) is [`crate::events::Waiters`]'. Nothing here knows of AMQP.

use std::time::Duration;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use uuid::Uuid;

use super::{IntakeState, Problem};
use crate::store::JobRecord;

/// The longest `wait` a request may ask for (ms: 60,000).
pub(crate) const MAX_WAIT: Duration = Duration::from_secs(60);

/// The `wait` query parameter: how long the request may wait for its job to be final; zero
/// when absent. Refused with `400 malformed-request` when it is not a duration, is given
/// twice, or is over [`MAX_WAIT`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Wait(pub(super) Duration);

impl<S: Send + Sync> FromRequestParts<S> for Wait {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Problem> {
        let Some(query) = parts.uri.query() else {
            return Ok(Self::default());
        };
        let mut found = None;
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            if super::query::form_decode(name) != "wait" {
                continue;
            }
            if found.is_some() {
                return Err(Problem::bad_request(format!(
                    "`wait` is given more than once; give one duration of at most {} s",
                    MAX_WAIT.as_secs()
                )));
            }
            found = Some(parse(&super::query::form_decode(value))?);
        }
        Ok(Self(found.unwrap_or_default()))
    }
}

impl Wait {
    /// True when the request asked to wait (a non-zero `wait`).
    pub(super) fn asked(self) -> bool {
        !self.0.is_zero()
    }
}

/// `text` as a wait, in the grammar the OpenAPI document states (its `pattern`): plain
/// seconds (`10`, `2.5`), or a whole number with `ms`, `s` or `m` (`500ms`, `10s`, `1m`,
/// read by humantime); at most [`MAX_WAIT`].
fn parse(text: &str) -> Result<Duration, Problem> {
    let bad = || {
        Problem::bad_request(format!(
            "`wait` must be a duration such as `10s` or `500ms`, or seconds, of at most {} s; got `{}`",
            MAX_WAIT.as_secs(),
            crate::message::truncate(text, 40)
        ))
    };
    let digits = |s: &str| (1..=9).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit());
    let number = text.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let unit = &text[number.len()..];
    let wait = match unit {
        "" => {
            let (whole, fraction) = number.split_once('.').unwrap_or((number, "0"));
            if !digits(whole) || !digits(fraction) {
                return Err(bad());
            }
            let secs: f64 = number.parse().map_err(|_| bad())?;
            Duration::try_from_secs_f64(secs).map_err(|_| bad())?
        }
        "ms" | "s" | "m" if digits(number) => humantime::parse_duration(text).map_err(|_| bad())?,
        _ => return Err(bad()),
    };
    if wait > MAX_WAIT {
        return Err(Problem::bad_request(format!(
            "`wait` may be at most {} s (60s); got `{}`",
            MAX_WAIT.as_secs(),
            crate::message::truncate(text, 40)
        )));
    }
    Ok(wait)
}

/// Job `id` once it is final or `wait` has passed (see [`crate::events::Waiters::wait_final`]):
/// `Ok(None)` when the store has no such job, `Err` with `503 unavailable` when the store
/// cannot be read.
pub(super) async fn settle(
    state: &IntakeState,
    id: Uuid,
    wait: Wait,
) -> Result<Option<JobRecord>, Problem> {
    state
        .waiters
        .wait_final(&*state.store, id, wait.0)
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "store read failed");
            Problem::unavailable("the status store is unavailable")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_plain_seconds_up_to_a_minute() {
        let ok = |s: &str| parse(s).expect(s);
        assert_eq!(ok("10s"), Duration::from_secs(10));
        assert_eq!(ok("500ms"), Duration::from_millis(500));
        assert_eq!(ok("1m"), Duration::from_secs(60));
        assert_eq!(ok("30"), Duration::from_secs(30));
        assert_eq!(ok("2.5"), Duration::from_millis(2_500));
        assert_eq!(ok("0"), Duration::ZERO);
        assert_eq!(ok("60"), MAX_WAIT);
    }

    #[test]
    fn over_a_minute_or_not_a_duration_is_refused() {
        for bad in [
            "61s", "61", "2m", "1h", "", "soon", "-1", "1.2.3", "10 s", "1.5s", "1min", " 1",
        ] {
            assert!(parse(bad).is_err(), "`{bad}` should be refused");
        }
        let refused = format!("{:?}", parse("90s").expect_err("over the limit"));
        assert!(refused.contains("at most 60 s"), "{refused}");
    }
}
