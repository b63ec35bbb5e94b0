//! Test harness: an in-process warren on the real broker, with queue names of its own.
//!
//! Every test gets unique queue names (`t-<tag>-<uuid>`), its own store and port, and
//! deletes the queues it declared when it ends (also when it panics). The broker comes from
//! `WARREN_TEST_AMQP_URL` (default the local guest account); a missing broker fails the test.
//! The store is the one `WARREN_TEST_STORE` picks (`sqlite`, the default, or `postgres`):
//! see [`store`]. A missing PostgreSQL server fails the test too.

#![allow(dead_code)]

pub mod process;
pub mod proxy;
pub mod store;
pub mod target;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lapin::options::{
    BasicGetOptions, BasicPublishOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use warren::config::EnvOverrides;
use warren::workers::Handler;
use warren::{App, Config, Role};

pub use store::{StoreOutage, TestStore};

/// The broker tests run against.
pub fn amqp_url() -> String {
    std::env::var("WARREN_TEST_AMQP_URL")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned())
}

/// A queue name no other test uses.
pub fn unique(tag: &str) -> String {
    format!(
        "t-{tag}-{}",
        &uuid::Uuid::now_v7().simple().to_string()[20..]
    )
}

/// Repository root (for `workers/examples/*.sh`).
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A raw AMQP connection for inspecting and feeding queues as an outsider would.
pub struct Raw {
    conn: Connection,
}

impl Raw {
    /// Connects; panics with advice when the broker is missing (a failed test, not a skip).
    pub async fn connect() -> Self {
        let url = amqp_url();
        let connect = tokio::time::timeout(
            Duration::from_secs(20),
            Connection::connect(&url, ConnectionProperties::default()),
        );
        match connect
            .await
            .expect("connecting to RabbitMQ timed out after 20 s")
        {
            Ok(conn) => Self { conn },
            Err(e) => panic!(
                "RabbitMQ is not reachable at {} ({e}); run scripts/ensure-rabbitmq (the README's test command does)",
                warren::redact(&url)
            ),
        }
    }

    /// A new channel.
    pub async fn channel(&self) -> Channel {
        self.conn.create_channel().await.expect("open channel")
    }

    /// Ready messages in `queue`, or `None` when it does not exist (passive declare).
    pub async fn depth(&self, queue: &str) -> Option<u32> {
        self.passive(queue).await.map(|q| q.message_count())
    }

