//! A client generated from `/openapi.json` works: openapi-python-client generates a Python
//! package from the document of a live `warren run`, and tests/api/client_check.py uses it
//! to post a job, read it until its handler failed it for good, list the queues, peek at its
//! dead letter and requeue it, checking every typed result. Without tokens (a plain
//! `Client`) and with them (an `AuthenticatedClient` holding an admin token).

mod common;
#[path = "api/python.rs"]
mod python;

use std::process::Command;

use python::Warren;

async fn generate_and_use(tag: &str, admin: Option<&str>) {
    // Every job fails (exit 1); with the job's max_attempts of 1 it is dead at once.
    let handler = format!(
        "handler = {{ exec = [\"{}\"] }}\nbackoff = {{ base = \"100ms\", max = \"1s\" }}",
        common::repo().join("workers/examples/fail.sh").display()
    );
    let tokens = admin.map(|t| format!("admin:{t}"));
    let w = Warren::start(tag, &handler, tokens.as_deref()).await;

    let doc = reqwest::get(format!("{}/openapi.json", w.base))
        .await
        .expect("GET /openapi.json")
        .text()
        .await
        .expect("body");
    std::fs::write(w.path("openapi.json"), doc).expect("write the document");
    let out_dir = w.path("client");
    // The generator formats its output with ruff, from the same environment.
    let path = format!(
        "{}:{}",
        python::pyenv().join("bin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let generated = python::run(
        Command::new(python::tool("openapi-python-client"))
            .args(["generate", "--path"])
            .arg(w.path("openapi.json"))
            .args(["--meta", "none", "--output-path"])
            .arg(out_dir.join("warren_client"))
            .env("PATH", &path)
            .current_dir(w.dir()),
    );
    let text = python::shown(&generated);
    assert!(
        generated.status.success(),
        "openapi-python-client failed: {text}"
    );
    assert!(
        !text.contains("Warning"),
        "openapi-python-client could not read all of the document: {text}"
    );

    let used = python::run(
        Command::new(python::tool("python"))
            .arg(common::repo().join("tests/api/client_check.py"))
            .env("WARREN_CLIENT_DIR", &out_dir)
            .env("WARREN_BASE", &w.base)
            .env("WARREN_QUEUE", &w.queue)
            .env("WARREN_TOKEN", admin.unwrap_or(""))
            .current_dir(w.dir()),
    );
    assert!(
        used.status.success(),
        "the generated client failed: {}\n--- warren's log ---\n{}",
        python::shown(&used),
        w.log()
    );
    assert!(w.stop().await, "warren did not stop cleanly");
}

#[tokio::test]
async fn a_generated_client_posts_reads_lists_and_requeues() {
    generate_and_use("client", None).await;
}

#[tokio::test]
async fn a_generated_client_with_a_token_does_the_same() {
    let admin = format!("client-admin-{}", uuid::Uuid::now_v7().simple());
    generate_and_use("clientauth", Some(&admin)).await;
}
