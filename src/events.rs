//! Finished jobs, announced on the broker (DESIGN §3, `?wait=`): the wire between the process
//! that records a job's final state and every process that waits for it.
//!
//! - **Announcing.** Whoever records a job as `succeeded`, `dead` or `cancelled` in the store
//!   (a worker, a cancel over HTTP or from the CLI) then publishes one tiny message to the
//!   topic exchange [`EVENTS_EXCHANGE`] with routing key = the job id and the final status as
//!   its body ([`Announcer`]). It is not persistent, not mandatory and not confirmed: with no
//!   one waiting for the job no queue is bound to its key and the broker drops it at once,
//!   and a lost announcement costs a waiter time, never a wrong answer (the waiter re-reads
//!   the store when its wait ends). A success is announced only when the job is *watched*:
//!   a waiter marks it in the store ([`crate::store::JobStore::watch`]) before it reads it,
//!   and the worker's success write answers whether the mark was there, so the jobs nobody
//!   waits for (nearly all) cost the broker no announcement and the job no extra hand-off
//!   to the connection's I/O thread. Deaths and cancels, rare, are always announced.
//! - **Listening.** Each process with waiters (an intake, `warren job ID --wait`) runs one
//!   [`Waiters`] listener: an exclusive, auto-delete, server-named queue of its own, bound to
//!   [`EVENTS_EXCHANGE`] with the id of each job somebody waits for, and only while somebody
//!   does (the binding is in place before the waiter reads the store, so a job that finishes
//!   between the read and the wait still wakes it). An announcement wakes that job's local
//!   waiters; nothing polls the store per waiting request. When the listener's connection
//!   is lost (a broker node failed) it declares a new queue, binds every id waited for and
//!   wakes every waiter to re-read the store once, since announcements may have been lost
//!   meanwhile.
//!
//! A topic exchange with a binding per waited-for job costs nothing for the jobs nobody
//! waits for (BENCHMARKS.md, "Waiting for a result"): a fanout to every intake would deliver
//! every finished job to every intake.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::StreamExt as _;
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, ExchangeKind};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use crate::broker::{Broker, bounded};
use crate::error::{ErrorKind, Result};
use crate::store::{JobRecord, JobStatus, Store};

/// The topic exchange finished jobs are announced on: routing key = the job id (hyphenated
/// UUID), body = the final status (`succeeded`, `dead`, `cancelled`).
pub const EVENTS_EXCHANGE: &str = "warren.events";

/// How long one announcement may take to hand to the broker (ms: 2,000) before it is given
/// up: a broker in trouble must not hold up the job path that announces.
const ANNOUNCE_TIMEOUT: Duration = Duration::from_secs(2);

/// The longest pause between two attempts of the listener to reconnect (ms: 5,000), as the
/// consumers' (`crate::consumer`).
const RECONNECT_MAX_DELAY: Duration = Duration::from_secs(5);

