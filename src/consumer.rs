//! The consumer loop: one per queue, prefetch-limited, claim → run → record → ack.
//!
//! A worker holds at most `prefetch` unacked deliveries (`basic.qos`) and runs at most
//! `concurrency` jobs at once, so its memory does not grow with the backlog (DESIGN guarantee
//! 4). For each delivery:
//! 1. a malformed message (no or bad `message_id`, body not JSON) is dead-lettered with the
//!    reason and acked;
//! 2. the job is claimed in the store under a lease; a job already final is acked and counted
//!    as a duplicate, not run (guarantee 3);
//! 3. the handler runs under the queue's timeout and `catch_unwind`;
//! 4. [`crate::retry::decide`] says succeed / retry / dead; the store is written, any message
//!    (dead letter) is published with a confirm, and only then is the delivery acked.
//!
//! Before consuming, and while it consumes, each queue's consumer asks for admission
//! ([`crate::admission`]): a paused queue's AMQP consumer is cancelled (`basic.cancel`), so its
//! new jobs wait in the broker, and consumes again once the queue is resumed; jobs already
//! delivered finish.
//!
//! Flow control across the fleet happens here too, each limit in a module of its own: before a
//! delivery's job starts, a queue held because a target answered 429 waits out the hold
//! ([`crate::admission`]) and a rate-limited queue takes a token ([`crate::rate_limit`]); a
//! job with a concurrency key is claimed with [`crate::store::JobStore::claim_keyed`] and,
//! over its key's limit, waits in a waiting room or is parked ([`crate::concurrency_key`]).
//!
//! Anything that cannot be recorded is handed back (`basic.nack` with requeue), so a broker or
//! store fault costs a re-run, never a job. A supervisor reconnects with exponential backoff
//! and jitter after broker failures. On shutdown the consumer is cancelled, in-flight jobs get
//! the grace period to finish, and what is still running is handed back.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use backon::{BackoffBuilder, ExponentialBuilder, Retryable};
use futures::{FutureExt, StreamExt};
use lapin::message::Delivery;
use lapin::options::{BasicCancelOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, error, info, info_span, warn};
use warren_workers::{Handler, Job, Outcome};

use crate::admission::Admission;
use crate::broker::Broker;
use crate::config::QueueConfig;
use crate::error::{Error, ErrorKind, Result};
use crate::message::JobMessage;
use crate::publisher::Publisher;
use crate::retry::{Decision, decide};
use crate::settle::{Settler, Ticket};
use crate::store::{Claim, ClaimRequest, Store, now_ms};
use crate::telemetry;

/// Extra lease time beyond the queue's timeout, for recording the outcome. A crashed
/// worker's job runs again once its lease (timeout + margin) has passed.
const LEASE_MARGIN: Duration = Duration::from_secs(5);

/// What every queue's consumer shares.
pub(crate) struct WorkerContext {
    pub(crate) broker: Broker,
    pub(crate) publisher: Arc<Publisher>,
    pub(crate) store: Arc<dyn Store>,
    /// This process's worker id, the owner of its claims.
    pub(crate) owner: String,
    /// How long in-flight jobs may finish after shutdown starts.
    pub(crate) shutdown_grace: Duration,
    /// Closed while the store cannot be reached: no new deliveries are taken.
    pub(crate) store_gate: Arc<crate::store_gate::StoreGate>,
    /// The process's stop signal (ends a store probe).
    pub(crate) stop: CancellationToken,
    /// Which queues are paused (fleet-wide, read from the store): a paused queue's consumer
    /// is cancelled until it is resumed.
    pub(crate) pauses: Arc<crate::admission::Pauses>,
}

/// The longest wait between two reconnection attempts of a consumer: a broker that is back
/// is consumed from again within about this long. The RabbitMQ Java client's default
/// automatic-recovery interval is the same 5 s (RabbitMQ docs, "Java Client API Guide:
/// Automatic Recovery From Network Failures").
const RECONNECT_MAX_DELAY: Duration = Duration::from_secs(5);

