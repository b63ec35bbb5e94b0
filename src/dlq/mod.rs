//! Operator tools for dead-letter queues: list, peek, drain to a file, replay a file, requeue,
//! purge (DESIGN §8, guarantee 7).
//!
//! The same tools work on [`UNROUTABLE`] (`warren.unroutable`), where delayed messages land
//! whose work queue was gone when their delay ended (see [`crate::delay`]): name it instead
//! of a queue. Each of its messages goes back to the work queue its routing key names, once
//! that queue is configured and declared again; those of other queues stay. Its jobs are
//! still `retrying` (or `queued`) in the store, not `dead`: a requeue leaves them so, and a
//! purge marks them `dead` and discarded.
//!
//! Every move is confirm-then-ack: a dead letter leaves `{queue}.dlq` only after its
//! destination holds it — the archive line written and `fsync`ed, or the broker's publisher
//! confirm for a republish. A crash in between leaves a copy in both places, never in
//! neither; the job id and the store's claim make running such a copy twice harmless.
//! Moves work in batches (a prefetch window at a time: one `fsync`, one multiple-ack, many
//! pipelined confirms), take at most the messages present when they started, and stop
//! between batches when asked to.

pub mod archive;
mod reader;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicGetOptions, BasicNackOptions};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub use archive::ArchiveLine;
use reader::Reader;

use crate::broker::Broker;
use crate::config::Config;
use crate::error::{Error, ErrorKind, Result};
use crate::publisher::Publisher;
use crate::store::{Store, now_ms};
use crate::topology::{DLX, dlq_name};

pub use crate::delay::UNROUTABLE;

/// Messages taken per batch (the consumer's prefetch window).
const BATCH: u16 = 500;

/// How long a peek waits for its requeued messages to be counted again (see
/// [`Dlq::await_requeued`]).
const REQUEUE_VISIBLE_WITHIN: Duration = Duration::from_secs(2);

/// Progress of a long move; the CLI draws a bar, the HTTP API ignores it.
pub trait Progress: Send + Sync {
    /// The move will handle about `total` messages.
    fn start(&self, total: u64);
    /// `n` more were handled.
    fn advance(&self, n: u64);
}

/// No progress reporting.
impl Progress for () {
    fn start(&self, _: u64) {}
    fn advance(&self, _: u64) {}
}

/// Which dead letters a requeue moves.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Only dead letters whose last error contains this text.
    pub error_contains: Option<String>,
    /// Only dead letters that failed at or after this time.
    pub failed_after: Option<SystemTime>,
    /// Only dead letters that failed before this time.
    pub failed_before: Option<SystemTime>,
    /// Only the dead letters of these jobs (by `message_id`); `None`: any job.
    pub ids: Option<std::collections::HashSet<Uuid>>,
}

impl Filter {
    /// True when `line` passes every condition that is set. A dead letter without a
    /// `failed_at` passes no time condition.
    pub fn matches(&self, line: &ArchiveLine) -> bool {
        if let Some(ids) = &self.ids
            && !line
                .message_id()
                .and_then(|m| Uuid::parse_str(m).ok())
                .is_some_and(|id| ids.contains(&id))
        {
            return false;
        }
        if let Some(text) = &self.error_contains
            && !line
                .last_error
                .as_deref()
                .is_some_and(|e| e.contains(text.as_str()))
        {
            return false;
        }
        if self.failed_after.is_none() && self.failed_before.is_none() {
            return true;
        }
        let Some(at) = line
            .failed_at
            .as_deref()
            .and_then(|t| humantime::parse_rfc3339_weak(t).ok())
        else {
            return false;
        };
        self.failed_after.is_none_or(|after| at >= after)
            && self.failed_before.is_none_or(|before| at < before)
    }
}

