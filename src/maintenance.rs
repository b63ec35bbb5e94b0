//! Upkeep passes that every process runs on a timer (`crate::periodic` is the loop): the
//! broker probe and the retention prune. Each is one pass, callable on its own.

use std::time::Duration;

use tracing::{info, warn};

use crate::broker::Broker;
use crate::store::Store;

/// One probe: opens and closes a channel to set `warren_broker_connected` (1 or 0), then
/// runs the metrics histograms' upkeep (between scrapes).
pub(crate) async fn probe(broker: &Broker) {
    let connected = match broker.channel().await {
        Ok(ch) => {
            let _ = ch.close(200, "probe".into()).await;
            1.0
        }
        Err(_) => 0.0,
    };
    metrics::gauge!(crate::telemetry::BROKER_CONNECTED).set(connected);
    if let Some(h) = crate::telemetry::handle() {
        h.run_upkeep();
    }
}

/// One prune: deletes the jobs (and so their idempotency keys) that finished more than
/// `retention` before `now` (ms), as [`crate::store::Maintenance::prune`] does; returns how
/// many, 0 on a store error (logged; the next pass tries again).
pub(crate) async fn prune(store: &dyn Store, retention: Duration, now: i64) -> u64 {
    let retention_ms = i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
    match store.prune(now.saturating_sub(retention_ms)).await {
        Ok(0) => 0,
        Ok(n) => {
            info!(pruned = n, "pruned finished jobs past the retention");
            n
        }
        Err(e) => {
            warn!(error = %e, "pruning failed; will try again");
            0
        }
    }
}
