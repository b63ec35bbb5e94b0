//! The bench's child processes and queues: a `warren` child process (its binary, its config,
//! its `perf` profile), and [`Cleanup`]. Queues are deleted and child processes killed, also
//! when the bench panics.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use lapin::options::QueueDeleteOptions;
use lapin::{Connection, ConnectionProperties};

use crate::broker::amqp_url;
use crate::load::{connect, get};
use crate::repo;

/// Deletes the registered queues on drop, from a thread with a runtime of its own.
#[derive(Default)]
pub(crate) struct Cleanup {
    queues: Mutex<Vec<String>>,
}

impl Cleanup {
    pub(crate) fn add(&self, name: &str) {
        if let Ok(mut q) = self.queues.lock() {
            q.push(name.to_owned());
        }
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let names = self
            .queues
            .lock()
            .map(|mut q| std::mem::take(&mut *q))
            .unwrap_or_default();
        if names.is_empty() {
            return;
        }
        let url = amqp_url();
        let deleted = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            // Bounded: a broker that does not answer must not keep the bench from exiting.
            let cleanup = async move {
                let conn = Connection::connect(&url, ConnectionProperties::default())
                    .await
                    .ok()?;
                let mut n = 0;
                for name in names {
                    if let Ok(ch) = conn.create_channel().await
                        && ch
                            .queue_delete(name.as_str().into(), QueueDeleteOptions::default())
                            .await
                            .is_ok()
                    {
                        n += 1;
                    }
                }
                let _ = conn.close(200, "bench cleanup".into()).await;
                Some(n)
            };
            rt.block_on(async move {
                tokio::time::timeout(Duration::from_secs(30), cleanup)
                    .await
                    .ok()
                    .flatten()
            })
        })
        .join();
        match deleted {
            Ok(Some(n)) => eprintln!("bench: deleted {n} queues"),
            _ => eprintln!("bench: could not delete the bench queues (broker unreachable?)"),
        }
    }
}

/// A running `warren` child; killed on drop if still running.
pub(crate) struct Warren {
    child: Option<Child>,
    pub(crate) pid: u32,
    pub(crate) addr: SocketAddr,
    perf: Option<Child>,
}

/// The `warren` binary the phases run: `BENCH_WARREN_BIN` (another build, e.g. for an A/B of
/// two trees in one session), else the one cargo built for this bench.
pub(crate) fn warren_bin() -> PathBuf {
    std::env::var_os("BENCH_WARREN_BIN").map_or_else(
        || PathBuf::from(env!("CARGO_BIN_EXE_warren")),
        PathBuf::from,
    )
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

impl Warren {
    /// Writes `queues-<tag>.toml` in `dir` (store `dir/warren.db`, shared by every process
    /// of the run) with `queues` (noop handler, prefetch `prefetch`) and starts
    /// `warren <command>` with it, logging to `target/bench/warren-<tag>.log`; returns once
    /// `/readyz` answers 200.
    pub(crate) async fn start(
        dir: &Path,
        tag: &str,
        command: &str,
        queues: &[&str],
        prefetch: usize,
    ) -> Self {
        Self::start_bin(&warren_bin(), dir, tag, command, queues, prefetch).await
    }

    /// [`Warren::start`] with the binary `bin`.
    pub(crate) async fn start_bin(
        bin: &Path,
        dir: &Path,
        tag: &str,
        command: &str,
        queues: &[&str],
        prefetch: usize,
    ) -> Self {
        let port = free_port();
        let mut toml = format!(
            "[broker]\nurl = \"{}\"\n{}\n[http]\nbind = \"127.0.0.1:{port}\"\n\n[store]\nurl = \"sqlite://warren.db\"\n",
            amqp_url(),
            std::env::var("BENCH_PUBLISH_CHANNELS")
                .map(|n| format!("publish_channels = {n}\n"))
                .unwrap_or_default()
        );
        for q in queues {
            toml.push_str(&format!(
                "\n[queues.\"{q}\"]\nhandler = \"noop\"\nprefetch = {prefetch}\n"
            ));
        }
        let config = dir.join(format!("queues-{tag}.toml"));
        std::fs::write(&config, toml).expect("write the bench config");
        let log_dir = repo().join("target/bench");
        std::fs::create_dir_all(&log_dir).expect("create target/bench");
        let log = std::fs::File::create(log_dir.join(format!("warren-{tag}.log")))
            .expect("create the warren log");
        let child = Command::new(bin)
            .arg("--config")
            .arg(&config)
            .arg(command)
            .env_remove("WARREN_AMQP_URL")
            .env_remove("WARREN_BIND")
            .env_remove("WARREN_STORE_URL")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start the warren binary");
        let pid = child.id();
        let w = Self {
            child: Some(child),
            pid,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            perf: None,
        };
        w.wait_ready().await;
        w
    }

    async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(mut c) = connect(self.addr).await
                && let Ok((200, _)) = get(&mut c, "/readyz").await
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "warren (pid {}) not ready within 30 s; see target/bench/warren-*.log",
                self.pid
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Starts `perf record` on this process (with `BENCH_PERF=1`).
    pub(crate) fn profile(&mut self, phase: &str) {
        let out = repo().join(format!("target/bench/perf-{phase}.data"));
        match Command::new("perf")
            .args([
                "record",
                "-F",
                "499",
                "-g",
                "--call-graph",
                "dwarf,16384",
                "-o",
            ])
            .arg(&out)
            .arg("-p")
            .arg(self.pid.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
        {
            Ok(c) => {
                println!("  perf recording to {}", out.display());
                self.perf = Some(c);
            }
            Err(e) => eprintln!("bench: perf not available: {e}"),
        }
    }

    pub(crate) fn stop_profile(&mut self) {
        if let Some(mut p) = self.perf.take() {
            signal(p.id(), "INT");
            let _ = p.wait();
        }
    }

    /// SIGTERM, then waits (up to 40 s) for a graceful exit.
    pub(crate) async fn stop(mut self) {
        self.stop_profile();
        let Some(mut child) = self.child.take() else {
            return;
        };
        signal(self.pid, "TERM");
        let waited = tokio::task::spawn_blocking(move || {
            let deadline = Instant::now() + Duration::from_secs(40);
            loop {
                match child.try_wait() {
                    Ok(Some(status)) => return Some(status),
                    Ok(None) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    _ => {
                        let _ = child.kill();
                        let _ = child.wait();
                        return None;
                    }
                }
            }
        })
        .await;
        if !matches!(waited, Ok(Some(s)) if s.success()) {
            eprintln!("bench: warren did not exit cleanly on SIGTERM: {waited:?}");
        }
    }
}

impl Drop for Warren {
    fn drop(&mut self) {
        self.stop_profile();
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status();
}
