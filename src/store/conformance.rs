//! The store contract, tested on every adapter: each test below runs once on SQLite and once
//! on PostgreSQL (`sqlite::…` and `postgres::…` in the test names), through the [`Store`]
//! trait only.
//!
//! PostgreSQL tests need a server: `WARREN_TEST_PG_URL` (default
//! `postgres://warren:warren@127.0.0.1:5432/warren_test`, which `scripts/ensure-postgres`
//! creates) names a database the tests connect to in order to create a database of their own
//! per test, dropped when the test ends (also when it fails). A missing server fails the test.
//!
//! Races are started by one barrier on a multi-threaded runtime, with the contenders spread
//! over two store instances (two pools, as two processes would have), never by sleeps.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Barrier;
use uuid::Uuid;

use super::model::{
    ActiveCounts, Cancel, Claim, ClaimRequest, Cursor, Inserted, JobFilter, JobStatus, NewJob,
    Overdue, ScheduleState,
};
use super::{OpenOptions, Store, StoreErrorKind, now_ms};
use crate::error::ErrorKind;

/// Which adapter a test runs on.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Adapter {
    Sqlite,
    Postgres,
}

/// A database of the test's own, deleted when dropped.
pub(crate) struct TestDb {
    /// The store URL.
    pub(crate) url: String,
    _dir: Option<tempfile::TempDir>,
    pg: Option<test_pg::Database>,
}

impl TestDb {
    /// A new, empty database for `adapter`.
    pub(crate) async fn new(adapter: Adapter) -> Self {
        match adapter {
            Adapter::Sqlite => {
                let dir = tempfile::tempdir().expect("tempdir");
                Self {
                    url: format!("sqlite://{}", dir.path().join("t.db").display()),
                    _dir: Some(dir),
                    pg: None,
                }
            }
            Adapter::Postgres => {
                let db = test_pg::Database::create().await;
                Self {
                    url: db.url.clone(),
                    _dir: None,
                    pg: Some(db),
                }
            }
        }
    }

    /// Opens a store on it (each call is another instance: its own pool and writers, as
    /// another process would have).
    pub(crate) async fn open(&self) -> Arc<dyn Store> {
        super::open(&OpenOptions::new(&self.url))
            .await
            .unwrap_or_else(|e| panic!("open {}: {e}", crate::redact::redact(&self.url)))
    }

    /// Runs `sql` on the database through a connection of the test's own (to set up a
    /// fault from outside the store).
    pub(crate) async fn exec(&self, sql: &str) {
        use sqlx::Connection as _;
        let done = if self.pg.is_some() {
            let mut conn = sqlx::PgConnection::connect(&self.url)
                .await
                .expect("connect");
            sqlx::query(sql).execute(&mut conn).await.map(drop)
        } else {
            let mut conn = sqlx::SqliteConnection::connect(&self.url)
                .await
                .expect("connect");
            sqlx::query(sql).execute(&mut conn).await.map(drop)
        };
        done.unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
}

/// PostgreSQL databases for tests.
pub(crate) mod test_pg {
    use sqlx::Connection as _;

    /// The database the tests connect to in order to create their own.
    pub(crate) fn admin_url() -> String {
        std::env::var("WARREN_TEST_PG_URL")
            .ok()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "postgres://warren:warren@127.0.0.1:5432/warren_test".to_owned())
    }

    /// `url` with its database replaced by `name`.
    pub(crate) fn with_database(url: &str, name: &str) -> String {
        let (head, query) = url
            .split_once('?')
            .map_or((url, None), |(h, q)| (h, Some(q)));
        let base = match head.rfind('/') {
            Some(i) if i > "postgres://".len() => &head[..i],
            _ => head,
        };
        match query {
            Some(q) => format!("{base}/{name}?{q}"),
            None => format!("{base}/{name}"),
        }
    }

    /// A database created for one test and dropped (`WITH (FORCE)`) when this is dropped.
    pub(crate) struct Database {
        /// Its URL.
        pub(crate) url: String,
        /// Its name.
        pub(crate) name: String,
    }

    impl Database {
        /// Creates `warren_t_<random>`; panics with advice when the server is missing.
        pub(crate) async fn create() -> Self {
            let name = format!(
                "warren_t_{}",
                &uuid::Uuid::now_v7().simple().to_string()[16..]
            );
            admin(&format!("CREATE DATABASE {name}")).await;
            Self {
                url: with_database(&admin_url(), &name),
                name,
            }
        }
    }

    /// Runs one statement on the admin database.
    pub(crate) async fn admin(sql: &str) {
        let url = admin_url();
        let mut conn = match sqlx::PgConnection::connect(&url).await {
            Ok(c) => c,
            Err(e) => panic!(
                "PostgreSQL is not reachable at {} ({e}); run scripts/ensure-postgres (the README's test command does)",
                crate::redact::redact(&url)
            ),
        };
        sqlx::query(sql)
            .execute(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        let _ = conn.close().await;
    }

    impl Drop for Database {
        fn drop(&mut self) {
            let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
            // From a thread of its own, so that it also runs while a test panics.
            let _ = std::thread::spawn(move || {
                let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                else {
                    return;
                };
                rt.block_on(async move {
                    let _ =
                        tokio::time::timeout(std::time::Duration::from_secs(20), admin(&sql)).await;
                });
            })
            .join();
        }
    }
}

/// A new keyless job in `queue`, created now.
pub(crate) fn new_job(queue: &str) -> NewJob {
    NewJob {
        id: Uuid::now_v7(),
        queue: queue.into(),
        max_attempts: 3,
        correlation_id: Some("c".into()),
        idempotency_key: None,
        request_hash: None,
        created_at: now_ms(),
        next_attempt_at: None,
        resend_payload: None,
        schedule: None,
    }
}

fn keyed(queue: &str, key: &str, hash: &str) -> NewJob {
    NewJob {
        idempotency_key: Some(key.into()),
        request_hash: Some(hash.into()),
        ..new_job(queue)
    }
}

fn claim_req(id: Uuid, owner: &str, now: i64) -> ClaimRequest<'_> {
    ClaimRequest {
        id,
        queue: "q",
        max_attempts: 3,
        correlation_id: None,
        owner,
        now,
        lease: Duration::from_secs(60),
    }
}

async fn status_of(s: &Arc<dyn Store>, id: Uuid) -> JobStatus {
    s.get(id).await.expect("get").expect("row").status
}

// --- the tests, each run on both adapters (see `conformance!` at the end) -----------------

async fn claim_then_succeed_then_duplicate_is_final(a: Adapter) {
    let db = TestDb::new(a).await;
    let s = db.open().await;
    let job = new_job("q");
    assert_eq!(s.insert(&job).await.expect("insert"), Inserted::New);
    let now = now_ms();
    assert_eq!(
        s.claim(&claim_req(job.id, "w1", now)).await.expect("claim"),
        Claim::Claimed {
            attempt: 1,
            max_attempts: 3
        }
    );
    assert_eq!(
        s.claim(&claim_req(job.id, "w2", now)).await.expect("claim"),
        Claim::Busy {
            until: now + 60_000
        },
        "a live lease held by another worker"
    );
    s.succeed(job.id, "w1", Some("ok"), now)
        .await
        .expect("succeed");
    assert_eq!(
        s.claim(&claim_req(job.id, "w2", now)).await.expect("claim"),
        Claim::Final(JobStatus::Succeeded)
    );
    let r = s.get(job.id).await.expect("get").expect("row");
    assert_eq!(
        (r.status, r.result.as_deref(), r.attempts),
        (JobStatus::Succeeded, Some("ok"), 1)
    );
    assert_eq!(r.started_at, Some(now));
    assert_eq!(r.finished_at, Some(now));
}

