//! Assembling warren: config + store + broker + handlers, run as intake, workers, or both.
//!
//! Shutdown is a [`CancellationToken`] passed in and fanned out to the HTTP server and every
//! queue's consumer; [`App::run`] returns when all of them have stopped.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};
use warren_workers::{ExecHandler, Handler, HttpHandler, Noop};

use crate::broker::Broker;
use crate::config::{Config, HandlerSpec};
use crate::consumer::{self, WorkerContext};
use crate::error::{Error, ErrorKind, Result};
use crate::intake::{self, IntakeState};
use crate::publisher::Publisher;
use crate::store::{self, Store};
use crate::topology;

/// How often finished jobs past the retention are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(600);

/// What a process runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// HTTP intake and workers for every queue (`warren run`).
    All,
    /// HTTP intake only (`warren serve`).
    Intake,
    /// Workers only, for these queues (all when empty) (`warren work`).
    Workers(Vec<String>),
}

/// A configured warren, ready to run.
pub struct App {
    config: Arc<Config>,
    store: Arc<dyn Store>,
    broker: Broker,
    publisher: Arc<Publisher>,
    handlers: BTreeMap<String, Arc<dyn Handler>>,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("config", &self.config.path)
            .field("broker", &self.broker)
            .finish_non_exhaustive()
    }
}

/// Builds an [`App`]; see [`App::builder`].
pub struct AppBuilder {
    config: Config,
    by_queue: HashMap<String, Arc<dyn Handler>>,
    by_name: HashMap<String, Arc<dyn Handler>>,
}

impl AppBuilder {
    /// Runs `queue`'s jobs with `handler`, whatever its `handler` setting says.
    pub fn queue_handler(mut self, queue: &str, handler: impl Handler) -> Self {
        self.by_queue.insert(queue.to_owned(), Arc::new(handler));
        self
    }

    /// Registers `handler` for queues configured with `handler = { rust = "NAME" }`.
    pub fn named_handler(mut self, name: &str, handler: impl Handler) -> Self {
        self.by_name.insert(name.to_owned(), Arc::new(handler));
        self
    }

