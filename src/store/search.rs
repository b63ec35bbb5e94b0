//! The job search's SQL, written once for every adapter: [`list_sql`] turns a [`JobFilter`]
//! and a page request into one statement, with the dialect's differences (placeholders,
//! case-insensitive `LIKE`) as [`Dialect`] hooks; the adapter binds [`Value`]s and maps rows.
//!
//! Every page is newest first by id (UUIDv7 ids sort by creation time) and keyset-paginated:
//! the next page is `id < last id of this one`, an index seek however deep it goes. The
//! indexes (SQLite migrations 0005 and 0008, PostgreSQL 0003 and 0006) serve each filter in
//! id order: `(status, id)`, `(queue, status, id)`, `(correlation_id, id)`,
//! `(idempotency_key, id)`, `(schedule, id)` and `(id) WHERE last_error IS NOT NULL`. A filter on several statuses, or on a queue
//! alone, is a `UNION ALL` of one branch per status, each an ordered index range read for
//! at most one page, merged and cut to the page: neither database can read an `IN` list
//! of an index in order of the column after it.

use uuid::Uuid;

use super::model::{JobFilter, JobStatus};

/// Jobs `running` and `retrying` by queue ([`super::JobStore::active_counts`]): rows of
/// `(queue, status, count)`, read through the `(status, id)` index, so as cheap with millions
/// of finished jobs as with none.
pub(crate) const ACTIVE_COUNTS: &str = "SELECT queue, status, COUNT(*) FROM jobs \
    WHERE status IN ('running', 'retrying') GROUP BY queue, status";

/// The columns of a job as [`super::JobRecord`] holds them.
pub(crate) const JOB_COLUMNS: &str = "id, queue, status, attempts, max_attempts, last_error, \
    result, correlation_id, idempotency_key, created_at, started_at, finished_at, \
    next_attempt_at, discarded_at, schedule";

/// How far a job's id (its UUIDv7 time) may be after its `created_at` (ms): the intake makes
/// the id just before it reads the clock, and a row a worker creates for an unknown message
/// takes the claim's time, later still; only hosts whose clocks differ by more could make
/// an id later. `created_before` bounds the id scan with it.
const ID_CLOCK_SLACK_MS: i64 = 1_000;

/// A value bound to a placeholder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Value {
    Text(String),
    Int(i64),
    /// A job id (TEXT on SQLite, `uuid` on PostgreSQL).
    Id(Uuid),
}

/// A statement and its values, in placeholder order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Sql {
    pub(crate) text: String,
    pub(crate) values: Vec<Value>,
}

/// What differs between the adapters' SQL.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Dialect {
    /// The `n`th placeholder (1-based): `?n` or `$n`.
    pub(crate) placeholder: fn(usize) -> String,
    /// Case-insensitive `LIKE`: `LIKE` (SQLite's ignores ASCII case) or `ILIKE`.
    pub(crate) ilike: &'static str,
}

impl Sql {
    fn bind(&mut self, d: Dialect, v: Value) -> String {
        self.values.push(v);
        (d.placeholder)(self.values.len())
    }
}

/// `text` as a `LIKE` pattern that matches it anywhere, with `\` escaping `%`, `_` and `\`.
pub(crate) fn contains_pattern(text: &str) -> String {
    let mut p = String::with_capacity(text.len() + 2);
    p.push('%');
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            p.push('\\');
        }
        p.push(c);
    }
    p.push('%');
    p
}

/// The smallest UUIDv7 of millisecond `ms` (clamped to UUIDv7's 48-bit range).
fn min_v7(ms: i64) -> Uuid {
    let ms = u64::try_from(ms.max(0)).unwrap_or(0).min((1 << 48) - 1);
    let mut b = [0u8; 16];
    b[..6].copy_from_slice(&ms.to_be_bytes()[2..]);
    b[6] = 0x70;
    b[8] = 0x80;
    Uuid::from_bytes(b)
}

