//! The fleet on a three-node RabbitMQ cluster (DESIGN §2 guarantee 9, §11): losing a broker
//! node, or a worker process, loses no accepted job and runs no completed job again.
//!
//! `scripts/rabbitmq-cluster` starts three nodes on this machine (AMQP 5681–5683, data under
//! `target/rabbitmq-cluster/`; stopped and removed when the test ends, also when it fails).
//! Two `warren serve` intakes and two `warren work` processes get the three URLs
//! (`WARREN_AMQP_URL`, comma-separated) and one store (a PostgreSQL database in the PostgreSQL
//! pass, one SQLite file in the SQLite pass). An open-loop load of [`RATE`] POST/s runs for
//! [`LOAD_SECS`] s through both intakes while:
//! 1. the node intake A is connected to gets `rabbitmqctl stop_app`, and `start_app` a few
//!    seconds later;
//! 2. the Erlang VM of the node that leads the work queue is killed (SIGKILL) and started
//!    again: the queue elects a new leader, and every intake must publish to it;
//! 3. [`DELAYED`] jobs are posted, to a second queue the same workers serve, with delays of
//!    6–35 s (so they wait in delay levels 0–5), and the Erlang VM of the node that leads
//!    most of those levels is killed and started again while they wait;
//! 4. worker process `w1` is killed (SIGKILL of its process group) and started again.
//!
//! Checks: every 202 ends `succeeded`; each job ran at least once, none more than twice, and
//! at most the killed worker's `concurrency` twice; every 503 carries `Retry-After`; each
//! intake that lost its node, and every intake when the queue's leader was lost, accepted
//! again within 5 s; every delayed job ran within [`DELAY_BOUND`] of its due time.
//!
//! After the load, a majority is lost (the two nodes intake A does not use get `stop_app`):
//! POSTs are answered 503, never 202; with the nodes back, a POST is accepted and runs. The
//! figures are printed (and kept in RELIABILITY.md). When the test fails, the processes'
//! logs are kept under `target/test-logs/`.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::TestStore;
use common::process::{
    Children, free_port, rabbitmqctl, signal_group, spawn_intake, spawn_worker, timed_executions,
    wait_ready, write_recording_queue,
};
use serde_json::{Value, json};
use warren::store::JobStatus;

/// POSTs a second, spread over both intakes.
const RATE: u64 = 200;
/// How long the load runs.
const LOAD_SECS: u64 = 60;
/// Each worker process's `concurrency`.
const CONCURRENCY: usize = 8;
/// The longest an intake may refuse jobs after losing its node (DESIGN §11, issue's target).
/// A failover takes the process's standby connection to another node (`src/broker.rs`), so
/// no handshake is waited for; before the standby, an intake whose node was killed sometimes
/// waited ~4 s for a new connection on this 2-core machine.
const RECOVERY_BOUND: Duration = Duration::from_secs(5);
/// Delayed jobs posted before the delay levels' leader is killed.
const DELAYED: u64 = 30;
/// `worker.retry_sweep_after` of the workers: a delayed job overdue by more is published
/// again from the store.
const SWEEP_AFTER_S: u64 = 5;
/// How late a delayed job may start after its due time: the sweep bound, one sweep period
/// (a third of it, ±20 %), and 3 s for the failovers and a busy machine.
const DELAY_BOUND: Duration = Duration::from_secs(SWEEP_AFTER_S + 2 + 3);

/// The three-node cluster of `scripts/rabbitmq-cluster`; stopped and removed when dropped.
struct Cluster {
    urls: String,
}

impl Cluster {
    fn script(args: &[&str]) -> std::process::Output {
        let out = Command::new(common::repo().join("scripts/rabbitmq-cluster"))
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("scripts/rabbitmq-cluster {args:?}: {e}"));
        assert!(
            out.status.success(),
            "scripts/rabbitmq-cluster {args:?} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    fn start() -> Self {
        // A cluster left behind by an earlier run that was killed is removed first.
        Self::script(&["stop", "--reset"]);
        // From here on a failure (a node that does not boot) still stops what did start.
        let mut cluster = Self {
            urls: String::new(),
        };
        let out = Self::script(&["start"]);
        cluster.urls = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        assert_eq!(
            cluster.urls.split(',').count(),
            3,
            "three URLs: {}",
            cluster.urls
        );
        cluster
    }

    /// `warren-cN@localhost` for node `n` (1–3).
    fn node(n: u16) -> String {
        format!("warren-c{n}@localhost")
    }

