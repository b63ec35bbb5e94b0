//! The intake phases on `warren serve`: single and batch POSTs in closed-loop rounds, each
//! paired with a raw publish round beside it, and the A/B of two warren builds.

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use lapin::Connection;
use lapin::options::QueueDeleteOptions;
use serde_json::json;

use crate::Params;
use crate::broker::unique;
use crate::child::{Cleanup, Launch, Warren, warren_bin};
use crate::load::{
    LoadResult, batch_accepted, batch_bodies, closed_loop, single_accepted, single_bodies,
};
use crate::procfs::{CpuMeter, CpuTotals, RssWatch, wait_quiet};
use crate::raw::{declare_like_warren, raw_publish_round};
use crate::report::{Figures, median, report_load, round};
use crate::store::{Jobs, Space, id_floor};

/// One closed-loop round (see [`closed_loop`]) against `w`, started once the machine is quiet;
/// the CPU it took is added to `cpu_all`.
pub(crate) async fn measured_round(
    w: &Warren,
    path: &str,
    bodies: Vec<Bytes>,
    clients: usize,
    jobs_in: fn(u16, &[u8], usize) -> usize,
    jobs_per_body: usize,
    cpu_all: &mut CpuTotals,
) -> LoadResult {
    wait_quiet().await;
    let cpu = CpuMeter::start(Some(w.pid));
    let r = closed_loop(w.addr, path, bodies, clients, jobs_in, jobs_per_body).await;
    cpu.stop(cpu_all, r.accepted);
    r
}

/// The raw publisher that runs beside each round of the intake phase (see [`rounds`]). It
/// publishes into a queue of its own, declared like warren's and kept for the whole phase, so
/// its backlog grows as warren's does and both sides of a pair see the same broker.
pub(crate) struct Beside<'a> {
    conn: &'a Connection,
    queue: String,
}

impl<'a> Beside<'a> {
    /// Declares the raw queue.
    pub(crate) async fn new(conn: &'a Connection, cleanup: &Cleanup) -> Self {
        let queue = unique("beside");
        declare_like_warren(conn, &queue, cleanup).await;
        Self { conn, queue }
    }

    /// One raw publish round of `n` messages (the raw phase's, [`raw_publish_round`]),
    /// started once the machine is quiet: msg/s. Its CPU is added to `cpu_all`.
    pub(crate) async fn round(&self, p: &Params, n: usize, cpu_all: &mut CpuTotals) -> f64 {
        wait_quiet().await;
        raw_publish_round(self.conn, &self.queue, p, n, cpu_all).await
    }

    /// Deletes the raw queue (and its backlog).
    pub(crate) async fn delete(self) {
        if let Ok(ch) = self.conn.create_channel().await {
            let _ = ch
                .queue_delete(self.queue.as_str().into(), QueueDeleteOptions::default())
                .await;
            let _ = ch.close(200, "deleted".into()).await;
        }
    }
}

/// What [`rounds`] measured: the median rate, the jobs accepted in all, the medians of the
/// pairs' warren/raw ratios and of the raw rates beside, and ids of the last jobs accepted.
struct Rounds {
    rate: f64,
    accepted: usize,
    paired: (f64, f64),
    tail_ids: Vec<uuid::Uuid>,
}

