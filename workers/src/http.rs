//! The `http` handler: POST the payload to a URL.

use std::error::Error as _;
use std::fmt;
use std::time::{Duration, SystemTime};

use reqwest::header::{self, HeaderMap, HeaderName, HeaderValue};
use reqwest::{Client, Response, StatusCode, Url};

use crate::handler::{Handler, HandlerFuture};
use crate::job::Job;
use crate::outcome::{MAX_RESULT_BYTES, Outcome};
use crate::signing::WebhookSigner;
use crate::truncate::{head_text, truncate_string};

/// How much of an error response's body goes into the error text.
const ERROR_EXCERPT_BYTES: usize = 2 * 1024;

/// `X-Warren-Job-Id`: the job id.
const JOB_ID: HeaderName = HeaderName::from_static("x-warren-job-id");
/// `X-Warren-Attempt`: the 1-based attempt number.
const ATTEMPT: HeaderName = HeaderName::from_static("x-warren-attempt");
/// `Idempotency-Key`: the job's idempotency key, else its id.
const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
/// `X-Correlation-ID`: the caller's correlation id, when set.
const CORRELATION_ID: HeaderName = HeaderName::from_static("x-correlation-id");

/// Runs a job by POSTing its payload to a URL (DESIGN.md §6).
///
/// The request carries the payload bytes unchanged with
/// `Content-Type: application/json` and these headers:
///
/// - `X-Warren-Job-Id`: [`Job::id`];
/// - `X-Warren-Attempt`: [`Job::attempt`] (decimal, 1-based);
/// - `Idempotency-Key`: [`Job::idempotency_key`] if set, else [`Job::id`],
///   so a receiver can always de-duplicate redeliveries and retries;
/// - `X-Correlation-ID`: [`Job::correlation_id`], when set.
///
/// With a signer ([`HttpHandler::signed`]) every request also carries the Standard Webhooks
/// headers (<https://github.com/standard-webhooks/standard-webhooks/blob/main/spec/standard-webhooks.md>,
/// "Webhook headers"; see [`WebhookSigner`]):
///
/// - `webhook-id`: [`Job::id`], the same on every attempt, so a receiver can deduplicate;
/// - `webhook-timestamp`: when this attempt was sent, in unix seconds;
/// - `webhook-signature`: `v1,<base64 HMAC-SHA256 of "{webhook-id}.{webhook-timestamp}.{body}">`
///   for each secret, separated by spaces.
///
/// The response maps to an [`Outcome`]:
///
/// - 2xx: [`Outcome::Success`] with the body as result (lossy UTF-8,
///   truncated to [`MAX_RESULT_BYTES`]; `None` if empty).
/// - 429, and 503 with a `Retry-After` header: [`Outcome::Throttled`] with
///   that `retry_after`, either delta-seconds or an HTTP-date (RFC 9110
///   §10.2.3; a date in the past gives zero), so warren holds the whole
///   queue for that long; an error like `HTTP 429 Too Many Requests: <body
///   excerpt>`.
/// - 408, 5xx, and a 429 without a usable `Retry-After`: [`Outcome::Retry`]
///   with an error like `HTTP 500 Internal Server Error: <body excerpt>` and
///   `retry_after` from a `Retry-After` header when there is one.
/// - Any other status (3xx the client did not follow, other 4xx):
///   [`Outcome::Permanent`].
/// - Transport errors (connection refused, DNS, TLS, the client's timeout):
///   [`Outcome::Retry`] with the error text. Error texts never contain the
///   URL's userinfo or query string.
///
/// Timeouts and redirects are the client's settings; warren also wraps every
/// call in the queue's timeout and drops the request when it fires.
#[derive(Clone)]
pub struct HttpHandler {
    url: Url,
    client: Client,
    /// Signs every request when set.
    signer: Option<WebhookSigner>,
    /// The URL as shown in errors and `Debug`: no userinfo, query or fragment.
    shown_url: String,
}

impl HttpHandler {
    /// A handler that POSTs to `url` using `client`.
    ///
    /// `client` is a shared [`reqwest::Client`] (it pools connections); the
    /// caller sets its timeouts and redirect policy.
    pub fn new(url: Url, client: Client) -> Self {
        let shown_url = shown_url(&url);
        HttpHandler {
            url,
            client,
            signer: None,
            shown_url,
        }
    }

    /// Signs every request with `signer`'s secrets: the handler then sends the Standard
    /// Webhooks headers `webhook-id`, `webhook-timestamp` and `webhook-signature`.
    pub fn signed(mut self, signer: WebhookSigner) -> Self {
        self.signer = Some(signer);
        self
    }