/// One DLQ's state for `warren dlq list`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DlqSummary {
    /// The work queue ([`UNROUTABLE`] for that queue's row).
    pub queue: String,
    /// Its DLQ, `{queue}.dlq` ([`UNROUTABLE`] for that queue's row).
    pub dlq: String,
    /// Dead letters waiting; `None` when the DLQ does not exist.
    pub depth: Option<u64>,
    /// When the oldest dead letter failed (RFC 3339), if known.
    pub oldest_failed_at: Option<String>,
    /// Its age in seconds.
    pub oldest_age_s: Option<u64>,
}

/// What a drain did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DrainReport {
    /// Dead letters moved to the file.
    pub moved: u64,
    /// The archive file.
    pub path: PathBuf,
    /// True when stopped early (Ctrl-C).
    pub interrupted: bool,
}

/// What a requeue or replay did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct MoveReport {
    /// Dead letters published to their work queue.
    pub moved: u64,
    /// Dead letters that did not match the filter and stay in the DLQ.
    pub kept: u64,
    /// Per work queue, how many were published.
    pub by_queue: BTreeMap<String, u64>,
    /// True when stopped early (Ctrl-C).
    pub interrupted: bool,
}

/// DLQ operations on one warren deployment. Built by [`crate::App::dlq`].
pub struct Dlq<'a> {
    pub(crate) config: &'a Config,
    pub(crate) broker: &'a Broker,
    pub(crate) publisher: &'a Publisher,
    pub(crate) store: &'a Arc<dyn Store>,
}

/// The broker queue a DLQ command on `queue` reads: `{queue}.dlq`, or [`UNROUTABLE`] itself.
pub fn held_in(queue: &str) -> String {
    if queue == UNROUTABLE {
        queue.to_owned()
    } else {
        dlq_name(queue)
    }
}

/// What a DLQ command reads: a work queue's `{queue}.dlq`, or [`UNROUTABLE`].
struct Source {
    /// The broker queue read.
    queue: String,
    /// The work queue every message is for; `None` for [`UNROUTABLE`], where each message's
    /// routing key names it.
    work_queue: Option<String>,
}

impl Source {
    /// The work queue `d` is for.
    fn destination<'d>(&'d self, d: &'d Delivery) -> &'d str {
        self.work_queue
            .as_deref()
            .unwrap_or_else(|| crate::delay::destination(d.routing_key.as_str()))
    }

    fn line(&self, d: &Delivery) -> ArchiveLine {
        ArchiveLine::from_message(self.destination(d), &d.properties, &d.data)
    }

    /// Exchange and routing key that put `d` back at the tail of this source.
    fn tail<'d>(&'d self, d: &'d Delivery) -> (&'d str, &'d str) {
        match &self.work_queue {
            Some(q) => (DLX, q.as_str()),
            None => (UNROUTABLE, d.routing_key.as_str()),
        }
    }
}

