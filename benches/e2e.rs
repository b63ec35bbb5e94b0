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
//! warren runs as the release binary in child processes with a temp dir of their own
//! (`queues.toml`, SQLite store). It prints a table and writes the figures as JSON to
//! `BENCH_OUT` (default `target/bench/e2e.json`). Every queue it declares (`b-<name>-<rand>`)
//! is deleted at the end, also on a panic. Knobs (environment, defaults in [`Params`]):
//! `BENCH_RAW_N`, `BENCH_INFLIGHT`, `BENCH_RAW_CHANNELS`, `BENCH_PREFETCH`, `BENCH_CLIENTS`,
//! `BENCH_INTAKE_N`, `BENCH_BATCH_N`, `BENCH_BATCH_SIZE`, `BENCH_BATCH_CLIENTS`,
//! `BENCH_E2E_N`, `BENCH_PUBLISH_CHANNELS` (warren's `broker.publish_channels`), `BENCH_LAT_RATE`, `BENCH_LAT_SECS`, `BENCH_REPEAT` (rounds of each
//! throughput phase but the drain; the median is reported), `BENCH_PHASES` (a comma list of
//! `raw,intake,drain,e2e,latency`, plus the long `backlog` and `soak` phases and the `ab`
//! comparison of two builds, which run only when named), `BENCH_SOAK_RATE`,
//! `BENCH_SOAK_SECS`, `BENCH_BACKLOG_N`, `BENCH_QUIET_WAIT` (seconds to wait for a quiet
//! machine before each round, default 120), `BENCH_PERF=1` (record a `perf` profile of the
//! warren process in each warren phase to `target/bench/perf-<phase>.data`),
//! `BENCH_WARREN_BIN` (run another `warren` build) and `BENCH_WARREN_BIN_B` (the second
//! build of `ab`).
//!
//! Exits 0 whether targets pass or not: it is a measurement; FAIL rows say what missed.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use hdrhistogram::Histogram;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{Confirmation, Connection, ConnectionProperties};
use serde::Deserialize;
use serde_json::{Value, json};

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
    /// 18,600–21,000 in rounds of 20,000 or 30,000, 2026-11-22; BENCHMARKS.md).
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
        }
    }

    fn runs(&self, phase: &str) -> bool {
        self.phases.iter().any(|p| p == phase)
    }
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn amqp_url() -> String {
    std::env::var("WARREN_TEST_AMQP_URL")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned())
}

/// `b-<name>-<random>`.
fn unique(name: &str) -> String {
    format!(
        "b-{name}-{}",
        &uuid::Uuid::now_v7().simple().to_string()[20..]
    )
}

fn now_unix_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

/// One job's payload (about 100 bytes of JSON), the same for the raw baseline and warren.
fn payload(i: usize) -> String {
    format!(r#"{{"n":{i},"pad":"{}"}}"#, "x".repeat(80))
}

// ---------------------------------------------------------------------------------------
// Cleanup: queues are deleted and child processes killed, also when the bench panics.

/// Deletes the registered queues on drop, from a thread with a runtime of its own.
#[derive(Default)]
struct Cleanup {
    queues: Mutex<Vec<String>>,
}

impl Cleanup {
    fn add(&self, name: &str) {
        if let Ok(mut q) = self.queues.lock() {
            q.push(name.to_owned());
        }
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let names = self
            .queues
            .lock()
            .map(|mut q| std::mem::take(&mut *q))
            .unwrap_or_default();
        if names.is_empty() {
            return;
        }
        let url = amqp_url();
        let deleted = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            // Bounded: a broker that does not answer must not keep the bench from exiting.
            let cleanup = async move {
                let conn = Connection::connect(&url, ConnectionProperties::default())
                    .await
                    .ok()?;
                let mut n = 0;
                for name in names {
                    if let Ok(ch) = conn.create_channel().await
                        && ch
                            .queue_delete(name.as_str().into(), QueueDeleteOptions::default())
                            .await
                            .is_ok()
                    {
                        n += 1;
                    }
                }
                let _ = conn.close(200, "bench cleanup".into()).await;
                Some(n)
            };
            rt.block_on(async move {
                tokio::time::timeout(Duration::from_secs(30), cleanup)
                    .await
                    .ok()
                    .flatten()
            })
        })
        .join();
        match deleted {
            Ok(Some(n)) => eprintln!("bench: deleted {n} queues"),
            _ => eprintln!("bench: could not delete the bench queues (broker unreachable?)"),
        }
    }
}

// ---------------------------------------------------------------------------------------
// /proc: RSS and CPU time.

/// A field of `/proc/<pid>/status` in KiB (`VmRSS`, `VmHWM`).
fn status_kb(pid: u32, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// User + system CPU time of a process (s), from `/proc/<pid>/stat` (clock ticks of 10 ms).
fn cpu_seconds(pid: u32) -> f64 {
    let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the `(comm)`, which may hold spaces: state is field 3, utime 14, stime 15.
    let Some(rest) = text.rfind(')').map(|i| &text[i + 2..]) else {
        return 0.0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|s| s.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

/// The RabbitMQ node's process (`beam.smp`), for CPU accounting.
fn broker_pid() -> Option<u32> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
        (comm.trim() == "beam.smp").then_some(pid)
    })
}

