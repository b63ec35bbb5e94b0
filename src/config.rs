//! `queues.toml`: the typed configuration (DESIGN §5).
//!
//! Parsing is strict: an unknown key or an invalid value is an error that names the file, the
//! line and the key, and nothing is declared on the broker. Durations are human-readable
//! (`"30s"`, `"10m"`, `"7d"`, parsed by `humantime`). `WARREN_AMQP_URL`, `WARREN_BIND` and
//! `WARREN_STORE_URL` override the file.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::error::{Error, Result};

/// Default configuration file name, looked up in the working directory.
pub const DEFAULT_CONFIG_FILE: &str = "queues.toml";

/// Default `queues.NAME.replicas`: 3 nodes, RabbitMQ's own default quorum group size
/// (`quorum_cluster_size`, `rabbit_quorum_queue:get_default_quorum_initial_group_size/1`).
pub const DEFAULT_REPLICAS: u32 = 3;

/// The whole configuration of one warren deployment.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file this configuration came from (for messages).
    pub path: PathBuf,
    /// Directory that relative paths (exec programs, the SQLite file) are resolved against:
    /// the config file's directory.
    pub base_dir: PathBuf,
    /// RabbitMQ connection settings.
    pub broker: BrokerConfig,
    /// HTTP intake settings.
    pub http: HttpConfig,
    /// Status store settings.
    pub store: StoreConfig,
    /// Worker runtime settings.
    pub worker: WorkerConfig,
    /// API tokens.
    pub auth: AuthConfig,
    /// The configured queues, by name (sorted).
    pub queues: BTreeMap<String, QueueConfig>,
    /// The configured schedules (`[schedules.NAME]`), by name (sorted).
    pub schedules: BTreeMap<String, crate::schedule::Schedule>,
}

/// `[broker]`: where RabbitMQ is and how warren publishes to it.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// The broker's AMQP URLs, `amqp://` or `amqps://` (rustls): one for a single broker,
    /// or one per node of a cluster (`broker.url` is a string or an array; `WARREN_AMQP_URL`,
    /// which overrides it, holds one URL or several separated by commas). Default
    /// `["amqp://guest:guest@127.0.0.1:5672/%2f"]`. See `crate::Broker` for how a process
    /// picks a node and moves to another.
    pub urls: Vec<String>,
    /// How long a publish may wait for its publisher confirm before the intake answers 503.
    /// Default 5 s.
    pub confirm_timeout: Duration,
    /// Number of confirm-mode channels the publisher pipelines over. Default 1: on one
    /// channel the broker confirms many publishes with one `basic.ack` (`multiple`), which
    /// costs both sides less per job than spreading them (BENCHMARKS.md: 81 against 100 µs
    /// of warren's CPU and 66 against 83 µs of the broker's per single POST, 1 against 4
    /// channels). More channels spread the publishes over more of a large broker's cores.
    pub publish_channels: usize,
    /// The broker's `consumer_timeout` (rabbitmq.conf; RabbitMQ's default is 30 min): a
    /// delivery unacked for longer closes the channel. warren warns at start-up when a queue's
    /// `timeout` is not below it. Default 30 min.
    pub consumer_timeout: Duration,
    /// The RabbitMQ management API (`http://` or `https://`, credentials in the URL or taken
    /// from the AMQP URL), where `GET /v1/queues` and `warren queues` read unacked counts.
    /// `None`: derived from the AMQP URL (same host and credentials, port 15672, or 15671 with
    /// https for `amqps://`); see [`BrokerConfig::management`].
    pub management_url: Option<String>,
}

/// `[http]`: the intake.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Listen address. Overridden by `WARREN_BIND`. Default `127.0.0.1:8080` (loopback, DESIGN §9).
    pub bind: SocketAddr,
}

/// `[auth]` and `WARREN_API_TOKENS`: who may call the HTTP API (DESIGN §9, [`crate::auth`]).
#[derive(Debug, Clone, Default)]
pub struct AuthConfig {
    /// The tokens from `WARREN_API_TOKENS` and `auth.tokens_file` together. Empty: no
    /// authentication, which warren allows only on a loopback bind unless
    /// `insecure_no_auth`.
    pub tokens: crate::auth::Tokens,
    /// Serve a non-loopback bind without tokens (`--insecure-no-auth`). Default false.
    pub insecure_no_auth: bool,
}

/// `[store]`: job status, claims and idempotency keys.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// `sqlite://PATH` (relative to the config file's directory) or `postgres://…`.
    /// Overridden by `WARREN_STORE_URL`. Default `sqlite://warren.db`.
    pub url: String,
    /// How long finished jobs and idempotency keys are kept. Default 7 days.
    pub retention: Duration,
    /// Most connections a process opens to a PostgreSQL store. Default 16.
    pub max_connections: u32,
    /// PostgreSQL's `statement_timeout` for every session. Default 10 s.
    pub statement_timeout: Duration,
}

/// `[worker]`: consumer runtime.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// On SIGTERM/SIGINT, how long in-flight jobs may take to finish before they are handed
    /// back to the broker. Default 30 s.
    pub shutdown_grace: Duration,
    /// How long past its due time a retry or a delayed job may stay in the broker's delay
    /// levels before the sweeper publishes it again from the store (`crate::sweeper`).
    /// Default 30 s; at least 1 s.
    pub retry_sweep_after: Duration,
}