/// A success answers `true` (announce it) exactly when the job was watched before it was
/// recorded; a job watched after its success shows the success in the watch's own read. The
/// race of a waiter's watch against the worker's success, started by one barrier, always
/// ends in one of the two: never a success that is neither announced nor seen.
async fn a_success_of_a_watched_job_says_so_and_a_late_watch_sees_the_success(a: Adapter) {
    let db = TestDb::new(a).await;
    let (s, other) = (db.open().await, db.open().await);
    let now = now_ms();
    // Nobody waits: recorded, not to be announced.
    let plain = new_job("q");
    s.insert(&plain).await.expect("insert");
    s.claim(&claim_req(plain.id, "w1", now))
        .await
        .expect("claim");
    assert!(!s.succeed(plain.id, "w1", None, now).await.expect("succeed"));
    // Watched while running: recorded and to be announced, in a batch beside an unwatched one.
    let (watched, beside) = (new_job("q"), new_job("q"));
    for j in [&watched, &beside] {
        s.insert(j).await.expect("insert");
        s.claim(&claim_req(j.id, "w1", now)).await.expect("claim");
    }
    let seen = other.watch(watched.id).await.expect("watch").expect("row");
    assert_eq!(seen.status, JobStatus::Running);
    let (w, b) = futures::join!(
        s.succeed(watched.id, "w1", Some("ok"), now),
        s.succeed(beside.id, "w1", None, now)
    );
    assert_eq!((w.expect("succeed"), b.expect("succeed")), (true, false));
    let r = s.get(watched.id).await.expect("get").expect("row");
    assert_eq!(
        (r.status, r.result.as_deref()),
        (JobStatus::Succeeded, Some("ok"))
    );
    // Watched after its success: the watch's read shows it; nothing is left to announce.
    let seen = other.watch(plain.id).await.expect("watch").expect("row");
    assert_eq!(seen.status, JobStatus::Succeeded);
    assert_eq!(other.watch(Uuid::now_v7()).await.expect("watch"), None);
    // The race, many times over.
    for _ in 0..20 {
        let job = new_job("q");
        s.insert(&job).await.expect("insert");
        s.claim(&claim_req(job.id, "w1", now)).await.expect("claim");
        let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(2));
        let (b1, b2) = (barrier.clone(), barrier);
        let (s1, s2) = (s.clone(), other.clone());
        let id = job.id;
        let succeed = tokio::spawn(async move {
            b1.wait().await;
            s1.succeed(id, "w1", None, now).await.expect("succeed")
        });
        let watch = tokio::spawn(async move {
            b2.wait().await;
            s2.watch(id).await.expect("watch").expect("row")
        });
        let announced = succeed.await.expect("succeed task");
        let seen = watch.await.expect("watch task");
        assert!(
            announced || seen.status == JobStatus::Succeeded,
            "a success neither announced nor seen by the waiter's read"
        );
    }
}

async fn an_expired_lease_is_claimed_again_and_the_late_owner_changes_nothing(a: Adapter) {
    let db = TestDb::new(a).await;
    let s = db.open().await;
    let job = new_job("q");
    s.insert(&job).await.expect("insert");
    let now = now_ms();
    s.claim(&claim_req(job.id, "w1", now)).await.expect("claim");
    let later = now + 61_000;
    assert_eq!(
        s.claim(&claim_req(job.id, "w2", later))
            .await
            .expect("claim"),
        Claim::Claimed {
            attempt: 2,
            max_attempts: 3
        }
    );
    // The first owner's late outcome does not overwrite the new claim.
    s.succeed(job.id, "w1", Some("late"), later)
        .await
        .expect("succeed");
    s.retry(job.id, "w1", "late", later, b"{}")
        .await
        .expect("retry");
    s.release(job.id, "w1").await.expect("release");
    let r = s.get(job.id).await.expect("get").expect("row");
    assert_eq!((r.status, r.attempts), (JobStatus::Running, 2));
    assert_eq!(r.result, None);
}

async fn a_delivery_without_a_row_creates_it(a: Adapter) {
    let db = TestDb::new(a).await;
    let s = db.open().await;
    let id = Uuid::now_v7();
    assert!(matches!(
        s.claim(&claim_req(id, "w1", now_ms()))
            .await
            .expect("claim"),
        Claim::Claimed { attempt: 1, .. }
    ));
    let r = s.get(id).await.expect("get").expect("row");
    assert_eq!((r.queue.as_str(), r.status), ("q", JobStatus::Running));
}

/// Thousands of claims on many threads, released by one barrier, over two store instances:
/// each job has exactly one winner, and every other claim is `Busy` until its lease ends.
async fn concurrent_claims_have_exactly_one_winner_per_job(a: Adapter) {
    const JOBS: usize = 100;
    const CLAIMERS: usize = 16;
    let db = TestDb::new(a).await;
    let stores = [db.open().await, db.open().await];
    let jobs: Vec<NewJob> = (0..JOBS).map(|_| new_job("q")).collect();
    stores[0].insert_many(&jobs).await.expect("insert_many");
    let now = now_ms();
    let barrier = Arc::new(Barrier::new(JOBS * CLAIMERS));
    let mut tasks = Vec::with_capacity(JOBS * CLAIMERS);
    for (j, job) in jobs.iter().enumerate() {
        for c in 0..CLAIMERS {
            let s = stores[(j + c) % 2].clone();
            let barrier = barrier.clone();
            let id = job.id;
            tasks.push(tokio::spawn(async move {
                let owner = format!("w{c}");
                barrier.wait().await;
                (id, s.claim(&claim_req(id, &owner, now)).await)
            }));
        }
    }
    let mut winners = std::collections::HashMap::new();
    let mut busy = 0;
    for t in tasks {
        match t.await.expect("join") {
            (id, Ok(Claim::Claimed { attempt: 1, .. })) => *winners.entry(id).or_insert(0) += 1,
            (_, Ok(Claim::Busy { until })) => {
                assert_eq!(until, now + 60_000);
                busy += 1;
            }
            (id, other) => panic!("claim of {id}: {other:?}"),
        }
    }
    assert_eq!(winners.len(), JOBS, "every job has a winner");
    assert!(
        winners.values().all(|n| *n == 1),
        "one winner each: {winners:?}"
    );
    assert_eq!(busy, JOBS * (CLAIMERS - 1));
    for job in &jobs {
        assert_eq!(status_of(&stores[1], job.id).await, JobStatus::Running);
    }
}

/// Claims and successes from many tasks share group commits and still get their own
/// answers; a job claimed twice in one batch is claimed once.
async fn batched_claims_and_successes_answer_each_write(a: Adapter) {
    let db = TestDb::new(a).await;
    let s = db.open().await;
    let jobs: Vec<NewJob> = (0..100).map(|_| new_job("q")).collect();
    s.insert_many(&jobs).await.expect("insert_many");
    let now = now_ms();
    let ids: Vec<Uuid> = jobs.iter().map(|j| j.id).collect();
    let claims = futures::future::join_all(
        ids.iter()
            .chain(ids.iter())
            .map(|id| async { s.claim(&claim_req(*id, "w1", now)).await }),
    )
    .await;
    let claimed = claims
        .iter()
        .filter(|c| matches!(c, Ok(Claim::Claimed { .. })))
        .count();
    let busy = claims
        .iter()
        .filter(|c| matches!(c, Ok(Claim::Busy { .. })))
        .count();
    assert_eq!((claimed, busy), (100, 100), "{claims:?}");
    let done = futures::future::join_all(
        ids.iter()
            .map(|id| async { s.succeed(*id, "w1", Some("r"), now).await }),
    )
    .await;
    assert!(done.iter().all(Result::is_ok), "{done:?}");
    for id in &ids {
        let r = s.get(*id).await.expect("get").expect("row");
        assert_eq!(
            (r.status, r.result.as_deref()),
            (JobStatus::Succeeded, Some("r"))
        );
    }
}

async fn an_idempotency_key_returns_the_existing_job(a: Adapter) {
    let db = TestDb::new(a).await;
    let s = db.open().await;
    let first = keyed("q", "k", "h1");
    assert_eq!(s.insert(&first).await.expect("insert"), Inserted::New);
    let again = keyed("q", "k", "h2");
    match s.insert(&again).await.expect("insert") {
        Inserted::Existing {
            record,
            request_hash,
            accepted,
        } => {
            assert_eq!(record.id, first.id);
            assert_eq!(request_hash.as_deref(), Some("h1"));
            assert!(!accepted, "not accepted before its confirm");
        }
        other => panic!("{other:?}"),
    }
    s.mark_accepted(first.id).await.expect("accept");
    assert!(matches!(
        s.insert(&again).await.expect("insert"),
        Inserted::Existing { accepted: true, .. }
    ));
    // Another queue may use the same key.
    assert_eq!(
        s.insert(&keyed("other", "k", "h1")).await.expect("insert"),
        Inserted::New
    );
    assert!(s.get(again.id).await.expect("get").is_none());
}

