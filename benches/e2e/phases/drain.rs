//! The drain phases: `warren run` empties a backlog, the intake phase's or (`backlog`) a large
//! one loaded untimed.

use std::path::Path;
use std::time::Duration;

use lapin::Connection;
use serde_json::json;

use crate::Params;
use crate::broker::unique;
use crate::child::{Cleanup, Warren};
use crate::load::{batch_accepted, batch_bodies, closed_loop};
use crate::procfs::{CpuMeter, CpuTotals, RssWatch, status_kb, wait_quiet};
use crate::raw::depth;
use crate::report::{Figures, round};
use crate::store::{open_store, wait_succeeded};

/// Drain: `warren run` empties the backlog in `bk`.
pub(crate) async fn phase_drain(
    p: &Params,
    dir: &Path,
    conn: &Connection,
    bk: &str,
    backlog: usize,
    f: &mut Figures,
    keys: (&'static str, &'static str),
) {
    let before = depth(conn, bk).await.unwrap_or(0);
    println!("drain: warren run (noop, claims and status on) over a backlog of {before} jobs");
    wait_quiet().await;
    let mut w = Warren::start(dir, "drain", "run", &[bk], p.prefetch).await;
    let rss = RssWatch::start(w.pid);
    if p.perf {
        w.profile("drain");
    }
    let cpu = CpuMeter::start(Some(w.pid));
    let store = open_store(dir).await;
    let (n, first_start, last_finish) =
        wait_succeeded(conn, &store, bk, backlog, Duration::from_secs(600)).await;
    let mut totals = CpuTotals::default();
    cpu.stop(&mut totals, backlog);
    w.stop_profile();
    let secs = (last_finish - first_start) as f64 / 1000.0;
    let rate = n as f64 / secs.max(1e-3);
    let peak = rss.peak_mb();
    let hwm = status_kb(w.pid, "VmHWM").unwrap_or(0) as f64 / 1024.0;
    println!(
        "  {n} jobs succeeded in {secs:.2} s (first start to last finish) = {rate:.0} jobs/s; peak RSS {peak:.1} MB (VmHWM {hwm:.1} MB)"
    );
    println!("  {}", totals.line());
    f.note(&format!("cpu_{}", keys.0), totals.json());
    f.set(keys.0, rate);
    f.set(keys.1, peak.max(hwm));
    store.close().await;
    drop(rss);
    w.stop().await;
}

/// Large backlog: `BENCH_BACKLOG_N` jobs (default 1,000,000) loaded untimed through the
/// batch endpoint of `warren serve`, then `warren run` drains them; its peak RSS must stay
/// within the same bound as with 100,000 (it must not grow with the backlog).
pub(crate) async fn phase_backlog(
    p: &Params,
    conn: &Connection,
    cleanup: &Cleanup,
    f: &mut Figures,
) {
    let dir = tempfile::tempdir().expect("tempdir");
    let bk = unique("big");
    cleanup.add(&bk);
    cleanup.add(&format!("{bk}.dlq"));
    println!(
        "backlog: loading {} jobs through the batch endpoint",
        p.backlog_n
    );
    let w = Warren::start(dir.path(), "big-load", "serve", &[&bk], p.prefetch).await;
    let rss = RssWatch::start(w.pid);
    let mut accepted = 0;
    // In slices, so the bench does not hold every body at once.
    let slice = 100_000;
    while accepted < p.backlog_n {
        let n = slice.min(p.backlog_n - accepted);
        let r = closed_loop(
            w.addr,
            &format!("/v1/queues/{bk}/jobs/batch"),
            batch_bodies(n, 1000),
            2,
            batch_accepted,
            1000,
        )
        .await;
        assert_eq!(
            r.failed, 0,
            "backlog load refused jobs: {:?}",
            r.first_error
        );
        accepted += r.accepted;
        println!("  {accepted} loaded");
    }
    println!(
        "  peak RSS of warren serve while loading: {:.1} MB",
        rss.peak_mb()
    );
    f.note("rss_backlog_1m_load_mb", json!(round(rss.peak_mb(), 1)));
    drop(rss);
    w.stop().await;
    phase_drain(
        p,
        dir.path(),
        conn,
        &bk,
        accepted,
        f,
        ("drain_1m_per_s", "rss_backlog_1m_mb"),
    )
    .await;
}
