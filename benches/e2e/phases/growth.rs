//! Growth (`BENCH_PHASES=growth`): does warren slow down as its store fills, and while it
//! prunes?
//!
//! 1. **Seed.** A second store gets `BENCH_GROWTH_ROWS` (default 5,000,000) finished jobs of
//!    a queue of their own through `import` ([`Seed`]), created and finished over one day
//!    ending 2 hours ago; on PostgreSQL then `VACUUM (ANALYZE)` ([`Space::settle`]).
//! 2. **Intake and drain** ([`intake_and_drain`]): the intake phase's single-POST rounds on
//!    each store, the two stores' rounds back to back, then each round's backlog drained by
//!    `warren run` as the drain phase drains its own, again back to back; the ratios
//!    seeded/empty are the medians of the rounds' ratios.
//! 4. **Prune.** On the seeded store a fresh `warren run` takes the latency phase's open loop
//!    (`BENCH_LAT_RATE` POST/s for `BENCH_LAT_SECS`) twice: with warren's default retention (7
//!    days: nothing to prune), then started with `store.retention = "1h"`, which makes every
//!    seeded job prunable, so that its start-up prune runs during the load. It reports POST→202
//!    p99 with the prune over without, the seeded jobs deleted from just before to just after
//!    the window, and how long the whole prune took (the first job by id, one `export` row a
//!    second, tells how far it has come; warren's log line gives its end and count).

use std::time::{Duration, Instant, SystemTime};

use lapin::Connection;
use serde_json::json;

use crate::Params;
use crate::broker::unique;
use crate::child::{Cleanup, Launch, Warren};
use crate::load::{batch_accepted, batch_bodies, closed_loop, single_accepted, single_bodies};
use crate::phases::drain::drain;
use crate::phases::intake::{Beside, measured_round};
use crate::phases::latency::{Lat, latency};
use crate::procfs::{CpuMeter, CpuTotals, wait_quiet};
use crate::repo;
use crate::report::{Figures, median, report_load, round};
use crate::store::{Jobs, Seed, Space, id_floor};

const HOUR_MS: i64 = 3_600_000;

/// The retention that makes every seeded job (finished 2 to 26 hours ago) prunable and no
/// job the bench made minutes ago.
const PRUNE_ALL: &str = "1h";

pub(crate) async fn phase_growth(
    p: &Params,
    conn: &Connection,
    cleanup: &Cleanup,
    f: &mut Figures,
) {
    let n = p.growth_rows;
    println!(
        "growth ({}): single POST and drain on an empty store and on one holding {n} finished jobs, then POST→202 at {}/s while warren prunes them",
        p.store.name(),
        p.lat_rate
    );
    let empty = Space::new(&p.store, cleanup).await;
    let seeded = Space::new(&p.store, cleanup).await;
    let seed = Seed {
        queue: unique("seed"),
        n,
        start_ms: warren::store::now_ms() - 26 * HOUR_MS,
        span_ms: 24 * HOUR_MS,
    };
    {
        let store = seeded.create().await;
        let took = seed.import(&*store).await;
        drop(store);
        let vacuum = seeded.settle().await;
        println!(
            "  seeded {} with {n} finished jobs of {} in {:.0} s ({:.0} rows/s){}",
            seeded.describe(),
            seed.queue,
            took.as_secs_f64(),
            n as f64 / took.as_secs_f64().max(1e-3),
            vacuum.map_or(String::new(), |v| format!(
                "; VACUUM (ANALYZE) {:.0} s",
                v.as_secs_f64()
            ))
        );
        f.note(
            "growth_seed",
            json!({
                "rows": n,
                "import_s": round(took.as_secs_f64(), 1),
                "vacuum_analyze_s": vacuum.map(|v| round(v.as_secs_f64(), 1)),
            }),
        );
    }

    let (intake_ratio, drain_ratio) =
        intake_and_drain(p, conn, cleanup, [&empty, &seeded], f).await;
    println!(
        "  growth: single POST seeded/empty {intake_ratio:.3}, drain seeded/empty {drain_ratio:.3} (medians of the rounds' ratios)"
    );
    f.set("growth_intake_ratio", intake_ratio);
    f.set("growth_drain_ratio", drain_ratio);
    drop(empty);

    prune(p, conn, cleanup, &seeded, &seed, f).await;
}

/// One store's side of [`intake_and_drain`].
struct Side<'a> {
    label: &'static str,
    space: &'a Space,
    serve: Option<Warren>,
    /// Per round: its queue and its jobs.
    queues: Vec<(String, Jobs)>,
    intake: Vec<f64>,
    to_raw: Vec<f64>,
    drain: Vec<f64>,
    cpu_intake: CpuTotals,
    cpu_drain: CpuTotals,
}

