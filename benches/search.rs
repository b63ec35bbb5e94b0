//! `cargo bench --bench search`: the job search's page latency with 1,000,000 jobs in the
//! store (the target: a page of 50 with any single filter in ≤ 20 ms, DESIGN §3 / issue 18).
//!
//! Seeds a fresh store (`BENCH_STORE=sqlite`, the default, in a temp dir; or `postgres`, a
//! database of its own created through `scripts/ensure-postgres`'s `WARREN_PG_URL` and dropped
//! at the end) through warren's own `Maintenance::import`, 5,000 rows a transaction: jobs a
//! week apart in creation time, UUIDv7 ids of their creation time, over 10 queues, mostly
//! `succeeded` as a store a week into production holds them. Then times `JobSearch::list`
//! (the call behind `GET /v1/jobs`) for each filter, `BENCH_SEARCH_ROUNDS` times (default
//! 200) with varying values, and prints p50 and p99 per filter with PASS/FAIL against 20 ms.
//! `BENCH_SEARCH_JOBS` changes the job count.
//!
//! The only SQL is PostgreSQL's administration (`CREATE`/`DROP DATABASE`, and `VACUUM
//! ANALYZE` after the seed, as autovacuum would do on a table that grew so).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sqlx::Connection as _;
use uuid::Uuid;
use warren::store::{
    Cursor, JobFilter, JobRecord, JobRow, JobStatus, OpenOptions, Store, open, rfc3339_ms,
};

/// The target for one page of 50.
const TARGET: Duration = Duration::from_millis(20);
/// Rows per `import` call.
const SEED_CHUNK: usize = 5_000;
/// The first job's creation time: 2026-11-01T00:00:00Z.
const BASE_MS: i64 = 1_793_491_200_000;
/// A week, over which the jobs were created.
const WEEK_MS: i64 = 7 * 86_400_000;

fn env_num(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().replace('_', "").parse().ok())
        .unwrap_or(default)
}

/// Job `i` of `n`: status by `i % 100` (90 succeeded, 3 dead, 2 retrying, 3 queued, 1
/// running, 1 cancelled), errors on the dead and retrying ones, correlation ids shared by 5
/// jobs, an idempotency key on every third.
fn row(i: usize, n: usize) -> JobRow {
    let created_at = BASE_MS + (WEEK_MS as f64 * i as f64 / n as f64) as i64;
    let at = u64::try_from(created_at).unwrap_or(0);
    let id = Uuid::new_v7(uuid::Timestamp::from_unix(
        uuid::NoContext,
        at / 1_000,
        u32::try_from(at % 1_000).unwrap_or(0) * 1_000_000,
    ));
    let (status, last_error) = match i % 100 {
        0..=2 => (
            JobStatus::Dead,
            Some(if i.is_multiple_of(2) {
                format!("exit 65: bad payload in record {i}")
            } else {
                format!("Timeout contacting upstream {} after 30 s", i % 17)
            }),
        ),
        3..=4 => (
            JobStatus::Retrying,
            Some(format!("Timeout contacting upstream {} after 30 s", i % 17)),
        ),
        5..=7 => (JobStatus::Queued, None),
        8 => (JobStatus::Running, None),
        9 => (JobStatus::Cancelled, None),
        _ => (JobStatus::Succeeded, None),
    };
    let finished = matches!(
        status,
        JobStatus::Succeeded | JobStatus::Dead | JobStatus::Cancelled
    );
    JobRow {
        record: JobRecord {
            id,
            queue: format!("queue-{}", i % 10),
            status,
            attempts: u32::from(status != JobStatus::Queued),
            max_attempts: 5,
            last_error,
            result: (status == JobStatus::Succeeded).then(|| "{\"ok\":true}".to_owned()),
            correlation_id: Some(format!("corr-{}", i / 5)),
            idempotency_key: i.is_multiple_of(3).then(|| format!("key-{i}")),
            created_at,
            started_at: (status != JobStatus::Queued).then_some(created_at + 5),
            finished_at: finished.then_some(created_at + 50),
            next_attempt_at: (status == JobStatus::Retrying).then_some(created_at + 60_000),
            discarded_at: None,
            schedule: None,
        },
        request_hash: None,
        accepted: true,
        lease_owner: (status == JobStatus::Running).then(|| "bench".to_owned()),
        lease_until: (status == JobStatus::Running).then_some(created_at + 60_000),
        resend_payload: None,
    }
}

