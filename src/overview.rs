//! The queue overview behind `GET /v1/queues` and `warren queues`: per configured queue, what
//! waits where.
//!
//! Sources, each the most exact one available:
//! - `ready`, `consumers` and `dead` (the `.dlq`'s depth): a passive `queue.declare` on the
//!   broker, exact at the moment of asking (nothing is created);
//! - `unacked` and `rates`: the RabbitMQ management API (`GET /api/queues/{vhost}`), which
//!   AMQP does not report; its statistics lag by up to the broker's
//!   `collect_statistics_interval` (5 s by default), and an intake reuses them for
//!   [`STATS_TTL`]. Without a reachable management API they are `null`, and
//!   [`Overview::management`] says why;
//! - `running`: the store's jobs in status `running` (claimed, lease held), fleet-wide;
//! - `retrying`: the store's jobs in status `retrying`. The delay queues
//!   (`warren.delay.NN`) are shared by every work queue, so their depths cannot be split by
//!   queue; the store knows which job waits for which queue. A job delayed at submission
//!   (`delay_ms`) is `queued`, not `retrying`;
//! - `paused`: the store's paused queues (`crate::admission`): a paused queue's workers take
//!   no deliveries, so `ready` grows and `consumers` is 0.

use std::collections::BTreeMap;
use std::str::FromStr as _;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use serde::Serialize;

use crate::broker::Broker;
use crate::config::{BrokerConfig, Config};
use crate::error::{Error, Result};
use crate::store::Store;
use crate::topology::{dlq_name, inspect};

/// How long a management API request may take.
const MANAGEMENT_TIMEOUT: Duration = Duration::from_secs(3);

/// Queues per page of a management API listing (the API's largest page).
const STATS_PAGE: usize = 500;

/// How long an intake reuses the management API's statistics (half the broker's default
/// `collect_statistics_interval` of 5 s, so nothing shown is staler than the broker's own
/// sampling makes it): any number of dashboard tabs and `GET /v1/queues` callers cost the
/// broker one statistics query per period.
pub const STATS_TTL: Duration = Duration::from_millis(2_500);

/// One queue's statistics from the management API ([`Management::queue_stats`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QueueStats {
    /// Messages delivered and not yet acked; `None` before the broker sampled the queue.
    pub unacked: Option<u64>,
    /// Messages published into the queue.
    pub published: Details,
    /// Messages acked from the queue.
    pub acked: Details,
}

/// A message counter's rate and samples, as the management API reports it
/// (`message_stats.*_details`).
#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize)]
pub struct Details {
    /// Per second, over the broker's last sampling interval.
    #[serde(default)]
    pub rate: f64,
    /// The counter's cumulative value at sample times, newest first.
    #[serde(default)]
    pub samples: Vec<Sample>,
}

/// One sample of a cumulative counter.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
pub struct Sample {
    /// The counter's value.
    pub sample: u64,
    /// When it was taken (ms since the Unix epoch).
    pub timestamp: i64,
}

impl Details {
    /// The counter's increase between consecutive samples, oldest first (per minute for
    /// the overview's 60 s samples); empty without samples.
    pub fn per_interval(&self) -> Vec<u64> {
        let mut s = self.samples.clone();
        s.sort_by_key(|x| x.timestamp);
        s.windows(2)
            .map(|w| w[1].sample.saturating_sub(w[0].sample))
            .collect()
    }
}

/// The management API's statistics, kept for [`STATS_TTL`] by an intake so concurrent and
/// repeated overviews share one query.
#[derive(Default)]
pub struct StatsCache {
    kept: tokio::sync::Mutex<Option<Kept>>,
}

struct Kept {
    at: std::time::Instant,
    /// The management API the statistics came from (the node in use may change).
    from: String,
    stats: std::result::Result<Arc<BTreeMap<String, QueueStats>>, String>,
}

impl std::fmt::Debug for StatsCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatsCache").finish_non_exhaustive()
    }
}

