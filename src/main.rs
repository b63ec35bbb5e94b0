//! The `warren` command line (DESIGN §8). Errors become a message and exit code 1 here, at the
//! binary's edge.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use tokio_util::sync::CancellationToken;
use warren::{App, Config, Role};

#[path = "cli/jobs.rs"]
mod jobs_cli;
#[path = "cli/queues.rs"]
mod queues_cli;
#[path = "cli/schedules.rs"]
mod schedules_cli;
#[path = "cli/store.rs"]
mod store_cli;

/// warren: HTTP job intake → durable RabbitMQ messages → prefetch-limited workers.
#[derive(Parser, Debug)]
#[command(name = "warren", version, about, long_about = None)]
struct Cli {
    /// Configuration file [default: ./queues.toml]
    #[arg(long, global = true, env = "WARREN_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,

    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,

    #[command(subcommand)]
    command: Command,
}

#[derive(Copy, Clone, Debug, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the HTTP intake and the workers of every queue in one process (the main job).
    Run(ServeArgs),
    /// Run the HTTP intake only.
    Serve(ServeArgs),
    /// Run workers only.
    Work {
        /// Queue to work on; repeat for several [default: all configured queues].
        #[arg(long = "queue", short = 'q', value_name = "QUEUE")]
        queues: Vec<String>,
    },
    /// Declare or show the broker topology (exchanges, work queues, DLQs, bindings).
    Topology {
        #[command(subcommand)]
        action: TopologyAction,
    },
    /// Per queue: ready, unacked, consumers, retrying and dead (DLQ) messages and whether it
    /// is paused, as a table; or pause or resume a queue.
    Queues {
        /// Print JSON (as `GET /v1/queues`) instead of a table.
        #[arg(long)]
        json: bool,
        #[command(subcommand)]
        action: Option<queues_cli::QueuesAction>,
    },
    /// Show one job's status from the store, as JSON; with `--wait`, once it is final.
    ///
    /// Exit status: 0 when the job was shown (with `--wait`: and it is final: succeeded,
    /// dead or cancelled), 3 when `--wait` ended with the job not final yet, 1 on an error
    /// (an unknown job, a store that cannot be read).
    Job {
        /// The job id (a UUID, as returned by POST).
        id: String,
        /// Wait until the job is final (succeeded, dead, cancelled), at most this long: a
        /// duration such as `30s`, `500ms`, `5m`, or plain seconds. Woken by the process that
        /// finishes the job (through the broker), so it needs the broker as well as the store.
        #[arg(long, value_name = "DURATION", value_parser = parse_wait)]
        wait: Option<std::time::Duration>,
    },
    /// The schedules (`[schedules.NAME]`): cron, timezone, next run, the latest tick's job.
    Schedules {
        /// Print JSON (as `GET /v1/schedules`) instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Find jobs by queue, status, time, correlation id, key or error, and cancel many.
    Jobs {
        #[command(subcommand)]
        action: jobs_cli::JobsAction,
    },
    /// See, drain, replay, requeue and purge dead letters (every move is confirm-then-ack).
    ///
    /// Name `warren.unroutable` instead of a queue for delayed messages (retries, `delay_ms`)
    /// whose work queue was gone when their delay ended: `requeue` sends each back to the
    /// queue it is for once that queue is configured and declared again.
    Dlq {
        #[command(subcommand)]
        action: DlqAction,
    },
    /// The status store: schema and counts, migrations, copying jobs to another store.
    Store {
        #[command(subcommand)]
        action: store_cli::StoreAction,
    },
}

/// Flags of the commands that serve HTTP.
#[derive(clap::Args, Debug)]
struct ServeArgs {
    /// Serve a non-loopback bind without API tokens: anyone who can reach the port may submit
    /// jobs, cancel them and empty the DLQs. Without this flag warren refuses to start so.
    #[arg(long)]
    insecure_no_auth: bool,
}

