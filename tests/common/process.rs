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
