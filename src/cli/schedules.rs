//! `warren schedules`: the configured schedules, their next run and latest job.

use warren::{App, Config};

/// Prints every schedule as a table (or JSON, as `GET /v1/schedules`).
pub(crate) async fn run(config: Config, json: bool) -> anyhow::Result<()> {
    let app = App::builder(config).build().await?;
    let views =
        warren::schedule::views(app.config(), &**app.store(), warren::store::now_ms()).await?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({ "schedules": views }))?
        );
        return Ok(());
    }
    if views.is_empty() {
        eprintln!("no schedules are configured (add a [schedules.NAME] table to the config)");
        return Ok(());
    }
    let dash = |v: Option<String>| v.unwrap_or_else(|| "-".to_owned());
    println!(
        "{:<24} {:<16} {:<18} {:<16} {:<24} {:<24} {:<36} {:<9}",
        "SCHEDULE", "QUEUE", "CRON", "TIMEZONE", "NEXT RUN", "LAST RUN", "LAST JOB", "STATUS"
    );
    for v in views {
        println!(
            "{:<24} {:<16} {:<18} {:<16} {:<24} {:<24} {:<36} {:<9}",
            v.name,
            v.queue,
            v.cron,
            v.timezone,
            dash(v.next_run),
            dash(v.last_run_at),
            dash(v.last_job_id.map(|id| id.to_string())),
            dash(v.last_job_status),
        );
    }
    Ok(())
}
