//! The broker connection: a pool of AMQP connections to one RabbitMQ node of a cluster (or
//! the one broker), replaced when broken, moving to another node when the one in use is gone;
//! and the channels warren opens on it.
//!
//! `broker.url` names the cluster's nodes (one URL, or several). Each process shuffles the
//! list once, so that a fleet spreads over the nodes, and connects to the first node that
//! answers, in that order. The pool ([`deadpool`]) hands out live connections and drops a
//! broken one; a new connection tries the node in use first and then the others in turn, so
//! when a node dies or is stopped (`rabbitmqctl stop_app`) the next connection goes to
//! another: a **failover**, logged with both nodes and counted in
//! `warren_broker_failovers_total`. Channels of the dead connection fail, and their users
//! (the publisher, each consumer) open new ones, which land on the new node.
//!
//! With more than one node, each process also keeps a **standby connection**: one idle,
//! already opened connection to another node. A failover takes it rather than making a new
//! connection, whose TCP and AMQP handshakes (and authentication) a cluster that just lost a
//! node can take seconds to answer; a new standby is then opened in the background.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use deadpool::managed::{self, Metrics, PoolConfig, RecycleError, RecycleResult, Timeouts};
use futures::StreamExt as _;
use lapin::{Channel, Connection, ConnectionProperties};
use rand::seq::SliceRandom;
use tracing::{info, warn};

use crate::error::{Error, ErrorKind, Result};
use crate::redact::redact;

/// How long connecting to one node (TCP + AMQP handshake) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a connection attempt to one node runs alone before the next node's attempt starts
/// alongside it (RFC 8305, "Happy Eyeballs", recommends 250 ms between attempts).
const ATTEMPT_HEAD_START: Duration = Duration::from_millis(250);
/// How long one broker RPC (open a channel, declare, qos, consume) may take.
pub(crate) const RPC_TIMEOUT: Duration = Duration::from_secs(10);

/// No node connected yet.
const NONE: usize = usize::MAX;

/// The nodes one process may connect to, and which one it uses.
struct Nodes {
    /// AMQP URLs, shuffled once.
    urls: Vec<String>,
    /// The same, credentials hidden, for messages.
    shown: Vec<String>,
    /// Index in `urls` of the node the newest connection went to ([`NONE`] before the first).
    current: AtomicUsize,
    /// The connection name shown in the management UI.
    name: String,
    /// Why the last attempt to connect to each node failed (for the error when none answers).
    last_errors: Mutex<Vec<Option<String>>>,
    /// The standby connection and the index of its node (see the module's docs).
    standby: Mutex<Option<(usize, Connection)>>,
    /// True while a task is opening a standby connection.
    opening_standby: AtomicBool,
}

impl Nodes {
    /// Connects to the node in use, else to the other nodes in the shuffled order, staggered
    /// like RFC 8305's "Happy Eyeballs": the next node's attempt starts when the one before
    /// it fails, or after [`ATTEMPT_HEAD_START`] without an answer, and the first connection
    /// made wins. A node that was just killed can still accept TCP connections for a few
    /// seconds while its VM exits, and then never answers the AMQP handshake; trying the
    /// others alongside it keeps a failover within about a second.
    ///
    /// Each attempt runs in a task of its own; the attempts still running when one wins are
    /// awaited in the background and any connection they make is closed, so none is left
    /// open without an owner.
    async fn connect(self: &Arc<Self>) -> std::result::Result<Connection, lapin::Error> {
        let n = self.urls.len();
        let current = self.current.load(Ordering::Acquire);
        let start = if current == NONE { 0 } else { current };
        // The node in use first, then the standby's node (its connection is ready at once),
        // then the others in the shuffled order.
        let mut order: Vec<usize> = (0..n).map(|k| (start + k) % n).collect();
        if let Some(s) = self.standby_node()
            && s != start
        {
            order.retain(|&i| i != s);
            order.insert(1, s);
        }
        let mut attempts = futures::stream::FuturesUnordered::new();
        let mut started = 0;
        let mut last = None;
        loop {
            if started < n {
                let at = order[started];
                started += 1;
                let task = match self.take_standby(at) {
                    Some(conn) => tokio::spawn(async move { Ok(conn) }),
                    None => {
                        let nodes = Arc::clone(self);
                        tokio::spawn(async move { nodes.attempt(at).await })
                    }
                };
                attempts.push(async move { (at, task.await) });
            }
            let finished = if started < n {
                match tokio::time::timeout(ATTEMPT_HEAD_START, attempts.next()).await {
                    Ok(finished) => finished,
                    Err(_) => continue,
                }
            } else {
                attempts.next().await
            };
            let Some((at, joined)) = finished else { break };
            let result = joined.unwrap_or_else(|e| {
                Err(lapin::Error::from(lapin::ErrorKind::IOError(Arc::new(
                    std::io::Error::other(format!("connection attempt failed: {e}")),
                ))))
            });
            match result {
                Ok(conn) => {
                    self.connected(current, at);
                    self.keep_standby();
                    if !attempts.is_empty() {
                        tokio::spawn(async move {
                            while let Some((_, joined)) = attempts.next().await {
                                if let Ok(Ok(extra)) = joined {
                                    let _ = extra
                                        .close(200, "another node answered first".into())
                                        .await;
                                }
                            }
                        });
                    }
                    return Ok(conn);
                }
                Err(err) => {
                    if let Ok(mut errors) = self.last_errors.lock() {
                        errors[at] = Some(redact(&err.to_string()));
                    }
                    last = Some(err);
                }
            }
        }
        Err(last.unwrap_or_else(|| {
            lapin::Error::from(lapin::ErrorKind::InvalidConnectionState(
                lapin::ConnectionState::Closed,
            ))
        }))
    }

