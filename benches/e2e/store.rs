//! The store, read by the bench (read-only) to time jobs by their own `started_at` and
//! `finished_at` instead of polling the API per job.
//!
//! Every query of the bench is here, behind [`StoreReader`] and a few small functions: the
//! rest of the bench does not know how the store is reached.

use std::collections::BTreeMap;
use std::path::Path;
use std::str::FromStr;
use std::time::{Duration, Instant};

use lapin::Connection;

use crate::raw::depth;

/// warren's store of a run (`warren.db` in its dir), open read-only.
pub(crate) struct StoreReader(sqlx::SqlitePool);

impl StoreReader {
    /// Closes the store.
    pub(crate) async fn close(&self) {
        self.0.close().await;
    }
}

pub(crate) async fn open_store(dir: &Path) -> StoreReader {
    let opts = sqlx::sqlite::SqliteConnectOptions::from_str(&format!(
        "sqlite://{}",
        dir.join("warren.db").display()
    ))
    .expect("store url")
    .read_only(true);
    sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(opts)
        .await
        .map(StoreReader)
        .expect("open the store read-only")
}

/// (succeeded jobs, min started_at, max finished_at) of `queue`.
async fn succeeded(store: &StoreReader, queue: &str) -> (i64, i64, i64) {
    sqlx::query_as::<_, (i64, Option<i64>, Option<i64>)>(
        "SELECT COUNT(*), MIN(started_at), MAX(finished_at) FROM jobs \
         WHERE queue = ? AND status = 'succeeded'",
    )
    .bind(queue)
    .fetch_one(&store.0)
    .await
    .map(|(n, a, b)| (n, a.unwrap_or(0), b.unwrap_or(0)))
    .expect("store query")
}

/// Waits until `n` jobs of `queue` succeeded: polls the queue's depth (cheap) until it is
/// empty, then the store. Panics after `timeout`.
pub(crate) async fn wait_succeeded(
    conn: &Connection,
    store: &StoreReader,
    queue: &str,
    n: usize,
    timeout: Duration,
) -> (i64, i64, i64) {
    let deadline = Instant::now() + timeout;
    while depth(conn, queue).await.unwrap_or(0) > 0 {
        assert!(
            Instant::now() < deadline,
            "{queue} not drained in {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    loop {
        let s = succeeded(store, queue).await;
        if s.0 >= n as i64 {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "{queue}: {} of {n} jobs succeeded within {timeout:?}",
            s.0
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// When each job of `queue` started (`started_at`, Unix ms), by job id; jobs that have not
/// started are left out.
pub(crate) async fn started_at(store: &StoreReader, queue: &str) -> BTreeMap<String, i64> {
    sqlx::query_as::<_, (String, Option<i64>)>("SELECT id, started_at FROM jobs WHERE queue = ?")
        .bind(queue)
        .fetch_all(&store.0)
        .await
        .expect("store query")
        .into_iter()
        .filter_map(|(id, s)| Some((id, s?)))
        .collect()
}
