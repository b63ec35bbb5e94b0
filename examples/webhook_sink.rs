//! A local webhook receiver for the sample `webhooks` queue: listens on 127.0.0.1:9090 (or the
//! address in the first argument), answers 200 to every POST and prints the job id, attempt and
//! body it got.
//!
//! Given the queue's signing secret, it verifies every request as a Standard Webhooks
//! receiver would (<https://github.com/standard-webhooks/standard-webhooks/blob/main/spec/standard-webhooks.md>,
//! "Verifying signatures"), with the specification's reference library (the `standardwebhooks`
//! crate, not warren's own signing code): the `webhook-signature` must hold a `v1` signature
//! of `{webhook-id}.{webhook-timestamp}.{body}` under the secret, and `webhook-timestamp`
//! must be within 5 minutes of the receiver's clock. A good request prints `signature ok`
//! and the job; any other is answered `401` and printed with the reason.
//!
//! ```text
//! cargo run --example webhook_sink [ADDR]                                  # no verification
//! cargo run --example webhook_sink -- --secret-file examples/webhook-secret.demo
//! WEBHOOK_SECRET=whsec_… cargo run --example webhook_sink [ADDR]
//! cargo run --example webhook_sink -- --secret whsec_… [ADDR]
//! ```
//!
//! A secret text may hold several `whsec_…` secrets (spaces or newlines between them; lines
//! starting with `#` are comments), as during a rotation: a request passes when one verifies.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use standardwebhooks::Webhook;

const USAGE: &str = "usage: webhook_sink [ADDR] [--secret whsec_… | --secret-file PATH] \
                     (or WEBHOOK_SECRET=whsec_… in the environment)";

/// The listen address and the secrets' text (if any), from the arguments and environment.
fn parse_args() -> Result<(String, Option<String>), String> {
    let mut addr = None;
    let mut secret = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--secret" => secret = Some(args.next().ok_or("--secret needs a value")?),
            "--secret-file" => {
                let path = args.next().ok_or("--secret-file needs a path")?;
                secret = Some(
                    std::fs::read_to_string(&path)
                        .map_err(|e| format!("cannot read the secret file {path}: {e}"))?,
                );
            }
            "-h" | "--help" => return Err(USAGE.to_owned()),
            other if other.starts_with('-') => return Err(format!("unknown option {other}")),
            other => addr = Some(other.to_owned()),
        }
    }
    let secret = secret.or_else(|| std::env::var("WEBHOOK_SECRET").ok());
    Ok((
        addr.unwrap_or_else(|| "127.0.0.1:9090".to_owned()),
        secret.filter(|s| !s.trim().is_empty()),
    ))
}

/// The verifiers of a text of `whsec_…` secrets.
fn verifiers(text: &str) -> Result<Vec<Webhook>, String> {
    let secrets: Vec<&str> = text
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .flat_map(str::split_whitespace)
        .collect();
    if secrets.is_empty() {
        return Err("the secret text holds no secret".to_owned());
    }
    secrets
        .iter()
        .enumerate()
        .map(|(i, s)| {
            if !s.starts_with("whsec_") {
                return Err(format!("secret {} does not start with whsec_", i + 1));
            }
            Webhook::new(s).map_err(|e| format!("secret {} is not valid: {e}", i + 1))
        })
        .collect()
}

/// Why a request fails verification under every secret, or `None` when one accepts it.
fn rejection(verifiers: &[Webhook], headers: &HeaderMap, body: &[u8]) -> Option<String> {
    let mut reason = None;
    for v in verifiers {
        match v.verify(body, headers) {
            Ok(()) => return None,
            Err(e) => {
                reason.get_or_insert_with(|| match e {
                    standardwebhooks::WebhookError::InvalidSignature => {
                        "signature invalid (wrong secret or altered id, timestamp or body)"
                            .to_owned()
                    }
                    standardwebhooks::WebhookError::TimestampTooOldError => {
                        "signature timestamp too old (more than 5 minutes ago)".to_owned()
                    }
                    standardwebhooks::WebhookError::FutureTimestampError => {
                        "signature timestamp too far in the future (more than 5 minutes ahead)"
                            .to_owned()
                    }
                    other => other.to_string(),
                });
            }
        }
    }
    reason
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let (addr, secret) = match parse_args() {
        Ok(parsed) => parsed,
        Err(msg) => {
            eprintln!("webhook_sink: {msg}\n{USAGE}");
            std::process::exit(2);
        }
    };
    let verifiers = match secret.as_deref().map(verifiers).transpose() {
        Ok(v) => Arc::new(v.unwrap_or_default()),
        Err(msg) => {
            eprintln!("webhook_sink: {msg}");
            std::process::exit(2);
        }
    };
    let checking = Arc::clone(&verifiers);
    let app = Router::new().route(
        "/{*path}",
        post(move |headers: HeaderMap, body: Bytes| {
            let verifiers = Arc::clone(&checking);
            async move {
                let h = |k: &str| {
                    headers
                        .get(k)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("-")
                        .to_owned()
                };
                let text = String::from_utf8_lossy(&body);
                let job = format!(
                    "job {} attempt {} correlation {}",
                    h("x-warren-job-id"),
                    h("x-warren-attempt"),
                    h("x-correlation-id")
                );
                if verifiers.is_empty() {
                    println!("{job}: {text}");
                    return (StatusCode::OK, r#"{"received":true}"#.to_owned());
                }
                match rejection(&verifiers, &headers, &body) {
                    None => {
                        println!("signature ok: {job} webhook-id {}: {text}", h("webhook-id"));
                        (StatusCode::OK, r#"{"received":true}"#.to_owned())
                    }
                    Some(reason) => {
                        println!(
                            "rejected (401): {job} webhook-id {}: {reason}",
                            h("webhook-id")
                        );
                        (StatusCode::UNAUTHORIZED, reason)
                    }
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    let local = listener.local_addr()?;
    match verifiers.len() {
        0 => println!(
            "webhook sink listening on http://{local}/ (no secret: not verifying signatures)"
        ),
        n => println!(
            "webhook sink listening on http://{local}/ (verifying signatures with {n} secret(s))"
        ),
    }
    axum::serve(listener, app).await
}
