//! Prometheus metrics (served at `GET /metrics`): names, help texts, and the recorder.
//!
//! warren records through the [`metrics`] facade and renders with
//! `metrics-exporter-prometheus`. [`install`] puts warren's recorder in place once per process
//! (the first [`crate::App`] built does it); if the embedding program installed a recorder of
//! its own first, warren's metrics go there and `/metrics` says so instead of rendering.
//!
//! Every per-queue series carries the label `queue` (the work queue's name). The README's
//! "Metrics" section lists them all with what they mean; [`ALL`] is the same list in code.

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Counter: jobs the intake answered 202 for (new jobs, not idempotent replays).
pub const JOBS_ACCEPTED: &str = "warren_jobs_accepted_total";
/// Counter: job messages the broker confirmed into a work queue or the delay levels (first
/// attempts, retries, parked redeliveries, DLQ requeues and replays).
pub const JOBS_PUBLISHED: &str = "warren_jobs_published_total";
/// Counter: jobs whose handler succeeded (recorded in the store, then acked).
pub const JOBS_SUCCEEDED: &str = "warren_jobs_succeeded_total";
/// Counter: failed attempts scheduled for another attempt through the delay levels.
pub const JOBS_RETRIED: &str = "warren_jobs_retried_total";
/// Counter: messages moved to `{queue}.dlq` by a worker (out of attempts, permanent failure,
/// or malformed).
pub const JOBS_DEAD_LETTERED: &str = "warren_jobs_dead_lettered_total";
/// Counter: deliveries of jobs already `succeeded`, `dead` or `cancelled`: acked, not run.
pub const DUPLICATES_SKIPPED: &str = "warren_duplicates_skipped_total";
/// Histogram (seconds): how long a handler ran, labelled `queue` and `outcome`
/// (`succeeded`, `retried`, `dead`).
pub const HANDLER_DURATION: &str = "warren_handler_duration_seconds";
/// Histogram (seconds): from `basic.publish` to the broker's confirm, labelled `queue` (the
/// destination: a work queue or a `.dlq`).
pub const PUBLISH_CONFIRM: &str = "warren_publish_confirm_seconds";
/// Counter: retries and delayed jobs whose delayed message was overdue and that the sweeper
/// published again from the store (`crate::sweeper`), per queue.
pub const JOBS_RESENT: &str = "warren_jobs_resent_total";
/// Gauge: handlers running now in this process, per queue.
pub const JOBS_IN_FLIGHT: &str = "warren_jobs_in_flight";
/// Gauge: 1 while this process can open a channel on the broker, else 0 (checked every 5 s).
pub const BROKER_CONNECTED: &str = "warren_broker_connected";
/// Counter: times this process's broker connection moved to another node of the cluster
/// because the node in use was lost (see `crate::broker`).
pub const BROKER_FAILOVERS: &str = "warren_broker_failovers_total";
/// Counter (seconds): time this process's consumers waited for a token of their queue's
/// rate limit before starting a job (`crate::rate_limit`), per queue.
pub const RATE_LIMITED_SECONDS: &str = "warren_rate_limited_seconds_total";
/// Counter: times a target answered 429 (or 503 with `Retry-After`) and the queue's dispatch
/// was held across the fleet (`crate::admission`), per queue.
pub const THROTTLED: &str = "warren_throttled_total";
/// Counter: deliveries parked in the delay levels because their concurrency key had its
/// limit of running jobs and its waiting room was full (`crate::concurrency_key`), per queue.
pub const KEY_PARKED: &str = "warren_concurrency_key_parked_total";
/// Histogram (rows): jobs written per store commit, labelled `writer` (`intake` for the
/// group-committed inserts, `worker` for the group-committed claims and successes).
pub const STORE_WRITE_BATCH: &str = "warren_store_write_batch_size";

/// Every metric warren exports, with its help text: `(name, help)`.
pub const ALL: &[(&str, &str)] = &[
    (
        JOBS_ACCEPTED,
        "Jobs the intake answered 202 for (new jobs, not idempotent replays).",
    ),
    (
        JOBS_PUBLISHED,
        "Job messages the broker confirmed into a work queue or the delay levels.",
    ),
    (
        JOBS_SUCCEEDED,
        "Jobs whose handler succeeded and whose success is recorded.",
    ),
    (
        JOBS_RETRIED,
        "Failed attempts scheduled for another attempt through the delay levels.",
    ),
    (
        JOBS_DEAD_LETTERED,
        "Messages a worker moved to the queue's .dlq (out of attempts, permanent failure, malformed).",
    ),
    (
        DUPLICATES_SKIPPED,
        "Deliveries of jobs already succeeded, dead or cancelled: acked, not run.",
    ),
    (
        HANDLER_DURATION,
        "How long handlers ran, by queue and outcome (succeeded, retried, dead).",
    ),
    (
        PUBLISH_CONFIRM,
        "Time from publish to the broker's confirm, by destination queue.",
    ),
    (
        JOBS_RESENT,
        "Retries and delayed jobs overdue in the delay levels, published again from the store.",
    ),
    (JOBS_IN_FLIGHT, "Handlers running now in this process."),
    (
        BROKER_FAILOVERS,
        "Times this process's broker connection moved to another node because the node in use was lost.",
    ),
    (
        BROKER_CONNECTED,
        "1 while this process can open a channel on the broker, else 0.",
    ),
    (
        STORE_WRITE_BATCH,
        "Jobs written per store commit, by writer (intake, worker).",
    ),
    (
        RATE_LIMITED_SECONDS,
        "Seconds consumers waited for a token of their queue's rate limit before starting a job.",
    ),
    (
        THROTTLED,
        "Times a target answered 429 (or 503 with Retry-After) and the queue's dispatch was held fleet-wide.",
    ),
    (
        KEY_PARKED,
        "Deliveries parked in the delay levels because their concurrency key was at its limit.",
    ),
];