/// 20 concurrent inserts with one key, over two store instances (two intakes), released by
/// one barrier: one job.
async fn concurrent_inserts_with_one_key_make_one_job(a: Adapter) {
    let db = TestDb::new(a).await;
    let stores = [db.open().await, db.open().await];
    let barrier = Arc::new(Barrier::new(20));
    let mut tasks = Vec::new();
    for i in 0..20 {
        let s = stores[i % 2].clone();
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            let job = keyed("q", "one-key", "h");
            barrier.wait().await;
            (job.id, s.insert(&job).await.expect("insert"))
        }));
    }
    let mut new = Vec::new();
    let mut existing = Vec::new();
    for t in tasks {
        match t.await.expect("join") {
            (id, Inserted::New) => new.push(id),
            (_, Inserted::Existing { record, .. }) => existing.push(record.id),
        }
    }
    assert_eq!(new.len(), 1, "one new job: {new:?}");
    assert_eq!(existing.len(), 19);
    assert!(existing.iter().all(|id| *id == new[0]));
    assert_eq!(stores[0].status().await.expect("status").total, 1);
}

/// Concurrent inserts are group-committed, each with its own answer.
async fn concurrent_inserts_get_their_own_answers(a: Adapter) {
    let db = TestDb::new(a).await;
    let s = db.open().await;
    let jobs: Vec<NewJob> = (0..60)
        .map(|i| {
            if i % 6 == 0 {
                keyed("q", "shared", "h")
            } else {
                new_job("q")
            }
        })
        .collect();
    let answers = futures::future::join_all(jobs.iter().map(|j| s.insert(j))).await;
    let mut new = Vec::new();
    let mut existing = Vec::new();
    for (job, answer) in jobs.iter().zip(answers) {
        match answer.expect("insert") {
            Inserted::New => new.push(job.id),
            Inserted::Existing { record, .. } => existing.push(record.id),
        }
    }
    // 50 plain jobs and one of the 10 keyed ones are new; the other 9 get that one.
    assert_eq!((new.len(), existing.len()), (51, 9));
    assert!(existing.iter().all(|id| new.contains(id)));
    for id in new {
        assert!(s.get(id).await.expect("get").is_some());
    }
}

async fn insert_many_answers_in_order_in_one_transaction(a: Adapter) {
    let db = TestDb::new(a).await;
    let s = db.open().await;
    let stored = keyed("q", "k", "h");
    s.insert(&stored).await.expect("insert");
    let plain = new_job("q");
    let same_key = keyed("q", "k", "other");
    let fresh_key = keyed("q", "k2", "h2");
    let repeat = keyed("q", "k2", "h2");
    let answers = s
        .insert_many(&[plain.clone(), same_key, fresh_key.clone(), repeat.clone()])
        .await
        .expect("insert_many");
    assert_eq!(answers.len(), 4);
    assert_eq!(answers[0], Inserted::New);
    assert!(
        matches!(&answers[1], Inserted::Existing { record, request_hash, .. }
            if record.id == stored.id && request_hash.as_deref() == Some("h")),
        "{:?}",
        answers[1]
    );
    assert_eq!(answers[2], Inserted::New);
    // The key of an earlier job in the same batch: that job, not yet accepted.
    assert!(
        matches!(&answers[3], Inserted::Existing { record, accepted: false, .. }
            if record.id == fresh_key.id),
        "{:?}",
        answers[3]
    );
    assert!(s.get(repeat.id).await.expect("get").is_none());
    // A batch of more rows than one statement takes.
    let many: Vec<NewJob> = (0..1_500).map(|_| new_job("bulk")).collect();
    let answers = s.insert_many(&many).await.expect("insert_many");
    assert!(answers.iter().all(|a| *a == Inserted::New));
    let status = s.status().await.expect("status");
    assert_eq!(status.counts["bulk"]["queued"], 1_500);
}

/// Makes the database refuse every job of queue `refused` (a trigger), to see what a failing
/// write does to the writes around it.
async fn refuse_queue_refused(db: &TestDb, a: Adapter) {
    match a {
        Adapter::Sqlite => {
            db.exec(
                "CREATE TRIGGER refuse BEFORE INSERT ON jobs WHEN NEW.queue = 'refused' \
                 BEGIN SELECT RAISE(ABORT, 'refused'); END",
            )
            .await;
        }
        Adapter::Postgres => {
            db.exec(
                "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
                 IF NEW.queue = 'refused' THEN RAISE EXCEPTION 'refused'; END IF; \
                 RETURN NEW; END $$",
            )
            .await;
            db.exec(
                "CREATE TRIGGER refuse BEFORE INSERT ON jobs FOR EACH ROW EXECUTE FUNCTION refuse()",
            )
            .await;
        }
    }
}

async fn insert_many_is_all_or_nothing(a: Adapter) {
    let db = TestDb::new(a).await;
    let s = db.open().await;
    refuse_queue_refused(&db, a).await;
    let good = new_job("q");
    let result = s.insert_many(&[good.clone(), new_job("refused")]).await;
    assert!(result.is_err(), "{result:?}");
    assert!(
        s.get(good.id).await.expect("get").is_none(),
        "nothing of a failed batch is stored"
    );
}

/// A write the database refuses fails only its own request, though it shared a group
/// commit with others.
async fn a_refused_insert_fails_only_its_own_request(a: Adapter) {
    let db = TestDb::new(a).await;
    let s = db.open().await;
    refuse_queue_refused(&db, a).await;
    let jobs: Vec<NewJob> = (0..40)
        .map(|i| new_job(if i == 17 { "refused" } else { "q" }))
        .collect();
    let barrier = Arc::new(Barrier::new(jobs.len()));
    let answers = futures::future::join_all(jobs.iter().map(|j| {
        let (s, barrier) = (s.clone(), barrier.clone());
        let j = j.clone();
        tokio::spawn(async move {
            barrier.wait().await;
            s.insert(&j).await
        })
    }))
    .await;
    for (i, answer) in answers.into_iter().enumerate() {
        let answer = answer.expect("join");
        if i == 17 {
            assert!(answer.is_err(), "{answer:?}");
        } else {
            assert_eq!(answer.expect("insert"), Inserted::New);
        }
    }
    assert_eq!(s.status().await.expect("status").total, 39);
}

async fn a_failed_attempt_then_a_claim_counts_attempts(a: Adapter) {
    let db = TestDb::new(a).await;
    let s = db.open().await;
    let job = new_job("q");
    s.insert(&job).await.expect("insert");
    let now = now_ms();
    assert!(s.active_counts().await.expect("counts").is_empty());
    s.claim(&claim_req(job.id, "w1", now)).await.expect("claim");
    assert_eq!(
        s.active_counts().await.expect("counts").get("q"),
        Some(&ActiveCounts {
            running: 1,
            retrying: 0
        })
    );
    s.retry(job.id, "w1", "boom", now + 1_000, b"{}")
        .await
        .expect("retry");
    let r = s.get(job.id).await.expect("get").expect("row");
    assert_eq!(r.status, JobStatus::Retrying);
    assert_eq!(r.last_error.as_deref(), Some("boom"));
    assert_eq!(r.next_attempt_at, Some(now + 1_000));
    assert_eq!(
        s.active_counts().await.expect("counts").get("q"),
        Some(&ActiveCounts {
            running: 0,
            retrying: 1
        })
    );
    assert_eq!(
        s.claim(&claim_req(job.id, "w2", now)).await.expect("claim"),
        Claim::Claimed {
            attempt: 2,
            max_attempts: 3
        }
    );
    let r = s.get(job.id).await.expect("get").expect("row");
    assert_eq!(r.next_attempt_at, None);
    assert_eq!(
        s.active_counts().await.expect("counts").get("q"),
        Some(&ActiveCounts {
            running: 1,
            retrying: 0
        })
    );
}