#[derive(Subcommand, Debug)]
enum DlqAction {
    /// Per queue: dead letters waiting and the oldest one's age.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show dead letters (id, attempts, failed-at, last error, payload excerpt); leaves them in the DLQ.
    Peek {
        /// The work queue whose DLQ to look at (or `warren.unroutable`).
        queue: String,
        /// How many.
        #[arg(short = 'n', long, default_value_t = 10)]
        n: usize,
        /// Print the full archive lines as JSON Lines.
        #[arg(long)]
        json: bool,
    },
    /// Move dead letters to a JSON Lines archive (each acked only after its line is fsynced).
    Drain {
        /// The work queue whose DLQ to drain (or `warren.unroutable`).
        queue: String,
        /// Archive file [default: dlq/<queue>-<UTC timestamp>.jsonl next to the config file].
        #[arg(long, value_name = "FILE")]
        to: Option<PathBuf>,
        /// At most this many [default: all present when the drain starts].
        #[arg(long)]
        limit: Option<u64>,
    },
    /// Publish an archive's lines back to their work queues as fresh jobs (same id, attempts reset).
    Replay {
        /// A file written by `warren dlq drain` (possibly edited, e.g. with jq).
        file: PathBuf,
        /// Publish every line to this queue instead of the one named in the line.
        #[arg(long)]
        queue: Option<String>,
        /// Validate the file and show what would be published; publish nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Move dead letters straight back to their work queue (confirm, then ack).
    Requeue {
        /// The work queue whose DLQ to requeue from (or `warren.unroutable`).
        queue: String,
        /// Move at most this many.
        #[arg(long)]
        limit: Option<u64>,
        /// Only dead letters whose last error contains this text.
        #[arg(long, value_name = "TEXT")]
        error: Option<String>,
        /// Only dead letters that failed at or after this time (RFC 3339, or an age like `2h`).
        #[arg(long, value_name = "TIME")]
        failed_after: Option<String>,
        /// Only dead letters that failed before this time (RFC 3339, or an age like `30m`).
        #[arg(long, value_name = "TIME")]
        failed_before: Option<String>,
    },
    /// Delete dead letters for good, marking their jobs discarded (needs --yes).
    Purge {
        /// The work queue whose DLQ to purge.
        queue: String,
        /// Really delete.
        #[arg(long)]
        yes: bool,
        /// At most this many.
        #[arg(long)]
        limit: Option<u64>,
    },
}

#[derive(Subcommand, Debug)]
enum TopologyAction {
    /// Declare everything queues.toml needs (idempotent); warns about classic queues on a
    /// cluster, which RabbitMQ does not replicate.
    Apply,
    /// Print what warren declares and what the broker has now: messages, consumers and, from
    /// the management API, each queue's leader and members.
    Show,
}

/// The async runtime's worker threads: `TOKIO_WORKER_THREADS` when set (tokio's own knob),
/// else one fewer than the cores, at least one. warren's broker connections each run their
/// I/O on a thread of their own (lapin) and SQLite runs on sqlx's connection threads, so the
/// runtime is not the only thread doing a job's work; on a 2-core host a second runtime
/// worker mostly traded wake-ups with the first (with one, a job took 0.69 × the CPU at 50
/// jobs/s and 0.91 × at 200, at the same saturated end-to-end throughput; a `warren serve`
/// peaked about 4 % lower in single POSTs; BENCHMARKS.md, "Everyday load").
fn runtime_workers() -> usize {
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    std::env::var("TOKIO_WORKER_THREADS")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|n| *n > 0)
        .unwrap_or(cores.saturating_sub(1).max(1))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(runtime_workers())
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", warren::redact(&format!("{e:#}")));
            ExitCode::FAILURE
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn,lapin=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    if let Command::Store {
        action: store_cli::StoreAction::Copy { from, to, page },
    } = &cli.command
    {
        store_cli::copy(from, to, *page).await?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut config = Config::load(cli.config.as_deref())?;
    let done = match cli.command {
        Command::Run(args) => {
            config.auth.insecure_no_auth = args.insecure_no_auth;
            serve(config, Role::All).await
        }
        Command::Serve(args) => {
            config.auth.insecure_no_auth = args.insecure_no_auth;
            serve(config, Role::Intake).await
        }
        Command::Work { queues } => serve(config, Role::Workers(queues)).await,
        Command::Topology { action } => topology(config, action).await,
        Command::Queues {
            action: Some(action),
            ..
        } => queues_cli::run(&config, action).await,
        Command::Queues { json, action: None } => queues(config, json).await,
        Command::Job { id, wait } => return job(config, &id, wait).await,
        Command::Jobs { action } => jobs_cli::run(&config, action).await,
        Command::Schedules { json } => schedules_cli::run(config, json).await,
        Command::Dlq { action } => dlq(config, action).await,
        Command::Store { action } => store_cli::run(&config, action).await,
    };
    done.map(|()| ExitCode::SUCCESS)
}

async fn serve(config: Config, role: Role) -> anyhow::Result<()> {
    let bind = config.http.bind;
    let app = App::builder(config).build().await?;
    let listener = match role {
        Role::Workers(_) => None,
        _ => Some(
            tokio::net::TcpListener::bind(bind)
                .await
                .with_context(|| format!("cannot listen on {bind}"))?,
        ),
    };
    let shutdown = CancellationToken::new();
    tokio::spawn(on_signal(shutdown.clone()));
    app.run(role, listener, shutdown).await?;
    tracing::info!("stopped");
    Ok(())
}

/// Cancels `shutdown` on the first SIGTERM or SIGINT; a second one exits at once.
async fn on_signal(shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    tracing::info!(
        "shutting down: no new jobs; in-flight jobs get the grace period (signal again to exit now)"
    );
    shutdown.cancel();
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    tracing::warn!("second signal: exiting now; unacked jobs return to their queues");
    std::process::exit(130);
}

async fn topology(config: Config, action: TopologyAction) -> anyhow::Result<()> {
    let broker = warren::Broker::new(&config.broker.urls, "cli")?;
    match action {
        TopologyAction::Apply => {
            warren::topology::apply(&broker, &config).await?;
            println!(
                "topology applied on {}: {} queue(s), each with its .dlq",
                broker.display_url(),
                config.queues.len()
            );
            for w in warren::topology::replication_warnings(&config).await {
                eprintln!("warning: {w}");
            }
        }
        TopologyAction::Show => {
            print!("{}", warren::topology::describe_plan(&config));
            println!("\non the broker ({}):", broker.display_url());
            println!("{:<40} {:>10} {:>10}", "QUEUE", "MESSAGES", "CONSUMERS");
            // Leaders and members come from the management API; when it cannot be reached,
            // the first failure is kept and the API not asked again.
            let management = warren::overview::Management::from_config(&config.broker);
            let mut unreachable = management.as_ref().err().map(ToString::to_string);
            let names = config
                .queues
                .values()
                .flat_map(|q| [q.name.clone(), warren::topology::dlq_name(&q.name)])
                .chain((0..warren::delay::LEVELS).map(warren::delay::level_name))
                .chain([warren::delay::UNROUTABLE.to_owned()]);
            for name in names {
                let s = warren::topology::inspect(&broker, &name).await?;
                let show =
                    |v: Option<u32>| v.map_or_else(|| "missing".to_owned(), |n| n.to_string());
                println!(
                    "{:<40} {:>10} {:>10}",
                    s.name,
                    show(s.messages),
                    show(s.consumers)
                );
                let (Ok(m), None, Some(_)) = (&management, &unreachable, s.messages) else {
                    continue;
                };
                match m.queue_members(&name).await {
                    Ok(Some(members)) => println!("  {}", members.summary()),
                    Ok(None) => {}
                    Err(e) => unreachable = Some(e.to_string()),
                }
            }
            if let Some(why) = unreachable {
                eprintln!(
                    "note: leaders and members unknown: {} (set broker.management_url)",
                    warren::redact(&why)
                );
            }
        }
    }
    Ok(())
}

async fn queues(config: Config, json: bool) -> anyhow::Result<()> {
    let app = App::builder(config).build().await?;
    let overview = app.queue_overview().await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&overview)?);
        return Ok(());
    }
    let show = |v: Option<u64>| v.map_or_else(|| "-".to_owned(), |n| n.to_string());
    println!(
        "{:<32} {:>8} {:>8} {:>8} {:>9} {:>8} {:>8} {:>6} {:>8}",
        "QUEUE",
        "READY",
        "UNACKED",
        "RUNNING",
        "CONSUMERS",
        "RETRYING",
        "DEAD",
        "PAUSED",
        "ACKED/S"
    );
    for q in &overview.queues {
        println!(
            "{:<32} {:>8} {:>8} {:>8} {:>9} {:>8} {:>8} {:>6} {:>8}",
            q.queue,
            show(q.ready),
            show(q.unacked),
            q.running,
            show(q.consumers),
            q.retrying,
            show(q.dead),
            if q.paused { "yes" } else { "no" },
            q.rates
                .as_ref()
                .map_or_else(|| "-".to_owned(), |r| format!("{:.1}", r.acked_per_s))
        );
    }
    if let Some(n) = overview.unroutable {
        println!(
            "{:<32} {:>8} {:>8} {:>8} {:>9} {:>8} {:>8} {:>6} {:>8}",
            warren::dlq::UNROUTABLE,
            n,
            "-",
            "-",
            "-",
            "-",
            "-",
            "-",
            "-"
        );
        if n > 0 {
            eprintln!(
                "note: {n} delayed message(s) found their work queue gone; \
                 `warren dlq peek {0}` shows them, `warren dlq requeue {0}` sends them back \
                 once their queue is configured and declared again",
                warren::dlq::UNROUTABLE
            );
        }
    }
    println!("broker node: {}", overview.broker_node);
    if overview.management != "ok" {
        eprintln!(
            "note: UNACKED and ACKED/S unknown: {} (set broker.management_url)",
            overview.management
        );
    }
    if overview.queues.iter().any(|q| q.ready.is_none()) {
        eprintln!("note: `-` in READY: the queue does not exist yet; run `warren topology apply`");
    }
    Ok(())
}

