//! The soak phase: `warren run` at a fixed open-loop rate for `BENCH_SOAK_SECS`, watched
//! minute by minute: POST→202, errors and RSS.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use hdrhistogram::Histogram;
use lapin::Connection;
use serde_json::json;

use crate::child::{Cleanup, Warren};
use crate::load::open_loop;
use crate::procfs::status_kb;
use crate::report::{Figures, round};
use crate::store::{Jobs, Space, id_floor, wait_succeeded};
use crate::{Params, payload};

/// Soak: `warren run` at a fixed open-loop rate (`BENCH_SOAK_RATE`, default 200 POST/s) for
/// `BENCH_SOAK_SECS` (default 600). Per minute: POST→202 p50/p99, errors and peak RSS.
/// After a 2-minute warm-up, RSS must stay flat (growth under 10 %), no request may fail
/// and p99 must stay stable.
pub(crate) async fn phase_soak(p: &Params, conn: &Connection, cleanup: &Cleanup, f: &mut Figures) {
    let space = Space::new(&p.store, cleanup).await;
    let q = cleanup.work_queue("soak");
    println!(
        "soak: warren run at {} POST/s for {} s",
        p.soak_rate, p.soak_secs
    );
    let w = Warren::start(&space, "soak", "run", &[&q], p.prefetch).await;
    let pid = w.pid;
    let from = id_floor();
    let n = p.soak_rate * p.soak_secs as usize;
    let mut rss_by_minute: BTreeMap<u64, u64> = BTreeMap::new();
    let rate = p.soak_rate;
    let (answers, _) = open_loop(
        w.addr,
        &format!("/v1/queues/{q}/jobs"),
        32,
        n,
        rate,
        |i| Bytes::from(format!(r#"{{"payload":{}}}"#, payload(i))),
        |i| {
            if i % rate == 0 {
                let minute = (i / rate / 60) as u64;
                let kb = status_kb(pid, "VmRSS").unwrap_or(0);
                let e = rss_by_minute.entry(minute).or_default();
                *e = (*e).max(kb);
            }
        },
    )
    .await;
    let mut by_minute: BTreeMap<u64, (Histogram<u64>, usize)> = BTreeMap::new();
    let mut last: Vec<(usize, uuid::Uuid)> = answers
        .iter()
        .filter_map(|a| Some((a.i, a.id.as_deref()?.parse().ok()?)))
        .collect();
    last.sort_unstable();
    let sample = last.iter().rev().take(8).map(|(_, id)| *id).collect();
    for a in answers {
        let minute = (a.i / rate / 60) as u64;
        let e = by_minute.entry(minute).or_insert_with(|| {
            (
                Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram"),
                0,
            )
        });
        if a.id.is_some() {
            e.0.saturating_record(a.took_us.max(1));
        } else {
            e.1 += 1;
        }
    }
    let accepted: u64 = by_minute.values().map(|(h, _)| h.len()).sum();
    let jobs = Jobs {
        n: accepted as usize,
        from,
        sample,
    };
    let done = wait_succeeded(conn, &space, &q, &jobs, false, Duration::from_secs(300))
        .await
        .succeeded;
    let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    let mut minutes = Vec::new();
    println!("  minute  accepted  errors  p50 ms  p99 ms  RSS MB");
    for (m, (h, errors)) in &by_minute {
        let rss = rss_by_minute.get(m).copied().unwrap_or(0) as f64 / 1024.0;
        println!(
            "  {m:>6}  {:>8}  {errors:>6}  {:>6.2}  {:>6.2}  {rss:>6.1}",
            h.len(),
            ms(h, 0.5),
            ms(h, 0.99)
        );
        minutes.push(json!({
            "minute": m, "accepted": h.len(), "errors": errors,
            "p50_ms": round(ms(h, 0.5), 2), "p99_ms": round(ms(h, 0.99), 2),
            "rss_mb": round(rss, 1),
        }));
    }
    let errors: usize = by_minute.values().map(|(_, e)| e).sum();
    let after_warmup: Vec<f64> = rss_by_minute
        .iter()
        .filter(|(m, _)| **m >= 2)
        .map(|(_, kb)| *kb as f64 / 1024.0)
        .collect();
    // Growth and p99 need minutes after the warm-up; a shorter run reports neither.
    let growth = match after_warmup.as_slice() {
        [first, .., last] if *first > 0.0 => Some((last - first) / first * 100.0),
        _ => None,
    };
    let p99s: Vec<f64> = by_minute
        .iter()
        .filter(|(m, _)| **m >= 2)
        .map(|(_, (h, _))| ms(h, 0.99))
        .collect();
    let p99_max = p99s.iter().copied().reduce(f64::max);
    let after = match (growth, p99_max) {
        (Some(growth), Some(max)) => format!(
            "RSS growth after warm-up {growth:.1} %; p99 per minute after warm-up {:.2}..{max:.2} ms",
            p99s.iter().copied().fold(f64::INFINITY, f64::min)
        ),
        _ => "no RSS growth or p99 after warm-up: the run ended within the 2-minute warm-up"
            .to_owned(),
    };
    println!("  {accepted} accepted, {errors} failed, {done} succeeded; {after}");
    f.set("soak_errors", errors as f64);
    if let Some(growth) = growth {
        f.set("soak_rss_growth_pct", growth);
    }
    if let Some(max) = p99_max {
        f.set("soak_p99_max_ms", max);
    }
    f.note("soak_minutes", json!(minutes));
    f.note("soak_rate_per_s", json!(p.soak_rate));
    f.note("soak_secs", json!(p.soak_secs));
    w.stop().await;
}