/// One queue's consumer, supervised: runs until `shutdown`, reconnecting after broker
/// failures with exponential backoff and jitter (100 ms up to [`RECONNECT_MAX_DELAY`]).
pub(crate) async fn run(
    ctx: Arc<WorkerContext>,
    queue: QueueConfig,
    handler: Arc<dyn Handler>,
    shutdown: CancellationToken,
) {
    let flow = Arc::new(Flow {
        limiter: queue
            .rate_limit
            .map(|l| crate::rate_limit::Limiter::new(&queue.name, l, ctx.store.clone())),
        rooms: queue.concurrency_per_key.map(|n| {
            crate::concurrency_key::WaitingRooms::new(
                usize::from(queue.prefetch),
                queue.concurrency,
                n,
            )
        }),
    });
    let queue = Arc::new(queue);
    let tracker = TaskTracker::new();
    let hard_stop = CancellationToken::new();
    let backoff = || {
        ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(100))
            .with_max_delay(RECONNECT_MAX_DELAY)
            .with_jitter()
            .without_max_times()
            .build()
    };
    let mut delays = backoff();
    while !shutdown.is_cancelled() {
        let started = Instant::now();
        match session(
            &ctx, &queue, &flow, &handler, &shutdown, &tracker, &hard_stop,
        )
        .await
        {
            Ok(()) => break,
            Err(e) => {
                if started.elapsed() > Duration::from_secs(30) {
                    delays = backoff();
                }
                let delay = delays.next().unwrap_or(RECONNECT_MAX_DELAY);
                warn!(queue = %queue.name, error = %e, retry_in_ms = delay.as_millis() as u64, "consumer stopped; reconnecting");
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
    finish_in_flight(&tracker, ctx.shutdown_grace, &hard_stop, &queue.name).await;
    info!(queue = %queue.name, "consumer stopped");
}

/// Graceful end: in-flight jobs get `grace` to finish; then `hard_stop` makes the rest hand
/// their deliveries back (nack, requeue). Returns when every job task has ended.
async fn finish_in_flight(
    tracker: &TaskTracker,
    grace: Duration,
    hard_stop: &CancellationToken,
    queue: &str,
) {
    tracker.close();
    if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
        warn!(queue = %queue, "grace period over; handing back jobs still running");
        hard_stop.cancel();
        tracker.wait().await;
    }
}

/// One channel's life: consume until shutdown (`Ok`) or a broker failure (`Err`).
async fn session(
    ctx: &Arc<WorkerContext>,
    queue: &Arc<QueueConfig>,
    flow: &Arc<Flow>,
    handler: &Arc<dyn Handler>,
    shutdown: &CancellationToken,
    tracker: &TaskTracker,
    hard_stop: &CancellationToken,
) -> Result<()> {
    let mut channel = ctx.broker.channel().await?;
    // Re-declare what this worker needs (idempotent), so that it also comes back after a
    // broker that lost its definitions (a reset node, a deleted queue). Declaring may replace
    // the channel (see `topology::declare_queue`).
    let declarer = crate::topology::Declarer::new(&ctx.broker, None);
    tokio::time::timeout(crate::broker::RPC_TIMEOUT, async {
        crate::topology::declare_shared(&declarer, &mut channel).await?;
        crate::topology::declare_one(&declarer, &mut channel, queue).await
    })
    .await
    .map_err(|_| {
        Error::from(ErrorKind::BrokerUnavailable(
            "declaring the queue timed out".into(),
        ))
    })??;
    crate::broker::bounded(channel.basic_qos(queue.prefetch, BasicQosOptions::default())).await?;
    let tag = format!("{}-{}", ctx.owner, queue.name);
    let settler = Settler::start(channel.clone());
    let slots = Arc::new(Semaphore::new(queue.concurrency));
    let take = Take {
        ctx,
        queue,
        flow,
        slots: &slots,
        handler,
        settler: &settler,
        tracker,
        hard_stop,
    };
    // True while the AMQP consumer `tag` is live: it is cancelled before the channel closes.
    let mut consuming = false;
    let mut first = true;
    let result = loop {
        // Admission (`crate::admission`): a paused queue is not consumed from at all.
        if first {
            // Not before the paused queues were read: a worker started while its queue is
            // paused takes nothing.
            tokio::select! {
                () = shutdown.cancelled() => break Ok(()),
                () = ctx.pauses.read() => {}
            }
            first = false;
            if ctx.pauses.admission(&queue.name) == Admission::Park {
                info!(queue = %queue.name, "queue is paused; not consuming until it is resumed");
            }
        }
        if ctx.pauses.admission(&queue.name) == Admission::Park {
            tokio::select! {
                () = shutdown.cancelled() => break Ok(()),
                () = ctx.pauses.until(&queue.name, Admission::Admit) => {}
            }
            info!(queue = %queue.name, "queue resumed; consuming again");
        }
        let mut consumer = match crate::broker::bounded(channel.basic_consume(
            queue.name.as_str().into(),
            tag.as_str().into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        ))
        .await
        {
            Ok(c) => c,
            Err(e) => break Err(e),
        };
        consuming = true;
        info!(queue = %queue.name, prefetch = queue.prefetch, concurrency = queue.concurrency, "consuming");
        let paused = ctx.pauses.until(&queue.name, Admission::Park);
        tokio::pin!(paused);
        let ended = loop {
            let permit = tokio::select! {
                () = shutdown.cancelled() => break Ok(()),
                () = &mut paused => break Ok(()),
                p = slots.clone().acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => break Ok(()),
                },
            };
            if !ctx.store_gate.is_open() {
                // The store cannot be reached: prefetched deliveries wait here untouched rather
                // than fail one after the other (see `store_gate`).
                tokio::select! {
                    () = shutdown.cancelled() => break Ok(()),
                    () = ctx.store_gate.wait_open() => {}
                }
            }
            tokio::select! {
                biased;
                () = shutdown.cancelled() => break Ok(()),
                () = &mut paused => break Ok(()),
                next = consumer.next() => match next {
                    Some(Ok(delivery)) => {
                        // A delivery not started at shutdown goes back when the channel
                        // closes.
                        tokio::select! {
                            biased;
                            () = shutdown.cancelled() => break Ok(()),
                            () = flow.before_start(ctx, &queue.name) => {}
                        }
                        take.start(delivery, permit);
                    }
                    Some(Err(e)) => break Err(Error::from(e)),
                    None => break Err(ErrorKind::BrokerUnavailable("the broker cancelled the consumer".to_owned()).into()),
                },
            }
        };
        if let Err(e) = ended {
            break Err(e);
        }
        if shutdown.is_cancelled() {
            break Ok(());
        }
        // Paused: stop deliveries at the broker, so new jobs wait there `ready`. Deliveries
        // that reached this worker before the cancel run as usual (see `crate::admission`
        // for why they are not handed back); the stream ends after the last of them.
        if let Err(e) = crate::broker::bounded(
            channel.basic_cancel(tag.as_str().into(), BasicCancelOptions::default()),
        )
        .await
        {
            break Err(e);
        }
        consuming = false;
        info!(queue = %queue.name, "queue paused; consumer cancelled, new jobs wait in the broker");
        let mut delivered = 0_usize;
        let drained = loop {
            let delivery = tokio::select! {
                biased;
                () = shutdown.cancelled() => break Ok(()),
                next = consumer.next() => match next {
                    Some(Ok(delivery)) => delivery,
                    Some(Err(e)) => break Err(Error::from(e)),
                    None => break Ok(()),
                },
            };
            // (At shutdown an unstarted delivery goes back when the channel closes.)
            let permit = tokio::select! {
                () = shutdown.cancelled() => break Ok(()),
                p = slots.clone().acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => break Ok(()),
                },
            };
            tokio::select! {
                biased;
                () = shutdown.cancelled() => break Ok(()),
                () = flow.before_start(ctx, &queue.name) => {}
            }
            delivered += 1;
            take.start(delivery, permit);
        };
        if let Err(e) = drained {
            break Err(e);
        }
        if shutdown.is_cancelled() {
            break Ok(());
        }
        if delivered > 0 {
            info!(queue = %queue.name, jobs = delivered, "started the jobs delivered before the pause took effect");
        }
    };
    if result.is_ok() {
        // Stop deliveries; prefetched ones not yet started go back to the queue when the
        // channel closes. In-flight jobs still ack on this channel, so wait for them first.
        if consuming {
            let _ = channel
                .basic_cancel(tag.as_str().into(), BasicCancelOptions::default())
                .await;
        }
        finish_in_flight(tracker, ctx.shutdown_grace, hard_stop, &queue.name).await;
        settler.finish().await;
        let _ = channel
            .close(200, "warren worker shutting down".into())
            .await;
    }
    result
}

