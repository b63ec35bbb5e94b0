//! Schedules (`[schedules.NAME]` in queues.toml, DESIGN §5): periodic jobs fired exactly once
//! per tick with any number of processes and no leader.
//!
//! A schedule is a cron expression (5 fields, or 6 with seconds first), evaluated in an IANA
//! timezone by the `croner` crate, and the job it enqueues at each tick. Every process that
//! runs the intake evaluates every schedule ([`runner`]); each tick's job carries the
//! idempotency key [`tick_key`] (`schedule:{name}:{tick}`), so of any number of processes
//! firing one tick, the store's idempotency machinery lets exactly one job exist
//! (`crate::enqueue`). The store keeps, per schedule, the latest tick fired
//! ([`crate::store::ScheduleState`]) so a process knows which ticks are done and, after
//! downtime, which were missed.
//!
//! Which ticks fire is [`plan`], a pure function: every tick due since the last one fired
//! that is at most [`MISFIRE_THRESHOLD`] late fires; older ones were missed (no process ran,
//! or the store or broker refused), and [`CatchUp`] decides what they get.
//!
//! Daylight-saving changes follow croner's documented rule (croner's README, "Daylight
//! Saving Time (DST) Handling", after the Open Cron Pattern Specification and Vixie cron): a
//! fixed-time schedule whose local time falls into the hour skipped in spring fires once,
//! at the first valid time after the gap (02:30 in Europe/Berlin fires at 03:00 local on
//! that day); in the hour repeated in autumn it fires once, at the first occurrence.
//! Wildcard and step fields (`*/5`) fire at each matching wall-clock time that exists:
//! none inside the skipped hour, twice over the repeated one.

mod runner;
pub(crate) use runner::Scheduler;

use std::str::FromStr as _;
use std::time::Duration;

use chrono::{DateTime, TimeZone as _, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds};
use serde::Deserialize;

/// How late a tick may fire and still count as on time (5 s): a tick older than that when
/// a process evaluates its schedule was missed, and the schedule's [`CatchUp`] decides. This
/// is what Quartz calls the misfire threshold. It covers a pass delayed by a slow store or a
/// busy machine; a 10 s stop of every intake misses the ticks of its first 5 s or more.
pub const MISFIRE_THRESHOLD: Duration = Duration::from_secs(5);

/// Most missed ticks `catch_up = "all"` fires after downtime: the newest 1,000.
pub const MAX_CATCH_UP: usize = 1000;

/// What the ticks missed during downtime get (`catch_up`, default `last`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum CatchUp {
    /// The newest missed tick fires once; older ones are skipped.
    #[default]
    Last,
    /// Missed ticks are skipped.
    None,
    /// Every missed tick fires, oldest first (the newest [`MAX_CATCH_UP`]).
    All,
}

impl CatchUp {
    /// `last`, `none` or `all`, as in queues.toml.
    pub fn as_str(self) -> &'static str {
        match self {
            CatchUp::Last => "last",
            CatchUp::None => "none",
            CatchUp::All => "all",
        }
    }
}

/// One `[schedules.NAME]` table, checked.
#[derive(Debug, Clone)]
pub struct Schedule {
    /// The schedule's name (the `NAME` of `[schedules.NAME]`): 1 to 100 of `A-Z a-z 0-9 . _ -`.
    pub name: String,
    /// The queue its jobs go to (a configured queue).
    pub queue: String,
    /// The cron expression as written.
    pub cron: String,
    /// The parsed expression.
    parsed: Cron,
    /// The IANA timezone the expression is read in (default `UTC`).
    pub timezone: Tz,
    /// Each job's payload: JSON (from the TOML value; default `{}`).
    pub payload: bytes::Bytes,
    /// The jobs' attempt budget when it differs from the queue's (1 to 100).
    pub max_attempts: Option<u32>,
    /// What missed ticks get.
    pub catch_up: CatchUp,
}

/// The raw `[schedules.NAME]` table of queues.toml.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSchedule {
    pub(crate) queue: toml::Spanned<String>,
    pub(crate) cron: toml::Spanned<String>,
    pub(crate) timezone: Option<toml::Spanned<String>>,
    pub(crate) payload: Option<toml::Spanned<toml::Value>>,
    pub(crate) max_attempts: Option<toml::Spanned<i64>>,
    pub(crate) catch_up: Option<CatchUp>,
}

/// A bad value in a `[schedules.NAME]` table: the key's span in the file and what is wrong.
pub(crate) struct Invalid {
    pub(crate) span: std::ops::Range<usize>,
    pub(crate) key: &'static str,
    pub(crate) message: String,
}