    /// `rabbitmqctl -n NODE ARGS` against node `n`.
    fn rabbitmqctl(n: u16, args: &[&str]) {
        let node = Self::node(n);
        let mut all = vec!["-n", node.as_str()];
        all.extend_from_slice(args);
        rabbitmqctl(&all);
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new(common::repo().join("scripts/rabbitmq-cluster"))
            .args(["stop", "--reset"])
            .output();
    }
}

/// Which node (1–3) an intake's `/readyz` says it is connected to.
async fn node_of(http: &reqwest::Client, intake: &str) -> u16 {
    let ready: Value = http
        .get(format!("{intake}/readyz"))
        .send()
        .await
        .expect("GET /readyz")
        .json()
        .await
        .expect("readyz json");
    let node = ready["broker_node"].as_str().unwrap_or_default().to_owned();
    (1..=3)
        .find(|n| node.contains(&format!(":568{n}/")))
        .unwrap_or_else(|| panic!("{intake} names no cluster node: {ready}"))
}

/// The node (1–3) that leads quorum queue `queue`, from the management API of the first
/// node that answers.
async fn queue_leader(http: &reqwest::Client, queue: &str) -> u16 {
    for n in 1..=3 {
        let Ok(resp) = http
            .get(format!("http://127.0.0.1:1568{n}/api/queues/%2F/{queue}"))
            .basic_auth("guest", Some("guest"))
            .send()
            .await
        else {
            continue;
        };
        let Ok(info) = resp.json::<Value>().await else {
            continue;
        };
        if let Some(leader) = info["leader"].as_str() {
            return (1..=3)
                .find(|k| leader.starts_with(&format!("warren-c{k}@")))
                .unwrap_or_else(|| panic!("{queue}'s leader {leader} is not a cluster node"));
        }
    }
    panic!("no node's management API named {queue}'s leader");
}

/// One POST of the load.
#[derive(Clone, Debug)]
struct Sent {
    intake: usize,
    /// When it was sent.
    at: Instant,
    /// When its answer came.
    done: Instant,
    status: u16,
    id: Option<String>,
    retry_after: bool,
}

async fn load(intakes: [String; 2], queue: String, until: Instant, log: Arc<Mutex<Vec<Sent>>>) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / RATE));
    let mut n = 0usize;
    let mut tasks = tokio::task::JoinSet::new();
    while Instant::now() < until {
        tick.tick().await;
        let intake = n % 2;
        let url = format!("{}/v1/queues/{queue}/jobs", intakes[intake]);
        let (http, log) = (http.clone(), log.clone());
        tasks.spawn(async move {
            let at = Instant::now();
            let sent = match http
                .post(&url)
                .json(&json!({"payload": {"n": n}}))
                .send()
                .await
            {
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    let retry_after = resp.headers().contains_key("retry-after");
                    let id = if status == 202 {
                        resp.json::<Value>()
                            .await
                            .ok()
                            .and_then(|v| v["id"].as_str().map(str::to_owned))
                    } else {
                        None
                    };
                    Sent {
                        intake,
                        at,
                        done: Instant::now(),
                        status,
                        id,
                        retry_after,
                    }
                }
                Err(_) => Sent {
                    intake,
                    at,
                    done: Instant::now(),
                    status: 0,
                    id: None,
                    retry_after: false,
                },
            };
            log.lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(sent);
        });
        n += 1;
    }
    while tasks.join_next().await.is_some() {}
}

/// How long after `from` intake `intake` first answered 202 to a request sent after `from`.
fn recovery(log: &[Sent], intake: usize, from: Instant) -> Option<Duration> {
    log.iter()
        .filter(|s| s.intake == intake && s.at >= from && s.status == 202)
        .map(|s| s.done.duration_since(from))
        .min()
}

/// The first warnings and errors of a process's log: what it met at the faults.
fn warnings(dir: &Path, file: &str) -> String {
    let text = std::fs::read_to_string(dir.join(file)).unwrap_or_default();
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("WARN") || l.contains("ERROR"))
        .take(40)
        .collect();
    lines.join("\n")
}

