//! Schedules (`[schedules.NAME]`, DESIGN §5): each tick makes exactly one job, however many
//! intakes run, and `catch_up` decides what ticks missed while no intake ran get.
//!
//! 1. Two `warren serve` processes on one store (a PostgreSQL database, or one SQLite file)
//!    evaluate a per-second schedule for 20 s: every second of the window has exactly one
//!    job, the queue holds exactly one message per job, and the two logs together name each
//!    job once (which process won each tick's race is printed).
//!    `GET /v1/schedules`, the job's `schedule` field, the `schedule` filter of
//!    `GET /v1/jobs`, `warren schedules` and the dashboard's `/ui/schedules` show them.
//! 2. One intake with three per-second schedules (`catch_up` = `all`, `last`, `none`) is
//!    stopped for 10 s and started again: `all` has no gap, `last` fires the newest missed
//!    tick and nothing older, `none` starts at the first tick within the misfire threshold
//!    (5 s), one second after `last`'s.
//! 3. Bad schedules are config errors naming the key and the line.
//!
//! The daylight-saving cases (02:30 in Europe/Berlin on the spring-forward and fall-back
//! days) are unit tests of `src/schedule/tests.rs`: they need no broker.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use common::process::{Children, free_port, signal_group, spawn_intake, wait_ready};
use common::{QueueCleanup, Raw, TestStore, unique};
use serde_json::Value;
use warren::Config;
use warren::config::EnvOverrides;

/// The tick (ms since the epoch) in a scheduled job's idempotency key
/// `schedule:{name}:{RFC 3339}`, parsed here independently of warren's code.
fn tick_of(key: &str, name: &str) -> i64 {
    let at = key
        .strip_prefix(&format!("schedule:{name}:"))
        .unwrap_or_else(|| panic!("{key} is not a key of schedule {name}"));
    chrono::DateTime::parse_from_rfc3339(at)
        .unwrap_or_else(|e| panic!("{key}: {e}"))
        .timestamp_millis()
}

/// Every stored job of schedule `name`: its tick (ms) → how many jobs carry it.
async fn ticks(store: &TestStore, name: &str) -> BTreeMap<i64, usize> {
    let mut out = BTreeMap::new();
    for row in store.rows().await {
        if row.record.schedule.as_deref() == Some(name) {
            let key = row.record.idempotency_key.as_deref().unwrap_or_default();
            *out.entry(tick_of(key, name)).or_insert(0) += 1;
        }
    }
    out
}

fn now_ms() -> i64 {
    warren::store::now_ms()
}