    async fn run(&self, job: &Job) -> Outcome {
        let mut headers = match request_headers(job) {
            Ok(headers) => headers,
            Err(error) => return Outcome::permanent(error),
        };
        if let Some(signer) = &self.signer {
            let now = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs();
            if let Err(error) = signer.add_headers(&mut headers, &job.id, now, &job.payload) {
                return Outcome::permanent(error);
            }
        }
        let sent = self
            .client
            .post(self.url.clone())
            .headers(headers)
            .body(job.payload.clone())
            .send()
            .await;
        let response = match sent {
            Ok(response) => response,
            Err(err) => {
                return Outcome::retry(format!("POST {}: {}", self.shown_url, self.describe(err)));
            }
        };
        self.outcome_of(response).await
    }

    async fn outcome_of(&self, mut response: Response) -> Outcome {
        let status = response.status();
        if status.is_success() {
            let body = read_head(&mut response, MAX_RESULT_BYTES).await;
            if let Some(err) = body.error {
                // The receiver already answered 2xx: the job is done even if
                // the rest of its answer got lost.
                tracing::warn!(
                    url = %self.shown_url,
                    error = %self.describe(err),
                    "reading the response body of a successful job failed"
                );
            }
            if body.bytes.is_empty() && !body.overflowed {
                return Outcome::Success { result: None };
            }
            return Outcome::Success {
                result: Some(head_text(&body.bytes, body.overflowed, MAX_RESULT_BYTES)),
            };
        }

        let retryable = status == StatusCode::REQUEST_TIMEOUT
            || status == StatusCode::TOO_MANY_REQUESTS
            || status.is_server_error();
        let retry_after = if retryable {
            response
                .headers()
                .get(header::RETRY_AFTER)
                .and_then(|value| value.to_str().ok())
                .and_then(|value| parse_retry_after(value, SystemTime::now()))
        } else {
            None
        };

        let mut error = format!("HTTP {}", status.as_str());
        if let Some(reason) = status.canonical_reason() {
            error.push(' ');
            error.push_str(reason);
        }
        let body = read_head(&mut response, ERROR_EXCERPT_BYTES).await;
        let excerpt = head_text(&body.bytes, body.overflowed, ERROR_EXCERPT_BYTES);
        let excerpt = excerpt.trim();
        if !excerpt.is_empty() {
            error.push_str(": ");
            error.push_str(excerpt);
        }

        let throttled =
            status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::SERVICE_UNAVAILABLE;
        match retry_after {
            Some(retry_after) if throttled => {
                return Outcome::Throttled {
                    error: truncate_string(error, MAX_RESULT_BYTES),
                    retry_after,
                };
            }
            _ => {}
        }
        if retryable {
            Outcome::Retry {
                error: truncate_string(error, MAX_RESULT_BYTES),
                retry_after,
            }
        } else {
            Outcome::permanent(error)
        }
    }

    /// The text of a reqwest error and its causes, without the URL (it may
    /// carry credentials).
    fn describe(&self, err: reqwest::Error) -> String {
        let err = err.without_url();
        let mut text = err.to_string();
        let mut source = err.source();
        while let Some(cause) = source {
            let cause_text = cause.to_string();
            if !text.contains(&cause_text) {
                text.push_str(": ");
                text.push_str(&cause_text);
            }
            source = cause.source();
        }
        // Belt and braces: a cause might still quote the URL.
        if let Some(password) = self.url.password().filter(|p| !p.is_empty()) {
            text = text.replace(password, "***");
        }
        if let Some(query) = self.url.query().filter(|q| !q.is_empty()) {
            text = text.replace(query, "***");
        }
        text
    }
}

impl fmt::Debug for HttpHandler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpHandler")
            .field("url", &self.shown_url)
            .field("signer", &self.signer)
            .finish_non_exhaustive()
    }
}

impl Handler for HttpHandler {
    fn handle<'a>(&'a self, job: &'a Job) -> HandlerFuture<'a> {
        Box::pin(self.run(job))
    }
}

/// The request headers for `job`, or why they cannot be sent.
fn request_headers(job: &Job) -> Result<HeaderMap, String> {
    let mut headers = HeaderMap::with_capacity(5);
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    let id = HeaderValue::from_str(&job.id)
        .map_err(|_| "the job id is not a valid HTTP header value".to_owned())?;
    headers.insert(JOB_ID, id.clone());
    headers.insert(ATTEMPT, HeaderValue::from(job.attempt));
    let key = match &job.idempotency_key {
        Some(key) => HeaderValue::from_str(key).map_err(|_| {
            "the idempotency key is not a valid HTTP header value (control characters)".to_owned()
        })?,
        None => id,
    };
    headers.insert(IDEMPOTENCY_KEY, key);
    if let Some(correlation_id) = &job.correlation_id {
        match HeaderValue::from_str(correlation_id) {
            Ok(value) => {
                headers.insert(CORRELATION_ID, value);
            }
            Err(_) => tracing::debug!(
                job_id = %job.id,
                "correlation id is not a valid HTTP header value; not sent"
            ),
        }
    }
    Ok(headers)
}