/// Declares [`EVENTS_EXCHANGE`] (topic, durable) on `channel`.
///
/// # Errors
/// The broker's refusal (an exchange of that name with another type) or a lost channel.
pub(crate) async fn declare(channel: &Channel) -> Result<()> {
    channel
        .exchange_declare(
            EVENTS_EXCHANGE.into(),
            ExchangeKind::Topic,
            ExchangeDeclareOptions {
                durable: true,
                ..ExchangeDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
    Ok(())
}

/// Publishes finished jobs to [`EVENTS_EXCHANGE`] on a channel of its own (not in confirm
/// mode), opened on first use and replaced when it closes. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct Announcer {
    broker: Broker,
    channel: Mutex<Option<Channel>>,
    opening: tokio::sync::Mutex<()>,
}

impl Announcer {
    /// An announcer on `broker` (connects lazily).
    pub fn new(broker: Broker) -> Self {
        Self {
            broker,
            channel: Mutex::new(None),
            opening: tokio::sync::Mutex::new(()),
        }
    }

    /// Announces that job `id` is now `status` (call once the store holds it). Never fails:
    /// an announcement that cannot be sent within 2,000 ms is logged at debug level and
    /// dropped (its waiters answer when their wait ends).
    pub async fn announce(&self, id: Uuid, status: JobStatus) {
        self.announce_all(&[id], status).await;
    }

    /// [`Announcer::announce`] for each of `ids`.
    pub async fn announce_all(&self, ids: &[Uuid], status: JobStatus) {
        if ids.is_empty() {
            return;
        }
        let sent = tokio::time::timeout(ANNOUNCE_TIMEOUT, self.send(ids, status)).await;
        let error = match sent {
            Ok(Ok(())) => return,
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("not sent within {} ms", ANNOUNCE_TIMEOUT.as_millis()),
        };
        tracing::debug!(jobs = ids.len(), error = %error, "cannot announce finished jobs; their waiters answer when their wait ends");
    }

    async fn send(&self, ids: &[Uuid], status: JobStatus) -> Result<()> {
        let channel = self.channel().await?;
        for id in ids {
            let sent = channel
                .basic_publish(
                    EVENTS_EXCHANGE.into(),
                    id.to_string().as_str().into(),
                    BasicPublishOptions::default(),
                    status.as_str().as_bytes(),
                    // Not persistent (delivery mode 1): nothing is written to disk for it.
                    BasicProperties::default().with_delivery_mode(1),
                )
                .await;
            if let Err(e) = sent {
                self.forget(&channel);
                return Err(e.into());
            }
        }
        Ok(())
    }

    /// The open channel, or a new one.
    async fn channel(&self) -> Result<Channel> {
        if let Some(ch) = self.cached() {
            return Ok(ch);
        }
        let _one_at_a_time = self.opening.lock().await;
        if let Some(ch) = self.cached() {
            return Ok(ch);
        }
        let ch = self.broker.channel().await?;
        *self.channel.lock().unwrap_or_else(PoisonError::into_inner) = Some(ch.clone());
        Ok(ch)
    }

    fn cached(&self) -> Option<Channel> {
        self.channel
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .filter(|c| c.status().connected())
            .cloned()
    }

    fn forget(&self, channel: &Channel) {
        let mut current = self.channel.lock().unwrap_or_else(PoisonError::into_inner);
        if current.as_ref().is_some_and(|c| c.id() == channel.id()) {
            *current = None;
        }
    }
}

/// What the listener is asked to do.
enum Command {
    /// Make sure the queue is bound to this job's key, then answer `true` (`false`, or the
    /// answer dropped: the listener is not connected; its next connection wakes the waiter).
    Bind(Uuid, oneshot::Sender<bool>),
    /// Nobody here waits for this job any more (unbound unless a waiter came back meanwhile).
    Unbind(Uuid),
}

/// One job's local waiters: a counter bumped on each wake, and how many wait.
struct Entry {
    wake: watch::Sender<u64>,
    waiting: usize,
}

struct Shared {
    entries: Mutex<HashMap<Uuid, Entry>>,
    commands: mpsc::UnboundedSender<Command>,
    stop: CancellationToken,
}

impl Shared {
    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Entry>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Wakes the waiters of `id`, if any.
    fn wake(&self, id: Uuid) {
        if let Some(e) = self.entries().get(&id) {
            e.wake.send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    /// Wakes every waiter (after a reconnection: announcements may have been lost).
    fn wake_all(&self) {
        for e in self.entries().values() {
            e.wake.send_modify(|n| *n = n.wrapping_add(1));
        }
    }
}

/// The waiters of one process and its listener on [`EVENTS_EXCHANGE`] (see the module docs).
/// Cheap to share behind an `Arc`.
pub struct Waiters {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Waiters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Waiters")
            .field("jobs", &self.shared.entries().len())
            .finish_non_exhaustive()
    }
}

impl Waiters {
    /// Starts the listener on `broker` as a task of `tasks`, until `stop` (which also ends
    /// every wait at once, so a graceful shutdown is not held up by waiting requests).
    pub fn start(broker: Broker, tasks: &TaskTracker, stop: CancellationToken) -> Arc<Self> {
        let (tx, rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            entries: Mutex::new(HashMap::new()),
            commands: tx,
            stop: stop.clone(),
        });
        tasks.spawn(listen(shared.clone(), broker, rx, stop));
        Arc::new(Self { shared })
    }

    /// Jobs somebody in this process waits for now.
    pub fn jobs_waited_for(&self) -> usize {
        self.shared.entries().len()
    }

    /// Registers a waiter for job `id` and returns once the listener's queue is bound to the
    /// job's key (or `until`, or the listener is not connected: its next connection wakes
    /// every waiter). Read the store only after this, so that an announcement between the
    /// read and the wait is not missed.
    async fn register(&self, id: Uuid, until: tokio::time::Instant) -> Watch {
        let wake = {
            let mut entries = self.shared.entries();
            let e = entries.entry(id).or_insert_with(|| Entry {
                wake: watch::channel(0).0,
                waiting: 0,
            });
            e.waiting += 1;
            e.wake.subscribe()
        };
        let watch = Watch {
            id,
            wake,
            shared: self.shared.clone(),
        };
        let (tx, rx) = oneshot::channel();
        if self.shared.commands.send(Command::Bind(id, tx)).is_ok() {
            let _ = tokio::time::timeout_at(until, rx).await;
        }
        watch
    }

    /// Job `id` once it is final (`succeeded`, `dead`, `cancelled`), or as it stands when
    /// `wait` ends (or the process stops); `None` when the store has no such job. Reads the
    /// store once at the start and once per wake (an announcement of the job, or a
    /// reconnection of the listener), never on a timer. A `wait` of zero reads once.
    ///
    /// # Errors
    /// [`ErrorKind::Store`] when the store cannot be read.
    pub async fn wait_final(
        &self,
        store: &dyn Store,
        id: Uuid,
        wait: Duration,
    ) -> Result<Option<JobRecord>> {
        if wait.is_zero() {
            return store.get(id).await;
        }
        let until = tokio::time::Instant::now() + wait;
        let mut watch = self.register(id, until).await;
        // The first read marks the job as waited for, so that whoever finishes it announces
        // it (jobs nobody waits for are not announced); the binding is in place before.
        let mut read = store.watch(id).await?;
        loop {
            let Some(record) = read else {
                return Ok(None);
            };
            if record.status.is_final()
                || tokio::time::Instant::now() >= until
                || self.shared.stop.is_cancelled()
            {
                return Ok(Some(record));
            }
            tokio::select! {
                woken = watch.wake.changed() => {
                    if woken.is_err() {
                        // No sender: cannot happen while this watch holds its entry; wait out
                        // the deadline rather than spin.
                        tokio::time::sleep_until(until).await;
                    }
                }
                () = tokio::time::sleep_until(until) => {}
                () = self.shared.stop.cancelled() => {}
            }
            read = store.get(id).await?;
        }
    }
}

/// A registered waiter of one job; dropping it unregisters it.
struct Watch {
    id: Uuid,
    wake: watch::Receiver<u64>,
    shared: Arc<Shared>,
}

impl Drop for Watch {
    fn drop(&mut self) {
        let mut entries = self.shared.entries();
        let last = match entries.get_mut(&self.id) {
            Some(e) => {
                e.waiting = e.waiting.saturating_sub(1);
                e.waiting == 0
            }
            None => false,
        };
        if last {
            entries.remove(&self.id);
            let _ = self.shared.commands.send(Command::Unbind(self.id));
        }
    }
}

/// The listener: one session per connection, reconnecting with exponential backoff (100 ms
/// doubling to [`RECONNECT_MAX_DELAY`]) until `stop`. Between sessions, every request to bind
/// is answered `false` at once.
async fn listen(
    shared: Arc<Shared>,
    broker: Broker,
    mut commands: mpsc::UnboundedReceiver<Command>,
    stop: CancellationToken,
) {
    let mut delay = Duration::from_millis(100);
    loop {
        let started = tokio::time::Instant::now();
        // Stopping does not wait for a broker that does not answer (connecting to an
        // unreachable node takes up to 5 s).
        let outcome = tokio::select! {
            biased;
            outcome = session(&shared, &broker, &mut commands, &stop) => outcome,
            () = stop.cancelled() => return,
        };
        match outcome {
            Ok(()) => return,
            Err(e) => {
                if started.elapsed() > Duration::from_secs(30) {
                    delay = Duration::from_millis(100);
                }
                tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "the listener for finished jobs lost the broker; waiters answer when their wait ends or once it is back");
            }
        }
        let pause = tokio::time::sleep(delay);
        tokio::pin!(pause);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = &mut pause => break,
                cmd = commands.recv() => match cmd {
                    Some(Command::Bind(_, answer)) => {
                        let _ = answer.send(false);
                    }
                    Some(Command::Unbind(_)) => {}
                    None => return,
                },
            }
        }
        delay = (delay * 2).min(RECONNECT_MAX_DELAY);
    }
}