/// `p.repeat` closed-loop rounds splitting `bodies` (of `jobs_per_body` jobs each) between
/// them, each paired with a raw publish round of as many messages `beside` it, raw first in
/// odd rounds and warren first in even ones, so that both sides of a ratio see
/// the machine of the same minute (these machines drift ±20 % from one minute to the next,
/// and the raw phase runs minutes earlier).
#[allow(clippy::too_many_arguments)]
async fn rounds(
    p: &Params,
    name: &str,
    w: &mut Warren,
    path: &str,
    bodies: Vec<Bytes>,
    clients: usize,
    jobs_in: fn(u16, &[u8], usize) -> usize,
    jobs_per_body: usize,
    beside: &Beside<'_>,
    f: &mut Figures,
) -> Rounds {
    let per_round = bodies.len().div_ceil(p.repeat).max(1);
    let mut rates = Vec::new();
    let (mut raw_rates, mut ratios) = (Vec::new(), Vec::new());
    let (mut accepted, mut tail_ids) = (0, Vec::new());
    let (mut cpu_all, mut cpu_raw) = (CpuTotals::default(), CpuTotals::default());
    if p.perf {
        w.profile(name);
    }
    let mut bodies = bodies.into_iter();
    for round in 1..=p.repeat {
        let chunk: Vec<Bytes> = bodies.by_ref().take(per_round).collect();
        if chunk.is_empty() {
            break;
        }
        let n = chunk.len() * jobs_per_body;
        let raw_first = round % 2 == 1;
        let mut raw = 0.0;
        if raw_first {
            raw = beside.round(p, n, &mut cpu_raw).await;
        }
        let r = measured_round(
            w,
            path,
            chunk,
            clients,
            jobs_in,
            jobs_per_body,
            &mut cpu_all,
        )
        .await;
        if !raw_first {
            raw = beside.round(p, n, &mut cpu_raw).await;
        }
        report_load(&format!("{name} round {round}"), &r);
        println!(
            "  {name} round {round}: raw publish beside it {raw:.0} msg/s; ratio {:.3}",
            r.per_s() / raw
        );
        raw_rates.push(raw);
        ratios.push(r.per_s() / raw);
        rates.push(r.per_s());
        accepted += r.accepted;
        tail_ids = r.tail_ids;
    }
    w.stop_profile();
    let key = name.replace('-', "_");
    println!("  {name}: {}", cpu_all.line());
    f.note(&format!("cpu_{key}"), cpu_all.json());
    f.note(&format!("{key}_rounds"), json!(rates));
    println!("  raw publish beside {name}: {}", cpu_raw.line());
    f.note(&format!("cpu_raw_beside_{key}"), cpu_raw.json());
    f.note(&format!("raw_beside_{key}_rounds"), json!(raw_rates));
    f.note(&format!("{key}_pair_ratios"), json!(ratios));
    Rounds {
        rate: median(rates),
        accepted,
        paired: (median(ratios), median(raw_rates)),
        tail_ids,
    }
}

/// Intake phases with `warren serve`; leaves `bk` with the accepted jobs as a backlog.
///
/// Each round is paired with a raw publish round beside it (see [`rounds`]): the intake ratios
/// are the medians of those pairs' ratios.
pub(crate) async fn phase_intake(
    p: &Params,
    space: &Space,
    bk: &str,
    beside: &Beside<'_>,
    f: &mut Figures,
) -> Jobs {
    println!(
        "intake: warren serve; {} single POSTs from C={} clients, then {} jobs in batches of {} from {} clients, each in {} rounds, each round beside a raw publish round of as many messages",
        p.intake_n, p.clients, p.batch_n, p.batch_size, p.batch_clients, p.repeat
    );
    let mut w = Warren::start(space, "serve", "serve", &[bk], p.prefetch).await;
    let rss = RssWatch::start(w.pid);
    // Idle: the first two seconds after it is ready.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle = rss.peak_mb();
    println!("  idle RSS: {idle:.1} MB (pid {})", w.pid);
    f.set("rss_idle_mb", idle);
    rss.reset();

    let path = format!("/v1/queues/{bk}/jobs");
    let from = id_floor();
    let single = rounds(
        p,
        "intake",
        &mut w,
        &path,
        single_bodies(p.intake_n),
        p.clients,
        single_accepted,
        1,
        beside,
        f,
    )
    .await;
    f.set("intake_per_s", single.rate);
    f.set_paired("intake_per_s", single.paired);
    let batch = rounds(
        p,
        "intake-batch",
        &mut w,
        &format!("{path}/batch"),
        batch_bodies(p.batch_n, p.batch_size),
        p.batch_clients,
        batch_accepted,
        p.batch_size,
        beside,
        f,
    )
    .await;
    f.set("intake_batch_per_s", batch.rate);
    f.set_paired("intake_batch_per_s", batch.paired);
    let load = rss.peak_mb();
    println!("  RSS under intake load: {load:.1} MB");
    f.note("rss_intake_mb", json!(round(load, 1)));
    f.set("rss_load_mb", load);
    drop(rss);
    w.stop().await;
    Jobs {
        n: single.accepted + batch.accepted,
        from,
        sample: batch.tail_ids,
    }
}

