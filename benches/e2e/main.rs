//! End-to-end benchmark (issue 5): warren against a bare lapin baseline on the local RabbitMQ.
//!
//! Run with `cargo bench --bench e2e`. It runs `scripts/ensure-rabbitmq` first (like the
//! tests) and then, with quorum queues, persistent messages and confirms everywhere:
//!
//! 1. raw baseline: a bare lapin publisher (confirms, `W` in flight) and a bare lapin
//!    consumer (prefetch `P`, one ack per message), alone and both at once;
//! 2. intake: `POST /v1/queues/{q}/jobs` from `C` keep-alive clients to `warren serve`, then
//!    the same through `POST …/jobs/batch`; together they leave a 100,000-job backlog. Each
//!    intake round is paired with a raw publish round of as many messages run beside it (in
//!    alternating order), and the intake ratios are the medians of the pairs' ratios;
//! 3. drain: `warren run` (noop handler, status tracking and claims on) empties that backlog;
//! 4. end to end: `C` clients POST to `warren run` while its workers run the jobs;
//! 5. latency: open-loop 1,000 POST/s for 10 s: POST→202 and accepted→started;
//! 6. memory: peak RSS of the warren process idle, under load and with the backlog.
//!
//! warren runs as the release binary in child processes; the children of a phase share one
//! store ([`store::Space`]): with `BENCH_STORE=sqlite` (the default) `warren.db` in a temp
//! dir of their own, with `BENCH_STORE=postgres` a database of their own (`bench_<random>`,
//! created through the `WARREN_PG_URL` that `scripts/ensure-postgres` prints, which the
//! bench runs first, and dropped `WITH (FORCE)` when the phase is done, also on a panic).
//! The raw baseline has no store and is the same on both. The bench reads the store only
//! through warren's `Store` trait (`benches/e2e/store.rs`). It prints a table (targets by
//! store) and writes the figures as JSON to `BENCH_OUT` (default `target/bench/e2e.json`).
//! Every queue it declares (`b-<name>-<rand>`) is deleted at the end, also on a panic.
//!
//! Knobs (environment, defaults in [`Params`]): `BENCH_STORE` (`sqlite` or `postgres`),
//! `BENCH_RAW_N`, `BENCH_INFLIGHT`, `BENCH_RAW_CHANNELS`, `BENCH_PREFETCH`, `BENCH_CLIENTS`,
//! `BENCH_INTAKE_N`, `BENCH_BATCH_N`, `BENCH_BATCH_SIZE`, `BENCH_BATCH_CLIENTS`,
//! `BENCH_E2E_N`, `BENCH_PUBLISH_CHANNELS` (warren's `broker.publish_channels`),
//! `BENCH_LAT_RATE`, `BENCH_LAT_SECS`, `BENCH_REPEAT` (rounds of each throughput phase but
//! the drain; the median is reported), `BENCH_PHASES` (a comma list of
//! `raw,intake,drain,e2e,latency`, plus the long `backlog`, `soak` and `growth` phases and
//! the `ab` comparison of two builds, the `dashboard` cost (an open `/ui/` tab beside
//! the intake) and the `flow` cost (drains with and without a rate limit, and against
//! `BENCH_WARREN_BIN_B`; `BENCH_FLOW_N` jobs each) and the `wait` cost (end-to-end rounds
//! without and with `BENCH_WAITERS` requests held open on `?wait=60s`, and their memory)
//! and the `light` cost (CPU per job at `BENCH_LIGHT_RATES`, default `50,200,1000` jobs/s,
//! for `BENCH_LIGHT_SECS` each, beside saturated and beside raw lapin at the same rates, and
//! at rest for `BENCH_IDLE_SECS`; `BENCH_LIGHT_PAIRS` rounds per rate, alternating with
//! `BENCH_WARREN_BIN_B` and/or `BENCH_WARREN_B_ENV` (`NAME=value …` for the second side)
//! when set; see [`phases::phase_light`]), which run only when named), `BENCH_SOAK_RATE`,
//! `BENCH_SOAK_SECS`, `BENCH_BACKLOG_N`, `BENCH_GROWTH_ROWS` (finished jobs the growth phase
//! seeds, default 5,000,000), `BENCH_GROWTH_PRUNE_WAIT` (seconds the growth phase waits for
//! its prune to end, default 3,600), `BENCH_QUIET_WAIT` (seconds to wait for a quiet
//! machine before each round, default 120), `BENCH_PERF=1` (record a `perf` profile of the
//! warren process in each warren phase to `target/bench/perf-<phase>.data`),
//! `BENCH_WARREN_BIN` (run another `warren` build) and `BENCH_WARREN_BIN_B` (the second
//! build of `ab`).
//!
//! The growth phase ([`phases::phase_growth`]): single POST and drain on an empty store and
//! on one seeded with `BENCH_GROWTH_ROWS` finished jobs (ratios seeded/empty), then
//! POST→202 at `BENCH_LAT_RATE` on the seeded store without and with warren pruning the
//! seed (ratio of the p99s), with how many jobs the prune deleted in the window and how long
//! it took.
//!
//! Exits 0 whether targets pass or not: it is a measurement; FAIL rows say what missed.