async fn dead_is_final_but_never_overrides_success(a: Adapter) {
    let db = TestDb::new(a).await;
    let s = db.open().await;
    let (dies, done) = (new_job("q"), new_job("q"));
    for j in [&dies, &done] {
        s.insert(j).await.expect("insert");
        s.claim(&claim_req(j.id, "w1", now_ms()))
            .await
            .expect("claim");
    }
    s.dead(dies.id, "boom", 5).await.expect("dead");
    s.succeed(done.id, "w1", None, 5).await.expect("succeed");
    s.dead(done.id, "late", 6).await.expect("dead");
    let r = s.get(dies.id).await.expect("get").expect("row");
    assert_eq!(
        (r.status, r.last_error.as_deref(), r.finished_at),
        (JobStatus::Dead, Some("boom"), Some(5))
    );
    assert_eq!(status_of(&s, done.id).await, JobStatus::Succeeded);
    assert_eq!(
        s.claim(&claim_req(dies.id, "w2", now_ms()))
            .await
            .expect("claim"),
        Claim::Final(JobStatus::Dead)
    );
}

async fn release_gives_the_attempt_back_and_forget_removes_an_unpublished_job(a: Adapter) {
    let db = TestDb::new(a).await;
    let s = db.open().await;
    let job = new_job("q");
    s.insert(&job).await.expect("insert");
    s.claim(&claim_req(job.id, "w1", now_ms()))
        .await
        .expect("claim");
    s.forget_unpublished(job.id).await.expect("forget");
    assert!(
        s.get(job.id).await.expect("get").is_some(),
        "a job that ran is not forgotten"
    );
    s.release(job.id, "w2").await.expect("release by another");
    assert_eq!(status_of(&s, job.id).await, JobStatus::Running);
    s.release(job.id, "w1").await.expect("release");
    let r = s.get(job.id).await.expect("get").expect("row");
    assert_eq!((r.status, r.attempts), (JobStatus::Queued, 0));
    s.forget_unpublished(job.id).await.expect("forget");
    assert!(s.get(job.id).await.expect("get").is_none());
}

async fn cancel_only_before_start(a: Adapter) {
    let db = TestDb::new(a).await;
    let s = db.open().await;
    let job = new_job("q");
    s.insert(&job).await.expect("insert");
    assert!(matches!(s.cancel(job.id, 7).await.expect("cancel"),
            Cancel::Cancelled(r) if r.status == JobStatus::Cancelled && r.finished_at == Some(7)));
    assert_eq!(
        s.claim(&claim_req(job.id, "w1", now_ms()))
            .await
            .expect("claim"),
        Claim::Final(JobStatus::Cancelled)
    );
    let running = new_job("q");
    s.insert(&running).await.expect("insert");
    s.claim(&claim_req(running.id, "w1", now_ms()))
        .await
        .expect("claim");
    assert_eq!(
        s.cancel(running.id, now_ms()).await.expect("cancel"),
        Cancel::Conflict(JobStatus::Running)
    );
    assert_eq!(
        s.cancel(Uuid::now_v7(), now_ms()).await.expect("cancel"),
        Cancel::NotFound
    );
}

async fn revive_brings_back_only_dead_jobs_and_discard_marks_them(a: Adapter) {
    let db = TestDb::new(a).await;
    let s = db.open().await;
    let (dead, done) = (new_job("q"), new_job("q"));
    for j in [&dead, &done] {
        s.insert(j).await.expect("insert");
        s.claim(&claim_req(j.id, "w1", now_ms()))
            .await
            .expect("claim");
    }
    s.dead(dead.id, "boom", now_ms()).await.expect("dead");
    s.succeed(done.id, "w1", None, now_ms())
        .await
        .expect("succeed");
    s.discard(&[dead.id, done.id], 5).await.expect("discard");
    let r = s.get(dead.id).await.expect("get").expect("row");
    assert_eq!(r.discarded_at, Some(5));
    assert_eq!(
        s.get(done.id)
            .await
            .expect("get")
            .expect("row")
            .discarded_at,
        None,
        "only dead jobs are discarded"
    );
    s.revive(&[dead.id, done.id, Uuid::now_v7()], "q2")
        .await
        .expect("revive");
    let r = s.get(dead.id).await.expect("get").expect("row");
    assert_eq!(
        (
            r.status,
            r.attempts,
            r.queue.as_str(),
            r.discarded_at,
            r.finished_at
        ),
        (JobStatus::Queued, 0, "q2", None, None)
    );
    assert_eq!(
        r.last_error.as_deref(),
        Some("boom"),
        "the last error stays for the record"
    );
    assert_eq!(status_of(&s, done.id).await, JobStatus::Succeeded);
}

/// Pruning takes only jobs finished before the cutoff, however many chunks that takes.
async fn prune_removes_only_old_finished_jobs(a: Adapter) {
    let db = TestDb::new(a).await;
    let s = db.open().await;
    let old: Vec<NewJob> = (0..4_500).map(|_| new_job("q")).collect();
    s.insert_many(&old).await.expect("insert_many");
    for j in &old {
        s.dead(j.id, "x", 1_000).await.expect("dead");
    }
    let (fresh, open) = (new_job("q"), new_job("q"));
    s.insert(&fresh).await.expect("insert");
    s.insert(&open).await.expect("insert");
    s.dead(fresh.id, "x", 10_000).await.expect("dead");
    assert_eq!(s.prune(5_000).await.expect("prune"), 4_500);
    assert!(s.get(old[0].id).await.expect("get").is_none());
    assert!(s.get(fresh.id).await.expect("get").is_some());
    assert!(s.get(open.id).await.expect("get").is_some());
    assert_eq!(s.prune(5_000).await.expect("prune"), 0);
}

async fn status_counts_jobs_by_queue_and_status(a: Adapter) {
    let db = TestDb::new(a).await;
    let s = db.open().await;
    let empty = s.status().await.expect("status");
    assert_eq!((empty.total, empty.oldest_created_at), (0, None));
    assert_eq!(empty.schema_version, Some(empty.binary_schema_version));
    let mut first = new_job("a");
    first.created_at = 42;
    s.insert(&first).await.expect("insert");
    s.insert(&new_job("a")).await.expect("insert");
    let b = new_job("b");
    s.insert(&b).await.expect("insert");
    s.claim(&claim_req(b.id, "w", now_ms()))
        .await
        .expect("claim");
    let st = s.status().await.expect("status");
    assert_eq!(st.total, 3);
    assert_eq!(st.counts["a"]["queued"], 2);
    assert_eq!(st.counts["b"]["running"], 1);
    assert_eq!(st.oldest_created_at, Some(42));
}

/// Whole rows leave one store and enter another unchanged, page by page; importing the
/// same rows again adds nothing (a copy can be resumed).
async fn export_then_import_copies_rows_unchanged(a: Adapter) {
    let from_db = TestDb::new(a).await;
    let to_db = TestDb::new(match a {
        Adapter::Sqlite => Adapter::Postgres,
        Adapter::Postgres => Adapter::Sqlite,
    })
    .await;
    let (from, to) = (from_db.open().await, to_db.open().await);
    let mut jobs: Vec<NewJob> = (0..250).map(|_| new_job("q")).collect();
    jobs.push(keyed("q", "k", "h"));
    jobs.push(NewJob {
        schedule: Some("nightly".into()),
        ..new_job("q")
    });
    from.insert_many(&jobs).await.expect("insert_many");
    from.claim(&claim_req(jobs[0].id, "w", now_ms()))
        .await
        .expect("claim");
    from.succeed(jobs[0].id, "w", Some("{\"ok\":1}"), now_ms())
        .await
        .expect("succeed");
    from.claim(&claim_req(jobs[1].id, "w", now_ms()))
        .await
        .expect("claim");
    from.claim(&claim_req(jobs[2].id, "w", now_ms()))
        .await
        .expect("claim");
    from.retry(jobs[2].id, "w", "boom", now_ms() + 60_000, b"{\"kept\":1}")
        .await
        .expect("retry");
    let mut after = None;
    let mut copied = 0;
    let mut all = Vec::new();
    loop {
        let page = from.export(after, 100).await.expect("export");
        let Some(last) = page.last() else { break };
        after = Some(last.record.id);
        copied += to.import(&page).await.expect("import");
        all.extend(page);
    }
    assert_eq!(copied, 252);
    assert_eq!(to.import(&all).await.expect("import again"), 0);
    let back = to.export(None, 1_000).await.expect("export");
    assert_eq!(back, all, "rows arrive unchanged, in id order");
    assert_eq!(
        all[2].resend_payload.as_deref(),
        Some(b"{\"kept\":1}".as_slice()),
        "the payload a retry keeps travels with the row"
    );
    let scheduled: Vec<_> = back
        .iter()
        .filter(|r| r.record.schedule.is_some())
        .map(|r| (r.record.id, r.record.schedule.as_deref()))
        .collect();
    assert_eq!(
        scheduled,
        vec![(jobs[251].id, Some("nightly"))],
        "the schedule travels with the row"
    );
    assert!(matches!(
        to.insert(&keyed("q", "k", "h")).await.expect("insert"),
        Inserted::Existing { .. }
    ));
    assert_eq!(
        to.claim(&claim_req(jobs[1].id, "w2", now_ms()))
            .await
            .expect("claim"),
        Claim::Busy {
            until: all[1].lease_until.expect("lease")
        },
        "the lease travels with the row"
    );
}

