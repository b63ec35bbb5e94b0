//! warren's status store as the bench sees it: the adapter the warren children run on
//! (`BENCH_STORE`), the store a group of children shares ([`Space`]), and every read of it.
//!
//! The bench reads the store only through warren's public trait (`warren::store::open`, then
//! `get`, `export` and `status`) and seeds it only through `import`: it holds no SQL against
//! warren's tables. Each phase knows the jobs it was answered 202 for ([`Jobs`]): when all of
//! them are done is found by `get` on a sample of their ids, and their times by one keyset
//! `export` that starts just before the phase's first job (UUIDv7 ids sort by creation time),
//! so that it reads the phase's own rows and not the millions a growth phase seeds.
//! `status()` counts the whole table and is never called while a phase measures.
//!
//! The only SQL here is PostgreSQL's administration, on the server and not on warren's
//! tables: `CREATE DATABASE` and `DROP DATABASE … WITH (FORCE)` for each [`Space`], and
//! `VACUUM (ANALYZE)` after a seed ([`Space::settle`]).

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lapin::Connection;
use sqlx::Connection as _;
use uuid::Uuid;
use warren::store::{JobRecord, JobRow, JobStatus, OpenOptions, Store};

use crate::child::Cleanup;
use crate::raw::depth;
use crate::repo;

/// The adapter the warren children run on, from `BENCH_STORE`.
#[derive(Debug, Clone)]
pub(crate) enum StoreKind {
    /// `sqlite` (the default): a file in each [`Space`]'s temp dir.
    Sqlite,
    /// `postgres`: a database per [`Space`], created through `admin_url` (the `warren` role's
    /// database that `scripts/ensure-postgres` prints as `WARREN_PG_URL`).
    Postgres { admin_url: String },
}

impl StoreKind {
    /// `BENCH_STORE`: `sqlite` (also when unset) or `postgres`, for which this runs
    /// `scripts/ensure-postgres` (which starts or installs the server if need be).
    pub(crate) fn from_env() -> Self {
        match std::env::var("BENCH_STORE").unwrap_or_default().trim() {
            "" | "sqlite" => Self::Sqlite,
            "postgres" => Self::Postgres {
                admin_url: ensure_postgres(),
            },
            other => panic!("BENCH_STORE={other:?}: use `sqlite` (the default) or `postgres`"),
        }
    }

    /// `sqlite` or `postgres`.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Self::Sqlite => "sqlite",
            Self::Postgres { .. } => "postgres",
        }
    }
}

/// Runs `scripts/ensure-postgres` and returns the `WARREN_PG_URL` it prints.
fn ensure_postgres() -> String {
    let script = repo().join("scripts/ensure-postgres");
    let out = Command::new(&script)
        .stderr(Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    assert!(
        out.status.success(),
        "{} failed ({}); BENCH_STORE=postgres needs a PostgreSQL server",
        script.display(),
        out.status
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("WARREN_PG_URL="))
        .map(|u| u.trim().to_owned())
        .unwrap_or_else(|| panic!("{} printed no WARREN_PG_URL=", script.display()))
}

/// `url` with its database (the path) replaced by `name`; a query string is kept.
fn with_database(url: &str, name: &str) -> String {
    let mut u = reqwest::Url::parse(url)
        .unwrap_or_else(|e| panic!("{} is not a URL ({e})", warren::redact(url)));
    u.set_path(&format!("/{name}"));
    u.to_string()
}

/// Runs one statement on a fresh connection to `url`, bounded in time.
async fn admin(url: &str, sql: &str) -> Result<(), String> {
    let work = async {
        let mut c = sqlx::PgConnection::connect(url)
            .await
            .map_err(|e| e.to_string())?;
        let r = sqlx::query(sql).execute(&mut c).await;
        let _ = c.close().await;
        r.map(|_| ()).map_err(|e| e.to_string())
    };
    tokio::time::timeout(Duration::from_secs(600), work)
        .await
        .map_err(|_| format!("`{sql}` took over 600 s"))?
}

/// Drops the databases `names` (`IF EXISTS … WITH (FORCE)`, so that connections left open
/// do not stop it) through `admin_url`, from a thread with a runtime of its own, so that it
/// also runs while the bench unwinds from a panic. Returns how many drops succeeded.
pub(crate) fn drop_databases(admin_url: &str, names: Vec<String>) -> usize {
    if names.is_empty() {
        return 0;
    }
    let url = admin_url.to_owned();
    std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return 0;
        };
        rt.block_on(async move {
            let mut n = 0;
            for name in names {
                let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                match tokio::time::timeout(Duration::from_secs(30), admin(&url, &sql)).await {
                    Ok(Ok(())) => n += 1,
                    Ok(Err(e)) => eprintln!("bench: {sql}: {e}"),
                    Err(_) => eprintln!("bench: {sql}: no answer within 30 s"),
                }
            }
            n
        })
    })
    .join()
    .unwrap_or(0)
}

