//! Security defaults of the `warren` binary (DESIGN §9): a non-loopback bind without tokens
//! refuses to start unless `--insecure-no-auth`; credentials never appear in logs, errors,
//! `--help` or `/readyz`.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{KillOnDrop, QueueCleanup, TestStore, unique};

/// A broker password and an API token that must never be printed.
const PASSWORD: &str = "pw-7d1e5c0b9a4f";
const TOKEN: &str = "tok-93b8e1f04c2d7a6e5b1f0c9d8e7a6b5c";

fn warren(dir: &Path, store: &TestStore, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_warren"));
    cmd.args(args)
        .current_dir(dir)
        .env("WARREN_AMQP_URL", common::amqp_url())
        .env("WARREN_STORE_URL", store.url())
        .env_remove("WARREN_CONFIG")
        .env_remove("WARREN_BIND")
        .env_remove("WARREN_API_TOKENS")
        .env("RUST_LOG", "info");
    cmd
}

fn config(dir: &Path) -> QueueCleanup {
    let q = unique("sec");
    std::fs::write(
        dir.join("queues.toml"),
        format!("[queues.{q}]\nhandler = \"noop\"\n"),
    )
    .expect("write config");
    QueueCleanup(vec![q.clone(), format!("{q}.dlq")])
}

/// A spawned `warren` whose stderr is collected by a thread until it exits.
struct Running {
    child: Child,
    _guard: KillOnDrop,
    /// The address it logged as listening on.
    addr: String,
    log: std::thread::JoinHandle<Vec<String>>,
}

impl Running {
    /// Spawns `cmd` and waits for its "HTTP intake listening" line.
    fn start(mut cmd: Command) -> Self {
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn warren");
        let _guard = KillOnDrop {
            pid: child.id(),
            group: false,
        };
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        let log = std::thread::spawn(move || {
            let mut lines = Vec::new();
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("HTTP intake listening")
                    && let Some(addr) = line
                        .split("addr=")
                        .nth(1)
                        .or(line.split("\"addr\":\"").nth(1))
                {
                    let addr: String = addr
                        .chars()
                        .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ':')
                        .collect();
                    let _ = tx.send(addr);
                }
                lines.push(line);
            }
            lines
        });
        let Ok(addr) = rx.recv_timeout(Duration::from_secs(30)) else {
            let _ = child.kill();
            let lines = log.join().unwrap_or_default();
            panic!("warren did not listen:\n{}", lines.join("\n"));
        };
        Self {
            child,
            _guard,
            addr,
            log,
        }
    }

    /// Sends `signal`, waits for the exit and returns whether it was a success, and the log.
    fn stop(mut self, signal: &str) -> (bool, String) {
        let _ = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status();
        let ok = self.child.wait().map(|s| s.success()).unwrap_or(false);
        let lines = self.log.join().unwrap_or_default();
        (ok, lines.join("\n"))
    }
}

#[test]
fn a_public_bind_without_tokens_refuses_to_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let _cleanup = config(dir.path());
    let store = TestStore::new_blocking(dir.path());

    let out = warren(dir.path(), &store, &["serve"])
        .env("WARREN_BIND", "0.0.0.0:0")
        .output()
        .expect("run warren");
    assert!(!out.status.success(), "must refuse to start");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("refusing to serve on 0.0.0.0") && err.contains("--insecure-no-auth"),
        "{err}"
    );

    // With tokens, or with the explicit flag (and a warning), it serves.
    for (flag, tokens) in [(None, Some(TOKEN)), (Some("--insecure-no-auth"), None)] {
        let mut cmd = warren(dir.path(), &store, &["serve"]);
        cmd.env("WARREN_BIND", "0.0.0.0:0");
        if let Some(f) = flag {
            cmd.arg(f);
        }
        if let Some(t) = tokens {
            cmd.env("WARREN_API_TOKENS", t);
        }
        let running = Running::start(cmd);
        assert!(running.addr.starts_with("0.0.0.0:"), "{}", running.addr);
        let (_, log) = running.stop("KILL");
        if flag.is_some() {
            assert!(log.contains("without authentication"), "{log}");
        }
    }
}

#[tokio::test]
async fn credentials_never_appear_in_logs_errors_help_or_readyz() {
    let dir = tempfile::tempdir().expect("tempdir");
    let _cleanup = config(dir.path());
    let store = TestStore::new(dir.path()).await;
    let bad_url = format!("amqp://guest:{PASSWORD}@127.0.0.1:5672/%2f");
    let mut seen = String::new();

    // `--help` of every serving command, with the secrets in the environment.
    for args in [
        &["--help"][..],
        &["run", "--help"],
        &["dlq", "drain", "--help"],
    ] {
        let out = warren(dir.path(), &store, args)
            .env("WARREN_AMQP_URL", &bad_url)
            .env("WARREN_API_TOKENS", TOKEN)
            .output()
            .expect("help");
        assert!(out.status.success());
        seen.push_str(&String::from_utf8_lossy(&out.stdout));
    }

    // A CLI command that fails on the broker (the password is wrong): the error names the
    // broker without the password.
    let out = warren(dir.path(), &store, &["topology", "apply"])
        .env("WARREN_AMQP_URL", &bad_url)
        .output()
        .expect("topology apply");
    assert!(!out.status.success(), "a wrong password must fail");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(err.contains("guest:***@127.0.0.1"), "{err}");
    seen.push_str(&err);

    // `warren run` against the same broker, debug logs in JSON: /readyz reports the broker
    // down, the logs tell why, neither shows a secret.
    let mut cmd = warren(dir.path(), &store, &["--log-format", "json", "run"]);
    cmd.env("WARREN_AMQP_URL", &bad_url)
        .env("WARREN_API_TOKENS", format!("admin:{TOKEN}"))
        .env("RUST_LOG", "debug");
    let running = Running::start(cmd);
    let addr = running.addr.replace("0.0.0.0", "127.0.0.1");
    let http = reqwest::Client::new();
    let resp = http
        .get(format!("http://{addr}/readyz"))
        .send()
        .await
        .expect("readyz");
    assert_eq!(resp.status(), 503);
    let body = resp.text().await.expect("body");
    assert!(
        body.contains("guest:***@"),
        "readyz names the broker: {body}"
    );
    seen.push_str(&body);
    let resp = http
        .get(format!(
            "http://{addr}/v1/jobs/00000000-0000-0000-0000-000000000000"
        ))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("get");
    assert_eq!(resp.status(), 404, "the token works");
    let (ok, log) = tokio::task::spawn_blocking(move || running.stop("TERM"))
        .await
        .expect("join");
    assert!(ok, "SIGTERM is a clean stop:\n{log}");
    assert!(
        log.contains("ACCESS_REFUSED") || log.contains("refused"),
        "the log says why the broker is unreachable:\n{log}"
    );
    seen.push_str(&log);

    for secret in [PASSWORD, TOKEN] {
        assert!(!seen.contains(secret), "{secret} leaked:\n{seen}");
    }
}