/// The store under test, and what to drop at the end.
struct Bench {
    store: std::sync::Arc<dyn Store>,
    name: &'static str,
    _dir: Option<tempfile::TempDir>,
    pg: Option<(String, String)>,
}

fn ensure_postgres() -> String {
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(repo.join("scripts/ensure-postgres"))
        .stderr(Stdio::inherit())
        .output()
        .expect("run scripts/ensure-postgres");
    assert!(out.status.success(), "scripts/ensure-postgres failed");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("WARREN_PG_URL="))
        .map(|u| u.trim().to_owned())
        .expect("WARREN_PG_URL= from scripts/ensure-postgres")
}

fn with_database(url: &str, name: &str) -> String {
    let (base, query) = url.split_once('?').map_or((url, ""), |(b, q)| (b, q));
    let base = base.rsplit_once('/').map_or(base, |(b, _)| b);
    if query.is_empty() {
        format!("{base}/{name}")
    } else {
        format!("{base}/{name}?{query}")
    }
}

async fn admin(url: &str, sql: &str) {
    let mut conn = sqlx::PgConnection::connect(url)
        .await
        .expect("connect to PostgreSQL");
    sqlx::query(sql).execute(&mut conn).await.expect(sql);
}

impl Bench {
    async fn open() -> Self {
        match std::env::var("BENCH_STORE").unwrap_or_default().trim() {
            "" | "sqlite" => {
                let dir = tempfile::tempdir().expect("tempdir");
                let url = format!("sqlite://{}", dir.path().join("search.db").display());
                Self {
                    store: open(&OpenOptions::new(&url)).await.expect("open SQLite"),
                    name: "sqlite",
                    _dir: Some(dir),
                    pg: None,
                }
            }
            "postgres" => {
                let admin_url = ensure_postgres();
                let db = format!("warren_bench_search_{}", std::process::id());
                admin(&admin_url, &format!("CREATE DATABASE {db}")).await;
                let url = with_database(&admin_url, &db);
                Self {
                    store: open(&OpenOptions::new(&url))
                        .await
                        .expect("open PostgreSQL"),
                    name: "postgres",
                    _dir: None,
                    pg: Some((admin_url, db)),
                }
            }
            other => panic!("BENCH_STORE={other:?}: use `sqlite` (the default) or `postgres`"),
        }
    }

    async fn settle(&self) {
        if let Some((admin_url, db)) = &self.pg {
            admin(&with_database(admin_url, db), "VACUUM ANALYZE jobs").await;
        }
    }

    async fn close(self) {
        if let Some((admin_url, db)) = &self.pg {
            drop(self.store);
            admin(
                admin_url,
                &format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"),
            )
            .await;
        }
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1_000.0)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n = env_num("BENCH_SEARCH_JOBS", 1_000_000);
    let rounds = env_num("BENCH_SEARCH_ROUNDS", 200).max(1);
    let bench = Bench::open().await;
    let s = bench.store.clone();
    eprintln!("seeding {n} jobs into {} …", bench.name);
    let started = Instant::now();
    let mut i = 0;
    while i < n {
        let rows: Vec<JobRow> = (i..(i + SEED_CHUNK).min(n)).map(|i| row(i, n)).collect();
        s.import(&rows).await.expect("import");
        i += SEED_CHUNK;
    }
    bench.settle().await;
    let seed = started.elapsed();
    eprintln!("seeded in {:.1} s", seed.as_secs_f64());
    let middle = row(n / 2, n).record.id;

