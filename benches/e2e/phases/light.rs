//! Everyday load (`BENCH_PHASES=light`, issue 21): what a job costs in CPU when warren is far
//! from saturated, beside what it costs saturated and what a plain lapin client costs.
//!
//! 1. The broker at rest (nothing of the bench's running) for `BENCH_IDLE_SECS` (default
//!    10): its own idle CPU rate (management stats, timers), subtracted from the broker's
//!    figures below as "net".
//! 2. `warren run` (noop handler, prefetch `P`) on a store of its own: its CPU at rest over
//!    `BENCH_IDLE_SECS` (after a 2 s settle), then `BENCH_REPEAT` saturated end-to-end
//!    rounds (`BENCH_E2E_N / BENCH_REPEAT` POSTs from C clients while its workers run them,
//!    timed until the last job is final). With `BENCH_WARREN_BIN_B` (another build) and/or
//!    `BENCH_WARREN_B_ENV` (`NAME=value …`, e.g. `TOKIO_WORKER_THREADS=1`) a second
//!    `warren run` is started beside it and measured the same way (an A/B in one run).
//! 3. For each rate of `BENCH_LIGHT_RATES` (default `50,200,1000` jobs/s),
//!    `BENCH_LIGHT_PAIRS` (default 3) pairs of `BENCH_LIGHT_SECS` (default 10) each:
//!    - raw lapin: one channel publishing persistent, mandatory messages in confirm mode
//!      open-loop (message `i` at `i / rate` s), one consumer (prefetch `P`) acking each, on
//!      a fresh queue declared as warren declares its own. The bench process is the client:
//!      its CPU per message is the raw client's;
//!    - then warren (each side, in alternating order): open-loop POSTs at the rate over 16
//!      keep-alive connections, timed from the first POST until the last job is final.
//!
//! Reported (medians over the pairs): warren's CPU per job at each rate and saturated and
//! their ratio, the broker's net CPU per job under warren over the raw client's in the same
//! pair, warren's CPU at rest (% of a core), POST→202 p50/p99 at each rate, and warren's
//! context switches per job by thread (`/proc/<pid>/task/*/status`: each is a thread parked
//! and woken, or preempted). Targets (issue 21): at 200 jobs/s ≤ 2 × saturated, at 50 ≤ 3 ×,
//! broker ≤ 1.3 × raw's, warren at rest ≤ 0.5 % of a core.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use lapin::Connection;
use serde_json::{Value, json};

use crate::Params;
use crate::broker::unique;
use crate::child::{Cleanup, Launch, Warren, warren_bin};
use crate::load::{accepted, closed_loop, open_loop, single_accepted, single_bodies};
use crate::procfs::{CpuMeter, CpuTotals, wait_quiet};
use crate::raw::{declare_like_warren, raw_consume, raw_publish_paced};
use crate::report::{Figures, median, report_load, round};
use crate::store::{Jobs, Space, collect, id_floor, wait_drained};

/// The rates of the light rounds (jobs/s), from `BENCH_LIGHT_RATES`.
fn rates() -> Vec<usize> {
    std::env::var("BENCH_LIGHT_RATES")
        .unwrap_or_else(|_| "50,200,1000".to_owned())
        .split(',')
        .filter_map(|r| r.trim().parse().ok())
        .filter(|r| *r > 0)
        .collect()
}

/// The report's keys of a rate's figures (the targets are set for these three rates).
fn keys(rate: usize) -> Option<(&'static str, &'static str, &'static str)> {
    match rate {
        50 => Some((
            "light_50_warren_us",
            "light_50_ratio",
            "light_broker_50_ratio",
        )),
        200 => Some((
            "light_200_warren_us",
            "light_200_ratio",
            "light_broker_200_ratio",
        )),
        1000 => Some((
            "light_1000_warren_us",
            "light_1000_ratio",
            "light_broker_1000_ratio",
        )),
        _ => None,
    }
}

/// CPU seconds of `kind` in `t`.
fn secs(t: &CpuTotals, kind: &str) -> f64 {
    t.json()
        .get(format!("{kind}_s"))
        .and_then(Value::as_f64)
        .unwrap_or(0.0)
}

fn per_job_us(t: &CpuTotals, kind: &str, jobs: usize) -> f64 {
    secs(t, kind) * 1e6 / jobs.max(1) as f64
}

