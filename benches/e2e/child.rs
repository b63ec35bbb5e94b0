//! The bench's child processes and queues: a `warren` child process (its binary, its config,
//! its `perf` profile), and [`Cleanup`]. Queues are deleted, PostgreSQL databases dropped and
//! child processes killed, also when the bench panics.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use lapin::options::QueueDeleteOptions;
use lapin::{Connection, ConnectionProperties};

use crate::broker::{amqp_url, unique};
use crate::load::{connect, get};
use crate::repo;
use crate::store::{Space, drop_databases};

/// Deletes the registered queues and drops the registered databases (those a
/// [`Space`] has not dropped already) on drop, from threads with a runtime of their own.
#[derive(Default)]
pub(crate) struct Cleanup {
    queues: Mutex<Vec<String>>,
    /// (admin URL, database name)
    databases: Mutex<Vec<(String, String)>>,
}

impl Cleanup {
    pub(crate) fn add(&self, name: &str) {
        if let Ok(mut q) = self.queues.lock() {
            q.push(name.to_owned());
        }
    }

    /// A fresh name for a work queue of warren's (`b-<name>-<random>`), registered with its
    /// dead-letter queue.
    pub(crate) fn work_queue(&self, name: &str) -> String {
        let q = unique(name);
        self.add(&q);
        self.add(&format!("{q}.dlq"));
        q
    }

    /// Registers a database to drop at the end, should its [`Space`] not have dropped it.
    pub(crate) fn add_database(&self, admin_url: &str, name: &str) {
        if let Ok(mut d) = self.databases.lock() {
            d.push((admin_url.to_owned(), name.to_owned()));
        }
    }

    fn drop_databases(&self) {
        let all = self
            .databases
            .lock()
            .map(|mut d| std::mem::take(&mut *d))
            .unwrap_or_default();
        let Some((admin_url, _)) = all.first() else {
            return;
        };
        let n = drop_databases(admin_url, all.iter().map(|(_, n)| n.clone()).collect());
        eprintln!(
            "bench: DROP DATABASE IF EXISTS done for {n} of the {} databases it made",
            all.len()
        );
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        self.drop_databases();
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

/// How a child starts: its binary and its store's retention.
pub(crate) struct Launch<'a> {
    /// The `warren` binary ([`warren_bin`] by default).
    pub(crate) bin: PathBuf,
    /// `store.retention` (warren's default, 7 days, when `None`).
    pub(crate) retention: Option<&'a str>,
    /// Extra lines for every queue's table (e.g. a `rate_limit`).
    pub(crate) queue_extra: &'a str,
    /// Extra environment for the child (`NAME=value`), e.g. `TOKIO_WORKER_THREADS=1`.
    pub(crate) env: Vec<(String, String)>,
}

impl Default for Launch<'_> {
    fn default() -> Self {
        Self {
            bin: warren_bin(),
            retention: None,
            queue_extra: "",
            env: Vec::new(),
        }
    }
}

impl Warren {
    /// Writes `queues-<tag>.toml` in the space's dir (its store, shared by every process
    /// started on the space) with `queues` (noop handler, prefetch `prefetch`) and starts
    /// `warren <command>` with it, logging to `target/bench/warren-<tag>.log`; returns once
    /// `/readyz` answers 200.
    pub(crate) async fn start(
        space: &Space,
        tag: &str,
        command: &str,
        queues: &[&str],
        prefetch: usize,
    ) -> Self {
        Self::launch(&Launch::default(), space, tag, command, queues, prefetch).await
    }

    /// [`Warren::start`] as `how` says.
    pub(crate) async fn launch(
        how: &Launch<'_>,
        space: &Space,
        tag: &str,
        command: &str,
        queues: &[&str],
        prefetch: usize,
    ) -> Self {
        let port = free_port();
        let mut toml = format!(
            "[broker]\nurl = \"{}\"\n{}\n[http]\nbind = \"127.0.0.1:{port}\"\n\n[store]\nurl = \"{}\"\n{}",
            amqp_url(),
            std::env::var("BENCH_PUBLISH_CHANNELS")
                .map(|n| format!("publish_channels = {n}\n"))
                .unwrap_or_default(),
            space.config_url(),
            how.retention
                .map(|r| format!("retention = \"{r}\"\n"))
                .unwrap_or_default()
        );
        for q in queues {
            toml.push_str(&format!(
                "\n[queues.\"{q}\"]\nhandler = \"noop\"\nprefetch = {prefetch}\n{}\n",
                how.queue_extra
            ));
        }
        let config = space.dir().join(format!("queues-{tag}.toml"));
        std::fs::write(&config, toml).expect("write the bench config");
        let log_dir = repo().join("target/bench");
        std::fs::create_dir_all(&log_dir).expect("create target/bench");
        let log = std::fs::File::create(log_dir.join(format!("warren-{tag}.log")))
            .expect("create the warren log");
        let child = Command::new(&how.bin)
            .arg("--config")
            .arg(&config)
            .arg(command)
            .env_remove("WARREN_AMQP_URL")
            .env_remove("WARREN_BIND")
            .env_remove("WARREN_STORE_URL")
            .envs(how.env.iter().map(|(k, v)| (k, v)))
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