fn tail(dir: &Path, file: &str) -> String {
    let text = std::fs::read_to_string(dir.join(file)).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_a_node_or_a_worker_under_load_loses_no_job() {
    let cluster = tokio::task::spawn_blocking(Cluster::start)
        .await
        .expect("cluster start");
    tokio::time::timeout(Duration::from_secs(480), scenario(&cluster))
        .await
        .expect("the chaos scenario finished within 8 minutes");
}

/// Copies the processes' logs to `target/test-logs/cluster_chaos-<unix time>/` when dropped
/// before [`KeepLogs::finished`]: a failed assertion, or the scenario's timeout.
struct KeepLogs {
    dir: std::path::PathBuf,
    finished: bool,
}

impl KeepLogs {
    fn finished(mut self) {
        self.finished = true;
    }
}

impl Drop for KeepLogs {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let keep = common::repo().join(format!("target/test-logs/cluster_chaos-{stamp}"));
        if std::fs::create_dir_all(&keep).is_err() {
            return;
        }
        for entry in std::fs::read_dir(&self.dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "log" || e == "toml") {
                let _ = std::fs::copy(&path, keep.join(entry.file_name()));
            }
        }
        eprintln!("the processes' logs are kept in {}", keep.display());
    }
}

/// SIGKILL of node `n`'s VM (`what` it is, for the log); returns when it was gone.
async fn kill_node(n: u16, what: &str, start: Instant) -> Instant {
    tokio::task::spawn_blocking(move || Cluster::script(&["kill", &n.to_string()]))
        .await
        .expect("kill");
    eprintln!(
        "[{:>5.1}s] SIGKILL to node {n}'s VM ({what})",
        start.elapsed().as_secs_f64()
    );
    Instant::now()
}

/// Starts killed node `n` again and waits until it is back in the cluster.
async fn restart_node(n: u16, start: Instant) {
    tokio::task::spawn_blocking(move || Cluster::script(&["restart", &n.to_string()]))
        .await
        .expect("restart");
    eprintln!(
        "[{:>5.1}s] node {n} started again",
        start.elapsed().as_secs_f64()
    );
}

