//! Moving a deployment's jobs from one store to another (`warren store copy`), e.g. from the
//! embedded SQLite file to PostgreSQL when warren grows to several hosts.
//!
//! Rows travel whole (status, attempts, results, idempotency keys, leases) in id order, a
//! page per transaction. UUIDv7 ids sort by creation time, so after an interruption the
//! destination holds a prefix of the source, and the copy resumes after the destination's
//! last id; a row already present is skipped. At the end the counts by queue and status of
//! both stores are compared. Stop every warren process on the source first: rows written
//! during the copy may be missed, and the check says so.

use std::collections::BTreeMap;

use tokio_util::sync::CancellationToken;

use super::Store;
use crate::dlq::Progress;
use crate::error::Result;

/// Rows a page holds by default.
pub const DEFAULT_PAGE: u32 = 2_000;

/// What a copy did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct CopyReport {
    /// Rows read from the source in this run.
    pub read: u64,
    /// Rows the destination did not have.
    pub inserted: u64,
    /// True when the destination already held rows and the copy went on after its last one.
    pub resumed: bool,
    /// True when `stop` ended the copy before the last page.
    pub stopped: bool,
    /// Counts (queue → status → jobs) that differ between source and destination after the
    /// copy: (source, destination). Empty when they agree.
    pub mismatches: BTreeMap<String, BTreeMap<String, (u64, u64)>>,
}

impl CopyReport {
    /// True when the copy ran to its end and both stores hold the same jobs by queue and
    /// status.
    pub fn complete(&self) -> bool {
        !self.stopped && self.mismatches.is_empty()
    }
}

/// Copies every job of `from` into `to`, `page` rows at a time, reporting to `progress`;
/// stops after the current page when `stop` is cancelled. See the module docs.
///
/// # Errors
/// [`crate::ErrorKind::Store`] when either store fails; what was copied stays copied, and
/// running the copy again resumes it.
pub async fn copy(
    from: &dyn Store,
    to: &dyn Store,
    page: u32,
    progress: &dyn Progress,
    stop: &CancellationToken,
) -> Result<CopyReport> {
    let total = from.status().await?.total;
    let mut report = CopyReport::default();
    let mut after = to.last_id().await?;
    report.resumed = after.is_some();
    let already = if report.resumed {
        to.status().await?.total
    } else {
        0
    };
    progress.start(total);
    progress.advance(already.min(total));
    loop {
        if stop.is_cancelled() {
            report.stopped = true;
            return Ok(report);
        }
        let rows = from.export(after, page.max(1)).await?;
        let Some(last) = rows.last() else { break };
        after = Some(last.record.id);
        report.read += rows.len() as u64;
        report.inserted += to.import(&rows).await?;
        progress.advance(rows.len() as u64);
    }
    let (source, destination) = (from.status().await?, to.status().await?);
    let queues: std::collections::BTreeSet<&String> = source
        .counts
        .keys()
        .chain(destination.counts.keys())
        .collect();
    for queue in queues {
        let empty = BTreeMap::new();
        let s = source.counts.get(queue).unwrap_or(&empty);
        let d = destination.counts.get(queue).unwrap_or(&empty);
        let statuses: std::collections::BTreeSet<&String> = s.keys().chain(d.keys()).collect();
        for status in statuses {
            let (a, b) = (
                s.get(status).copied().unwrap_or(0),
                d.get(status).copied().unwrap_or(0),
            );
            if a != b {
                report
                    .mismatches
                    .entry(queue.clone())
                    .or_default()
                    .insert(status.clone(), (a, b));
            }
        }
    }
    Ok(report)
}
