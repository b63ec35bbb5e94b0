//! `GET /openapi.json` describes every route the intake serves, with the methods it serves
//! them with, and is a valid OpenAPI 3.1 document whose references all resolve; its
//! `security` says what this server checks (nothing without tokens, bearer scopes with
//! them). tests/api_properties.rs checks the server against it request by request.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::Setup;
use serde_json::Value;

/// The paths the router serves, read from its source, the route table in
/// src/intake/routes.rs (lines `METHOD "PATH" => handler, SCOPE;`): the test follows the router
/// as it grows.
fn router_paths() -> Vec<String> {
    let src = std::fs::read_to_string(common::repo().join("src/intake/routes.rs"))
        .expect("src/intake/routes.rs is readable");
    let mut paths = Vec::new();
    for line in src.lines() {
        let line = line.trim_start();
        let Some((method, rest)) = line.split_once(' ') else {
            continue;
        };
        if !["GET", "POST", "PUT", "PATCH", "DELETE"].contains(&method) {
            continue;
        }
        let Some(lit) = rest.strip_prefix('"') else {
            continue;
        };
        if let Some(end) = lit.find('"')
            && lit[end..].starts_with("\" =>")
        {
            paths.push(lit[..end].to_owned());
        }
    }
    paths.sort();
    paths.dedup();
    assert!(
        paths.len() >= 10,
        "expected the route table in src/intake/routes.rs, found {paths:?}"
    );
    paths
}

/// Every `"$ref"` value anywhere in `v`.
fn refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                if k == "$ref" {
                    out.push(v.as_str().unwrap_or_default().to_owned());
                } else {
                    refs(v, out);
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
        _ => {}
    }
}

#[tokio::test]
async fn every_route_is_in_the_spec_and_the_spec_is_valid_openapi() {
    let w = Setup::new()
        .queue("api", "handler = \"noop\"")
        .role(warren::Role::Intake)
        .start()
        .await;
    let resp = w
        .http
        .get(format!("{}/openapi.json", w.base))
        .send()
        .await
        .expect("GET /openapi.json");
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .expect("ascii")
            .starts_with("application/json")
    );
    let text = resp.text().await.expect("body");

    // It parses as an OpenAPI 3.1 document, with a version oas3 accepts.
    let spec = oas3::from_json(&text).expect("the document parses as OpenAPI 3.1");
    spec.validate_version()
        .expect("a supported OpenAPI version");
    let doc: Value = serde_json::from_str(&text).expect("JSON");
    assert!(doc["openapi"].as_str().expect("openapi").starts_with("3.1"));

    // Every reference resolves to a component.
    let mut all = Vec::new();
    refs(&doc, &mut all);
    assert!(!all.is_empty());
    for r in &all {
        let name = r
            .strip_prefix("#/components/schemas/")
            .unwrap_or_else(|| panic!("unexpected $ref {r}"));
        assert!(
            doc["components"]["schemas"].get(name).is_some(),
            "$ref {r} does not resolve"
        );
    }

    // Each operation: path parameters declared, responses given, errors as problem documents,
    // request bodies resolvable.
    let mut spec_methods: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (path, method, op) in spec.operations() {
        spec_methods
            .entry(path.clone())
            .or_default()
            .insert(method.as_str().to_owned());
        let params = op.parameters(&spec).expect("parameters resolve");
        for segment in path.split('/') {
            if let Some(name) = segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                assert!(
                    params.iter().any(|p| p.name == name),
                    "{method} {path}: path parameter `{name}` is not declared"
                );
            }
        }
        op.request_body(&spec).expect("request body resolves");
        let responses = &doc["paths"][&path][method.as_str().to_lowercase()]["responses"];
        let codes = responses.as_object().expect("responses object");
        assert!(!codes.is_empty(), "{method} {path} has no responses");
        for (code, r) in codes {
            // `/readyz` answers 503 with its own report of what is missing.
            if (code.starts_with('4') || code.starts_with('5')) && path != "/readyz" {
                let schema = &r["content"]["application/problem+json"]["schema"];
                assert_eq!(
                    schema["$ref"], "#/components/schemas/Problem",
                    "{method} {path} {code} should be a problem document: {r}"
                );
            }
        }
    }

    // The problem types are listed.
    let types = doc["components"]["schemas"]["ProblemType"]["enum"]
        .as_array()
        .expect("ProblemType enum");
    for slug in [
        "unknown-queue",
        "queue-full",
        "unavailable",
        "malformed-request",
    ] {
        assert!(
            types.contains(&Value::String(format!("/problems/{slug}"))),
            "{slug} missing"
        );
    }

    // Without tokens nothing is checked, so nothing is required.
    assert!(
        doc["components"]["securitySchemes"].is_null(),
        "{}",
        doc["components"]["securitySchemes"]
    );
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("item") {
            assert!(op["security"].is_null(), "{method} {path} states security");
            assert!(
                op["responses"]["401"].is_null(),
                "{method} {path} lists 401"
            );
        }
    }

    // Every route the router serves is in the spec, with exactly the methods the router
    // allows (axum answers an unrouted method with 405 and `Allow`).
    let queue = w.q("api");
    let job = uuid::Uuid::now_v7().to_string();
    for path in router_paths() {
        let documented = spec_methods
            .get(&path)
            .unwrap_or_else(|| panic!("route {path} is not in /openapi.json"));
        let url = format!(
            "{}{}",
            w.base,
            path.replace("{queue}", &queue).replace("{id}", &job)
        );
        let resp = w
            .http
            .request(reqwest::Method::OPTIONS, &url)
            .send()
            .await
            .expect("OPTIONS");
        assert_eq!(resp.status(), 405, "OPTIONS {path}");
        assert_eq!(
            resp.headers()["content-type"],
            "application/problem+json",
            "OPTIONS {path}"
        );
        let allow: BTreeSet<String> = resp.headers()["allow"]
            .to_str()
            .expect("ascii")
            .split(',')
            .map(|m| m.trim().to_owned())
            .filter(|m| m != "HEAD" && !m.is_empty())
            .collect();
        assert_eq!(
            &allow, documented,
            "{path}: the router allows {allow:?}, the spec documents {documented:?}"
        );
    }
    // … and nothing more.
    let routed: BTreeSet<String> = router_paths().into_iter().collect();
    for path in spec_methods.keys() {
        assert!(
            routed.contains(path),
            "the spec documents {path}, which the router does not serve"
        );
    }
    w.stop().await.expect("clean stop");
}

