//! A local webhook receiver for the sample `webhooks` queue: listens on 127.0.0.1:9090 (or the
//! address in the first argument), answers 200 to every POST and prints the job id, attempt and
//! body it got.
//!
//! ```text
//! cargo run --example webhook_sink [ADDR]
//! ```

use axum::Router;
use axum::http::HeaderMap;
use axum::routing::post;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9090".to_owned());
    let app = Router::new().route(
        "/{*path}",
        post(|headers: HeaderMap, body: String| async move {
            let h = |k: &str| {
                headers
                    .get(k)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("-")
                    .to_owned()
            };
            println!(
                "job {} attempt {} correlation {}: {body}",
                h("x-warren-job-id"),
                h("x-warren-attempt"),
                h("x-correlation-id")
            );
            r#"{"received":true}"#
        }),
    );
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("webhook sink listening on http://{addr}/");
    axum::serve(listener, app).await
}