/// One connection's life: a fresh queue, every id waited for bound, every waiter woken, then
/// announcements and commands until the channel fails (`Err`) or `stop` (`Ok`).
async fn session(
    shared: &Shared,
    broker: &Broker,
    commands: &mut mpsc::UnboundedReceiver<Command>,
    stop: &CancellationToken,
) -> Result<()> {
    let channel = broker.channel().await?;
    let queue = bounded(channel.queue_declare(
        "".into(),
        QueueDeclareOptions {
            exclusive: true,
            auto_delete: true,
            durable: false,
            ..QueueDeclareOptions::default()
        },
        FieldTable::default(),
    ))
    .await?;
    let queue = queue.name().to_string();
    let mut deliveries = bounded(channel.basic_consume(
        queue.as_str().into(),
        "".into(),
        BasicConsumeOptions {
            no_ack: true,
            exclusive: true,
            ..BasicConsumeOptions::default()
        },
        FieldTable::default(),
    ))
    .await?;
    let mut bound = HashSet::new();
    let waited: Vec<Uuid> = shared.entries().keys().copied().collect();
    reconcile(&channel, &queue, shared, &mut bound, waited).await?;
    // Announcements made while no queue was bound are lost: every waiter reads again.
    shared.wake_all();
    let mut batch = Vec::new();
    loop {
        tokio::select! {
            () = stop.cancelled() => {
                let _ = bounded(channel.close(200, "warren: stopping".into())).await;
                return Ok(());
            }
            delivery = deliveries.next() => match delivery {
                Some(Ok(d)) => {
                    if let Ok(id) = Uuid::parse_str(d.routing_key.as_str()) {
                        shared.wake(id);
                    }
                }
                Some(Err(e)) => return Err(e.into()),
                None => {
                    return Err(ErrorKind::BrokerUnavailable(
                        "the broker ended the consumer of finished jobs".to_owned(),
                    )
                    .into());
                }
            },
            n = commands.recv_many(&mut batch, 512) => {
                if n == 0 {
                    return Ok(());
                }
                let mut touched = Vec::with_capacity(batch.len());
                let mut answers = Vec::new();
                for cmd in batch.drain(..) {
                    match cmd {
                        Command::Bind(id, answer) => {
                            touched.push(id);
                            answers.push((id, answer));
                        }
                        Command::Unbind(id) => touched.push(id),
                    }
                }
                reconcile(&channel, &queue, shared, &mut bound, touched).await?;
                for (id, answer) in answers {
                    let _ = answer.send(bound.contains(&id));
                }
            }
        }
    }
}

