//! Group commit: many concurrent writes, one statement and one commit.
//!
//! Callers [`Batcher::submit`] a request and await its answer; one writer task takes every
//! request waiting (up to [`GROUP_COMMIT_MAX`]) and hands them to a write function as one
//! batch, which answers each in order. Under load many requests share a round trip and a
//! commit; alone, a request is a batch of one (the writer waits for no timer, it only lets the
//! tasks that are ready run first: [`join_ready`]). The same for every adapter: the batching
//! sits above the SQL.

use std::future::Future;

use tokio::sync::{mpsc, oneshot};

use crate::error::Result;
use crate::store::StoreErrorKind;

/// Most requests one batch takes.
pub(crate) const GROUP_COMMIT_MAX: usize = 256;

type Queued<Req, Resp> = (Req, oneshot::Sender<Result<Resp>>);

/// The sending side of a group commit; cheap to clone. The writer task ends when the last
/// clone is dropped.
#[derive(Debug)]
pub(crate) struct Batcher<Req, Resp> {
    queue: mpsc::Sender<Queued<Req, Resp>>,
    /// Which writer this is (`intake`, `worker`), for errors and the batch-size histogram.
    name: &'static str,
}

impl<Req, Resp> Clone for Batcher<Req, Resp> {
    fn clone(&self) -> Self {
        Self {
            queue: self.queue.clone(),
            name: self.name,
        }
    }
}

impl<Req: Send + 'static, Resp: Send + 'static> Batcher<Req, Resp> {
    /// Starts the writer task. `write` gets each batch (1 to [`GROUP_COMMIT_MAX`] requests,
    /// in arrival order) and must answer every request, in the same order; a batch's size is
    /// recorded in `warren_store_write_batch_size{writer=name}`.
    pub(crate) fn start<F, Fut>(name: &'static str, mut write: F) -> Self
    where
        F: FnMut(Vec<Req>) -> Fut + Send + 'static,
        Fut: Future<Output = Vec<Result<Resp>>> + Send,
    {
        let (queue, mut queued) = mpsc::channel::<Queued<Req, Resp>>(4 * GROUP_COMMIT_MAX);
        tokio::spawn(async move {
            let mut batch = Vec::with_capacity(GROUP_COMMIT_MAX);
            while queued.recv_many(&mut batch, GROUP_COMMIT_MAX).await > 0 {
                join_ready(&mut queued, &mut batch).await;
                metrics::histogram!(crate::telemetry::STORE_WRITE_BATCH, "writer" => name)
                    .record(batch.len() as f64);
                let (requests, replies): (Vec<Req>, Vec<_>) = batch.drain(..).unzip();
                let answers = write(requests).await;
                debug_assert_eq!(answers.len(), replies.len(), "one answer per request");
                for (reply, answer) in replies.into_iter().zip(answers) {
                    let _ = reply.send(answer);
                }
            }
        });
        Self { queue, name }
    }

    /// Queues `req` for the next batch and waits for its answer.
    ///
    /// # Errors
    /// The write's own answer; [`StoreErrorKind::Unavailable`] when the writer task has
    /// stopped (the runtime is shutting down).
    pub(crate) async fn submit(&self, req: Req) -> Result<Resp> {
        let gone = || {
            crate::Error::store_kind(
                StoreErrorKind::Unavailable,
                format!("the store's {} writer has stopped", self.name),
            )
        };
        let (reply, answer) = oneshot::channel();
        self.queue.send((req, reply)).await.map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }
}

/// Before a group commit of fewer than [`GROUP_COMMIT_MAX`] writes, lets the tasks that are
/// ready to run go first (one `yield_now`, which tokio defers until it has polled for I/O)
/// and takes what they queue meanwhile into `batch`. Under load those are requests about to
/// queue writes of their own, and joining this commit costs them far less than a commit of
/// their own; idle, it costs one pass of the scheduler.
pub(crate) async fn join_ready<T>(queued: &mut mpsc::Receiver<T>, batch: &mut Vec<T>) {
    if batch.len() >= GROUP_COMMIT_MAX {
        return;
    }
    tokio::task::yield_now().await;
    while batch.len() < GROUP_COMMIT_MAX {
        match queued.try_recv() {
            Ok(item) => batch.push(item),
            Err(_) => break,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes queued by tasks that were ready to run when a batch began join that batch
    /// instead of waiting for a commit of their own.
    #[tokio::test(flavor = "current_thread")]
    async fn writes_of_tasks_ready_at_the_start_of_a_batch_join_it() {
        let (tx, mut queued) = mpsc::channel(16);
        tx.send(0).await.expect("queue the first write");
        for i in 1..4 {
            let tx = tx.clone();
            // Ready, but on this one-thread runtime not run until the writer yields.
            tokio::spawn(async move { tx.send(i).await.expect("queue a write") });
        }
        let mut batch = Vec::new();
        queued.recv_many(&mut batch, GROUP_COMMIT_MAX).await;
        assert_eq!(batch, [0], "only the first write was queued yet");
        join_ready(&mut queued, &mut batch).await;
        assert_eq!(
            batch,
            [0, 1, 2, 3],
            "the ready tasks' writes join the batch"
        );
    }

    /// Concurrent submissions share batches, and each gets its own answer.
    #[tokio::test(flavor = "current_thread")]
    async fn concurrent_submissions_share_a_batch_and_get_their_own_answers() {
        let sizes = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = sizes.clone();
        let batcher = Batcher::start("test", move |reqs: Vec<u32>| {
            if let Ok(mut s) = seen.lock() {
                s.push(reqs.len());
            }
            async move { reqs.into_iter().map(|r| Ok(r * 10)).collect() }
        });
        let answers = futures::future::join_all((0..50).map(|i| {
            let b = batcher.clone();
            async move { b.submit(i).await.expect("answer") }
        }))
        .await;
        assert_eq!(answers, (0..50).map(|i| i * 10).collect::<Vec<_>>());
        let sizes = sizes.lock().map(|s| s.clone()).unwrap_or_default();
        assert_eq!(sizes.iter().sum::<usize>(), 50);
        assert!(sizes.len() < 50, "no batching happened: {sizes:?}");
    }
}
