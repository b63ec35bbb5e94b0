//! The store the integration tests run on, chosen in one place: `WARREN_TEST_STORE` =
//! `sqlite` (the default) or `postgres`.
//!
//! A [`TestStore`] is one test's store: a SQLite file in the test's directory, or a PostgreSQL
//! database of its own (`warren_t_<random>`, created through `WARREN_TEST_PG_URL` and dropped
//! `WITH (FORCE)` when the `TestStore` is dropped). Its [`TestStore::url`] goes to an
//! in-process warren (`Setup::start`) or to a spawned `warren` binary (`WARREN_STORE_URL`).
//!
//! Tests read the store only through warren's public trait ([`TestStore::open`], then
//! `Maintenance::status`, `Maintenance::export` or `JobStore::get`), never with SQL of their
//! own. The one thing done from outside with SQL is breaking it: [`TestStore::down`].

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use sqlx::Connection as _;
use warren::store::{JobRow, JobStatus, OpenOptions, Store};

/// Which adapter the tests run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Embedded SQLite, a file in the test's directory.
    Sqlite,
    /// A PostgreSQL database created for the test.
    Postgres,
}

impl Backend {
    /// The adapter `WARREN_TEST_STORE` names: `sqlite` (also when unset or empty) or
    /// `postgres`; anything else stops the test with a clear message.
    pub fn chosen() -> Self {
        match std::env::var("WARREN_TEST_STORE")
            .unwrap_or_default()
            .trim()
        {
            "" | "sqlite" => Backend::Sqlite,
            "postgres" => Backend::Postgres,
            other => panic!(
                "WARREN_TEST_STORE={other:?} is not a store the tests know: use `sqlite` (the default) or `postgres`"
            ),
        }
    }

    /// `sqlite` or `postgres`.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

/// The PostgreSQL database the tests connect to in order to create (and drop) their own:
/// `WARREN_TEST_PG_URL`, by default the one `scripts/ensure-postgres` makes.
pub fn pg_admin_url() -> String {
    std::env::var("WARREN_TEST_PG_URL")
        .ok()
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| "postgres://warren:warren@127.0.0.1:5432/warren_test".to_owned())
}

/// `url` with its database (the path) replaced by `name`; the query string is kept.
pub fn pg_url_with_database(url: &str, name: &str) -> String {
    let mut u = reqwest::Url::parse(url)
        .unwrap_or_else(|e| panic!("WARREN_TEST_PG_URL is not a URL ({e})"));
    u.set_path(&format!("/{name}"));
    u.to_string()
}

/// Connects to the admin database; a server that does not answer fails the test with
/// advice (never a skip).
async fn admin_connection() -> sqlx::PgConnection {
    let url = pg_admin_url();
    let connect = tokio::time::timeout(Duration::from_secs(20), sqlx::PgConnection::connect(&url));
    match connect.await {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => panic!(
            "PostgreSQL is not reachable at {} ({e}); run scripts/ensure-postgres (scripts/test does), or point WARREN_TEST_PG_URL at a server",
            warren::redact(&url)
        ),
        Err(_) => panic!(
            "PostgreSQL at {} did not answer within 20 s; run scripts/ensure-postgres (scripts/test does)",
            warren::redact(&url)
        ),
    }
}

/// Runs `statements` in order on the admin database.
async fn admin(statements: &[&str]) {
    let mut conn = admin_connection().await;
    for sql in statements {
        sqlx::query(sql)
            .execute(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
    let _ = conn.close().await;
}

/// Runs `f` on a thread of its own with a runtime of its own and waits for it: usable from
/// synchronous code and from `Drop` (also while a test panics, and whatever runtime the test
/// has).
fn on_own_thread<F>(f: F) -> std::thread::Result<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime for the store helper")
            .block_on(f)
    })
    .join()
}

/// Runs `sql` on the admin database, ignoring failures, within 20 s (for cleanups).
async fn admin_quietly(sql: String) {
    let _ = tokio::time::timeout(Duration::from_secs(20), async {
        if let Ok(mut conn) = sqlx::PgConnection::connect(&pg_admin_url()).await {
            let _ = sqlx::query(&sql).execute(&mut conn).await;
            let _ = conn.close().await;
        }
    })
    .await;
}

/// A PostgreSQL database of one test, dropped `WITH (FORCE)` (its sessions are ended first)
/// when this is dropped, from a thread of its own so that it also runs while a test panics.
struct PgDatabase {
    name: String,
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        // Bounded: a server that does not answer must not hang the test run.
        let _ = on_own_thread(admin_quietly(sql));
    }
}

/// One test's store (see the module docs).
pub struct TestStore {
    backend: Backend,
    url: String,
    pg: Option<PgDatabase>,
}

impl TestStore {
    /// A new, empty store on the chosen adapter: `sqlite://DIR/warren.db`, or a new PostgreSQL
    /// database. warren creates and migrates the schema when it opens it.
    pub async fn new(dir: &Path) -> Self {
        Self::on(Backend::chosen(), dir).await
    }

    /// [`TestStore::new`] for synchronous tests.
    pub fn new_blocking(dir: &Path) -> Self {
        let dir = dir.to_path_buf();
        on_own_thread(async move { Self::new(&dir).await })
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
    }