/// Makes the bindings of `ids` what the waiters want now: bound while somebody waits for the
/// job, unbound otherwise. `bound` is what the broker has. The RPCs of one call are pipelined
/// on the channel (each id at most once).
async fn reconcile(
    channel: &Channel,
    queue: &str,
    shared: &Shared,
    bound: &mut HashSet<Uuid>,
    ids: Vec<Uuid>,
) -> Result<()> {
    let ids: HashSet<Uuid> = ids.into_iter().collect();
    let (to_bind, to_unbind): (Vec<Uuid>, Vec<Uuid>) = {
        let entries = shared.entries();
        let to_bind = ids
            .iter()
            .filter(|id| entries.contains_key(id) && !bound.contains(id))
            .copied()
            .collect();
        let to_unbind = ids
            .iter()
            .filter(|id| !entries.contains_key(id) && bound.contains(id))
            .copied()
            .collect();
        (to_bind, to_unbind)
    };
    let binds = to_bind.iter().map(|id| {
        let key = id.to_string();
        async move {
            bounded(channel.queue_bind(
                queue.into(),
                EVENTS_EXCHANGE.into(),
                key.as_str().into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            ))
            .await
        }
    });
    let unbinds = to_unbind.iter().map(|id| {
        let key = id.to_string();
        async move {
            bounded(channel.queue_unbind(
                queue.into(),
                EVENTS_EXCHANGE.into(),
                key.as_str().into(),
                FieldTable::default(),
            ))
            .await
        }
    });
    let (bind_results, unbind_results) = futures::future::join(
        futures::future::join_all(binds),
        futures::future::join_all(unbinds),
    )
    .await;
    for (id, r) in to_bind.iter().zip(bind_results) {
        r?;
        bound.insert(*id);
    }
    for (id, r) in to_unbind.iter().zip(unbind_results) {
        r?;
        bound.remove(id);
    }
    Ok(())
}