impl StatsCache {
    /// The statistics of `names` from `management`, fetched unless a fetch from the same API
    /// is younger than [`STATS_TTL`]; a failure is kept as long (its text, credentials
    /// redacted), so an unreachable API is not asked on every refresh either. Callers
    /// arriving during a fetch wait for it rather than send their own.
    async fn get(
        &self,
        management: &Management,
        names: &[String],
    ) -> std::result::Result<Arc<BTreeMap<String, QueueStats>>, String> {
        let mut kept = self.kept.lock().await;
        if let Some(k) = kept.as_ref()
            && k.from == management.url()
            && k.at.elapsed() < STATS_TTL
        {
            return k.stats.clone();
        }
        let stats = management
            .queue_stats(names)
            .await
            .map(Arc::new)
            .map_err(|e| crate::redact(&e.to_string()));
        *kept = Some(Kept {
            at: std::time::Instant::now(),
            from: management.url().to_owned(),
            stats: stats.clone(),
        });
        stats
    }
}

/// One work queue's numbers. `null` (`None`) means unknown: the queue does not exist on the
/// broker, or (for `unacked`) the management API could not be asked.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct QueueOverview {
    /// The work queue's name (as configured).
    #[schema(example = "reports")]
    pub queue: String,
    /// Its dead-letter queue: `{queue}.dlq`.
    #[schema(example = "reports.dlq")]
    pub dlq: String,
    /// Messages ready for delivery in the work queue.
    pub ready: Option<u64>,
    /// Messages delivered to a worker and not yet acked (jobs being worked on or prefetched),
    /// from the management API.
    pub unacked: Option<u64>,
    /// Consumers (worker channels) attached to the work queue.
    pub consumers: Option<u64>,
    /// Jobs running now on any worker of the fleet (status `running` in the store).
    pub running: u64,
    /// Jobs waiting in the delay levels for another attempt (status `retrying` in the store).
    pub retrying: u64,
    /// Dead letters waiting in `{queue}.dlq`.
    pub dead: Option<u64>,
    /// The queue is paused (`POST /v1/queues/{queue}/pause`, `warren queues pause`): its
    /// workers take no deliveries until it is resumed.
    pub paused: bool,
    /// Message rates from the management API; `null` when it could not be asked or has not
    /// sampled the queue yet.
    pub rates: Option<QueueRates>,
    /// The queue's `rate_limit` and its token bucket now (from the store); `null` without a
    /// limit.
    pub rate_limit: Option<RateLimitView>,
    /// The queue's `concurrency_per_key`; `null` without one.
    pub concurrency_per_key: Option<u32>,
    /// Until when (RFC 3339) a target's 429 holds the queue's dispatch across the fleet;
    /// `null` when it is not held.
    pub held_until: Option<String>,
}

/// A queue's rate limit as `GET /v1/queues` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct RateLimitView {
    /// Handler starts per second, fleet-wide.
    pub per_second: f64,
    /// The bucket's size.
    pub burst: u32,
    /// Tokens in the bucket now (refilled to this moment); the full burst before the queue
    /// first took one.
    pub tokens: f64,
}

/// A queue's message rates (from the management API's statistics, so fleet-wide).
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct QueueRates {
    /// Messages published into the work queue per second (new jobs, retries coming back from
    /// the delay levels, requeued dead letters), over the broker's last sampling interval.
    pub in_per_s: f64,
    /// Deliveries acked from the work queue per second: every attempt ends in an ack, whether
    /// it succeeded, is retried or went to the dead-letter queue.
    pub acked_per_s: f64,
    /// Dead letters published into `{queue}.dlq` per second.
    pub dead_per_s: f64,
    /// The last hour minute by minute, oldest first: deliveries acked from the work queue in
    /// each minute (up to 60 entries; fewer for a queue younger than an hour).
    pub acked_last_hour: Vec<u64>,
    /// The last hour minute by minute, oldest first: dead letters into `{queue}.dlq`.
    pub dead_last_hour: Vec<u64>,
}

