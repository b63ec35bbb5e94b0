//! The `warren` binary: help, config errors that name the line and change nothing, topology
//! apply/show and mismatch reports, and graceful shutdown on SIGTERM.

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{QueueCleanup, Raw, TestStore, unique};
use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;

/// Runs `warren args` in `dir` (store: the default, `warren.db` beside the config; the
/// commands run with it never write it).
fn warren(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_warren"))
        .args(args)
        .current_dir(dir)
        .env("WARREN_AMQP_URL", common::amqp_url())
        .env_remove("WARREN_CONFIG")
        .env_remove("WARREN_STORE_URL")
        .env_remove("WARREN_BIND")
        .output()
        .expect("run warren")
}

/// `warren job ID` on `store`: the job as JSON, read from the store directly.
fn warren_job(dir: &Path, store: &TestStore, id: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_warren"))
        .args(["job", id])
        .current_dir(dir)
        .env("WARREN_AMQP_URL", common::amqp_url())
        .env("WARREN_STORE_URL", store.url())
        .env_remove("WARREN_CONFIG")
        .env_remove("WARREN_BIND")
        .output()
        .expect("run warren job")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn help_lists_the_commands() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = warren(dir.path(), &["--help"]);
    assert!(out.status.success());
    let help = text(&out.stdout);
    for cmd in [
        "run",
        "serve",
        "work",
        "topology",
        "job",
        "--config",
        "--log-format",
    ] {
        assert!(help.contains(cmd), "--help should mention {cmd}:\n{help}");
    }
    let out = warren(dir.path(), &["topology", "--help"]);
    assert!(out.status.success());
    assert!(text(&out.stdout).contains("apply"));
}

#[tokio::test]
async fn config_errors_name_the_line_and_declare_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let q = unique("cfg");
    let _cleanup = QueueCleanup(vec![q.clone(), format!("{q}.dlq")]);
    let cases = [
        (
            format!("[queues.{q}]\nhandler = \"noop\"\nprefetch = \"lots\"\n"),
            "line 3",
        ),
        (
            format!("[queues.{q}]\nhandler = \"noop\"\ncolour = \"blue\"\n"),
            "colour",
        ),
        (
            format!("[queues.{q}]\nhandler = {{ exec = [\"missing.sh\"] }}\n"),
            "missing.sh",
        ),
        (
            format!("[queues.{q}]\nhandler = \"noop\"\ntimeout = \"forever\"\n"),
            "line 3",
        ),
    ];
    for (toml, needle) in cases {
        std::fs::write(dir.path().join("queues.toml"), &toml).expect("write config");
        let out = warren(dir.path(), &["topology", "apply"]);
        assert!(!out.status.success(), "should fail for:\n{toml}");
        let err = text(&out.stderr);
        assert!(
            err.contains(needle),
            "stderr should mention `{needle}`:\n{err}"
        );
        assert!(
            err.contains("queues.toml"),
            "stderr should name the file:\n{err}"
        );
    }
    assert_eq!(
        Raw::connect().await.depth(&q).await,
        None,
        "nothing was declared"
    );
}