/// `url` without userinfo, query or fragment, for error texts and logs.
fn shown_url(url: &Url) -> String {
    let mut shown = url.clone();
    // Both fail only for URLs that cannot have userinfo (e.g. `data:`),
    // which then have none to hide.
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    shown.set_query(None);
    shown.set_fragment(None);
    shown.to_string()
}

/// Parses a `Retry-After` value (RFC 9110 §10.2.3): either delta-seconds
/// (a non-negative decimal integer) or an HTTP-date, taken relative to `now`
/// (a date in the past gives zero). `None` when it is neither.
fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // Too many digits for u64: a very long wait, not a parse error.
        let secs = value.parse::<u64>().unwrap_or(u64::MAX);
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(when.duration_since(now).unwrap_or(Duration::ZERO))
}

/// The first bytes of a response body.
struct BodyHead {
    /// At most the requested number of bytes.
    bytes: Vec<u8>,
    /// Whether the body went on past `bytes` (the rest was not read).
    overflowed: bool,
    /// The error that ended reading early, if any.
    error: Option<reqwest::Error>,
}

/// Reads at most `cap` bytes of the body of `response`; stops reading (and
/// so drops the rest) once more arrives.
async fn read_head(response: &mut Response, cap: usize) -> BodyHead {
    let mut head = BodyHead {
        bytes: Vec::new(),
        overflowed: false,
        error: None,
    };
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                let room = cap - head.bytes.len();
                if chunk.len() > room {
                    head.bytes.extend_from_slice(&chunk[..room]);
                    head.overflowed = true;
                    return head;
                }
                head.bytes.extend_from_slice(&chunk);
            }
            Ok(None) => return head,
            Err(err) => {
                head.error = Some(err);
                return head;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_delta_seconds() {
        let now = SystemTime::now();
        assert_eq!(parse_retry_after("7", now), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("99999999999999999999999", now),
            Some(Duration::from_secs(u64::MAX))
        );
        assert_eq!(parse_retry_after("-1", now), None);
        assert_eq!(parse_retry_after("1.5", now), None);
        assert_eq!(parse_retry_after("", now), None);
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[test]
    fn retry_after_http_date() {
        // IMF-fixdate has whole seconds, so take `now` on a whole second.
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let later = httpdate::fmt_http_date(now + Duration::from_secs(120));
        assert_eq!(
            parse_retry_after(&later, now),
            Some(Duration::from_secs(120))
        );
        let earlier = httpdate::fmt_http_date(now - Duration::from_secs(120));
        assert_eq!(parse_retry_after(&earlier, now), Some(Duration::ZERO));
        // The obsolete RFC 850 and asctime forms are accepted too.
        assert_eq!(
            parse_retry_after("Tuesday, 14-Nov-23 22:15:20 GMT", now),
            Some(Duration::from_secs(120))
        );
    }

    #[test]
    fn shown_url_hides_credentials_and_query() {
        let url = Url::parse("https://user:s3cret@example.com:8443/hook?token=abc#frag")
            .expect("valid test URL");
        assert_eq!(shown_url(&url), "https://example.com:8443/hook");
        let handler = HttpHandler::new(url, Client::new());
        let debug = format!("{handler:?}");
        assert!(!debug.contains("s3cret"), "{debug}");
        assert!(!debug.contains("abc"), "{debug}");
    }

    #[test]
    fn debug_of_a_signed_handler_shows_no_secret() {
        let url = Url::parse("https://example.com/hook").expect("valid test URL");
        let signer = WebhookSigner::from_secrets("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD")
            .expect("valid secret");
        let handler = HttpHandler::new(url, Client::new()).signed(signer);
        let debug = format!("{handler:?}");
        assert!(debug.contains("secrets: 1"), "{debug}");
        assert!(!debug.contains("C2FV"), "{debug}");
    }

    #[test]
    fn idempotency_key_defaults_to_job_id() {
        let mut job = Job {
            id: "0190b7a4-0000-7000-8000-000000000001".into(),
            queue: "q".into(),
            attempt: 3,
            max_attempts: 5,
            correlation_id: None,
            idempotency_key: None,
            payload: bytes::Bytes::new(),
        };
        let headers = request_headers(&job).expect("valid headers");
        assert_eq!(headers["idempotency-key"], job.id.as_str());
        assert_eq!(headers["x-warren-attempt"], "3");
        assert!(headers.get("x-correlation-id").is_none());

        job.idempotency_key = Some("bad\nkey".into());
        assert!(request_headers(&job).is_err());
    }
}