/// One queue's fleet-wide limits in this process: its rate limiter and its concurrency-key
/// waiting rooms, when configured.
struct Flow {
    limiter: Option<crate::rate_limit::Limiter>,
    rooms: Option<Arc<crate::concurrency_key::WaitingRooms>>,
}

impl Flow {
    /// Returns once a job of `queue` may start: no target's hold is in force, and the rate
    /// limit gave a token.
    async fn before_start(&self, ctx: &WorkerContext, queue: &str) {
        ctx.pauses.until_released(queue).await;
        if let Some(limiter) = &self.limiter {
            limiter.acquire().await;
            // A hold that began while this delivery waited for its token.
            ctx.pauses.until_released(queue).await;
        }
    }
}

/// A job's concurrency slot: one of the queue's `concurrency` permits, which a delivery in a
/// concurrency-key waiting room gives up while it waits.
struct Slot {
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
    slots: Arc<Semaphore>,
}

/// What starting a delivery's job needs.
struct Take<'a> {
    ctx: &'a Arc<WorkerContext>,
    queue: &'a Arc<QueueConfig>,
    flow: &'a Arc<Flow>,
    slots: &'a Arc<Semaphore>,
    handler: &'a Arc<dyn Handler>,
    settler: &'a Settler,
    tracker: &'a TaskTracker,
    hard_stop: &'a CancellationToken,
}