    /// Opens the store (creating and migrating it) and prepares the broker connection (lazy:
    /// nothing is sent to the broker yet) and every queue's handler.
    ///
    /// # Errors
    /// [`ErrorKind::Store`] when the store cannot be opened; [`ErrorKind::Config`] when a
    /// `rust` handler is not registered.
    pub async fn build(self) -> Result<App> {
        let config = self.config;
        let http_client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("warren/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::config(format!("cannot build the HTTP client: {e}")))?;
        let mut handlers: BTreeMap<String, Arc<dyn Handler>> = BTreeMap::new();
        for q in config.queues.values() {
            let handler: Arc<dyn Handler> = if let Some(h) = self.by_queue.get(&q.name) {
                h.clone()
            } else {
                match &q.handler {
                    HandlerSpec::Noop => Arc::new(Noop),
                    HandlerSpec::Http { url, signing } => {
                        let handler = HttpHandler::new(url.clone(), http_client.clone());
                        Arc::new(match signing {
                            Some(signer) => handler.signed(signer.clone()),
                            None => handler,
                        })
                    }
                    HandlerSpec::Exec { program, args } => Arc::new(ExecHandler::new(
                        program.clone(),
                        args.clone(),
                        Some(config.base_dir.clone()),
                    )),
                    HandlerSpec::Rust(name) => self.by_name.get(name).cloned().ok_or_else(|| {
                        Error::config(format!(
                            "queue `{}` uses handler {{ rust = \"{name}\" }} but no handler of that name is registered",
                            q.name
                        ))
                    })?,
                }
            };
            handlers.insert(q.name.clone(), handler);
        }
        crate::telemetry::install();
        let broker = Broker::new(&config.broker.urls, "app")?;
        // Every final state written through the store is announced to the waiters of
        // `?wait=` (`crate::events`).
        let store = crate::events::AnnouncingStore::wrap(
            store::open(&config.store_options()).await?,
            Arc::new(crate::events::Announcer::new(broker.clone())),
        );
        let publisher = Arc::new(Publisher::new(
            broker.clone(),
            config.broker.publish_channels,
            config.broker.confirm_timeout,
        ));
        Ok(App {
            config: Arc::new(config),
            store,
            broker,
            publisher,
            handlers,
        })
    }
}

impl App {
    /// Starts building an app from `config`.
    pub fn builder(config: Config) -> AppBuilder {
        AppBuilder {
            config,
            by_queue: HashMap::new(),
            by_name: HashMap::new(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The broker handle.
    pub fn broker(&self) -> &Broker {
        &self.broker
    }

    /// The status store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The DLQ tools on this deployment's broker and store.
    pub fn dlq(&self) -> crate::dlq::Dlq<'_> {
        crate::dlq::Dlq {
            config: &self.config,
            broker: &self.broker,
            publisher: &self.publisher,
            store: &self.store,
        }
    }

    /// Per configured queue: ready, unacked, consumers, running, retrying, dead, paused and
    /// rates (see [`crate::overview`]); what `GET /v1/queues` and `warren queues` show.
    ///
    /// # Errors
    /// As [`crate::overview::overview`].
    pub async fn queue_overview(&self) -> Result<crate::overview::Overview> {
        let stats = crate::overview::StatsCache::default();
        crate::overview::overview(&self.config, &self.broker, &self.store, &stats).await
    }

    /// Runs `role` until `shutdown` is cancelled. `listener` serves the intake (required for
    /// [`Role::All`] and [`Role::Intake`]).
    ///
    /// The topology is declared at start-up, retried with backoff while the broker is down;
    /// meanwhile the intake answers 503 and `/healthz` 200.
    ///
    /// # Errors
    /// [`ErrorKind::TopologyMismatch`] when an existing queue has other arguments (fatal);
    /// [`ErrorKind::Config`] for an unknown queue in [`Role::Workers`] or a missing listener;
    /// I/O errors of the HTTP server.
    pub async fn run(
        &self,
        role: Role,
        listener: Option<TcpListener>,
        shutdown: CancellationToken,
    ) -> Result<()> {
        let worker_queues: Vec<String> = match &role {
            Role::All => self.config.queues.keys().cloned().collect(),
            Role::Intake => Vec::new(),
            Role::Workers(qs) if qs.is_empty() => self.config.queues.keys().cloned().collect(),
            Role::Workers(qs) => {
                for q in qs {
                    if self.config.queue(q).is_none() {
                        return Err(Error::config(format!("`{q}` is not a configured queue")));
                    }
                }
                qs.clone()
            }
        };
        if !worker_queues.is_empty() {
            for w in self.config.warnings() {
                warn!("{w}");
            }
        }
        let serve = matches!(role, Role::All | Role::Intake);
        if let (true, Some(l)) = (serve, &listener) {
            check_exposure(l.local_addr()?, &self.config.auth)?;
        }
        // A fatal error anywhere stops everything.
        let stop = shutdown.child_token();
        let fatal: Arc<std::sync::Mutex<Option<Error>>> = Arc::default();
        let tasks = TaskTracker::new();

        let topology_ready = CancellationToken::new();
        {
            let (broker, config, stop, ready, fatal) = (
                self.broker.clone(),
                self.config.clone(),
                stop.clone(),
                topology_ready.clone(),
                fatal.clone(),
            );
            tasks.spawn(async move {
                match apply_topology_with_retry(&broker, &config, &stop).await {
                    Ok(true) => ready.cancel(),
                    Ok(false) => {}
                    Err(e) => {
                        error!(error = %e, "cannot declare the topology");
                        if let Ok(mut f) = fatal.lock() {
                            *f = Some(e);
                        }
                        stop.cancel();
                    }
                }
            });
        }

        if serve {
            let listener = listener.ok_or_else(|| Error::config("the intake needs a listener"))?;
            // The listener for finished jobs that wakes `?wait=` requests.
            let waiters = crate::events::Waiters::start(self.broker.clone(), &tasks, stop.clone());
            let router = intake::router(IntakeState {
                config: self.config.clone(),
                store: self.store.clone(),
                publisher: self.publisher.clone(),
                topology_ready: topology_ready.clone(),
                stats: Arc::default(),
                waiters,
            })
            .layer(tower_http::trace::TraceLayer::new_for_http().make_span_with(request_span));
            let addr = listener.local_addr()?;
            info!(%addr, "HTTP intake listening");
            let stop_http = stop.clone();
            let fatal = fatal.clone();
            tasks.spawn(async move {
                let res = axum::serve(listener, router)
                    .with_graceful_shutdown(stop_http.clone().cancelled_owned())
                    .await;
                if let Err(e) = res {
                    error!(error = %e, "HTTP server failed");
                    if let Ok(mut f) = fatal.lock() {
                        *f = Some(e.into());
                    }
                    stop_http.cancel();
                }
            });
        }

        if serve {
            // Schedules: every intake evaluates them; each tick makes one job (`crate::schedule`).
            let scheduler = crate::schedule::Scheduler::new(
                self.config.clone(),
                self.store.clone(),
                self.publisher.clone(),
            );
            let (stop, ready) = (stop.clone(), topology_ready.clone());
            tasks.spawn(async move {
                tokio::select! {
                    () = ready.cancelled() => scheduler.run(stop).await,
                    () = stop.cancelled() => {}
                }
            });
        }

        if !worker_queues.is_empty() {
            // Which queues are paused, read from the store every second (`crate::admission`).
            let pauses = crate::admission::Pauses::start(self.store.clone(), stop.clone());
            let ctx = Arc::new(WorkerContext {
                broker: self.broker.clone(),
                publisher: self.publisher.clone(),
                store: self.store.clone(),
                owner: format!(
                    "worker-{}-{}",
                    std::process::id(),
                    uuid::Uuid::now_v7().simple()
                ),
                shutdown_grace: self.config.worker.shutdown_grace,
                store_gate: crate::store_gate::StoreGate::new(self.store.clone()),
                stop: stop.clone(),
                pauses: pauses.clone(),
            });
            {
                // Overdue retries and delayed jobs of the queues this process serves.
                let served: Vec<String> = worker_queues
                    .iter()
                    .filter_map(|n| self.config.queue(n).map(|q| q.name.clone()))
                    .collect();
                let (store, publisher, after, stop, ready) = (
                    self.store.clone(),
                    self.publisher.clone(),
                    self.config.worker.retry_sweep_after,
                    stop.clone(),
                    topology_ready.clone(),
                );
                tasks.spawn(async move {
                    tokio::select! {
                        () = ready.cancelled() => crate::sweeper::run(store, publisher, served, after, pauses, stop).await,
                        () = stop.cancelled() => {}
                    }
                });
            }
            for name in worker_queues {
                let (Some(q), Some(h)) = (self.config.queue(&name), self.handlers.get(&name))
                else {
                    continue;
                };
                let (ctx, q, h, stop, ready) = (
                    ctx.clone(),
                    q.clone(),
                    h.clone(),
                    stop.clone(),
                    topology_ready.clone(),
                );
                tasks.spawn(async move {
                    tokio::select! {
                        () = ready.cancelled() => consumer::run(ctx, q, h, stop).await,
                        () = stop.cancelled() => {}
                    }
                });
            }
        }

        for q in self.config.queues.values() {
            crate::telemetry::register_queue(&q.name);
        }
        {
            // `warren_broker_connected`, and histogram upkeep between scrapes.
            let (broker, stop) = (self.broker.clone(), stop.clone());
            tasks.spawn(crate::periodic::run(stop, move || {
                let broker = broker.clone();
                async move {
                    crate::maintenance::probe(&broker).await;
                    crate::telemetry::UPKEEP_EVERY
                }
            }));
        }
        {
            // Retention: finished jobs and their idempotency keys are pruned (DESIGN §7).
            let (store, retention, stop) = (
                self.store.clone(),
                self.config.store.retention,
                stop.clone(),
            );
            tasks.spawn(crate::periodic::run(stop, move || {
                let store = store.clone();
                async move {
                    crate::maintenance::prune(&*store, retention, crate::store::now_ms()).await;
                    PRUNE_EVERY
                }
            }));
        }

        tasks.close();
        tasks.wait().await;
        let fatal = fatal.lock().ok().and_then(|mut f| f.take());
        match fatal {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// The tracing span of one HTTP request: method, path and the client's `X-Correlation-ID`
/// (empty when absent), so that every line logged while serving it can be traced back.
/// At debug level (with tower-http's request and response lines): at info a span per request
/// cost a few % of the intake's CPU, and the lines about a job name it themselves.
fn request_span<B>(req: &axum::http::Request<B>) -> tracing::Span {
    let correlation_id = req
        .headers()
        .get("x-correlation-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    tracing::debug_span!(
        "request",
        method = %req.method(),
        path = %req.uri().path(),
        correlation_id = %crate::message::truncate(correlation_id, 255),
    )
}

/// Declares the topology, retrying with backoff while the broker is unavailable.
/// `Ok(false)` when `stop` came first.
/// Refuses an intake reachable from other hosts without API tokens (DESIGN §9), unless
/// `--insecure-no-auth` was given, which is logged as a warning.
///
/// # Errors
/// [`ErrorKind::Config`] naming the address and the ways out.
fn check_exposure(addr: std::net::SocketAddr, auth: &crate::config::AuthConfig) -> Result<()> {
    if addr.ip().is_loopback() || !auth.tokens.is_empty() {
        return Ok(());
    }
    if auth.insecure_no_auth {
        warn!(%addr, "serving without authentication on a non-loopback address (--insecure-no-auth): anyone who can reach it may submit jobs and empty the DLQs");
        return Ok(());
    }
    Err(Error::config(format!(
        "refusing to serve on {addr} without API tokens: a non-loopback bind needs WARREN_API_TOKENS or auth.tokens_file in the config (see the README, Security), or --insecure-no-auth to let anyone who can reach it in"
    )))
}

async fn apply_topology_with_retry(
    broker: &Broker,
    config: &Config,
    stop: &CancellationToken,
) -> Result<bool> {
    let mut delay = Duration::from_millis(200);
    loop {
        let attempt =
            tokio::time::timeout(Duration::from_secs(60), topology::apply(broker, config));
        let outcome = attempt.await.unwrap_or_else(|_| {
            Err(
                ErrorKind::BrokerUnavailable("declaring the topology took over 60 s".to_owned())
                    .into(),
            )
        });
        match outcome {
            Ok(()) => {
                info!(
                    broker = broker.display_url(),
                    queues = config.queues.len(),
                    "topology declared"
                );
                for w in topology::replication_warnings(config).await {
                    warn!("{w}");
                }
                return Ok(true);
            }
            Err(e) if e.is_unavailable() || matches!(e.kind(), ErrorKind::BrokerUnavailable(_)) => {
                warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "broker unavailable; will declare the topology when it is back");
            }
            Err(e) => return Err(e),
        }
        tokio::select! {
            () = stop.cancelled() => return Ok(false),
            () = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(10));
    }
}