/// A/B of two warren builds (`BENCH_PHASES=ab`): `BENCH_WARREN_BIN` (default: this tree's)
/// and `BENCH_WARREN_BIN_B` both serve, each with its own store and queue, and single-POST
/// rounds of `BENCH_INTAKE_N` jobs alternate between them (A B, B A, …), so the two rounds of
/// a pair see the same machine; `BENCH_REPEAT` pairs. Prints each pair's B/A and the median:
/// on these machines the rate moves ±20 % from minute to minute, far more than most changes
/// are worth, and only paired rounds show them.
pub(crate) async fn phase_ab(p: &Params, conn: &Connection, cleanup: &Cleanup, f: &mut Figures) {
    let Some(bin_b) = std::env::var_os("BENCH_WARREN_BIN_B").map(PathBuf::from) else {
        panic!("BENCH_PHASES=ab compares two builds: set BENCH_WARREN_BIN_B to the second");
    };
    let bin_a = warren_bin();
    println!(
        "ab: A = {}, B = {}; {} pairs of {} single POSTs from C={} clients",
        bin_a.display(),
        bin_b.display(),
        p.repeat,
        p.intake_n,
        p.clients
    );
    let mut sides = Vec::new();
    let mut spaces = Vec::new();
    for (tag, bin) in [("ab-a", &bin_a), ("ab-b", &bin_b)] {
        let q = cleanup.work_queue(tag);
        let space = Space::new(&p.store, cleanup).await;
        let how = Launch {
            bin: bin.clone(),
            ..Launch::default()
        };
        let w = Warren::launch(&how, &space, tag, "serve", &[&q], p.prefetch).await;
        sides.push((w, q, CpuTotals::default(), Vec::new()));
        spaces.push(space);
    }
    let mut ratios = Vec::new();
    for pair in 0..p.repeat {
        let order = if pair % 2 == 0 { [0, 1] } else { [1, 0] };
        for side in order {
            let (w, q, cpu_all, rates) = &mut sides[side];
            let path = format!("/v1/queues/{q}/jobs");
            let bodies = single_bodies(p.intake_n);
            let r = measured_round(w, &path, bodies, p.clients, single_accepted, 1, cpu_all).await;
            rates.push(r.per_s());
        }
        let (a, b) = (sides[0].3[pair], sides[1].3[pair]);
        ratios.push(b / a);
        println!(
            "  pair {}: A {a:.0}, B {b:.0} jobs/s, B/A {:.3}",
            pair + 1,
            b / a
        );
        // Keep the broker's queues short: every round adds `intake_n` messages.
        if let Ok(ch) = conn.create_channel().await {
            for (_, q, _, _) in &sides {
                let _ = ch.queue_purge(q.as_str().into(), Default::default()).await;
            }
            let _ = ch.close(200, "purged".into()).await;
        }
    }
    for (name, (_, _, cpu_all, rates)) in ["A", "B"].iter().zip(&sides) {
        println!(
            "  {name}: median {:.0} jobs/s; {}",
            median(rates.clone()),
            cpu_all.line()
        );
    }
    let (lo, hi) = ratios
        .iter()
        .fold((f64::MAX, f64::MIN), |(lo, hi), r| (lo.min(*r), hi.max(*r)));
    let mid = median(ratios);
    println!("  ab: median B/A {mid:.3} (pairs {lo:.3} to {hi:.3})");
    f.note("ab_b_over_a", json!(round(mid, 3)));
    for (w, _, _, _) in sides {
        w.stop().await;
    }
    drop(spaces);
}