/// A copy stopped after its first page resumes where it stopped, and ends with both stores
/// holding the same jobs by queue and status.
async fn a_stopped_copy_resumes_and_ends_checked(a: Adapter) {
    struct StopAfterFirstPage(tokio_util::sync::CancellationToken);
    impl crate::dlq::Progress for StopAfterFirstPage {
        fn start(&self, _: u64) {}
        fn advance(&self, n: u64) {
            if n > 0 {
                self.0.cancel();
            }
        }
    }
    let from_db = TestDb::new(a).await;
    let to_db = TestDb::new(a).await;
    let (from, to) = (from_db.open().await, to_db.open().await);
    let jobs: Vec<NewJob> = (0..250).map(|_| new_job("q")).collect();
    from.insert_many(&jobs).await.expect("insert_many");
    from.dead(jobs[3].id, "boom", 5).await.expect("dead");
    let stop = tokio_util::sync::CancellationToken::new();
    let first = super::copy::copy(&*from, &*to, 100, &StopAfterFirstPage(stop.clone()), &stop)
        .await
        .expect("copy");
    let copy_all = || async {
        super::copy::copy(
            &*from,
            &*to,
            100,
            &(),
            &tokio_util::sync::CancellationToken::new(),
        )
        .await
        .expect("copy")
    };
    assert!(first.stopped && !first.complete(), "{first:?}");
    assert_eq!((first.read, first.inserted), (100, 100));
    let second = copy_all().await;
    assert!(second.resumed && second.complete(), "{second:?}");
    assert_eq!((second.read, second.inserted), (150, 150));
    assert_eq!(
        to.get(jobs[3].id).await.expect("get").expect("row").status,
        JobStatus::Dead
    );
    // A destination holding other jobs is reported, not hidden.
    to.insert(&new_job("stray")).await.expect("insert");
    let third = copy_all().await;
    assert_eq!(third.mismatches["stray"]["queued"], (0, 1), "{third:?}");
}

/// A database migrated by a newer warren is refused, with that said.
async fn a_store_with_a_newer_schema_is_refused(a: Adapter) {
    let db = TestDb::new(a).await;
    let s = db.open().await;
    let status = s.status().await.expect("status");
    drop(s);
    let newer = status.binary_schema_version + 1;
    let insert = format!(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES ({newer}, 'from the future', TRUE, CHECKSUM, 0)"
    );
    let checksum = match a {
        Adapter::Sqlite => "X'00'",
        Adapter::Postgres => "'\\x00'::bytea",
    };
    db.exec(&insert.replace("CHECKSUM", checksum)).await;
    let err = super::open(&OpenOptions::new(&db.url))
        .await
        .err()
        .expect("a newer schema is refused");
    assert!(
        matches!(err.kind(), ErrorKind::Store(e) if e.kind() == StoreErrorKind::Schema),
        "{err}"
    );
    let text = err.to_string();
    assert!(text.contains(&format!("schema version {newer}")), "{text}");
    assert!(text.contains("newer than this warren binary"), "{text}");
}

/// Stores opened together on a new database all open (PostgreSQL: sqlx's advisory lock
/// serialises the migrations; SQLite: retried while another holds the lock).
async fn stores_opened_together_on_a_new_database_all_open(a: Adapter) {
    let db = TestDb::new(a).await;
    let opts = OpenOptions::new(&db.url);
    let opened = futures::future::join_all((0..6).map(|_| super::open(&opts))).await;
    for o in opened {
        if let Err(e) = o {
            panic!("{e}");
        }
    }
}

/// Jobs waiting in the delay levels past their due time are handed out once each, with what
/// it takes to publish them again; jobs not yet due, claimed, cancelled or of other queues
/// are not.
async fn overdue_retries_and_delayed_jobs_are_handed_out_once(a: Adapter) {
    let db = TestDb::new(a).await;
    let s = db.open().await;
    let now = now_ms();
    let queues = vec!["q".to_owned()];
    let retried = NewJob {
        idempotency_key: Some("k".into()),
        request_hash: Some("h".into()),
        ..new_job("q")
    };
    let (late, other_queue, ran_again) = (new_job("q"), new_job("other"), new_job("q"));
    for j in [&retried, &late, &other_queue, &ran_again] {
        s.insert(j).await.expect("insert");
        s.claim(&claim_req(j.id, "w1", now - 60_000))
            .await
            .expect("claim");
    }
    s.retry(retried.id, "w1", "boom", now - 20_000, b"{\"n\":1}")
        .await
        .expect("retry");
    s.retry(late.id, "w1", "boom", now + 60_000, b"{}")
        .await
        .expect("retry");
    s.retry(other_queue.id, "w1", "boom", now - 20_000, b"{}")
        .await
        .expect("retry");
    s.retry(ran_again.id, "w1", "boom", now - 20_000, b"{}")
        .await
        .expect("retry");
    s.claim(&claim_req(ran_again.id, "w2", now))
        .await
        .expect("claim again");
    let delayed = NewJob {
        next_attempt_at: Some(now - 10_000),
        resend_payload: Some(b"{\"d\":2}".to_vec()),
        ..new_job("q")
    };
    let cancelled = NewJob {
        next_attempt_at: Some(now - 10_000),
        resend_payload: Some(b"{}".to_vec()),
        ..new_job("q")
    };
    s.insert_many(&[delayed.clone(), cancelled.clone()])
        .await
        .expect("insert_many");
    assert!(matches!(
        s.cancel(cancelled.id, now).await.expect("cancel"),
        Cancel::Cancelled(_)
    ));

    let first = s
        .take_overdue(&queues, now - 5_000, now + 30_000, 1)
        .await
        .expect("take");
    assert_eq!(
        first,
        vec![Overdue {
            id: retried.id,
            queue: "q".into(),
            attempts: 1,
            max_attempts: 3,
            correlation_id: Some("c".into()),
            idempotency_key: Some("k".into()),
            payload: b"{\"n\":1}".to_vec(),
        }],
        "the longest overdue first, within the limit"
    );
    let rest = s
        .take_overdue(&queues, now - 5_000, now + 30_000, 100)
        .await
        .expect("take");
    assert_eq!(rest.len(), 1, "{rest:?}");
    assert_eq!((rest[0].id, rest[0].attempts), (delayed.id, 0));
    assert_eq!(rest[0].payload, b"{\"d\":2}".to_vec());
    assert!(
        s.take_overdue(&queues, now - 5_000, now + 30_000, 100)
            .await
            .expect("take")
            .is_empty(),
        "a job handed out is not handed out again before it is due again"
    );
    assert_eq!(
        s.get(retried.id)
            .await
            .expect("get")
            .expect("row")
            .next_attempt_at,
        Some(now + 30_000)
    );
    let again = s
        .take_overdue(&queues, now + 40_000, now + 70_000, 100)
        .await
        .expect("take");
    let mut ids: Vec<Uuid> = again.iter().map(|o| o.id).collect();
    ids.sort();
    let mut want = vec![retried.id, delayed.id];
    want.sort();
    assert_eq!(ids, want, "still waiting when due again: handed out again");
    // Once claimed, a job is not handed out, whatever it is due.
    s.claim(&claim_req(delayed.id, "w3", now))
        .await
        .expect("claim");
    let later = s
        .take_overdue(&queues, i64::MAX, i64::MAX, 100)
        .await
        .expect("take");
    let ids: Vec<Uuid> = later.iter().map(|o| o.id).collect();
    assert_eq!(ids.len(), 2, "{ids:?}");
    assert!(
        ids.contains(&retried.id) && ids.contains(&late.id),
        "{ids:?}"
    );
}