#[tokio::test]
async fn with_tokens_the_spec_states_bearer_security_as_the_middleware_enforces_it() {
    const ADMIN: &str = "admin:0123456789abcdef0123456789abcdef-admin";
    let w = Setup::new()
        .queue("api", "handler = \"noop\"")
        .role(warren::Role::Intake)
        .tokens(ADMIN)
        .start()
        .await;
    let doc: Value = w
        .http
        .get(format!("{}/openapi.json", w.base))
        .send()
        .await
        .expect("GET /openapi.json is open")
        .json()
        .await
        .expect("JSON");
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    let op = |path: &str, method: &str| doc["paths"][path][method].clone();
    // The DLQ and cancel need admin (401 and 403), submitting a token (401), probes nothing.
    for (path, method) in [
        ("/v1/queues/{queue}/dead", "get"),
        ("/v1/queues/{queue}/dead/purge", "post"),
        ("/v1/jobs/{id}/cancel", "post"),
    ] {
        let o = op(path, method);
        assert_eq!(
            o["security"][0]["bearer"][0], "admin",
            "{method} {path}: {o}"
        );
        assert!(o["responses"]["403"].is_object() && o["responses"]["401"].is_object());
    }
    let submit = op("/v1/queues/{queue}/jobs", "post");
    assert_eq!(submit["security"][0]["bearer"][0], "jobs", "{submit}");
    assert!(submit["responses"]["401"].is_object());
    assert!(submit["responses"]["403"].is_null());
    for path in ["/readyz", "/healthz", "/metrics", "/openapi.json"] {
        assert!(op(path, "get")["security"].is_null(), "{path}");
    }
    w.stop().await.expect("clean stop");
}