impl Schedule {
    /// Checks `raw` as the schedule `name`; `queue_limit` gives a configured queue's
    /// `max_payload_bytes` (`None`: no such queue).
    pub(crate) fn from_raw(
        name: &str,
        raw: RawSchedule,
        queue_limit: impl Fn(&str) -> Option<usize>,
    ) -> Result<Self, Invalid> {
        let invalid = |span: std::ops::Range<usize>, key: &'static str, message: String| Invalid {
            span,
            key,
            message,
        };
        let queue_span = raw.queue.span();
        let queue = raw.queue.into_inner();
        let Some(limit) = queue_limit(&queue) else {
            return Err(invalid(
                queue_span,
                "queue",
                format!("no queue named `{queue}` is configured"),
            ));
        };
        let cron_span = raw.cron.span();
        let cron = raw.cron.into_inner();
        let parsed = parse_cron(&cron).map_err(|m| invalid(cron_span, "cron", m))?;
        let timezone = match raw.timezone {
            None => Tz::UTC,
            Some(tz) => {
                let span = tz.span();
                let tz = tz.into_inner();
                Tz::from_str(&tz).map_err(|_| {
                    invalid(
                        span,
                        "timezone",
                        format!(
                            "`{tz}` is not an IANA timezone name (like `UTC` or `Europe/Berlin`)"
                        ),
                    )
                })?
            }
        };
        let payload = match raw.payload {
            None => bytes::Bytes::from_static(b"{}"),
            Some(p) => {
                let span = p.span();
                let json = serde_json::to_vec(p.get_ref())
                    .map_err(|e| invalid(span.clone(), "payload", format!("not JSON: {e}")))?;
                if json.len() > limit {
                    return Err(invalid(
                        span,
                        "payload",
                        format!(
                            "{} bytes as JSON, over queue `{queue}`'s max_payload_bytes ({limit})",
                            json.len()
                        ),
                    ));
                }
                bytes::Bytes::from(json)
            }
        };
        let max_attempts = match raw.max_attempts {
            None => None,
            Some(n) => {
                let span = n.span();
                match u32::try_from(*n.get_ref()) {
                    Ok(v @ 1..=100) => Some(v),
                    _ => {
                        return Err(invalid(
                            span,
                            "max_attempts",
                            format!("must be 1 to 100, got {}", n.get_ref()),
                        ));
                    }
                }
            }
        };
        Ok(Schedule {
            name: name.to_owned(),
            queue,
            cron,
            parsed,
            timezone,
            payload,
            max_attempts,
            catch_up: raw.catch_up.unwrap_or_default(),
        })
    }

    /// The first tick strictly after `after` (ms since the epoch), as ms; `None` when the
    /// expression matches no time before the year 5000 (croner's search limit).
    pub fn next_after(&self, after: i64) -> Option<i64> {
        let start = self.timezone.timestamp_millis_opt(after).single()?;
        let next = self.parsed.find_next_occurrence(&start, false).ok()?;
        Some(next.timestamp_millis())
    }

    /// Up to `n` ticks in (`after`, `until`] (ms), newest first.
    fn newest_ticks(&self, after: i64, until: i64, n: usize) -> Vec<i64> {
        let Some(start) = self.timezone.timestamp_millis_opt(until).single() else {
            return Vec::new();
        };
        self.parsed
            .iter_from(start, croner::Direction::Backward)
            .map(|t| t.timestamp_millis())
            .take_while(|&ms| ms > after)
            .take(n)
            .collect()
    }
}

/// True for a schedule name: 1 to 100 letters, digits, `_`, `-` and `.` (it is part of each
/// tick's idempotency key, at most 255 bytes). Checked by the config and by the job list's
/// `schedule` filter.
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 100
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// A cron expression of 5 fields (minute first) or 6 (seconds first), as croner reads it.
fn parse_cron(expr: &str) -> Result<Cron, String> {
    let fields = expr.split_whitespace().count();
    if !(5..=6).contains(&fields) {
        return Err(format!(
            "`{expr}` has {fields} fields; a cron expression has 5 (minute hour day-of-month month day-of-week) or 6 (seconds first)"
        ));
    }
    CronParser::builder()
        .seconds(Seconds::Optional)
        .build()
        .parse(expr)
        .map_err(|e| format!("`{expr}` is not a cron expression: {e}"))
}

/// The idempotency key of schedule `name`'s tick at `tick` (ms):
/// `schedule:{name}:{tick as RFC 3339 UTC}`, e.g. `schedule:nightly:2026-12-01T02:00:00Z`.
/// At most 9 + 100 + 1 + 24 bytes, within an idempotency key's 255.
pub fn tick_key(name: &str, tick: i64) -> String {
    let at = DateTime::<Utc>::from_timestamp_millis(tick)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
        .unwrap_or_else(|| tick.to_string());
    format!("schedule:{name}:{at}")
}