    type Make = Box<dyn Fn(usize) -> (JobFilter, Option<Cursor>)>;
    let phases: Vec<(&str, Make)> = vec![
        ("no filter", Box::new(|_| (JobFilter::default(), None))),
        (
            "status=dead",
            Box::new(|_| {
                (
                    JobFilter {
                        statuses: vec![JobStatus::Dead],
                        ..JobFilter::default()
                    },
                    None,
                )
            }),
        ),
        (
            "status=queued&status=retrying",
            Box::new(|_| {
                (
                    JobFilter {
                        statuses: vec![JobStatus::Queued, JobStatus::Retrying],
                        ..JobFilter::default()
                    },
                    None,
                )
            }),
        ),
        (
            "queue",
            Box::new(|r| {
                (
                    JobFilter {
                        queue: Some(format!("queue-{}", r % 10)),
                        ..JobFilter::default()
                    },
                    None,
                )
            }),
        ),
        (
            "queue+status=dead",
            Box::new(|r| {
                (
                    JobFilter {
                        // (Dead jobs are those with `i % 100` in 0..=2: queues 0 to 2.)
                        queue: Some(format!("queue-{}", r % 3)),
                        statuses: vec![JobStatus::Dead],
                        ..JobFilter::default()
                    },
                    None,
                )
            }),
        ),
        (
            "created range (an hour, mid-week)",
            Box::new(|r| {
                let from = BASE_MS + WEEK_MS / 2 + (r as i64 % 24) * 3_600_000;
                (
                    JobFilter {
                        created_after: Some(from),
                        created_before: Some(from + 3_600_000),
                        ..JobFilter::default()
                    },
                    None,
                )
            }),
        ),
        (
            "correlation_id",
            Box::new(move |r| {
                (
                    JobFilter {
                        correlation_id: Some(format!("corr-{}", (r * 7_919) % (n / 5))),
                        ..JobFilter::default()
                    },
                    None,
                )
            }),
        ),
        (
            "idempotency_key",
            Box::new(move |r| {
                (
                    JobFilter {
                        idempotency_key: Some(format!("key-{}", ((r * 7_919) % n) / 3 * 3)),
                        ..JobFilter::default()
                    },
                    None,
                )
            }),
        ),
        (
            "error_contains=timeout",
            Box::new(|_| {
                (
                    JobFilter {
                        error_contains: Some("timeout".into()),
                        ..JobFilter::default()
                    },
                    None,
                )
            }),
        ),
        (
            "error_contains=exit 65",
            Box::new(|_| {
                (
                    JobFilter {
                        error_contains: Some("exit 65".into()),
                        ..JobFilter::default()
                    },
                    None,
                )
            }),
        ),
        (
            "deep page (cursor at the 500,000th job)",
            Box::new(move |_| (JobFilter::default(), Some(Cursor::after(middle)))),
        ),
        (
            "deep page, status=dead",
            Box::new(move |_| {
                (
                    JobFilter {
                        statuses: vec![JobStatus::Dead],
                        ..JobFilter::default()
                    },
                    Some(Cursor::after(middle)),
                )
            }),
        ),
        (
            "error_contains matching nothing (every errored job read)",
            Box::new(|_| {
                (
                    JobFilter {
                        error_contains: Some("no such text".into()),
                        ..JobFilter::default()
                    },
                    None,
                )
            }),
        ),
    ];

    println!(
        "\n### {} — {n} jobs, {rounds} pages of 50 per filter, seeded in {:.0} s\n",
        bench.name,
        seed.as_secs_f64()
    );
    println!("| filter | jobs on the page | p50 (ms) | p99 (ms) | target | result |");
    println!("|---|---:|---:|---:|---|---|");
    let judged = phases.len() - 1;
    for (k, (name, make)) in phases.iter().enumerate() {
        let mut times = Vec::with_capacity(rounds);
        let mut got = 0;
        for r in 0..rounds {
            let (filter, after) = make(r);
            let t = Instant::now();
            let page = s.list(&filter, after, 50).await.expect("list");
            times.push(t.elapsed());
            got = page.jobs.len();
        }
        times.sort();
        let (p50, p99) = (percentile(&times, 0.5), percentile(&times, 0.99));
        let (target, result) = if k < judged {
            ("≤ 20 ms", if p99 <= TARGET { "PASS" } else { "**FAIL**" })
        } else {
            ("(worst case, not judged)", "")
        };
        println!(
            "| {name} | {got} | {} | {} | {target} | {result} |",
            ms(p50),
            ms(p99)
        );
    }
    let t = Instant::now();
    let counts = s.status_counts().await.expect("status_counts");
    println!(
        "\nstatus_counts (jobs by queue and status, {} queues): {} ms; first job {}",
        counts.len(),
        ms(t.elapsed()),
        rfc3339_ms(BASE_MS)
    );
    bench.close().await;
}