/// One delayed job: its id and when it was due (ms since the Unix epoch).
struct Delayed {
    id: String,
    due_ms: u64,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Posts [`DELAYED`] jobs through both intakes with delays of 6, 7, … s; a 503 is retried.
async fn post_delayed(http: &reqwest::Client, intakes: &[String; 2], queue: &str) -> Vec<Delayed> {
    let mut out = Vec::new();
    for i in 0..DELAYED {
        let delay_ms = (6 + i) * 1000;
        for attempt in 0.. {
            assert!(attempt < 50, "delayed job {i} refused 50 times");
            let sent = now_ms();
            let resp = http
                .post(format!(
                    "{}/v1/queues/{queue}/jobs",
                    intakes[i as usize % 2]
                ))
                .json(&json!({"payload": {"delayed": i}, "delay_ms": delay_ms}))
                .send()
                .await;
            if let Ok(resp) = resp
                && resp.status() == 202
            {
                let v: Value = resp.json().await.expect("json");
                out.push(Delayed {
                    id: v["id"].as_str().expect("id").to_owned(),
                    due_ms: sent + delay_ms,
                });
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    out
}

/// The node (1–3) leading most of delay levels 0 to 5 (where [`post_delayed`]'s jobs wait).
async fn delay_levels_leader(http: &reqwest::Client) -> u16 {
    let mut count = [0usize; 4];
    for k in 0..=5 {
        count[usize::from(queue_leader(http, &format!("warren.delay.{k:02}")).await)] += 1;
    }
    (1..=3u16)
        .max_by_key(|n| count[usize::from(*n)])
        .unwrap_or(1)
}

async fn scenario(cluster: &Cluster) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().to_path_buf();
    let keep_logs = KeepLogs {
        dir: dir.clone(),
        finished: false,
    };
    let q = common::unique("chaos");
    write_recording_queue(&dir, &q, CONCURRENCY);
    // The delayed jobs go to a queue of their own, served by the same workers, so that their
    // start times measure the delay levels and the sweeper, not the load's backlog.
    let dq = format!("{q}-delayed");
    let config = std::fs::read_to_string(dir.join("queues.toml")).expect("config");
    let own_table = config
        .split_once(&format!("[queues.{q}]"))
        .map(|(_, table)| table.to_owned())
        .expect("the queue's table");
    std::fs::write(
        dir.join("queues.toml"),
        format!(
            "{}\n[queues.{dq}]{own_table}",
            config.replacen(
                "[worker]\n",
                &format!("[worker]\nretry_sweep_after = \"{SWEEP_AFTER_S}s\"\n"),
                1,
            )
        ),
    )
    .expect("config");
    let store = TestStore::new(&dir).await;
    let mut children = Children::default();
    let urls = cluster.urls.as_str();
    let (port_a, port_b) = (free_port(), free_port());
    let intakes = [
        format!("http://127.0.0.1:{port_a}"),
        format!("http://127.0.0.1:{port_b}"),
    ];
    let env = [("WARREN_AMQP_URL", urls)];
    for (port, name) in [(port_a, "intake-a"), (port_b, "intake-b")] {
        children
            .0
            .push(spawn_intake(&dir, store.url(), name, port, &env));
    }
    let worker = |name: &str| spawn_worker(&dir, store.url(), name, &env);
    children.0.push(worker("w1"));
    children.0.push(worker("w2"));
    wait_ready(&intakes[0], &dir, "intake-a.log").await;
    wait_ready(&intakes[1], &dir, "intake-b.log").await;
    let http = reqwest::Client::new();

    // The workers consume before the load starts: one job runs end to end.
    let first: Value = http
        .post(format!("{}/v1/queues/{q}/jobs", intakes[0]))
        .json(&json!({"payload": {"first": true}}))
        .send()
        .await
        .expect("POST")
        .json()
        .await
        .expect("json");
    let first = first["id"].as_str().expect("id").to_owned();
    let deadline = Instant::now() + Duration::from_secs(60);
    while store.statuses().await.get(&first) != Some(&JobStatus::Succeeded) {
        assert!(
            Instant::now() < deadline,
            "the first job did not run within 60 s; w1:\n{}",
            tail(&dir, "w1.log")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let log = Arc::new(Mutex::new(Vec::new()));
    let start = Instant::now();
    let load = tokio::spawn(load(
        intakes.clone(),
        q.clone(),
        start + Duration::from_secs(LOAD_SECS),
        log.clone(),
    ));
    let at = |secs: u64| tokio::time::sleep_until((start + Duration::from_secs(secs)).into());
    let mut faults: Vec<(String, Instant, Option<usize>)> = Vec::new();

    // 1. stop_app on intake A's node.
    at(8).await;
    let stopped = node_of(&http, &intakes[0]).await;
    let b_on_stopped = node_of(&http, &intakes[1]).await == stopped;
    tokio::task::spawn_blocking(move || Cluster::rabbitmqctl(stopped, &["stop_app"]))
        .await
        .expect("stop_app");
    // From here the node is gone: requests sent earlier may still have been confirmed by it.
    let t = Instant::now();
    eprintln!(
        "[{:>5.1}s] stop_app on node {stopped} (intake A's)",
        start.elapsed().as_secs_f64()
    );
    faults.push((format!("stop_app node {stopped}"), t, Some(0)));
    if b_on_stopped {
        faults.push((format!("stop_app node {stopped}"), t, Some(1)));
    }
    at(15).await;
    tokio::task::spawn_blocking(move || {
        Cluster::rabbitmqctl(stopped, &["start_app"]);
        Cluster::rabbitmqctl(stopped, &["await_startup"]);
    })
    .await
    .expect("start_app");
    eprintln!(
        "[{:>5.1}s] node {stopped} started again",
        start.elapsed().as_secs_f64()
    );

    // 2. SIGKILL of the VM of the node that leads the work queue (the worst node to lose:
    //    the queue elects a new leader, and every intake publishes to it).
    at(25).await;
    let killed = queue_leader(&http, &q).await;
    let t = kill_node(killed, "the work queue's leader", start).await;
    for intake in [0, 1] {
        faults.push((format!("SIGKILL node {killed} (leader)"), t, Some(intake)));
    }
    at(30).await;
    restart_node(killed, start).await;

    // 3. Delayed jobs wait in the delay levels; the node leading most of those levels dies.
    at(32).await;
    let delayed = post_delayed(&http, &intakes, &dq).await;
    eprintln!(
        "[{:>5.1}s] {} delayed jobs posted (6–{} s)",
        start.elapsed().as_secs_f64(),
        delayed.len(),
        5 + DELAYED
    );
    at(36).await;
    let killed = delay_levels_leader(&http).await;
    let t = kill_node(killed, "the delay levels' leader", start).await;
    for intake in [0, 1] {
        faults.push((
            format!("SIGKILL node {killed} (delay levels' leader)"),
            t,
            Some(intake),
        ));
    }
    at(40).await;
    restart_node(killed, start).await;

    // 4. SIGKILL of worker w1's process group, started again 3 s later.
    at(45).await;
    signal_group(children.0[2], "KILL");
    eprintln!(
        "[{:>5.1}s] SIGKILL to worker w1",
        start.elapsed().as_secs_f64()
    );
    faults.push(("SIGKILL worker w1".to_owned(), Instant::now(), None));
    at(48).await;
    children.0.push(worker("w1"));

    load.await.expect("load");
    let log = log
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    let accepted: Vec<String> = log.iter().filter_map(|s| s.id.clone()).collect();
    let refused = log.iter().filter(|s| s.status == 503).count();
    let no_answer = log.iter().filter(|s| s.status == 0).count();
    let others: Vec<u16> = log
        .iter()
        .map(|s| s.status)
        .filter(|s| ![0, 202, 503].contains(s))
        .collect();
    assert!(others.is_empty(), "only 202 and 503 answers: {others:?}");
    assert!(
        log.iter()
            .filter(|s| s.status == 503)
            .all(|s| s.retry_after),
        "every 503 carries Retry-After"
    );

    // Every accepted job ends `succeeded`.
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let statuses = store.statuses().await;
        let done = accepted
            .iter()
            .filter(|id| statuses.get(*id) == Some(&JobStatus::Succeeded))
            .count();
        if done == accepted.len() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{done} of {} accepted jobs succeeded within 180 s of the load's end; w2:\n{}",
            accepted.len(),
            tail(&dir, "w2.log")
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Every delayed job ends `succeeded`, and started within DELAY_BOUND of its due time.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let statuses = store.statuses().await;
        if delayed
            .iter()
            .all(|d| statuses.get(&d.id) == Some(&JobStatus::Succeeded))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "delayed jobs not all succeeded within 60 s of the others"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let executions = timed_executions(&dir);
    let mut runs: HashMap<String, usize> = HashMap::new();
    let mut first_run: HashMap<&str, u64> = HashMap::new();
    for (id, _, at) in &executions {
        *runs.entry(id.clone()).or_default() += 1;
        let first = first_run.entry(id.as_str()).or_insert(*at);
        *first = (*first).min(*at);
    }
    let lateness: Vec<(u64, i64)> = delayed
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let ran = first_run.get(d.id.as_str()).copied().unwrap_or(0);
            (6 + i as u64, ran as i64 - d.due_ms as i64)
        })
        .collect();
    let worst = lateness.iter().map(|(_, l)| *l).max().unwrap_or(0);
    eprintln!(
        "delayed jobs: started after their due time (ms): {:?}",
        lateness.iter().map(|(_, l)| *l).collect::<Vec<_>>()
    );
    let lost = accepted.iter().filter(|id| !runs.contains_key(*id)).count();
    let twice = accepted
        .iter()
        .chain(delayed.iter().map(|d| &d.id))
        .filter(|id| runs.get(*id) == Some(&2))
        .count();
    let more = runs.values().filter(|n| **n > 2).count();
    // Jobs whose POST was answered 503 and that ran anyway: a publish whose confirm did not
    // come in time (the client was told 503, not 202) that the broker still enqueued.
    let known: std::collections::HashSet<&str> = accepted
        .iter()
        .map(String::as_str)
        .chain(delayed.iter().map(|d| d.id.as_str()))
        .chain([first.as_str()])
        .collect();
    let refused_but_ran = runs
        .keys()
        .filter(|id| !known.contains(id.as_str()))
        .count();

    let mut recoveries = Vec::new();
    for (what, t, intake) in &faults {
        if let Some(i) = intake {
            let r = recovery(&log, *i, *t);
            eprintln!(
                "{what}: intake {} accepted again after {:?}",
                ["A", "B"][*i],
                r
            );
            recoveries.push((what.clone(), *i, r));
        }
    }
    eprintln!(
        "store {}: sent {}, accepted {}, refused 503 {refused}, no answer {no_answer}, lost {lost}, ran twice {twice}, refused but ran {refused_but_ran}; recoveries {:?}",
        store.backend().name(),
        log.len(),
        accepted.len(),
        recoveries
            .iter()
            .map(|(w, i, r)| format!(
                "{w} intake {}: {} ms",
                ["A", "B"][*i],
                r.map_or(-1, |d| d.as_millis() as i64)
            ))
            .collect::<Vec<_>>()
    );
    eprintln!(
        "delayed: {} posted, {} ran late by more than {DELAY_BOUND:?}; worst {worst} ms",
        delayed.len(),
        lateness
            .iter()
            .filter(|(_, l)| *l > DELAY_BOUND.as_millis() as i64)
            .count()
    );
    // Intake A lost its node to the stop_app: it moved, said so, and counted it.
    let metrics = http
        .get(format!("{}/metrics", intakes[0]))
        .send()
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics");
    let failovers: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("warren_broker_failovers_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0);
    assert!(
        failovers >= 1.0,
        "intake A counted its failover:\n{metrics}"
    );
    let intake_log = std::fs::read_to_string(dir.join("intake-a.log")).unwrap_or_default();
    assert!(
        intake_log.contains("broker node lost; connected to another node"),
        "intake A's log names the move:\n{}",
        tail(&dir, "intake-a.log")
    );
    assert_eq!(lost, 0, "accepted jobs that never ran");
    assert_eq!(more, 0, "no job ran more than twice");
    assert!(
        twice <= CONCURRENCY,
        "{twice} jobs ran twice; only the killed worker's {CONCURRENCY} in flight may"
    );
    for (secs, late) in &lateness {
        assert!(
            *late <= DELAY_BOUND.as_millis() as i64,
            "the job delayed {secs} s started {late} ms after its due time (bound {DELAY_BOUND:?})"
        );
    }
    for (what, i, r) in recoveries {
        let r = r.unwrap_or_else(|| {
            panic!(
                "{what}: intake {i} never accepted again; its log:\n{}",
                tail(&dir, ["intake-a.log", "intake-b.log"][i])
            )
        });
        assert!(
            r <= RECOVERY_BOUND,
            "{what}: intake {i} accepted again only after {r:?}; its warnings:\n{}",
            warnings(&dir, ["intake-a.log", "intake-b.log"][i])
        );
    }
    majority_lost(&http, &intakes[0], &q, &store).await;
    drop(children);
    keep_logs.finished();
}

/// 5. A majority lost: the two nodes intake A does not use get `stop_app`. The work queue
///    cannot commit a publish without a majority of its members, so the intake answers 503
///    with `Retry-After`, never 202; once both are back it accepts again, and the job runs.
async fn majority_lost(http: &reqwest::Client, intake: &str, queue: &str, store: &TestStore) {
    let keep = node_of(http, intake).await;
    let stopped: Vec<u16> = (1..=3).filter(|n| *n != keep).collect();
    for n in stopped.clone() {
        tokio::task::spawn_blocking(move || Cluster::rabbitmqctl(n, &["stop_app"]))
            .await
            .expect("stop_app");
    }
    eprintln!("majority lost: nodes {stopped:?} stopped, node {keep} alone");
    let post = || async {
        http.post(format!("{intake}/v1/queues/{queue}/jobs"))
            .json(&json!({"payload": {"majority": "lost"}}))
            .timeout(Duration::from_secs(30))
            .send()
            .await
    };
    let asked = Instant::now();
    let answers = futures::future::join_all((0..5).map(|_| post())).await;
    let answered_in = asked.elapsed();
    for answer in answers {
        let resp = answer.expect("an answer within 30 s");
        assert!(
            resp.status() != 503 || resp.headers().contains_key("retry-after"),
            "a 503 carries Retry-After"
        );
        assert_eq!(
            resp.status(),
            503,
            "without a majority nothing is accepted: {:?}",
            resp.text().await
        );
    }
    eprintln!("majority lost: 5 POSTs answered 503 with Retry-After within {answered_in:?}");
    let restarts = stopped.iter().map(|n| {
        let n = *n;
        tokio::task::spawn_blocking(move || {
            Cluster::rabbitmqctl(n, &["start_app"]);
            Cluster::rabbitmqctl(n, &["await_startup"]);
        })
    });
    for r in futures::future::join_all(restarts).await {
        r.expect("start_app");
    }
    let back = Instant::now();
    let id = loop {
        if let Ok(resp) = post().await
            && resp.status() == 202
        {
            let v: Value = resp.json().await.expect("json");
            break v["id"].as_str().expect("id").to_owned();
        }
        assert!(
            back.elapsed() < Duration::from_secs(30),
            "the intake did not accept within 30 s of the majority's return"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    eprintln!(
        "majority back: intake A accepted again after {:?}",
        back.elapsed()
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while store.statuses().await.get(&id) != Some(&JobStatus::Succeeded) {
        assert!(
            Instant::now() < deadline,
            "the job accepted after the majority's return did not succeed within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