/// What one evaluation of a schedule does: see [`plan`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    /// The ticks to fire, oldest first (ms).
    pub fire: Vec<i64>,
    /// True when missed ticks were skipped (by `catch_up`, or beyond the newest
    /// [`MAX_CATCH_UP`] of `all`).
    pub skipped: bool,
    /// The newest tick due, fired or skipped: where the schedule's state moves to (ms);
    /// `None` when no tick is due.
    pub newest: Option<i64>,
}

/// Which ticks of `schedule` fire at `now` (ms) when the latest tick fired (or the first
/// time the schedule was seen) is `last_tick` (ms): every tick in (`last_tick`, `now`]
/// at most [`MISFIRE_THRESHOLD`] old fires; of the older (missed) ones, `catch_up` fires the
/// newest (`last`), none (`none`) or each, oldest first (`all`, the newest
/// [`MAX_CATCH_UP`]).
pub fn plan(schedule: &Schedule, last_tick: i64, now: i64) -> Plan {
    let threshold = i64::try_from(MISFIRE_THRESHOLD.as_millis()).unwrap_or(i64::MAX);
    // A tick more than the threshold late was missed; one exactly that late is on time.
    let missed_until = now.saturating_sub(threshold).saturating_sub(1);
    // On-time ticks: at most a threshold's worth (5 s of a per-second schedule).
    let mut on_time = Vec::new();
    let mut cursor = last_tick.max(missed_until);
    while let Some(t) = schedule.next_after(cursor) {
        if t > now {
            break;
        }
        on_time.push(t);
        cursor = t;
    }
    // Missed ticks, newest first: one more than is fired tells whether any were skipped.
    let keep = match schedule.catch_up {
        CatchUp::All => MAX_CATCH_UP,
        CatchUp::Last => 1,
        CatchUp::None => 0,
    };
    let mut missed = if missed_until > last_tick {
        schedule.newest_ticks(last_tick, missed_until, keep + 1)
    } else {
        Vec::new()
    };
    let newest = on_time.last().or(missed.first()).copied();
    let skipped = missed.len() > keep;
    missed.truncate(keep);
    let mut fire: Vec<i64> = missed.into_iter().rev().collect();
    fire.extend(on_time);
    Plan {
        fire,
        skipped,
        newest,
    }
}

#[cfg(test)]
mod tests;

/// A schedule as `GET /v1/schedules`, `warren schedules` and the dashboard show it: its
/// settings, when it fires next and the job of its latest tick.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct ScheduleView {
    /// The schedule's name (`[schedules.NAME]`).
    pub name: String,
    /// The queue its jobs go to.
    pub queue: String,
    /// The cron expression (5 fields, or 6 with seconds first).
    pub cron: String,
    /// The IANA timezone the expression is read in.
    pub timezone: String,
    /// What ticks missed during downtime get: `last`, `none` or `all`.
    pub catch_up: String,
    /// The next tick, RFC 3339 UTC; `null` when the expression matches no future time.
    #[schema(format = DateTime)]
    pub next_run: Option<String>,
    /// The job of the latest tick fired; `null` before the first.
    pub last_job_id: Option<uuid::Uuid>,
    /// That job's status (`queued`, …, `succeeded`); `null` when it was pruned or before
    /// the first tick.
    pub last_job_status: Option<String>,
    /// When that job was enqueued, RFC 3339 UTC.
    #[schema(format = DateTime)]
    pub last_run_at: Option<String>,
}

/// Every configured schedule as [`ScheduleView`]s, by name, at `now` (ms): one read of the
/// schedules' states and one job read per schedule that fired.
///
/// # Errors
/// The store's.
pub async fn views(
    config: &crate::Config,
    store: &dyn crate::store::Store,
    now: i64,
) -> crate::Result<Vec<ScheduleView>> {
    let states = store.schedule_states().await?;
    let mut out = Vec::with_capacity(config.schedules.len());
    for s in config.schedules.values() {
        let last_job_id = states.get(&s.name).and_then(|st| st.last_job);
        let last = match last_job_id {
            Some(id) => store.get(id).await?,
            None => None,
        };
        out.push(ScheduleView {
            name: s.name.clone(),
            queue: s.queue.clone(),
            cron: s.cron.clone(),
            timezone: s.timezone.name().to_owned(),
            catch_up: s.catch_up.as_str().to_owned(),
            next_run: s.next_after(now).map(crate::store::rfc3339_ms),
            last_job_id,
            last_job_status: last.as_ref().map(|r| r.status.as_str().to_owned()),
            last_run_at: last.map(|r| crate::store::rfc3339_ms(r.created_at)),
        });
    }
    Ok(out)
}
