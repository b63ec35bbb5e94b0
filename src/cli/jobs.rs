//! `warren jobs list|cancel|requeue`: the job search and bulk actions from the command line,
//! on the store (and, for requeue, the broker) directly, answering as `GET /v1/jobs`,
//! `POST /v1/jobs/cancel` and `POST /v1/jobs/requeue` do.

use std::io::{BufRead as _, IsTerminal as _, Write as _};

use anyhow::Context as _;
use clap::{Args, Subcommand};
use warren::Config;
use warren::store::{self, Cursor, JobFilter, JobStatus, PAGE_LIMITS};
use warren::view::JobView;

/// What `warren jobs` does.
#[derive(Subcommand, Debug)]
pub(crate) enum JobsAction {
    /// Find jobs, newest first, a page at a time (a table, or `GET /v1/jobs`'s JSON).
    List {
        #[command(flatten)]
        filter: FilterArgs,
        /// Jobs per page (1 to 500).
        #[arg(long, default_value_t = store::DEFAULT_PAGE_LIMIT)]
        limit: u32,
        /// Start after this page cursor (the hint below a page, or `next_cursor`).
        #[arg(long, value_name = "CURSOR")]
        cursor: Option<String>,
        /// Print JSON as `GET /v1/jobs` answers it.
        #[arg(long)]
        json: bool,
    },
    /// Cancel queued and retrying jobs by id or by filter (asks first; --yes to skip).
    Cancel(BulkArgs),
    /// Requeue dead jobs by id or by filter: their dead letters move back to their work
    /// queues (confirm, then ack), attempts start again (asks first; --yes to skip).
    Requeue(BulkArgs),
}

/// What a bulk action takes: ids or filters, and how to confirm.
#[derive(Args, Debug)]
pub(crate) struct BulkArgs {
    /// A job to act on; repeat for several (at most 1,000).
    #[arg(long = "id", value_name = "ID")]
    ids: Vec<String>,
    #[command(flatten)]
    filter: FilterArgs,
    /// Count what would change; change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Do not ask (needed when stdin is not a terminal).
    #[arg(long)]
    yes: bool,
}

/// The list filters (DESIGN §3), every one optional.
#[derive(Args, Debug, Default)]
pub(crate) struct FilterArgs {
    /// Only jobs of this queue.
    #[arg(long, value_name = "QUEUE")]
    queue: Option<String>,
    /// Only jobs in this status (queued, running, retrying, succeeded, dead, cancelled);
    /// repeat for several.
    #[arg(long = "status", value_name = "STATUS")]
    statuses: Vec<String>,
    /// Only jobs created at or after this time (RFC 3339, or an age like `2h`).
    #[arg(long, value_name = "TIME")]
    created_after: Option<String>,
    /// Only jobs created before this time (RFC 3339, or an age like `30m`).
    #[arg(long, value_name = "TIME")]
    created_before: Option<String>,
    /// Only jobs with this correlation id.
    #[arg(long, value_name = "ID")]
    correlation_id: Option<String>,
    /// Only jobs with this idempotency key.
    #[arg(long, value_name = "KEY")]
    idempotency_key: Option<String>,
    /// Only jobs whose last error contains this text (case ignored).
    #[arg(long, value_name = "TEXT")]
    error_contains: Option<String>,
    /// Only jobs enqueued by this schedule (`[schedules.NAME]`).
    #[arg(long, value_name = "NAME")]
    schedule: Option<String>,
}

impl FilterArgs {
    fn is_empty(&self) -> bool {
        self.queue.is_none()
            && self.statuses.is_empty()
            && self.created_after.is_none()
            && self.created_before.is_none()
            && self.correlation_id.is_none()
            && self.idempotency_key.is_none()
            && self.error_contains.is_none()
            && self.schedule.is_none()
    }

