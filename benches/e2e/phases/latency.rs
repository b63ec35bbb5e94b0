//! End to end and latency, on one `warren run`: closed-loop POSTs while its workers run the
//! jobs, then open-loop POSTs at a fixed rate for POST→202 and accepted→started.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use lapin::Connection;
use serde_json::json;

use crate::Params;
use crate::child::{Cleanup, Warren};
use crate::load::{closed_loop, connect, get, open_loop, single_accepted, single_bodies};
use crate::procfs::{CpuMeter, CpuTotals, RssWatch, wait_quiet};
use crate::report::{Figures, median, report_load, round};
use crate::store::{Jobs, Space, collect, id_floor, wait_drained};

/// End to end and latency, on one `warren run`.
pub(crate) async fn phase_run(
    p: &Params,
    space: &Space,
    conn: &Connection,
    cleanup: &Cleanup,
    f: &mut Figures,
) {
    let (e2e, lat) = (cleanup.work_queue("e2e"), cleanup.work_queue("lat"));
    let mut w = Warren::start(space, "run", "run", &[&e2e, &lat], p.prefetch).await;
    let rss = RssWatch::start(w.pid);
    if p.runs("e2e") {
        println!(
            "end to end: warren run; {} POSTs from C={} clients while its workers run them, in {} rounds",
            p.e2e_n, p.clients, p.repeat
        );
        if p.perf {
            w.profile("e2e");
        }
        let per_round = p.e2e_n.div_ceil(p.repeat).max(1);
        let mut rates = Vec::new();
        let mut totals = CpuTotals::default();
        let mut done = 0;
        for round in 1..=p.repeat {
            wait_quiet().await;
            let from = id_floor();
            let cpu = CpuMeter::start(Some(w.pid));
            let load = closed_loop(
                w.addr,
                &format!("/v1/queues/{e2e}/jobs"),
                single_bodies(per_round),
                p.clients,
                single_accepted,
                1,
            )
            .await;
            report_load(&format!("posts round {round}"), &load);
            assert!(
                load.accepted > 0,
                "end to end: no POST accepted in round {round} (is the broker up?)"
            );
            let deadline = Instant::now() + Duration::from_secs(300);
            let store = wait_drained(conn, space, &e2e, &load.tail_ids, deadline).await;
            cpu.stop(&mut totals, load.accepted);
            let round_done = collect(&*store, &e2e, from, load.accepted, false, deadline).await;
            drop(store);
            done += round_done.succeeded;
            let (n, last_finish) = (done, round_done.last_finish);
            let secs = (last_finish as f64 - load.start_ms) / 1000.0;
            let rate = load.accepted as f64 / secs.max(1e-3);
            println!(
                "  round {round}: {} jobs from first POST to last `succeeded` in {secs:.2} s = {rate:.0} jobs/s ({n} succeeded in all)",
                load.accepted
            );
            rates.push(rate);
        }
        w.stop_profile();
        println!("  {}", totals.line());
        f.note("cpu_e2e", totals.json());
        f.note("e2e_rounds", json!(rates));
        f.set("e2e_per_s", median(rates));
        let peak = rss.peak_mb();
        println!("  RSS under end-to-end load: {peak:.1} MB");
        f.note("rss_e2e_mb", json!(round(peak, 1)));
        f.set("rss_load_mb", f.get("rss_load_mb").unwrap_or(0.0).max(peak));
    }
    if p.runs("latency") {
        let l = latency(p, &mut w, conn, space, &lat, true).await;
        f.note("cpu_latency", l.cpu.json());
        f.set("post_p50_ms", l.post_p50);
        f.set("post_p99_ms", l.post_p99);
        f.set("start_p50_ms", l.start_p50);
        f.set("start_p99_ms", l.start_p99);
        f.note("latency_refused", json!(l.refused));
        f.note("latency_started_before_202", json!(l.before_202));
        let peak = rss.peak_mb();
        f.set("rss_load_mb", f.get("rss_load_mb").unwrap_or(0.0).max(peak));
    }
    drop(rss);
    w.stop().await;
}

/// What [`latency`] measured (ms).
pub(crate) struct Lat {
    pub(crate) post_p50: f64,
    pub(crate) post_p99: f64,
    pub(crate) post_max: f64,
    pub(crate) start_p50: f64,
    pub(crate) start_p99: f64,
    pub(crate) accepted: usize,
    pub(crate) refused: usize,
    pub(crate) before_202: usize,
    pub(crate) cpu: CpuTotals,
}