/// One statement reading up to `fetch` jobs that match `f`, older than `before` (a page's
/// cursor), newest first, as [`JOB_COLUMNS`].
pub(crate) fn list_sql(d: Dialect, f: &JobFilter, before: Option<Uuid>, fetch: u32) -> Sql {
    let mut statuses: Vec<JobStatus> = f.statuses.clone();
    statuses.sort();
    statuses.dedup();
    // A queue alone reads its `(queue, status, id)` ranges, one per status.
    if statuses.is_empty()
        && f.queue.is_some()
        && f.correlation_id.is_none()
        && f.idempotency_key.is_none()
        && f.schedule.is_none()
    {
        statuses = JobStatus::ALL.to_vec();
    }
    let branches: Vec<Option<JobStatus>> = if statuses.is_empty() {
        vec![None]
    } else {
        statuses.into_iter().map(Some).collect()
    };
    let mut sql = Sql {
        text: String::with_capacity(512 * branches.len()),
        values: Vec::new(),
    };
    let union = branches.len() > 1;
    for (i, status) in branches.iter().enumerate() {
        if union {
            if i > 0 {
                sql.text.push_str(" UNION ALL ");
            }
            sql.text.push_str("SELECT * FROM (");
        }
        let mut conds: Vec<String> = Vec::new();
        if let Some(s) = status {
            let p = sql.bind(d, Value::Text(s.as_str().to_owned()));
            conds.push(format!("status = {p}"));
        }
        if let Some(q) = &f.queue {
            let p = sql.bind(d, Value::Text(q.clone()));
            conds.push(format!("queue = {p}"));
        }
        if let Some(id) = before {
            let p = sql.bind(d, Value::Id(id));
            conds.push(format!("id < {p}"));
        }
        if let Some(t) = f.created_after {
            let p = sql.bind(d, Value::Int(t));
            conds.push(format!("created_at >= {p}"));
        }
        if let Some(t) = f.created_before {
            let p = sql.bind(d, Value::Int(t));
            conds.push(format!("created_at < {p}"));
            let p = sql.bind(d, Value::Id(min_v7(t.saturating_add(ID_CLOCK_SLACK_MS))));
            conds.push(format!("id < {p}"));
        }
        if let Some(c) = &f.correlation_id {
            let p = sql.bind(d, Value::Text(c.clone()));
            conds.push(format!("correlation_id = {p}"));
        }
        if let Some(k) = &f.idempotency_key {
            let p = sql.bind(d, Value::Text(k.clone()));
            conds.push(format!("idempotency_key = {p}"));
        }
        if let Some(name) = &f.schedule {
            let p = sql.bind(d, Value::Text(name.clone()));
            conds.push(format!("schedule = {p}"));
        }
        if let Some(e) = &f.error_contains {
            let p = sql.bind(d, Value::Text(contains_pattern(e)));
            conds.push(format!(
                "last_error IS NOT NULL AND last_error {} {p} ESCAPE '\\'",
                d.ilike
            ));
        }
        sql.text.push_str("SELECT ");
        sql.text.push_str(JOB_COLUMNS);
        sql.text.push_str(" FROM jobs");
        if !conds.is_empty() {
            sql.text.push_str(" WHERE ");
            sql.text.push_str(&conds.join(" AND "));
        }
        let p = sql.bind(d, Value::Int(i64::from(fetch)));
        sql.text.push_str(&format!(" ORDER BY id DESC LIMIT {p}"));
        if union {
            sql.text.push_str(&format!(") AS b{i}"));
        }
    }
    if union {
        let p = sql.bind(d, Value::Int(i64::from(fetch)));
        sql.text.push_str(&format!(" ORDER BY id DESC LIMIT {p}"));
    }
    sql
}

#[cfg(test)]
mod tests {
    use super::*;

    const Q: Dialect = Dialect {
        placeholder: |n| format!("${n}"),
        ilike: "ILIKE",
    };

    #[test]
    fn a_cursor_reads_back_and_nothing_else_is_one() {
        use crate::store::Cursor;
        for _ in 0..100 {
            let c = Cursor::after(Uuid::now_v7());
            let text = c.encode();
            assert_eq!(text.len(), 23);
            assert!(text.starts_with('A'), "{text}");
            assert!("QRST".contains(&text[1..2]), "{text}");
            assert!("AEIMQUYcgkosw048".contains(&text[22..]), "{text}");
            assert_eq!(Cursor::decode(&text), Some(c));
        }
        for bad in [
            "",
            "0",
            "AQ",
            "not-a-cursor",
            "AgAAAAAAAAAAAAAAAAAAAAA",
            "AQAAAAAAAAAAAAAAAAAAAAB",
        ] {
            assert_eq!(Cursor::decode(bad), None, "{bad}");
        }
    }

    #[test]
    fn like_wildcards_are_plain_characters() {
        assert_eq!(contains_pattern("50%_a\\b"), "%50\\%\\_a\\\\b%");
    }

    #[test]
    fn the_smallest_v7_id_of_a_millisecond_sorts_before_every_id_made_then() {
        let id = Uuid::now_v7();
        let ms =
            i64::try_from(id.get_timestamp().map_or(0, |t| t.to_unix().0)).unwrap_or(0) * 1_000;
        assert!(min_v7(ms) <= id);
        assert!(min_v7(ms + 1_001) > id);
    }

    #[test]
    fn several_statuses_are_one_ordered_branch_each() {
        let f = JobFilter {
            statuses: vec![JobStatus::Dead, JobStatus::Queued, JobStatus::Dead],
            ..JobFilter::default()
        };
        let sql = list_sql(Q, &f, None, 51);
        assert_eq!(sql.text.matches("UNION ALL").count(), 1);
        assert_eq!(sql.values.len(), 5);
        let one = list_sql(Q, &JobFilter::default(), None, 51);
        assert_eq!(
            one.text,
            format!("SELECT {JOB_COLUMNS} FROM jobs ORDER BY id DESC LIMIT $1")
        );
        let queue = JobFilter {
            queue: Some("q".into()),
            ..JobFilter::default()
        };
        assert_eq!(
            list_sql(Q, &queue, None, 51)
                .text
                .matches("UNION ALL")
                .count(),
            5
        );
    }

    #[test]
    fn a_schedule_is_matched_exactly_and_with_a_queue_reads_its_own_index() {
        let f = JobFilter {
            schedule: Some("nightly".into()),
            ..JobFilter::default()
        };
        let sql = list_sql(Q, &f, None, 51);
        assert_eq!(
            sql.text,
            format!("SELECT {JOB_COLUMNS} FROM jobs WHERE schedule = $1 ORDER BY id DESC LIMIT $2")
        );
        assert_eq!(sql.values[0], Value::Text("nightly".into()));
        // With a queue, one `(schedule, id)` range rather than a branch per status.
        let with_queue = JobFilter {
            queue: Some("q".into()),
            ..f
        };
        assert_eq!(
            list_sql(Q, &with_queue, None, 51)
                .text
                .matches("UNION ALL")
                .count(),
            0
        );
    }
}