    /// The filter, checked as the API checks it: a queue must be configured.
    fn filter(&self, config: &Config) -> anyhow::Result<JobFilter> {
        if let Some(q) = &self.queue
            && config.queue(q).is_none()
        {
            anyhow::bail!("no queue named `{q}` is configured");
        }
        let statuses = self
            .statuses
            .iter()
            .map(|s| {
                JobStatus::parse(s).with_context(|| {
                    format!("`{s}` is not a status: queued, running, retrying, succeeded, dead or cancelled")
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let time = |t: &Option<String>| -> anyhow::Result<Option<i64>> {
            t.as_deref()
                .map(|t| crate::parse_time(t).map(store::to_ms))
                .transpose()
        };
        Ok(JobFilter {
            queue: self.queue.clone(),
            statuses,
            created_after: time(&self.created_after)?,
            created_before: time(&self.created_before)?,
            correlation_id: self.correlation_id.clone(),
            idempotency_key: self.idempotency_key.clone(),
            error_contains: self.error_contains.clone(),
            schedule: self.schedule.clone(),
        })
    }

    /// The flags as given, for the next page's command line (shell-quoted).
    fn args(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut flag = |name: &str, v: &Option<String>| {
            if let Some(v) = v {
                out.push(format!("--{name} {}", quote(v)));
            }
        };
        flag("queue", &self.queue);
        flag("created-after", &self.created_after);
        flag("created-before", &self.created_before);
        flag("correlation-id", &self.correlation_id);
        flag("idempotency-key", &self.idempotency_key);
        flag("error-contains", &self.error_contains);
        flag("schedule", &self.schedule);
        for s in &self.statuses {
            out.push(format!("--status {}", quote(s)));
        }
        out
    }
}

/// `s` as one shell word.
fn quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:/+@=,".contains(&b))
    {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// Runs `warren jobs …`.
pub(crate) async fn run(config: &Config, action: JobsAction) -> anyhow::Result<()> {
    match action {
        JobsAction::List {
            filter,
            limit,
            cursor,
            json,
        } => list(config, &filter, limit, cursor.as_deref(), json).await,
        JobsAction::Cancel(a) => cancel(config, a.ids, &a.filter, a.dry_run, a.yes).await,
        JobsAction::Requeue(a) => requeue(config, a.ids, &a.filter, a.dry_run, a.yes).await,
    }
}

async fn list(
    config: &Config,
    args: &FilterArgs,
    limit: u32,
    cursor: Option<&str>,
    json: bool,
) -> anyhow::Result<()> {
    if !PAGE_LIMITS.contains(&limit) {
        anyhow::bail!(
            "--limit must be from {} to {}",
            PAGE_LIMITS.start(),
            PAGE_LIMITS.end()
        );
    }
    let after = cursor
        .map(|c| Cursor::decode(c).with_context(|| format!("`{c}` is not a page cursor")))
        .transpose()?;
    let filter = args.filter(config)?;
    let store = store::open(&config.store_options()).await?;
    let page = store.list(&filter, after, limit).await?;
    let next = page.next_cursor.map(|c| c.encode());
    if json {
        let jobs: Vec<JobView> = page.jobs.into_iter().map(JobView::from).collect();
        let body = serde_json::json!({ "jobs": jobs, "next_cursor": next });
        println!("{}", serde_json::to_string_pretty(&body)?);
        return Ok(());
    }
    println!(
        "{:<36}  {:<20}  {:<9}  {:>8}  {:<24}  LAST ERROR",
        "JOB ID", "QUEUE", "STATUS", "ATTEMPTS", "CREATED AT"
    );
    for j in &page.jobs {
        println!(
            "{:<36}  {:<20}  {:<9}  {:>8}  {:<24}  {}",
            j.id,
            crate::excerpt(&j.queue, 20),
            j.status.as_str(),
            format!("{}/{}", j.attempts, j.max_attempts),
            store::rfc3339_ms(j.created_at),
            crate::excerpt(j.last_error.as_deref().unwrap_or("-"), 60)
        );
    }
    if page.jobs.is_empty() {
        println!("(no jobs match)");
    }
    if let Some(c) = next {
        let mut words = vec!["warren".to_owned(), "jobs".into(), "list".into()];
        words.extend(args.args());
        if limit != store::DEFAULT_PAGE_LIMIT {
            words.push(format!("--limit {limit}"));
        }
        words.push(format!("--cursor {c}"));
        println!("next page: {}", words.join(" "));
    }
    Ok(())
}

/// `--id`s or filters (not both, not neither) as a bulk action's selection.
fn selection(
    config: &Config,
    ids: &[String],
    args: &FilterArgs,
    verb: &str,
    example: &str,
) -> anyhow::Result<warren::bulk::Selection> {
    Ok(match (ids.is_empty(), args.is_empty()) {
        (false, true) => {
            if ids.len() > warren::bulk::MAX_IDS {
                anyhow::bail!(
                    "at most {} --id in one command; use a filter for more",
                    warren::bulk::MAX_IDS
                );
            }
            let ids = ids
                .iter()
                .map(|id| {
                    uuid::Uuid::parse_str(id)
                        .with_context(|| format!("`{id}` is not a job id (a UUID)"))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            warren::bulk::Selection::Ids(ids)
        }
        (true, false) => warren::bulk::Selection::Filter(args.filter(config)?),
        (true, true) => anyhow::bail!(
            "name the jobs to {verb}: --id ID (repeatable) or filters such as {example}"
        ),
        (false, false) => anyhow::bail!("give either --id or filters, not both"),
    })
}

/// How a bulk action speaks of what it does.
struct Wording {
    /// `cancel`.
    verb: &'static str,
    /// `job(s)`.
    jobs: &'static str,
    /// `would be cancelled`.
    would: &'static str,
    /// What the jobs it leaves are: `not cancellable (running, finished or unknown)`.
    left: &'static str,
    /// Why there is nothing to do: `no queued or retrying job matches`.
    none: &'static str,
}

const CANCEL: Wording = Wording {
    verb: "cancel",
    jobs: "job(s)",
    would: "would be cancelled",
    left: "not cancellable (running, finished or unknown)",
    none: "no queued or retrying job matches",
};

const REQUEUE: Wording = Wording {
    verb: "requeue",
    jobs: "dead job(s)",
    would: "would be requeued",
    left: "not requeuable (not dead, purged or unknown)",
    none: "no dead job with a dead letter matches",
};

/// Before a bulk action that would change `changed` jobs and leave `left` of those chosen:
/// with `dry_run` says so and stops; with nothing to change says so and stops; else asks
/// (see [`confirm`]). True to go on.
fn ask(dry_run: bool, changed: u64, left: u64, w: &Wording) -> anyhow::Result<bool> {
    if dry_run {
        println!(
            "dry run: {changed} {} {}; {left} {}; nothing changed",
            w.jobs, w.would, w.left
        );
        return Ok(false);
    }
    if changed == 0 {
        println!("nothing to {}: {} ({left} {})", w.verb, w.none, w.left);
        return Ok(false);
    }
    confirm(
        &format!("{} {changed} {}?", w.verb, w.jobs),
        &format!("this would {} {changed} {}", w.verb, w.jobs),
    )?;
    Ok(true)
}

/// Asks `question` on a terminal; without one, refuses and names `--yes`.
fn confirm(question: &str, refusal: &str) -> anyhow::Result<()> {
    if !std::io::stdin().is_terminal() {
        anyhow::bail!("{refusal}; add --yes to do it (stdin is not a terminal to ask)");
    }
    eprint!("{question} [y/N] ");
    std::io::stderr().flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    if !matches!(answer.trim(), "y" | "Y" | "yes") {
        anyhow::bail!("not confirmed; nothing changed");
    }
    Ok(())
}

async fn cancel(
    config: &Config,
    ids: Vec<String>,
    args: &FilterArgs,
    dry_run: bool,
    yes: bool,
) -> anyhow::Result<()> {
    let selection = selection(config, &ids, args, "cancel", "--queue Q --status queued")?;
    // Cancelled jobs are announced, so that `?wait=` requests on them answer at once.
    let store = warren::events::AnnouncingStore::wrap(
        store::open(&config.store_options()).await?,
        std::sync::Arc::new(warren::events::Announcer::new(warren::Broker::new(
            &config.broker.urls,
            "jobs cancel",
        )?)),
    );
    let now = store::now_ms();
    if dry_run || !yes {
        let would = warren::bulk::cancel(&*store, &selection, now, true).await?;
        if !ask(dry_run, would.cancelled, would.not_cancellable, &CANCEL)? {
            return Ok(());
        }
    }
    let done = warren::bulk::cancel(&*store, &selection, now, false).await?;
    println!(
        "cancelled {} job(s); {} not cancellable (running, finished or unknown)",
        done.cancelled, done.not_cancellable
    );
    Ok(())
}

async fn requeue(
    config: &Config,
    ids: Vec<String>,
    args: &FilterArgs,
    dry_run: bool,
    yes: bool,
) -> anyhow::Result<()> {
    let selection = selection(config, &ids, args, "requeue", "--queue Q --status dead")?;
    let app = warren::App::builder(config.clone()).build().await?;
    if dry_run || !yes {
        let would = warren::bulk::requeue_dry_run(app.store(), &selection).await?;
        if !ask(dry_run, would.requeued, would.not_requeued, &REQUEUE)? {
            return Ok(());
        }
    }
    let done = warren::bulk::requeue(&app.dlq(), app.store(), &selection).await?;
    println!(
        "requeued {} job(s); {} not requeued (not dead, purged, unknown, or no dead letter in the DLQ)",
        done.requeued, done.not_requeued
    );
    Ok(())
}