/// The broker's CPU per job net of its rest rate (`rest` CPU s per wall s), µs.
fn broker_net_us(t: &CpuTotals, rest: f64, jobs: usize) -> f64 {
    ((secs(t, "broker") - rest * secs(t, "wall")) * 1e6 / jobs.max(1) as f64).max(0.0)
}

/// Sums `value(file's text)` over the threads of process `pid`, by thread name, where
/// `file` is each thread's `/proc/<pid>/task/<tid>/<file>`.
fn per_thread(
    pid: u32,
    file: &str,
    value: impl Fn(&str) -> Option<(String, f64)>,
) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for t in tasks.flatten() {
        let Some((name, v)) = std::fs::read_to_string(t.path().join(file))
            .ok()
            .and_then(|text| value(&text))
        else {
            continue;
        };
        *out.entry(name).or_default() += v;
    }
    out
}

/// Context switches of each thread of process `pid` so far, summed by thread name
/// (`status`, voluntary + involuntary): each is a thread that parked and was woken, or was
/// preempted.
fn switches(pid: u32) -> BTreeMap<String, f64> {
    per_thread(pid, "status", |status| {
        let name = status.lines().find_map(|l| l.strip_prefix("Name:"))?.trim();
        let n: f64 = status
            .lines()
            .filter(|l| l.contains("ctxt_switches"))
            .filter_map(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
            .sum();
        Some((name.to_owned(), n))
    })
}

/// CPU seconds (user + system) of each thread of process `pid` so far, summed by thread
/// name (`stat`, clock ticks of 10 ms).
fn thread_cpu(pid: u32) -> BTreeMap<String, f64> {
    per_thread(pid, "stat", |stat| {
        let (open, close) = (stat.find('(')?, stat.rfind(')')?);
        let f: Vec<&str> = stat.get(close + 2..)?.split_whitespace().collect();
        let ticks = |i: usize| f.get(i).and_then(|s| s.parse::<f64>().ok()).unwrap_or(0.0);
        Some((
            stat[open + 1..close].to_owned(),
            (ticks(11) + ticks(12)) / 100.0,
        ))
    })
}

/// Per job, by thread name, what grew between two per-thread readings (`before`, `after`),
/// times `scale` (1 for counts, 1e6 for seconds as µs), rounded to `digits`.
fn per_job(
    before: &BTreeMap<String, f64>,
    after: &BTreeMap<String, f64>,
    jobs: usize,
    scale: f64,
    digits: i32,
) -> BTreeMap<String, f64> {
    after
        .iter()
        .map(|(k, v)| {
            let d = (v - before.get(k).copied().unwrap_or(0.0)).max(0.0);
            (k.clone(), round(d * scale / jobs.max(1) as f64, digits))
        })
        .collect()
}

/// CPU over `for_s` of quiet, nothing sent: (totals, seconds of wall).
async fn at_rest(warren: Option<u32>, for_s: u64) -> CpuTotals {
    let cpu = CpuMeter::start(warren);
    tokio::time::sleep(Duration::from_secs(for_s)).await;
    let mut t = CpuTotals::default();
    cpu.stop(&mut t, 0);
    t
}

pub(crate) async fn phase_light(p: &Params, conn: &Connection, cleanup: &Cleanup, f: &mut Figures) {
    let rates = rates();
    let light_secs = crate::env_usize("BENCH_LIGHT_SECS", 10).max(1);
    let idle_secs = crate::env_usize("BENCH_IDLE_SECS", 10).max(1) as u64;
    println!(
        "light load: rates {rates:?} jobs/s for {light_secs} s each, raw lapin and warren run (noop, P={}); rest {idle_secs} s",
        p.prefetch
    );

    wait_quiet().await;
    let rest = at_rest(None, idle_secs).await;
    let broker_rest = secs(&rest, "broker") / secs(&rest, "wall").max(1e-9);
    println!("  broker at rest: {:.2}% of a core", broker_rest * 100.0);
    f.note(
        "light_broker_rest_pct",
        json!(round(broker_rest * 100.0, 2)),
    );

    // warren: this build, and `BENCH_WARREN_BIN_B` beside it when set (an A/B in one run).
    let mut sides = vec![Side::start(p, cleanup, "light", Launch::default(), idle_secs).await];
    let b_env: Vec<(String, String)> = std::env::var("BENCH_WARREN_B_ENV")
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let b_bin = std::env::var_os("BENCH_WARREN_BIN_B");
    if b_bin.is_some() || !b_env.is_empty() {
        let how = Launch {
            bin: b_bin.map_or_else(warren_bin, Into::into),
            env: b_env,
            ..Launch::default()
        };
        sides.push(Side::start(p, cleanup, "light-b", how, idle_secs).await);
    }
    for side in &mut sides {
        side.saturate(p, conn).await;
    }
    let (a_idle, a_sat) = (sides[0].idle_pct, sides[0].sat_us);
    f.set("idle_cpu_pct", a_idle);
    f.set("light_sat_warren_us", a_sat);

    let pairs = crate::env_usize("BENCH_LIGHT_PAIRS", 3).max(1);
    for &rate in &rates {
        let n = rate * light_secs;
        // Each pair: a raw round, then each side's round (in alternating order with two
        // sides: A B, B A, …). The broker's ratio is taken within each pair.
        let mut rounds: Vec<Vec<Round>> = sides.iter().map(|_| Vec::new()).collect();
        let mut raws = Vec::new();
        for pair in 0..pairs {
            let raw = raw_round(p, conn, cleanup, rate, n, broker_rest).await;
            let mut order: Vec<usize> = (0..sides.len()).collect();
            if pair % 2 == 1 {
                order.reverse();
            }
            for i in order {
                let mut r = sides[i]
                    .light_round(p, conn, rate, n, (raw.broker_net_us, broker_rest))
                    .await;
                r.broker_ratio = r.broker_net_us / raw.broker_net_us.max(1e-9);
                rounds[i].push(r);
            }
            raws.push(raw);
        }
        let raw_client = median(raws.iter().map(|r| r.client_us).collect());
        let raw_net = median(raws.iter().map(|r| r.broker_net_us).collect());
        f.note(
            &format!("light_raw_{rate}"),
            json!({ "client_us": raws.iter().map(|r| round(r.client_us, 1)).collect::<Vec<_>>(),
                    "broker_us": raws.iter().map(|r| round(r.broker_us, 1)).collect::<Vec<_>>(),
                    "broker_net_us": raws.iter().map(|r| round(r.broker_net_us, 1)).collect::<Vec<_>>() }),
        );
        let a = Round::median(&rounds[0]);
        f.note(
            &format!("light_warren_{rate}"),
            json!({ "warren_us": round(a.warren_us, 1),
                    "ratio_to_saturated": round(a.warren_us / a_sat.max(1e-9), 3),
                    "broker_net_us": round(a.broker_net_us, 1),
                    "broker_ratio_to_raw": round(a.broker_ratio, 3),
                    "raw_client_us": round(raw_client, 1), "raw_broker_net_us": round(raw_net, 1),
                    "post_p50_ms": round(a.p50, 2), "post_p99_ms": round(a.p99, 2),
                    "switches_per_job": round(a.switches, 1),
                    "rounds": rounds[0].iter().map(Round::json).collect::<Vec<_>>() }),
        );
        if let Some((us_key, ratio_key, broker_key)) = keys(rate) {
            f.set(us_key, a.warren_us);
            f.set(ratio_key, a.warren_us / a_sat.max(1e-9));
            f.set(broker_key, a.broker_ratio);
        }
        if rate == 200 {
            f.set("light_post_p50_ms", a.p50);
            f.set("light_post_p99_ms", a.p99);
        }
        if let [_, b_rounds] = rounds.as_slice() {
            let ratios = |get: fn(&Round) -> f64| {
                rounds[0]
                    .iter()
                    .zip(b_rounds)
                    .map(|(a, b)| get(b) / get(a).max(1e-9))
                    .collect::<Vec<_>>()
            };
            let (cpu, sw) = (ratios(|r| r.warren_us), ratios(|r| r.switches));
            println!(
                "  B / A at {rate}/s: warren CPU per job {:.3} (pairs {cpu:.3?}), context switches per job {:.3} (pairs {sw:.3?})",
                median(cpu.clone()),
                median(sw.clone())
            );
            f.note(
                &format!("light_b_over_a_{rate}"),
                json!({ "warren_cpu": cpu, "switches": sw,
                        "b": b_rounds.iter().map(Round::json).collect::<Vec<_>>() }),
            );
        }
    }
    for side in sides {
        side.w.stop().await;
    }
}

/// What one raw round measured (µs per message).
#[derive(Clone, Copy)]
struct RawRound {
    client_us: f64,
    broker_us: f64,
    broker_net_us: f64,
}

/// The raw client at `rate` for `n` messages on a fresh queue declared like warren's: an
/// open-loop publisher with confirms and a consumer acking each (see the module docs).
async fn raw_round(
    p: &Params,
    conn: &Connection,
    cleanup: &Cleanup,
    rate: usize,
    n: usize,
    broker_rest: f64,
) -> RawRound {
    let q = unique("light-raw");
    declare_like_warren(conn, &q, cleanup).await;
    wait_quiet().await;
    let cpu = CpuMeter::start(None);
    futures::join!(
        raw_consume(conn, &q, n, p.prefetch),
        raw_publish_paced(conn, &q, n, rate)
    );
    let mut t = CpuTotals::default();
    cpu.stop(&mut t, n);
    let r = RawRound {
        client_us: per_job_us(&t, "bench", n),
        broker_us: per_job_us(&t, "broker", n),
        broker_net_us: broker_net_us(&t, broker_rest, n),
    };
    println!(
        "  raw at {rate}/s: client {:.0} µs/msg, broker {:.0} µs/msg ({:.0} net of its rest)  [{}]",
        r.client_us,
        r.broker_us,
        r.broker_net_us,
        t.line()
    );
    r
}

/// One `warren run` of the phase, on a store and a queue of its own.
struct Side {
    w: Warren,
    /// Keeps the store until the side is done.
    space: Space,
    q: String,
    tag: &'static str,
    /// Its CPU at rest, % of a core.
    idle_pct: f64,
    /// Its CPU per job saturated, µs.
    sat_us: f64,
}

/// What one light round measured.
#[derive(Clone, Default)]
struct Round {
    warren_us: f64,
    broker_us: f64,
    broker_net_us: f64,
    p50: f64,
    p99: f64,
    /// Context switches of warren's threads per job.
    switches: f64,
    /// `broker_net_us` over the raw client's beside it.
    broker_ratio: f64,
}

impl Round {
    fn json(&self) -> Value {
        json!({ "warren_us": round(self.warren_us, 1), "broker_us": round(self.broker_us, 1),
                "broker_net_us": round(self.broker_net_us, 1), "post_p50_ms": round(self.p50, 2),
                "post_p99_ms": round(self.p99, 2), "switches": round(self.switches, 1),
                "broker_ratio": round(self.broker_ratio, 3) })
    }

    /// Each figure's median over `rounds`.
    fn median(rounds: &[Round]) -> Round {
        let m = |get: fn(&Round) -> f64| median(rounds.iter().map(get).collect());
        Round {
            warren_us: m(|r| r.warren_us),
            broker_us: m(|r| r.broker_us),
            broker_net_us: m(|r| r.broker_net_us),
            p50: m(|r| r.p50),
            p99: m(|r| r.p99),
            switches: m(|r| r.switches),
            broker_ratio: m(|r| r.broker_ratio),
        }
    }
}

impl Side {
    /// Starts `warren run` as `how` says and measures its CPU at rest.
    async fn start(
        p: &Params,
        cleanup: &Cleanup,
        tag: &'static str,
        how: Launch<'_>,
        idle_secs: u64,
    ) -> Self {
        let space = Space::new(&p.store, cleanup).await;
        let q = cleanup.work_queue(tag);
        let w = Warren::launch(&how, &space, tag, "run", &[&q], p.prefetch).await;
        // Start-up work (migrations, declarations, the first probes) is not rest.
        tokio::time::sleep(Duration::from_secs(2)).await;
        wait_quiet().await;
        let idle = at_rest(Some(w.pid), idle_secs).await;
        let idle_pct = secs(&idle, "warren") / secs(&idle, "wall").max(1e-9) * 100.0;
        println!("  warren ({tag}) at rest: {idle_pct:.2}% of a core");
        Self {
            w,
            space,
            q,
            tag,
            idle_pct,
            sat_us: 0.0,
        }
    }

    /// `BENCH_REPEAT` saturated end-to-end rounds: sets [`Side::sat_us`].
    async fn saturate(&mut self, p: &Params, conn: &Connection) {
        let per_round = p.e2e_n.div_ceil(p.repeat).max(1);
        let mut sat = CpuTotals::default();
        let mut jobs = 0;
        for round_no in 1..=p.repeat {
            wait_quiet().await;
            let cpu = CpuMeter::start(Some(self.w.pid));
            let load = closed_loop(
                self.w.addr,
                &format!("/v1/queues/{}/jobs", self.q),
                single_bodies(per_round),
                p.clients,
                single_accepted,
                1,
            )
            .await;
            report_load(&format!("{} saturated round {round_no}", self.tag), &load);
            assert!(
                load.accepted > 0,
                "light: no POST accepted (is the broker up?)"
            );
            let deadline = Instant::now() + Duration::from_secs(300);
            drop(wait_drained(conn, &self.space, &self.q, &load.tail_ids, deadline).await);
            cpu.stop(&mut sat, load.accepted);
            jobs += load.accepted;
        }
        self.sat_us = per_job_us(&sat, "warren", jobs);
        println!("  {} saturated: {}", self.tag, sat.line());
    }

    /// Open-loop POSTs at `rate` for `n` jobs over 16 connections, timed until the last job
    /// is final.
    async fn light_round(
        &mut self,
        p: &Params,
        conn: &Connection,
        rate: usize,
        n: usize,
        (raw_net, broker_rest): (f64, f64),
    ) -> Round {
        if p.perf {
            self.w.profile(&format!("{}-{rate}", self.tag));
        }
        wait_quiet().await;
        let from = id_floor();
        let bodies = single_bodies(n);
        let cpu = CpuMeter::start(Some(self.w.pid));
        let (sw, tc) = (switches(self.w.pid), thread_cpu(self.w.pid));
        let (answers, _) = open_loop(
            self.w.addr,
            &format!("/v1/queues/{}/jobs", self.q),
            16,
            n,
            rate,
            move |i| bodies[i].clone(),
            |_| {},
        )
        .await;
        let (post, mut ids) = accepted(&answers);
        ids.sort_unstable_by_key(|(i, _, _)| *i);
        let jobs = Jobs {
            n: ids.len(),
            from,
            sample: ids.iter().rev().take(8).map(|(_, id, _)| *id).collect(),
        };
        let deadline = Instant::now() + Duration::from_secs(120);
        let store = wait_drained(conn, &self.space, &self.q, &jobs.sample, deadline).await;
        let mut t = CpuTotals::default();
        cpu.stop(&mut t, ids.len());
        let sw = per_job(&sw, &switches(self.w.pid), ids.len(), 1.0, 2);
        let tc = per_job(&tc, &thread_cpu(self.w.pid), ids.len(), 1e6, 0);
        self.w.stop_profile();
        let done = collect(&*store, &self.q, from, jobs.n, false, deadline).await;
        drop(store);
        let ms = |q: f64| post.value_at_quantile(q) as f64 / 1000.0;
        let r = Round {
            warren_us: per_job_us(&t, "warren", ids.len()),
            broker_us: per_job_us(&t, "broker", ids.len()),
            broker_net_us: broker_net_us(&t, broker_rest, ids.len()),
            p50: ms(0.5),
            p99: ms(0.99),
            switches: sw.values().sum(),
            broker_ratio: 0.0,
        };
        println!(
            "  {} at {rate}/s: {} accepted of {n}, {} succeeded; warren {:.0} µs/job ({:.2} × saturated), broker {:.0} µs/job ({:.0} net, {:.2} × raw's); POST→202 p50 {:.2} ms p99 {:.2} ms  [{}]",
            self.tag,
            ids.len(),
            done.succeeded,
            r.warren_us,
            r.warren_us / self.sat_us.max(1e-9),
            r.broker_us,
            r.broker_net_us,
            r.broker_net_us / raw_net.max(1e-9),
            r.p50,
            r.p99,
            t.line()
        );
        println!(
            "    context switches per job by thread: {sw:?}; CPU µs per job by thread: {tc:?}"
        );
        r
    }
}