/// How the broker's publisher confirms to `queue` were spread, from warren's
/// `warren_publish_confirm_seconds` histogram: "1 ms: 40.1%, 2.5 ms: …", or `None` when
/// `/metrics` does not answer. It tells whether a POST→202 tail is the broker's.
async fn confirm_shares(addr: SocketAddr, queue: &str) -> Option<String> {
    let mut c = connect(addr).await.ok()?;
    let (200, text) = get(&mut c, "/metrics").await.ok()? else {
        return None;
    };
    let text = String::from_utf8_lossy(&text).into_owned();
    let series = format!("warren_publish_confirm_seconds_bucket{{queue=\"{queue}\",le=\"");
    let buckets: Vec<(String, f64)> = text
        .lines()
        .filter_map(|l| l.strip_prefix(series.as_str()))
        .filter_map(|rest| {
            let (le, count) = rest.split_once("\"} ")?;
            Some((le.to_owned(), count.trim().parse().ok()?))
        })
        .collect();
    let total = buckets.iter().find(|(le, _)| le == "+Inf")?.1.max(1.0);
    Some(
        buckets
            .iter()
            .filter(|(le, _)| ["0.001", "0.0025", "0.005", "0.01", "0.025"].contains(&le.as_str()))
            .map(|(le, n)| {
                let ms = le.parse::<f64>().unwrap_or(0.0) * 1000.0;
                format!("{ms} ms: {:.1}%", n / total * 100.0)
            })
            .collect::<Vec<_>>()
            .join(", "),
    )
}

/// Latency: [`open_loop`] at `lat_rate` POST/s for `lat_secs` over 64 connections (once the
/// machine is quiet, when `quiet_first`); prints POST→202 and accepted→started, and the
/// dispatcher's own lateness apart.
pub(crate) async fn latency(
    p: &Params,
    w: &mut Warren,
    conn: &Connection,
    space: &Space,
    queue: &str,
    quiet_first: bool,
) -> Lat {
    let n = p.lat_rate * p.lat_secs as usize;
    println!(
        "latency: open loop at {} POST/s for {} s ({n} jobs) on warren run",
        p.lat_rate, p.lat_secs
    );
    if p.perf {
        w.profile("latency");
    }
    let bodies = single_bodies(n);
    if quiet_first {
        wait_quiet().await;
    }
    let from = id_floor();
    let cpu = CpuMeter::start(Some(w.pid));
    let (answers, dispatch_h) = open_loop(
        w.addr,
        &format!("/v1/queues/{queue}/jobs"),
        64,
        n,
        p.lat_rate,
        move |i| bodies[i].clone(),
        |_| {},
    )
    .await;
    let (post_h, jobs) = crate::load::accepted(&answers);
    let failed = answers.len() - jobs.len();
    let accepted: Vec<(uuid::Uuid, f64)> = jobs.into_iter().map(|(_, id, at)| (id, at)).collect();
    w.stop_profile();
    // The last ids answered, by schedule: a sample of the last jobs accepted.
    let mut by_time = accepted.clone();
    by_time.sort_by(|a, b| a.1.total_cmp(&b.1));
    let jobs = Jobs {
        n: accepted.len(),
        from,
        sample: by_time.iter().rev().take(8).map(|(id, _)| *id).collect(),
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    let store = wait_drained(conn, space, queue, &jobs.sample, deadline).await;
    let mut totals = CpuTotals::default();
    cpu.stop(&mut totals, n);
    println!("  {}", totals.line());
    let finished = collect(&*store, queue, from, jobs.n, true, deadline).await;
    drop(store);
    let (done, started) = (finished.succeeded, finished.started);
    let mut start_h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
    let mut before_202 = 0;
    for (id, accepted_ms) in &accepted {
        if let Some(s) = started.get(id) {
            // started_at has whole-ms resolution: take the middle of its millisecond.
            let d = *s as f64 + 0.5 - accepted_ms;
            if d < 0.0 {
                before_202 += 1;
            }
            start_h.saturating_record((d.max(0.0) * 1000.0) as u64 + 1);
        }
    }
    let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "  {} accepted ({failed} refused), {done} succeeded; POST→202 p50 {:.2} ms p99 {:.2} ms max {:.2} ms",
        accepted.len(),
        ms(&post_h, 0.5),
        ms(&post_h, 0.99),
        ms(&post_h, 1.0)
    );
    println!(
        "  the dispatcher handed requests over after their scheduled time by p50 {:.2} ms p99 {:.2} ms (not counted)",
        ms(&dispatch_h, 0.5),
        ms(&dispatch_h, 0.99)
    );
    println!(
        "  accepted→started p50 {:.2} ms p99 {:.2} ms max {:.2} ms ({before_202} jobs started before their 202 arrived, counted as 0)",
        ms(&start_h, 0.5),
        ms(&start_h, 0.99),
        ms(&start_h, 1.0)
    );
    if let Some(shares) = confirm_shares(w.addr, queue).await {
        println!("  of these, the broker's publisher confirm came within {shares}");
    }
    Lat {
        post_p50: ms(&post_h, 0.5),
        post_p99: ms(&post_h, 0.99),
        post_max: ms(&post_h, 1.0),
        start_p50: ms(&start_h, 0.5),
        start_p99: ms(&start_h, 0.99),
        accepted: accepted.len(),
        refused: failed,
        before_202,
        cpu: totals,
    }
}