impl Take<'_> {
    /// Runs `delivery`'s job in a task of its own, holding `permit` (one of the queue's
    /// `concurrency` slots) until it ends.
    fn start(&self, delivery: Delivery, permit: tokio::sync::OwnedSemaphorePermit) {
        let ticket = self.settler.arrived(delivery.delivery_tag);
        let ctx = self.ctx.clone();
        let queue = self.queue.clone();
        let flow = self.flow.clone();
        let handler = self.handler.clone();
        let hard_stop = self.hard_stop.clone();
        let mut slot = Slot {
            permit: Some(permit),
            slots: self.slots.clone(),
        };
        self.tracker.spawn(async move {
            process(
                &ctx,
                &queue,
                &flow,
                handler.as_ref(),
                delivery,
                ticket,
                &hard_stop,
                &mut slot,
            )
            .await;
            drop(slot);
        });
    }
}

/// Handles one delivery from start to ack (or hand-back).
#[allow(clippy::too_many_arguments)]
async fn process(
    ctx: &WorkerContext,
    queue: &QueueConfig,
    flow: &Flow,
    handler: &dyn Handler,
    delivery: Delivery,
    ticket: Ticket,
    hard_stop: &CancellationToken,
    slot: &mut Slot,
) {
    let Delivery {
        properties,
        data,
        redelivered,
        ..
    } = delivery;
    let body = bytes::Bytes::from(data);
    let msg = match JobMessage::from_delivery(
        &queue.name,
        &properties,
        body.clone(),
        queue.max_payload_bytes,
    ) {
        Ok(m) => m,
        Err(reason) => {
            // Malformed: dead-letter it with the reason; the worker keeps running.
            // No valid job id: the line names what the message does carry.
            let message_id = properties
                .message_id()
                .as_ref()
                .map(|m| m.to_string())
                .unwrap_or_default();
            let correlation_id = properties
                .correlation_id()
                .as_ref()
                .map(|c| c.to_string())
                .unwrap_or_default();
            warn!(queue = %queue.name, message_id = %message_id, correlation_id = %correlation_id, reason = %reason, "dead-lettering malformed message");
            match crate::dead_letter::publish(
                &ctx.publisher,
                &queue.name,
                &properties,
                &body,
                0,
                &reason,
            )
            .await
            {
                Ok(()) => {
                    telemetry::count(telemetry::JOBS_DEAD_LETTERED, &queue.name);
                    ticket.ack();
                }
                Err(e) => {
                    warn!(queue = %queue.name, message_id = %message_id, error = %e, "cannot publish dead letter; handing the message back");
                    ticket.requeue();
                }
            }
            return;
        }
    };
    let span = info_span!("job", job_id = %msg.id, queue = %queue.name, attempt = tracing::field::Empty, correlation_id = msg.correlation_id.as_deref().unwrap_or(""));
    async {
        // The job's concurrency key, on a queue with a per-key limit.
        let keyed = match (&flow.rooms, queue.concurrency_per_key) {
            (Some(rooms), Some(limit)) => crate::concurrency_key::key_of(
                msg.concurrency_key.as_deref(),
                &msg.payload,
                queue.concurrency_key.as_deref(),
            )
            .map(|key| (rooms, key, limit)),
            _ => None,
        };
        let claim_once = || async {
            let req = ClaimRequest {
                id: msg.id,
                queue: &queue.name,
                max_attempts: if msg.max_attempts > 0 { msg.max_attempts } else { queue.max_attempts },
                correlation_id: msg.correlation_id.as_deref(),
                owner: &ctx.owner,
                now: now_ms(),
                lease: queue.timeout + LEASE_MARGIN,
            };
            match &keyed {
                Some((_, key, limit)) => ctx.store.claim_keyed(&req, key, *limit).await,
                None => ctx.store.claim(&req).await,
            }
        };
        // Over its key's limit, a delivery waits in the key's waiting room (without its
        // concurrency slot) and claims again when a job of the key ends here, or after a
        // short poll; with the room full it is parked (`crate::concurrency_key`). A key at
        // its limit in this process already goes straight to the room: the store could only
        // refuse the claim.
        let mut seat = None;
        let mut ask_store = !keyed.as_ref().is_some_and(|(rooms, key, _)| rooms.busy_here(key));
        let claim = loop {
            if ask_store {
                let claim = claim_once.retry(store_backoff()).when(|e| worth_retrying(ctx, e)).await;
                let Ok(Claim::KeyBusy) = claim else { break claim };
            }
            ask_store = true;
            // Only a keyed claim is ever busy for its key.
            let Some((rooms, key, _)) = &keyed else { break Ok(Claim::KeyBusy) };
            if seat.is_none() {
                seat = rooms.enter(key);
            }
            let Some(waiting) = &seat else {
                park(ctx, queue, &msg, &properties, &ticket).await;
                return;
            };
            if !wait_turn(waiting, slot, hard_stop, &ticket).await {
                return;
            }
        };
        drop(seat);
        let _running = match (&keyed, &claim) {
            (Some((rooms, key, _)), Ok(Claim::Claimed { .. })) => Some(rooms.running(key)),
            _ => None,
        };
        let (attempt, max_attempts) = match claim {
            Ok(Claim::Claimed { attempt, max_attempts }) => (attempt, max_attempts),
            Ok(Claim::Final(status)) => {
                info!(status = status.as_str(), redelivered, "duplicate delivery of a finished job; acked, not run");
                telemetry::count(telemetry::DUPLICATES_SKIPPED, &queue.name);
                ticket.ack();
                return;
            }
            Ok(Claim::Busy { until }) => {
                // Another worker holds a live lease: it may be running this job (this is a
                // duplicate), or it died and this is the redelivery. Park the message in a
                // delay until the lease ends, then look again: a finished job is acked then,
                // an expired lease is claimed and the job runs.
                let wait = Duration::from_millis(u64::try_from(until - now_ms()).unwrap_or(0)) + Duration::from_secs(1);
                let props = crate::message::republish_properties(&properties, msg.attempt);
                match crate::delay::publish(&ctx.publisher, &queue.name, &msg.payload, props, wait).await {
                    Ok(()) => {
                        debug!(lease_until = until, wait_ms = wait.as_millis() as u64, "job is leased elsewhere; parked until the lease ends");
                        ticket.ack();
                    }
                    Err(e) => {
                        warn!(error = %e, "cannot park a leased job; handing it back");
                        ticket.requeue();
                    }
                }
                return;
            }
            Ok(Claim::KeyBusy) => {
                // Only a keyed claim answers this, and the loop above parks those.
                ticket.requeue();
                return;
            }
            Err(e) => {
                warn!(error = %e, "cannot claim job; handing it back");
                store_failed(ctx, &e);
                ticket.requeue();
                return;
            }
        };
        tracing::Span::current().record("attempt", attempt);

        let job = Job {
            id: msg.id.to_string(),
            queue: queue.name.clone(),
            attempt,
            max_attempts,
            correlation_id: msg.correlation_id.clone(),
            idempotency_key: msg.idempotency_key.clone(),
            payload: msg.payload.clone(),
        };
        let in_flight = telemetry::InFlight::start(&queue.name);
        let started = Instant::now();
        let run = tokio::time::timeout(queue.timeout, AssertUnwindSafe(handler.handle(&job)).catch_unwind());
        let outcome = tokio::select! {
            () = hard_stop.cancelled() => {
                // Shutdown grace is over: give the job back untouched.
                if let Err(e) = ctx.store.release(msg.id, &ctx.owner).await {
                    warn!(error = %e, "cannot release claim; the lease will expire");
                }
                ticket.requeue();
                info!("handed back at shutdown");
                return;
            }
            r = run => match r {
                Err(_) => Outcome::retry(format!("timed out after {} ms", queue.timeout.as_millis())),
                Ok(Err(panic)) => Outcome::retry(format!("handler panicked: {}", panic_message(&panic))),
                Ok(Ok(outcome)) => outcome,
            },
        };
        let elapsed = started.elapsed();
        drop(in_flight);
        if let Outcome::Throttled { error, retry_after } = &outcome {
            hold_queue(ctx, queue, error, *retry_after).await;
        }
        let elapsed_ms = elapsed.as_millis() as u64;
        let decision = decide(outcome, attempt, max_attempts, &queue.backoff, &mut rand::rng());
        let outcome = match &decision {
            Decision::Succeed { .. } => "succeeded",
            Decision::Retry { .. } => "retried",
            Decision::Dead { .. } => "dead",
        };
        metrics::histogram!(telemetry::HANDLER_DURATION, "queue" => queue.name.clone(), "outcome" => outcome)
            .record(elapsed.as_secs_f64());
        match decision {
            Decision::Succeed { result } => {
                let write = || ctx.store.succeed(msg.id, &ctx.owner, result.as_deref(), now_ms());
                match write.retry(store_backoff()).when(|e| worth_retrying(ctx, e)).await {
                    Ok(_watched) => {
                        debug!(elapsed_ms, "job succeeded");
                        telemetry::count(telemetry::JOBS_SUCCEEDED, &queue.name);
                        ticket.ack();
                    }
                    Err(e) => {
                        error!(error = %e, "job succeeded but the store cannot record it; handing back (it may run again)");
                        store_failed(ctx, &e);
                        ticket.requeue();
                    }
                }
            }
            Decision::Retry { error, delay } => {
                retry(ctx, queue, &msg, &properties, attempt, &error, delay, &ticket).await;
            }
            Decision::Dead { error } => {
                bury(ctx, queue, &msg, &properties, attempt, &error, &ticket).await;
            }
        }
    }
    .instrument(span)
    .await;
}

