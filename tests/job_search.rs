//! The job search: `GET /v1/jobs` with each filter of DESIGN §3 finds exactly the jobs a user
//! posted that match, newest first, page after page with no duplicate and no gap; bad values
//! are 400 and an unconfigured queue 404; `warren jobs list` (on the store directly) agrees
//! with the API, and its next-page hint fetches the next page.

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use common::{Setup, TestWarren, accepted_id};
use serde_json::{Value, json};
use warren::workers::{Outcome, handler_fn};

/// A handler that fails permanently for payloads with `"fail": true` (the error names the
/// payload's `n`), and succeeds otherwise.
fn failing_on_request() -> impl warren::workers::Handler {
    handler_fn(|job| {
        let payload: Value = serde_json::from_slice(&job.payload).unwrap_or(Value::Null);
        async move {
            if payload["fail"] == true {
                Outcome::permanent(format!("Bad Input in record {}", payload["n"]))
            } else {
                Outcome::success()
            }
        }
    })
}

/// Query parameters, in order (`status` may repeat).
type Query<'a> = Vec<(&'a str, &'a str)>;

/// `GET /v1/jobs` with `query`: the status and the body.
async fn search(w: &TestWarren, query: &[(&str, &str)]) -> (u16, Value) {
    let qs: Vec<String> = query
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect();
    let resp = w
        .http
        .get(format!("{}/v1/jobs?{}", w.base, qs.join("&")))
        .send()
        .await
        .expect("GET /v1/jobs");
    let status = resp.status().as_u16();
    (status, resp.json().await.expect("json body"))
}

/// Percent-encodes everything but unreserved characters (RFC 3986 §2.3).
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn ids(page: &Value) -> Vec<String> {
    page["jobs"]
        .as_array()
        .expect("jobs")
        .iter()
        .map(|j| j["id"].as_str().expect("id").to_owned())
        .collect()
}

/// Every page of `query`, `limit` at a time, following `next_cursor`.
async fn walk(w: &TestWarren, query: &[(&str, &str)], limit: &str) -> Vec<String> {
    let mut all = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut q: Vec<(&str, &str)> = query.to_vec();
        q.push(("limit", limit));
        if let Some(c) = &cursor {
            q.push(("cursor", c));
        }
        let (status, page) = search(w, &q).await;
        assert_eq!(status, 200, "{page}");
        all.extend(ids(&page));
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return all,
        }
    }
}

/// `warren jobs list ARGS` on the test's store, with a configuration naming its queues.
fn warren_jobs(w: &TestWarren, config: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_warren"))
        .args(["--config"])
        .arg(config)
        .args(["jobs", "list"])
        .args(args)
        .current_dir(w.dir())
        .env("WARREN_STORE_URL", w.store().url())
        .env_remove("WARREN_BIND")
        .output()
        .expect("run warren jobs list")
}

