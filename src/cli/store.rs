//! `warren store status|migrate|copy`: the status store, from the command line.

use anyhow::Context as _;
use clap::Subcommand;
use warren::Config;
use warren::store::{self, OpenOptions};

/// What `warren store` does.
#[derive(Subcommand, Debug)]
pub(crate) enum StoreAction {
    /// Schema version, jobs by queue and status, the oldest job (changes nothing).
    Status {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Apply the migrations this binary carries (start-up does the same; this does only that).
    Migrate,
    /// Copy every job from one store to another (e.g. SQLite to PostgreSQL), resumably, with
    /// the counts checked at the end. Stop warren on the source first.
    Copy {
        /// The store to read: `sqlite://PATH` or `postgres://USER:PASSWORD@HOST:PORT/DB`.
        #[arg(long, value_name = "URL")]
        from: String,
        /// The store to write (migrated first; an interrupted copy resumes after its last job).
        #[arg(long, value_name = "URL")]
        to: String,
        /// Jobs per page (one transaction each).
        #[arg(long, default_value_t = store::copy::DEFAULT_PAGE)]
        page: u32,
    },
}

/// Runs `warren store copy`, which needs no configuration file.
pub(crate) async fn copy(from: &str, to: &str, page: u32) -> anyhow::Result<()> {
    let open = |url: &str| {
        let url = url.to_owned();
        async move {
            store::open(&OpenOptions::new(url.as_str()))
                .await
                .with_context(|| format!("cannot open {}", warren::redact(&url)))
        }
    };
    let (source, destination) = (open(from).await?, open(to).await?);
    let bar = crate::Bar::new("copying jobs");
    let stop = crate::stop_on_signal();
    let report = store::copy::copy(&*source, &*destination, page, &bar, &stop).await?;
    drop(bar);
    eprintln!(
        "{} job(s) read, {} new in the destination{}",
        report.read,
        report.inserted,
        if report.resumed {
            " (resumed after the destination's last job)"
        } else {
            ""
        }
    );
    if report.stopped {
        anyhow::bail!("stopped before the end; run the same command again to resume");
    }
    if !report.mismatches.is_empty() {
        for (queue, statuses) in &report.mismatches {
            for (status, (s, d)) in statuses {
                eprintln!("  {queue} {status}: {s} in the source, {d} in the destination");
            }
        }
        anyhow::bail!(
            "the stores' counts differ (above): was warren still writing to the source, or did the destination hold other jobs?"
        );
    }
    println!(
        "copied: {} and {} hold the same jobs by queue and status",
        warren::redact(from),
        warren::redact(to)
    );
    Ok(())
}

/// Runs `warren store status` or `warren store migrate` on the configured store.
pub(crate) async fn run(config: &Config, action: StoreAction) -> anyhow::Result<()> {
    let mut opts = config.store_options();
    let shown = warren::redact(&opts.url);
    match action {
        StoreAction::Migrate => {
            let s = store::open(&opts).await?;
            let st = s.status().await?;
            println!(
                "{shown}: schema at version {} (this binary's newest: {})",
                st.schema_version.unwrap_or(0),
                st.binary_schema_version
            );
        }
        StoreAction::Status { json } => {
            opts.migrate = false;
            let s = store::open(&opts).await?;
            let st = s.status().await.with_context(|| {
                format!(
                    "cannot read the store {shown}; if it was never migrated: warren store migrate"
                )
            })?;
            if json {
                println!("{}", serde_json::to_string_pretty(&st)?);
                return Ok(());
            }
            let version = match st.schema_version {
                None => "none (run `warren store migrate`)".to_owned(),
                Some(v) if v == st.binary_schema_version => format!("{v} (current)"),
                Some(v) if v < st.binary_schema_version => format!(
                    "{v} (this binary migrates it to {} at start-up)",
                    st.binary_schema_version
                ),
                Some(v) => format!(
                    "{v} (NEWER than this binary's {}: upgrade warren)",
                    st.binary_schema_version
                ),
            };
            println!("store:   {shown} ({})", st.backend);
            println!("schema:  {version}");
            println!("jobs:    {}", st.total);
            if let Some(oldest) = st.oldest_created_at {
                let age = store::now_ms().saturating_sub(oldest).max(0);
                let age = std::time::Duration::from_secs(u64::try_from(age / 1000).unwrap_or(0));
                println!(
                    "oldest:  {} ({} ago)",
                    store::rfc3339_ms(oldest),
                    humantime::format_duration(age)
                );
            }
            if !st.counts.is_empty() {
                const STATUSES: [&str; 6] = [
                    "queued",
                    "running",
                    "retrying",
                    "succeeded",
                    "dead",
                    "cancelled",
                ];
                print!("\n{:<32}", "QUEUE");
                for s in STATUSES {
                    print!(" {:>10}", s.to_uppercase());
                }
                println!();
                for (queue, counts) in &st.counts {
                    print!("{queue:<32}");
                    for s in STATUSES {
                        print!(" {:>10}", counts.get(s).copied().unwrap_or(0));
                    }
                    println!();
                }
            }
        }
        StoreAction::Copy { .. } => anyhow::bail!("`warren store copy` runs without a config"),
    }
    Ok(())
}