#[path = "../support/broker.rs"]
mod broker;
mod child;
mod load;
mod phases;
mod procfs;
mod raw;
mod report;
mod store;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use lapin::{Connection, ConnectionProperties};

use crate::broker::amqp_url;
use crate::child::Cleanup;
use crate::phases::{
    Beside, load_backlog, phase_ab, phase_backlog, phase_dashboard, phase_drain, phase_flow,
    phase_growth, phase_intake, phase_light, phase_raw, phase_run, phase_soak, phase_wait,
};
use crate::report::{Figures, report};
use crate::store::{Space, StoreKind};

/// The workload, from the environment (`BENCH_*`) or these defaults (sized for 2 cores: the
/// whole run takes a few minutes).
#[derive(Debug, Clone)]
struct Params {
    /// Messages per round of each raw phase.
    raw_n: usize,
    /// Raw publisher: confirms in flight (W), over `raw_channels` channels.
    inflight: usize,
    /// Raw publisher channels (1 or 4 gave the same rate and broker CPU per message).
    raw_channels: usize,
    /// Prefetch (P) of the raw consumer and of warren's bench queues.
    prefetch: usize,
    /// Concurrent keep-alive HTTP clients (C). 256, the raw publisher's `W`: closed-loop
    /// clients keep C jobs in flight, so C = W gives warren and the baseline the same depth of
    /// pipeline to the broker (at C = 64 the broker spent 62 µs per job against 40 at 256).
    clients: usize,
    /// Jobs through the single POST in the intake phase. 60,000: rounds of 20,000 last about a
    /// second, as the raw publisher's do; in rounds of 10,000 (0.6 s) each round's cold start
    /// after the quiet wait weighed more (median rates 14,100–19,100 jobs/s in them against
    /// 18,600–21,000 in rounds of 20,000 or 30,000, 2026-11-22; BENCHMARKS.md in git history).
    intake_n: usize,
    /// Jobs through the batch endpoint in the intake phase; with `intake_n` they make the
    /// drain's 100,000-job backlog.
    batch_n: usize,
    /// Jobs per batch request.
    batch_size: usize,
    /// Concurrent batch clients.
    batch_clients: usize,
    /// Jobs in the end-to-end phase.
    e2e_n: usize,
    /// Open-loop rate of the latency phase (POST/s).
    lat_rate: usize,
    /// Length of the latency phase (s).
    lat_secs: u64,
    /// Phases to run.
    phases: Vec<String>,
    /// Record perf profiles of warren.
    perf: bool,
    /// Rounds of each throughput phase but the drain (the median is reported).
    repeat: usize,
    /// Open-loop rate of the soak phase (POST/s).
    soak_rate: usize,
    /// Length of the soak phase (s).
    soak_secs: u64,
    /// Jobs in the large-backlog phase.
    backlog_n: usize,
    /// The store the warren children run on (`BENCH_STORE`).
    store: StoreKind,
    /// Finished jobs the growth phase seeds.
    growth_rows: usize,
    /// Seconds the growth phase waits for its prune to end.
    growth_prune_wait: u64,
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

impl Params {
    fn from_env() -> Self {
        Self {
            raw_n: env_usize("BENCH_RAW_N", 30_000),
            inflight: env_usize("BENCH_INFLIGHT", 256).max(1),
            raw_channels: env_usize("BENCH_RAW_CHANNELS", 4).max(1),
            prefetch: env_usize("BENCH_PREFETCH", 256).clamp(1, 65_535),
            clients: env_usize("BENCH_CLIENTS", 256).max(1),
            intake_n: env_usize("BENCH_INTAKE_N", 60_000),
            batch_n: env_usize("BENCH_BATCH_N", 40_000),
            batch_size: env_usize("BENCH_BATCH_SIZE", 500).clamp(1, 1000),
            batch_clients: env_usize("BENCH_BATCH_CLIENTS", 4).max(1),
            e2e_n: env_usize("BENCH_E2E_N", 30_000),
            lat_rate: env_usize("BENCH_LAT_RATE", 1_000).max(1),
            lat_secs: env_usize("BENCH_LAT_SECS", 10).max(1) as u64,
            phases: std::env::var("BENCH_PHASES")
                .unwrap_or_else(|_| "raw,intake,drain,e2e,latency".to_owned())
                .split(',')
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect(),
            perf: std::env::var("BENCH_PERF").is_ok_and(|v| v == "1"),
            repeat: env_usize("BENCH_REPEAT", 3).max(1),
            soak_rate: env_usize("BENCH_SOAK_RATE", 200).max(1),
            soak_secs: env_usize("BENCH_SOAK_SECS", 600).max(60) as u64,
            backlog_n: env_usize("BENCH_BACKLOG_N", 1_000_000).max(1),
            store: StoreKind::from_env(),
            growth_rows: env_usize("BENCH_GROWTH_ROWS", 5_000_000).max(1),
            growth_prune_wait: env_usize("BENCH_GROWTH_PRUNE_WAIT", 3_600).max(60) as u64,
        }
    }