/// Sends SIGTERM to `pid`'s group and waits until the process is gone (30 s at most).
async fn stop(pid: u32) {
    signal_group(pid, "TERM");
    let deadline = Instant::now() + Duration::from_secs(30);
    while Path::new(&format!("/proc/{pid}")).exists()
        && std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| !s.contains(") Z "))
            .unwrap_or(false)
    {
        assert!(
            Instant::now() < deadline,
            "warren {pid} did not stop within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `GET url` as JSON.
async fn get_json(http: &reqwest::Client, url: &str) -> Value {
    http.get(url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
        .json()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: not JSON: {e}"))
}

fn log_of(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(format!("{name}.log"))).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_intakes_fire_each_tick_of_a_per_second_schedule_once() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().to_path_buf();
    let q = unique("sched");
    let _cleanup = QueueCleanup(vec![q.clone(), format!("{q}.dlq")]);
    let name = "every-second";
    std::fs::write(
        dir.join("queues.toml"),
        format!(
            "[queues.{q}]\nhandler = \"noop\"\n\n[schedules.{name}]\nqueue = \"{q}\"\ncron = \"* * * * * *\"\npayload = {{ kind = \"tick\" }}\ncatch_up = \"none\"\n"
        ),
    )
    .expect("config");
    let store = TestStore::new(&dir).await;
    let mut children = Children::default();
    let ports = [free_port(), free_port()];
    let bases = ports.map(|p| format!("http://127.0.0.1:{p}"));
    for (port, n) in ports.iter().zip(["intake-a", "intake-b"]) {
        children
            .0
            .push(spawn_intake(&dir, store.url(), n, *port, &[]));
    }
    wait_ready(&bases[0], &dir, "intake-a.log").await;
    wait_ready(&bases[1], &dir, "intake-b.log").await;

    let from = now_ms();
    // The scenario's length: 20 s of both processes evaluating the schedule.
    tokio::time::sleep(Duration::from_secs(20)).await;
    let until = now_ms();

    // What an operator sees, while the schedule runs.
    let http = reqwest::Client::new();
    let listed: Value = get_json(&http, &format!("{}/v1/schedules", bases[1])).await;
    let s = &listed["schedules"][0];
    assert_eq!(s["name"], name, "{listed}");
    assert_eq!(s["queue"], q.as_str());
    assert_eq!(s["cron"], "* * * * * *");
    assert_eq!(s["timezone"], "UTC");
    assert!(s["next_run"].is_string(), "{listed}");
    let last_job = s["last_job_id"].as_str().expect("a last job").to_owned();
    let job: Value = get_json(&http, &format!("{}/v1/jobs/{last_job}", bases[0])).await;
    assert_eq!(job["schedule"], name, "{job}");
    assert_eq!(job["queue"], q.as_str());
    let page: Value = get_json(
        &http,
        &format!("{}/v1/jobs?schedule={name}&limit=500", bases[0]),
    )
    .await;
    let listed_jobs = page["jobs"].as_array().expect("jobs").len();
    let page = http
        .get(format!("{}/ui/schedules", bases[0]))
        .send()
        .await
        .expect("GET /ui/schedules")
        .text()
        .await
        .expect("html");
    assert!(
        page.contains(name)
            && page.contains("href=\"/ui/jobs/")
            && page.contains(&format!("/ui/jobs?schedule={name}").replace('-', "%2D")),
        "the dashboard's schedules page shows the schedule, its last job and a link to its jobs:\n{page}"
    );
    let cli = std::process::Command::new(env!("CARGO_BIN_EXE_warren"))
        .arg("schedules")
        .current_dir(&dir)
        .env("WARREN_STORE_URL", store.url())
        .env("WARREN_AMQP_URL", common::amqp_url())
        .env_remove("WARREN_CONFIG")
        .output()
        .expect("warren schedules");
    let table = String::from_utf8_lossy(&cli.stdout);
    assert!(
        cli.status.success(),
        "{}",
        String::from_utf8_lossy(&cli.stderr)
    );
    assert!(
        table.contains("NEXT RUN") && table.contains(name) && table.contains(&q),
        "{table}"
    );

    for pid in children.0.drain(..) {
        stop(pid).await;
    }
    let fired = ticks(&store, name).await;
    let twice: Vec<_> = fired.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "ticks with more than one job: {twice:?}");
    // Every second of the window (the first and the last excepted: the processes may have
    // been between passes) has its job.
    let window: Vec<i64> = ((from / 1000 + 1)..(until / 1000))
        .map(|s| s * 1000)
        .collect();
    let missing: Vec<_> = window.iter().filter(|t| !fired.contains_key(t)).collect();
    assert!(
        missing.is_empty(),
        "ticks without a job: {missing:?}; intake-a log:\n{}",
        log_of(&dir, "intake-a")
    );
    assert!(window.len() >= 18, "window of {} s", window.len());
    let jobs = fired.len();
    assert!(
        listed_jobs >= window.len() - 1,
        "GET /v1/jobs?schedule= listed {listed_jobs}"
    );
    let raw = Raw::connect().await;
    assert_eq!(
        raw.depth(&q).await,
        Some(u32::try_from(jobs).expect("jobs")),
        "one message per job in the queue"
    );
    // Each tick was raced by both processes, and the store let one make the job.
    let fired_by = |n: &str| log_of(&dir, n).matches("schedule fired").count();
    let (a, b) = (fired_by("intake-a"), fired_by("intake-b"));
    eprintln!(
        "{}: {jobs} ticks over {} s, one job each; intake-a made {a}, intake-b {b}",
        store.backend().name(),
        (until - from) / 1000
    );
    assert_eq!(a + b, jobs, "each job made by one process");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catch_up_decides_what_ticks_missed_during_a_stop_get() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().to_path_buf();
    let q = unique("catchup");
    let _cleanup = QueueCleanup(vec![q.clone(), format!("{q}.dlq")]);
    let mut config = format!("[queues.{q}]\nhandler = \"noop\"\n");
    for policy in ["all", "last", "none"] {
        config.push_str(&format!(
            "\n[schedules.s-{policy}]\nqueue = \"{q}\"\ncron = \"* * * * * *\"\ncatch_up = \"{policy}\"\n"
        ));
    }
    std::fs::write(dir.join("queues.toml"), config).expect("config");
    let store = TestStore::new(&dir).await;
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    // Waits until every schedule's latest job was enqueued at or after `after` (ms).
    let fired_since = |after: i64| {
        let (http, base) = (http.clone(), base.clone());
        async move {
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let listed = get_json(&http, &format!("{base}/v1/schedules")).await;
                let all = listed["schedules"].as_array().is_some_and(|s| {
                    s.len() == 3
                        && s.iter().all(|s| {
                            s["last_run_at"].as_str().is_some_and(|t| {
                                chrono::DateTime::parse_from_rfc3339(t)
                                    .is_ok_and(|t| t.timestamp_millis() >= after)
                            })
                        })
                });
                if all {
                    return;
                }
                assert!(
                    Instant::now() < deadline,
                    "schedules did not fire: {listed}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };

    // Starts an intake, waits until every schedule fired since it was ready and stops it;
    // returns when it was ready (ms).
    let mut children = Children::default();
    let mut run = async |name: &str| {
        let pid = spawn_intake(&dir, store.url(), name, port, &[]);
        children.0.push(pid);
        wait_ready(&base, &dir, &format!("{name}.log")).await;
        let ready = now_ms();
        fired_since(ready + 1_500).await;
        stop(pid).await;
        children.0.clear();
        ready
    };
    run("first").await;
    let stopped = now_ms();
    // The downtime the scenario is about.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let restarted = run("second").await;

    let mut first_after_gap = BTreeMap::new();
    for policy in ["all", "last", "none"] {
        let name = format!("s-{policy}");
        let fired = ticks(&store, &name).await;
        assert!(
            fired.values().all(|n| *n == 1),
            "{name}: a tick fired twice"
        );
        let before: Vec<i64> = fired.keys().copied().filter(|t| *t <= stopped).collect();
        let after: Vec<i64> = fired.keys().copied().filter(|t| *t > stopped).collect();
        let last_before = *before.last().expect("ticks before the stop");
        let first_after = *after.first().expect("ticks after the restart");
        assert!(
            after.windows(2).all(|w| w[1] - w[0] == 1000),
            "{name}: the ticks after the restart have a gap: {after:?}"
        );
        eprintln!(
            "{}: {name}: last tick before the stop {} ms before it, first after it {} ms after the last, {} after",
            store.backend().name(),
            stopped - last_before,
            first_after - last_before,
            after.len()
        );
        first_after_gap.insert(policy, (last_before, first_after));
    }
    let (last_all, first_all) = first_after_gap["all"];
    assert_eq!(first_all - last_all, 1000, "`all` fired every missed tick");
    let (last_last, first_last) = first_after_gap["last"];
    let downtime = restarted - stopped;
    assert!(
        first_last - last_last >= downtime - 5_000 - 1_000,
        "`last` fired only the newest missed tick: gap of {} ms after a stop of {downtime} ms",
        first_last - last_last
    );
    let (_, first_none) = first_after_gap["none"];
    assert_eq!(
        first_none - first_last,
        1000,
        "`none` starts at the first tick within the misfire threshold, one after `last`'s catch-up tick"
    );
}

fn parse(toml: &str) -> Result<Config, String> {
    Config::parse(toml, Path::new("queues.toml"), &EnvOverrides::default())
        .map_err(|e| e.to_string())
}

#[test]
fn bad_schedules_are_config_errors_naming_the_key_and_line() {
    let queue = "[queues.reports]\nhandler = \"noop\"\n\n";
    let cases = [
        (
            "[schedules.n]\nqueue = \"reports\"\ncron = \"61 * * * *\"\n",
            "line 6: `schedules.n.cron`",
        ),
        (
            "[schedules.n]\nqueue = \"reports\"\ncron = \"* * * *\"\n",
            "line 6: `schedules.n.cron`",
        ),
        (
            "[schedules.n]\nqueue = \"reports\"\ncron = \"0 3 * * *\"\ntimezone = \"Mars/Olympus\"\n",
            "line 7: `schedules.n.timezone`",
        ),
        (
            "[schedules.n]\nqueue = \"nope\"\ncron = \"0 3 * * *\"\n",
            "line 5: `schedules.n.queue`",
        ),
        (
            "[schedules.n]\nqueue = \"reports\"\ncron = \"0 3 * * *\"\ncatch_up = \"some\"\n",
            "line 7",
        ),
        (
            "[schedules.n]\nqueue = \"reports\"\ncron = \"0 3 * * *\"\nmax_attempts = 0\n",
            "line 7: `schedules.n.max_attempts`",
        ),
        (
            "[schedules.n]\nqueue = \"reports\"\ncron = \"0 3 * * *\"\ncolour = \"red\"\n",
            "line 7",
        ),
    ];
    for (schedule, want) in cases {
        let err = parse(&format!("{queue}{schedule}"))
            .err()
            .unwrap_or_default();
        assert!(err.contains(want), "{schedule:?}: {err}");
    }
    let ok = parse(&format!(
        "{queue}[schedules.nightly]\nqueue = \"reports\"\ncron = \"30 2 * * *\"\ntimezone = \"Europe/Berlin\"\npayload = {{ kind = \"nightly\" }}\n"
    ))
    .expect("a good schedule");
    let s = &ok.schedules["nightly"];
    assert_eq!(s.timezone.name(), "Europe/Berlin");
    assert_eq!(&s.payload[..], br#"{"kind":"nightly"}"#);
}