impl Dlq<'_> {
    fn check_queue(&self, queue: &str) -> Result<()> {
        if self.config.queue(queue).is_none() {
            return Err(Error::config(format!(
                "`{queue}` is not a configured queue"
            )));
        }
        Ok(())
    }

    /// The DLQ of configured queue `queue`, or [`UNROUTABLE`] itself.
    fn source(&self, queue: &str) -> Result<Source> {
        let work_queue = if queue == UNROUTABLE {
            None
        } else {
            self.check_queue(queue)?;
            Some(queue.to_owned())
        };
        Ok(Source {
            queue: held_in(queue),
            work_queue,
        })
    }

    /// Depth and oldest dead letter of every configured queue's DLQ.
    ///
    /// # Errors
    /// [`ErrorKind::BrokerUnavailable`] when the broker cannot be reached.
    pub async fn list(&self) -> Result<Vec<DlqSummary>> {
        let mut out = Vec::new();
        for name in self.config.queues.keys() {
            let dlq = dlq_name(name);
            let depth = depth(self.broker, &dlq).await?;
            let oldest = if depth.unwrap_or(0) > 0 {
                self.peek(name, 1).await?.into_iter().next()
            } else {
                None
            };
            let oldest_failed_at = oldest.as_ref().and_then(|l| l.failed_at.clone());
            let oldest_age_s = oldest_failed_at
                .as_deref()
                .and_then(|t| humantime::parse_rfc3339_weak(t).ok())
                .and_then(|t| SystemTime::now().duration_since(t).ok())
                .map(|d| d.as_secs());
            out.push(DlqSummary {
                queue: name.clone(),
                dlq,
                depth,
                oldest_failed_at,
                oldest_age_s,
            });
        }
        out.push(DlqSummary {
            queue: UNROUTABLE.to_owned(),
            dlq: UNROUTABLE.to_owned(),
            depth: depth(self.broker, UNROUTABLE).await?,
            oldest_failed_at: None,
            oldest_age_s: None,
        });
        Ok(out)
    }

    /// Up to `n` dead letters from the head of `queue`'s DLQ (or of [`UNROUTABLE`]), left in
    /// place (taken unacked, then returned to the head).
    ///
    /// # Errors
    /// An unknown queue; [`ErrorKind::BrokerUnavailable`].
    pub async fn peek(&self, queue: &str, n: usize) -> Result<Vec<ArchiveLine>> {
        let source = self.source(queue)?;
        let channel = self.broker.channel().await?;
        let dlq = source.queue.clone();
        let mut lines = Vec::new();
        let mut last_tag = None;
        let mut depth_before = 0;
        while lines.len() < n {
            let Some(msg) = channel
                .basic_get(dlq.as_str().into(), BasicGetOptions { no_ack: false })
                .await?
            else {
                break;
            };
            if last_tag.is_none() {
                depth_before = u64::from(msg.message_count) + 1;
            }
            let d = msg.delivery;
            last_tag = Some(d.delivery_tag);
            lines.push(source.line(&d));
        }
        if let Some(tag) = last_tag {
            channel
                .basic_nack(
                    tag,
                    BasicNackOptions {
                        multiple: true,
                        requeue: true,
                    },
                )
                .await?;
        }
        let _ = channel.close(200, "peeked".into()).await;
        if last_tag.is_some() {
            self.await_requeued(&dlq, depth_before).await?;
        }
        Ok(lines)
    }

    /// Waits (at most [`REQUEUE_VISIBLE_WITHIN`]) until `dlq` holds at least `depth` messages
    /// again. A requeue (`basic.nack` with requeue) has no reply in AMQP 0-9-1, and a quorum
    /// queue applies it through its Raft log, so for a moment after a peek the returned
    /// messages are not yet counted or visible to a purge. Waiting here gives the caller
    /// read-your-writes: a peek followed at once by a purge or a depth check sees them all.
    /// A concurrent consumer of the DLQ can keep the depth below `depth`; then this returns
    /// at the deadline without error.
    async fn await_requeued(&self, dlq: &str, depth: u64) -> Result<()> {
        let deadline = tokio::time::Instant::now() + REQUEUE_VISIBLE_WITHIN;
        while tokio::time::Instant::now() < deadline {
            if self::depth(self.broker, dlq).await?.unwrap_or(0) >= depth {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    }

    /// Moves dead letters of `queue` (or the messages of [`UNROUTABLE`]) into the JSON Lines
    /// file `path` (created; it must not exist), at most `limit` and at most those present at
    /// the start. Each batch of lines is written and `fsync`ed before its messages are acked.
    ///
    /// # Errors
    /// An unknown queue, a file that exists or cannot be written, a broker failure. Lines
    /// already fsynced stay in the file and their messages are acked; the rest stay in the
    /// DLQ.
    pub async fn drain(
        &self,
        queue: &str,
        path: &Path,
        limit: Option<u64>,
        progress: &dyn Progress,
        stop: &CancellationToken,
    ) -> Result<DrainReport> {
        let source = self.source(queue)?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
            .map_err(|e| {
                Error::from(ErrorKind::Io(std::io::Error::new(
                    e.kind(),
                    format!("cannot create {}: {e}", path.display()),
                )))
            })?;
        let mut out = BufWriter::with_capacity(1 << 20, file);
        let mut reader = Reader::open(self.broker, &source.queue, BATCH, limit).await?;
        progress.start(reader.total());
        let mut moved = 0;
        let mut interrupted = false;
        loop {
            if stop.is_cancelled() {
                interrupted = true;
                break;
            }
            let batch = reader.next_batch(usize::from(BATCH)).await?;
            let Some(last) = batch.last().map(|d| d.delivery_tag) else {
                break;
            };
            for d in &batch {
                serde_json::to_writer(&mut out, &source.line(d))
                    .map_err(|e| Error::from(std::io::Error::other(e)))?;
                out.write_all(b"\n")?;
            }
            out.flush()?;
            out.get_ref().sync_data()?;
            // Every line of the batch is on disk: ack the batch in one go.
            reader
                .channel()
                .basic_ack(last, BasicAckOptions { multiple: true })
                .await?;
            moved += batch.len() as u64;
            progress.advance(batch.len() as u64);
        }
        reader.close().await;
        Ok(DrainReport {
            moved,
            path: path.to_path_buf(),
            interrupted,
        })
    }

    /// Publishes every line of the archive `path` back to its work queue (or to `queue` for
    /// all lines) as a fresh job: same id, attempts reset, status back to `queued`. The whole
    /// file is validated first; with `dry_run` nothing is published.
    ///
    /// # Errors
    /// [`ErrorKind::Config`] naming `FILE:LINE` for the first broken lines (nothing is
    /// published then); broker failures (lines before the failure are published; replaying
    /// the file again is safe: a job that already succeeded is not run twice).
    pub async fn replay(
        &self,
        path: &Path,
        queue: Option<&str>,
        dry_run: bool,
        progress: &dyn Progress,
        stop: &CancellationToken,
    ) -> Result<MoveReport> {
        let lines = self.read_archive(path, queue)?;
        let mut report = MoveReport::default();
        for l in &lines {
            *report
                .by_queue
                .entry(queue.unwrap_or(&l.queue).to_owned())
                .or_default() += 1;
        }
        if dry_run {
            return Ok(report);
        }
        progress.start(lines.len() as u64);
        for chunk in lines.chunks(usize::from(BATCH)) {
            if stop.is_cancelled() {
                report.interrupted = true;
                break;
            }
            let items: Vec<(&ArchiveLine, &str)> = chunk
                .iter()
                .map(|l| (l, queue.unwrap_or(&l.queue)))
                .collect();
            let results = self.republish(&items, true).await?;
            let failed = results.iter().filter(|r| r.is_err()).count();
            if let Some(Err(e)) = results.into_iter().find(Result::is_err) {
                report.moved += (chunk.len() - failed) as u64;
                return Err(Error::from(ErrorKind::BrokerUnavailable(format!(
                    "replay stopped after {} job(s): {e}",
                    report.moved
                ))));
            }
            report.moved += chunk.len() as u64;
            progress.advance(chunk.len() as u64);
        }
        Ok(report)
    }

    /// Reads and validates an archive file; `queue` overrides every line's queue.
    fn read_archive(&self, path: &Path, queue: Option<&str>) -> Result<Vec<ArchiveLine>> {
        let file = File::open(path)
            .map_err(|e| Error::config(format!("cannot read {}: {e}", path.display())))?;
        let mut lines = Vec::new();
        let mut problems = Vec::new();
        for (i, text) in BufReader::new(file).lines().enumerate() {
            let n = i + 1;
            let text = match text {
                Ok(t) => t,
                Err(e) => {
                    problems.push(format!("{}:{n}: {e}", path.display()));
                    continue;
                }
            };
            if text.trim().is_empty() {
                continue;
            }
            match ArchiveLine::parse(&text) {
                Ok(line) => {
                    let target = queue.unwrap_or(&line.queue);
                    if self.config.queue(target).is_none() {
                        problems.push(format!(
                            "{}:{n}: `{target}` is not a configured queue",
                            path.display()
                        ));
                    }
                    lines.push(line);
                }
                Err(e) => problems.push(format!("{}:{n}: {e}", path.display())),
            }
            if problems.len() >= 10 {
                break;
            }
        }
        if !problems.is_empty() {
            return Err(Error::config(format!(
                "{} is not a valid DLQ archive; nothing was published:\n  {}",
                path.display(),
                problems.join("\n  ")
            )));
        }
        Ok(lines)
    }

    /// Moves dead letters of `queue` straight back to the work queue (confirm, then ack),
    /// those matching `filter`, at most `limit`. Non-matching ones are republished to the
    /// DLQ's tail (confirm, then ack) so the scan ends. For [`UNROUTABLE`], each message goes
    /// to the work queue it is for when that queue is configured; the others stay.
    ///
    /// # Errors
    /// An unknown queue; broker or store failures (what was confirmed stays moved, the rest
    /// stays in the DLQ).
    pub async fn requeue(
        &self,
        queue: &str,
        filter: &Filter,
        limit: Option<u64>,
        progress: &dyn Progress,
        stop: &CancellationToken,
    ) -> Result<MoveReport> {
        self.requeue_where(queue, &|l| filter.matches(l), limit, progress, stop)
            .await
    }

    /// [`Dlq::requeue`] of the dead letters for which `matches` is true (e.g. those of chosen
    /// job ids, as the dashboard's "requeue selected" does).
    ///
    /// # Errors
    /// As [`Dlq::requeue`].
    pub async fn requeue_where(
        &self,
        queue: &str,
        matches: &(dyn Fn(&ArchiveLine) -> bool + Sync),
        limit: Option<u64>,
        progress: &dyn Progress,
        stop: &CancellationToken,
    ) -> Result<MoveReport> {
        let source = self.source(queue)?;
        let mut reader = Reader::open(self.broker, &source.queue, BATCH, None).await?;
        progress.start(reader.total());
        let mut report = MoveReport::default();
        let mut remaining = limit.unwrap_or(u64::MAX);
        loop {
            if stop.is_cancelled() {
                report.interrupted = true;
                break;
            }
            let batch = reader.next_batch(usize::from(BATCH)).await?;
            if batch.is_empty() {
                break;
            }
            let lines: Vec<ArchiveLine> = batch.iter().map(|d| source.line(d)).collect();
            let mut moving = Vec::new();
            let mut keeping = Vec::new();
            for (d, l) in batch.iter().zip(&lines) {
                if remaining > 0 && self.config.queue(&l.queue).is_some() && matches(l) {
                    remaining -= 1;
                    moving.push((d, l));
                } else {
                    keeping.push(d);
                }
            }
            let items: Vec<(&ArchiveLine, &str)> =
                moving.iter().map(|(_, l)| (*l, l.queue.as_str())).collect();
            let moved = self.republish(&items, source.work_queue.is_some()).await?;
            let kept = futures::future::join_all(keeping.iter().map(|d| {
                let (exchange, key) = source.tail(d);
                self.publisher
                    .publish(exchange, key, &d.data, d.properties.clone(), &source.queue)
            }))
            .await;
            let outcomes = moving
                .iter()
                .map(|(d, _)| *d)
                .zip(moved)
                .chain(keeping.iter().copied().zip(kept));
            let mut failure = None;
            for (d, result) in outcomes {
                match result {
                    Ok(()) => {
                        d.acker.ack(BasicAckOptions::default()).await?;
                    }
                    Err(e) => {
                        d.acker
                            .nack(BasicNackOptions {
                                multiple: false,
                                requeue: true,
                            })
                            .await?;
                        failure.get_or_insert(e);
                    }
                }
            }
            if let Some(e) = failure {
                reader.close().await;
                return Err(e);
            }
            report.moved += moving.len() as u64;
            report.kept += keeping.len() as u64;
            for (_, l) in &moving {
                *report.by_queue.entry(l.queue.clone()).or_default() += 1;
            }
            progress.advance(batch.len() as u64);
        }
        reader.close().await;
        Ok(report)
    }

    /// Publishes dead letters as fresh jobs to their queues through the enqueue path's
    /// [`crate::enqueue::Enqueuer::revive`]: revive, publish with confirms, and with `dead`,
    /// a job whose publish failed goes back to `dead`.
    async fn republish(
        &self,
        items: &[(&ArchiveLine, &str)],
        dead: bool,
    ) -> Result<Vec<Result<()>>> {
        let revivals: Vec<crate::enqueue::Revival> = items
            .iter()
            .map(|(line, queue)| crate::enqueue::Revival {
                id: line.message_id().and_then(|m| Uuid::parse_str(m).ok()),
                queue: (*queue).to_owned(),
                body: line.body(),
                properties: line.replay_properties(queue),
                last_error: line.last_error.clone(),
            })
            .collect();
        crate::enqueue::Enqueuer {
            store: &**self.store,
            publisher: self.publisher,
            confirm_timeout: self.config.broker.confirm_timeout,
        }
        .revive(&revivals, dead)
        .await
    }

    /// Removes the dead letters of `queue` present at the start (at most `limit`), marking
    /// their jobs discarded in the store; returns how many. From [`UNROUTABLE`], the jobs
    /// (still `retrying` or `queued`) are first marked `dead`.
    ///
    /// # Errors
    /// An unknown queue; broker or store failures (what was acked is gone, the rest stays).
    pub async fn purge(
        &self,
        queue: &str,
        limit: Option<u64>,
        progress: &dyn Progress,
        stop: &CancellationToken,
    ) -> Result<u64> {
        let source = self.source(queue)?;
        let mut reader = Reader::open(self.broker, &source.queue, BATCH, limit).await?;
        progress.start(reader.total());
        let mut purged = 0;
        while !stop.is_cancelled() {
            let batch: Vec<Delivery> = reader.next_batch(usize::from(BATCH)).await?;
            let Some(last) = batch.last().map(|d| d.delivery_tag) else {
                break;
            };
            let ids: Vec<Uuid> = batch
                .iter()
                .filter_map(|d| d.properties.message_id().as_ref())
                .filter_map(|m| Uuid::parse_str(m.as_str()).ok())
                .collect();
            let now = now_ms();
            if source.work_queue.is_none() {
                for id in &ids {
                    self.store
                        .dead(
                            *id,
                            "purged from warren.unroutable: its work queue was gone",
                            now,
                        )
                        .await?;
                }
            }
            self.store.discard(&ids, now).await?;
            reader
                .channel()
                .basic_ack(last, BasicAckOptions { multiple: true })
                .await?;
            purged += batch.len() as u64;
            progress.advance(batch.len() as u64);
        }
        reader.close().await;
        Ok(purged)
    }
}

/// Messages in `queue`, or `None` when it does not exist.
async fn depth(broker: &Broker, queue: &str) -> Result<Option<u64>> {
    Ok(crate::topology::inspect(broker, queue)
        .await?
        .messages
        .map(u64::from))
}

/// The default archive path for a drain of `queue` started now:
/// `dlq/<queue>-<UTC timestamp, basic ISO 8601>.jsonl`.
pub fn default_archive_path(dir: &Path, queue: &str) -> PathBuf {
    let stamp = humantime::format_rfc3339_seconds(SystemTime::now())
        .to_string()
        .replace(['-', ':'], "");
    dir.join(format!("{queue}-{stamp}.jsonl"))
}