    /// Polls until `queue` holds `n` messages, failing the test after `within`.
    pub async fn wait_depth(&self, queue: &str, n: u32, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let d = self.depth(queue).await;
            if d == Some(n) {
                return;
            }
            assert!(Instant::now() < deadline, "{queue} holds {d:?}, not {n}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Consumers on `queue`, or `None` when it does not exist (passive declare).
    pub async fn consumers(&self, queue: &str) -> Option<u32> {
        self.passive(queue).await.map(|q| q.consumer_count())
    }

    async fn passive(&self, queue: &str) -> Option<lapin::Queue> {
        let ch = self.channel().await;
        ch.queue_declare(
            queue.into(),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .ok()
    }

    /// Takes one message from `queue` (basic.get, auto-ack), waiting up to `timeout` for one.
    pub async fn get_one(
        &self,
        queue: &str,
        timeout: Duration,
    ) -> Option<lapin::message::BasicGetMessage> {
        let ch = self.channel().await;
        let deadline = Instant::now() + timeout;
        loop {
            let msg = ch
                .basic_get(queue.into(), BasicGetOptions { no_ack: true })
                .await
                .expect("basic.get");
            if msg.is_some() || Instant::now() >= deadline {
                return msg;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Publishes a raw message straight to `queue` (default exchange), with a confirm.
    pub async fn publish(&self, queue: &str, body: &[u8], props: BasicProperties) {
        let ch = self.channel().await;
        ch.confirm_select(lapin::options::ConfirmSelectOptions::default())
            .await
            .expect("confirm mode");
        let confirm = ch
            .basic_publish(
                "".into(),
                queue.into(),
                BasicPublishOptions::default(),
                body,
                props,
            )
            .await
            .expect("publish")
            .await
            .expect("confirm");
        assert!(confirm.is_ack(), "broker nacked a raw publish");
    }
}

impl Raw {
    /// Publishes `n` dead letters straight into `dlq` (pipelined confirms), each with a fresh
    /// job id and the `x-warren-` dead-letter headers; `error(i)` gives the i-th last error.
    /// Returns the ids in order.
    pub async fn dead_letters(
        &self,
        queue: &str,
        n: usize,
        error: impl Fn(usize) -> String,
    ) -> Vec<String> {
        use lapin::types::AMQPValue;
        use warren::message::{
            H_ATTEMPTS, H_FAILED_AT, H_LAST_ERROR, H_ORIGINAL_QUEUE, long_value,
        };
        let ch = self.channel().await;
        ch.confirm_select(lapin::options::ConfirmSelectOptions::default())
            .await
            .expect("confirm mode");
        let dlq = format!("{queue}.dlq");
        let mut ids = Vec::with_capacity(n);
        let mut confirms = Vec::with_capacity(n);
        for i in 0..n {
            let id = uuid::Uuid::now_v7().to_string();
            let mut h = FieldTable::default();
            h.insert(H_ORIGINAL_QUEUE.into(), long_value(queue));
            h.insert(H_ATTEMPTS.into(), AMQPValue::LongUInt(3));
            h.insert(H_LAST_ERROR.into(), long_value(&error(i)));
            h.insert(
                H_FAILED_AT.into(),
                long_value(
                    &humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
                ),
            );
            let props = BasicProperties::default()
                .with_message_id(id.as_str().into())
                .with_content_type("application/json".into())
                .with_delivery_mode(2)
                .with_headers(h);
            let body = format!(r#"{{"n":{i}}}"#);
            confirms.push(
                ch.basic_publish(
                    "".into(),
                    dlq.as_str().into(),
                    BasicPublishOptions::default(),
                    body.as_bytes(),
                    props,
                )
                .await
                .expect("publish"),
            );
            ids.push(id);
        }
        for c in confirms {
            assert!(
                c.await.expect("confirm").is_ack(),
                "broker nacked a dead letter"
            );
        }
        ids
    }

    /// Takes every message left in `queue` (a consumer, auto-ack) and returns their message
    /// ids.
    pub async fn take_all_ids(&self, queue: &str) -> Vec<String> {
        use futures::StreamExt as _;
        let n = self.depth(queue).await.expect("queue exists") as usize;
        let ch = self.channel().await;
        let mut consumer = ch
            .basic_consume(
                queue.into(),
                "test-take-all".into(),
                lapin::options::BasicConsumeOptions {
                    no_ack: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .expect("consume");
        let mut ids = Vec::with_capacity(n);
        while ids.len() < n {
            let d = tokio::time::timeout(Duration::from_secs(10), consumer.next())
                .await
                .expect("messages keep coming")
                .expect("consumer open")
                .expect("delivery");
            ids.push(
                d.properties
                    .message_id()
                    .as_ref()
                    .map(|m| m.to_string())
                    .unwrap_or_default(),
            );
        }
        let _ = ch.close(200, "taken".into()).await;
        ids
    }
}

/// Kills a spawned process (or its whole process group) when dropped, so that a failing test
/// leaves no `warren` running. Harmless after the process has exited.
pub struct KillOnDrop {
    /// The pid (or process group id).
    pub pid: u32,
    /// Kill the process group `-pid` instead of the process.
    pub group: bool,
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let target = if self.group {
            format!("-{}", self.pid)
        } else {
            self.pid.to_string()
        };
        let _ = std::process::Command::new("kill")
            .args(["-KILL", "--", &target])
            .stderr(std::process::Stdio::null())
            .status();
    }
}

/// Deletes queues on drop (from a thread of its own, so it also runs when a test panics).
pub struct QueueCleanup(pub Vec<String>);

impl Drop for QueueCleanup {
    fn drop(&mut self) {
        let names = std::mem::take(&mut self.0);
        let url = amqp_url();
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            // Bounded: a broker that does not answer must not hang the test run.
            rt.block_on(async move {
                tokio::time::timeout(Duration::from_secs(20), async move {
                    let Ok(conn) = Connection::connect(&url, ConnectionProperties::default()).await
                    else {
                        return;
                    };
                    for name in names {
                        if let Ok(ch) = conn.create_channel().await {
                            let _ = ch
                                .queue_delete(name.as_str().into(), QueueDeleteOptions::default())
                                .await;
                        }
                    }
                    let _ = conn.close(200, "test cleanup".into()).await;
                })
                .await
            })
            .ok();
        })
        .join();
    }
}

/// How to start a test warren.
pub struct Setup {
    /// `[queues.NAME]` tables, keyed by a short alias; `{q}` in the body is not needed: the
    /// alias is replaced by a unique queue name.
    queues: BTreeMap<String, String>,
    /// Queue names given by the test instead of a unique one, by alias.
    fixed_names: BTreeMap<String, String>,
    handlers: Vec<(String, Arc<dyn Handler>)>,
    role: Role,
    amqp_url: String,
    extra: String,
    tokens: Option<String>,
}

impl Setup {
    /// Starts an empty setup (role `run`: intake and workers).
    ///
    /// warren's log lines (info and up, or `RUST_LOG`) go to the test's captured output, so
    /// a failing test shows what the workers did.
    pub fn new() -> Self {
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warren=info"));
        // Already set by an earlier test of this binary: keep that one.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .try_init();
        Self {
            queues: BTreeMap::new(),
            fixed_names: BTreeMap::new(),
            handlers: Vec::new(),
            role: Role::All,
            amqp_url: amqp_url(),
            extra: String::new(),
            tokens: None,
        }
    }

    /// Adds a queue with alias `alias` and TOML `body` (the lines of its table).
    pub fn queue(mut self, alias: &str, body: &str) -> Self {
        self.queues.insert(alias.to_owned(), body.to_owned());
        self
    }

    /// Adds a queue with alias `alias` named `name` (not a unique name): for a test that
    /// brings back a queue an earlier warren of the test had.
    pub fn queue_named(mut self, alias: &str, name: &str, body: &str) -> Self {
        self.fixed_names.insert(alias.to_owned(), name.to_owned());
        self.queue(alias, body)
    }

    /// Runs the queue `alias` with an in-process handler.
    pub fn handler(mut self, alias: &str, handler: impl Handler) -> Self {
        self.handlers.push((alias.to_owned(), Arc::new(handler)));
        self
    }

    /// Runs as `role` instead of intake + workers.
    pub fn role(mut self, role: Role) -> Self {
        self.role = role;
        self
    }

    /// Points warren at another broker URL (e.g. a closed port).
    pub fn amqp_url(mut self, url: &str) -> Self {
        self.amqp_url = url.to_owned();
        self
    }

    /// API tokens, as in `WARREN_API_TOKENS` (`[SCOPE:]TOKEN, …`).
    pub fn tokens(mut self, entries: &str) -> Self {
        self.tokens = Some(entries.to_owned());
        self
    }

    /// Extra top-level TOML (e.g. `[worker]` settings).
    pub fn extra(mut self, toml: &str) -> Self {
        self.extra = toml.to_owned();
        self
    }

    /// Starts warren and waits until its intake answers and (with a reachable broker) its
    /// topology is declared.
    pub async fn start(self) -> TestWarren {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = TestStore::new(dir.path()).await;
        let names: BTreeMap<String, String> = self
            .queues
            .keys()
            .map(|alias| {
                let name = self.fixed_names.get(alias).cloned();
                (alias.clone(), name.unwrap_or_else(|| unique(alias)))
            })
            .collect();
        let mut text = self.extra.clone();
        for (alias, body) in &self.queues {
            text.push_str(&format!("\n[queues.\"{}\"]\n{body}\n", names[alias]));
        }
        let env = EnvOverrides {
            amqp_url: Some(self.amqp_url.clone()),
            bind: None,
            store_url: Some(store.url().to_owned()),
            api_tokens: self.tokens.clone(),
        };
        let config =
            Config::parse(&text, &dir.path().join("queues.toml"), &env).expect("valid test config");
        let mut builder = App::builder(config);
        for (alias, handler) in self.handlers {
            builder = builder.queue_handler(&names[&alias], ArcHandler(handler));
        }
        let app = Arc::new(builder.build().await.expect("app builds"));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let shutdown = CancellationToken::new();
        let role = self.role;
        let serves_http = matches!(role, Role::All | Role::Intake);
        let listener = serves_http.then_some(listener);
        let task = {
            let app = app.clone();
            let shutdown = shutdown.clone();
            tokio::spawn(async move { app.run(role, listener, shutdown).await })
        };
        let mut cleanup = Vec::new();
        for name in names.values() {
            cleanup.push(name.clone());
            cleanup.push(format!("{name}.dlq"));
        }
        let w = TestWarren {
            base,
            names,
            app,
            shutdown,
            task: Some(task),
            http: reqwest::Client::new(),
            _cleanup: QueueCleanup(cleanup),
            dir,
            store,
            serves_http,
        };
        if self.amqp_url == amqp_url() {
            if w.serves_http {
                w.wait_ready().await;
            } else {
                w.wait_queues().await;
            }
        }
        w
    }
}

/// Adapts a shared handler to `impl Handler`.
struct ArcHandler(Arc<dyn Handler>);

impl Handler for ArcHandler {
    fn handle<'a>(&'a self, job: &'a warren::workers::Job) -> warren::workers::HandlerFuture<'a> {
        self.0.handle(job)
    }
}

/// A running in-process warren.
pub struct TestWarren {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    names: BTreeMap<String, String>,
    app: Arc<App>,
    shutdown: CancellationToken,
    task: Option<tokio::task::JoinHandle<warren::Result<()>>>,
    /// A client for the intake.
    pub http: reqwest::Client,
    _cleanup: QueueCleanup,
    dir: tempfile::TempDir,
    store: TestStore,
    serves_http: bool,
}

impl TestWarren {
    /// The real queue name behind `alias`.
    pub fn q(&self, alias: &str) -> String {
        self.names[alias].clone()
    }

    /// The test's temp directory (it holds the store when that is SQLite).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The store this warren runs on.
    pub fn store(&self) -> &TestStore {
        &self.store
    }

    /// Makes the store unreachable until the returned outage is ended (see
    /// [`TestStore::down`]).
    pub async fn store_down(&self) -> StoreOutage {
        self.store.down().await
    }

    /// The app.
    pub fn app(&self) -> &App {
        &self.app
    }

    /// Jobs the store holds, read through the store's public trait by an opener of the
    /// test's own.
    pub async fn stored_jobs(&self) -> u64 {
        self.store.total().await
    }

    /// Waits until `/readyz` says the broker, the store and the topology are ready.
    pub async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(resp) = self.http.get(format!("{}/readyz", self.base)).send().await
                && resp.status() == 200
            {
                return;
            }
            assert!(Instant::now() < deadline, "warren not ready within 15 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until every work queue exists (declared last by the topology).
    async fn wait_queues(&self) {
        let raw = Raw::connect().await;
        let deadline = Instant::now() + Duration::from_secs(15);
        for name in self.names.values() {
            while raw.depth(name).await.is_none() {
                assert!(
                    Instant::now() < deadline,
                    "topology for {name} not declared within 15 s"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }

    /// POSTs `body` (JSON) to queue `alias`'s jobs endpoint.
    pub async fn post(&self, alias: &str, body: &Value) -> reqwest::Response {
        self.http
            .post(format!("{}/v1/queues/{}/jobs", self.base, self.q(alias)))
            .json(body)
            .send()
            .await
            .expect("POST reaches the intake")
    }

    /// POSTs a payload and returns the new job's id, asserting 202.
    pub async fn submit(&self, alias: &str, payload: Value) -> String {
        accepted_id(
            self.post(alias, &serde_json::json!({ "payload": payload }))
                .await,
        )
        .await
    }

    /// `GET /v1/jobs/{id}` as JSON.
    pub async fn job(&self, id: &str) -> Value {
        let resp = self
            .http
            .get(format!("{}/v1/jobs/{id}", self.base))
            .send()
            .await
            .expect("GET reaches the intake");
        assert_eq!(resp.status(), 200, "job {id} should exist");
        resp.json().await.expect("json")
    }

    /// Polls the job until its status is `status` (or fails after `timeout`). A job the store
    /// does not know yet (404) counts as "not there yet".
    pub async fn wait_status(&self, id: &str, status: &str, timeout: Duration) -> Value {
        match self.try_wait_status(id, status, timeout).await {
            Ok(job) => job,
            Err(last) => {
                panic!("job {id} did not reach `{status}` within {timeout:?}; last seen: {last}")
            }
        }
    }

    /// [`Self::wait_status`] that returns the job's last view (`Err`) instead of failing, for
    /// a test that has more to say about why.
    pub async fn try_wait_status(
        &self,
        id: &str,
        status: &str,
        timeout: Duration,
    ) -> Result<Value, Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let resp = self
                .http
                .get(format!("{}/v1/jobs/{id}", self.base))
                .send()
                .await
                .expect("GET reaches the intake");
            let last = if resp.status() == 200 {
                let job: Value = resp.json().await.expect("json");
                if job["status"] == status {
                    return Ok(job);
                }
                job
            } else {
                Value::String(format!("HTTP {}", resp.status()))
            };
            if Instant::now() >= deadline {
                return Err(last);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops warren gracefully and returns what `run` returned.
    pub async fn stop(mut self) -> warren::Result<()> {
        self.shutdown.cancel();
        match self.task.take() {
            Some(t) => t.await.expect("run task did not panic"),
            None => Ok(()),
        }
    }
}

impl Drop for TestWarren {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A handler that signals `started` when a job begins and holds it until `release` is
/// notified: for observing a job while it runs.
pub struct Gate {
    /// Notified (once per job) when a job starts.
    pub started: Arc<tokio::sync::Notify>,
    /// Notify to let the running job succeed.
    pub release: Arc<tokio::sync::Notify>,
}

impl Gate {
    /// A new gate and its handler.
    pub fn new() -> (Self, impl Handler) {
        let gate = Self {
            started: Arc::default(),
            release: Arc::default(),
        };
        let (started, release) = (gate.started.clone(), gate.release.clone());
        let handler = warren::workers::handler_fn(move |_job| {
            let (started, release) = (started.clone(), release.clone());
            async move {
                started.notify_one();
                release.notified().await;
                warren::workers::Outcome::success()
            }
        });
        (gate, handler)
    }
}

/// The job id of a `202 Accepted` answer (asserting the status).
pub async fn accepted_id(resp: reqwest::Response) -> String {
    assert_eq!(resp.status(), 202, "POST should be accepted");
    let body: Value = resp.json().await.expect("json body");
    body["id"].as_str().expect("id").to_owned()
}

/// The management API samples statistics every 5 s by default
/// (`collect_statistics_interval`): unacked counts lag that much.
pub const STATS_LAG: Duration = Duration::from_secs(20);

/// `GET /v1/queues`'s entry for `queue`, and the whole answer.
pub async fn queue_entry(w: &TestWarren, queue: &str) -> (Value, Value) {
    queue_entry_at(&w.http, &w.base, queue).await
}

/// [`queue_entry`] from the intake at `base` (e.g. a `warren` child process).
pub async fn queue_entry_at(http: &reqwest::Client, base: &str, queue: &str) -> (Value, Value) {
    let resp = http
        .get(format!("{base}/v1/queues"))
        .send()
        .await
        .expect("GET /v1/queues");
    assert_eq!(resp.status(), 200);
    let all: Value = resp.json().await.expect("json");
    let e = all["queues"]
        .as_array()
        .expect("queues")
        .iter()
        .find(|e| e["queue"] == queue)
        .unwrap_or_else(|| panic!("{queue} missing from {all}"))
        .clone();
    (e, all)
}

/// `GET /v1/jobs/{id}` from the intake at `base`, as JSON.
pub async fn job_at(http: &reqwest::Client, base: &str, id: &str) -> Value {
    http.get(format!("{base}/v1/jobs/{id}"))
        .send()
        .await
        .expect("GET /v1/jobs/{id}")
        .json()
        .await
        .expect("json")
}

/// POSTs a job with `payload` to `queue` on the intake at `base`; returns its id, asserting
/// 202.
pub async fn post_job(http: &reqwest::Client, base: &str, queue: &str, payload: Value) -> String {
    accepted_id(
        http.post(format!("{base}/v1/queues/{queue}/jobs"))
            .json(&serde_json::json!({ "payload": payload }))
            .send()
            .await
            .expect("POST"),
    )
    .await
}

/// POSTs `jobs` (request bodies) as one batch to `queue` on the intake at `base`, asserting
/// that every job was accepted.
pub async fn post_batch(http: &reqwest::Client, base: &str, queue: &str, jobs: Vec<Value>) {
    let resp = http
        .post(format!("{base}/v1/queues/{queue}/jobs/batch"))
        .json(&serde_json::json!({ "jobs": jobs }))
        .send()
        .await
        .expect("POST batch");
    assert_eq!(
        resp.status(),
        200,
        "a batch answers 200 with a result per job"
    );
    let body: Value = resp.json().await.expect("json");
    let results = body["results"].as_array().expect("results");
    assert!(
        results.iter().all(|r| r["status"] == 202),
        "every job accepted"
    );
}

/// Polls `GET /v1/queues` until `queue`'s entry satisfies `pred` (within [`STATS_LAG`]).
pub async fn wait_queue_entry(w: &TestWarren, queue: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + STATS_LAG;
    loop {
        let (e, all) = queue_entry(w, queue).await;
        if pred(&e) {
            return e;
        }
        assert!(
            Instant::now() < deadline,
            "{queue} not as expected within {STATS_LAG:?}: {all}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
