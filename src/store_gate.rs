//! The workers' gate on the store: while the store cannot be reached, consumers take no new
//! deliveries.
//!
//! A worker that cannot claim or record a job hands its delivery back (nack, requeue). Were
//! it to go on taking the deliveries prefetched behind it, each would fail the same way and be
//! handed back too, and every hand-back counts against the quorum queue's delivery limit
//! (`x-delivery-limit`, RabbitMQ "Quorum Queues: Poison Message Handling"): a long store
//! outage would dead-letter healthy jobs. So the first transient store failure closes the
//! gate; consumers wait at it with their prefetched deliveries untouched (they count no
//! redelivery), one probe pings the store with backoff, and the gate opens when it answers.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::store::Store;

/// The longest wait between two pings of a closed gate's probe: workers resume within about
/// this long (up to twice, with jitter) of the store answering again. One ping a second per
/// process costs the store nothing next to the jobs it stands for.
const PROBE_MAX_DELAY: Duration = Duration::from_secs(1);

/// See the module docs. Shared by every consumer of a process.
pub(crate) struct StoreGate {
    store: Arc<dyn Store>,
    /// True while open.
    open: watch::Sender<bool>,
    /// True while a probe runs; held while the gate opens or closes, so that a close never
    /// misses a probe that is about to end.
    probing: Mutex<bool>,
}

impl StoreGate {
    /// An open gate on `store`.
    pub(crate) fn new(store: Arc<dyn Store>) -> Arc<Self> {
        Arc::new(Self {
            store,
            open: watch::Sender::new(true),
            probing: Mutex::new(false),
        })
    }

    /// True while the store is taken to answer.
    pub(crate) fn is_open(&self) -> bool {
        *self.open.borrow()
    }

    /// Returns once the gate is open (at once when it is).
    pub(crate) async fn wait_open(&self) {
        let mut rx = self.open.subscribe();
        // An error means the sender is gone, which cannot happen while `self` lives.
        let _ = rx.wait_for(|open| *open).await;
    }

    /// Closes the gate after a transient store failure and starts a probe (unless one runs)
    /// that pings the store with backoff (100 ms doubling to [`PROBE_MAX_DELAY`], jittered) and
    /// opens the gate when it answers, or gives up when `stop` is cancelled.
    pub(crate) fn close(self: &Arc<Self>, stop: &CancellationToken) {
        {
            let mut probing = self
                .probing
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            self.open.send_replace(false);
            if *probing {
                return;
            }
            *probing = true;
        }
        tracing::warn!(
            "the store cannot be reached; workers take no new deliveries until it answers"
        );
        let (gate, stop) = (self.clone(), stop.clone());
        tokio::spawn(async move {
            let mut delays = ExponentialBuilder::default()
                .with_min_delay(Duration::from_millis(100))
                .with_max_delay(PROBE_MAX_DELAY)
                .with_jitter()
                .without_max_times()
                .build();
            loop {
                let wait = delays.next().unwrap_or(PROBE_MAX_DELAY);
                tokio::select! {
                    () = stop.cancelled() => break,
                    () = tokio::time::sleep(wait) => {}
                }
                if gate.store.ping().await.is_ok() {
                    tracing::info!("the store answers again; workers resume");
                    let mut probing = gate
                        .probing
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    gate.open.send_replace(true);
                    *probing = false;
                    return;
                }
            }
            *gate
                .probing
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = false;
        });
    }
}
