//! Periodic services (the scheduler, pruning, the broker probe): each is a single pass, a
//! function tests call directly, with this loop around it.

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Runs `pass` until `stop` is cancelled: each pass returns how long to wait before the
/// next. A pass in progress is finished before `stop` is seen.
pub(crate) async fn run<F, Fut>(stop: CancellationToken, mut pass: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Duration>,
{
    while !stop.is_cancelled() {
        let wait = pass().await;
        tokio::select! {
            () = stop.cancelled() => break,
            () = tokio::time::sleep(wait) => {}
        }
    }
}