    /// A new store on `backend`, whatever `WARREN_TEST_STORE` says.
    pub async fn on(backend: Backend, dir: &Path) -> Self {
        match backend {
            Backend::Sqlite => Self {
                backend,
                url: format!("sqlite://{}", dir.join("warren.db").display()),
                pg: None,
            },
            Backend::Postgres => {
                let name = format!(
                    "warren_t_{}",
                    &uuid::Uuid::now_v7().simple().to_string()[16..]
                );
                admin(&[&format!("CREATE DATABASE {name}")]).await;
                Self {
                    backend,
                    url: pg_url_with_database(&pg_admin_url(), &name),
                    pg: Some(PgDatabase { name }),
                }
            }
        }
    }

    /// The store URL, for `WARREN_STORE_URL` or `store.url` (it may hold a password: show it
    /// through `warren::redact`).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Which adapter this is.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The store opened as warren opens it (migrated if new): an outsider's view through the
    /// public trait.
    pub async fn open(&self) -> Arc<dyn Store> {
        warren::store::open(&OpenOptions::new(self.url.as_str()))
            .await
            .unwrap_or_else(|e| panic!("open the test store {}: {e}", warren::redact(&self.url)))
    }

    /// Jobs in the store, all statuses (`Maintenance::status`).
    pub async fn total(&self) -> u64 {
        self.open()
            .await
            .status()
            .await
            .expect("the store's status")
            .total
    }

    /// Every job row, in id order (`Maintenance::export`, keyset pages of 1,000).
    pub async fn rows(&self) -> Vec<JobRow> {
        let store = self.open().await;
        let mut rows: Vec<JobRow> = Vec::new();
        loop {
            let after = rows.last().map(|r| r.record.id);
            let page = store.export(after, 1_000).await.expect("export a page");
            let full = page.len() == 1_000;
            rows.extend(page);
            if !full {
                return rows;
            }
        }
    }

    /// Every job's status, by job id (as text, as the HTTP API shows it).
    pub async fn statuses(&self) -> HashMap<String, JobStatus> {
        self.rows()
            .await
            .into_iter()
            .map(|r| (r.record.id.to_string(), r.record.status))
            .collect()
    }

    /// Makes the store unreachable for warren until [`StoreOutage::end`]:
    /// - SQLite: another connection holds the write lock (`BEGIN EXCLUSIVE`), so writes wait
    ///   out their busy timeout and fail (as root a read-only file would not stop warren).
    /// - PostgreSQL: the database stops taking connections (`ALLOW_CONNECTIONS false`) and
    ///   every session on it is ended (`pg_terminate_backend`): what a server restart looks
    ///   like to warren (its connections die, new ones are refused with SQLSTATE 55000).
    pub async fn down(&self) -> StoreOutage {
        match &self.pg {
            Some(db) => {
                let name = db.name.clone();
                let mut conn = admin_connection().await;
                sqlx::query(&format!("ALTER DATABASE {name} ALLOW_CONNECTIONS false"))
                    .execute(&mut conn)
                    .await
                    .expect("close the database to connections");
                // A session that was starting as the database closed may still get in: end
                // sessions until there are none.
                let deadline = std::time::Instant::now() + Duration::from_secs(10);
                loop {
                    let left: i64 = sqlx::query_scalar(
                        "SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity \
                         WHERE datname = $1 AND pid <> pg_backend_pid()",
                    )
                    .bind(&name)
                    .fetch_one(&mut conn)
                    .await
                    .expect("end the database's sessions");
                    if left == 0 {
                        break;
                    }
                    assert!(
                        std::time::Instant::now() < deadline,
                        "sessions on {name} kept coming for 10 s"
                    );
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                let _ = conn.close().await;
                StoreOutage {
                    inner: Some(Outage::Postgres { name }),
                }
            }
            None => {
                let mut locker = sqlx::SqliteConnection::connect(&self.url)
                    .await
                    .expect("open the SQLite store");
                sqlx::query("BEGIN EXCLUSIVE")
                    .execute(&mut locker)
                    .await
                    .expect("take the SQLite write lock");
                StoreOutage {
                    inner: Some(Outage::Sqlite(locker)),
                }
            }
        }
    }
}

enum Outage {
    Sqlite(sqlx::SqliteConnection),
    Postgres { name: String },
}

/// A store outage from [`TestStore::down`]; [`StoreOutage::end`] ends it (dropping it does
/// too, from a thread of its own).
pub struct StoreOutage {
    inner: Option<Outage>,
}

impl StoreOutage {
    /// Brings the store back: the SQLite lock is released; the PostgreSQL database takes
    /// connections again.
    pub async fn end(mut self) {
        match self.inner.take() {
            Some(Outage::Sqlite(mut locker)) => {
                sqlx::query("ROLLBACK")
                    .execute(&mut locker)
                    .await
                    .expect("release the SQLite write lock");
                let _ = locker.close().await;
            }
            Some(Outage::Postgres { name }) => {
                admin(&[&format!("ALTER DATABASE {name} ALLOW_CONNECTIONS true")]).await;
            }
            None => {}
        }
    }
}

impl Drop for StoreOutage {
    fn drop(&mut self) {
        // SQLite: closing the connection (dropping it) ends the lock.
        if let Some(Outage::Postgres { name }) = self.inner.take() {
            let sql = format!("ALTER DATABASE {name} ALLOW_CONNECTIONS true");
            let _ = on_own_thread(admin_quietly(sql));
        }
    }
}
