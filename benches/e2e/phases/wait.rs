//! The cost of waiting requests (`BENCH_PHASES=wait`, issue 20 item 2): one `warren run` with
//! two queues, `e2e` (noop handler) and `held` (paused, so its jobs stay `queued`), and
//! `BENCH_WAITERS` (default 1,000) jobs posted to `held`. End-to-end rounds on `e2e`
//! (`BENCH_E2E_N / BENCH_REPEAT` POSTs from C clients while the workers run them, first POST
//! to last `succeeded`) alternate between no waiters and `BENCH_WAITERS` requests
//! `GET /v1/jobs/{id}?wait=60s` on the held jobs, each on a connection of its own and asked
//! again when it answers; pairs in alternating order (off on, on off, …) so the two rounds of
//! a pair see the same machine; `BENCH_REPEAT` pairs. Prints each pair's on/off and the
//! median, and warren's resident memory with the waiters in place minus without (VmRSS, once
//! the broker shows every waiter's binding). Targets (issue 20): on/off ≥ 0.95, ≤ 20 MB.

use std::net::SocketAddr;
use std::str::FromStr as _;
use std::time::{Duration, Instant};

use lapin::Connection;
use serde_json::json;
use uuid::Uuid;

use crate::Params;
use crate::broker::amqp_url;
use crate::child::{Cleanup, Warren};
use crate::load::{closed_loop, connect, get, single_accepted, single_bodies};
use crate::procfs::{status_kb, wait_quiet};
use crate::report::{Figures, median, report_load, round};
use crate::store::{Space, collect, id_floor, wait_drained};

/// Held jobs with a waiting request each, from `BENCH_WAITERS`.
fn waiters() -> usize {
    crate::env_usize("BENCH_WAITERS", 1_000).max(1)
}

/// How many bindings the broker's `warren.events` holds (one per job waited for), from the
/// management API (`BENCH_MGMT_URL`, default `http://127.0.0.1:15672`, with the AMQP URL's
/// credentials).
async fn bindings() -> usize {
    let base =
        std::env::var("BENCH_MGMT_URL").unwrap_or_else(|_| "http://127.0.0.1:15672".to_owned());
    let Ok(uri) = lapin::uri::AMQPUri::from_str(&amqp_url()) else {
        return 0;
    };
    let url = format!(
        "{base}/api/exchanges/{}/warren.events/bindings/source",
        uri.vhost.replace('/', "%2F")
    );
    let resp = reqwest::Client::new()
        .get(url)
        .basic_auth(
            &uri.authority.userinfo.username,
            Some(&uri.authority.userinfo.password),
        )
        .send()
        .await;
    match resp {
        Ok(r) => r
            .json::<serde_json::Value>()
            .await
            .ok()
            .and_then(|v| v.as_array().map(Vec::len))
            .unwrap_or(0),
        Err(_) => 0,
    }
}