impl QueueRates {
    fn from_stats(work: &QueueStats, dead: Option<&QueueStats>) -> Self {
        Self {
            in_per_s: work.published.rate,
            acked_per_s: work.acked.rate,
            dead_per_s: dead.map_or(0.0, |d| d.published.rate),
            acked_last_hour: work.acked.per_interval(),
            dead_last_hour: dead.map(|d| d.published.per_interval()).unwrap_or_default(),
        }
    }
}

/// The overview of every configured queue.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Overview {
    /// One entry per configured queue, by name.
    pub queues: Vec<QueueOverview>,
    /// Delayed messages (retries, `delay_ms`) in `warren.unroutable`: their work queue was
    /// gone when their delay ended (see `warren dlq peek warren.unroutable`); `null` when that
    /// queue does not exist yet.
    pub unroutable: Option<u64>,
    /// The broker node this process is connected to (its AMQP URL, password shown as `***`):
    /// on a cluster, each process may use another node.
    #[schema(example = "amqp://guest:***@127.0.0.1:5672/%2f")]
    pub broker_node: String,
    /// `"ok"` when the management API answered (so `unacked` is known), else why not
    /// (credentials never shown).
    #[schema(example = "ok")]
    pub management: String,
}

/// Where the RabbitMQ management API is and how to log in to it.
#[derive(Clone)]
pub struct Management {
    /// Base URL without credentials, ending in `/`.
    base: reqwest::Url,
    user: String,
    password: String,
    /// The AMQP URL's virtual host, e.g. `/`.
    vhost: String,
}

impl std::fmt::Debug for Management {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Management")
            .field("base", &self.base.as_str())
            .field("user", &self.user)
            .field("vhost", &self.vhost)
            .finish_non_exhaustive()
    }
}

impl Management {
    /// The management API of `broker`: `broker.management_url` when set (its credentials,
    /// else the AMQP URL's), else derived from the AMQP URL (same host and credentials; port
    /// 15672 over http, or 15671 over https for `amqps://`). The virtual host is the AMQP
    /// URL's.
    ///
    /// # Errors
    /// [`crate::ErrorKind::Config`] when either URL cannot be parsed.
    pub fn from_config(broker: &BrokerConfig) -> Result<Self> {
        let first = broker.urls.first().map_or("", String::as_str);
        Self::for_node(broker, first)
    }

    /// [`Management::from_config`] for the node at `node_url` (one of `broker.urls`): on a
    /// cluster, the management API of the node a process is connected to, unless
    /// `broker.management_url` names one.
    ///
    /// # Errors
    /// [`crate::ErrorKind::Config`] when either URL cannot be parsed.
    pub fn for_node(broker: &BrokerConfig, node_url: &str) -> Result<Self> {
        let amqp = lapin::uri::AMQPUri::from_str(node_url)
            .map_err(|e| Error::config(format!("broker URL: {}", crate::redact(&e))))?;
        let text = match &broker.management_url {
            Some(u) => u.clone(),
            None => {
                let (scheme, port) = match amqp.scheme {
                    lapin::uri::AMQPScheme::AMQPS => ("https", 15671),
                    lapin::uri::AMQPScheme::AMQP => ("http", 15672),
                };
                let host = if amqp.authority.host.contains(':') {
                    format!("[{}]", amqp.authority.host)
                } else {
                    amqp.authority.host.clone()
                };
                format!("{scheme}://{host}:{port}/")
            }
        };
        let mut base = reqwest::Url::parse(&text).map_err(|e| {
            Error::config(format!(
                "broker.management_url {}: {e}",
                crate::redact(&text)
            ))
        })?;
        let (user, password) = if base.username().is_empty() {
            (
                amqp.authority.userinfo.username.clone(),
                amqp.authority.userinfo.password.clone(),
            )
        } else {
            (
                percent_decode(base.username()),
                percent_decode(base.password().unwrap_or("")),
            )
        };
        let _ = base.set_username("");
        let _ = base.set_password(None);
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        Ok(Self {
            base,
            user,
            password,
            vhost: amqp.vhost,
        })
    }

    /// The base URL, without credentials.
    pub fn url(&self) -> &str {
        self.base.as_str()
    }