    /// The node of a live standby connection, if there is one.
    fn standby_node(&self) -> Option<usize> {
        let standby = self.standby.lock().ok()?;
        standby
            .as_ref()
            .filter(|(_, conn)| conn.status().connected())
            .map(|(at, _)| *at)
    }

    /// Takes the standby connection if it goes to node `at` and is still open.
    fn take_standby(&self, at: usize) -> Option<Connection> {
        let mut standby = self.standby.lock().ok()?;
        if standby.as_ref().is_some_and(|(s, _)| *s == at) {
            let (_, conn) = standby.take()?;
            if conn.status().connected() {
                return Some(conn);
            }
        }
        None
    }

    /// Makes sure a standby connection to a node other than the one in use is open or being
    /// opened (in a background task; with one node, nothing). A standby to the node now in
    /// use, or a closed one, is replaced.
    fn keep_standby(self: &Arc<Self>) {
        let n = self.urls.len();
        let current = self.current.load(Ordering::Acquire);
        if n < 2 || current == NONE {
            return;
        }
        if self.standby_node().is_some_and(|at| at != current) {
            return;
        }
        if self.opening_standby.swap(true, Ordering::AcqRel) {
            return;
        }
        let nodes = Arc::clone(self);
        tokio::spawn(async move {
            let old = nodes.standby.lock().ok().and_then(|mut s| s.take());
            if let Some((_, conn)) = old {
                let _ = conn.close(200, "warren: standby replaced".into()).await;
            }
            for k in 1..n {
                let at = (current + k) % n;
                if let Ok(conn) = nodes.attempt(at).await {
                    tracing::debug!(node = %nodes.shown[at], "standby connection open");
                    if let Ok(mut standby) = nodes.standby.lock() {
                        *standby = Some((at, conn));
                    }
                    break;
                }
            }
            nodes.opening_standby.store(false, Ordering::Release);
        });
    }

    /// One attempt to connect to node `at`, bounded by [`CONNECT_TIMEOUT`].
    async fn attempt(&self, at: usize) -> std::result::Result<Connection, lapin::Error> {
        let props = ConnectionProperties::default().with_connection_name(self.name.clone().into());
        match tokio::time::timeout(CONNECT_TIMEOUT, Connection::connect(&self.urls[at], props))
            .await
        {
            Ok(result) => result,
            Err(_) => Err(lapin::Error::from(lapin::ErrorKind::IOError(Arc::new(
                std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no answer within {} ms", CONNECT_TIMEOUT.as_millis()),
                ),
            )))),
        }
    }

    /// Records a connection to node `at`; a move away from node `before` is a failover.
    fn connected(&self, before: usize, at: usize) {
        if before == at {
            return;
        }
        // Several connections may be made at once: only the first to move reports it.
        if self
            .current
            .compare_exchange(before, at, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return;
        }
        if before == NONE {
            info!(node = %self.shown[at], "connected to the broker");
        } else {
            metrics::counter!(crate::telemetry::BROKER_FAILOVERS).increment(1);
            warn!(from = %self.shown[before], to = %self.shown[at], "broker node lost; connected to another node");
        }
    }

    /// Why each node could not be reached, for an error message.
    fn why(&self) -> String {
        let errors = self
            .last_errors
            .lock()
            .map(|e| e.clone())
            .unwrap_or_default();
        self.shown
            .iter()
            .zip(errors)
            .map(|(node, e)| format!("{node}: {}", e.unwrap_or_else(|| "not tried".to_owned())))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// The pool's manager: makes connections through [`Nodes`], recycles the live ones.
struct NodeManager(Arc<Nodes>);

impl managed::Manager for NodeManager {
    type Type = Connection;
    type Error = lapin::Error;

    async fn create(&self) -> std::result::Result<Connection, lapin::Error> {
        self.0.connect().await
    }

    async fn recycle(&self, conn: &mut Connection, _: &Metrics) -> RecycleResult<lapin::Error> {
        if conn.status().connected() {
            Ok(())
        } else {
            Err(RecycleError::message("the connection is no longer open"))
        }
    }
}

/// A handle on RabbitMQ (one node, or a cluster's nodes): cheap to clone, shared by the
/// publisher and the consumers.
#[derive(Clone)]
pub struct Broker {
    pool: managed::Pool<NodeManager>,
    nodes: Arc<Nodes>,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field("nodes", &self.nodes.shown)
            .finish_non_exhaustive()
    }
}