/// Holds a `GET /v1/jobs/{id}?wait=60s` open on each of `ids`, each on a connection of its
/// own, asking again when one answers, until aborted. Returns once the broker shows a
/// binding per job (every waiter is in place), or after 60 s.
async fn hold_waiters(addr: SocketAddr, ids: &[Uuid]) -> Vec<tokio::task::JoinHandle<()>> {
    let before = bindings().await;
    let mut tasks = Vec::with_capacity(ids.len());
    for id in ids {
        let path = format!("/v1/jobs/{id}?wait=60s");
        tasks.push(tokio::spawn(async move {
            let Ok(mut conn) = connect(addr).await else {
                return;
            };
            // A job that became final would answer at once: stop asking rather than spin.
            while let Ok((200, body)) = get(&mut conn, &path).await {
                if !body.windows(17).any(|w| w == b"\"status\":\"queued\"") {
                    return;
                }
            }
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while bindings().await < before + ids.len() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tasks
}

/// One end-to-end round of `n` POSTs on `queue`: jobs per second from the first POST to the
/// last `succeeded`.
async fn e2e_round(
    p: &Params,
    w: &Warren,
    space: &Space,
    conn: &Connection,
    queue: &str,
    n: usize,
    label: &str,
) -> f64 {
    let from = id_floor();
    let load = closed_loop(
        w.addr,
        &format!("/v1/queues/{queue}/jobs"),
        single_bodies(n),
        p.clients,
        single_accepted,
        1,
    )
    .await;
    report_load(label, &load);
    assert!(load.accepted > 0, "wait: no POST accepted in {label}");
    let deadline = Instant::now() + Duration::from_secs(300);
    let store = wait_drained(conn, space, queue, &load.tail_ids, deadline).await;
    let done = collect(&*store, queue, from, load.accepted, false, deadline).await;
    let secs = (done.last_finish as f64 - load.start_ms) / 1000.0;
    load.accepted as f64 / secs.max(1e-3)
}

pub(crate) async fn phase_wait(p: &Params, conn: &Connection, cleanup: &Cleanup, f: &mut Figures) {
    let n_waiters = waiters();
    let per_round = p.e2e_n.div_ceil(p.repeat).max(1);
    println!(
        "wait: {} pairs of end-to-end rounds of {per_round} POSTs from C={} clients, without and with {n_waiters} requests waiting (?wait=60s) on other jobs",
        p.repeat, p.clients
    );
    let (e2e, held) = (
        cleanup.work_queue("wait-e2e"),
        cleanup.work_queue("wait-held"),
    );
    let space = Space::new(&p.store, cleanup).await;
    let w = Warren::start(&space, "wait", "run", &[&e2e, &held], p.prefetch).await;
    let http = reqwest::Client::new();
    let base = format!("http://{}", w.addr);
    let resp = http
        .post(format!("{base}/v1/queues/{held}/pause"))
        .send()
        .await
        .expect("pause the held queue");
    assert_eq!(resp.status(), 200, "pause {held}");
    // The pause reaches the workers within 2 s: post the held jobs only once the queue has
    // no consumer, so that none of them runs.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let consumers = match conn.create_channel().await {
            Ok(ch) => {
                let q = ch
                    .queue_declare(
                        held.as_str().into(),
                        lapin::options::QueueDeclareOptions {
                            passive: true,
                            ..Default::default()
                        },
                        Default::default(),
                    )
                    .await
                    .map(|q| q.consumer_count())
                    .unwrap_or(1);
                let _ = ch.close(200, "checked".into()).await;
                q
            }
            Err(_) => 1,
        };
        if consumers == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{held} still consumed 30 s after its pause"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut ids = Vec::with_capacity(n_waiters);
    for i in 0..n_waiters {
        let resp = http
            .post(format!("{base}/v1/queues/{held}/jobs"))
            .json(&json!({ "payload": { "held": i } }))
            .send()
            .await
            .expect("post a held job");
        assert_eq!(resp.status(), 202, "post a held job");
        let body: serde_json::Value = resp.json().await.expect("json");
        ids.push(
            body["id"]
                .as_str()
                .and_then(|s| Uuid::parse_str(s).ok())
                .expect("the job's id"),
        );
    }
    let mut rates: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    let mut ratios = Vec::new();
    let mut rss_deltas = Vec::new();
    for pair in 0..p.repeat {
        let order = if pair % 2 == 0 { [0, 1] } else { [1, 0] };
        for side in order {
            wait_quiet().await;
            let held_open = if side == 1 {
                let before = status_kb(w.pid, "VmRSS").unwrap_or(0);
                let tasks = hold_waiters(w.addr, &ids).await;
                let after = status_kb(w.pid, "VmRSS").unwrap_or(0);
                let delta_mb = (after as f64 - before as f64) / 1024.0;
                println!(
                    "  {n_waiters} waiters in place: warren's RSS {:.1} → {:.1} MB ({delta_mb:+.1} MB)",
                    before as f64 / 1024.0,
                    after as f64 / 1024.0
                );
                rss_deltas.push(delta_mb);
                tasks
            } else {
                Vec::new()
            };
            let label = format!(
                "pair {} {}",
                pair + 1,
                if side == 1 { "with waiters" } else { "without" }
            );
            let rate = e2e_round(p, &w, &space, conn, &e2e, per_round, &label).await;
            println!("  {label}: {rate:.0} jobs/s");
            rates[side].push(rate);
            for t in &held_open {
                t.abort();
            }
            for t in held_open {
                let _ = t.await;
            }
        }
        let (off, on) = (rates[0][pair], rates[1][pair]);
        ratios.push(on / off);
        println!(
            "  pair {}: off {off:.0}, on {on:.0} jobs/s, on/off {:.3}",
            pair + 1,
            on / off
        );
    }
    let (lo, hi) = ratios
        .iter()
        .fold((f64::MAX, f64::MIN), |(lo, hi), r| (lo.min(*r), hi.max(*r)));
    let mid = median(ratios);
    let rss = median(rss_deltas);
    println!(
        "  wait: median on/off {mid:.3} (pairs {lo:.3} to {hi:.3}); RSS with {n_waiters} waiters minus without: median {rss:+.1} MB"
    );
    f.note("wait_on_over_off", json!(round(mid, 3)));
    f.note("wait_rss_mb", json!(round(rss, 1)));
    w.stop().await;
    drop(space);
}