/// Exit status of `warren job ID --wait` when the wait ended with the job not final.
const NOT_FINAL: u8 = 3;

async fn job(
    config: Config,
    id: &str,
    wait: Option<std::time::Duration>,
) -> anyhow::Result<ExitCode> {
    let uuid =
        uuid::Uuid::parse_str(id).with_context(|| format!("`{id}` is not a job id (a UUID)"))?;
    let store = warren::store::open(&config.store_options()).await?;
    let record = match wait {
        None => store.get(uuid).await?,
        Some(wait) => {
            // The same waiting as `GET /v1/jobs/{id}?wait=`: a listener of this process's
            // own on the broker's `warren.events`, woken when the job is announced final.
            let broker = warren::Broker::new(&config.broker.urls, "job --wait")?;
            let (tasks, stop) = (
                tokio_util::task::TaskTracker::new(),
                CancellationToken::new(),
            );
            let waiters = warren::events::Waiters::start(broker, &tasks, stop.clone());
            let record = waiters.wait_final(&*store, uuid, wait).await;
            stop.cancel();
            tasks.close();
            tasks.wait().await;
            record?
        }
    }
    .with_context(|| format!("no job with id {uuid}"))?;
    let is_final = record.status.is_final();
    let view = warren::view::JobView::from(record);
    println!("{}", serde_json::to_string_pretty(&view)?);
    if wait.is_some() && !is_final {
        eprintln!(
            "note: job {uuid} is {} and not final yet (exit status {NOT_FINAL})",
            view.status
        );
        return Ok(ExitCode::from(NOT_FINAL));
    }
    Ok(ExitCode::SUCCESS)
}