impl Broker {
    /// A broker handle for the nodes `urls` (`amqp://` or `amqps://` with rustls; one URL
    /// for a single broker). Connects lazily. The order is shuffled, so that the processes
    /// of a fleet spread over the nodes.
    ///
    /// `name` is shown as the connection name in the management UI.
    ///
    /// # Errors
    /// [`ErrorKind::Config`] when `urls` is empty or the pool cannot be built.
    pub fn new(urls: &[String], name: &str) -> Result<Self> {
        if urls.is_empty() {
            return Err(Error::config("no broker URL given"));
        }
        let mut urls = urls.to_vec();
        urls.shuffle(&mut rand::rng());
        let shown = urls.iter().map(|u| redact(u)).collect();
        let nodes = Arc::new(Nodes {
            last_errors: Mutex::new(vec![None; urls.len()]),
            urls,
            shown,
            current: AtomicUsize::new(NONE),
            name: format!("warren {name} (pid {})", std::process::id()),
            standby: Mutex::new(None),
            opening_standby: AtomicBool::new(false),
        });
        // Connecting may try every node, each for up to CONNECT_TIMEOUT.
        let create = CONNECT_TIMEOUT * u32::try_from(nodes.urls.len()).unwrap_or(u32::MAX);
        let pool = managed::Pool::builder(NodeManager(nodes.clone()))
            .config(PoolConfig {
                max_size: 4,
                timeouts: Timeouts {
                    wait: Some(create),
                    create: Some(create),
                    recycle: Some(CONNECT_TIMEOUT),
                },
                ..PoolConfig::default()
            })
            .runtime(deadpool::Runtime::Tokio1)
            .build()
            .map_err(|e| Error::config(format!("broker connection pool: {e}")))?;
        Ok(Self { pool, nodes })
    }

    /// The URL of the node in use, password hidden (before the first connection: the first
    /// node this process will try).
    pub fn display_url(&self) -> &str {
        &self.nodes.shown[self.node_index()]
    }

    /// The URL of the node in use, with its credentials (for the management API of that
    /// node).
    pub(crate) fn node_url(&self) -> &str {
        &self.nodes.urls[self.node_index()]
    }

    /// Every node's URL, password hidden, in this process's order.
    pub fn nodes(&self) -> &[String] {
        &self.nodes.shown
    }

    fn node_index(&self) -> usize {
        match self.nodes.current.load(Ordering::Acquire) {
            NONE => 0,
            i => i,
        }
    }

    /// Opens a new channel on a pooled connection (connecting if needed, to another node if
    /// the one in use is gone).
    ///
    /// # Errors
    /// [`ErrorKind::BrokerUnavailable`] when no node can be reached (each within 5 s); the
    /// message names each node and why.
    pub async fn channel(&self) -> Result<Channel> {
        // A standby lost since the last connection (its node stopped) is replaced here.
        self.nodes.keep_standby();
        let conn = self.pool.get().await.map_err(|e| {
            let why = match e {
                managed::PoolError::Backend(_) | managed::PoolError::Timeout(_) => self.nodes.why(),
                other => redact(&other.to_string()),
            };
            Error::from(ErrorKind::BrokerUnavailable(format!(
                "cannot connect to the broker ({why})"
            )))
        })?;
        // The channel keeps working after the pooled connection handle goes back to the pool:
        // AMQP multiplexes channels over one connection. A broker that stops answering must
        // not hang the caller.
        bounded(conn.create_channel()).await
    }
}

/// Runs a broker RPC with [`RPC_TIMEOUT`]; a broker that does not answer in time counts as
/// unavailable.
///
/// # Errors
/// The RPC's own error, or [`ErrorKind::BrokerUnavailable`] on timeout.
pub(crate) async fn bounded<T>(
    rpc: impl std::future::Future<Output = lapin::Result<T>>,
) -> Result<T> {
    match tokio::time::timeout(RPC_TIMEOUT, rpc).await {
        Ok(res) => Ok(res?),
        Err(_) => Err(ErrorKind::BrokerUnavailable(format!(
            "the broker did not answer within {} ms",
            RPC_TIMEOUT.as_millis()
        ))
        .into()),
    }
}