#[tokio::test]
async fn topology_apply_declares_durable_quorum_queues_and_show_lists_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let q = unique("topo");
    let _cleanup = QueueCleanup(vec![q.clone(), format!("{q}.dlq")]);
    std::fs::write(
        dir.path().join("queues.toml"),
        format!("[queues.{q}]\nhandler = \"noop\"\ndelivery_limit = 7\n"),
    )
    .expect("write");
    let out = warren(dir.path(), &["topology", "apply"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let raw = Raw::connect().await;
    assert_eq!(raw.depth(&q).await, Some(0));
    assert_eq!(raw.depth(&format!("{q}.dlq")).await, Some(0));
    // Declaring again with the same arguments succeeds (it would fail on any difference).
    let ch = raw.channel().await;
    let mut args = FieldTable::default();
    args.insert("x-queue-type".into(), warren::message::long_value("quorum"));
    args.insert(
        "x-delivery-limit".into(),
        lapin::types::AMQPValue::LongLongInt(warren::topology::DLQ_DELIVERY_LIMIT),
    );
    args.insert(
        warren::topology::GROUP_SIZE_ARG.into(),
        lapin::types::AMQPValue::LongLongInt(3),
    );
    ch.queue_declare(
        format!("{q}.dlq").as_str().into(),
        QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        },
        args,
    )
    .await
    .expect("DLQ is a durable quorum queue");

    let out = warren(dir.path(), &["topology", "show"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let show = text(&out.stdout);
    assert!(show.contains(&format!("{q}.dlq")), "{show}");
    assert!(show.contains("x-delivery-limit=7"), "{show}");
    assert!(show.contains("x-quorum-initial-group-size=3"), "{show}");
    assert!(
        !show.contains("guest:guest"),
        "no credentials in output: {show}"
    );
    // Each queue's leader and members, from the management API: on the single test node, the
    // leader is the one member, whatever the group size asked for.
    let lines: Vec<&str> = show.lines().collect();
    for name in [
        q.clone(),
        format!("{q}.dlq"),
        "warren.delay.00".to_owned(),
        "warren.unroutable".to_owned(),
    ] {
        let at = lines
            .iter()
            .position(|l| l.split_whitespace().next() == Some(name.as_str()))
            .unwrap_or_else(|| panic!("{name} listed: {show}"));
        let members = lines.get(at + 1).copied().unwrap_or_default();
        let leader = members
            .strip_prefix("  quorum: leader ")
            .and_then(|rest| rest.split(';').next())
            .unwrap_or_else(|| panic!("leader line under {name}: {show}"));
        assert!(leader.starts_with("rabbit"), "{show}");
        assert!(
            members.ends_with(&format!("; members {leader} (all online)")),
            "one member, the leader: {show}"
        );
    }
    assert!(
        !text(&out.stderr).contains("unknown"),
        "{}",
        text(&out.stderr)
    );

    // `warren queues` names the node it uses (password hidden) and counts the unroutable
    // delayed messages.
    let out = warren(dir.path(), &["queues"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let table = text(&out.stdout);
    assert!(table.contains(&q), "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.split_whitespace().next() == Some("warren.unroutable")),
        "{table}"
    );
    assert!(table.contains("broker node: amqp://guest:***@"), "{table}");
}

/// Queues made before `replicas` existed have no `x-quorum-initial-group-size`, and RabbitMQ
/// refuses to declare them with one (406 "inequivalent arg"); warren declares them again as
/// they are, keeping their messages, and the same with a queue made with another group size.
#[tokio::test]
async fn topology_apply_keeps_quorum_queues_made_without_or_with_another_group_size() {
    let dir = tempfile::tempdir().expect("tempdir");
    let q = unique("legacy");
    let dlq = format!("{q}.dlq");
    let _cleanup = QueueCleanup(vec![q.clone(), dlq.clone()]);
    let config = format!("[queues.{q}]\nhandler = \"noop\"\nreplicas = 3\n");
    std::fs::write(dir.path().join("queues.toml"), &config).expect("write");
    let parsed = warren::Config::parse(
        &config,
        &dir.path().join("queues.toml"),
        &warren::config::EnvOverrides::default(),
    )
    .expect("valid");
    let qc = parsed.queue(&q).expect("configured");
    let strip = |args: FieldTable, size: Option<i64>| {
        let mut inner = args.inner().clone();
        inner.remove(warren::topology::GROUP_SIZE_ARG);
        if let Some(n) = size {
            inner.insert(
                warren::topology::GROUP_SIZE_ARG.into(),
                lapin::types::AMQPValue::LongLongInt(n),
            );
        }
        FieldTable::from(inner)
    };
    let raw = Raw::connect().await;
    for (name, args) in [
        (&q, strip(warren::topology::work_queue_args(qc), None)),
        (&dlq, strip(warren::topology::dlq_args(qc), Some(5))),
    ] {
        raw.channel()
            .await
            .queue_declare(
                name.as_str().into(),
                QueueDeclareOptions {
                    durable: true,
                    ..QueueDeclareOptions::default()
                },
                args,
            )
            .await
            .expect("declare as an older warren did");
    }
    // The broker refuses warren's arguments as they are.
    let refused = raw
        .channel()
        .await
        .queue_declare(
            q.as_str().into(),
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            warren::topology::work_queue_args(qc),
        )
        .await
        .expect_err("inequivalent arg")
        .to_string();
    assert!(
        refused.contains("inequivalent arg 'x-quorum-initial-group-size'")
            && refused.contains("current is none"),
        "{refused}"
    );
    raw.publish(&q, b"{\"kept\":true}", lapin::BasicProperties::default())
        .await;

    for _ in 0..2 {
        let out = warren(dir.path(), &["topology", "apply"]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let err = text(&out.stderr);
        assert!(
            err.contains("exist with another x-quorum-initial-group-size than warren's and keep their members")
                && err.contains(&format!("{q} (none), {dlq} (5)")),
            "says the queues keep their members: {err}"
        );
    }
    assert_eq!(raw.depth(&q).await, Some(1), "the message is still there");
    let out = warren(dir.path(), &["topology", "show"]);
    assert!(out.status.success(), "{}", text(&out.stderr));

    // Any other difference is still a mismatch, named as before.
    std::fs::write(
        dir.path().join("queues.toml"),
        format!("[queues.{q}]\nhandler = \"noop\"\ndelivery_limit = 9\n"),
    )
    .expect("write");
    let out = warren(dir.path(), &["topology", "apply"]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!(
            "queue `{q}` already exists with a different `x-delivery-limit`"
        )),
        "{err}"
    );
}

#[tokio::test]
async fn topology_mismatch_says_which_argument_differs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let q = unique("mismatch");
    let _cleanup = QueueCleanup(vec![q.clone(), format!("{q}.dlq")]);
    // Someone declared the queue before, as a classic queue without warren's arguments.
    let raw = Raw::connect().await;
    raw.channel()
        .await
        .queue_declare(
            q.as_str().into(),
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("declare classic");
    std::fs::write(
        dir.path().join("queues.toml"),
        format!("[queues.{q}]\nhandler = \"noop\"\n"),
    )
    .expect("write");
    let out = warren(dir.path(), &["topology", "apply"]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!("queue `{q}` already exists with a different")),
        "{err}"
    );
    assert!(err.contains("x-"), "names the argument: {err}");
    assert!(err.contains("To migrate"), "says how to migrate: {err}");
}

/// Starts `warren run` on `store` and a free port; returns the child and the base URL.
fn spawn_run(dir: &Path, store: &TestStore) -> (std::process::Child, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let child = Command::new(env!("CARGO_BIN_EXE_warren"))
        .arg("run")
        .current_dir(dir)
        .env("WARREN_AMQP_URL", common::amqp_url())
        .env("WARREN_BIND", format!("127.0.0.1:{port}"))
        .env("WARREN_STORE_URL", store.url())
        .env_remove("WARREN_CONFIG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn warren run");
    (child, format!("http://127.0.0.1:{port}"))
}

async fn wait_for(
    http: &reqwest::Client,
    url: &str,
    pred: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(20);
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

fn slow_script(dir: &Path, seconds: &str) {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("slow.sh");
    std::fs::write(
        &path,
        format!("#!/bin/sh\nsleep {seconds}\necho '\"slept\"'\n"),
    )
    .expect("write script");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

fn sigterm(child: &std::process::Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
}

#[tokio::test]
async fn sigterm_lets_the_running_job_finish_then_exits_zero() {
    let dir = tempfile::tempdir().expect("tempdir");
    let q = unique("term");
    let _cleanup = QueueCleanup(vec![q.clone(), format!("{q}.dlq")]);
    slow_script(dir.path(), "1");
    std::fs::write(
        dir.path().join("queues.toml"),
        format!("[worker]\nshutdown_grace = \"20s\"\n[queues.{q}]\nhandler = {{ exec = [\"slow.sh\"] }}\n"),
    )
    .expect("write");
    let store = TestStore::new(dir.path()).await;
    let (mut child, base) = spawn_run(dir.path(), &store);
    let _reaper = common::KillOnDrop {
        pid: child.id(),
        group: false,
    };
    let http = reqwest::Client::new();
    wait_for(&http, &format!("{base}/readyz"), |v| v["status"] == "ready").await;
    let resp = http
        .post(format!("{base}/v1/queues/{q}/jobs"))
        .json(&serde_json::json!({"payload": {}}))
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status(), 202);
    let id = resp.json::<serde_json::Value>().await.expect("json")["id"]
        .as_str()
        .expect("id")
        .to_owned();
    wait_for(&http, &format!("{base}/v1/jobs/{id}"), |v| {
        v["status"] == "running"
    })
    .await;

    sigterm(&child);
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .expect("join")
        .expect("wait");
    assert!(status.success(), "warren exits 0 after SIGTERM: {status:?}");

    // The job finished inside the grace period: `warren job` reads the store directly.
    let out = warren_job(dir.path(), &store, &id);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let job: serde_json::Value = serde_json::from_slice(&out.stdout).expect("job json");
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(Raw::connect().await.depth(&q).await, Some(0));
}

#[tokio::test]
async fn sigterm_hands_back_a_job_that_outlives_the_grace_period() {
    let dir = tempfile::tempdir().expect("tempdir");
    let q = unique("handback");
    let _cleanup = QueueCleanup(vec![q.clone(), format!("{q}.dlq")]);
    slow_script(dir.path(), "30");
    std::fs::write(
        dir.path().join("queues.toml"),
        format!("[worker]\nshutdown_grace = \"300ms\"\n[queues.{q}]\nhandler = {{ exec = [\"slow.sh\"] }}\ntimeout = \"60s\"\n"),
    )
    .expect("write");
    let store = TestStore::new(dir.path()).await;
    let (mut child, base) = spawn_run(dir.path(), &store);
    let _reaper = common::KillOnDrop {
        pid: child.id(),
        group: false,
    };
    let http = reqwest::Client::new();
    wait_for(&http, &format!("{base}/readyz"), |v| v["status"] == "ready").await;
    let resp = http
        .post(format!("{base}/v1/queues/{q}/jobs"))
        .json(&serde_json::json!({"payload": {}}))
        .send()
        .await
        .expect("post");
    let id = resp.json::<serde_json::Value>().await.expect("json")["id"]
        .as_str()
        .expect("id")
        .to_owned();
    wait_for(&http, &format!("{base}/v1/jobs/{id}"), |v| {
        v["status"] == "running"
    })
    .await;

    sigterm(&child);
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .expect("join")
        .expect("wait");
    assert!(status.success(), "{status:?}");
    // Handed back: queued again, its message back in the work queue, nothing lost.
    let out = warren_job(dir.path(), &store, &id);
    let job: serde_json::Value = serde_json::from_slice(&out.stdout).expect("job json");
    assert_eq!(job["status"], "queued", "{job}");
    assert_eq!(Raw::connect().await.depth(&q).await, Some(1));
}