/// `--wait`: a humantime duration (`30s`, `500ms`, `5m`) or plain seconds (`2.5`).
fn parse_wait(text: &str) -> Result<std::time::Duration, String> {
    let text = text.trim();
    if let Ok(secs) = text.parse::<f64>() {
        return std::time::Duration::try_from_secs_f64(secs)
            .map_err(|_| format!("`{text}` is not a duration of 0 seconds or more"));
    }
    humantime::parse_duration(text)
        .map_err(|e| format!("`{text}` is not a duration such as `30s` or `500ms` ({e})"))
}

/// A progress bar with rate and ETA on stderr (hidden when stderr is not a terminal).
struct Bar(indicatif::ProgressBar);

impl Bar {
    fn new(what: &'static str) -> Self {
        let bar = indicatif::ProgressBar::new(0);
        let style = indicatif::ProgressStyle::with_template(
            "{msg} [{bar:40}] {pos}/{len} ({per_sec}, ETA {eta})",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> ");
        bar.set_style(style);
        bar.set_message(what);
        Self(bar)
    }
}

impl warren::dlq::Progress for Bar {
    fn start(&self, total: u64) {
        self.0.set_length(total);
    }
    fn advance(&self, n: u64) {
        self.0.inc(n);
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        self.0.finish_and_clear();
    }
}

/// A token cancelled by Ctrl-C or SIGTERM: long moves stop after the current batch.
fn stop_on_signal() -> CancellationToken {
    let stop = CancellationToken::new();
    let token = stop.clone();
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            return;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        eprintln!("stopping after the current batch; nothing is lost");
        token.cancel();
    });
    stop
}