/// A PostgreSQL database of the bench's own, `bench_<random>`: dropped when this is dropped
/// (also on a panic), and registered with [`Cleanup`], which drops it at the end should this
/// never be dropped.
struct Database {
    name: String,
    admin_url: String,
}

impl Database {
    async fn create(admin_url: &str, cleanup: &Cleanup) -> Self {
        let name = format!("bench_{}", &Uuid::now_v7().simple().to_string()[16..]);
        admin(admin_url, &format!("CREATE DATABASE {name}"))
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "cannot create the database {name} through {} ({e}); run scripts/ensure-postgres",
                    warren::redact(admin_url)
                )
            });
        cleanup.add_database(admin_url, &name);
        Self {
            name,
            admin_url: admin_url.to_owned(),
        }
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        drop_databases(&self.admin_url, vec![self.name.clone()]);
    }
}

/// The store one group of warren children shares, as `dir/warren.db` did before there were
/// two adapters: a temp dir (their `queues-<tag>.toml` files) and, on SQLite, `warren.db` in
/// it; on PostgreSQL a database of its own, dropped with this.
pub(crate) struct Space {
    // Dropped first: the database goes before the dir.
    db: Option<Database>,
    dir: tempfile::TempDir,
    /// `store.url` in the children's config.
    config_url: String,
    /// The URL the bench opens.
    url: String,
}

impl Space {
    /// A new, empty store of `kind`.
    pub(crate) async fn new(kind: &StoreKind, cleanup: &Cleanup) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        match kind {
            StoreKind::Sqlite => Self {
                url: format!("sqlite://{}", dir.path().join("warren.db").display()),
                config_url: "sqlite://warren.db".to_owned(),
                db: None,
                dir,
            },
            StoreKind::Postgres { admin_url } => {
                let db = Database::create(admin_url, cleanup).await;
                let url = with_database(admin_url, &db.name);
                Self {
                    config_url: url.clone(),
                    url,
                    db: Some(db),
                    dir,
                }
            }
        }
    }

    /// The children's config dir.
    pub(crate) fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `store.url` for the children's `queues.toml`.
    pub(crate) fn config_url(&self) -> &str {
        &self.config_url
    }

    /// Where the store is, for messages (no password).
    pub(crate) fn describe(&self) -> String {
        match &self.db {
            Some(db) => format!("PostgreSQL database {}", db.name),
            None => warren::redact(&self.url),
        }
    }

    /// Opens the store a child migrated, through warren's own `open` (no migrations, a pool
    /// of at most 4 connections).
    pub(crate) async fn open(&self) -> Arc<dyn Store> {
        self.open_with(false).await
    }

    /// Opens the store and creates its schema (before any child ran on it).
    pub(crate) async fn create(&self) -> Arc<dyn Store> {
        self.open_with(true).await
    }

    async fn open_with(&self, migrate: bool) -> Arc<dyn Store> {
        let opts = OpenOptions {
            max_connections: 4,
            migrate,
            // A seed's pages of 10,000 rows take longer than a request's 10 s at times.
            statement_timeout: Duration::from_secs(300),
            ..OpenOptions::new(&self.url)
        };
        warren::store::open(&opts)
            .await
            .unwrap_or_else(|e| panic!("cannot open the store {}: {e}", self.describe()))
    }

    /// After a seed: on PostgreSQL `VACUUM (ANALYZE)` of the database, as autovacuum would
    /// have done in a store that grew over days (the test server runs with `autovacuum =
    /// off`); returns how long it took. Nothing on SQLite (warren runs no `ANALYZE` there).
    pub(crate) async fn settle(&self) -> Option<Duration> {
        self.db.as_ref()?;
        let t = Instant::now();
        admin(&self.url, "VACUUM (ANALYZE)")
            .await
            .unwrap_or_else(|e| panic!("VACUUM (ANALYZE) of {}: {e}", self.describe()));
        Some(t.elapsed())
    }
}