/// Sweepers racing over two store instances hand out each overdue job exactly once.
async fn concurrent_sweeps_hand_each_overdue_job_to_one_sweeper(a: Adapter) {
    let db = TestDb::new(a).await;
    let (s1, s2) = (db.open().await, db.open().await);
    let now = now_ms();
    let jobs: Vec<NewJob> = (0..60)
        .map(|_| NewJob {
            next_attempt_at: Some(now - 10_000),
            resend_payload: Some(b"{}".to_vec()),
            ..new_job("q")
        })
        .collect();
    s1.insert_many(&jobs).await.expect("insert_many");
    let barrier = Arc::new(Barrier::new(8));
    let taken = futures::future::join_all((0..8).map(|i| {
        let s = if i % 2 == 0 { s1.clone() } else { s2.clone() };
        let barrier = barrier.clone();
        tokio::spawn(async move {
            barrier.wait().await;
            s.take_overdue(&["q".to_owned()], now, now + 60_000, 100)
                .await
                .expect("take")
        })
    }))
    .await;
    let mut ids: Vec<Uuid> = taken
        .into_iter()
        .flat_map(|t| t.expect("join"))
        .map(|o| o.id)
        .collect();
    ids.sort();
    let mut want: Vec<Uuid> = jobs.iter().map(|j| j.id).collect();
    want.sort();
    assert_eq!(ids, want, "every overdue job handed out, none twice");
}

/// A pause is recorded once, seen by every store instance (another process), kept across a
/// reopen (a restart), and gone after a resume; pausing or resuming twice changes nothing.
async fn paused_queues_are_shared_and_survive_a_reopen(a: Adapter) {
    let db = TestDb::new(a).await;
    let s = db.open().await;
    let other = db.open().await;
    assert!(s.queues_paused().await.expect("read").is_empty());
    assert!(s.queue_pause("reports", 1_000).await.expect("pause"));
    assert!(
        !other
            .queue_pause("reports", 2_000)
            .await
            .expect("pause again"),
        "already paused"
    );
    assert!(s.queue_pause("emails", 3_000).await.expect("pause"));
    let want = std::collections::BTreeMap::from([
        ("emails".to_owned(), 3_000),
        ("reports".to_owned(), 1_000),
    ]);
    assert_eq!(
        other.queues_paused().await.expect("read"),
        want,
        "the first pause's time stays"
    );
    drop((s, other));
    let s = db.open().await;
    assert_eq!(
        s.queues_paused().await.expect("read"),
        want,
        "kept across a reopen"
    );
    assert!(s.queue_resume("reports").await.expect("resume"));
    assert!(
        !s.queue_resume("reports").await.expect("resume again"),
        "not paused"
    );
    assert!(!s.queue_resume("never").await.expect("resume unknown"));
    assert_eq!(
        db.open().await.queues_paused().await.expect("read"),
        std::collections::BTreeMap::from([("emails".to_owned(), 3_000)])
    );
}

/// Jobs for the search tests: `(job, status it is brought to, last error)`, oldest first.
/// Queues `a` and `b`; correlation ids `c0`…`c2`; every third keyed; created 1,000 ms
/// apart, each with a UUIDv7 id of its creation time (as the intake makes them).
async fn search_fixture(s: &Arc<dyn Store>) -> Vec<(NewJob, JobStatus)> {
    let plan = [
        JobStatus::Queued,
        JobStatus::Running,
        JobStatus::Retrying,
        JobStatus::Succeeded,
        JobStatus::Dead,
        JobStatus::Cancelled,
    ];
    let mut out = Vec::new();
    let base = SEARCH_BASE_MS;
    for i in 0..24_i64 {
        let mut job = new_job(if i % 2 == 0 { "a" } else { "b" });
        job.created_at = base + i * 1_000;
        job.correlation_id = Some(format!("c{}", i % 3));
        job.schedule = (i % 4 == 1).then(|| "nightly".to_owned());
        if i % 3 == 0 {
            job.idempotency_key = Some(format!("key-{i}"));
            job.request_hash = Some("h".into());
        }
        let at = u64::try_from(job.created_at).unwrap_or(0);
        job.id = Uuid::new_v7(uuid::Timestamp::from_unix(
            uuid::NoContext,
            at / 1_000,
            u32::try_from(at % 1_000).unwrap_or(0) * 1_000_000,
        ));
        out.push((job, plan[usize::try_from(i).unwrap_or(0) % plan.len()]));
    }
    for (job, status) in &out {
        s.insert(job).await.expect("insert");
        let id = job.id;
        let now = now_ms();
        match status {
            JobStatus::Queued => {}
            JobStatus::Cancelled => {
                s.cancel(id, now).await.expect("cancel");
            }
            _ => {
                s.claim(&claim_req(id, "w", now)).await.expect("claim");
            }
        }
        match status {
            JobStatus::Succeeded => {
                s.succeed(id, "w", None, now).await.expect("succeed");
            }
            JobStatus::Retrying => s
                .retry(
                    id,
                    "w",
                    "Timeout talking to 50%_off.example",
                    now + 60_000,
                    b"{}",
                )
                .await
                .expect("retry"),
            JobStatus::Dead => s
                .dead(id, &format!("exit 65: bad payload {id}"), now)
                .await
                .expect("dead"),
            _ => {}
        }
    }
    out
}

/// When the search fixture's first job was created (ms): 2026-01-01T00:00:00Z.
const SEARCH_BASE_MS: i64 = 1_767_225_600_000;

/// Every page of `filter` (`limit` each), walked with the cursors; asserts each page is
/// newest first.
async fn walk(s: &Arc<dyn Store>, filter: &JobFilter, limit: u32) -> Vec<Uuid> {
    let mut ids = Vec::new();
    let mut after = None;
    for _ in 0..1_000 {
        let page = s.list(filter, after, limit).await.expect("list");
        assert!(page.jobs.len() <= limit as usize);
        ids.extend(page.jobs.iter().map(|j| j.id));
        match page.next_cursor {
            Some(c) => {
                assert_eq!(
                    page.jobs.len(),
                    limit as usize,
                    "only the last page is short"
                );
                after = Some(Cursor::decode(&c.encode()).expect("a cursor reads back"));
            }
            None => return ids,
        }
    }
    panic!("more than 1,000 pages");
}

