//! Behaviour of the `http` handler against a local axum server.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes as AxumBytes;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::post;
use bytes::Bytes;
use warren_workers::{Handler, HttpHandler, Job, MAX_RESULT_BYTES, Outcome};

const JOB_ID: &str = "0190b7a4-1c2d-7e3f-8a4b-5c6d7e8f9a0b";

/// What the server saw of the last request.
#[derive(Default)]
struct Seen {
    headers: Option<HeaderMap>,
    body: Option<AxumBytes>,
}

type Shared = Arc<Mutex<Seen>>;

async fn record(seen: &Shared, headers: HeaderMap, body: AxumBytes) {
    let mut seen = seen.lock().expect("lock not poisoned");
    seen.headers = Some(headers);
    seen.body = Some(body);
}

/// Starts a server on 127.0.0.1:0 and returns its address and what it saw.
async fn server() -> (SocketAddr, Shared) {
    let seen = Shared::default();
    let s = Arc::clone(&seen);
    let ok = move |headers: HeaderMap, body: AxumBytes| {
        let s = Arc::clone(&s);
        async move {
            record(&s, headers, body).await;
            (StatusCode::OK, "processed: ok")
        }
    };
    let app = Router::new()
        .route("/ok", post(ok))
        .route(
            "/empty",
            post(|| async { StatusCode::NO_CONTENT.into_response() }),
        )
        .route(
            "/big",
            post(|| async { "y".repeat(MAX_RESULT_BYTES * 3).into_response() }),
        )
        .route(
            "/unavailable",
            post(|| async {
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    [(header::RETRY_AFTER, "7")],
                    "database is down",
                )
            }),
        )
        .route(
            "/throttled",
            post(|| async { (StatusCode::TOO_MANY_REQUESTS, "slow down") }),
        )
        .route(
            "/quota",
            post(|| async {
                (
                    StatusCode::TOO_MANY_REQUESTS,
                    [(header::RETRY_AFTER, "2")],
                    "quota exceeded",
                )
            }),
        )
        .route(
            "/maintenance",
            post(|| async {
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    [(header::RETRY_AFTER, "30")],
                    "back soon",
                )
            }),
        )
        .route(
            "/missing",
            post(|| async { (StatusCode::NOT_FOUND, "no such hook") }),
        )
        .route(
            "/moved",
            post(|| async { (StatusCode::FOUND, [(header::LOCATION, "/ok")], "") }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a local port");
    let addr = listener.local_addr().expect("local address");
    tokio::spawn(async move {
        if let Err(err) = axum::serve(listener, app).await {
            eprintln!("test server failed: {err}");
        }
    });
    (addr, seen)
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("reqwest client")
}

fn handler(addr: SocketAddr, path: &str) -> HttpHandler {
    let url = reqwest::Url::parse(&format!("http://{addr}{path}")).expect("test URL");
    HttpHandler::new(url, client())
}

fn job() -> Job {
    Job {
        id: JOB_ID.to_owned(),
        queue: "webhooks".to_owned(),
        attempt: 3,
        max_attempts: 5,
        correlation_id: Some("corr-42".to_owned()),
        idempotency_key: Some("order-1001".to_owned()),
        payload: Bytes::from_static(br#"{"order":1001}"#),
    }
}

#[tokio::test]
async fn ok_is_success_with_body_and_all_headers_sent() {
    let (addr, seen) = server().await;
    let outcome = handler(addr, "/ok").handle(&job()).await;
    assert_eq!(outcome, Outcome::success_with("processed: ok"));

    let seen = seen.lock().expect("lock not poisoned");
    let headers = seen.headers.as_ref().expect("the server saw a request");
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(headers["x-warren-job-id"], JOB_ID);
    assert_eq!(headers["x-warren-attempt"], "3");
    assert_eq!(headers["idempotency-key"], "order-1001");
    assert_eq!(headers["x-correlation-id"], "corr-42");
    assert_eq!(
        seen.body.as_deref(),
        Some(&br#"{"order":1001}"#[..]),
        "payload sent unchanged"
    );
}

#[tokio::test]
async fn idempotency_key_defaults_to_the_job_id() {
    let (addr, seen) = server().await;
    let mut job = job();
    job.idempotency_key = None;
    job.correlation_id = None;
    let outcome = handler(addr, "/ok").handle(&job).await;
    assert!(matches!(outcome, Outcome::Success { .. }), "{outcome:?}");

    let seen = seen.lock().expect("lock not poisoned");
    let headers = seen.headers.as_ref().expect("the server saw a request");
    assert_eq!(headers["idempotency-key"], JOB_ID);
    assert!(headers.get("x-correlation-id").is_none());
}

#[tokio::test]
async fn empty_body_is_no_result_and_big_body_is_truncated() {
    let (addr, _) = server().await;
    let outcome = handler(addr, "/empty").handle(&job()).await;
    assert_eq!(outcome, Outcome::Success { result: None });

    let outcome = handler(addr, "/big").handle(&job()).await;
    match outcome {
        Outcome::Success {
            result: Some(result),
        } => {
            assert!(result.len() <= MAX_RESULT_BYTES);
            assert!(result.ends_with("…[truncated]"));
        }
        other => panic!("expected success, got {other:?}"),
    }
}

#[tokio::test]
async fn server_error_is_retry_with_retry_after() {
    let (addr, _) = server().await;
    let outcome = handler(addr, "/unavailable").handle(&job()).await;
    assert_eq!(
        outcome,
        Outcome::Retry {
            error: "HTTP 500 Internal Server Error: database is down".to_owned(),
            retry_after: Some(Duration::from_secs(7)),
        }
    );
}

#[tokio::test]
async fn too_many_requests_or_unavailable_with_retry_after_throttles_the_queue() {
    let (addr, _) = server().await;
    assert_eq!(
        handler(addr, "/quota").handle(&job()).await,
        Outcome::Throttled {
            error: "HTTP 429 Too Many Requests: quota exceeded".to_owned(),
            retry_after: Duration::from_secs(2),
        }
    );
    assert_eq!(
        handler(addr, "/maintenance").handle(&job()).await,
        Outcome::Throttled {
            error: "HTTP 503 Service Unavailable: back soon".to_owned(),
            retry_after: Duration::from_secs(30),
        }
    );
}

#[tokio::test]
async fn too_many_requests_without_retry_after_is_retry() {
    let (addr, _) = server().await;
    let outcome = handler(addr, "/throttled").handle(&job()).await;
    assert_eq!(
        outcome,
        Outcome::retry("HTTP 429 Too Many Requests: slow down")
    );
}

#[tokio::test]
async fn not_found_is_permanent() {
    let (addr, _) = server().await;
    let outcome = handler(addr, "/missing").handle(&job()).await;
    assert_eq!(
        outcome,
        Outcome::permanent("HTTP 404 Not Found: no such hook")
    );
}

#[tokio::test]
async fn unfollowed_redirect_is_permanent() {
    let (addr, _) = server().await;
    let outcome = handler(addr, "/moved").handle(&job()).await;
    assert_eq!(outcome, Outcome::permanent("HTTP 302 Found"));
}

#[tokio::test]
async fn connection_refused_is_retry_without_credentials() {
    // Take a free port, then close it.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a local port");
    let addr = listener.local_addr().expect("local address");
    drop(listener);

    let url = reqwest::Url::parse(&format!("http://user:s3cret@{addr}/hook?token=t0ps3cr3t"))
        .expect("test URL");
    let outcome = HttpHandler::new(url, client()).handle(&job()).await;
    match outcome {
        Outcome::Retry { error, retry_after } => {
            assert!(
                error.starts_with(&format!("POST http://{addr}/hook: ")),
                "{error}"
            );
            assert!(!error.contains("s3cret"), "{error}");
            assert!(!error.contains("t0ps3cr3t"), "{error}");
            assert_eq!(retry_after, None);
        }
        other => panic!("expected retry, got {other:?}"),
    }
}
