//! /proc readings: RSS and CPU time of warren, the broker, PostgreSQL (with
//! `BENCH_STORE=postgres`) and the bench, and of the machine as a whole, which tells when
//! other processes make the figures unreliable; and the wait for a quiet machine before each
//! round.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::env_usize;
use crate::report::round;

/// A field of `/proc/<pid>/status` in KiB (`VmRSS`, `VmHWM`).
pub(crate) fn status_kb(pid: u32, field: &str) -> Option<u64> {
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

/// Whether [`CpuMeter`]s of warren phases count PostgreSQL's processes apart
/// (`BENCH_STORE=postgres`).
static TRACK_POSTGRES: AtomicBool = AtomicBool::new(false);

/// Makes the [`CpuMeter`]s of warren phases count PostgreSQL's processes as `postgres`.
pub(crate) fn track_postgres() {
    TRACK_POSTGRES.store(true, Ordering::Relaxed);
}

/// The PostgreSQL server's processes that work for the bench, and their CPU time (s): the
/// backends of the bench's databases (`bench_*`) and the server's own processes (postmaster,
/// WAL writer, checkpointer, background writer, …), which serve every database. Backends of
/// other databases (tests running next door) are left to "other". A backend's title is
/// `postgres: <cluster>: <user> <database> <host(port)> <state>`.
fn postgres_cpu() -> HashMap<u32, f64> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return HashMap::new();
    };
    dir.flatten()
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
            if comm.trim() != "postgres" {
                return None;
            }
            let title = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let title = String::from_utf8_lossy(&title).replace('\0', " ");
            let words: Vec<&str> = title.split_whitespace().collect();
            let backend = words
                .get(4)
                .is_some_and(|w| w.ends_with(')') && w.contains('('));
            let ours = !backend || words.get(3).is_some_and(|db| db.starts_with("bench_"));
            ours.then(|| (pid, cpu_seconds(pid)))
        })
        .collect()
}

/// Samples a process's VmRSS every 20 ms and keeps the peak since the last reset.
pub(crate) struct RssWatch {
    peak_kb: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl RssWatch {
    pub(crate) fn start(pid: u32) -> Self {
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

    pub(crate) fn reset(&self) {
        self.peak_kb.store(0, Ordering::Relaxed);
    }

    pub(crate) fn peak_mb(&self) -> f64 {
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
pub(crate) struct CpuMeter {
    pids: Vec<(&'static str, u32)>,
    start: Vec<f64>,
    /// PostgreSQL's processes at the start, when counted (see [`postgres_cpu`]).
    postgres: Option<HashMap<u32, f64>>,
    busy: (f64, f64),
    wall: Instant,
}

/// CPU seconds per process kind, summed over the repeats of a phase, and the jobs they did.
#[derive(Default)]
pub(crate) struct CpuTotals {
    seconds: BTreeMap<String, f64>,
    jobs: usize,
}

impl CpuTotals {
    /// `{"wall_s", "<kind>_s", "<kind>_us_per_job"}`, kinds `bench`, `broker`, `warren`,
    /// `postgres` (on PostgreSQL), `other` (other processes), and `stolen_s` (by the
    /// hypervisor).
    pub(crate) fn json(&self) -> Value {
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

    /// Adds `other`'s seconds and jobs to these.
    pub(crate) fn add(&mut self, other: &CpuTotals) {
        self.jobs += other.jobs;
        for (k, v) in &other.seconds {
            *self.seconds.entry(k.clone()).or_default() += v;
        }
    }

    /// One line: CPU per job of each kind, and the other processes' share.
    pub(crate) fn line(&self) -> String {
        let per = |k: &str| {
            self.seconds.get(k).map_or("-".to_owned(), |v| {
                format!("{:.0} µs", v * 1e6 / self.jobs.max(1) as f64)
            })
        };
        let wall = self.seconds.get("wall").copied().unwrap_or(0.0).max(1e-9);
        let other = self.seconds.get("other").copied().unwrap_or(0.0);
        let stolen = self.seconds.get("stolen").copied().unwrap_or(0.0);
        let postgres = if self.seconds.contains_key("postgres") {
            format!(", PostgreSQL {}", per("postgres"))
        } else {
            String::new()
        };
        format!(
            "CPU per job: warren {}, broker {}{postgres}, load generator {}; other processes {:.0}% of a core, stolen by the hypervisor {:.0}%{}",
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
    /// Counts the bench, the broker and, when given, warren (and then, with
    /// `BENCH_STORE=postgres`, PostgreSQL's processes).
    pub(crate) fn start(warren: Option<u32>) -> Self {
        let mut pids = vec![("bench", std::process::id())];
        if let Some(b) = broker_pid() {
            pids.push(("broker", b));
        }
        if let Some(w) = warren {
            pids.push(("warren", w));
        }
        let start = pids.iter().map(|(_, p)| cpu_seconds(*p)).collect();
        let postgres =
            (warren.is_some() && TRACK_POSTGRES.load(Ordering::Relaxed)).then(postgres_cpu);
        Self {
            pids,
            start,
            postgres,
            busy: machine_busy_seconds(),
            wall: Instant::now(),
        }
    }

    /// Adds what was spent since `start` to `totals`, for `jobs` jobs.
    pub(crate) fn stop(&self, totals: &mut CpuTotals, jobs: usize) {
        totals.jobs += jobs;
        *totals.seconds.entry("wall".into()).or_default() += self.wall.elapsed().as_secs_f64();
        let mut tracked = 0.0;
        for ((name, pid), before) in self.pids.iter().zip(&self.start) {
            let spent = cpu_seconds(*pid) - before;
            tracked += spent;
            *totals.seconds.entry((*name).to_owned()).or_default() += spent;
        }
        if let Some(before) = &self.postgres {
            // Backends opened since the start count whole; those closed since are lost.
            let spent: f64 = postgres_cpu()
                .into_iter()
                .map(|(pid, now)| now - before.get(&pid).copied().unwrap_or(0.0))
                .sum();
            tracked += spent;
            *totals.seconds.entry("postgres".into()).or_default() += spent;
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
pub(crate) async fn wait_quiet() {
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