async fn search_filters_each_condition_newest_first(a: Adapter) {
    let db = TestDb::new(a).await;
    let s = db.open().await;
    let jobs = search_fixture(&s).await;
    let expect = |keep: &dyn Fn(&NewJob, JobStatus) -> bool| -> Vec<Uuid> {
        jobs.iter()
            .rev()
            .filter(|(j, st)| keep(j, *st))
            .map(|(j, _)| j.id)
            .collect()
    };
    let all = walk(&s, &JobFilter::default(), 50).await;
    assert_eq!(all, expect(&|_, _| true), "newest first, every job");
    let cases: Vec<(JobFilter, Vec<Uuid>)> = vec![
        (
            JobFilter {
                queue: Some("a".into()),
                ..JobFilter::default()
            },
            expect(&|j, _| j.queue == "a"),
        ),
        (
            JobFilter {
                statuses: vec![JobStatus::Dead],
                ..JobFilter::default()
            },
            expect(&|_, st| st == JobStatus::Dead),
        ),
        (
            JobFilter {
                statuses: vec![JobStatus::Queued, JobStatus::Retrying],
                ..JobFilter::default()
            },
            expect(&|_, st| matches!(st, JobStatus::Queued | JobStatus::Retrying)),
        ),
        (
            JobFilter {
                queue: Some("b".into()),
                statuses: vec![JobStatus::Running, JobStatus::Dead],
                ..JobFilter::default()
            },
            expect(&|j, st| j.queue == "b" && matches!(st, JobStatus::Running | JobStatus::Dead)),
        ),
        (
            JobFilter {
                created_after: Some(SEARCH_BASE_MS + 5_000),
                created_before: Some(SEARCH_BASE_MS + 12_000),
                ..JobFilter::default()
            },
            expect(&|j, _| {
                (SEARCH_BASE_MS + 5_000..SEARCH_BASE_MS + 12_000).contains(&j.created_at)
            }),
        ),
        (
            JobFilter {
                correlation_id: Some("c1".into()),
                ..JobFilter::default()
            },
            expect(&|j, _| j.correlation_id.as_deref() == Some("c1")),
        ),
        (
            JobFilter {
                idempotency_key: Some("key-9".into()),
                ..JobFilter::default()
            },
            expect(&|j, _| j.idempotency_key.as_deref() == Some("key-9")),
        ),
        (
            // Case ignored; `%` and `_` are plain characters.
            JobFilter {
                error_contains: Some("TIMEOUT talking to 50%_".into()),
                ..JobFilter::default()
            },
            expect(&|_, st| st == JobStatus::Retrying),
        ),
        (
            JobFilter {
                error_contains: Some("50_".into()),
                ..JobFilter::default()
            },
            vec![],
        ),
        (
            JobFilter {
                error_contains: Some("%".into()),
                queue: Some("a".into()),
                ..JobFilter::default()
            },
            expect(&|j, st| j.queue == "a" && st == JobStatus::Retrying),
        ),
        (
            JobFilter {
                queue: Some("nowhere".into()),
                ..JobFilter::default()
            },
            vec![],
        ),
        (
            JobFilter {
                schedule: Some("nightly".into()),
                ..JobFilter::default()
            },
            expect(&|j, _| j.schedule.as_deref() == Some("nightly")),
        ),
        (
            JobFilter {
                schedule: Some("nightly".into()),
                queue: Some("b".into()),
                statuses: vec![JobStatus::Running, JobStatus::Succeeded],
                ..JobFilter::default()
            },
            expect(&|j, st| {
                j.schedule.as_deref() == Some("nightly")
                    && j.queue == "b"
                    && matches!(st, JobStatus::Running | JobStatus::Succeeded)
            }),
        ),
        (
            JobFilter {
                schedule: Some("hourly".into()),
                ..JobFilter::default()
            },
            vec![],
        ),
    ];
    for (filter, want) in cases {
        for limit in [1, 3, 500] {
            assert_eq!(
                walk(&s, &filter, limit).await,
                want,
                "{filter:?}, limit {limit}"
            );
        }
    }
    // The records are whole.
    let dead = s
        .list(
            &JobFilter {
                statuses: vec![JobStatus::Dead],
                ..JobFilter::default()
            },
            None,
            1,
        )
        .await
        .expect("list");
    let got = &dead.jobs[0];
    assert_eq!(Some(got.clone()), s.get(got.id).await.expect("get"));
    assert!(
        got.last_error
            .as_deref()
            .is_some_and(|e| e.contains("exit 65"))
    );
}

/// Pages cut anywhere see every job once, in order, while new jobs arrive between pages
/// (those are newer than the cursor, so the walk does not see them).
async fn pages_see_every_job_once_while_jobs_arrive(a: Adapter) {
    let db = TestDb::new(a).await;
    let s = db.open().await;
    let jobs: Vec<NewJob> = (0..260).map(|_| new_job("q")).collect();
    s.insert_many(&jobs).await.expect("insert_many");
    let mut want: Vec<Uuid> = jobs.iter().map(|j| j.id).collect();
    want.sort();
    want.reverse();
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = s
            .list(&JobFilter::default(), after, 50)
            .await
            .expect("list");
        seen.extend(page.jobs.iter().map(|j| j.id));
        s.insert(&new_job("q")).await.expect("insert");
        match page.next_cursor {
            Some(c) => after = Some(c),
            None => break,
        }
    }
    assert_eq!(seen, want, "no duplicate, no gap, newest first");
    let first = s
        .list(&JobFilter::default(), None, 500)
        .await
        .expect("list");
    assert_eq!(
        first.jobs.len(),
        266,
        "260 jobs and the 6 added while walking"
    );
    assert_eq!(first.next_cursor, None);
    let one = s.list(&JobFilter::default(), None, 1).await.expect("list");
    assert_eq!(one.jobs.len(), 1);
    assert!(one.next_cursor.is_some());
}

async fn cancel_many_changes_only_jobs_not_started(a: Adapter) {
    let db = TestDb::new(a).await;
    let s = db.open().await;
    let jobs = search_fixture(&s).await;
    let ids: Vec<Uuid> = jobs
        .iter()
        .map(|(j, _)| j.id)
        .chain([Uuid::now_v7()])
        .collect();
    let mut cancelled = s.cancel_many(&ids, 7).await.expect("cancel_many");
    cancelled.sort();
    let mut want: Vec<Uuid> = jobs
        .iter()
        .filter(|(_, st)| matches!(st, JobStatus::Queued | JobStatus::Retrying))
        .map(|(j, _)| j.id)
        .collect();
    want.sort();
    assert_eq!(cancelled, want);
    for (job, before) in &jobs {
        let r = s.get(job.id).await.expect("get").expect("row");
        if want.contains(&job.id) {
            assert_eq!((r.status, r.finished_at), (JobStatus::Cancelled, Some(7)));
            // A delivery of a cancelled job is acked, not run.
            assert_eq!(
                s.claim(&claim_req(job.id, "w2", now_ms()))
                    .await
                    .expect("claim"),
                Claim::Final(JobStatus::Cancelled)
            );
        } else {
            assert_eq!(r.status, *before);
        }
    }
    assert!(s.cancel_many(&ids, 8).await.expect("again").is_empty());
    assert!(s.cancel_many(&[], 8).await.expect("none").is_empty());
}

async fn status_counts_by_queue_and_status(a: Adapter) {
    let db = TestDb::new(a).await;
    let s = db.open().await;
    assert!(s.status_counts().await.expect("counts").is_empty());
    search_fixture(&s).await;
    let counts = s.status_counts().await.expect("counts");
    assert_eq!(counts.len(), 2);
    for q in ["a", "b"] {
        assert_eq!(counts[q].values().sum::<u64>(), 12, "{q}");
    }
    // Queue `a` holds the even jobs: statuses 0, 2, 4 of the plan.
    assert_eq!(counts["a"].get(&JobStatus::Queued), Some(&4));
    assert_eq!(counts["a"].get(&JobStatus::Running), None);
    assert_eq!(counts["b"].get(&JobStatus::Running), Some(&4));
}

/// A schedule's state is made once, by its first caller, with `last_tick = now` and no job:
/// a second caller (another process) with a later `now` gets the same row, and so do callers
/// racing over two store instances for a new schedule.
async fn schedule_start_creates_the_state_once(a: Adapter) {
    let db = TestDb::new(a).await;
    let (s, other) = (db.open().await, db.open().await);
    assert!(s.schedule_states().await.expect("states").is_empty());
    let first = ScheduleState {
        last_tick: 1_000,
        last_job: None,
    };
    assert_eq!(
        s.schedule_start("nightly", 1_000).await.expect("start"),
        first
    );
    assert_eq!(
        other.schedule_start("nightly", 5_000).await.expect("start"),
        first,
        "a later caller gets the row the first made"
    );
    let barrier = Arc::new(Barrier::new(8));
    let started = futures::future::join_all((0..8_i64).map(|i| {
        let s = if i % 2 == 0 { s.clone() } else { other.clone() };
        let barrier = barrier.clone();
        tokio::spawn(async move {
            barrier.wait().await;
            s.schedule_start("raced", 10_000 + i).await.expect("start")
        })
    }))
    .await;
    let started: Vec<ScheduleState> = started.into_iter().map(|r| r.expect("join")).collect();
    assert!(
        started.iter().all(|st| *st == started[0]),
        "every racer gets the same row: {started:?}"
    );
    assert!((10_000..10_008).contains(&started[0].last_tick));
    assert_eq!(started[0].last_job, None);
    assert_eq!(
        s.schedule_states().await.expect("states"),
        std::collections::BTreeMap::from([
            ("nightly".to_owned(), first),
            ("raced".to_owned(), started[0]),
        ])
    );
}