/// A [`Store`] that announces the final states written through it: `succeeded`
/// ([`crate::store::JobStore::succeed`], of a watched job), `dead` ([`crate::store::JobStore::dead`]) and
/// `cancelled` ([`crate::store::JobStore::cancel`], [`crate::store::JobSearch::cancel_many`])
/// are published with the [`Announcer`] once the store returned. Every other call goes
/// straight through. Wrapping the store once, where the process opens it, announces every
/// path to a final state (worker, HTTP, dashboard, CLI, DLQ tools) without any of them
/// knowing of AMQP.
///
/// A success whose lease was taken over changes nothing in the store and is not announced:
/// the owner that finishes the job announces it.
pub struct AnnouncingStore {
    inner: Arc<dyn Store>,
    announcer: Arc<Announcer>,
}

impl AnnouncingStore {
    /// `inner`, announcing its final states with `announcer`.
    pub fn wrap(inner: Arc<dyn Store>, announcer: Arc<Announcer>) -> Arc<dyn Store> {
        Arc::new(Self { inner, announcer })
    }

    /// Announces a worker's final write in a task of its own, so that the job's ack does not
    /// wait for the announcement's frame to be written: the two go to the broker together
    /// (one wake-up of the connection's I/O thread instead of two in a row, at light load).
    fn announce_later(&self, id: Uuid, status: JobStatus) {
        let announcer = self.announcer.clone();
        tokio::spawn(async move { announcer.announce(id, status).await });
    }
}

mod delegate {
    use std::collections::BTreeMap;

    use uuid::Uuid;

    use super::AnnouncingStore;
    use crate::error::Result;
    use crate::store::{
        ActiveCounts, Bucket, Cancel, Claim, ClaimRequest, Cursor, FlowControl, Inserted,
        JobFilter, JobPage, JobRecord, JobRow, JobSearch, JobStatus, JobStore, Maintenance, NewJob,
        Overdue, QueueControl, ScheduleState, Schedules, StatusCounts, StoreStatus, Tokens,
    };

    #[async_trait::async_trait]
    impl JobStore for AnnouncingStore {
        async fn insert(&self, job: &NewJob) -> Result<Inserted> {
            self.inner.insert(job).await
        }
        async fn insert_many(&self, jobs: &[NewJob]) -> Result<Vec<Inserted>> {
            self.inner.insert_many(jobs).await
        }
        async fn mark_accepted(&self, id: Uuid) -> Result<()> {
            self.inner.mark_accepted(id).await
        }
        async fn forget_unpublished(&self, id: Uuid) -> Result<()> {
            self.inner.forget_unpublished(id).await
        }
        async fn get(&self, id: Uuid) -> Result<Option<JobRecord>> {
            self.inner.get(id).await
        }
        async fn watch(&self, id: Uuid) -> Result<Option<JobRecord>> {
            self.inner.watch(id).await
        }
        async fn claim(&self, req: &ClaimRequest<'_>) -> Result<Claim> {
            self.inner.claim(req).await
        }
        async fn claim_keyed(
            &self,
            req: &ClaimRequest<'_>,
            key: &str,
            limit: u32,
        ) -> Result<Claim> {
            self.inner.claim_keyed(req, key, limit).await
        }
        async fn succeed(
            &self,
            id: Uuid,
            owner: &str,
            result: Option<&str>,
            now: i64,
        ) -> Result<bool> {
            let watched = self.inner.succeed(id, owner, result, now).await?;
            if watched {
                self.announce_later(id, JobStatus::Succeeded);
            }
            Ok(watched)
        }
        async fn retry(
            &self,
            id: Uuid,
            owner: &str,
            error: &str,
            next_attempt_at: i64,
            payload: &[u8],
        ) -> Result<()> {
            self.inner
                .retry(id, owner, error, next_attempt_at, payload)
                .await
        }
        async fn take_overdue(
            &self,
            queues: &[String],
            due_before: i64,
            recheck_at: i64,
            limit: u32,
        ) -> Result<Vec<Overdue>> {
            self.inner
                .take_overdue(queues, due_before, recheck_at, limit)
                .await
        }
        async fn cancel(&self, id: Uuid, now: i64) -> Result<Cancel> {
            let answer = self.inner.cancel(id, now).await?;
            if let Cancel::Cancelled(_) = &answer {
                self.announcer.announce(id, JobStatus::Cancelled).await;
            }
            Ok(answer)
        }
        async fn dead(&self, id: Uuid, error: &str, now: i64) -> Result<()> {
            self.inner.dead(id, error, now).await?;
            self.announce_later(id, JobStatus::Dead);
            Ok(())
        }
        async fn release(&self, id: Uuid, owner: &str) -> Result<()> {
            self.inner.release(id, owner).await
        }
        async fn revive(&self, ids: &[Uuid], queue: &str) -> Result<()> {
            self.inner.revive(ids, queue).await
        }
        async fn discard(&self, ids: &[Uuid], now: i64) -> Result<()> {
            self.inner.discard(ids, now).await
        }
        async fn active_counts(&self) -> Result<BTreeMap<String, ActiveCounts>> {
            self.inner.active_counts().await
        }
    }