/// The intake and drain sub-phases: `BENCH_REPEAT` rounds of single POSTs (the intake phase's
/// `BENCH_INTAKE_N` split as it splits them) into a queue of the round's own on each store,
/// one after the other in alternating order (empty first in odd rounds), both `warren serve`
/// running all along, after a raw publish round of as many messages (as the intake phase pairs its own); then
/// each round's queue is topped up with its share of `BENCH_BATCH_N` jobs in batches
/// (untimed), and drained by a `warren run` as the drain phase drains its backlog, the two
/// stores' drains of a round again one after the other. Returns the medians over the rounds
/// of seeded/empty for the single POST and for the drain: adjacent rounds see the same
/// machine, which on these 2 cores drifts ±20 % from one minute to the next.
async fn intake_and_drain(
    p: &Params,
    conn: &Connection,
    cleanup: &Cleanup,
    spaces: [&Space; 2],
    f: &mut Figures,
) -> (f64, f64) {
    let per_round = p.intake_n.div_ceil(p.repeat).max(1);
    // Whole batches, as the batch phase splits its bodies between its rounds (a short last
    // batch would count as refused jobs).
    let batch_per_round = p.batch_n.div_ceil(p.batch_size).div_ceil(p.repeat) * p.batch_size;
    println!(
        "growth intake: {} rounds of {per_round} single POSTs from C={} clients on each store, both stores' rounds after a raw publish round of as many messages; then {batch_per_round} jobs a round in batches, untimed",
        p.repeat, p.clients
    );
    let mut sides = Vec::new();
    for (label, space) in [("empty", spaces[0]), ("seeded", spaces[1])] {
        let tag = format!("growth-serve-{label}");
        let queues: Vec<String> = (1..=p.repeat)
            .map(|r| cleanup.work_queue(&format!("growth-{label}-{r}")))
            .collect();
        let names: Vec<&str> = queues.iter().map(String::as_str).collect();
        let w = Warren::start(space, &tag, "serve", &names, p.prefetch).await;
        println!("  {label}: {} (pid {})", space.describe(), w.pid);
        sides.push(Side {
            label,
            space,
            serve: Some(w),
            queues: queues
                .into_iter()
                .map(|q| {
                    let jobs = Jobs {
                        n: 0,
                        from: id_floor(),
                        sample: Vec::new(),
                    };
                    (q, jobs)
                })
                .collect(),
            intake: Vec::new(),
            to_raw: Vec::new(),
            drain: Vec::new(),
            cpu_intake: CpuTotals::default(),
            cpu_drain: CpuTotals::default(),
        });
    }
    let beside = Beside::new(conn, cleanup).await;
    let mut cpu_raw = CpuTotals::default();
    for round in 0..p.repeat {
        let raw = beside.round(p, per_round, &mut cpu_raw).await;
        let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for i in order {
            let side = &mut sides[i];
            let Some(w) = &side.serve else { continue };
            let (q, jobs) = &mut side.queues[round];
            jobs.from = id_floor();
            let r = measured_round(
                w,
                &format!("/v1/queues/{q}/jobs"),
                single_bodies(per_round),
                p.clients,
                single_accepted,
                1,
                &mut side.cpu_intake,
            )
            .await;
            report_load(&format!("growth {} round {}", side.label, round + 1), &r);
            jobs.n = r.accepted;
            side.intake.push(r.per_s());
            side.to_raw.push(r.per_s() / raw);
        }
        println!(
            "  round {}: raw publish {raw:.0} msg/s; seeded/empty {:.3}",
            round + 1,
            sides[1].intake[round] / sides[0].intake[round]
        );
    }
    beside.delete().await;
    for side in &mut sides {
        let Some(w) = side.serve.take() else { continue };
        for (q, jobs) in &mut side.queues {
            let b = closed_loop(
                w.addr,
                &format!("/v1/queues/{q}/jobs/batch"),
                batch_bodies(batch_per_round, p.batch_size),
                p.batch_clients,
                batch_accepted,
                p.batch_size,
            )
            .await;
            assert_eq!(
                b.failed, 0,
                "the batch load refused jobs: {:?}",
                b.first_error
            );
            jobs.n += b.accepted;
            jobs.sample = b.tail_ids;
        }
        w.stop().await;
    }
    for round in 0..p.repeat {
        let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for i in order {
            let side = &mut sides[i];
            let (q, jobs) = &side.queues[round];
            let tag = format!("growth-drain-{}", side.label);
            let d = drain(p, side.space, conn, q, jobs, &tag).await;
            side.drain.push(d.rate);
            side.cpu_drain.add(&d.cpu);
        }
        println!(
            "  drain round {}: seeded/empty {:.3}",
            round + 1,
            sides[1].drain[round] / sides[0].drain[round]
        );
    }
    let ratios =
        |a: &[f64], b: &[f64]| -> Vec<f64> { a.iter().zip(b).map(|(s, e)| s / e).collect() };
    let intake_ratios = ratios(&sides[1].intake, &sides[0].intake);
    let drain_ratios = ratios(&sides[1].drain, &sides[0].drain);
    println!("  raw publish beside: {}", cpu_raw.line());
    f.note("cpu_growth_raw_beside", cpu_raw.json());
    for side in &sides {
        let l = side.label;
        println!(
            "  {l}: single POST median {:.0} jobs/s ({:.3} x the raw publish of its round), drain median {:.0} jobs/s",
            median(side.intake.clone()),
            median(side.to_raw.clone()),
            median(side.drain.clone())
        );
        println!("  {l} intake: {}", side.cpu_intake.line());
        println!("  {l} drain: {}", side.cpu_drain.line());
        f.note(&format!("growth_{l}"), json!({
            "intake_rounds": side.intake, "intake_to_raw": side.to_raw, "drain_rounds": side.drain,
            "cpu_intake": side.cpu_intake.json(), "cpu_drain": side.cpu_drain.json(),
        }));
    }
    f.set("growth_intake_empty_per_s", median(sides[0].intake.clone()));
    f.set(
        "growth_intake_seeded_per_s",
        median(sides[1].intake.clone()),
    );
    f.set("growth_drain_empty_per_s", median(sides[0].drain.clone()));
    f.set("growth_drain_seeded_per_s", median(sides[1].drain.clone()));
    f.note("growth_intake_ratios", json!(intake_ratios));
    f.note("growth_drain_ratios", json!(drain_ratios));
    (median(intake_ratios), median(drain_ratios))
}