/// An advance moves a schedule's state forward and never back: a slower process recording an
/// older tick leaves the later tick and its job; the same tick again takes the new job; an
/// advance of a schedule never started creates its row; concurrent advances over two store
/// instances end at the latest tick and its job; the state is kept across a reopen.
async fn schedule_advance_moves_forward_never_back(a: Adapter) {
    let db = TestDb::new(a).await;
    let (s, other) = (db.open().await, db.open().await);
    s.schedule_start("nightly", 500).await.expect("start");
    let (j1, j2, j3) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    s.schedule_advance("nightly", 2_000, Some(j2))
        .await
        .expect("advance");
    other
        .schedule_advance("nightly", 1_000, Some(j1))
        .await
        .expect("advance an older tick");
    let at_2000 = ScheduleState {
        last_tick: 2_000,
        last_job: Some(j2),
    };
    assert_eq!(
        s.schedule_start("nightly", 9_000).await.expect("start"),
        at_2000,
        "an older tick moves nothing back"
    );
    other
        .schedule_advance("nightly", 2_000, Some(j3))
        .await
        .expect("advance the same tick");
    assert_eq!(
        s.schedule_start("nightly", 9_000).await.expect("start"),
        ScheduleState {
            last_tick: 2_000,
            last_job: Some(j3),
        },
        "the same tick again takes its job"
    );
    s.schedule_advance("nightly", 4_000, None)
        .await
        .expect("skip a tick");
    assert_eq!(
        s.schedule_start("nightly", 9_000).await.expect("start"),
        ScheduleState {
            last_tick: 4_000,
            last_job: Some(j3),
        },
        "a skipped tick moves the state on and keeps the last job"
    );
    let hourly = Uuid::now_v7();
    s.schedule_advance("hourly", 3_000, Some(hourly))
        .await
        .expect("advance a new schedule");
    // Ticks 1..=16 s recorded in a scrambled order by racers on two instances.
    let ticks: Vec<(i64, Uuid)> = [7, 3, 16, 1, 12, 9, 5, 14, 2, 11, 8, 15, 4, 10, 6, 13]
        .into_iter()
        .map(|n: i64| (n * 1_000 + 100_000, Uuid::now_v7()))
        .collect();
    let barrier = Arc::new(Barrier::new(ticks.len()));
    let raced = futures::future::join_all(ticks.iter().enumerate().map(|(i, &(tick, job))| {
        let s = if i % 2 == 0 { s.clone() } else { other.clone() };
        let barrier = barrier.clone();
        tokio::spawn(async move {
            barrier.wait().await;
            s.schedule_advance("raced", tick, Some(job)).await
        })
    }))
    .await;
    for r in raced {
        r.expect("join").expect("advance");
    }
    let latest = ticks
        .iter()
        .max_by_key(|(tick, _)| *tick)
        .copied()
        .expect("ticks");
    let want = std::collections::BTreeMap::from([
        (
            "hourly".to_owned(),
            ScheduleState {
                last_tick: 3_000,
                last_job: Some(hourly),
            },
        ),
        (
            "nightly".to_owned(),
            ScheduleState {
                last_tick: 4_000,
                last_job: Some(j3),
            },
        ),
        (
            "raced".to_owned(),
            ScheduleState {
                last_tick: latest.0,
                last_job: Some(latest.1),
            },
        ),
    ]);
    assert_eq!(other.schedule_states().await.expect("states"), want);
    drop((s, other));
    assert_eq!(
        db.open().await.schedule_states().await.expect("states"),
        want,
        "kept across a reopen"
    );
}

/// A job carries the schedule that made it through every way in (a single insert, a batch,
/// a keyed replay) and out (`get`, `list`, a cancel's record), and the search filters on it.
async fn jobs_carry_their_schedule(a: Adapter) {
    let db = TestDb::new(a).await;
    let s = db.open().await;
    let nightly = |mut j: NewJob| {
        j.schedule = Some("nightly".into());
        j
    };
    let single = nightly(new_job("q"));
    assert_eq!(s.insert(&single).await.expect("insert"), Inserted::New);
    let keyed_job = nightly(keyed("q", "nightly@1000", "h"));
    let batch = vec![
        nightly(new_job("q")),
        new_job("q"),
        NewJob {
            schedule: Some("hourly".into()),
            ..new_job("other")
        },
        keyed_job.clone(),
    ];
    s.insert_many(&batch).await.expect("insert_many");
    let client = new_job("q");
    s.insert(&client).await.expect("insert");
    for (job, want) in [
        (&single, Some("nightly")),
        (&batch[0], Some("nightly")),
        (&batch[1], None),
        (&batch[2], Some("hourly")),
        (&batch[3], Some("nightly")),
        (&client, None),
    ] {
        let r = s.get(job.id).await.expect("get").expect("row");
        assert_eq!(r.schedule.as_deref(), want, "get {}", job.id);
    }
    match s
        .insert(&NewJob {
            id: Uuid::now_v7(),
            ..keyed_job.clone()
        })
        .await
        .expect("insert the key again")
    {
        Inserted::Existing { record, .. } => {
            assert_eq!(
                (record.id, record.schedule.as_deref()),
                (keyed_job.id, Some("nightly"))
            );
        }
        other => panic!("the key's job, not {other:?}"),
    }
    let page = s
        .list(&JobFilter::default(), None, 500)
        .await
        .expect("list");
    assert_eq!(page.jobs.len(), 6);
    for r in &page.jobs {
        assert_eq!(
            Some(r),
            s.get(r.id).await.expect("get").as_ref(),
            "a listed record is whole, its schedule included"
        );
    }
    let by_schedule = |name: &str| JobFilter {
        schedule: Some(name.into()),
        ..JobFilter::default()
    };
    let mut want = vec![single.id, batch[0].id, keyed_job.id];
    want.sort();
    want.reverse();
    assert_eq!(walk(&s, &by_schedule("nightly"), 2).await, want);
    assert_eq!(
        walk(&s, &by_schedule("hourly"), 50).await,
        vec![batch[2].id]
    );
    assert!(walk(&s, &by_schedule("weekly"), 50).await.is_empty());
    assert_eq!(
        walk(
            &s,
            &JobFilter {
                queue: Some("other".into()),
                ..by_schedule("nightly")
            },
            50
        )
        .await,
        Vec::<Uuid>::new()
    );
    match s.cancel(single.id, now_ms()).await.expect("cancel") {
        Cancel::Cancelled(r) => assert_eq!(r.schedule.as_deref(), Some("nightly")),
        other => panic!("cancelled, not {other:?}"),
    }
}

/// Runs each listed test on both adapters, as `sqlite::NAME` and `postgres::NAME`.
macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::$name(super::Adapter::Sqlite).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::$name(super::Adapter::Postgres).await;
                }
            )*
        }
    };
}

conformance!(
    claim_then_succeed_then_duplicate_is_final,
    an_expired_lease_is_claimed_again_and_the_late_owner_changes_nothing,
    a_success_of_a_watched_job_says_so_and_a_late_watch_sees_the_success,
    a_delivery_without_a_row_creates_it,
    concurrent_claims_have_exactly_one_winner_per_job,
    batched_claims_and_successes_answer_each_write,
    an_idempotency_key_returns_the_existing_job,
    concurrent_inserts_with_one_key_make_one_job,
    concurrent_inserts_get_their_own_answers,
    insert_many_answers_in_order_in_one_transaction,
    insert_many_is_all_or_nothing,
    a_refused_insert_fails_only_its_own_request,
    a_failed_attempt_then_a_claim_counts_attempts,
    dead_is_final_but_never_overrides_success,
    release_gives_the_attempt_back_and_forget_removes_an_unpublished_job,
    cancel_only_before_start,
    revive_brings_back_only_dead_jobs_and_discard_marks_them,
    prune_removes_only_old_finished_jobs,
    status_counts_jobs_by_queue_and_status,
    export_then_import_copies_rows_unchanged,
    a_stopped_copy_resumes_and_ends_checked,
    a_store_with_a_newer_schema_is_refused,
    stores_opened_together_on_a_new_database_all_open,
    overdue_retries_and_delayed_jobs_are_handed_out_once,
    concurrent_sweeps_hand_each_overdue_job_to_one_sweeper,
    paused_queues_are_shared_and_survive_a_reopen,
    search_filters_each_condition_newest_first,
    pages_see_every_job_once_while_jobs_arrive,
    cancel_many_changes_only_jobs_not_started,
    status_counts_by_queue_and_status,
    schedule_start_creates_the_state_once,
    schedule_advance_moves_forward_never_back,
    jobs_carry_their_schedule,
);