/// RFC 3339, or an age like `2h` (meaning that long ago).
fn parse_time(text: &str) -> anyhow::Result<std::time::SystemTime> {
    if let Ok(t) = humantime::parse_rfc3339_weak(text) {
        return Ok(t);
    }
    let ago = humantime::parse_duration(text)
        .with_context(|| format!("`{text}` is neither an RFC 3339 time nor an age like `2h`"))?;
    Ok(std::time::SystemTime::now() - ago)
}

fn excerpt(text: &str, max: usize) -> String {
    let one_line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if one_line.chars().count() <= max {
        one_line
    } else {
        let cut: String = one_line.chars().take(max.saturating_sub(1)).collect();
        format!("{cut}…")
    }
}

async fn dlq(config: Config, action: DlqAction) -> anyhow::Result<()> {
    if let DlqAction::Purge {
        yes: false, queue, ..
    } = &action
    {
        anyhow::bail!(
            "`warren dlq purge {queue}` deletes dead letters for good; add --yes to do it"
        );
    }
    let base_dir = config.base_dir.clone();
    let app = App::builder(config).build().await?;
    let dlq = app.dlq();
    match action {
        DlqAction::List { json } => {
            let rows = dlq.list().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                println!(
                    "{:<32} {:>10}  {:<26} {:>10}",
                    "QUEUE", "DEAD", "OLDEST FAILED AT", "AGE"
                );
                for r in rows {
                    let age = r
                        .oldest_age_s
                        .map(|s| {
                            humantime::format_duration(std::time::Duration::from_secs(s))
                                .to_string()
                        })
                        .unwrap_or_else(|| "-".into());
                    let depth = r.depth.map_or_else(|| "missing".into(), |d| d.to_string());
                    println!(
                        "{:<32} {:>10}  {:<26} {:>10}",
                        r.queue,
                        depth,
                        r.oldest_failed_at.unwrap_or_else(|| "-".into()),
                        age
                    );
                }
            }
        }
        DlqAction::Peek { queue, n, json } => {
            let lines = dlq.peek(&queue, n).await?;
            if json {
                for l in &lines {
                    println!("{}", serde_json::to_string(l)?);
                }
            } else {
                let unroutable = queue == warren::dlq::UNROUTABLE;
                if unroutable {
                    print!("{:<24}  ", "FOR QUEUE");
                }
                println!(
                    "{:<36}  {:>3}  {:<24}  {:<40}  PAYLOAD",
                    "JOB ID", "TRY", "FAILED AT", "LAST ERROR"
                );
                for l in &lines {
                    if unroutable {
                        print!("{:<24}  ", excerpt(&l.queue, 24));
                    }
                    let payload = match (&l.payload, &l.payload_base64) {
                        (Some(p), _) => p.get().to_owned(),
                        (None, Some(_)) => "(not JSON)".to_owned(),
                        (None, None) => "null".to_owned(),
                    };
                    println!(
                        "{:<36}  {:>3}  {:<24}  {:<40}  {}",
                        l.message_id().unwrap_or("-"),
                        l.attempts.map_or_else(|| "-".into(), |a| a.to_string()),
                        l.failed_at.as_deref().unwrap_or("-"),
                        excerpt(l.last_error.as_deref().unwrap_or("-"), 40),
                        excerpt(&payload, 60)
                    );
                }
                if lines.is_empty() {
                    println!("(no messages in {})", warren::dlq::held_in(&queue));
                }
            }
        }
        DlqAction::Drain { queue, to, limit } => {
            let path = to.unwrap_or_else(|| {
                warren::dlq::default_archive_path(&base_dir.join("dlq"), &queue)
            });
            let bar = Bar::new("draining");
            let r = dlq
                .drain(&queue, &path, limit, &bar, &stop_on_signal())
                .await?;
            drop(bar);
            println!(
                "drained {} message(s) of {} to {}{}",
                r.moved,
                warren::dlq::held_in(&queue),
                r.path.display(),
                if r.interrupted {
                    " (stopped early)"
                } else {
                    ""
                }
            );
        }
        DlqAction::Replay {
            file,
            queue,
            dry_run,
        } => {
            let bar = Bar::new("replaying");
            let r = dlq
                .replay(&file, queue.as_deref(), dry_run, &bar, &stop_on_signal())
                .await?;
            drop(bar);
            for (q, n) in &r.by_queue {
                println!("{q}: {n} job(s)");
            }
            if dry_run {
                println!(
                    "dry run: {} valid, nothing published",
                    r.by_queue.values().sum::<u64>()
                );
            } else {
                println!(
                    "replayed {} job(s) from {}{}",
                    r.moved,
                    file.display(),
                    if r.interrupted {
                        " (stopped early)"
                    } else {
                        ""
                    }
                );
            }
        }
        DlqAction::Requeue {
            queue,
            limit,
            error,
            failed_after,
            failed_before,
        } => {
            let filter = warren::dlq::Filter {
                error_contains: error,
                failed_after: failed_after.as_deref().map(parse_time).transpose()?,
                failed_before: failed_before.as_deref().map(parse_time).transpose()?,
                ..warren::dlq::Filter::default()
            };
            let bar = Bar::new("requeueing");
            let r = dlq
                .requeue(&queue, &filter, limit, &bar, &stop_on_signal())
                .await?;
            drop(bar);
            let to: Vec<&str> = r.by_queue.keys().map(String::as_str).collect();
            println!(
                "requeued {} message(s) to {}; {} did not match and stay in {}{}",
                r.moved,
                if to.is_empty() {
                    queue.clone()
                } else {
                    to.join(", ")
                },
                r.kept,
                warren::dlq::held_in(&queue),
                if r.interrupted {
                    " (stopped early)"
                } else {
                    ""
                }
            );
        }
        DlqAction::Purge { queue, limit, .. } => {
            let bar = Bar::new("purging");
            let n = dlq.purge(&queue, limit, &bar, &stop_on_signal()).await?;
            drop(bar);
            println!(
                "purged {n} message(s) from {}; their jobs are marked discarded",
                warren::dlq::held_in(&queue)
            );
        }
    }
    Ok(())
}