/// Samples a process's VmRSS every 20 ms and keeps the peak since the last reset.
struct RssWatch {
    peak_kb: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl RssWatch {
    fn start(pid: u32) -> Self {
        let peak_kb = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (p, s) = (peak_kb.clone(), stop.clone());
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match status_kb(pid, "VmRSS") {
                    Some(kb) => {
                        p.fetch_max(kb, Ordering::Relaxed);
                    }
                    None => break,
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        Self { peak_kb, stop }
    }

    fn reset(&self) {
        self.peak_kb.store(0, Ordering::Relaxed);
    }

    fn peak_mb(&self) -> f64 {
        self.peak_kb.load(Ordering::Relaxed) as f64 / 1024.0
    }
}

impl Drop for RssWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// CPU time of the whole machine (s) from `/proc/stat`: (busy, stolen by the hypervisor).
fn machine_busy_seconds() -> (f64, f64) {
    let Ok(text) = std::fs::read_to_string("/proc/stat") else {
        return (0.0, 0.0);
    };
    let Some(line) = text.lines().find(|l| l.starts_with("cpu ")) else {
        return (0.0, 0.0);
    };
    // user nice system idle iowait irq softirq steal …: busy is all but idle, iowait and
    // steal (time the hypervisor gave to other machines).
    let ticks: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .filter_map(|v| v.parse().ok())
        .collect();
    let busy: f64 = ticks
        .iter()
        .enumerate()
        .filter(|(i, _)| !matches!(i, 3 | 4 | 7))
        .map(|(_, t)| t)
        .sum();
    (busy / 100.0, ticks.get(7).copied().unwrap_or(0.0) / 100.0)
}

/// CPU seconds spent by the broker, warren, the bench itself and everything else on the
/// machine ("other": a busy machine makes the figures unreliable) while it runs.
struct CpuMeter {
    pids: Vec<(&'static str, u32)>,
    start: Vec<f64>,
    busy: (f64, f64),
    wall: Instant,
}

/// CPU seconds per process kind, summed over the repeats of a phase, and the jobs they did.
#[derive(Default)]
struct CpuTotals {
    seconds: BTreeMap<String, f64>,
    jobs: usize,
}

impl CpuTotals {
    /// `{"wall_s", "<kind>_s", "<kind>_us_per_job"}`, kinds `bench`, `broker`, `warren`,
    /// `other` (other processes), and `stolen_s` (by the hypervisor).
    fn json(&self) -> Value {
        let mut out = serde_json::Map::new();
        out.insert("jobs".into(), json!(self.jobs));
        for (k, v) in &self.seconds {
            out.insert(format!("{k}_s"), json!(round(*v, 2)));
            if !matches!(k.as_str(), "wall" | "stolen") && self.jobs > 0 {
                out.insert(
                    format!("{k}_us_per_job"),
                    json!(round(v * 1e6 / self.jobs as f64, 1)),
                );
            }
        }
        Value::Object(out)
    }

    /// One line: CPU per job of each kind, and the other processes' share.
    fn line(&self) -> String {
        let per = |k: &str| {
            self.seconds.get(k).map_or("-".to_owned(), |v| {
                format!("{:.0} µs", v * 1e6 / self.jobs.max(1) as f64)
            })
        };
        let wall = self.seconds.get("wall").copied().unwrap_or(0.0).max(1e-9);
        let other = self.seconds.get("other").copied().unwrap_or(0.0);
        let stolen = self.seconds.get("stolen").copied().unwrap_or(0.0);
        format!(
            "CPU per job: warren {}, broker {}, load generator {}; other processes {:.0}% of a core, stolen by the hypervisor {:.0}%{}",
            per("warren"),
            per("broker"),
            per("bench"),
            100.0 * other / wall,
            100.0 * stolen / wall,
            if (other + stolen) / wall > 0.15 {
                "  <== the machine was busy: figures unreliable"
            } else {
                ""
            }
        )
    }
}

impl CpuMeter {
    fn start(warren: Option<u32>) -> Self {
        let mut pids = vec![("bench", std::process::id())];
        if let Some(b) = broker_pid() {
            pids.push(("broker", b));
        }
        if let Some(w) = warren {
            pids.push(("warren", w));
        }
        let start = pids.iter().map(|(_, p)| cpu_seconds(*p)).collect();
        Self {
            pids,
            start,
            busy: machine_busy_seconds(),
            wall: Instant::now(),
        }
    }

    /// Adds what was spent since `start` to `totals`, for `jobs` jobs.
    fn stop(&self, totals: &mut CpuTotals, jobs: usize) {
        totals.jobs += jobs;
        *totals.seconds.entry("wall".into()).or_default() += self.wall.elapsed().as_secs_f64();
        let mut tracked = 0.0;
        for ((name, pid), before) in self.pids.iter().zip(&self.start) {
            let spent = cpu_seconds(*pid) - before;
            tracked += spent;
            *totals.seconds.entry((*name).to_owned()).or_default() += spent;
        }
        let (busy, stolen) = machine_busy_seconds();
        let other = (busy - self.busy.0 - tracked).max(0.0);
        *totals.seconds.entry("other".into()).or_default() += other;
        *totals.seconds.entry("stolen".into()).or_default() += (stolen - self.busy.1).max(0.0);
    }
}

/// Waits (up to `BENCH_QUIET_WAIT` s, default 120) until processes other than the broker
/// and this bench use less than 15% of a core over a second, so that a compile or a test run
/// next door does not pass for warren's cost. Says so when it gives up.
async fn wait_quiet() {
    let limit = Duration::from_secs(env_usize("BENCH_QUIET_WAIT", 120) as u64);
    let started = Instant::now();
    let mut said = false;
    loop {
        let cpu = CpuMeter::start(None);
        tokio::time::sleep(Duration::from_secs(1)).await;
        let mut t = CpuTotals::default();
        cpu.stop(&mut t, 0);
        let other = t.seconds.get("other").copied().unwrap_or(0.0);
        if other < 0.15 {
            return;
        }
        if started.elapsed() > limit {
            println!(
                "  the machine is still busy ({:.0}% of a core in other processes); measuring anyway",
                other * 100.0
            );
            return;
        }
        if !said {
            println!(
                "  waiting for a quiet machine ({:.0}% of a core in other processes)",
                other * 100.0
            );
            said = true;
        }
    }
}

/// The median of `v` (0 when empty).
fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn round(x: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (x * f).round() / f
}

// ---------------------------------------------------------------------------------------
// A warren child process.

/// A running `warren` child; killed on drop if still running.
struct Warren {
    child: Option<Child>,
    pid: u32,
    addr: SocketAddr,
    perf: Option<Child>,
}

/// The `warren` binary the phases run: `BENCH_WARREN_BIN` (another build, e.g. for an A/B of
/// two trees in one session), else the one cargo built for this bench.
fn warren_bin() -> PathBuf {
    std::env::var_os("BENCH_WARREN_BIN").map_or_else(
        || PathBuf::from(env!("CARGO_BIN_EXE_warren")),
        PathBuf::from,
    )
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

impl Warren {
    /// Writes `queues-<tag>.toml` in `dir` (store `dir/warren.db`, shared by every process
    /// of the run) with `queues` (noop handler, prefetch `prefetch`) and starts
    /// `warren <command>` with it, logging to `target/bench/warren-<tag>.log`; returns once
    /// `/readyz` answers 200.
    async fn start(dir: &Path, tag: &str, command: &str, queues: &[&str], prefetch: usize) -> Self {
        Self::start_bin(&warren_bin(), dir, tag, command, queues, prefetch).await
    }

    /// [`Warren::start`] with the binary `bin`.
    async fn start_bin(
        bin: &Path,
        dir: &Path,
        tag: &str,
        command: &str,
        queues: &[&str],
        prefetch: usize,
    ) -> Self {
        let port = free_port();
        let mut toml = format!(
            "[broker]\nurl = \"{}\"\n{}\n[http]\nbind = \"127.0.0.1:{port}\"\n\n[store]\nurl = \"sqlite://warren.db\"\n",
            amqp_url(),
            std::env::var("BENCH_PUBLISH_CHANNELS")
                .map(|n| format!("publish_channels = {n}\n"))
                .unwrap_or_default()
        );
        for q in queues {
            toml.push_str(&format!(
                "\n[queues.\"{q}\"]\nhandler = \"noop\"\nprefetch = {prefetch}\n"
            ));
        }
        let config = dir.join(format!("queues-{tag}.toml"));
        std::fs::write(&config, toml).expect("write the bench config");
        let log_dir = repo().join("target/bench");
        std::fs::create_dir_all(&log_dir).expect("create target/bench");
        let log = std::fs::File::create(log_dir.join(format!("warren-{tag}.log")))
            .expect("create the warren log");
        let child = Command::new(bin)
            .arg("--config")
            .arg(&config)
            .arg(command)
            .env_remove("WARREN_AMQP_URL")
            .env_remove("WARREN_BIND")
            .env_remove("WARREN_STORE_URL")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start the warren binary");
        let pid = child.id();
        let w = Self {
            child: Some(child),
            pid,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            perf: None,
        };
        w.wait_ready().await;
        w
    }

    async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(mut c) = connect(self.addr).await
                && let Ok((200, _)) = get(&mut c, "/readyz").await
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "warren (pid {}) not ready within 30 s; see target/bench/warren-*.log",
                self.pid
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Starts `perf record` on this process (with `BENCH_PERF=1`).
    fn profile(&mut self, phase: &str) {
        let out = repo().join(format!("target/bench/perf-{phase}.data"));
        match Command::new("perf")
            .args([
                "record",
                "-F",
                "499",
                "-g",
                "--call-graph",
                "dwarf,16384",
                "-o",
            ])
            .arg(&out)
            .arg("-p")
            .arg(self.pid.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
        {
            Ok(c) => {
                println!("  perf recording to {}", out.display());
                self.perf = Some(c);
            }
            Err(e) => eprintln!("bench: perf not available: {e}"),
        }
    }

    fn stop_profile(&mut self) {
        if let Some(mut p) = self.perf.take() {
            signal(p.id(), "INT");
            let _ = p.wait();
        }
    }

    /// SIGTERM, then waits (up to 40 s) for a graceful exit.
    async fn stop(mut self) {
        self.stop_profile();
        let Some(mut child) = self.child.take() else {
            return;
        };
        signal(self.pid, "TERM");
        let waited = tokio::task::spawn_blocking(move || {
            let deadline = Instant::now() + Duration::from_secs(40);
            loop {
                match child.try_wait() {
                    Ok(Some(status)) => return Some(status),
                    Ok(None) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    _ => {
                        let _ = child.kill();
                        let _ = child.wait();
                        return None;
                    }
                }
            }
        })
        .await;
        if !matches!(waited, Ok(Some(s)) if s.success()) {
            eprintln!("bench: warren did not exit cleanly on SIGTERM: {waited:?}");
        }
    }
}

impl Drop for Warren {
    fn drop(&mut self) {
        self.stop_profile();
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status();
}

// ---------------------------------------------------------------------------------------
// A lean HTTP/1.1 keep-alive client (one connection per client task).
//
// The load generator shares the 2 cores with warren and the broker, so every µs it spends is
// taken from them. Each client task owns its socket and writes the request and reads the
// answer in place (`httparse` reads the head): no connection task to hand each request to and
// each answer back from, as a `hyper` client connection has (the client's CPU per single POST
// went from 23-25 to 16-18 µs; BENCHMARKS.md).

/// One keep-alive connection to warren.
struct Conn {
    stream: tokio::net::TcpStream,
    /// Bytes read and not yet consumed.
    buf: bytes::BytesMut,
    /// The request being written (reused).
    out: Vec<u8>,
}

async fn connect(addr: SocketAddr) -> Result<Conn, String> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    Ok(Conn {
        stream,
        buf: bytes::BytesMut::with_capacity(16 * 1024),
        out: Vec::with_capacity(1024),
    })
}

/// Sends one request and reads its answer: `(status, body)`. Answers must carry a
/// `Content-Length` (warren's do); anything else is an error.
async fn send(
    conn: &mut Conn,
    method: &str,
    path: &str,
    body: &[u8],
) -> Result<(u16, Bytes), String> {
    use std::io::Write as _;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    conn.out.clear();
    write!(
        conn.out,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .map_err(|e| e.to_string())?;
    conn.out.extend_from_slice(body);
    conn.stream
        .write_all(&conn.out)
        .await
        .map_err(|e| e.to_string())?;
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut head = httparse::Response::new(&mut headers);
        if let httparse::Status::Complete(head_len) = head
            .parse(&conn.buf)
            .map_err(|e| format!("bad answer: {e}"))?
        {
            let status = head.code.unwrap_or(0);
            let mut length = None;
            for h in head.headers.iter() {
                if h.name.eq_ignore_ascii_case("content-length") {
                    length = std::str::from_utf8(h.value)
                        .ok()
                        .and_then(|v| v.trim().parse::<usize>().ok());
                } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                    return Err("the bench client reads Content-Length answers only".to_owned());
                }
            }
            let length = length.ok_or("an answer without Content-Length")?;
            if conn.buf.len() >= head_len + length {
                let mut answer = conn.buf.split_to(head_len + length);
                return Ok((status, answer.split_off(head_len).freeze()));
            }
        }
        if conn
            .stream
            .read_buf(&mut conn.buf)
            .await
            .map_err(|e| e.to_string())?
            == 0
        {
            return Err("warren closed the connection".to_owned());
        }
    }
}

async fn post(conn: &mut Conn, path: &str, body: Bytes) -> Result<(u16, Bytes), String> {
    send(conn, "POST", path, &body).await
}

async fn get(conn: &mut Conn, path: &str) -> Result<(u16, Bytes), String> {
    send(conn, "GET", path, &[]).await
}

#[derive(Deserialize)]
struct Created {
    id: String,
}

#[derive(Deserialize)]
struct BatchAnswer {
    results: Vec<BatchItem>,
}

#[derive(Deserialize)]
struct BatchItem {
    status: u16,
}

/// What a closed-loop load run did.
#[derive(Debug, Default)]
struct LoadResult {
    /// Jobs answered 202.
    accepted: usize,
    /// Jobs refused or requests failed.
    failed: usize,
    /// The first failure, for the report.
    first_error: Option<String>,
    /// From the first request to the last answer.
    elapsed: Duration,
    /// Wall clock (ms since the epoch) of the first request.
    start_ms: f64,
}

impl LoadResult {
    fn per_s(&self) -> f64 {
        self.accepted as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// `clients` keep-alive connections POST the prepared `bodies` to `path` as fast as answers
/// come (closed loop). `jobs_in` says how many jobs an answer accepted.
async fn closed_loop(
    addr: SocketAddr,
    path: &str,
    bodies: Vec<Bytes>,
    clients: usize,
    jobs_in: fn(u16, &[u8], usize) -> usize,
    jobs_per_body: usize,
) -> LoadResult {
    let bodies = Arc::new(bodies);
    let next = Arc::new(AtomicUsize::new(0));
    let barrier = Arc::new(tokio::sync::Barrier::new(clients + 1));
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (bodies, next, barrier, path) = (
            bodies.clone(),
            next.clone(),
            barrier.clone(),
            path.to_owned(),
        );
        tasks.push(tokio::spawn(async move {
            let mut conn = connect(addr).await.expect("connect to warren");
            barrier.wait().await;
            let (mut ok, mut failed, mut first_error) = (0, 0, None);
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(body) = bodies.get(i) else { break };
                match post(&mut conn, &path, body.clone()).await {
                    Ok((status, answer)) => {
                        let n = jobs_in(status, &answer, jobs_per_body);
                        ok += n;
                        failed += jobs_per_body - n;
                        if n < jobs_per_body && first_error.is_none() {
                            first_error = Some(format!(
                                "HTTP {status}: {}",
                                String::from_utf8_lossy(&answer[..answer.len().min(300)])
                            ));
                        }
                    }
                    Err(e) => {
                        failed += jobs_per_body;
                        first_error.get_or_insert(e);
                        conn = connect(addr).await.expect("reconnect to warren");
                    }
                }
            }
            (ok, failed, first_error)
        }));
    }
    barrier.wait().await;
    let start_ms = now_unix_ms();
    let t0 = Instant::now();
    let mut out = LoadResult {
        start_ms,
        ..LoadResult::default()
    };
    for t in tasks {
        let (ok, failed, err) = t.await.expect("client task");
        out.accepted += ok;
        out.failed += failed;
        if out.first_error.is_none() {
            out.first_error = err;
        }
    }
    out.elapsed = t0.elapsed();
    out
}

fn single_accepted(status: u16, _: &[u8], _: usize) -> usize {
    usize::from(status == 202)
}

fn batch_accepted(status: u16, body: &[u8], _: usize) -> usize {
    if status != 200 {
        return 0;
    }
    serde_json::from_slice::<BatchAnswer>(body)
        .map_or(0, |a| a.results.iter().filter(|r| r.status == 202).count())
}

fn single_bodies(n: usize) -> Vec<Bytes> {
    (0..n)
        .map(|i| Bytes::from(format!(r#"{{"payload":{}}}"#, payload(i))))
        .collect()
}

fn batch_bodies(n: usize, size: usize) -> Vec<Bytes> {
    (0..n.div_ceil(size))
        .map(|b| {
            let items: Vec<String> = (b * size..((b + 1) * size).min(n))
                .map(|i| format!(r#"{{"payload":{}}}"#, payload(i)))
                .collect();
            Bytes::from(format!(r#"{{"jobs":[{}]}}"#, items.join(",")))
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// The raw lapin baseline.

/// Declares `name` exactly as warren declares a work queue (quorum, its arguments).
async fn declare_like_warren(conn: &Connection, name: &str, cleanup: &Cleanup) {
    let config = warren::Config::parse(
        &format!("[queues.\"{name}\"]\nhandler = \"noop\"\n"),
        Path::new("bench.toml"),
        &warren::config::EnvOverrides::default(),
    )
    .expect("bench queue config");
    let q = config.queue(name).expect("the queue just configured");
    let ch = conn.create_channel().await.expect("channel");
    cleanup.add(name);
    ch.queue_declare(
        name.into(),
        QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        },
        warren::topology::work_queue_args(q),
    )
    .await
    .expect("declare the raw queue");
    let _ = ch.close(200, "declared".into()).await;
}

/// Publishes `n` persistent, mandatory messages to `queue` with confirms, `inflight` in
/// flight spread over `channels` channels; panics on a nack or a return. Returns the time from
/// the first publish to the last confirm: the channels are opened (and put in confirm mode)
/// before, as warren's are before its rounds.
async fn raw_publish(
    conn: &Connection,
    queue: &str,
    n: usize,
    inflight: usize,
    channels: usize,
) -> Duration {
    let next = Arc::new(AtomicUsize::new(0));
    let per_channel = inflight.div_ceil(channels).max(1);
    let mut opened = Vec::new();
    for _ in 0..channels {
        let ch = conn.create_channel().await.expect("channel");
        ch.confirm_select(ConfirmSelectOptions::default())
            .await
            .expect("confirm mode");
        opened.push(ch);
    }
    let t = Instant::now();
    let mut tasks = Vec::new();
    for ch in opened {
        let (next, queue) = (next.clone(), queue.to_owned());
        tasks.push(tokio::spawn(async move {
            let mut pending = FuturesUnordered::new();
            loop {
                while pending.len() < per_channel {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        break;
                    }
                    let msg = warren::message::JobMessage {
                        id: uuid::Uuid::now_v7(),
                        queue: queue.clone(),
                        attempt: 1,
                        max_attempts: 5,
                        correlation_id: None,
                        idempotency_key: None,
                        payload: Bytes::from(payload(i)),
                    };
                    let confirm = ch
                        .basic_publish(
                            "".into(),
                            queue.as_str().into(),
                            BasicPublishOptions {
                                mandatory: true,
                                ..BasicPublishOptions::default()
                            },
                            &msg.payload,
                            msg.properties(),
                        )
                        .await
                        .expect("basic.publish");
                    pending.push(confirm);
                }
                match pending.next().await {
                    Some(c) => match c.expect("confirm") {
                        Confirmation::Ack(None) => {}
                        other => panic!("raw publish not confirmed: {other:?}"),
                    },
                    None => break,
                }
            }
            let done = t.elapsed();
            let _ = ch.close(200, "done".into()).await;
            done
        }));
    }
    let mut elapsed = Duration::ZERO;
    for task in tasks {
        elapsed = elapsed.max(task.await.expect("publisher task"));
    }
    elapsed
}

/// One timed round of the raw publisher (see [`raw_publish`]; `W` and channels from `p`):
/// `n` messages into `queue`, msg/s. The CPU it took is added to `cpu_all`.
async fn raw_publish_round(
    conn: &Connection,
    queue: &str,
    p: &Params,
    n: usize,
    cpu_all: &mut CpuTotals,
) -> f64 {
    let cpu = CpuMeter::start(None);
    let took = raw_publish(conn, queue, n, p.inflight, p.raw_channels).await;
    cpu.stop(cpu_all, n);
    n as f64 / took.as_secs_f64()
}

/// Consumes and acks (one `basic.ack` per message) `n` messages from `queue` with prefetch
/// `prefetch`.
async fn raw_consume(conn: &Connection, queue: &str, n: usize, prefetch: usize) {
    let ch = conn.create_channel().await.expect("channel");
    ch.basic_qos(
        u16::try_from(prefetch).unwrap_or(u16::MAX),
        BasicQosOptions::default(),
    )
    .await
    .expect("qos");
    let mut consumer = ch
        .basic_consume(
            queue.into(),
            "bench-raw".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("basic.consume");
    let mut got = 0;
    while got < n {
        let delivery = consumer
            .next()
            .await
            .expect("consumer open")
            .expect("delivery");
        delivery
            .acker
            .ack(BasicAckOptions::default())
            .await
            .expect("ack");
        got += 1;
    }
    let _ = ch.close(200, "done".into()).await;
}

/// Queue depth (ready messages), by a passive declare.
async fn depth(conn: &Connection, queue: &str) -> Option<u32> {
    let ch = conn.create_channel().await.ok()?;
    let r = ch
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .ok()
        .map(|q| q.message_count());
    let _ = ch.close(200, "depth".into()).await;
    r
}

// ---------------------------------------------------------------------------------------
// The store, read by the bench (read-only) to time jobs by their own `started_at` and
// `finished_at` instead of polling the API per job.

async fn open_store(dir: &Path) -> sqlx::SqlitePool {
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
        .expect("open the store read-only")
}

/// (succeeded jobs, min started_at, max finished_at) of `queue`.
async fn succeeded(store: &sqlx::SqlitePool, queue: &str) -> (i64, i64, i64) {
    sqlx::query_as::<_, (i64, Option<i64>, Option<i64>)>(
        "SELECT COUNT(*), MIN(started_at), MAX(finished_at) FROM jobs \
         WHERE queue = ? AND status = 'succeeded'",
    )
    .bind(queue)
    .fetch_one(store)
    .await
    .map(|(n, a, b)| (n, a.unwrap_or(0), b.unwrap_or(0)))
    .expect("store query")
}

/// Waits until `n` jobs of `queue` succeeded: polls the queue's depth (cheap) until it is
/// empty, then the store. Panics after `timeout`.
async fn wait_succeeded(
    conn: &Connection,
    store: &sqlx::SqlitePool,
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

// ---------------------------------------------------------------------------------------
// The phases.

#[derive(Default)]
struct Figures {
    values: BTreeMap<&'static str, f64>,
    /// Per figure measured in rounds paired with a raw baseline: (median ratio, median raw).
    paired: BTreeMap<&'static str, (f64, f64)>,
    notes: BTreeMap<String, Value>,
}

impl Figures {
    fn set(&mut self, key: &'static str, v: f64) {
        self.values.insert(key, v);
    }
    fn set_paired(&mut self, key: &'static str, paired: (f64, f64)) {
        self.paired.insert(key, paired);
    }
    fn get(&self, key: &str) -> Option<f64> {
        self.values.get(key).copied()
    }
    fn note(&mut self, key: &str, v: Value) {
        self.notes.insert(key.to_owned(), v);
    }
}

fn report_load(name: &str, r: &LoadResult) {
    println!(
        "  {name}: {} accepted, {} refused in {:.2} s = {:.0} jobs/s",
        r.accepted,
        r.failed,
        r.elapsed.as_secs_f64(),
        r.per_s()
    );
    if let Some(e) = &r.first_error {
        println!("  {name}: first failure: {e}");
    }
}

async fn phase_raw(p: &Params, conn: &Connection, cleanup: &Cleanup, f: &mut Figures) {
    println!(
        "raw baseline: {} rounds of {} messages, W={} in flight over {} channels, P={}",
        p.repeat, p.raw_n, p.inflight, p.raw_channels, p.prefetch
    );
    let (mut publish, mut consume, mut both) = (Vec::new(), Vec::new(), Vec::new());
    let (mut cpu_p, mut cpu_c, mut cpu_b) = (
        CpuTotals::default(),
        CpuTotals::default(),
        CpuTotals::default(),
    );
    for round in 1..=p.repeat {
        wait_quiet().await;
        let q = unique("raw");
        declare_like_warren(conn, &q, cleanup).await;
        publish.push(raw_publish_round(conn, &q, p, p.raw_n, &mut cpu_p).await);

        let cpu = CpuMeter::start(None);
        let t = Instant::now();
        raw_consume(conn, &q, p.raw_n, p.prefetch).await;
        consume.push(p.raw_n as f64 / t.elapsed().as_secs_f64());
        cpu.stop(&mut cpu_c, p.raw_n);

        let q2 = unique("raw-both");
        declare_like_warren(conn, &q2, cleanup).await;
        let cpu = CpuMeter::start(None);
        let t = Instant::now();
        futures::join!(
            raw_consume(conn, &q2, p.raw_n, p.prefetch),
            raw_publish(conn, &q2, p.raw_n, p.inflight, p.raw_channels)
        );
        both.push(p.raw_n as f64 / t.elapsed().as_secs_f64());
        cpu.stop(&mut cpu_b, p.raw_n);
        println!(
            "  round {round}: publish {:.0} msg/s, consume {:.0} msg/s, both at once {:.0} msg/s",
            publish[round - 1],
            consume[round - 1],
            both[round - 1]
        );
    }
    for (name, cpu) in [("publish", &cpu_p), ("consume", &cpu_c), ("both", &cpu_b)] {
        println!("  {name}: {}", cpu.line());
    }
    f.note("cpu_raw_publish", cpu_p.json());
    f.note("cpu_raw_consume", cpu_c.json());
    f.note("cpu_raw_e2e", cpu_b.json());
    f.note(
        "raw_rounds",
        json!({ "publish": publish, "consume": consume, "both": both }),
    );
    f.set("raw_publish_per_s", median(publish));
    f.set("raw_consume_per_s", median(consume));
    f.set("raw_e2e_per_s", median(both));
}

/// One closed-loop round (see [`closed_loop`]) against `w`, started once the machine is quiet;
/// the CPU it took is added to `cpu_all`.
async fn measured_round(
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
struct Beside<'a> {
    conn: &'a Connection,
    queue: String,
}

impl<'a> Beside<'a> {
    /// Declares the raw queue.
    async fn new(conn: &'a Connection, cleanup: &Cleanup) -> Self {
        let queue = unique("beside");
        declare_like_warren(conn, &queue, cleanup).await;
        Self { conn, queue }
    }

    /// One raw publish round of `n` messages (the raw phase's, [`raw_publish_round`]),
    /// started once the machine is quiet: msg/s. Its CPU is added to `cpu_all`.
    async fn round(&self, p: &Params, n: usize, cpu_all: &mut CpuTotals) -> f64 {
        wait_quiet().await;
        raw_publish_round(self.conn, &self.queue, p, n, cpu_all).await
    }

    /// Deletes the raw queue (and its backlog).
    async fn delete(self) {
        if let Ok(ch) = self.conn.create_channel().await {
            let _ = ch
                .queue_delete(self.queue.as_str().into(), QueueDeleteOptions::default())
                .await;
            let _ = ch.close(200, "deleted".into()).await;
        }
    }
}

/// What [`rounds`] measured: the median rate, the jobs accepted in all, and the medians of
/// the pairs' warren/raw ratios and of the raw rates beside.
struct Rounds {
    rate: f64,
    accepted: usize,
    paired: (f64, f64),
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
    let mut accepted = 0;
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
    }
}

/// Intake phases with `warren serve`; leaves `bk` with the accepted jobs as a backlog.
///
/// Each round is paired with a raw publish round beside it (see [`rounds`]): the intake ratios
/// are the medians of those pairs' ratios.
async fn phase_intake(
    p: &Params,
    dir: &Path,
    bk: &str,
    beside: &Beside<'_>,
    f: &mut Figures,
) -> usize {
    println!(
        "intake: warren serve; {} single POSTs from C={} clients, then {} jobs in batches of {} from {} clients, each in {} rounds, each round beside a raw publish round of as many messages",
        p.intake_n, p.clients, p.batch_n, p.batch_size, p.batch_clients, p.repeat
    );
    let mut w = Warren::start(dir, "serve", "serve", &[bk], p.prefetch).await;
    let rss = RssWatch::start(w.pid);
    // Idle: the first two seconds after it is ready.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle = rss.peak_mb();
    println!("  idle RSS: {idle:.1} MB (pid {})", w.pid);
    f.set("rss_idle_mb", idle);
    rss.reset();

    let path = format!("/v1/queues/{bk}/jobs");
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
    single.accepted + batch.accepted
}

/// A/B of two warren builds (`BENCH_PHASES=ab`): `BENCH_WARREN_BIN` (default: this tree's)
/// and `BENCH_WARREN_BIN_B` both serve, each with its own store and queue, and single-POST
/// rounds of `BENCH_INTAKE_N` jobs alternate between them (A B, B A, …), so the two rounds of
/// a pair see the same machine; `BENCH_REPEAT` pairs. Prints each pair's B/A and the median:
/// on these machines the rate moves ±20 % from minute to minute, far more than most changes
/// are worth, and only paired rounds show them.
async fn phase_ab(p: &Params, dir: &Path, conn: &Connection, cleanup: &Cleanup, f: &mut Figures) {
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
    for (tag, bin) in [("ab-a", &bin_a), ("ab-b", &bin_b)] {
        let q = unique(tag);
        cleanup.add(&q);
        cleanup.add(&format!("{q}.dlq"));
        let d = dir.join(tag);
        std::fs::create_dir_all(&d).expect("create the A/B store dir");
        let w = Warren::start_bin(bin, &d, tag, "serve", &[&q], p.prefetch).await;
        sides.push((w, q, CpuTotals::default(), Vec::new()));
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
}

/// Drain: `warren run` empties the backlog in `bk`.
async fn phase_drain(
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

/// End to end and latency, on one `warren run`.
async fn phase_run(p: &Params, dir: &Path, conn: &Connection, cleanup: &Cleanup, f: &mut Figures) {
    let (e2e, lat) = (unique("e2e"), unique("lat"));
    for q in [&e2e, &lat] {
        cleanup.add(q);
        cleanup.add(&format!("{q}.dlq"));
    }
    let mut w = Warren::start(dir, "run", "run", &[&e2e, &lat], p.prefetch).await;
    let rss = RssWatch::start(w.pid);
    let store = open_store(dir).await;
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
            done += load.accepted;
            let (n, _, last_finish) =
                wait_succeeded(conn, &store, &e2e, done, Duration::from_secs(300)).await;
            cpu.stop(&mut totals, load.accepted);
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
        latency(p, &mut w, conn, &store, &lat, &rss, f).await;
    }
    store.close().await;
    drop(rss);
    w.stop().await;
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

/// One answer of an [`open_loop`] run.
struct Answer {
    /// The request's place in the schedule (due at `i / rate` s).
    i: usize,
    /// µs from the dispatcher handing the request over to its answer.
    took_us: u64,
    /// The job id of a 202; `None` for any other answer and for a failed request.
    id: Option<String>,
    /// When the answer arrived (Unix ms).
    at_ms: f64,
}

/// Open loop: `n` POSTs to `path` (request `i` carries `body(i)`), request `i` handed to
/// `conns` keep-alive connections at `i / rate` s, scheduled by the clock and not by answers;
/// `tick(i)` runs just before each hand-over. An answer's time counts from the hand-over, so a
/// request that waits for a free connection still waits on the clock and a stall is not hidden
/// (no coordinated omission). A connection whose request failed reconnects. Returns the
/// answers and the dispatcher's own lateness (µs after the scheduled time; its timer ticks
/// every 1 ms), which is the load generator's and not counted in the answers.
async fn open_loop(
    addr: SocketAddr,
    path: &str,
    conns: usize,
    n: usize,
    rate: usize,
    body: impl Fn(usize) -> Bytes + Send + Sync + 'static,
    mut tick: impl FnMut(usize),
) -> (Vec<Answer>, Histogram<u64>) {
    let body = Arc::new(body);
    // Room for every request, so the dispatcher never waits on the connections.
    let (tx, rx) = tokio::sync::mpsc::channel::<(usize, Instant)>(n.max(1));
    let rx = Arc::new(tokio::sync::Mutex::new(rx));
    let path = Arc::new(path.to_owned());
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let (rx, body, path) = (rx.clone(), body.clone(), path.clone());
        let mut c = connect(addr).await.expect("connect to warren");
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            loop {
                let next = rx.lock().await.recv().await;
                let Some((i, handed)) = next else { break };
                let r = post(&mut c, &path, body(i)).await;
                let took_us = handed.elapsed().as_micros() as u64;
                let at_ms = now_unix_ms();
                let id = match &r {
                    Ok((202, answer)) => {
                        serde_json::from_slice::<Created>(answer).map(|c| c.id).ok()
                    }
                    _ => None,
                };
                out.push(Answer {
                    i,
                    took_us,
                    id,
                    at_ms,
                });
                if r.is_err() {
                    c = connect(addr).await.expect("reconnect to warren");
                }
            }
            out
        }));
    }
    let start = tokio::time::Instant::now();
    let every = Duration::from_secs_f64(1.0 / rate.max(1) as f64);
    let mut lateness = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
    for i in 0..n {
        let due = start + every.mul_f64(i as f64);
        tokio::time::sleep_until(due).await;
        tick(i);
        let handed = Instant::now();
        lateness.saturating_record(handed.duration_since(due.into_std()).as_micros() as u64 + 1);
        tx.send((i, handed)).await.expect("dispatch");
    }
    drop(tx);
    let mut answers = Vec::with_capacity(n);
    for t in tasks {
        answers.extend(t.await.expect("open-loop client"));
    }
    (answers, lateness)
}

/// Latency: [`open_loop`] at `lat_rate` POST/s for `lat_secs` over 64 connections; prints
/// POST→202 and accepted→started, and the dispatcher's own lateness apart.
async fn latency(
    p: &Params,
    w: &mut Warren,
    conn: &Connection,
    store: &sqlx::SqlitePool,
    queue: &str,
    rss: &RssWatch,
    f: &mut Figures,
) {
    let n = p.lat_rate * p.lat_secs as usize;
    println!(
        "latency: open loop at {} POST/s for {} s ({n} jobs) on warren run",
        p.lat_rate, p.lat_secs
    );
    if p.perf {
        w.profile("latency");
    }
    let bodies = single_bodies(n);
    wait_quiet().await;
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
    let mut post_h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
    let mut accepted: Vec<(String, f64)> = Vec::with_capacity(n);
    let mut failed = 0;
    for a in answers {
        match a.id {
            Some(id) => {
                post_h.saturating_record(a.took_us.max(1));
                accepted.push((id, a.at_ms));
            }
            None => failed += 1,
        }
    }
    w.stop_profile();
    let (done, _, _) =
        wait_succeeded(conn, store, queue, accepted.len(), Duration::from_secs(120)).await;
    let mut totals = CpuTotals::default();
    cpu.stop(&mut totals, n);
    println!("  {}", totals.line());
    f.note("cpu_latency", totals.json());
    let started: BTreeMap<String, i64> = sqlx::query_as::<_, (String, Option<i64>)>(
        "SELECT id, started_at FROM jobs WHERE queue = ?",
    )
    .bind(queue)
    .fetch_all(store)
    .await
    .expect("store query")
    .into_iter()
    .filter_map(|(id, s)| Some((id, s?)))
    .collect();
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
    f.set("post_p50_ms", ms(&post_h, 0.5));
    f.set("post_p99_ms", ms(&post_h, 0.99));
    f.set("start_p50_ms", ms(&start_h, 0.5));
    f.set("start_p99_ms", ms(&start_h, 0.99));
    f.note("latency_refused", json!(failed));
    f.note("latency_started_before_202", json!(before_202));
    let peak = rss.peak_mb();
    f.set("rss_load_mb", f.get("rss_load_mb").unwrap_or(0.0).max(peak));
}

/// Large backlog: `BENCH_BACKLOG_N` jobs (default 1,000,000) loaded untimed through the
/// batch endpoint of `warren serve`, then `warren run` drains them; its peak RSS must stay
/// within the same bound as with 100,000 (it must not grow with the backlog).
async fn phase_backlog(p: &Params, conn: &Connection, cleanup: &Cleanup, f: &mut Figures) {
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

/// Soak: `warren run` at a fixed open-loop rate (`BENCH_SOAK_RATE`, default 200 POST/s) for
/// `BENCH_SOAK_SECS` (default 600). Per minute: POST→202 p50/p99, errors and peak RSS.
/// After a 2-minute warm-up, RSS must stay flat (growth under 10 %), no request may fail
/// and p99 must stay stable.
async fn phase_soak(p: &Params, conn: &Connection, cleanup: &Cleanup, f: &mut Figures) {
    let dir = tempfile::tempdir().expect("tempdir");
    let q = unique("soak");
    cleanup.add(&q);
    cleanup.add(&format!("{q}.dlq"));
    println!(
        "soak: warren run at {} POST/s for {} s",
        p.soak_rate, p.soak_secs
    );
    let w = Warren::start(dir.path(), "soak", "run", &[&q], p.prefetch).await;
    let pid = w.pid;
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
    let store = open_store(dir.path()).await;
    let accepted: u64 = by_minute.values().map(|(h, _)| h.len()).sum();
    let (done, _, _) = wait_succeeded(
        conn,
        &store,
        &q,
        accepted as usize,
        Duration::from_secs(300),
    )
    .await;
    store.close().await;
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

// ---------------------------------------------------------------------------------------
// Report.

/// (figure, baseline figure, target text, check of (value, ratio to the baseline))
type Row = (
    &'static str,
    Option<&'static str>,
    &'static str,
    Option<fn(f64, Option<f64>) -> bool>,
);

fn ratio_at_least(k: f64) -> impl Fn(f64, Option<f64>) -> bool {
    move |_, ratio| ratio.is_some_and(|r| r >= k)
}

fn rows() -> Vec<Row> {
    vec![
        ("raw_publish_per_s", None, "", None),
        ("raw_consume_per_s", None, "", None),
        ("raw_e2e_per_s", None, "", None),
        (
            "intake_per_s",
            Some("raw_publish_per_s"),
            ">= 0.5 x raw",
            Some(|v, b| ratio_at_least(0.5)(v, b)),
        ),
        (
            "intake_batch_per_s",
            Some("raw_publish_per_s"),
            ">= 0.8 x raw",
            Some(|v, b| ratio_at_least(0.8)(v, b)),
        ),
        (
            "drain_per_s",
            Some("raw_consume_per_s"),
            ">= 0.6 x raw",
            Some(|v, b| ratio_at_least(0.6)(v, b)),
        ),
        (
            "e2e_per_s",
            Some("raw_e2e_per_s"),
            ">= 0.5 x raw",
            Some(|v, b| ratio_at_least(0.5)(v, b)),
        ),
        ("post_p50_ms", None, "", None),
        ("post_p99_ms", None, "<= 10 ms", Some(|v, _| v <= 10.0)),
        ("start_p50_ms", None, "", None),
        ("start_p99_ms", None, "<= 25 ms", Some(|v, _| v <= 25.0)),
        ("rss_idle_mb", None, "<= 64 MB", Some(|v, _| v <= 64.0)),
        ("rss_load_mb", None, "<= 200 MB", Some(|v, _| v <= 200.0)),
        ("rss_backlog_mb", None, "<= 200 MB", Some(|v, _| v <= 200.0)),
        ("drain_1m_per_s", None, "", None),
        (
            "rss_backlog_1m_mb",
            None,
            "<= 200 MB",
            Some(|v, _| v <= 200.0),
        ),
        ("soak_errors", None, "= 0", Some(|v, _| v == 0.0)),
        ("soak_rss_growth_pct", None, "< 10 %", Some(|v, _| v < 10.0)),
        ("soak_p99_max_ms", None, "", None),
    ]
}

fn report(p: &Params, f: &Figures) -> Value {
    println!();
    println!(
        "{:<20} {:>12} {:>12} {:>7} {:>14}  result",
        "figure", "value", "raw", "ratio", "target"
    );
    let mut out = serde_json::Map::new();
    let mut fails = 0;
    for (key, base_key, target, check) in rows() {
        let v = f.get(key);
        // Rounds paired with a raw baseline beside them: the median of the pairs' ratios
        // and of their raw rates; otherwise the ratio to the raw phase's median.
        let (base, ratio) = match f.paired.get(key) {
            Some(&(ratio, raw)) => (Some(raw), Some(ratio)),
            None => {
                let base = base_key.and_then(|b| f.get(b));
                (base, v.zip(base).map(|(v, b)| v / b))
            }
        };
        let result = match (v, check) {
            (None, _) => "not run",
            (Some(_), None) => "",
            (Some(_), Some(_)) if base_key.is_some() && base.is_none() => "no baseline",
            (Some(v), Some(check)) => {
                if check(v, ratio) {
                    "PASS"
                } else {
                    fails += 1;
                    "FAIL  <=="
                }
            }
        };
        let fmt = |x: Option<f64>, d: usize| x.map_or("-".to_owned(), |x| format!("{x:.d$}"));
        let digits = if key.ends_with("_per_s") { 0 } else { 2 };
        println!(
            "{key:<20} {:>12} {:>12} {:>7} {:>14}  {result}",
            fmt(v, digits),
            fmt(base, 0),
            fmt(ratio, 2),
            target
        );
        out.insert(
            key.to_owned(),
            v.map_or(Value::Null, |v| json!(round(v, 2))),
        );
        if let Some(r) = ratio {
            let name = format!("{}_ratio", key.trim_end_matches("_per_s"));
            out.insert(name, json!(round(r, 3)));
        }
        if let Some(&(_, raw)) = f.paired.get(key) {
            let stem = key.trim_end_matches("_per_s");
            out.insert(format!("{stem}_raw_beside_per_s"), json!(round(raw, 0)));
            // Shown, not judged: the ratio to the raw phase, minutes earlier.
            if let Some((v, b)) = v.zip(base_key.and_then(|b| f.get(b))) {
                println!(
                    "{:<20} {:>12} {b:>12.0} {:>7.2}  (to the raw phase: not judged)",
                    "",
                    "",
                    v / b
                );
                out.insert(format!("{stem}_ratio_to_raw_phase"), json!(round(v / b, 3)));
            }
        }
    }
    println!("{fails} target(s) missed");
    let mut notes = serde_json::Map::new();
    for (k, v) in &f.notes {
        notes.insert(k.clone(), v.clone());
    }
    out.insert("details".into(), Value::Object(notes));
    out.insert(
        "params".into(),
        json!({
            "raw_n": p.raw_n, "inflight_w": p.inflight, "raw_channels": p.raw_channels,
            "prefetch_p": p.prefetch, "clients_c": p.clients, "intake_n": p.intake_n,
            "batch_n": p.batch_n, "batch_size": p.batch_size, "batch_clients": p.batch_clients,
            "e2e_n": p.e2e_n, "lat_rate": p.lat_rate, "lat_secs": p.lat_secs,
            "soak_rate": p.soak_rate, "soak_secs": p.soak_secs, "backlog_n": p.backlog_n,
        }),
    );
    out.insert("machine".into(), machine());
    Value::Object(out)
}

fn machine() -> Value {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal"))?
                .split_whitespace()
                .nth(1)?
                .parse::<f64>()
                .ok()
        })
        .map_or(0.0, |kb| round(kb / 1024.0 / 1024.0, 1));
    json!({ "cores": cores, "mem_gib": mem_gib })
}

// ---------------------------------------------------------------------------------------

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
    let dir = tempfile::tempdir().expect("tempdir");
    if p.runs("raw") {
        phase_raw(p, &conn, cleanup, &mut f).await;
    }
    let bk = unique("backlog");
    cleanup.add(&bk);
    cleanup.add(&format!("{bk}.dlq"));
    let backlog = if p.runs("intake") {
        let beside = Beside::new(&conn, cleanup).await;
        let accepted = phase_intake(p, dir.path(), &bk, &beside, &mut f).await;
        beside.delete().await;
        accepted
    } else if p.runs("drain") {
        // No intake phase: load the backlog untimed through the batch endpoint.
        let w = Warren::start(dir.path(), "load", "serve", &[&bk], p.prefetch).await;
        let r = closed_loop(
            w.addr,
            &format!("/v1/queues/{bk}/jobs/batch"),
            batch_bodies(p.intake_n + p.batch_n, 1000),
            2,
            batch_accepted,
            1000,
        )
        .await;
        w.stop().await;
        r.accepted
    } else {
        0
    };
    if p.runs("drain") {
        phase_drain(
            p,
            dir.path(),
            &conn,
            &bk,
            backlog,
            &mut f,
            ("drain_per_s", "rss_backlog_mb"),
        )
        .await;
    }
    if p.runs("e2e") || p.runs("latency") {
        phase_run(p, dir.path(), &conn, cleanup, &mut f).await;
    }
    if p.runs("ab") {
        phase_ab(p, dir.path(), &conn, cleanup, &mut f).await;
    }
    if p.runs("backlog") {
        phase_backlog(p, &conn, cleanup, &mut f).await;
    }
    if p.runs("soak") {
        phase_soak(p, &conn, cleanup, &mut f).await;
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
