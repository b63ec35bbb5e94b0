//! The drain phases: `warren run` empties a backlog, the intake phase's or (`backlog`) a large
//! one loaded untimed.

use std::time::{Duration, Instant};

use lapin::Connection;
use serde_json::json;

use crate::Params;
use crate::child::{Cleanup, Launch, Warren};
use crate::load::{batch_accepted, batch_bodies, closed_loop};
use crate::procfs::{CpuMeter, CpuTotals, RssWatch, status_kb, wait_quiet};
use crate::raw::depth;
use crate::report::{Figures, round};
use crate::store::{Jobs, Space, collect, id_floor, wait_drained};

/// What one drain measured.
pub(crate) struct Drained {
    /// Jobs / (last `finished_at` − first `started_at`).
    pub(crate) rate: f64,
    /// Peak RSS of `warren run` (MB).
    pub(crate) rss_mb: f64,
    /// CPU while it ran.
    pub(crate) cpu: CpuTotals,
}

/// `warren run` (tagged `tag`) on `space` empties the backlog of `jobs` in `bk`, once the
/// machine is quiet.
pub(crate) async fn drain(
    p: &Params,
    space: &Space,
    conn: &Connection,
    bk: &str,
    jobs: &Jobs,
    tag: &str,
) -> Drained {
    drain_with(&Launch::default(), p, space, conn, bk, jobs, tag).await
}

/// [`drain`] with the `warren` that `how` says.
pub(crate) async fn drain_with(
    how: &Launch<'_>,
    p: &Params,
    space: &Space,
    conn: &Connection,
    bk: &str,
    jobs: &Jobs,
    tag: &str,
) -> Drained {
    let before = depth(conn, bk).await.unwrap_or(0);
    println!(
        "{tag}: warren run (noop, claims and status on) over a backlog of {before} jobs ({})",
        space.describe()
    );
    wait_quiet().await;
    let mut w = Warren::launch(how, space, tag, "run", &[bk], p.prefetch).await;
    let rss = RssWatch::start(w.pid);
    if p.perf {
        w.profile(tag);
    }
    let cpu = CpuMeter::start(Some(w.pid));
    let deadline = Instant::now() + Duration::from_secs(900);
    let store = wait_drained(conn, space, bk, &jobs.sample, deadline).await;
    let mut totals = CpuTotals::default();
    cpu.stop(&mut totals, jobs.n);
    w.stop_profile();
    let done = collect(&*store, bk, jobs.from, jobs.n, false, deadline).await;
    drop(store);
    let secs = (done.last_finish - done.first_start) as f64 / 1000.0;
    let rate = done.succeeded as f64 / secs.max(1e-3);
    let peak = rss.peak_mb();
    let hwm = status_kb(w.pid, "VmHWM").unwrap_or(0) as f64 / 1024.0;
    println!(
        "  {} jobs succeeded in {secs:.2} s (first start to last finish) = {rate:.0} jobs/s; peak RSS {peak:.1} MB (VmHWM {hwm:.1} MB)",
        done.succeeded
    );
    println!("  {}", totals.line());
    drop(rss);
    w.stop().await;
    Drained {
        rate,
        rss_mb: peak.max(hwm),
        cpu: totals,
    }
}

/// Drain: `warren run` empties the backlog in `bk`; `keys` name its rate and peak RSS.
pub(crate) async fn phase_drain(
    p: &Params,
    space: &Space,
    conn: &Connection,
    bk: &str,
    jobs: &Jobs,
    f: &mut Figures,
    keys: (&'static str, &'static str),
) {
    let d = drain(p, space, conn, bk, jobs, "drain").await;
    f.note(&format!("cpu_{}", keys.0), d.cpu.json());
    f.set(keys.0, d.rate);
    f.set(keys.1, d.rss_mb);
}

/// Loads `n` jobs into `bk` untimed through the batch endpoint of a `warren serve` on
/// `space` (tagged `tag`), in slices of 100,000 so that the bench does not hold every body at
/// once; prints the count as it goes when `loud`. Returns the jobs and the peak RSS of that
/// `warren serve` (MB).
pub(crate) async fn load_backlog(
    p: &Params,
    space: &Space,
    bk: &str,
    n: usize,
    tag: &str,
    loud: bool,
) -> (Jobs, f64) {
    load_backlog_with(&Launch::default(), p, space, bk, n, tag, loud).await
}

/// [`load_backlog`] through the `warren` that `how` says.
pub(crate) async fn load_backlog_with(
    how: &Launch<'_>,
    p: &Params,
    space: &Space,
    bk: &str,
    n: usize,
    tag: &str,
    loud: bool,
) -> (Jobs, f64) {
    let w = Warren::launch(how, space, tag, "serve", &[bk], p.prefetch).await;
    let rss = RssWatch::start(w.pid);
    let from = id_floor();
    let (mut accepted, mut sample) = (0, Vec::new());
    while accepted < n {
        let slice = 100_000.min(n - accepted);
        let r = closed_loop(
            w.addr,
            &format!("/v1/queues/{bk}/jobs/batch"),
            batch_bodies(slice, 1000),
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
        sample = r.tail_ids;
        if loud {
            println!("  {accepted} loaded");
        }
    }
    let peak = rss.peak_mb();
    drop(rss);
    w.stop().await;
    let jobs = Jobs {
        n: accepted,
        from,
        sample,
    };
    (jobs, peak)
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
    let space = Space::new(&p.store, cleanup).await;
    let bk = cleanup.work_queue("big");
    println!(
        "backlog: loading {} jobs through the batch endpoint",
        p.backlog_n
    );
    let (jobs, peak) = load_backlog(p, &space, &bk, p.backlog_n, "big-load", true).await;
    println!("  peak RSS of warren serve while loading: {peak:.1} MB");
    f.note("rss_backlog_1m_load_mb", json!(round(peak, 1)));
    phase_drain(
        p,
        &space,
        conn,
        &bk,
        &jobs,
        f,
        ("drain_1m_per_s", "rss_backlog_1m_mb"),
    )
    .await;
}
