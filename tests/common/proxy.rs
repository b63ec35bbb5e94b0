//! A TCP proxy between warren and the broker that can hold back what the broker sends: the
//! publish reaches the broker and is enqueued, but its confirm does not reach warren until
//! the test releases it, the way a confirm is lost when a connection stalls or its node dies
//! right after taking a message.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

/// A running proxy on a loopback port of its own; stops (closing every connection) when
/// dropped.
pub struct Proxy {
    /// `amqp://` URL of the broker through the proxy.
    url: String,
    hold: watch::Sender<bool>,
    accept: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Starts a proxy to the broker of `amqp_url` (`amqp://user:pass@host:port/vhost`).
    pub async fn start(amqp_url: &str) -> Self {
        let (scheme_auth, rest) = amqp_url.split_once('@').expect("amqp URL with credentials");
        let (authority, vhost) = rest.split_once('/').unwrap_or((rest, ""));
        let target: SocketAddr = tokio::net::lookup_host(authority)
            .await
            .expect("broker address resolves")
            .next()
            .expect("broker address");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let (hold, held) = watch::channel(false);
        let accept = tokio::spawn(async move {
            // Dropped with this task: every connection's tasks are aborted with it.
            let mut connections = JoinSet::new();
            while let Ok((client, _)) = listener.accept().await {
                let Ok(broker) = TcpStream::connect(target).await else {
                    continue;
                };
                let (mut client_rx, mut client_tx) = client.into_split();
                let (mut broker_rx, mut broker_tx) = broker.into_split();
                connections.spawn(async move {
                    let _ = tokio::io::copy(&mut client_rx, &mut broker_tx).await;
                    let _ = broker_tx.shutdown().await;
                });
                let mut held = held.clone();
                connections.spawn(async move {
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        let n = match broker_rx.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        if held.wait_for(|h| !*h).await.is_err() {
                            break;
                        }
                        if client_tx.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                    let _ = client_tx.shutdown().await;
                });
            }
        });
        Self {
            url: format!("{scheme_auth}@127.0.0.1:{port}/{vhost}"),
            hold,
            accept,
        }
    }

    /// The broker's URL through this proxy.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// From now on, what the broker sends waits in the proxy (what warren sends still goes).
    pub fn hold_replies(&self) {
        self.hold.send_replace(true);
    }

    /// Passes on what was held, and everything after.
    pub fn release(&self) {
        self.hold.send_replace(false);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}