    fn runs(&self, phase: &str) -> bool {
        self.phases.iter().any(|p| p == phase)
    }
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// One job's payload (about 100 bytes of JSON), the same for the raw baseline and warren.
fn payload(i: usize) -> String {
    format!(r#"{{"n":{i},"pad":"{}"}}"#, "x".repeat(80))
}

async fn run(p: &Params, cleanup: &Cleanup) -> Figures {
    let mut f = Figures::default();
    let conn = tokio::time::timeout(
        Duration::from_secs(30),
        Connection::connect(&amqp_url(), ConnectionProperties::default()),
    )
    .await
    .map_err(|_| "no AMQP handshake within 30 s".to_owned())
    .and_then(|r| r.map_err(|e| e.to_string()))
    .unwrap_or_else(|e| {
        panic!(
            "RabbitMQ is not reachable at {} ({e})",
            warren::redact(&amqp_url())
        )
    });
    if p.runs("raw") {
        phase_raw(p, &conn, cleanup, &mut f).await;
    }
    let main_phases = ["intake", "drain", "e2e", "latency"];
    // The store the intake, drain, end-to-end and latency phases share.
    let space = if main_phases.iter().any(|ph| p.runs(ph)) {
        Some(Space::new(&p.store, cleanup).await)
    } else {
        None
    };
    if let Some(space) = &space {
        let bk = cleanup.work_queue("backlog");
        let backlog = if p.runs("intake") {
            let beside = Beside::new(&conn, cleanup).await;
            let jobs = phase_intake(p, space, &bk, &beside, &mut f).await;
            beside.delete().await;
            Some(jobs)
        } else if p.runs("drain") {
            // No intake phase: load the backlog untimed through the batch endpoint.
            let n = p.intake_n + p.batch_n;
            Some(load_backlog(p, space, &bk, n, "load", false).await.0)
        } else {
            None
        };
        if let (true, Some(jobs)) = (p.runs("drain"), &backlog) {
            let keys = ("drain_per_s", "rss_backlog_mb");
            phase_drain(p, space, &conn, &bk, jobs, &mut f, keys).await;
        }
        if p.runs("e2e") || p.runs("latency") {
            phase_run(p, space, &conn, cleanup, &mut f).await;
        }
    }
    drop(space);
    if p.runs("ab") {
        phase_ab(p, &conn, cleanup, &mut f).await;
    }
    if p.runs("dashboard") {
        phase_dashboard(p, &conn, cleanup, &mut f).await;
    }
    if p.runs("flow") {
        phase_flow(p, &conn, cleanup, &mut f).await;
    }
    if p.runs("wait") {
        phase_wait(p, &conn, cleanup, &mut f).await;
    }
    if p.runs("light") {
        phase_light(p, &conn, cleanup, &mut f).await;
    }
    if p.runs("backlog") {
        phase_backlog(p, &conn, cleanup, &mut f).await;
    }
    if p.runs("soak") {
        phase_soak(p, &conn, cleanup, &mut f).await;
    }
    if p.runs("growth") {
        phase_growth(p, &conn, cleanup, &mut f).await;
    }
    let _ = conn.close(200, "bench done".into()).await;
    f
}

fn main() {
    // `cargo bench` passes `--bench`; a filter or other flags are ignored.
    let p = Params::from_env();
    let ensure = repo().join("scripts/ensure-rabbitmq");
    let status = Command::new(&ensure)
        .status()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", ensure.display()));
    assert!(
        status.success(),
        "{} failed ({status}); the benchmark needs RabbitMQ",
        ensure.display()
    );
    if matches!(p.store, StoreKind::Postgres { .. }) {
        procfs::track_postgres();
    }
    println!("store: {}", p.store.name());
    let cleanup = Cleanup::default();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let started = Instant::now();
    let figures = rt.block_on(run(&p, &cleanup));
    drop(rt);
    let out = report(&p, &figures);
    let path = std::env::var("BENCH_OUT")
        .map(PathBuf::from)
        .unwrap_or_else(|_| repo().join("target/bench/e2e.json"));
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).expect("create the output directory");
    }
    std::fs::write(
        &path,
        serde_json::to_string_pretty(&out).expect("serialise the figures"),
    )
    .expect("write the JSON figures");
    println!(
        "figures written to {} ({:.0} s in all)",
        path.display(),
        started.elapsed().as_secs_f64()
    );
}
