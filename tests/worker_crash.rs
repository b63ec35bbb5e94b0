//! A worker killed with SIGKILL mid-job: after the lease, another worker runs the job, and it
//! ends `succeeded` once (at-least-once only for the job in flight at the crash).

mod common;

use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{QueueCleanup, TestStore, unique};

/// Starts `warren run` on `store` in a process group of its own (so SIGKILL takes its
/// children too, like a machine dying).
fn start(dir: &Path, store: &TestStore, port: u16) -> Child {
    Command::new(env!("CARGO_BIN_EXE_warren"))
        .arg("run")
        .current_dir(dir)
        .env("WARREN_AMQP_URL", common::amqp_url())
        .env("WARREN_BIND", format!("127.0.0.1:{port}"))
        .env("WARREN_STORE_URL", store.url())
        .env_remove("WARREN_CONFIG")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .expect("spawn warren run")
}

fn kill_group(child: &mut Child) {
    let pgid = child.id();
    let status = Command::new("kill")
        .args(["-KILL", "--", &format!("-{pgid}")])
        .status()
        .expect("kill");
    assert!(status.success());
    let _ = child.wait();
}

async fn wait_json(
    http: &reqwest::Client,
    url: &str,
    timeout: Duration,
    pred: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(resp) = http.get(url).send().await
            && let Ok(v) = resp.json::<serde_json::Value>().await
            && pred(&v)
        {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting on {url}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn a_job_in_flight_at_a_sigkill_runs_again_after_its_lease_and_succeeds_once() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let q = unique("crash");
    let _cleanup = QueueCleanup(vec![q.clone(), format!("{q}.dlq")]);
    let log = dir.path().join("executions.log");
    let script = dir.path().join("charge.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho \"start $WARREN_JOB_ID $WARREN_ATTEMPT\" >> '{log}'\nsleep 2\necho \"done $WARREN_JOB_ID\" >> '{log}'\necho '\"charged\"'\n",
            log = log.display()
        ),
    )
    .expect("script");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    // Lease = timeout (3 s) + 5 s margin.
    std::fs::write(
        dir.path().join("queues.toml"),
        format!("[queues.{q}]\nhandler = {{ exec = [\"charge.sh\"] }}\ntimeout = \"3s\"\n"),
    )
    .expect("config");

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let store = TestStore::new(dir.path()).await;
    let mut first = start(dir.path(), &store, port);
    let _reap_first = common::KillOnDrop {
        pid: first.id(),
        group: true,
    };
    wait_json(
        &http,
        &format!("{base}/readyz"),
        Duration::from_secs(20),
        |v| v["status"] == "ready",
    )
    .await;
    let resp = http
        .post(format!("{base}/v1/queues/{q}/jobs"))
        .json(&serde_json::json!({"payload": {"amount": 500}}))
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status(), 202);
    let id = resp.json::<serde_json::Value>().await.expect("json")["id"]
        .as_str()
        .expect("id")
        .to_owned();

    // Kill the worker while the job runs.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !lines(&log).iter().any(|l| l.starts_with("start")) {
        assert!(Instant::now() < deadline, "the job never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    kill_group(&mut first);
    let killed_at = Instant::now();

    let mut second = start(dir.path(), &store, port);
    let _reap_second = common::KillOnDrop {
        pid: second.id(),
        group: true,
    };
    let job = wait_json(
        &http,
        &format!("{base}/v1/jobs/{id}"),
        Duration::from_secs(40),
        |v| v["status"] == "succeeded",
    )
    .await;
    let took = killed_at.elapsed();
    kill_group(&mut second);

    let log = lines(&log);
    assert_eq!(
        log.iter().filter(|l| l.starts_with("done")).count(),
        1,
        "completed once: {log:?}"
    );
    assert_eq!(
        log.iter().filter(|l| l.starts_with("start")).count(),
        2,
        "ran twice (crash + rerun): {log:?}"
    );
    assert_eq!(job["attempts"], 2, "{job}");
    assert_eq!(job["result"], "charged");
    // The rerun waited for the dead worker's lease (about 8 s after its start).
    assert!(
        took >= Duration::from_secs(4),
        "rerun did not wait for the lease: {took:?}"
    );
}