/// Waits in a concurrency-key waiting room without the job's concurrency slot (so the slot
/// serves other keys meanwhile), then takes a slot again. False when the worker is stopping:
/// the delivery was handed back.
async fn wait_turn(
    seat: &crate::concurrency_key::Seat,
    slot: &mut Slot,
    hard_stop: &CancellationToken,
    ticket: &Ticket,
) -> bool {
    slot.permit = None;
    tokio::select! {
        () = hard_stop.cancelled() => {
            ticket.requeue();
            return false;
        }
        () = seat.wait_turn() => {}
    }
    match slot.slots.clone().acquire_owned().await {
        Ok(p) => {
            slot.permit = Some(p);
            true
        }
        Err(_) => {
            ticket.requeue();
            false
        }
    }
}

/// A target answered 429 (or 503 with `Retry-After`): hold the queue's dispatch here at once,
/// and for the fleet through the store (`crate::admission`). Logged and counted once per hold.
async fn hold_queue(ctx: &WorkerContext, queue: &QueueConfig, error: &str, retry_after: Duration) {
    let (until, new) = ctx.pauses.throttle(&queue.name, retry_after);
    if new {
        warn!(retry_after_ms = retry_after.as_millis() as u64, error = %error, "the target asked to slow down; holding the queue's dispatch across the fleet");
        telemetry::count(telemetry::THROTTLED, &queue.name);
    }
    if let Err(e) = ctx.store.throttle(&queue.name, until, error).await {
        warn!(error = %e, "cannot record the queue's hold in the store; only this process holds it");
    }
}

