//! Acting on many jobs at once (DESIGN §3): cancel jobs, or requeue dead jobs, chosen by id
//! or by the job search's filters. The one implementation behind `POST /v1/jobs/cancel`,
//! `POST /v1/jobs/requeue` and `warren jobs cancel`.
//!
//! - **Cancel** changes only `queued` and `retrying` jobs, as a single cancel does
//!   ([`crate::store::JobStore::cancel`]); their messages stay in the broker and are acked
//!   and skipped when delivered (a claim of a cancelled job answers `Final`). A filter is
//!   worked through page by page ([`BATCH`] jobs each, one statement per page), taking the
//!   jobs that matched when it started: jobs created meanwhile are newer than the first page.
//! - **Requeue** moves the dead letters of the chosen `dead` jobs back to their work queues
//!   through the DLQ tools' move ([`crate::dlq::Dlq::requeue`], confirm then ack: a dead
//!   letter is acked in its DLQ only after the work queue's copy is confirmed), one scan of
//!   each queue's DLQ. A job whose dead letter is not in its DLQ (purged, drained, or its
//!   queue no longer configured) is counted as not requeued.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::dlq::{Dlq, Filter};
use crate::error::Result;
use crate::store::{JobFilter, JobStatus, Store};

/// Most ids one request names (`{"ids": [...]}`, `warren jobs cancel --id`).
pub const MAX_IDS: usize = 1_000;

/// Jobs per page when a filter is worked through.
pub const BATCH: u32 = 500;

/// Which jobs a bulk action takes: these ids, or every job the filter matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// These jobs (at most [`MAX_IDS`]; repeats count once, unknown ids count as not
    /// changed).
    Ids(Vec<Uuid>),
    /// Every job matching the filter when the action starts.
    Filter(JobFilter),
}

/// What a bulk cancel did (or, dry, would do).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct CancelReport {
    /// Jobs cancelled (`queued` or `retrying` before).
    pub cancelled: u64,
    /// Jobs chosen that were not cancelled: running or finished, or (for ids) unknown.
    pub not_cancellable: u64,
}

/// What a bulk requeue did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct RequeueReport {
    /// Dead jobs whose dead letters moved back to their work queues (`queued` again).
    pub requeued: u64,
    /// Jobs chosen that were not requeued: not `dead`, unknown, or without a dead letter in
    /// their DLQ (purged or drained).
    pub not_requeued: u64,
}

fn dedup(ids: &[Uuid]) -> Vec<Uuid> {
    let mut seen = HashSet::with_capacity(ids.len());
    ids.iter().copied().filter(|id| seen.insert(*id)).collect()
}

fn cancellable(s: JobStatus) -> bool {
    matches!(s, JobStatus::Queued | JobStatus::Retrying)
}

/// Cancels the `queued` and `retrying` jobs of `selection` (`now`: ms); with `dry_run`
/// changes nothing and answers what it would do.
///
/// # Errors
/// [`crate::ErrorKind::Store`] when the store fails; pages cancelled before stay cancelled.
pub async fn cancel(
    store: &dyn Store,
    selection: &Selection,
    now: i64,
    dry_run: bool,
) -> Result<CancelReport> {
    let mut report = CancelReport::default();
    match selection {
        Selection::Ids(ids) => {
            let ids = dedup(ids);
            let done = if dry_run {
                let mut n = 0;
                for id in &ids {
                    if store.get(*id).await?.is_some_and(|r| cancellable(r.status)) {
                        n += 1;
                    }
                }
                n
            } else {
                store.cancel_many(&ids, now).await?.len() as u64
            };
            report.cancelled = done;
            report.not_cancellable = ids.len() as u64 - done;
        }
        Selection::Filter(filter) => {
            // Page by page, newest first, from the jobs present at the start.
            let mut after = None;
            loop {
                let page = store.list(filter, after, BATCH).await?;
                let ids: Vec<Uuid> = page
                    .jobs
                    .iter()
                    .filter(|j| cancellable(j.status))
                    .map(|j| j.id)
                    .collect();
                let done = if dry_run || ids.is_empty() {
                    ids.len() as u64
                } else {
                    store.cancel_many(&ids, now).await?.len() as u64
                };
                report.cancelled += done;
                report.not_cancellable += page.jobs.len() as u64 - done;
                match page.next_cursor {
                    Some(c) => after = Some(c),
                    None => break,
                }
            }
        }
    }
    Ok(report)
}

