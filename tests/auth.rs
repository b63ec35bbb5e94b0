//! Bearer tokens: without one nothing is accepted or shown, a `jobs` token submits and reads
//! jobs, only an `admin` token reaches the DLQ and cancels; health probes stay open.

mod common;

use common::{Raw, Setup};
use reqwest::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use serde_json::{Value, json};
use warren::Role;

const ADMIN: &str = "adm-4f1c2b7e9a8d6c5b4a3f2e1d0c9b8a7f";
const JOBS: &str = "job-0a1b2c3d4e5f60718293a4b5c6d7e8f9";

#[tokio::test]
async fn tokens_guard_jobs_and_only_admin_reaches_the_dlq_and_cancel() {
    let w = Setup::new()
        .queue("pay", "handler = \"noop\"")
        .role(Role::Intake)
        .tokens(&format!("admin:{ADMIN}, jobs:{JOBS}"))
        .start()
        .await;
    let q = w.q("pay");
    let raw = Raw::connect().await;
    let jobs_url = format!("{}/v1/queues/{q}/jobs", w.base);
    let body = json!({"payload": {"n": 1}});

    // No token, then an unknown one: 401 with a challenge, nothing published.
    let resp = w
        .http
        .post(&jobs_url)
        .json(&body)
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status(), 401);
    assert_eq!(
        resp.headers()[WWW_AUTHENTICATE].to_str().expect("ascii"),
        "Bearer realm=\"warren\""
    );
    assert_eq!(
        resp.headers()["content-type"].to_str().expect("ascii"),
        "application/problem+json"
    );
    let resp = w
        .http
        .post(&jobs_url)
        .header(AUTHORIZATION, format!("Bearer {ADMIN}x"))
        .json(&body)
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status(), 401);
    assert!(
        resp.headers()[WWW_AUTHENTICATE]
            .to_str()
            .expect("ascii")
            .contains("invalid_token")
    );
    assert_eq!(
        raw.depth(&q).await,
        Some(0),
        "nothing published without a token"
    );

    // A jobs token submits and reads.
    let resp = w
        .http
        .post(&jobs_url)
        .bearer_auth(JOBS)
        .json(&body)
        .send()
        .await
        .expect("post");
    let id = common::accepted_id(resp).await;
    let job_url = format!("{}/v1/jobs/{id}", w.base);
    let resp = w.http.get(&job_url).send().await.expect("get");
    assert_eq!(resp.status(), 401, "job status needs a token too");
    let resp = w
        .http
        .get(&job_url)
        .bearer_auth(JOBS)
        .send()
        .await
        .expect("get");
    assert_eq!(resp.status(), 200);

    // ...but neither cancels nor sees the DLQ.
    let resp = w
        .http
        .post(format!("{job_url}/cancel"))
        .bearer_auth(JOBS)
        .send()
        .await
        .expect("cancel");
    assert_eq!(resp.status(), 403);
    assert!(
        resp.headers()[WWW_AUTHENTICATE]
            .to_str()
            .expect("ascii")
            .contains("error=\"insufficient_scope\", scope=\"admin\"")
    );
    let dead_url = format!("{}/v1/queues/{q}/dead", w.base);
    for req in [
        w.http.get(&dead_url),
        w.http.post(format!("{dead_url}/purge")),
        w.http.post(format!("{dead_url}/requeue")),
    ] {
        let resp = req.bearer_auth(JOBS).send().await.expect("dlq call");
        assert_eq!(resp.status(), 403);
    }
    let job: Value = w
        .http
        .get(&job_url)
        .bearer_auth(JOBS)
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(job["status"], "queued", "a refused cancel changes nothing");

    // An admin token does both.
    let resp = w
        .http
        .get(&dead_url)
        .bearer_auth(ADMIN)
        .send()
        .await
        .expect("peek");
    assert_eq!(resp.status(), 200);
    let resp = w
        .http
        .post(format!("{job_url}/cancel"))
        .header(AUTHORIZATION, format!("bearer {ADMIN}"))
        .send()
        .await
        .expect("cancel");
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.json::<Value>().await.expect("json")["status"],
        "cancelled"
    );

    // Probes stay open for load balancers and orchestrators.
    for path in ["/healthz", "/readyz"] {
        let resp = w
            .http
            .get(format!("{}{path}", w.base))
            .send()
            .await
            .expect("probe");
        assert_eq!(resp.status(), 200, "{path}");
    }
    w.stop().await.expect("clean stop");
}
