//! The Python tools of the API contract tests (schemathesis, openapi-python-client), from the
//! virtual environment `scripts/ensure-python-tools` makes (`WARREN_PYENV`, default
//! `target/pyenv`), and a `warren run` child process to point them at.
//!
//! Mounted by tests/api_properties.rs and tests/generated_client.rs beside `mod common;`
//! (`#[path = "api/python.rs"] mod python;`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};

use crate::common::process::{Children, free_port, signal_group, spawn_warren, wait_ready};
use crate::common::{QueueCleanup, TestStore, unique};

/// The virtual environment holding the tools.
pub fn pyenv() -> PathBuf {
    std::env::var_os("WARREN_PYENV")
        .filter(|v| !v.is_empty())
        .map_or_else(|| crate::common::repo().join("target/pyenv"), PathBuf::from)
}

/// `bin/NAME` of the environment; fails the test (never skips it) when it is missing.
pub fn tool(name: &str) -> PathBuf {
    let path = pyenv().join("bin").join(name);
    assert!(
        path.is_file(),
        "{} is missing: the API contract tests need the Python tools; run scripts/ensure-python-tools \
         (the README's test command, scripts/test, does)",
        path.display()
    );
    path
}

/// Runs `cmd`, returning its output; panics when it cannot start.
pub fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// stdout and stderr of `out`, for a failure message.
pub fn shown(out: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A `warren run` child process on a free loopback port with one queue of its own (`table`:
/// the lines of its `[queues.NAME]` table, e.g. `handler = "noop"`), its own store, and API
/// tokens when `tokens` is given (`[SCOPE:]TOKEN, …`, through a tokens file). Stopped with SIGTERM by [`Self::stop`],
/// killed when dropped; its queues are deleted.
pub struct Warren {
    /// The process's directory (its `queues.toml`, log, SQLite file).
    pub dir: tempfile::TempDir,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// The queue's name.
    pub queue: String,
    child: Option<Child>,
    _children: Children,
    _store: TestStore,
    _cleanup: QueueCleanup,
}

impl Warren {
    /// Starts it and waits until `/readyz` answers 200.
    pub async fn start(tag: &str, table: &str, tokens: Option<&str>) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let queue = unique(tag);
        let cleanup = QueueCleanup(vec![queue.clone(), format!("{queue}.dlq")]);
        let store = TestStore::new(dir.path()).await;
        let mut config = String::new();
        if let Some(tokens) = tokens {
            std::fs::write(dir.path().join("tokens"), tokens.replace(',', "\n"))
                .expect("tokens file");
            config.push_str("[auth]\ntokens_file = \"tokens\"\n\n");
        }
        config.push_str(&format!("[queues.\"{queue}\"]\n{table}\n"));
        std::fs::write(dir.path().join("queues.toml"), config).expect("config");
        let port = free_port();
        let child = spawn_warren(dir.path(), store.url(), &["run"], port, "log", &[]);
        let base = format!("http://127.0.0.1:{port}");
        let children = Children(vec![child.id()]);
        wait_ready(&base, dir.path(), "log").await;
        Self {
            dir,
            base,
            queue,
            child: Some(child),
            _children: children,
            _store: store,
            _cleanup: cleanup,
        }
    }

    /// The process's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }

    /// A path inside its directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// SIGTERM, then waits (up to 30 s) for the process to exit; true when it exited 0.
    pub async fn stop(mut self) -> bool {
        let Some(mut child) = self.child.take() else {
            return false;
        };
        signal_group(child.id(), "TERM");
        let waited = tokio::time::timeout(
            std::time::Duration::from_secs(30),
            tokio::task::spawn_blocking(move || child.wait()),
        )
        .await;
        matches!(waited, Ok(Ok(Ok(status))) if status.success())
    }
}
