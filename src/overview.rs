//! The queue overview behind `GET /v1/queues` and `warren queues`: per configured queue, what
//! waits where.
//!
//! Sources, each the most exact one available:
//! - `ready`, `consumers` and `dead` (the `.dlq`'s depth): a passive `queue.declare` on the
//!   broker, exact at the moment of asking (nothing is created);
//! - `unacked`: the RabbitMQ management API (`GET /api/queues/{vhost}`), which AMQP does not
//!   report; its statistics lag by up to the broker's `collect_statistics_interval` (5 s by
//!   default). Without a reachable management API it is `null`, and
//!   [`Overview::management`] says why;
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

/// One work queue's numbers. `null` (`None`) means unknown: the queue does not exist on the
/// broker, or (for `unacked`) the management API could not be asked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
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
    /// Jobs waiting in the delay levels for another attempt (status `retrying` in the store).
    pub retrying: u64,
    /// Dead letters waiting in `{queue}.dlq`.
    pub dead: Option<u64>,
    /// The queue is paused (`POST /v1/queues/{queue}/pause`, `warren queues pause`): its
    /// workers take no deliveries until it is resumed.
    pub paused: bool,
}

/// The overview of every configured queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
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

    /// Per queue of the virtual host: unacked messages as the management API last sampled
    /// them (`GET /api/queues/{vhost}`). A queue whose statistics are not sampled yet maps to
    /// `None`.
    ///
    /// # Errors
    /// [`crate::ErrorKind::BrokerUnavailable`] with a description (no credentials) when the
    /// API cannot be reached in time or does not answer 200 with JSON.
    pub async fn unacked(&self) -> Result<BTreeMap<String, Option<u64>>> {
        #[derive(serde::Deserialize)]
        struct Row {
            name: String,
            messages_unacknowledged: Option<u64>,
        }
        let path = format!(
            "api/queues/{}?columns=name,messages_unacknowledged",
            percent_encode(&self.vhost)
        );
        let rows: Vec<Row> = self
            .get_json(&path)
            .await?
            .ok_or_else(|| self.unavailable("HTTP 404 Not Found".to_owned()))?;
        Ok(rows
            .into_iter()
            .map(|r| (r.name, r.messages_unacknowledged))
            .collect())
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
) -> Result<Overview> {
    let names: Vec<&str> = config.queues.keys().map(String::as_str).collect();
    let inspections = futures::future::try_join_all(names.iter().map(|q| async move {
        let work = inspect(broker, q).await?;
        let dead = inspect(broker, &dlq_name(q)).await?;
        Ok::<_, Error>((work, dead))
    }));
    let management = async {
        match Management::for_node(&config.broker, broker.node_url()) {
            Ok(m) => m.unacked().await,
            Err(e) => Err(e),
        }
    };
    let unroutable = inspect(broker, crate::delay::UNROUTABLE);
    let (inspections, retrying, paused, unacked, unroutable) = tokio::join!(
        inspections,
        store.retrying_counts(),
        store.queues_paused(),
        management,
        unroutable
    );
    let inspections = inspections?;
    let unroutable = unroutable?.messages.map(u64::from);
    let retrying = retrying?;
    let paused = paused?;
    let (unacked, management) = match unacked {
        Ok(u) => (Some(u), "ok".to_owned()),
        Err(e) => (None, crate::redact(&e.to_string())),
    };
    let queues = names
        .iter()
        .zip(inspections)
        .map(|(q, (work, dead))| QueueOverview {
            queue: (*q).to_owned(),
            dlq: dlq_name(q),
            ready: work.messages.map(u64::from),
            unacked: unacked.as_ref().and_then(|u| u.get(*q).copied().flatten()),
            consumers: work.consumers.map(u64::from),
            retrying: retrying.get(*q).copied().unwrap_or(0),
            dead: dead.messages.map(u64::from),
            paused: paused.contains_key(*q),
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