    /// The management API's statistics of the queues `names` of the virtual host (one
    /// filtered, paginated `GET /api/queues/{vhost}?name=…&use_regex=true&page=…`, so the
    /// broker computes them for these queues only, however many the virtual host holds):
    /// unacked messages and message rates with per-minute samples over the last hour
    /// (`msg_rates_age=3600&msg_rates_incr=60`; RabbitMQ keeps an hour of 60 s samples by
    /// default, `management.sample_retention_policies`). Statistics lag by up to the broker's
    /// `collect_statistics_interval` (5 s by default). A queue absent from the answer (it does
    /// not exist) is absent from the map.
    ///
    /// # Errors
    /// [`crate::ErrorKind::BrokerUnavailable`] with a description (no credentials) when the
    /// API cannot be reached in time or does not answer 200 with JSON.
    pub async fn queue_stats(&self, names: &[String]) -> Result<BTreeMap<String, QueueStats>> {
        #[derive(serde::Deserialize)]
        struct Page {
            items: Vec<Row>,
            page_count: u32,
        }
        #[derive(serde::Deserialize)]
        struct Row {
            name: String,
            messages_unacknowledged: Option<u64>,
            #[serde(default)]
            message_stats: Option<MessageStats>,
        }
        #[derive(serde::Deserialize)]
        struct MessageStats {
            publish_details: Option<Details>,
            ack_details: Option<Details>,
        }
        let mut out = BTreeMap::new();
        if names.is_empty() {
            return Ok(out);
        }
        // Queue names hold letters, digits, `_`, `-` and `.` only (config validation); `.`
        // is the one regex metacharacter among them.
        let alternatives: Vec<String> = names.iter().map(|n| n.replace('.', "\\.")).collect();
        let regex = format!("^(?:{})$", alternatives.join("|"));
        let mut page = 1;
        loop {
            let path = format!(
                "api/queues/{}?page={page}&page_size={STATS_PAGE}&name={}&use_regex=true\
                 &msg_rates_age=3600&msg_rates_incr=60&columns=name,messages_unacknowledged,\
                 message_stats.publish_details,message_stats.ack_details",
                percent_encode(&self.vhost),
                percent_encode(&regex)
            );
            let answer: Page = self
                .get_json(&path)
                .await?
                .ok_or_else(|| self.unavailable("HTTP 404 Not Found".to_owned()))?;
            for r in answer.items {
                let (published, acked) = r
                    .message_stats
                    .map(|m| (m.publish_details, m.ack_details))
                    .unwrap_or_default();
                out.insert(
                    r.name,
                    QueueStats {
                        unacked: r.messages_unacknowledged,
                        published: published.unwrap_or_default(),
                        acked: acked.unwrap_or_default(),
                    },
                );
            }
            if page >= answer.page_count {
                return Ok(out);
            }
            page += 1;
        }
    }

    /// Where queue `name` of the virtual host lives (`GET /api/queues/{vhost}/{name}`): its
    /// type, and its leader and members for a quorum queue or its node for a classic one.
    /// Taken from the broker's metadata, not sampled statistics, so it is current. `None` when
    /// the queue does not exist.
    ///
    /// # Errors
    /// As [`Management::unacked`].
    pub async fn queue_members(&self, name: &str) -> Result<Option<Members>> {
        let path = format!(
            "api/queues/{}/{}?columns=name,type,node,leader,members,online",
            percent_encode(&self.vhost),
            percent_encode(name)
        );
        self.get_json(&path).await
    }