/// The prune sub-phase (see the module docs).
async fn prune(
    p: &Params,
    conn: &Connection,
    cleanup: &Cleanup,
    seeded: &Space,
    seed: &Seed,
    f: &mut Figures,
) {
    println!(
        "growth prune: open loop at {} POST/s for {} s on the seeded store, on a fresh warren run without a prune (retention 7 d), then on one started with retention {PRUNE_ALL} (all {} seeded jobs prunable)",
        p.lat_rate, p.lat_secs, seed.n
    );
    let keep = window(p, conn, cleanup, seeded, "growth-keep", None).await;

    let (before, gone_before) = {
        let store = seeded.open().await;
        let status = store.status().await.expect("store status");
        (status, seed.pruned(&*store).await)
    };
    assert_eq!(
        gone_before, 0,
        "seeded jobs were pruned before the prune run"
    );
    wait_quiet().await;
    let q = cleanup.work_queue("growth-prune");
    let (spawned, spawned_at) = (Instant::now(), SystemTime::now());
    let how = Launch {
        retention: Some(PRUNE_ALL),
        ..Launch::default()
    };
    let mut w = Warren::launch(&how, seeded, "growth-prune", "run", &[&q], p.prefetch).await;
    let at_start = (spawned.elapsed(), seed.pruned(&*seeded.open().await).await);
    let with = latency(p, &mut w, conn, seeded, &q, false).await;
    let at_end = (spawned.elapsed(), seed.pruned(&*seeded.open().await).await);
    let in_window = at_end.1 - at_start.1;
    println!(
        "  with the prune: POST→202 p50 {:.2} ms p99 {:.2} ms; the prune deleted {in_window} seeded jobs from {:.1} s to {:.1} s after warren's start (the window is {} s; {} before it)",
        with.post_p50,
        with.post_p99,
        at_start.0.as_secs_f64(),
        at_end.0.as_secs_f64(),
        p.lat_secs,
        at_start.1
    );

    // Until the prune is over: how far it has come, every second; its CPU from here on.
    let cpu = CpuMeter::start(Some(w.pid));
    let mut timeline = vec![
        (round(at_start.0.as_secs_f64(), 1), at_start.1),
        (round(at_end.0.as_secs_f64(), 1), at_end.1),
    ];
    let mut said = Instant::now();
    let mut gone = at_end.1;
    while gone < seed.n {
        assert!(
            spawned.elapsed() < Duration::from_secs(p.growth_prune_wait),
            "the prune did not end within BENCH_GROWTH_PRUNE_WAIT={} s ({gone} of {} deleted)",
            p.growth_prune_wait,
            seed.n
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
        gone = seed.pruned(&*seeded.open().await).await;
        if said.elapsed() >= Duration::from_secs(10) || gone >= seed.n {
            said = Instant::now();
            let t = spawned.elapsed().as_secs_f64();
            eprintln!(
                "growth: the prune has deleted {gone} of {} seeded jobs after {t:.0} s",
                seed.n
            );
            timeline.push((round(t, 1), gone));
        }
    }
    let polled = spawned.elapsed();
    let mut totals = CpuTotals::default();
    cpu.stop(&mut totals, seed.n - at_end.1);
    // warren's own line at the prune's end: its time and count.
    let logged = prune_logged(spawned_at);
    let secs = logged.map_or(polled.as_secs_f64(), |(s, _)| s);
    let after = seeded.open().await.status().await.expect("store status");
    w.stop().await;
    println!(
        "  the whole prune took {secs:.1} s ({:.0} rows/s){}; jobs in the store {} before, {} after",
        seed.n as f64 / secs.max(1e-3),
        logged.map_or(
            " (by polling; warren logged no end)".to_owned(),
            |(_, n)| format!(" (warren logged pruned={n})")
        ),
        before.total,
        after.total
    );
    if totals.json()["jobs"] != json!(0) {
        println!(
            "  the prune after the window (a job here is a pruned job): {}",
            totals.line()
        );
    }
    let ratio = with.post_p99 / keep.post_p99;
    println!(
        "  growth: POST→202 p99 with the prune / without {ratio:.2} ({:.2} / {:.2} ms)",
        with.post_p99, keep.post_p99
    );
    f.set("growth_post_p99_keep_ms", keep.post_p99);
    f.set("growth_post_p99_prune_ms", with.post_p99);
    f.set("growth_prune_p99_ratio", ratio);
    f.set("growth_pruned_in_window", in_window as f64);
    f.set("growth_prune_secs", secs);
    f.note(
        "growth_prune",
        json!({
            "keep": lat_json(&keep), "prune": lat_json(&with),
            "window_from_s": round(at_start.0.as_secs_f64(), 2),
            "window_to_s": round(at_end.0.as_secs_f64(), 2),
            "pruned_before_window": at_start.1,
            "pruned_in_window": in_window,
            "prune_s": round(secs, 1),
            "prune_s_polled": round(polled.as_secs_f64(), 1),
            "logged_pruned": logged.map(|(_, n)| n),
            "timeline_s_pruned": timeline,
            "cpu_after_window_per_pruned_job": totals.json(),
            "jobs_before": before.total, "jobs_after": after.total,
        }),
    );
}

/// One open-loop window on a fresh `warren run` (tagged `tag`, with `retention`) on the
/// seeded store, started once the machine is quiet; the load starts as soon as it is ready.
async fn window(
    p: &Params,
    conn: &Connection,
    cleanup: &Cleanup,
    space: &Space,
    tag: &str,
    retention: Option<&str>,
) -> Lat {
    wait_quiet().await;
    let q = cleanup.work_queue(tag);
    let how = Launch {
        retention,
        ..Launch::default()
    };
    let mut w = Warren::launch(&how, space, tag, "run", &[&q], p.prefetch).await;
    let l = latency(p, &mut w, conn, space, &q, false).await;
    w.stop().await;
    println!(
        "  {tag}: POST→202 p50 {:.2} ms p99 {:.2} ms max {:.2} ms",
        l.post_p50, l.post_p99, l.post_max
    );
    l
}

fn lat_json(l: &Lat) -> serde_json::Value {
    json!({
        "post_p50_ms": round(l.post_p50, 2), "post_p99_ms": round(l.post_p99, 2),
        "post_max_ms": round(l.post_max, 2), "start_p99_ms": round(l.start_p99, 2),
        "accepted": l.accepted, "refused": l.refused, "cpu": l.cpu.json(),
    })
}

/// warren's "pruned finished jobs past the retention" line in `target/bench/
/// warren-growth-prune.log`: seconds from `spawned` to its timestamp, and its count.
fn prune_logged(spawned: SystemTime) -> Option<(f64, u64)> {
    let log = std::fs::read_to_string(repo().join("target/bench/warren-growth-prune.log")).ok()?;
    let line = log
        .lines()
        .find(|l| l.contains("pruned finished jobs past the retention"))?;
    let at = humantime::parse_rfc3339_weak(line.split_whitespace().next()?).ok()?;
    let n = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("pruned="))?
        .parse()
        .ok()?;
    Some((at.duration_since(spawned).ok()?.as_secs_f64(), n))
}