/// The jobs a phase was answered 202 for: how many, an id just below the first (so a keyset
/// [`collect`] reads only them and what came after), and a sample of the last ids answered.
#[derive(Debug, Clone)]
pub(crate) struct Jobs {
    pub(crate) n: usize,
    pub(crate) from: Uuid,
    pub(crate) sample: Vec<Uuid>,
}

/// The smallest UUIDv7 of the millisecond before now: every id warren makes from now on
/// sorts after it (UUIDv7 ids begin with their creation time, ms since the epoch).
pub(crate) fn id_floor() -> Uuid {
    let ms = u64::try_from(warren::store::now_ms().saturating_sub(1)).unwrap_or(0);
    uuid::Builder::from_unix_timestamp_millis(ms, &[0; 10]).into_uuid()
}

/// What [`collect`] found of a phase's jobs.
#[derive(Debug, Default)]
pub(crate) struct Done {
    pub(crate) succeeded: usize,
    /// The earliest `started_at` (ms).
    pub(crate) first_start: i64,
    /// The latest `finished_at` (ms).
    pub(crate) last_finish: i64,
    /// `started_at` by job id, when asked for.
    pub(crate) started: HashMap<Uuid, i64>,
}

impl Done {
    fn add(&mut self, r: &JobRecord, keep_started: bool) {
        self.succeeded += 1;
        if let Some(s) = r.started_at {
            self.first_start = if self.succeeded == 1 {
                s
            } else {
                self.first_start.min(s)
            };
            if keep_started {
                self.started.insert(r.id, s);
            }
        }
        self.last_finish = self.last_finish.max(r.finished_at.unwrap_or(0));
    }

    fn merge(mut self, other: Done) -> Done {
        if other.succeeded > 0 {
            self.first_start = if self.succeeded == 0 {
                other.first_start
            } else {
                self.first_start.min(other.first_start)
            };
        }
        self.succeeded += other.succeeded;
        self.last_finish = self.last_finish.max(other.last_finish);
        self.started.extend(other.started);
        self
    }
}

/// Rows per `export` page.
const PAGE: u32 = 5_000;

