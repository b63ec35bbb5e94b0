//! `warren dlq drain`: every dead letter ends in the file or still in the DLQ, never both
//! lost and never twice in the file — while more keep dying, and when the drain is killed.

mod common;

use std::collections::HashSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{QueueCleanup, Raw, Setup, unique};
use tokio_util::sync::CancellationToken;
use warren::Role;
use warren::dlq::ArchiveLine;

fn archive_ids(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .expect("archive")
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            ArchiveLine::parse(l)
                .expect("every line is valid")
                .id
                .expect("id")
        })
        .collect()
}

#[tokio::test]
async fn ten_thousand_drained_while_more_keep_dying_lose_nothing() {
    let w = Setup::new()
        .queue("busy", "handler = \"noop\"")
        .role(Role::Intake)
        .start()
        .await;
    let q = w.q("busy");
    let raw = Raw::connect().await;
    let mut all: Vec<String> = raw.dead_letters(&q, 10_000, |i| format!("error {i}")).await;

    // Meanwhile another task keeps dead-lettering more.
    let stop = Arc::new(AtomicBool::new(false));
    let more = {
        let (q, stop) = (q.clone(), stop.clone());
        tokio::spawn(async move {
            let raw = Raw::connect().await;
            let mut ids = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                ids.extend(raw.dead_letters(&q, 50, |_| "late".into()).await);
            }
            ids
        })
    };
    let path = w.dir().join("archive.jsonl");
    let report = w
        .app()
        .dlq()
        .drain(&q, &path, None, &(), &CancellationToken::new())
        .await
        .expect("drain");
    stop.store(true, Ordering::Relaxed);
    all.extend(more.await.expect("join"));
    assert!(
        report.moved >= 10_000,
        "drained the 10,000 present at the start: {}",
        report.moved
    );

    let in_file = archive_ids(&path);
    let unique_in_file: HashSet<&String> = in_file.iter().collect();
    assert_eq!(
        unique_in_file.len(),
        in_file.len(),
        "no id twice in the file"
    );
    assert_eq!(in_file.len() as u64, report.moved);
    let left = raw.take_all_ids(&format!("{q}.dlq")).await;
    assert_eq!(
        in_file.len() + left.len(),
        all.len(),
        "file + DLQ = every dead letter"
    );
    let everywhere: HashSet<&String> = in_file.iter().chain(left.iter()).collect();
    assert!(
        all.iter().all(|id| everywhere.contains(id)),
        "every id is somewhere"
    );
    w.stop().await.expect("clean stop");
}

#[tokio::test]
async fn a_drain_killed_midway_loses_no_dead_letter() {
    let dir = tempfile::tempdir().expect("tempdir");
    let q = unique("killdrain");
    let _cleanup = QueueCleanup(vec![q.clone(), format!("{q}.dlq")]);
    std::fs::write(
        dir.path().join("queues.toml"),
        format!("[queues.{q}]\nhandler = \"noop\"\n"),
    )
    .expect("config");
    let store = common::TestStore::new(dir.path()).await;
    let warren = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_warren"))
            .args(args)
            .current_dir(dir.path())
            .env("WARREN_AMQP_URL", common::amqp_url())
            .env("WARREN_STORE_URL", store.url())
            .env_remove("WARREN_CONFIG")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn warren")
    };
    assert!(
        warren(&["topology", "apply"])
            .wait()
            .expect("wait")
            .success()
    );
    let raw = Raw::connect().await;
    let all = raw.dead_letters(&q, 20_000, |i| format!("error {i}")).await;

    let path = dir.path().join("out.jsonl");
    let mut drain = warren(&[
        "dlq",
        "drain",
        &q,
        "--to",
        path.to_str().expect("utf-8 path"),
    ]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::fs::read_to_string(&path).map_or(0, |t| t.lines().count()) < 1_000 {
        assert!(Instant::now() < deadline, "drain wrote nothing");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    drain.kill().expect("SIGKILL");
    let _ = drain.wait();

    // A line cut by the kill is not a dead letter the file holds.
    let text = std::fs::read_to_string(&path).expect("archive");
    let in_file: HashSet<String> = text
        .lines()
        .filter_map(|l| ArchiveLine::parse(l).ok())
        .filter_map(|l| l.id)
        .collect();
    assert!(in_file.len() < all.len(), "killed before the end");
    // The killed process's unacked deliveries go back to the DLQ once the broker sees its
    // connection gone, a moment after the kill: take what is there until every id is
    // accounted for (or 60 s pass: a quorum queue under the load of the other test of this
    // file once took more than 15 s to give a killed consumer's window back).
    let mut left: HashSet<String> = HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let missing = loop {
        left.extend(raw.take_all_ids(&format!("{q}.dlq")).await);
        let missing: Vec<&String> = all
            .iter()
            .filter(|id| !in_file.contains(*id) && !left.contains(*id))
            .collect();
        if missing.is_empty() || Instant::now() > deadline {
            break missing;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        missing.is_empty(),
        "{} dead letter(s) lost, e.g. {:?}",
        missing.len(),
        missing.first()
    );
}