    /// The `x-quorum-initial-group-size` of every quorum queue of the virtual host (`GET
    /// /api/queues/{vhost}`, the queues' arguments): `None` for a queue declared without it.
    /// Other queue types are left out.
    ///
    /// # Errors
    /// As [`Management::unacked`].
    pub async fn group_sizes(&self) -> Result<BTreeMap<String, Option<i64>>> {
        #[derive(serde::Deserialize)]
        struct Row {
            name: String,
            #[serde(rename = "type", default)]
            queue_type: String,
            #[serde(default)]
            arguments: BTreeMap<String, serde_json::Value>,
        }
        let path = format!(
            "api/queues/{}?columns=name,type,arguments",
            percent_encode(&self.vhost)
        );
        let rows: Vec<Row> = self
            .get_json(&path)
            .await?
            .ok_or_else(|| self.unavailable("HTTP 404 Not Found".to_owned()))?;
        Ok(rows
            .into_iter()
            .filter(|r| r.queue_type == "quorum")
            .map(|r| {
                let size = r
                    .arguments
                    .get(crate::topology::GROUP_SIZE_ARG)
                    .and_then(serde_json::Value::as_i64);
                (r.name, size)
            })
            .collect())
    }

    /// The names of the cluster's nodes, running or not (`GET /api/nodes`; the user needs the
    /// `monitoring` or `administrator` tag). One name on a single node.
    ///
    /// # Errors
    /// As [`Management::unacked`]; an HTTP 401 or 403 when the user may not list nodes.
    pub async fn nodes(&self) -> Result<Vec<String>> {
        #[derive(serde::Deserialize)]
        struct Node {
            name: String,
        }
        let nodes: Vec<Node> = self
            .get_json("api/nodes?columns=name")
            .await?
            .ok_or_else(|| self.unavailable("HTTP 404 Not Found".to_owned()))?;
        Ok(nodes.into_iter().map(|n| n.name).collect())
    }

    /// GETs `path` (relative to the base URL) and parses the JSON answer; `None` on 404.
    async fn get_json<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<Option<T>> {
        let url = format!("{}{path}", self.base);
        let resp = client()
            .get(&url)
            .basic_auth(&self.user, Some(&self.password))
            .send()
            .await
            .map_err(|e| self.unavailable(crate::redact(&e.to_string())))?;
        let status = resp.status();
        if status == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !status.is_success() {
            return Err(self.unavailable(format!("HTTP {status}")));
        }
        let body = resp
            .bytes()
            .await
            .map_err(|e| self.unavailable(crate::redact(&e.to_string())))?;
        serde_json::from_slice(&body)
            .map(Some)
            .map_err(|e| self.unavailable(format!("unexpected answer: {e}")))
    }

    fn unavailable(&self, what: String) -> Error {
        Error::from(crate::ErrorKind::BrokerUnavailable(format!(
            "management API at {}: {what}",
            self.base
        )))
    }
}

/// Where one queue lives, as the management API reports it ([`Management::queue_members`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct Members {
    /// The queue type: `quorum`, `classic` or `stream`.
    #[serde(rename = "type", default)]
    pub queue_type: String,
    /// Quorum queues: the node of the current leader (`None` while there is none, e.g. when
    /// a majority of its members is down).
    #[serde(default)]
    pub leader: Option<String>,
    /// Quorum queues: every node holding a replica, the leader's included. Empty for a
    /// classic queue.
    #[serde(default)]
    pub members: Vec<String>,
    /// Quorum queues: the members whose replica is running.
    #[serde(default)]
    pub online: Vec<String>,
    /// Classic queues: the one node the queue lives on.
    #[serde(default)]
    pub node: Option<String>,
}

impl Members {
    /// One line for `warren topology show`, e.g. `quorum: leader rabbit@a; members rabbit@a,
    /// rabbit@b, rabbit@c (all online)`, or `classic on rabbit@a: not replicated`.
    pub fn summary(&self) -> String {
        match self.queue_type.as_str() {
            "classic" => format!(
                "classic on {}: not replicated",
                self.node.as_deref().unwrap_or("(unknown node)")
            ),
            t => {
                let leader = self.leader.as_deref().filter(|l| !l.is_empty());
                let offline: Vec<&str> = self
                    .members
                    .iter()
                    .filter(|m| !self.online.contains(m))
                    .map(String::as_str)
                    .collect();
                let state = if offline.is_empty() {
                    "all online".to_owned()
                } else {
                    format!("offline: {}", offline.join(", "))
                };
                format!(
                    "{t}: leader {}; members {} ({state})",
                    leader.unwrap_or("none"),
                    self.members.join(", ")
                )
            }
        }
    }
}