    #[async_trait::async_trait]
    impl Maintenance for AnnouncingStore {
        async fn ping(&self) -> Result<()> {
            self.inner.ping().await
        }
        async fn prune(&self, cutoff: i64) -> Result<u64> {
            self.inner.prune(cutoff).await
        }
        async fn status(&self) -> Result<StoreStatus> {
            self.inner.status().await
        }
        async fn export(&self, after: Option<Uuid>, limit: u32) -> Result<Vec<JobRow>> {
            self.inner.export(after, limit).await
        }
        async fn last_id(&self) -> Result<Option<Uuid>> {
            self.inner.last_id().await
        }
        async fn import(&self, rows: &[JobRow]) -> Result<u64> {
            self.inner.import(rows).await
        }
    }

    #[async_trait::async_trait]
    impl QueueControl for AnnouncingStore {
        async fn queue_pause(&self, queue: &str, now: i64) -> Result<bool> {
            self.inner.queue_pause(queue, now).await
        }
        async fn queue_resume(&self, queue: &str) -> Result<bool> {
            self.inner.queue_resume(queue).await
        }
        async fn queues_paused(&self) -> Result<BTreeMap<String, i64>> {
            self.inner.queues_paused().await
        }
    }

    #[async_trait::async_trait]
    impl JobSearch for AnnouncingStore {
        async fn list(
            &self,
            filter: &JobFilter,
            after: Option<Cursor>,
            limit: u32,
        ) -> Result<JobPage> {
            self.inner.list(filter, after, limit).await
        }
        async fn status_counts(&self) -> Result<StatusCounts> {
            self.inner.status_counts().await
        }
        async fn cancel_many(&self, ids: &[Uuid], now: i64) -> Result<Vec<Uuid>> {
            let cancelled = self.inner.cancel_many(ids, now).await?;
            self.announcer
                .announce_all(&cancelled, JobStatus::Cancelled)
                .await;
            Ok(cancelled)
        }
    }

    #[async_trait::async_trait]
    impl FlowControl for AnnouncingStore {
        async fn take_tokens(
            &self,
            queue: &str,
            want: u32,
            per_second: f64,
            burst: u32,
            now: i64,
        ) -> Result<Tokens> {
            self.inner
                .take_tokens(queue, want, per_second, burst, now)
                .await
        }
        async fn buckets(&self) -> Result<BTreeMap<String, Bucket>> {
            self.inner.buckets().await
        }
        async fn throttle(&self, queue: &str, until: i64, reason: &str) -> Result<()> {
            self.inner.throttle(queue, until, reason).await
        }
        async fn throttles(&self, now: i64) -> Result<BTreeMap<String, i64>> {
            self.inner.throttles(now).await
        }
    }

    #[async_trait::async_trait]
    impl Schedules for AnnouncingStore {
        async fn schedule_start(&self, name: &str, now: i64) -> Result<ScheduleState> {
            self.inner.schedule_start(name, now).await
        }
        async fn schedule_advance(&self, name: &str, tick: i64, job: Option<Uuid>) -> Result<()> {
            self.inner.schedule_advance(name, tick, job).await
        }
        async fn schedule_states(&self) -> Result<BTreeMap<String, ScheduleState>> {
            self.inner.schedule_states().await
        }
    }
}
