//! The load generator: a lean HTTP/1.1 keep-alive client (one connection per client task),
//! the closed-loop and open-loop drivers on it, and the request bodies they send.
//!
//! The load generator shares the 2 cores with warren and the broker, so every µs it spends is
//! taken from them. Each client task owns its socket and writes the request and reads the
//! answer in place (`httparse` reads the head): no connection task to hand each request to and
//! each answer back from, as a `hyper` client connection has (the client's CPU per single POST
//! went from 23-25 to 16-18 µs, 2026-11-21; BENCHMARKS.md in git history).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use hdrhistogram::Histogram;
use serde::Deserialize;

use crate::payload;

/// One keep-alive connection to warren.
pub(crate) struct Conn {
    stream: tokio::net::TcpStream,
    /// Bytes read and not yet consumed.
    buf: bytes::BytesMut,
    /// The request being written (reused).
    out: Vec<u8>,
}

pub(crate) async fn connect(addr: SocketAddr) -> Result<Conn, String> {
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

pub(crate) async fn get(conn: &mut Conn, path: &str) -> Result<(u16, Bytes), String> {
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
    job: Option<Created>,
}

/// Requests at the end of a closed-loop run whose answers give their job ids to
/// [`LoadResult::tail_ids`].
const TAIL: usize = 8;

/// The job ids of an answer (a single POST's, or the last two of a batch's).
fn answer_ids(body: &[u8]) -> Vec<uuid::Uuid> {
    let ids: Vec<String> = if let Ok(c) = serde_json::from_slice::<Created>(body) {
        vec![c.id]
    } else if let Ok(b) = serde_json::from_slice::<BatchAnswer>(body) {
        let all: Vec<String> = b
            .results
            .into_iter()
            .filter_map(|r| r.job)
            .map(|j| j.id)
            .collect();
        all[all.len().saturating_sub(2)..].to_vec()
    } else {
        Vec::new()
    };
    ids.iter().filter_map(|s| s.parse().ok()).collect()
}

/// What a closed-loop load run did.
#[derive(Debug, Default)]
pub(crate) struct LoadResult {
    /// Jobs answered 202.
    pub(crate) accepted: usize,
    /// Jobs refused or requests failed.
    pub(crate) failed: usize,
    /// The first failure, for the report.
    pub(crate) first_error: Option<String>,
    /// From the first request to the last answer.
    pub(crate) elapsed: Duration,
    /// Wall clock (ms since the epoch) of the first request.
    pub(crate) start_ms: f64,
    /// Job ids answered to the last few requests: a sample of the last jobs accepted.
    pub(crate) tail_ids: Vec<uuid::Uuid>,
}

impl LoadResult {
    pub(crate) fn per_s(&self) -> f64 {
        self.accepted as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// `clients` keep-alive connections POST the prepared `bodies` to `path` as fast as answers
/// come (closed loop). `jobs_in` says how many jobs an answer accepted.
pub(crate) async fn closed_loop(
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
            let mut tail = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(body) = bodies.get(i) else { break };
                match post(&mut conn, &path, body.clone()).await {
                    Ok((status, answer)) => {
                        if i + TAIL >= bodies.len() {
                            tail.extend(answer_ids(&answer));
                        }
                        let n = jobs_in(status, &answer, jobs_per_body);
                        ok += n;
                        failed += jobs_per_body - n;
                        if n < jobs_per_body && first_error.is_none() {
                            first_error = Some(refusal(status, &answer));
                        }
                    }
                    Err(e) => {
                        failed += jobs_per_body;
                        first_error.get_or_insert(e);
                        conn = connect(addr).await.expect("reconnect to warren");
                    }
                }
            }
            (ok, failed, first_error, tail)
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
        let (ok, failed, err, tail) = t.await.expect("client task");
        out.tail_ids.extend(tail);
        out.accepted += ok;
        out.failed += failed;
        if out.first_error.is_none() {
            out.first_error = err;
        }
    }
    out.elapsed = t0.elapsed();
    out
}

/// What a refused answer said: a batch's first refused item, or the start of the body.
fn refusal(status: u16, answer: &[u8]) -> String {
    let item = serde_json::from_slice::<serde_json::Value>(answer)
        .ok()
        .and_then(|v| {
            v.get("results")?
                .as_array()?
                .iter()
                .find(|r| r.get("status").and_then(serde_json::Value::as_u64) != Some(202))
                .cloned()
        });
    match item {
        Some(item) => format!("HTTP {status}, a batch item refused: {item}"),
        None => format!(
            "HTTP {status}: {}",
            String::from_utf8_lossy(&answer[..answer.len().min(300)])
        ),
    }
}

pub(crate) fn single_accepted(status: u16, _: &[u8], _: usize) -> usize {
    usize::from(status == 202)
}

pub(crate) fn batch_accepted(status: u16, body: &[u8], _: usize) -> usize {
    if status != 200 {
        return 0;
    }
    serde_json::from_slice::<BatchAnswer>(body)
        .map_or(0, |a| a.results.iter().filter(|r| r.status == 202).count())
}

pub(crate) fn single_bodies(n: usize) -> Vec<Bytes> {
    (0..n)
        .map(|i| Bytes::from(format!(r#"{{"payload":{}}}"#, payload(i))))
        .collect()
}

pub(crate) fn batch_bodies(n: usize, size: usize) -> Vec<Bytes> {
    (0..n.div_ceil(size))
        .map(|b| {
            let items: Vec<String> = (b * size..((b + 1) * size).min(n))
                .map(|i| format!(r#"{{"payload":{}}}"#, payload(i)))
                .collect();
            Bytes::from(format!(r#"{{"jobs":[{}]}}"#, items.join(",")))
        })
        .collect()
}

/// One answer of an [`open_loop`] run.
pub(crate) struct Answer {
    /// The request's place in the schedule (due at `i / rate` s).
    pub(crate) i: usize,
    /// µs from the dispatcher handing the request over to its answer.
    pub(crate) took_us: u64,
    /// The job id of a 202; `None` for any other answer and for a failed request.
    pub(crate) id: Option<String>,
    /// When the answer arrived (Unix ms).
    pub(crate) at_ms: f64,
}

/// Open loop: `n` POSTs to `path` (request `i` carries `body(i)`), request `i` handed to
/// `conns` keep-alive connections at `i / rate` s, scheduled by the clock and not by answers;
/// `tick(i)` runs just before each hand-over. An answer's time counts from the hand-over, so a
/// request that waits for a free connection still waits on the clock and a stall is not hidden
/// (no coordinated omission). A connection whose request failed reconnects. Returns the
/// answers and the dispatcher's own lateness (µs after the scheduled time; its timer ticks
/// every 1 ms), which is the load generator's and not counted in the answers.
pub(crate) async fn open_loop(
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

/// The 202 answers of an [`open_loop`] run: their POST→202 times (µs, from the hand-over) in
/// a histogram, and each accepted job as (its place in the schedule, its id, when its answer
/// arrived in Unix ms). The other answers are the run's refusals and failures.
pub(crate) fn accepted(answers: &[Answer]) -> (Histogram<u64>, Vec<(usize, uuid::Uuid, f64)>) {
    let mut post = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
    let mut jobs = Vec::with_capacity(answers.len());
    for a in answers {
        if let Some(id) = a.id.as_ref().and_then(|id| id.parse().ok()) {
            post.saturating_record(a.took_us.max(1));
            jobs.push((a.i, id, a.at_ms));
        }
    }
    (post, jobs)
}

fn now_unix_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}