/// One `[queues.NAME]` table.
#[derive(Debug, Clone)]
pub struct QueueConfig {
    /// Queue name: also the RabbitMQ work queue name; the DLQ is `{name}.dlq`.
    pub name: String,
    /// What runs the jobs.
    pub handler: HandlerSpec,
    /// AMQP prefetch (`basic.qos`): most unacked deliveries a worker holds. Default 32.
    pub prefetch: u16,
    /// Most jobs run at once by one worker. Default: `prefetch`.
    pub concurrency: usize,
    /// Attempts before a job is dead-lettered. Default 5.
    pub max_attempts: u32,
    /// Retry backoff: exponential with full jitter between `base` and `max`.
    pub backoff: Backoff,
    /// Longest a handler may run; past it the attempt fails. Default 30 s.
    pub timeout: Duration,
    /// RabbitMQ queue type. Default quorum.
    pub queue_type: QueueType,
    /// `x-max-length`: most ready messages; a full queue rejects publishes (429). Default none.
    pub max_length: Option<u64>,
    /// Largest accepted `payload` in bytes (413 past it). Default 256 KiB.
    pub max_payload_bytes: usize,
    /// `x-delivery-limit` for quorum queues: redeliveries (crashes, requeues) before the broker
    /// dead-letters the message. Default 20.
    pub delivery_limit: u32,
    /// `x-quorum-initial-group-size` of the work queue and its DLQ when they are quorum queues:
    /// how many RabbitMQ nodes hold a replica of each, at least 1. Default 3 (RabbitMQ's own
    /// default, `quorum_cluster_size`). The broker caps it at the nodes the cluster has
    /// (`rabbit_queue_location:select_replicas/6`, RabbitMQ 3.10) and reads it only when it
    /// creates the queue; an existing queue keeps its members (see [`crate::topology`]).
    /// Not used by classic queues, which RabbitMQ does not replicate.
    pub replicas: u32,
    /// `rate_limit = { per_second = R, burst = B }`: handler starts of this queue, across
    /// every worker in every process, follow a token bucket of rate R and size B (Cloud Tasks'
    /// `max_dispatches_per_second` and `max_burst_size`); see [`crate::rate_limit`]. Default
    /// none.
    pub rate_limit: Option<RateLimit>,
    /// `concurrency_key = "/customer_id"`: a JSON pointer (RFC 6901) into the payload whose
    /// scalar is the job's concurrency key (an `X-Concurrency-Key` header overrides it). A
    /// POST whose payload has no scalar there and no header is refused (400
    /// `missing-concurrency-key`). Default none.
    pub concurrency_key: Option<String>,
    /// `concurrency_per_key = N`: most jobs with the same concurrency key running at once
    /// across the fleet ([`crate::concurrency_key`]); applies to jobs that carry a key (from
    /// `concurrency_key` or the header). Default 1 when `concurrency_key` is set, else none.
    pub concurrency_per_key: Option<u32>,
}

/// A queue's token bucket ([`QueueConfig::rate_limit`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    /// Tokens added per second (handler starts per second over a long run); > 0.
    pub per_second: f64,
    /// The bucket's size: most starts at once after a quiet spell; at least 1. Default: the
    /// rate rounded up (one second's worth), at least 1.
    pub burst: u32,
}

/// Retry backoff bounds. The delay before attempt `n + 1` is drawn uniformly from
/// `[0, min(max, base * 2^(n-1))]` ("full jitter", AWS Architecture Blog, 2015).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Backoff {
    /// First step. Default 1 s.
    #[serde(with = "humantime_serde")]
    pub base: Duration,
    /// Cap. Default 10 min.
    #[serde(with = "humantime_serde")]
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            base: Duration::from_secs(1),
            max: Duration::from_secs(600),
        }
    }
}

/// RabbitMQ queue type (`x-queue-type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum QueueType {
    /// Replicated, durable, with a delivery limit (RabbitMQ docs, "Quorum Queues").
    #[default]
    Quorum,
    /// Classic durable queue.
    Classic,
}

impl QueueType {
    /// The `x-queue-type` argument value.
    pub fn as_str(self) -> &'static str {
        match self {
            QueueType::Quorum => "quorum",
            QueueType::Classic => "classic",
        }
    }
}

/// What runs a queue's jobs (DESIGN §6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HandlerSpec {
    /// Succeeds at once; for benchmarks.
    Noop,
    /// POST the payload to `url`, signed when `signing` is set.
    Http {
        /// Where the payload goes.
        url: reqwest::Url,
        /// `signing_secret_env` / `signing_secret_file`: the Standard Webhooks secrets every
        /// request is signed with (several while a secret is rotated), read and checked when
        /// the configuration is loaded. Its `Debug` output shows no secret.
        signing: Option<warren_workers::WebhookSigner>,
    },
    /// Run this program (absolute path, resolved against the config file's directory) with
    /// these arguments; no shell.
    Exec {
        /// Resolved program path.
        program: PathBuf,
        /// Extra arguments.
        args: Vec<String>,
    },
    /// A Rust handler registered in code under this name (see `App::builder`).
    Rust(String),
}

// ---- raw file shapes -------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    broker: RawBroker,
    #[serde(default)]
    http: RawHttp,
    #[serde(default)]
    store: RawStore,
    #[serde(default)]
    worker: RawWorker,
    #[serde(default)]
    auth: RawAuth,
    #[serde(default)]
    queues: BTreeMap<Spanned<String>, RawQueue>,
    #[serde(default)]
    schedules: BTreeMap<Spanned<String>, crate::schedule::RawSchedule>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawBroker {
    url: Option<OneOrMany>,
    #[serde(default, with = "humantime_serde")]
    confirm_timeout: Option<Duration>,
    publish_channels: Option<std::num::NonZeroUsize>,
    #[serde(default, with = "humantime_serde")]
    consumer_timeout: Option<Duration>,
    management_url: Option<String>,
}