/// Moves the dead letters of the `dead` jobs of `selection` back to their work queues (see
/// the module docs). A filter takes the `dead` jobs it matches: one whose `statuses` leave
/// out `dead` chooses none.
///
/// # Errors
/// Store and broker failures (what was confirmed stays moved, the rest stays in the DLQ).
pub async fn requeue(
    dlq: &Dlq<'_>,
    store: &Arc<dyn Store>,
    selection: &Selection,
) -> Result<RequeueReport> {
    let (chosen, by_queue) = dead_chosen(store, selection).await?;
    let mut requeued = 0;
    for (queue, ids) in by_queue {
        if dlq.config.queue(&queue).is_none() {
            continue;
        }
        let want = ids.len() as u64;
        let filter = Filter {
            ids: Some(ids),
            ..Filter::default()
        };
        let report = dlq
            .requeue(&queue, &filter, Some(want), &(), &CancellationToken::new())
            .await?;
        requeued += report.moved;
    }
    Ok(RequeueReport {
        requeued,
        not_requeued: chosen.saturating_sub(requeued),
    })
}

/// What [`requeue`] would take, without touching the broker: `requeued` counts the `dead`
/// jobs of `selection` whose dead letters were not purged (each should still be in its DLQ,
/// unless drained elsewhere), `not_requeued` the rest chosen.
///
/// # Errors
/// [`crate::ErrorKind::Store`] when the store fails.
pub async fn requeue_dry_run(
    store: &Arc<dyn Store>,
    selection: &Selection,
) -> Result<RequeueReport> {
    let (chosen, by_queue) = dead_chosen(store, selection).await?;
    let requeued = by_queue.values().map(|ids| ids.len() as u64).sum();
    Ok(RequeueReport {
        requeued,
        not_requeued: chosen.saturating_sub(requeued),
    })
}

/// How many jobs `selection` chooses, and its `dead` jobs whose dead letters were not purged,
/// by queue.
async fn dead_chosen(
    store: &Arc<dyn Store>,
    selection: &Selection,
) -> Result<(u64, BTreeMap<String, HashSet<Uuid>>)> {
    let mut by_queue: BTreeMap<String, HashSet<Uuid>> = BTreeMap::new();
    let chosen: u64;
    match selection {
        Selection::Ids(ids) => {
            let ids = dedup(ids);
            chosen = ids.len() as u64;
            for id in ids {
                if let Some(r) = store.get(id).await?
                    && r.status == JobStatus::Dead
                    && r.discarded_at.is_none()
                {
                    by_queue.entry(r.queue).or_default().insert(id);
                }
            }
        }
        Selection::Filter(filter) => {
            if !filter.statuses.is_empty() && !filter.statuses.contains(&JobStatus::Dead) {
                return Ok((0, by_queue));
            }
            let filter = JobFilter {
                statuses: vec![JobStatus::Dead],
                ..filter.clone()
            };
            let mut n = 0;
            let mut after = None;
            loop {
                let page = store.list(&filter, after, BATCH).await?;
                n += page.jobs.len() as u64;
                for j in page.jobs.into_iter().filter(|j| j.discarded_at.is_none()) {
                    by_queue.entry(j.queue).or_default().insert(j.id);
                }
                match page.next_cursor {
                    Some(c) => after = Some(c),
                    None => break,
                }
            }
            chosen = n;
        }
    }
    Ok((chosen, by_queue))
}
