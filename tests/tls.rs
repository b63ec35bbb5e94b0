//! `amqps://` with rustls: warren reaches the broker through TLS, verifying the broker's
//! certificate against the trust store (here a private CA named by `SSL_CERT_FILE`), and
//! refuses a certificate it cannot verify.
//!
//! The local broker listens without TLS, so the test puts a TLS-terminating tunnel in front
//! of it (tokio-rustls, with a CA and a `localhost` certificate made by rcgen); the tunnel
//! counts the TLS sessions it carried.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{KillOnDrop, QueueCleanup, TestStore, unique};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};

/// A TLS tunnel to the broker on 127.0.0.1:5672; returns its port, the CA's PEM and the
/// count of TLS sessions it completed.
async fn tls_tunnel() -> (u16, String, Arc<AtomicUsize>) {
    let ca_key = KeyPair::generate().expect("ca key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).expect("ca cert");
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf_key = KeyPair::generate().expect("leaf key");
    let leaf = CertificateParams::new(vec!["localhost".to_owned()])
        .expect("leaf params")
        .signed_by(&leaf_key, &issuer)
        .expect("leaf cert");

    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocols")
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der())),
        )
        .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let sessions = Arc::new(AtomicUsize::new(0));
    let counted = sessions.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let counted = counted.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                counted.fetch_add(1, Ordering::SeqCst);
                if let Ok(mut broker) = TcpStream::connect("127.0.0.1:5672").await {
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut broker).await;
                }
            });
        }
    });
    (port, ca_cert.pem(), sessions)
}

/// Starts `warren run` in `dir` with these extra environment variables and returns it with
/// the HTTP address it listens on.
fn start(
    dir: &Path,
    store: &TestStore,
    amqp_url: &str,
    env: &[(&str, String)],
) -> (std::process::Child, KillOnDrop, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_warren"));
    cmd.args(["run"])
        .current_dir(dir)
        .env("WARREN_AMQP_URL", amqp_url)
        .env("WARREN_STORE_URL", store.url())
        .env("WARREN_BIND", "127.0.0.1:0")
        .env_remove("WARREN_CONFIG")
        .env_remove("WARREN_API_TOKENS")
        .env_remove("SSL_CERT_FILE")
        .env_remove("SSL_CERT_DIR")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn warren");
    let guard = KillOnDrop {
        pid: child.id(),
        group: false,
    };
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("HTTP intake listening")
                && let Some(addr) = line.split("addr=").nth(1)
            {
                let _ = tx.send(addr.trim().to_owned());
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("warren listens");
    (child, guard, addr)
}

/// Polls `/readyz` until `done(status, body)` (or 20 s pass) and returns the last answer.
async fn readyz_until(
    http: &reqwest::Client,
    addr: &str,
    done: impl Fn(u16, &str) -> bool,
) -> (u16, String) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let resp = http
            .get(format!("http://{addr}/readyz"))
            .send()
            .await
            .expect("readyz");
        let status = resp.status().as_u16();
        let body = resp.text().await.unwrap_or_default();
        if done(status, &body) || Instant::now() > deadline {
            return (status, body);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn amqps_runs_jobs_through_tls_and_refuses_an_unknown_ca() {
    let (port, ca_pem, sessions) = tls_tunnel().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let q = unique("tls");
    let _cleanup = QueueCleanup(vec![q.clone(), format!("{q}.dlq")]);
    std::fs::write(
        dir.path().join("queues.toml"),
        format!("[queues.{q}]\nhandler = \"noop\"\n"),
    )
    .expect("config");
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca_pem).expect("ca file");
    let store = TestStore::new(dir.path()).await;
    let url = format!("amqps://guest:guest@localhost:{port}/%2f");
    let http = reqwest::Client::new();

    // Without the CA the broker's certificate is not trusted: not ready, and it says why.
    {
        let (mut child, _guard, addr) = start(dir.path(), &store, &url, &[]);
        let (status, body) = readyz_until(&http, &addr, |s, b| {
            s == 200 || b.to_lowercase().contains("certificate")
        })
        .await;
        assert_eq!(status, 503, "{body}");
        assert!(
            body.to_lowercase().contains("certificate"),
            "readyz names the certificate problem: {body}"
        );
        assert_eq!(
            sessions.load(Ordering::SeqCst),
            0,
            "no TLS session completed"
        );
        let _ = child.kill();
        let _ = child.wait();
    }

    // With it, jobs run end to end over TLS.
    let (mut child, _guard, addr) = start(
        dir.path(),
        &store,
        &url,
        &[("SSL_CERT_FILE", ca_file.display().to_string())],
    );
    let (status, body) = readyz_until(&http, &addr, |s, _| s == 200).await;
    assert_eq!(status, 200, "{body}");
    let resp = http
        .post(format!("http://{addr}/v1/queues/{q}/jobs"))
        .json(&json!({"payload": {"over": "tls"}}))
        .send()
        .await
        .expect("post");
    let id = common::accepted_id(resp).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let job: Value = http
            .get(format!("http://{addr}/v1/jobs/{id}"))
            .send()
            .await
            .expect("get")
            .json()
            .await
            .expect("json");
        if job["status"] == "succeeded" {
            break;
        }
        assert!(Instant::now() < deadline, "job not done over TLS: {job}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        sessions.load(Ordering::SeqCst) >= 1,
        "traffic went through TLS"
    );
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .expect("join")
        .expect("wait");
    assert!(status.success(), "clean stop");
}