/// The shared HTTP client for the management API.
fn client() -> &'static reqwest::Client {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    CLIENT.get_or_init(|| {
        reqwest::Client::builder()
            .timeout(MANAGEMENT_TIMEOUT)
            .connect_timeout(MANAGEMENT_TIMEOUT)
            .build()
            .unwrap_or_default()
    })
}

/// Percent-encodes everything but RFC 3986 unreserved characters (a vhost in a URL path).
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Decodes `%XX` escapes (userinfo of a URL); invalid escapes stay as they are.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(v) = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The overview of every queue in `config` (see the module docs for where each number comes
/// from).
///
/// # Errors
/// [`crate::ErrorKind::BrokerUnavailable`] when the broker cannot be reached;
/// [`crate::ErrorKind::Store`] when the store cannot be read (retrying jobs, paused queues). A management API that cannot be
/// reached is not an error: `unacked` is then `None` and [`Overview::management`] says why.
pub async fn overview(
    config: &Config,
    broker: &Broker,
    store: &Arc<dyn Store>,
    stats: &StatsCache,
) -> Result<Overview> {
    let names: Vec<&str> = config.queues.keys().map(String::as_str).collect();
    let inspections = futures::future::try_join_all(names.iter().map(|q| async move {
        let work = inspect(broker, q).await?;
        let dead = inspect(broker, &dlq_name(q)).await?;
        Ok::<_, Error>((work, dead))
    }));
    let management = async {
        let watched: Vec<String> = names
            .iter()
            .flat_map(|q| [(*q).to_owned(), dlq_name(q)])
            .collect();
        match Management::for_node(&config.broker, broker.node_url()) {
            Ok(m) => stats.get(&m, &watched).await,
            Err(e) => Err(crate::redact(&e.to_string())),
        }
    };
    let unroutable = inspect(broker, crate::delay::UNROUTABLE);
    let now = crate::store::now_ms();
    let limited = config.queues.values().any(|q| q.rate_limit.is_some());
    let buckets = async {
        if limited {
            store.buckets().await
        } else {
            Ok(BTreeMap::new())
        }
    };
    let (inspections, active, paused, stats, unroutable, buckets, holds) = tokio::join!(
        inspections,
        store.active_counts(),
        store.queues_paused(),
        management,
        unroutable,
        buckets,
        store.throttles(now)
    );
    let buckets = buckets?;
    let holds = holds?;
    let inspections = inspections?;
    let unroutable = unroutable?.messages.map(u64::from);
    let active = active?;
    let paused = paused?;
    let (stats, management) = match stats {
        Ok(s) => (Some(s), "ok".to_owned()),
        Err(e) => (None, e),
    };
    let queues = names
        .iter()
        .zip(inspections)
        .map(|(q, (work, dead))| {
            let counts = active.get(*q).copied().unwrap_or_default();
            let work_stats = stats.as_ref().and_then(|s| s.get(*q));
            QueueOverview {
                queue: (*q).to_owned(),
                dlq: dlq_name(q),
                ready: work.messages.map(u64::from),
                unacked: work_stats.and_then(|s| s.unacked),
                consumers: work.consumers.map(u64::from),
                running: counts.running,
                retrying: counts.retrying,
                dead: dead.messages.map(u64::from),
                paused: paused.contains_key(*q),
                rates: work_stats.map(|w| {
                    QueueRates::from_stats(w, stats.as_ref().and_then(|s| s.get(&dlq_name(q))))
                }),
                rate_limit: config
                    .queue(q)
                    .and_then(|c| c.rate_limit)
                    .map(|l| RateLimitView {
                        per_second: l.per_second,
                        burst: l.burst,
                        tokens: buckets
                            .get(*q)
                            .map_or(f64::from(l.burst), |b| b.at(now, l.per_second, l.burst)),
                    }),
                concurrency_per_key: config.queue(q).and_then(|c| c.concurrency_per_key),
                held_until: holds.get(*q).map(|until| crate::store::rfc3339_ms(*until)),
            }
        })
        .collect();
    Ok(Overview {
        queues,
        unroutable,
        broker_node: broker.display_url().to_owned(),
        management,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_become_per_minute_counts_oldest_first() {
        let d: Details = serde_json::from_value(serde_json::json!({
            "rate": 2.5,
            "samples": [
                { "sample": 30, "timestamp": 180_000 },
                { "sample": 10, "timestamp": 60_000 },
                { "sample": 25, "timestamp": 120_000 }
            ]
        }))
        .expect("details");
        assert_eq!(d.per_interval(), vec![15, 5]);
        assert!(Details::default().per_interval().is_empty());
        let work = QueueStats {
            unacked: Some(1),
            published: d.clone(),
            acked: d,
        };
        let r = QueueRates::from_stats(&work, None);
        assert!((r.acked_per_s - 2.5).abs() < f64::EPSILON);
        assert_eq!(r.acked_last_hour, vec![15, 5]);
        assert!(
            r.dead_last_hour.is_empty(),
            "no DLQ statistics, no dead letters"
        );
    }

    fn broker(url: &str, management_url: Option<&str>) -> BrokerConfig {
        BrokerConfig {
            urls: vec![url.to_owned()],
            confirm_timeout: Duration::from_secs(5),
            publish_channels: 1,
            consumer_timeout: Duration::from_secs(1800),
            management_url: management_url.map(str::to_owned),
        }
    }

    #[test]
    fn management_api_is_derived_from_the_amqp_url() {
        let m = Management::from_config(&broker("amqp://ops:s3cret@rabbit:5672/%2f", None))
            .expect("parses");
        assert_eq!(m.url(), "http://rabbit:15672/");
        assert_eq!((m.user.as_str(), m.password.as_str()), ("ops", "s3cret"));
        assert_eq!(m.vhost, "/");
        let m =
            Management::from_config(&broker("amqps://u:p@mq.example/prod", None)).expect("parses");
        assert_eq!(m.url(), "https://mq.example:15671/");
        assert_eq!(m.vhost, "prod");
    }

    #[test]
    fn an_explicit_management_url_wins_and_keeps_its_path() {
        let m = Management::from_config(&broker(
            "amqp://guest:guest@127.0.0.1:5672/%2f",
            Some("https://admin:p%40ss@mgmt.example/rabbitmq"),
        ))
        .expect("parses");
        assert_eq!(m.url(), "https://mgmt.example/rabbitmq/");
        assert_eq!((m.user.as_str(), m.password.as_str()), ("admin", "p@ss"));
        assert!(
            !format!("{m:?}").contains("p@ss"),
            "Debug hides the password"
        );
    }

    #[test]
    fn members_read_as_one_line() {
        let quorum: Members = serde_json::from_str(
            r#"{"name":"q","type":"quorum","leader":"rabbit@a","members":["rabbit@a","rabbit@b","rabbit@c"],"online":["rabbit@a","rabbit@b"]}"#,
        )
        .expect("quorum");
        assert_eq!(
            quorum.summary(),
            "quorum: leader rabbit@a; members rabbit@a, rabbit@b, rabbit@c (offline: rabbit@c)"
        );
        let single: Members = serde_json::from_str(
            r#"{"name":"q","type":"quorum","leader":"rabbit@localhost","members":["rabbit@localhost"],"online":["rabbit@localhost"]}"#,
        )
        .expect("single");
        assert_eq!(
            single.summary(),
            "quorum: leader rabbit@localhost; members rabbit@localhost (all online)"
        );
        let classic: Members =
            serde_json::from_str(r#"{"name":"c","node":"rabbit@a","type":"classic"}"#)
                .expect("classic");
        assert_eq!(classic.summary(), "classic on rabbit@a: not replicated");
    }

    #[test]
    fn vhosts_are_percent_encoded() {
        assert_eq!(percent_encode("/"), "%2F");
        assert_eq!(percent_encode("prod-1"), "prod-1");
        assert_eq!(percent_decode("a%2Fb%zz"), "a/b%zz");
    }
}