/// `broker.url`: one URL, or an array of them (a cluster's nodes).
#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    bind: Option<SocketAddr>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawAuth {
    tokens_file: Option<PathBuf>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawStore {
    url: Option<Spanned<String>>,
    #[serde(default, with = "humantime_serde")]
    retention: Option<Duration>,
    max_connections: Option<Spanned<u32>>,
    #[serde(default, with = "humantime_serde")]
    statement_timeout: Option<Duration>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawWorker {
    #[serde(default, with = "humantime_serde")]
    shutdown_grace: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    retry_sweep_after: Option<Duration>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawQueue {
    handler: Spanned<RawHandler>,
    prefetch: Option<std::num::NonZeroU16>,
    concurrency: Option<std::num::NonZeroUsize>,
    max_attempts: Option<std::num::NonZeroU32>,
    backoff: Option<Spanned<Backoff>>,
    #[serde(default, with = "humantime_serde")]
    timeout: Option<Duration>,
    #[serde(rename = "type")]
    queue_type: Option<QueueType>,
    max_length: Option<std::num::NonZeroU64>,
    max_payload_bytes: Option<std::num::NonZeroUsize>,
    delivery_limit: Option<std::num::NonZeroU32>,
    replicas: Option<Spanned<u32>>,
    rate_limit: Option<Spanned<RawRateLimit>>,
    concurrency_key: Option<Spanned<String>>,
    concurrency_per_key: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRateLimit {
    per_second: f64,
    burst: Option<i64>,
}

/// `handler`: a name (`"noop"`) or a table (`{ http = "…", signing_secret_env = "…" }`).
enum RawHandler {
    Name(String),
    Table(RawHandlerTable),
}

impl<'de> Deserialize<'de> for RawHandler {
    // By hand rather than `#[serde(untagged)]`, so that an error inside the table (an unknown
    // key, a wrong type) keeps its own message and line, and `Spanned` works inside it.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = RawHandler;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("\"noop\" or a table like { http = \"https://…\" }")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> std::result::Result<RawHandler, E> {
                Ok(RawHandler::Name(v.to_owned()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> std::result::Result<RawHandler, A::Error> {
                RawHandlerTable::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(RawHandler::Table)
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// A handler table: exactly one of `exec`, `http`, `rust`; the signing keys go with `http`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHandlerTable {
    exec: Option<Vec<String>>,
    http: Option<String>,
    rust: Option<String>,
    signing_secret_env: Option<Spanned<String>>,
    signing_secret_file: Option<Spanned<PathBuf>>,
}

/// Environment overrides, read by [`Config::load`]. Tests build one by hand.
#[derive(Debug, Clone, Default)]
pub struct EnvOverrides {
    /// `WARREN_AMQP_URL`.
    pub amqp_url: Option<String>,
    /// `WARREN_BIND`.
    pub bind: Option<String>,
    /// `WARREN_STORE_URL`.
    pub store_url: Option<String>,
    /// `WARREN_API_TOKENS` (see [`crate::auth`]).
    pub api_tokens: Option<String>,
}

impl EnvOverrides {
    /// Reads `WARREN_AMQP_URL`, `WARREN_BIND`, `WARREN_STORE_URL` and `WARREN_API_TOKENS`
    /// from the process
    /// environment (empty values count as unset).
    pub fn from_env() -> Self {
        let get = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        Self {
            amqp_url: get("WARREN_AMQP_URL"),
            bind: get("WARREN_BIND"),
            store_url: get("WARREN_STORE_URL"),
            api_tokens: get("WARREN_API_TOKENS"),
        }
    }
}

impl Config {
    /// Reads and validates `path` (or [`DEFAULT_CONFIG_FILE`]), then applies the process
    /// environment's overrides.
    ///
    /// # Errors
    /// [`crate::ErrorKind::Config`] naming the file, line and key for unreadable files,
    /// unknown keys, invalid values and missing exec programs.
    pub fn load(path: Option<&Path>) -> Result<Self> {
        let path = path.unwrap_or(Path::new(DEFAULT_CONFIG_FILE));
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::config(format!("cannot read config file {}: {e}", path.display()))
        })?;
        Self::parse(&text, path, &EnvOverrides::from_env())
    }

    /// Parses `text` as if read from `path` (used for messages and to resolve relative paths),
    /// then applies `env`.
    ///
    /// Variables that `signing_secret_env` names are read from the process environment.
    ///
    /// # Errors
    /// As [`Config::load`].
    pub fn parse(text: &str, path: &Path, env: &EnvOverrides) -> Result<Self> {
        Self::parse_with(text, path, env, &|name| std::env::var_os(name))
    }

    /// [`Config::parse`] that reads the variables `signing_secret_env` names with `var`.
    fn parse_with(
        text: &str,
        path: &Path,
        env: &EnvOverrides,
        var: &dyn Fn(&str) -> Option<std::ffi::OsString>,
    ) -> Result<Self> {
        let file = path.display().to_string();
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let at = e
                .span()
                .map(|s| format!(" line {}", line_of(text, s.start)))
                .unwrap_or_default();
            Error::config(format!(
                "invalid config {file}{at}: {}",
                e.message().trim_end()
            ))
        })?;
        let base_dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let at = |span: std::ops::Range<usize>, key: &str, msg: String| {
            Error::config(format!(
                "invalid config {file} line {}: `{key}`: {msg}",
                line_of(text, span.start)
            ))
        };

        let broker = BrokerConfig {
            urls: match (&env.amqp_url, raw.broker.url) {
                (Some(list), _) => list
                    .split(',')
                    .map(str::trim)
                    .filter(|u| !u.is_empty())
                    .map(str::to_owned)
                    .collect(),
                (None, Some(OneOrMany::One(url))) => vec![url],
                (None, Some(OneOrMany::Many(urls))) => urls,
                (None, None) => vec!["amqp://guest:guest@127.0.0.1:5672/%2f".to_owned()],
            },
            confirm_timeout: raw.broker.confirm_timeout.unwrap_or(Duration::from_secs(5)),
            publish_channels: raw.broker.publish_channels.map_or(1, |n| n.get()),
            consumer_timeout: raw
                .broker
                .consumer_timeout
                .unwrap_or(Duration::from_secs(30 * 60)),
            management_url: raw.broker.management_url,
        };
        if let Some(m) = &broker.management_url
            && !(m.starts_with("http://") || m.starts_with("https://"))
        {
            return Err(Error::config(format!(
                "invalid config {file}: `broker.management_url` must start with http:// or https://, got {}",
                crate::redact::redact(m)
            )));
        }
        if broker.urls.is_empty() {
            return Err(Error::config(format!(
                "invalid config {file}: `broker.url` (or WARREN_AMQP_URL) names no URL"
            )));
        }
        for url in &broker.urls {
            if !(url.starts_with("amqp://") || url.starts_with("amqps://")) {
                return Err(Error::config(format!(
                    "invalid config {file}: `broker.url` (or WARREN_AMQP_URL) must start with amqp:// or amqps://, got {}",
                    crate::redact::redact(url)
                )));
            }
        }
        let bind = match &env.bind {
            Some(b) => b.parse().map_err(|e| {
                Error::config(format!(
                    "WARREN_BIND: `{b}` is not an address like 127.0.0.1:8080: {e}"
                ))
            })?,
            None => raw
                .http
                .bind
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080))),
        };
        // The store URL, from the environment or the file (whose line an error names).
        let (store_url, store_url_span) = match (&env.store_url, &raw.store.url) {
            (Some(url), _) => (url.clone(), None),
            (None, Some(url)) => (url.get_ref().clone(), Some(url.span())),
            (None, None) => ("sqlite://warren.db".to_owned(), None),
        };
        if crate::store::backend_of(&store_url).is_none() {
            let msg = format!(
                "must start with sqlite:, postgres:// or postgresql://, got {}",
                crate::redact::redact(&store_url)
            );
            return Err(match store_url_span {
                Some(span) => at(span, "store.url", msg),
                None => Error::config(format!("WARREN_STORE_URL {msg}")),
            });
        }
        let store = StoreConfig {
            url: store_url,
            retention: raw
                .store
                .retention
                .unwrap_or(Duration::from_secs(7 * 24 * 3600)),
            max_connections: match raw.store.max_connections {
                Some(n) if *n.get_ref() == 0 => {
                    return Err(at(
                        n.span(),
                        "store.max_connections",
                        "must be at least 1".to_owned(),
                    ));
                }
                Some(n) => n.into_inner(),
                None => 16,
            },
            statement_timeout: raw
                .store
                .statement_timeout
                .unwrap_or(Duration::from_secs(10)),
        };
        let worker = WorkerConfig {
            shutdown_grace: raw.worker.shutdown_grace.unwrap_or(Duration::from_secs(30)),
            retry_sweep_after: raw
                .worker
                .retry_sweep_after
                .unwrap_or(Duration::from_secs(30)),
        };
        if worker.retry_sweep_after < Duration::from_secs(1) {
            return Err(Error::config(format!(
                "invalid config {file}: `worker.retry_sweep_after` must be at least 1s, got {}",
                humantime::format_duration(worker.retry_sweep_after)
            )));
        }
        let mut tokens = crate::auth::Tokens::default();
        if let Some(text) = &env.api_tokens {
            tokens.add(text, "WARREN_API_TOKENS")?;
        }
        if let Some(f) = &raw.auth.tokens_file {
            tokens.add_file(&base_dir.join(f))?;
        }
        let auth = AuthConfig {
            tokens,
            insecure_no_auth: false,
        };

        let mut queues = BTreeMap::new();
        for (name, q) in raw.queues {
            let span = name.span();
            let name = name.into_inner();
            validate_queue_name(&name)
                .map_err(|msg| at(span.clone(), &format!("queues.{name}"), msg))?;
            let key = |k: &str| format!("queues.{name}.{k}");
            let handler_span = q.handler.span();
            const EXPECTED_HANDLER: &str = "expected \"noop\", { exec = [\"program\", \"args\"…] }, { http = \"https://…\" } or { rust = \"name\" }";
            let table = match q.handler.into_inner() {
                RawHandler::Name(n) if n == "noop" => None,
                RawHandler::Name(n) => {
                    return Err(at(
                        handler_span,
                        &key("handler"),
                        format!("unknown handler \"{n}\"; {EXPECTED_HANDLER}"),
                    ));
                }
                RawHandler::Table(t) => Some(t),
            };
            let kinds = table.as_ref().map_or(0, |t| {
                usize::from(t.exec.is_some())
                    + usize::from(t.http.is_some())
                    + usize::from(t.rust.is_some())
            });
            if table.is_some() && kinds != 1 {
                return Err(at(
                    handler_span,
                    &key("handler"),
                    format!("give exactly one of `exec`, `http` and `rust`; {EXPECTED_HANDLER}"),
                ));
            }
            if let Some(t) = &table
                && t.http.is_none()
                && let Some((span, k)) = t
                    .signing_secret_env
                    .as_ref()
                    .map(|s| (s.span(), "signing_secret_env"))
                    .or_else(|| {
                        t.signing_secret_file
                            .as_ref()
                            .map(|s| (s.span(), "signing_secret_file"))
                    })
            {
                return Err(at(
                    span,
                    &key(&format!("handler.{k}")),
                    "goes with an `http` handler only (it signs the requests)".to_owned(),
                ));
            }
            let handler = match table {
                None => HandlerSpec::Noop,
                Some(RawHandlerTable {
                    http: Some(url),
                    signing_secret_env,
                    signing_secret_file,
                    ..
                }) => {
                    let parsed = reqwest::Url::parse(&url)
                        .ok()
                        .filter(|u| matches!(u.scheme(), "http" | "https"));
                    let Some(url) = parsed else {
                        return Err(at(
                            handler_span,
                            &key("handler.http"),
                            format!("`{}` is not an http(s) URL", crate::redact::redact(&url)),
                        ));
                    };
                    let signing =
                        signing_secrets(signing_secret_env, signing_secret_file, &base_dir, var)
                            .map_err(|(span, k, msg)| {
                                at(span, &key(&format!("handler.{k}")), msg)
                            })?;
                    HandlerSpec::Http { url, signing }
                }
                Some(RawHandlerTable {
                    exec: Some(argv), ..
                }) => {
                    let mut argv = argv.into_iter();
                    let Some(program) = argv.next().filter(|p| !p.is_empty()) else {
                        return Err(at(
                            handler_span,
                            &key("handler.exec"),
                            "needs at least the program, e.g. [\"workers/examples/report.sh\"]"
                                .to_owned(),
                        ));
                    };
                    let resolved = base_dir.join(&program);
                    check_executable(&resolved).map_err(|msg| {
                        at(
                            handler_span.clone(),
                            &key("handler.exec"),
                            format!(
                                "program `{program}` {msg} (looked at {})",
                                resolved.display()
                            ),
                        )
                    })?;
                    HandlerSpec::Exec {
                        program: resolved,
                        args: argv.collect(),
                    }
                }
                Some(RawHandlerTable { rust: Some(n), .. }) => HandlerSpec::Rust(n),
                Some(_) => {
                    unreachable!("exactly one of exec, http and rust is set (checked above)")
                }
            };
            let prefetch = q.prefetch.map_or(32, |n| n.get());
            let backoff = match q.backoff {
                Some(b) => {
                    let span = b.span();
                    let b = b.into_inner();
                    if b.base.is_zero() || b.base > b.max {
                        return Err(at(
                            span,
                            &key("backoff"),
                            format!(
                                "base must be > 0 and <= max (got base {:?}, max {:?})",
                                b.base, b.max
                            ),
                        ));
                    }
                    b
                }
                None => Backoff::default(),
            };
            let timeout = q.timeout.unwrap_or(Duration::from_secs(30));
            if timeout.is_zero() {
                return Err(at(
                    span,
                    &key("timeout"),
                    "must be greater than 0".to_owned(),
                ));
            }
            let replicas = match q.replicas {
                Some(n) if *n.get_ref() == 0 => {
                    return Err(at(
                        n.span(),
                        &key("replicas"),
                        "must be at least 1 (the RabbitMQ nodes that hold a copy of the queue)"
                            .to_owned(),
                    ));
                }
                Some(n) => n.into_inner(),
                None => DEFAULT_REPLICAS,
            };
            let rate_limit = match q.rate_limit {
                None => None,
                Some(r) => {
                    let span = r.span();
                    let r = r.into_inner();
                    if !(r.per_second.is_finite() && r.per_second > 0.0) {
                        return Err(at(
                            span,
                            &key("rate_limit.per_second"),
                            format!(
                                "must be a number greater than 0 (starts per second), got {}",
                                r.per_second
                            ),
                        ));
                    }
                    let burst = match r.burst {
                        None => (r.per_second.ceil() as u32).max(1),
                        Some(b) if b < 1 || b > i64::from(u32::MAX) => {
                            return Err(at(
                                span,
                                &key("rate_limit.burst"),
                                format!(
                                    "must be at least 1 (the bucket's size in starts), got {b}"
                                ),
                            ));
                        }
                        Some(b) => u32::try_from(b).unwrap_or(u32::MAX),
                    };
                    Some(RateLimit {
                        per_second: r.per_second,
                        burst,
                    })
                }
            };
            let concurrency_key = match q.concurrency_key {
                None => None,
                Some(p) => {
                    let span = p.span();
                    let p = p.into_inner();
                    crate::concurrency_key::check_pointer(&p)
                        .map_err(|msg| at(span, &key("concurrency_key"), msg))?;
                    Some(p)
                }
            };
            let concurrency_per_key = match q.concurrency_per_key {
                Some(n) => {
                    let span = n.span();
                    let n = n.into_inner();
                    if n < 1 || n > i64::from(u32::MAX) {
                        return Err(at(
                            span,
                            &key("concurrency_per_key"),
                            format!("must be at least 1 (jobs per key running at once), got {n}"),
                        ));
                    }
                    Some(u32::try_from(n).unwrap_or(u32::MAX))
                }
                None => concurrency_key.as_ref().map(|_| 1),
            };
            let cfg = QueueConfig {
                name: name.clone(),
                handler,
                prefetch,
                concurrency: q.concurrency.map_or(usize::from(prefetch), |n| n.get()),
                max_attempts: q.max_attempts.map_or(5, |n| n.get()),
                backoff,
                timeout,
                queue_type: q.queue_type.unwrap_or_default(),
                max_length: q.max_length.map(|n| n.get()),
                max_payload_bytes: q.max_payload_bytes.map_or(256 * 1024, |n| n.get()),
                delivery_limit: q.delivery_limit.map_or(20, |n| n.get()),
                replicas,
                rate_limit,
                concurrency_key,
                concurrency_per_key,
            };
            queues.insert(name, cfg);
        }
        if queues.is_empty() {
            return Err(Error::config(format!(
                "invalid config {file}: no queues configured; add a [queues.NAME] table"
            )));
        }

        let mut schedules = BTreeMap::new();
        for (name, raw) in raw.schedules {
            let span = name.span();
            let name = name.into_inner();
            validate_schedule_name(&name)
                .map_err(|msg| at(span.clone(), &format!("schedules.{name}"), msg))?;
            let schedule = crate::schedule::Schedule::from_raw(&name, raw, |q| {
                queues.get(q).map(|q: &QueueConfig| q.max_payload_bytes)
            })
            .map_err(|i| at(i.span, &format!("schedules.{name}.{}", i.key), i.message))?;
            if let Some(pointer) = queues
                .get(&schedule.queue)
                .and_then(|q| q.concurrency_key.as_deref())
                && crate::concurrency_key::key_at(&schedule.payload, pointer).is_none()
            {
                return Err(at(
                    span,
                    &format!("schedules.{name}.payload"),
                    format!(
                        "queue `{}` limits jobs per concurrency key, and the payload has no string, number or boolean at `{pointer}`",
                        schedule.queue
                    ),
                ));
            }
            schedules.insert(name, schedule);
        }
        Ok(Config {
            path: path.to_path_buf(),
            base_dir,
            broker,
            http: HttpConfig { bind },
            store,
            worker,
            auth,
            queues,
            schedules,
        })
    }

    /// Warnings about settings that will misbehave: a queue `timeout` not below the broker's
    /// `consumer_timeout` (the broker would close the channel before the job times out).
    pub fn warnings(&self) -> Vec<String> {
        self.queues
            .values()
            .filter(|q| q.timeout >= self.broker.consumer_timeout)
            .map(|q| {
                format!(
                    "queue `{}`: timeout {} ms is not below the broker's consumer_timeout {} ms; \
                     a job that runs that long loses its delivery. Lower the timeout or raise \
                     consumer_timeout in rabbitmq.conf (and broker.consumer_timeout here)",
                    q.name,
                    q.timeout.as_millis(),
                    self.broker.consumer_timeout.as_millis()
                )
            })
            .collect()
    }

    /// The queue called `name`, if configured.
    pub fn queue(&self, name: &str) -> Option<&QueueConfig> {
        self.queues.get(name)
    }

    /// How to open the configured store: its resolved URL and pool settings.
    pub fn store_options(&self) -> crate::store::OpenOptions {
        crate::store::OpenOptions {
            url: self.resolved_store_url(),
            max_connections: self.store.max_connections,
            statement_timeout: self.store.statement_timeout,
            migrate: true,
        }
    }

    /// The store URL with a relative SQLite path resolved against the config file's directory.
    pub fn resolved_store_url(&self) -> String {
        match self.store.url.strip_prefix("sqlite://") {
            Some(p) if !p.starts_with('/') && !p.starts_with(":memory:") => {
                format!("sqlite://{}", self.base_dir.join(p).display())
            }
            _ => self.store.url.clone(),
        }
    }
}

