//! The RabbitMQ the benches run against and the names of the queues they declare on it,
//! shared by the `e2e` and `dlq` benches (each includes this file with `#[path]`).

pub(crate) fn amqp_url() -> String {
    std::env::var("WARREN_TEST_AMQP_URL")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned())
}

/// `b-<name>-<random>`.
pub(crate) fn unique(name: &str) -> String {
    format!(
        "b-{name}-{}",
        &uuid::Uuid::now_v7().simple().to_string()[20..]
    )
}