/// Waits until `queue` has no ready message left (its depth, from the broker) and then
/// until every job of `sample` is final (`get`), and returns the store opened for
/// [`collect`]: it is opened only then, so that the bench holds no connection to it (nor,
/// on SQLite, a checkpoint task) while the phase runs. Panics at `deadline`.
pub(crate) async fn wait_drained(
    conn: &Connection,
    space: &Space,
    queue: &str,
    sample: &[Uuid],
    deadline: Instant,
) -> Arc<dyn Store> {
    while depth(conn, queue).await.unwrap_or(0) > 0 {
        assert!(Instant::now() < deadline, "{queue} not drained in time");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let store = space.open().await;
    for id in sample {
        loop {
            let job = store.get(*id).await.expect("store get");
            if job.as_ref().is_some_and(|j| j.status.is_final()) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{queue}: job {id} not final in time ({:?})",
                job.map(|j| j.status)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    store
}

/// Waits until `n` jobs of `queue` with ids above `from` succeeded, reading them with keyset
/// `export` pages from `from`: the rows before the first unfinished one are counted once;
/// should some still run, only the rows from the first of them are read again. Panics at
/// `deadline`.
pub(crate) async fn collect(
    store: &dyn Store,
    queue: &str,
    from: Uuid,
    n: usize,
    keep_started: bool,
    deadline: Instant,
) -> Done {
    // Every row up to `after` is final and counted in `done`.
    let (mut done, mut after) = (Done::default(), from);
    loop {
        let (mut tail, mut pending, mut cursor) = (Done::default(), false, after);
        loop {
            let page = store
                .export(Some(cursor), PAGE)
                .await
                .expect("store export");
            let Some(last) = page.last() else { break };
            cursor = last.record.id;
            for row in &page {
                let r = &row.record;
                let mine = r.queue == queue;
                pending |= mine && !r.status.is_final();
                let into = if pending { &mut tail } else { &mut done };
                if mine && r.status == JobStatus::Succeeded {
                    into.add(r, keep_started);
                }
                if !pending {
                    after = r.id;
                }
            }
            if page.len() < PAGE as usize {
                break;
            }
        }
        if done.succeeded + tail.succeeded >= n {
            return done.merge(tail);
        }
        assert!(
            Instant::now() < deadline,
            "{queue}: {} of {n} jobs succeeded in time",
            done.succeeded + tail.succeeded
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// [`wait_drained`], then [`collect`], within `timeout`.
pub(crate) async fn wait_succeeded(
    conn: &Connection,
    space: &Space,
    queue: &str,
    jobs: &Jobs,
    keep_started: bool,
    timeout: Duration,
) -> Done {
    let deadline = Instant::now() + timeout;
    let store = wait_drained(conn, space, queue, &jobs.sample, deadline).await;
    collect(&*store, queue, jobs.from, jobs.n, keep_started, deadline).await
}

/// A seed of finished jobs: `n` jobs of `queue`, created evenly over `span_ms` from
/// `start_ms`, each started 5 ms and finished 10 ms after its creation. Job `i`'s id is the
/// UUIDv7 of its `created_at` with `i` in its last bytes ([`Seed::index`]), so ids, creation
/// and finish times all follow `i`, and the first job by id tells how far a prune has come.
pub(crate) struct Seed {
    pub(crate) queue: String,
    pub(crate) n: usize,
    pub(crate) start_ms: i64,
    pub(crate) span_ms: i64,
}

impl Seed {
    fn row(&self, i: usize) -> JobRow {
        let offset = i128::from(self.span_ms) * i as i128 / self.n.max(1) as i128;
        let created = self.start_ms + i64::try_from(offset).unwrap_or(0);
        let mut tail = [0u8; 10];
        tail[2..].copy_from_slice(&(i as u64).to_be_bytes());
        let id =
            uuid::Builder::from_unix_timestamp_millis(u64::try_from(created).unwrap_or(0), &tail)
                .into_uuid();
        // One job in three carried an idempotency key, as in the store's own index test.
        let key = i.is_multiple_of(3).then(|| format!("seed-{i}"));
        JobRow {
            record: JobRecord {
                id,
                queue: self.queue.clone(),
                status: JobStatus::Succeeded,
                attempts: 1,
                max_attempts: 5,
                last_error: None,
                result: None,
                correlation_id: None,
                idempotency_key: key.clone(),
                created_at: created,
                started_at: Some(created + 5),
                finished_at: Some(created + 10),
                next_attempt_at: None,
                discarded_at: None,
                schedule: None,
            },
            request_hash: key.map(|_| "seed".to_owned()),
            accepted: true,
            lease_owner: None,
            lease_until: None,
            resend_payload: None,
        }
    }

    /// Job `i` of a seeded id (the last 62 bits of the id hold it).
    pub(crate) fn index(id: Uuid) -> usize {
        let mut last = [0u8; 8];
        last.copy_from_slice(&id.as_bytes()[8..]);
        (u64::from_be_bytes(last) & 0x3fff_ffff_ffff_ffff) as usize
    }

    /// Stores the seed through `import`, in pages of 10,000 rows, with its progress on
    /// stderr. Returns how long it took.
    pub(crate) async fn import(&self, store: &dyn Store) -> Duration {
        const ROWS: usize = 10_000;
        let t = Instant::now();
        let mut said = Instant::now();
        let mut i = 0;
        while i < self.n {
            let rows: Vec<JobRow> = (i..(i + ROWS).min(self.n)).map(|j| self.row(j)).collect();
            let new = store.import(&rows).await.expect("seed the store (import)");
            assert_eq!(new as usize, rows.len(), "seeded rows already present");
            i += rows.len();
            if said.elapsed() >= Duration::from_secs(10) || i == self.n {
                said = Instant::now();
                eprintln!(
                    "growth: seeded {i} of {} finished jobs ({:.0} %) in {:.0} s, {:.0} rows/s",
                    self.n,
                    100.0 * i as f64 / self.n as f64,
                    t.elapsed().as_secs_f64(),
                    i as f64 / t.elapsed().as_secs_f64()
                );
            }
        }
        t.elapsed()
    }

    /// How many seeded jobs are gone: the index of the first job by id if it is a seeded one
    /// (a prune deletes them oldest first), else all of them. One `export` of one row.
    pub(crate) async fn pruned(&self, store: &dyn Store) -> usize {
        let first = store.export(None, 1).await.expect("store export");
        match first.first() {
            Some(r) if r.record.queue == self.queue => Self::index(r.record.id),
            _ => self.n,
        }
    }
}