/// A delivery whose concurrency key is at its limit and whose waiting room is full: publish
/// it into the delay levels for [`crate::concurrency_key::park_delay`] (the same attempt,
/// [`crate::message::H_PARKED`] counted up; confirmed), then ack. Not an attempt: the store's
/// row is unchanged. A failed publish hands the delivery back.
async fn park(
    ctx: &WorkerContext,
    queue: &QueueConfig,
    msg: &JobMessage,
    properties: &lapin::BasicProperties,
    ticket: &Ticket,
) {
    let (props, parks) = crate::message::park_properties(properties, msg.attempt);
    let wait = crate::concurrency_key::park_delay(parks, &mut rand::rng());
    match crate::delay::publish(&ctx.publisher, &queue.name, &msg.payload, props, wait).await {
        Ok(()) => {
            debug!(
                parks,
                wait_ms = wait.as_millis() as u64,
                "concurrency key at its limit; parked"
            );
            telemetry::count(telemetry::KEY_PARKED, &queue.name);
            ticket.ack();
        }
        Err(e) => {
            warn!(error = %e, "cannot park a delivery over its key's limit; handing it back");
            ticket.requeue();
        }
    }
}

/// The retry path: store `retrying` (lease released) → publish the next attempt into the
/// delay levels (confirmed) → ack. A failure before the publish is confirmed hands the
/// delivery back, which then runs again at once: a retry without its wait, never a lost job.
#[allow(clippy::too_many_arguments)]
async fn retry(
    ctx: &WorkerContext,
    queue: &QueueConfig,
    msg: &JobMessage,
    properties: &lapin::BasicProperties,
    attempt: u32,
    error: &str,
    delay: Duration,
    ticket: &Ticket,
) {
    let wait_ms = crate::delay::delay_seconds(delay) * 1000;
    let due = now_ms().saturating_add(i64::try_from(wait_ms).unwrap_or(i64::MAX));
    let write = || {
        ctx.store
            .retry(msg.id, &ctx.owner, error, due, &msg.payload)
    };
    if let Err(e) = write
        .retry(store_backoff())
        .when(|e| worth_retrying(ctx, e))
        .await
    {
        warn!(error = %e, "cannot record the failed attempt; handing the job back");
        store_failed(ctx, &e);
        ticket.requeue();
        return;
    }
    let props = crate::message::republish_properties(properties, attempt + 1);
    match crate::delay::publish(&ctx.publisher, &queue.name, &msg.payload, props, delay).await {
        Ok(()) => {
            info!(last_error = %error, retry_in_ms = wait_ms, "job failed; retry scheduled");
            telemetry::count(telemetry::JOBS_RETRIED, &queue.name);
            ticket.ack();
        }
        Err(e) => {
            warn!(error = %e, "cannot schedule the retry; handing the job back");
            ticket.requeue();
        }
    }
}

