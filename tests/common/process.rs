//! `warren` binaries as child processes, for scenarios of several processes (tests/faults.rs,
//! tests/many_processes.rs).

use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// A free port on loopback (bound once, then released).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// Starts `warren ARGS` in `dir` (its `queues.toml`) in a process group of its own, so that
/// a SIGKILL to the group takes its handler children too, like a host dying. It talks to the
/// test broker and to `store_url`, binds `127.0.0.1:port`, appends its stderr to `dir/log`,
/// and has `EXEC_LOG=dir/executions.log` plus `env` in its environment (for `exec` handlers
/// that record what they ran).
pub fn spawn_warren(
    dir: &Path,
    store_url: &str,
    args: &[&str],
    port: u16,
    log: &str,
    env: &[(&str, &str)],
) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(log))
        .expect("log file");
    Command::new(env!("CARGO_BIN_EXE_warren"))
        .args(args)
        .current_dir(dir)
        .env("WARREN_AMQP_URL", super::amqp_url())
        .env("WARREN_BIND", format!("127.0.0.1:{port}"))
        .env("WARREN_STORE_URL", store_url)
        .env("EXEC_LOG", dir.join("executions.log"))
        .envs(env.iter().copied())
        .env_remove("WARREN_CONFIG")
        .env_remove("WARREN_API_TOKENS")
        .stdout(Stdio::null())
        .stderr(log)
        .process_group(0)
        .spawn()
        .expect("spawn warren")
}

/// Starts a `warren serve` intake named `name` on `127.0.0.1:port` (see [`spawn_warren`];
/// its log is `dir/name.log`); returns its pid.
pub fn spawn_intake(
    dir: &Path,
    store_url: &str,
    name: &str,
    port: u16,
    env: &[(&str, &str)],
) -> u32 {
    spawn_warren(
        dir,
        store_url,
        &["serve"],
        port,
        &format!("{name}.log"),
        env,
    )
    .id()
}

/// Starts a `warren work` process named `name` (see [`spawn_warren`]; its log is
/// `dir/name.log`, and `WORKER_NAME=name` tells the recording handler who ran a job); returns
/// its pid.
pub fn spawn_worker(dir: &Path, store_url: &str, name: &str, env: &[(&str, &str)]) -> u32 {
    let mut env = env.to_vec();
    env.push(("WORKER_NAME", name));
    spawn_warren(
        dir,
        store_url,
        &["work"],
        free_port(),
        &format!("{name}.log"),
        &env,
    )
    .id()
}

/// Runs `rabbitmqctl ARGS` (against the local broker, or the node `-n NODE` names) and fails
/// the test, with the tool's stderr, when it is missing or the command fails.
pub fn rabbitmqctl(args: &[&str]) {
    let out = Command::new("rabbitmqctl")
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!("this test drives the broker with rabbitmqctl, which is missing: {e}")
        });
    assert!(
        out.status.success(),
        "rabbitmqctl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Sends `signal` (`KILL`, `TERM`…) to the process group `pid` leads.
pub fn signal_group(pid: u32, signal: &str) {
    let _ = Command::new("kill")
        .args([&format!("-{signal}"), "--", &format!("-{pid}")])
        .stderr(Stdio::null())
        .status();
}

/// Kills every process group it holds when dropped (a failing test leaves nothing running).
#[derive(Default)]
pub struct Children(pub Vec<u32>);

impl Drop for Children {
    fn drop(&mut self) {
        for pid in &self.0 {
            signal_group(*pid, "KILL");
        }
    }
}

/// Writes `dir/queues.toml` with one queue `queue` whose `exec` handler, `dir/record.sh`,
/// appends a line `JOB_ID WORKER MS` to `$EXEC_LOG` for every execution (`WORKER` is the
/// process's `WORKER_NAME`, else `worker`; `MS` when it started, ms since the Unix epoch): prefetch 16, `concurrency`, a 5 s timeout (so a
/// lease lasts 10 s), 10 attempts with a short backoff, a 5 s shutdown grace.
pub fn write_recording_queue(dir: &Path, queue: &str, concurrency: usize) {
    std::fs::write(
        dir.join("record.sh"),
        "#!/bin/sh\nprintf '%s %s %s\\n' \"$WARREN_JOB_ID\" \"${WORKER_NAME:-worker}\" \"$(date +%s%3N)\" >> \"$EXEC_LOG\"\n",
    )
    .expect("script");
    std::fs::set_permissions(
        dir.join("record.sh"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod");
    std::fs::write(
        dir.join("queues.toml"),
        format!(
            "[worker]\nshutdown_grace = \"5s\"\n\n[queues.{queue}]\nhandler = {{ exec = [\"record.sh\"] }}\n\
             prefetch = 16\nconcurrency = {concurrency}\ntimeout = \"5s\"\nmax_attempts = 10\n\
             backoff = {{ base = \"200ms\", max = \"2s\" }}\n"
        ),
    )
    .expect("config");
}

/// Executions recorded by [`write_recording_queue`]'s handler in `dir`: (job id, worker)
/// per line, in order.
pub fn executions(dir: &Path) -> Vec<(String, String)> {
    timed_executions(dir)
        .into_iter()
        .map(|(id, worker, _)| (id, worker))
        .collect()
}

/// Executions recorded by [`write_recording_queue`]'s handler in `dir`: (job id, worker,
/// when it started in ms since the Unix epoch) per line, in order.
pub fn timed_executions(dir: &Path) -> Vec<(String, String, u64)> {
    std::fs::read_to_string(dir.join("executions.log"))
        .unwrap_or_default()
        .lines()
        .map(|line| {
            let mut fields = line.split_whitespace();
            let id = fields.next().unwrap_or_default().to_owned();
            let worker = fields.next().unwrap_or_default().to_owned();
            let at = fields.next().and_then(|t| t.parse().ok()).unwrap_or(0);
            (id, worker, at)
        })
        .collect()
}

/// Waits until `base/readyz` answers 200 (60 s at most; then fails showing `dir/log`).
pub async fn wait_ready(base: &str, dir: &Path, log: &str) {
    let http = reqwest::Client::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        if let Ok(r) = http.get(format!("{base}/readyz")).send().await
            && r.status() == 200
        {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{base} not ready within 60 s; its log:\n{}",
            std::fs::read_to_string(dir.join(log)).unwrap_or_default()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