/// The signer of an `http` handler from its `signing_secret_env` or `signing_secret_file`
/// (`None` without either), or the span, the key and the message of the error. The secrets
/// are read now, so that a missing variable or file stops warren at start-up; no error text
/// quotes a secret.
#[allow(clippy::type_complexity)]
fn signing_secrets(
    env: Option<Spanned<String>>,
    file: Option<Spanned<PathBuf>>,
    base_dir: &Path,
    var: &dyn Fn(&str) -> Option<std::ffi::OsString>,
) -> std::result::Result<
    Option<warren_workers::WebhookSigner>,
    (std::ops::Range<usize>, &'static str, String),
> {
    const ENV: &str = "signing_secret_env";
    const FILE: &str = "signing_secret_file";
    match (env, file) {
        (None, None) => Ok(None),
        (Some(_), Some(file)) => Err((
            file.span(),
            FILE,
            format!("give `{ENV}` or `{FILE}`, not both"),
        )),
        (Some(name), None) => {
            let span = name.span();
            let name = name.into_inner();
            let valid_name = !name.is_empty()
                && !name.contains('=')
                && !name.contains('\0')
                && !name.chars().any(char::is_whitespace);
            if !valid_name {
                return Err((
                    span,
                    ENV,
                    format!("`{name}` is not an environment variable name"),
                ));
            }
            let value = match var(&name) {
                None => {
                    return Err((
                        span,
                        ENV,
                        format!(
                            "the environment variable {name} is not set; set it to the webhook signing secret (`whsec_…`)"
                        ),
                    ));
                }
                Some(v) => v.into_string().map_err(|_| {
                    (
                        span.clone(),
                        ENV,
                        format!("the environment variable {name} is not valid UTF-8"),
                    )
                })?,
            };
            warren_workers::WebhookSigner::from_secrets(&value)
                .map(Some)
                .map_err(|e| (span, ENV, format!("the environment variable {name}: {e}")))
        }
        (None, Some(path)) => {
            let span = path.span();
            let resolved = base_dir.join(path.get_ref());
            let text = std::fs::read_to_string(&resolved).map_err(|e| {
                (
                    span.clone(),
                    FILE,
                    format!("cannot read {}: {e}", resolved.display()),
                )
            })?;
            warren_workers::WebhookSigner::from_secrets(&text)
                .map(Some)
                .map_err(|e| (span, FILE, format!("{}: {e}", resolved.display())))
        }
    }
}

/// 1-based line number of byte `offset` in `text`.
fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()
        .iter()
        .take(offset)
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// Queue names become RabbitMQ queue names (max 255 bytes; `amq.` is reserved by the broker)
/// and appear in URLs, so they are limited to `[A-Za-z0-9_.-]`, 1–200 bytes, and must not
/// collide with warren's own names.
fn validate_queue_name(name: &str) -> std::result::Result<(), String> {
    if name.is_empty() || name.len() > 200 {
        return Err("queue names must be 1 to 200 characters".to_owned());
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
    {
        return Err("queue names may only contain letters, digits, '_', '-' and '.'".to_owned());
    }
    if name.starts_with("amq.") || name.starts_with("warren.") || name.ends_with(".dlq") {
        return Err(
            "queue names must not start with `amq.` or `warren.` nor end with `.dlq` (reserved)"
                .to_owned(),
        );
    }
    Ok(())
}

/// A schedule's name, as [`crate::schedule::is_valid_name`] allows it.
fn validate_schedule_name(name: &str) -> std::result::Result<(), String> {
    if crate::schedule::is_valid_name(name) {
        Ok(())
    } else {
        Err("schedule names are 1 to 100 letters, digits, '_', '-' and '.'".to_owned())
    }
}

fn check_executable(path: &Path) -> std::result::Result<(), &'static str> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).map_err(|_| "does not exist")?;
    if !meta.is_file() {
        return Err("is not a file");
    }
    if meta.permissions().mode() & 0o111 == 0 {
        return Err("is not executable (chmod +x it)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config> {
        Config::parse(
            text,
            Path::new("/nonexistent/queues.toml"),
            &EnvOverrides::default(),
        )
    }

    fn err(text: &str) -> String {
        match parse(text) {
            Ok(_) => panic!("expected an error for:\n{text}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn minimal_queue_gets_documented_defaults() {
        let c = parse("[queues.mail]\nhandler = \"noop\"\n").expect("valid config");
        let q = c.queue("mail").expect("queue mail");
        assert_eq!(q.handler, HandlerSpec::Noop);
        assert_eq!(q.prefetch, 32);
        assert_eq!(q.concurrency, 32);
        assert_eq!(q.max_attempts, 5);
        assert_eq!(q.timeout, Duration::from_secs(30));
        assert_eq!(q.queue_type, QueueType::Quorum);
        assert_eq!(q.backoff, Backoff::default());
        assert_eq!(c.http.bind, "127.0.0.1:8080".parse().expect("addr"));
        assert_eq!(c.store.retention, Duration::from_secs(7 * 86400));
        assert_eq!(c.worker.retry_sweep_after, Duration::from_secs(30));
    }

    #[test]
    fn broker_url_is_one_url_or_a_list() {
        let c =
            parse("[broker]\nurl = \"amqp://a:1\"\n[queues.a]\nhandler = \"noop\"\n").expect("one");
        assert_eq!(c.broker.urls, ["amqp://a:1"]);
        let c = parse(
            "[broker]\nurl = [\"amqp://a:1\", \"amqp://b:2\"]\n[queues.a]\nhandler = \"noop\"\n",
        )
        .expect("list");
        assert_eq!(c.broker.urls, ["amqp://a:1", "amqp://b:2"]);
        let env = EnvOverrides {
            amqp_url: Some("amqp://x:1, amqp://y:2,".into()),
            ..EnvOverrides::default()
        };
        let c = Config::parse(
            "[queues.a]\nhandler = \"noop\"\n",
            Path::new("q.toml"),
            &env,
        )
        .expect("env list");
        assert_eq!(c.broker.urls, ["amqp://x:1", "amqp://y:2"]);
        let e =
            err("[broker]\nurl = [\"amqp://a:1\", \"http://b\"]\n[queues.a]\nhandler = \"noop\"\n");
        assert!(e.contains("amqp://"), "{e}");
        let e = err("[broker]\nurl = []\n[queues.a]\nhandler = \"noop\"\n");
        assert!(e.contains("names no URL"), "{e}");
    }

    #[test]
    fn retry_sweep_after_is_at_least_a_second() {
        let c = parse("[worker]\nretry_sweep_after = \"5s\"\n[queues.a]\nhandler = \"noop\"\n")
            .expect("valid");
        assert_eq!(c.worker.retry_sweep_after, Duration::from_secs(5));
        let e = err("[worker]\nretry_sweep_after = \"200ms\"\n[queues.a]\nhandler = \"noop\"\n");
        assert!(e.contains("worker.retry_sweep_after"), "{e}");
        assert!(e.contains("at least 1s"), "{e}");
    }

    #[test]
    fn durations_and_types_parse() {
        let c = parse(
            "[queues.a]\nhandler = { http = \"http://127.0.0.1:9/hook\" }\ntimeout = \"2m\"\nbackoff = { base = \"500ms\", max = \"1h\" }\ntype = \"classic\"\nprefetch = 4\n",
        )
        .expect("valid");
        let q = c.queue("a").expect("a");
        assert_eq!(q.timeout, Duration::from_secs(120));
        assert_eq!(q.backoff.base, Duration::from_millis(500));
        assert_eq!(q.backoff.max, Duration::from_secs(3600));
        assert_eq!(q.queue_type, QueueType::Classic);
        assert_eq!(q.concurrency, 4);
    }

    #[test]
    fn unknown_key_names_key_and_line() {
        let e = err("[queues.a]\nhandler = \"noop\"\nprefetchh = 3\n");
        assert!(e.contains("line 3"), "{e}");
        assert!(e.contains("prefetchh"), "{e}");
        assert!(e.contains("/nonexistent/queues.toml"), "{e}");
    }

    #[test]
    fn bad_values_name_line() {
        let e = err("[queues.a]\nhandler = \"noop\"\ntimeout = \"soon\"\n");
        assert!(e.contains("line 3"), "{e}");
        let e = err("[queues.a]\nhandler = \"noop\"\nprefetch = 0\n");
        assert!(e.contains("line 3"), "{e}");
        let e = err("[queues.a]\nhandler = \"noop\"\ntype = \"stream\"\n");
        assert!(e.contains("line 3"), "{e}");
        let e = err("[queues.a]\nhandler = \"magic\"\n");
        assert!(
            e.contains("line 2") && e.contains("queues.a.handler"),
            "{e}"
        );
        let e = err("[queues.a]\nhandler = \"noop\"\nbackoff = { base = \"1m\", max = \"1s\" }\n");
        assert!(
            e.contains("line 3") && e.contains("queues.a.backoff"),
            "{e}"
        );
    }

    #[test]
    fn missing_exec_program_is_an_error_naming_it() {
        let e = err("\n[queues.a]\nhandler = { exec = [\"nope.sh\"] }\n");
        assert!(e.contains("line 3"), "{e}");
        assert!(e.contains("nope.sh") && e.contains("does not exist"), "{e}");
    }

    #[test]
    fn reserved_queue_names_are_rejected() {
        let e = err("[queues.\"x.dlq\"]\nhandler = \"noop\"\n");
        assert!(e.contains("reserved"), "{e}");
        let e = err("[queues.\"a/b\"]\nhandler = \"noop\"\n");
        assert!(e.contains("may only contain"), "{e}");
    }

    #[test]
    fn env_overrides_win() {
        let env = EnvOverrides {
            amqp_url: Some("amqp://u:p@h:1/%2f".into()),
            bind: Some("0.0.0.0:9999".into()),
            store_url: Some("sqlite:///tmp/x.db".into()),
            api_tokens: Some("admin:0123456789abcdef0123456789abcdef".into()),
        };
        let c = Config::parse(
            "[broker]\nurl = \"amqp://a@b\"\n[queues.a]\nhandler = \"noop\"\n",
            Path::new("q.toml"),
            &env,
        )
        .expect("valid");
        assert_eq!(c.broker.urls, ["amqp://u:p@h:1/%2f"]);
        assert_eq!(c.http.bind.port(), 9999);
        assert_eq!(c.resolved_store_url(), "sqlite:///tmp/x.db");
        assert_eq!(
            c.auth.tokens.scope_of("0123456789abcdef0123456789abcdef"),
            Some(crate::auth::Scope::Admin)
        );
    }

    #[test]
    fn relative_sqlite_path_resolves_against_config_dir() {
        let c = Config::parse(
            "[queues.a]\nhandler = \"noop\"\n",
            Path::new("/etc/warren/queues.toml"),
            &EnvOverrides::default(),
        )
        .expect("valid");
        assert_eq!(c.resolved_store_url(), "sqlite:///etc/warren/warren.db");
    }

    #[test]
    fn store_settings_are_read_and_checked_naming_the_line() {
        let c = parse(
            "[store]\nurl = \"postgres://w:secret@db:5432/warren\"\nmax_connections = 4\nstatement_timeout = \"3s\"\n[queues.a]\nhandler = \"noop\"\n",
        )
        .expect("valid");
        let opts = c.store_options();
        assert_eq!(opts.url, "postgres://w:secret@db:5432/warren");
        assert_eq!(
            (opts.max_connections, opts.statement_timeout),
            (4, Duration::from_secs(3))
        );
        let defaults = parse("[queues.a]\nhandler = \"noop\"\n")
            .expect("valid")
            .store_options();
        assert_eq!(
            (defaults.max_connections, defaults.statement_timeout),
            (16, Duration::from_secs(10))
        );
        for (text, key, line) in [
            (
                "[queues.a]\nhandler = \"noop\"\n[store]\nurl = \"mysql://u:secret@h/db\"\n",
                "store.url",
                4,
            ),
            (
                "[store]\nmax_connections = 0\n[queues.a]\nhandler = \"noop\"\n",
                "store.max_connections",
                2,
            ),
        ] {
            let err = Config::parse(text, Path::new("q.toml"), &EnvOverrides::default())
                .expect_err("refused")
                .to_string();
            assert!(err.contains(&format!("line {line}: `{key}`")), "{err}");
            assert!(!err.contains("secret"), "{err}");
        }
        let env = EnvOverrides {
            store_url: Some("redis://x".into()),
            ..EnvOverrides::default()
        };
        let err = Config::parse(
            "[queues.a]\nhandler = \"noop\"\n",
            Path::new("q.toml"),
            &env,
        )
        .expect_err("refused")
        .to_string();
        assert!(err.contains("WARREN_STORE_URL must start with"), "{err}");
    }

    #[test]
    fn timeouts_at_or_past_consumer_timeout_are_warned_about() {
        let c = parse(
            "[broker]\nconsumer_timeout = \"1m\"\n[queues.a]\nhandler = \"noop\"\ntimeout = \"2m\"\n[queues.b]\nhandler = \"noop\"\ntimeout = \"10s\"\n",
        )
        .expect("valid");
        let w = c.warnings();
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].contains("`a`") && w[0].contains("120000 ms") && w[0].contains("60000 ms"),
            "{w:?}"
        );
    }

    #[test]
    fn management_url_must_be_http() {
        let e = err(
            "[broker]\nmanagement_url = \"ftp://mgmt:15672\"\n[queues.a]\nhandler = \"noop\"\n",
        );
        assert!(e.contains("broker.management_url"), "{e}");
        let c = parse(
            "[broker]\nmanagement_url = \"http://mgmt:15672\"\n[queues.a]\nhandler = \"noop\"\n",
        )
        .expect("valid");
        assert_eq!(
            c.broker.management_url.as_deref(),
            Some("http://mgmt:15672")
        );
    }

    #[test]
    fn replicas_default_to_three_and_zero_is_refused_naming_the_line() {
        let c =
            parse("[queues.a]\nhandler = \"noop\"\n[queues.b]\nhandler = \"noop\"\nreplicas = 5\n")
                .expect("valid");
        assert_eq!(c.queue("a").expect("a").replicas, 3);
        assert_eq!(c.queue("b").expect("b").replicas, 5);
        let c = parse("[queues.a]\nhandler = \"noop\"\nreplicas = 1\ntype = \"classic\"\n")
            .expect("valid");
        assert_eq!(c.queue("a").expect("a").replicas, 1);
        let e = err("[queues.a]\nhandler = \"noop\"\nreplicas = 0\n");
        assert!(e.contains("line 3: `queues.a.replicas`"), "{e}");
        assert!(e.contains("at least 1"), "{e}");
        let e = err("[queues.a]\nhandler = \"noop\"\n\nreplicas = -2\n");
        assert!(e.contains("line 4"), "{e}");
        let e = err("[queues.a]\nhandler = \"noop\"\nreplicas = \"three\"\n");
        assert!(e.contains("line 3"), "{e}");
    }

    const SECRET_A: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
    const SECRET_B: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    /// Parses `text` as `dir/queues.toml` with `vars` as the environment of
    /// `signing_secret_env`.
    fn parse_vars(text: &str, dir: &Path, vars: &[(&str, &str)]) -> Result<Config> {
        let vars: BTreeMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Config::parse_with(
            text,
            &dir.join("queues.toml"),
            &EnvOverrides::default(),
            &|name| vars.get(name).map(Into::into),
        )
    }

    fn signer_of(c: &Config, queue: &str) -> Option<warren_workers::WebhookSigner> {
        match &c.queue(queue).expect("queue").handler {
            HandlerSpec::Http { signing, .. } => signing.clone(),
            other => panic!("not an http handler: {other:?}"),
        }
    }

    #[test]
    fn http_handlers_read_their_signing_secrets_from_a_variable_or_a_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join("hook.secret"),
            format!("# rotating: old, then new\n{SECRET_A}\n{SECRET_B}\n"),
        )
        .expect("write secret file");
        let c = parse_vars(
            "[queues.a]\nhandler = { http = \"http://127.0.0.1:9/h\", signing_secret_env = \"HOOK_SECRET\" }\n\
             [queues.b]\nhandler = { http = \"http://127.0.0.1:9/h\", signing_secret_file = \"hook.secret\" }\n\
             [queues.c]\nhandler = { http = \"http://127.0.0.1:9/h\" }\n",
            dir.path(),
            &[("HOOK_SECRET", &format!("{SECRET_A} {SECRET_B}"))],
        )
        .expect("valid");
        assert_eq!(signer_of(&c, "a").map(|s| s.secrets()), Some(2));
        assert_eq!(signer_of(&c, "b").map(|s| s.secrets()), Some(2));
        assert!(signer_of(&c, "c").is_none());
        let debug = format!("{c:?}");
        assert!(
            !debug.contains("C2FV") && !debug.contains("MfKQ"),
            "{debug}"
        );
    }

    #[test]
    fn a_missing_or_bad_signing_secret_is_an_error_naming_where_it_was_looked_for() {
        let dir = tempfile::tempdir().expect("tempdir");
        let hook = |extra: &str| {
            format!(
                "[queues.a]\nhandler = \"noop\"\n\n[queues.w]\nhandler = {{ http = \"http://127.0.0.1:9/h\", {extra} }}\n"
            )
        };
        let errs = [
            (
                hook("signing_secret_env = \"HOOK_SECRET\""),
                vec![],
                "is not set",
            ),
            (
                hook("signing_secret_env = \"HOOK_SECRET\""),
                vec![("HOOK_SECRET", "C2FVsBQIhrscChlQIMV+b5sSYspob7oD")],
                "does not start with `whsec_`",
            ),
            (
                hook("signing_secret_env = \"HOOK_SECRET\""),
                vec![("HOOK_SECRET", "  ")],
                "holds no secret",
            ),
            (
                hook("signing_secret_env = \"HOOK_SECRET\""),
                vec![("HOOK_SECRET", "whsec_C2FVsBQIhrscChlQ")],
                "decodes to 12 bytes",
            ),
            (
                hook("signing_secret_file = \"nope.secret\""),
                vec![],
                "nope.secret",
            ),
            (
                hook("signing_secret_env = \"HOOK_SECRET\", signing_secret_file = \"x\""),
                vec![("HOOK_SECRET", SECRET_A)],
                "not both",
            ),
        ];
        for (text, vars, want) in errs {
            let e = parse_vars(&text, dir.path(), &vars)
                .expect_err(&text)
                .to_string();
            assert!(e.contains(want), "{e}");
            assert!(
                e.contains("line 5: `queues.w.handler.signing_secret_"),
                "{e}"
            );
            assert!(!e.contains("C2FV"), "the error quotes the secret: {e}");
            if e.contains("HOOK_SECRET") {
                assert!(e.contains("environment variable HOOK_SECRET"), "{e}");
            }
        }
    }

    #[test]
    fn handler_tables_name_the_bad_key_and_line() {
        let e = err(
            "[queues.a]\nhandler = \"noop\"\n[queues.b]\nhandler = { http = \"http://h/\", signing_secret = \"x\" }\n",
        );
        assert!(e.contains("line 4") && e.contains("signing_secret"), "{e}");
        assert!(
            e.contains("signing_secret_env"),
            "lists the known keys: {e}"
        );
        let e = err("[queues.a]\nhandler = { http = \"http://h/\", rust = \"x\" }\n");
        assert!(
            e.contains("line 2: `queues.a.handler`") && e.contains("exactly one"),
            "{e}"
        );
        let e = err("[queues.a]\nhandler = { rust = \"x\", signing_secret_env = \"S\" }\n");
        assert!(
            e.contains("line 2: `queues.a.handler.signing_secret_env`")
                && e.contains("`http` handler only"),
            "{e}"
        );
        let e = err("[queues.a]\nhandler = { http = 3 }\n");
        assert!(e.contains("line 2"), "{e}");
        let e = err("[queues.a]\nhandler = {}\n");
        assert!(e.contains("line 2") && e.contains("exactly one"), "{e}");
        let c = parse("[queues.a]\n[queues.a.handler]\nrust = \"mine\"\n").expect("sub-table");
        assert_eq!(
            c.queue("a").expect("a").handler,
            HandlerSpec::Rust("mine".into())
        );
    }

    #[test]
    fn no_queues_is_an_error() {
        assert!(err("").contains("no queues"));
    }
}
