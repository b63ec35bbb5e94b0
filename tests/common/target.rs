//! A local HTTP target for `http` handlers: it records when each request arrived and ended
//! (on the test's own clock) with its headers and body, and answers as the test's `reply` says.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use serde_json::Value;

/// One request the target received.
#[derive(Debug, Clone)]
pub struct Call {
    /// When it arrived.
    pub start: Instant,
    /// When the answer was sent; `None` while the request is held (or when its client went
    /// away first).
    pub end: Option<Instant>,
    /// Its JSON body (the job's payload).
    pub body: Value,
    /// Its `X-Warren-Job-Id` header.
    pub job_id: String,
    /// All its headers.
    pub headers: HeaderMap,
    /// Its body, byte for byte.
    pub raw: Bytes,
}

/// How the target answers one request.
#[derive(Debug, Clone)]
pub struct Reply {
    /// The status to answer.
    pub status: StatusCode,
    /// A `Retry-After` header (seconds), when set.
    pub retry_after: Option<u64>,
    /// How long to hold the request before answering.
    pub hold: Duration,
}

impl Reply {
    /// 200 after `hold`.
    pub fn ok(hold: Duration) -> Self {
        Self {
            status: StatusCode::OK,
            retry_after: None,
            hold,
        }
    }
}

type Decide = dyn Fn(&Value, usize) -> Reply + Send + Sync;

/// The running target; stops with the test's runtime.
pub struct Target {
    /// Its address on loopback.
    pub addr: SocketAddr,
    calls: Arc<Mutex<Vec<Call>>>,
}

impl Target {
    /// Starts a target answering each request as `decide(body, n)` says (`n`: how many
    /// requests arrived before this one).
    pub async fn start(decide: impl Fn(&Value, usize) -> Reply + Send + Sync + 'static) -> Self {
        let calls: Arc<Mutex<Vec<Call>>> = Arc::default();
        let arrived = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let decide: Arc<Decide> = Arc::new(decide);
        let app = {
            let calls = calls.clone();
            axum::Router::new().route(
                "/hook",
                axum::routing::post(move |headers: HeaderMap, body: Bytes| {
                    let (calls, decide, arrived) = (calls.clone(), decide.clone(), arrived.clone());
                    async move {
                        let start = Instant::now();
                        let raw = body;
                        let body: Value = serde_json::from_slice(&raw).unwrap_or(Value::Null);
                        let n = arrived.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        let reply = decide(&body, n);
                        let job_id = headers
                            .get("x-warren-job-id")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default()
                            .to_owned();
                        let index = {
                            let mut calls = calls.lock().expect("calls");
                            calls.push(Call {
                                start,
                                end: None,
                                body,
                                job_id,
                                headers,
                                raw,
                            });
                            calls.len() - 1
                        };
                        tokio::time::sleep(reply.hold).await;
                        calls.lock().expect("calls")[index].end = Some(Instant::now());
                        let mut resp = reply.status.into_response();
                        if let Some(s) = reply.retry_after {
                            resp.headers_mut().insert(
                                "retry-after",
                                s.to_string().parse().expect("header value"),
                            );
                        }
                        resp
                    }
                }),
            )
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the target");
        let addr = listener.local_addr().expect("address");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, calls }
    }

    /// The URL handlers post to.
    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    /// Every request received so far, in the order they arrived.
    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().expect("calls").clone()
    }

    /// Waits until `n` requests were answered (failing after `within`); returns every
    /// request received, in the order they arrived.
    pub async fn wait_calls(&self, n: usize, within: Duration) -> Vec<Call> {
        self.wait_for(n, within, |c| c.end.is_some()).await
    }

    /// Waits until `n` requests arrived (failing after `within`); returns them all, in the
    /// order they arrived.
    pub async fn wait_started(&self, n: usize, within: Duration) -> Vec<Call> {
        self.wait_for(n, within, |_| true).await
    }

    async fn wait_for(&self, n: usize, within: Duration, count: fn(&Call) -> bool) -> Vec<Call> {
        let deadline = Instant::now() + within;
        loop {
            let calls = self.calls();
            if calls.iter().filter(|c| count(c)).count() >= n {
                return calls;
            }
            assert!(
                Instant::now() < deadline,
                "the target got {} of {n} requests within {within:?}",
                calls.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