/// Histogram buckets for durations (seconds): 1 ms to 5 min.
const SECONDS_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];
/// Histogram buckets for batch sizes (rows): powers of two up to the group-commit maximum.
const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];

/// How often histogram samples are folded into their buckets between scrapes, so that memory
/// does not grow with the sample count when nobody scrapes.
pub(crate) const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// warren's recorder handle, or `None` when another recorder was installed first.
static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs warren's Prometheus recorder as the process's global `metrics` recorder (once;
/// later calls return the first answer) and describes every metric in [`ALL`].
///
/// Returns the handle that renders `/metrics`, or `None` when the process already had another
/// global recorder (warren's metrics then go to that one).
pub fn install() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
                .and_then(|b| {
                    b.set_buckets_for_metric(Matcher::Full(STORE_WRITE_BATCH.into()), BATCH_BUCKETS)
                });
            let handle = builder.ok()?.install_recorder().ok()?;
            describe();
            // At 0 from the start, so that an alert on its rate sees the series.
            counter!(BROKER_FAILOVERS).increment(0);
            Some(handle)
        })
        .as_ref()
}

/// The installed handle, if [`install`] succeeded.
pub fn handle() -> Option<&'static PrometheusHandle> {
    HANDLE.get().and_then(Option::as_ref)
}

fn describe() {
    for (name, help) in ALL {
        let (name, help) = (*name, *help);
        match name {
            HANDLER_DURATION | PUBLISH_CONFIRM => describe_histogram!(name, Unit::Seconds, help),
            STORE_WRITE_BATCH => describe_histogram!(name, Unit::Count, help),
            JOBS_IN_FLIGHT | BROKER_CONNECTED => describe_gauge!(name, help),
            _ => describe_counter!(name, help),
        }
    }
}

/// The per-queue job counters, each labelled `queue`.
const QUEUE_COUNTERS: [&str; 10] = [
    RATE_LIMITED_SECONDS,
    THROTTLED,
    KEY_PARKED,
    JOBS_ACCEPTED,
    JOBS_PUBLISHED,
    JOBS_SUCCEEDED,
    JOBS_RETRIED,
    JOBS_DEAD_LETTERED,
    DUPLICATES_SKIPPED,
    JOBS_RESENT,
];

/// Registers `queue`'s counters and gauge at 0, so dashboards see every configured queue
/// before its first job.
pub(crate) fn register_queue(queue: &str) {
    for name in QUEUE_COUNTERS {
        counter!(name, "queue" => queue.to_owned()).increment(0);
    }
    gauge!(JOBS_IN_FLIGHT, "queue" => queue.to_owned()).increment(0.0);
}

/// Adds 1 to the per-queue counter `name`.
pub(crate) fn count(name: &'static str, queue: &str) {
    counter!(name, "queue" => queue.to_owned()).increment(1);
}

/// Counts a handler in flight on `queue` until dropped.
pub(crate) struct InFlight(String);

impl InFlight {
    /// One more handler running on `queue`.
    pub(crate) fn start(queue: &str) -> Self {
        gauge!(JOBS_IN_FLIGHT, "queue" => queue.to_owned()).increment(1.0);
        Self(queue.to_owned())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        gauge!(JOBS_IN_FLIGHT, "queue" => std::mem::take(&mut self.0)).decrement(1.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_prometheus_conventions() {
        for (name, help) in ALL {
            assert!(name.starts_with("warren_"), "{name}");
            assert!(
                name.chars()
                    .all(|c| c.is_ascii_lowercase() || c == '_' || c.is_ascii_digit()),
                "{name}"
            );
            assert!(!help.is_empty());
        }
        assert!(QUEUE_COUNTERS.iter().all(|c| c.ends_with("_total")));
    }

    #[test]
    fn readme_documents_every_metric() {
        let readme = include_str!("../README.md");
        for (name, _) in ALL {
            assert!(
                readme.contains(name),
                "README.md's Metrics section should document {name}"
            );
        }
    }
}