fn cli_config(w: &TestWarren) -> std::path::PathBuf {
    let path = w.dir().join("cli.toml");
    let text = format!(
        "[queues.\"{}\"]\nhandler = \"noop\"\n[queues.\"{}\"]\nhandler = \"noop\"\n",
        w.q("work"),
        w.q("later")
    );
    std::fs::write(&path, text).expect("write cli.toml");
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_filter_finds_exactly_the_matching_jobs_over_http_and_cli() {
    // `later` runs one job at a time and holds its first: the others stay queued.
    let (gate, held) = common::Gate::new();
    let w = Setup::new()
        .queue("work", "handler = \"noop\"")
        .handler("work", failing_on_request())
        .queue("later", "handler = \"noop\"\nprefetch = 1")
        .handler("later", held)
        .start()
        .await;
    let (work, later) = (w.q("work"), w.q("later"));
    let post = |alias: &'static str, body: Value, headers: Vec<(&'static str, String)>| {
        let w = &w;
        async move {
            let mut req = w
                .http
                .post(format!("{}/v1/queues/{}/jobs", w.base, w.q(alias)))
                .json(&body);
            for (k, v) in headers {
                req = req.header(k, v);
            }
            accepted_id(req.send().await.expect("POST")).await
        }
    };
    // Oldest first: 6 jobs on `work` (two fail), then a time mark, then 3 jobs on `later`
    // (the first runs and is held there, the others stay queued).
    let mut work_ids = Vec::new();
    for n in 0..6 {
        let headers = match n {
            1 | 2 => vec![("x-correlation-id", "order-77".to_owned())],
            3 => vec![("idempotency-key", "k-3".to_owned())],
            _ => vec![],
        };
        let body = json!({"payload": {"n": n, "fail": n == 2 || n == 4}});
        work_ids.push(post("work", body, headers).await);
    }
    tokio::time::sleep(Duration::from_millis(5)).await;
    let mark = humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string();
    tokio::time::sleep(Duration::from_millis(5)).await;
    let mut later_ids = Vec::new();
    for n in 0..3 {
        later_ids.push(post("later", json!({"payload": {"n": n}}), vec![]).await);
        if n == 0 {
            gate.started.notified().await;
        }
    }
    w.wait_status(&later_ids[0], "running", Duration::from_secs(15))
        .await;
    for (n, id) in work_ids.iter().enumerate() {
        let status = if n == 2 || n == 4 {
            "dead"
        } else {
            "succeeded"
        };
        w.wait_status(id, status, Duration::from_secs(15)).await;
    }
    let newest_first = |v: &[&String]| v.iter().rev().map(|s| (*s).clone()).collect::<Vec<_>>();
    let all: Vec<&String> = work_ids.iter().chain(&later_ids).collect();

    let cases: Vec<(Query<'_>, Vec<String>)> = vec![
        (vec![], newest_first(&all)),
        (
            vec![("queue", later.as_str())],
            newest_first(&later_ids.iter().collect::<Vec<_>>()),
        ),
        (
            vec![("status", "dead")],
            vec![work_ids[4].clone(), work_ids[2].clone()],
        ),
        (
            vec![("status", "dead"), ("status", "queued")],
            newest_first(&[&work_ids[2], &work_ids[4], &later_ids[1], &later_ids[2]]),
        ),
        (
            vec![("queue", work.as_str()), ("status", "succeeded")],
            newest_first(&[&work_ids[0], &work_ids[1], &work_ids[3], &work_ids[5]]),
        ),
        (
            vec![("created_after", mark.as_str())],
            newest_first(&later_ids.iter().collect::<Vec<_>>()),
        ),
        (
            vec![("created_before", mark.as_str())],
            newest_first(&work_ids.iter().collect::<Vec<_>>()),
        ),
        (
            vec![("correlation_id", "order-77")],
            vec![work_ids[2].clone(), work_ids[1].clone()],
        ),
        (vec![("idempotency_key", "k-3")], vec![work_ids[3].clone()]),
        (
            vec![("error_contains", "bad input IN RECORD 4")],
            vec![work_ids[4].clone()],
        ),
        (vec![("error_contains", "record _")], vec![]),
    ];
    let config = cli_config(&w);
    for (query, want) in &cases {
        for limit in ["1", "2", "500"] {
            assert_eq!(
                &walk(&w, query, limit).await,
                want,
                "{query:?} limit {limit}"
            );
        }
        // The CLI, on the store directly, says the same.
        let mut args: Vec<String> = vec!["--json".into(), "--limit".into(), "500".into()];
        for (k, v) in query {
            args.push(format!("--{}", k.replace('_', "-")));
            args.push((*v).to_owned());
        }
        let out = warren_jobs(
            &w,
            &config,
            &args.iter().map(String::as_str).collect::<Vec<_>>(),
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let cli: Value = serde_json::from_slice(&out.stdout).expect("CLI prints JSON");
        assert_eq!(&ids(&cli), want, "CLI {args:?}");
        let (_, http) = search(&w, &[query.clone(), vec![("limit", "500")]].concat()).await;
        assert_eq!(cli, http, "the CLI prints the API's JSON for {query:?}");
    }

    // A page is whole jobs as GET /v1/jobs/{id} shows them.
    let (_, dead) = search(&w, &[("status", "dead"), ("limit", "1")]).await;
    assert_eq!(dead["jobs"][0], w.job(&work_ids[4]).await);
    assert!(dead["next_cursor"].is_string());

    // The CLI's table, and its hint, whose command fetches the next page.
    let out = warren_jobs(&w, &config, &["--limit", "4"]);
    assert!(out.status.success());
    let table = String::from_utf8_lossy(&out.stdout).into_owned();
    let hint = table
        .lines()
        .find_map(|l| l.strip_prefix("next page: warren jobs list "))
        .unwrap_or_else(|| panic!("no next-page hint in:\n{table}"));
    for id in newest_first(&all).iter().take(4) {
        assert!(table.contains(id.as_str()), "{id} in\n{table}");
    }
    let next = warren_jobs(&w, &config, &hint.split(' ').collect::<Vec<_>>());
    assert!(
        next.status.success(),
        "{}",
        String::from_utf8_lossy(&next.stderr)
    );
    let next = String::from_utf8_lossy(&next.stdout).into_owned();
    let second: Vec<String> = newest_first(&all).into_iter().skip(4).take(4).collect();
    for id in &second {
        assert!(
            next.contains(id.as_str()),
            "{id} on the second page:\n{next}"
        );
    }
    assert!(
        !next.contains(work_ids[5].as_str()),
        "no job of the first page again"
    );
    gate.release.notify_one();
}

#[tokio::test]
async fn bad_values_are_400_and_an_unconfigured_queue_404() {
    let w = Setup::new()
        .queue("work", "handler = \"noop\"")
        .queue("later", "handler = \"noop\"")
        .start()
        .await;
    for query in [
        vec![("limit", "0")],
        vec![("limit", "501")],
        vec![("limit", "ten")],
        vec![("cursor", "not-a-cursor")],
        vec![("status", "finished")],
        vec![("created_after", "yesterday")],
        vec![("queue", "a"), ("queue", "b")],
        vec![("error_contains", "")],
        vec![("sort", "id")],
    ] {
        let (status, body) = search(&w, &query).await;
        assert_eq!(status, 400, "{query:?}: {body}");
        assert_eq!(body["type"], "/problems/malformed-request", "{body}");
    }
    let (status, body) = search(&w, &[("queue", "no-such-queue")]).await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["type"], "/problems/unknown-queue");
    let (status, body) = search(&w, &[("status", "dead")]).await;
    assert_eq!(status, 200);
    assert_eq!(body, json!({"jobs": [], "next_cursor": null}));
    let config = cli_config(&w);
    let out = warren_jobs(&w, &config, &["--queue", "no-such-queue"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no queue named `no-such-queue`"));
    let out = warren_jobs(&w, &config, &["--cursor", "junk"]);
    assert!(!out.status.success());
}
