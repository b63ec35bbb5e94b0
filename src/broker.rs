//! The broker connection: a `deadpool-lapin` pool that replaces broken connections, and the
//! channels warren opens on it.

use std::time::Duration;

use deadpool_lapin::{Pool, PoolConfig, Runtime, Timeouts};
use lapin::{Channel, ConnectionProperties};

use crate::error::{Error, ErrorKind, Result};
use crate::redact::redact;

/// How long connecting to the broker (TCP + AMQP handshake) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one broker RPC (open a channel, declare, qos, consume) may take.
pub(crate) const RPC_TIMEOUT: Duration = Duration::from_secs(10);

/// A handle on RabbitMQ: cheap to clone, shared by the publisher and the consumers.
#[derive(Clone)]
pub struct Broker {
    pool: Pool,
    display_url: String,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field("url", &self.display_url)
            .finish_non_exhaustive()
    }
}

impl Broker {
    /// A broker handle for `url` (`amqp://` or `amqps://` with rustls). Connects lazily.
    ///
    /// `name` is shown as the connection name in the management UI.
    ///
    /// # Errors
    /// [`ErrorKind::Config`] when the pool cannot be built from the URL.
    pub fn new(url: &str, name: &str) -> Result<Self> {
        let name = format!("warren {name} (pid {})", std::process::id());
        let cfg = deadpool_lapin::Config {
            url: Some(url.to_owned()),
            pool: Some(PoolConfig {
                max_size: 4,
                timeouts: Timeouts {
                    wait: Some(CONNECT_TIMEOUT),
                    create: Some(CONNECT_TIMEOUT),
                    recycle: Some(CONNECT_TIMEOUT),
                },
                ..PoolConfig::default()
            }),
        };
        let pool = cfg
            .create_pool(
                move || ConnectionProperties::default().with_connection_name(name.clone().into()),
                Runtime::Tokio1,
            )
            .map_err(|e| Error::config(format!("broker URL {}: {e}", redact(url))))?;
        Ok(Self {
            pool,
            display_url: redact(url),
        })
    }

    /// The broker URL with its password hidden.
    pub fn display_url(&self) -> &str {
        &self.display_url
    }

    /// Opens a new channel on a pooled connection (connecting if needed).
    ///
    /// # Errors
    /// [`ErrorKind::BrokerUnavailable`] when the broker cannot be reached in 5 s.
    pub async fn channel(&self) -> Result<Channel> {
        let conn = self.pool.get().await.map_err(|e| {
            Error::from(ErrorKind::BrokerUnavailable(format!(
                "cannot connect to {}: {}",
                self.display_url,
                redact(&e.to_string())
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
