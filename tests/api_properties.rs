//! The HTTP API keeps its own OpenAPI document, checked by a property-based API tester the
//! way a new user would: schemathesis (tests/api/schemathesis.toml) against `/openapi.json`
//! of a live `warren run` on loopback, with every check (server errors, status codes,
//! content types, headers and bodies as documented, schema-valid requests accepted,
//! schema-violating ones refused, undocumented methods answered 405, missing auth refused,
//! deleted resources gone, …), in every phase (examples, coverage, fuzzing, and the stateful
//! phase that chains operations through the document's links), on every operation the
//! document lists: the operations added later are covered the day they are documented.
//!
//! Once without API tokens (the document then states no security) and once with tokens
//! (bearer with scopes; schemathesis sends the admin token and checks that a request without
//! it is refused). Any failure fails the test, with schemathesis' report and the seed: rerun
//! with `WARREN_ST_SEED=<seed>` to get the same examples. The two runs go at once.

mod common;
#[path = "api/python.rs"]
mod python;

use std::collections::BTreeMap;
use std::process::Command;

use python::Warren;
use serde_json::Value;

/// Fuzzed examples each operation that takes input must get, at least (the run asks for
/// 100 in the fuzzing phase; the coverage phase adds its own).
const MIN_EXAMPLES: usize = 100;

/// The seed: `WARREN_ST_SEED`, else a fresh one (printed, so a failure can be replayed).
fn seed() -> u64 {
    std::env::var("WARREN_ST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64 % 1_000_000_007)
        })
}

/// Runs schemathesis against `w` and fails with its output on any failure or error;
/// returns the test cases per operation (label `METHOD /path`) from its NDJSON report.
fn schemathesis(w: &Warren, token: Option<&str>) -> BTreeMap<String, usize> {
    let seed = seed();
    let mut config = std::fs::read_to_string(common::repo().join("tests/api/schemathesis.toml"))
        .expect("tests/api/schemathesis.toml");
    if token.is_some() {
        config.push_str("\n[auth.openapi.bearer]\nbearer = \"${WARREN_ST_TOKEN}\"\n");
    }
    let config_path = w.path("schemathesis.toml");
    std::fs::write(&config_path, config).expect("config");
    let reports = w.path("reports");
    let out = python::run(
        Command::new(python::tool("st"))
            .arg("--config-file")
            .arg(&config_path)
            .args(["run", &format!("{}/openapi.json", w.base)])
            .args(["--checks", "all"])
            .args(["--phases", "examples,coverage,fuzzing,stateful"])
            .args(["--max-examples", &MIN_EXAMPLES.to_string()])
            .args(["--seed", &seed.to_string()])
            // One worker: hypothesis' lambda-source cache is not thread-safe (a second
            // worker turns into "Runtime Error: KeyError" now and then).
            .args(["--workers", "1"])
            .args(["--request-timeout", "30"])
            .args(["--generation-database", "none"])
            .args(["--report", "ndjson", "--report-dir"])
            .arg(&reports)
            .args(["--no-color", "--output-truncate", "true"])
            .current_dir(w.dir())
            .env("WARREN_ST_QUEUE", &w.queue)
            .env("WARREN_ST_TOKEN", token.unwrap_or(""))
            .env_remove("HTTP_PROXY")
            .env_remove("http_proxy"),
    );
    assert!(
        out.status.success(),
        "schemathesis found failures (seed {seed}; rerun with WARREN_ST_SEED={seed}); {}\n--- warren's log ---\n{}",
        python::shown(&out),
        w.log()
    );
    eprintln!(
        "schemathesis passed (seed {seed}, tokens: {}):\n{}",
        token.is_some(),
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.contains("generated") || l.contains("passed in"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    cases_per_operation(&reports)
}

/// Test cases per operation label, summed over the NDJSON reports in `dir`.
fn cases_per_operation(dir: &std::path::Path) -> BTreeMap<String, usize> {
    let mut cases = BTreeMap::new();
    for entry in std::fs::read_dir(dir).expect("report dir").flatten() {
        let text = std::fs::read_to_string(entry.path()).expect("report");
        for line in text.lines() {
            let Ok(event) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            let Some(finished) = event.get("ScenarioFinished") else {
                continue;
            };
            let recorder = &finished["recorder"];
            let label = recorder["label"].as_str().unwrap_or_default().to_owned();
            let n = recorder["cases"]
                .as_object()
                .map_or(0, serde_json::Map::len);
            *cases.entry(label).or_insert(0) += n;
        }
    }
    cases
}

/// Every operation of the document was tested; those that take input (path, query,
/// header or body) at least [`MIN_EXAMPLES`] times. The `queue` path parameter is not input
/// here: tests/api/schemathesis.toml fixes it to the test's queue, so an operation whose only
/// parameter it is (`POST /v1/queues/{queue}/pause`) has a single request to make.
fn assert_every_operation_tested(w_doc: &Value, cases: &BTreeMap<String, usize>) {
    let paths = w_doc["paths"].as_object().expect("paths");
    for (path, item) in paths {
        // schemathesis leaves out the operation that served it the document (it takes no
        // input; tests/openapi.rs checks it).
        if path == "/openapi.json" {
            continue;
        }
        for (method, op) in item.as_object().expect("path item") {
            let label = format!("{} {path}", method.to_uppercase());
            let n = cases.get(&label).copied().unwrap_or(0);
            let takes_input = op["requestBody"].is_object()
                || op["parameters"].as_array().is_some_and(|ps| {
                    ps.iter()
                        .any(|p| !(p["in"] == "path" && p["name"] == "queue"))
                });
            let least = if takes_input { MIN_EXAMPLES } else { 1 };
            assert!(
                n >= least,
                "{label}: schemathesis ran {n} test cases, expected at least {least}; all: {cases:?}"
            );
        }
    }
    eprintln!("test cases per operation: {cases:?}");
}

async fn document(w: &Warren) -> Value {
    reqwest::get(format!("{}/openapi.json", w.base))
        .await
        .expect("GET /openapi.json")
        .json()
        .await
        .expect("JSON")
}

async fn check(tag: &str, tokens: Option<&str>, token: Option<&str>) {
    let w = Warren::start(tag, "handler = \"noop\"", tokens).await;
    let doc = document(&w).await;
    let url_w = &w;
    let cases = tokio::task::block_in_place(|| schemathesis(url_w, token));
    assert_every_operation_tested(&doc, &cases);
    assert!(w.stop().await, "warren did not stop cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_keeps_its_document_without_tokens() {
    check("stnoauth", None, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_keeps_its_document_with_tokens() {
    let admin = format!("st-admin-{}", uuid::Uuid::now_v7().simple());
    let jobs = format!("st-jobs-{}", uuid::Uuid::now_v7().simple());
    check(
        "stauth",
        Some(&format!("admin:{admin},jobs:{jobs}")),
        Some(&admin),
    )
    .await;
}