/// The dead path: dead letter (confirmed) → store `dead` → ack. A crash between the steps
/// leaves a redelivery that finds the job not yet `dead` and buries it again: a possible
/// duplicate dead letter, never a lost one.
async fn bury(
    ctx: &WorkerContext,
    queue: &QueueConfig,
    msg: &JobMessage,
    properties: &lapin::BasicProperties,
    attempt: u32,
    error: &str,
    ticket: &Ticket,
) {
    if let Err(e) = crate::dead_letter::publish(
        &ctx.publisher,
        &queue.name,
        properties,
        &msg.payload,
        attempt,
        error,
    )
    .await
    {
        warn!(error = %e, "cannot publish dead letter; handing the job back");
        if let Err(e) = ctx.store.release(msg.id, &ctx.owner).await {
            warn!(error = %e, "cannot release claim; the lease will expire");
        }
        ticket.requeue();
        return;
    }
    let write = || ctx.store.dead(msg.id, error, now_ms());
    if let Err(e) = write
        .retry(store_backoff())
        .when(|e| worth_retrying(ctx, e))
        .await
    {
        warn!(error = %e, "dead letter published but the store cannot record `dead`");
    }
    warn!(last_error = %error, "job dead-lettered");
    telemetry::count(telemetry::JOBS_DEAD_LETTERED, &queue.name);
    ticket.ack();
}

/// True when a failed store write is worth trying again: the error is transient, and the
/// store gate is open (once another job found the store down, each write tried again would
/// only wait out the same outage before its delivery is handed back).
fn worth_retrying(ctx: &WorkerContext, e: &Error) -> bool {
    e.is_transient() && ctx.store_gate.is_open()
}

/// After a store write failed for good: a transient failure (the store cannot be reached)
/// closes the store gate, so the consumers stop taking deliveries until it answers.
fn store_failed(ctx: &WorkerContext, e: &Error) {
    if e.is_transient() {
        ctx.store_gate.close(&ctx.stop);
    }
}

/// Store writes are tried 6 times over about 4 s (50 ms doubling to 2 s, jittered), when
/// the error is transient.
fn store_backoff() -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(50))
        .with_max_delay(Duration::from_secs(2))
        .with_max_times(5)
        .with_jitter()
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}
