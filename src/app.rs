//! Wiring: a validated `Config` becomes a spool, a route table, sinks, a dispatcher and the
//! ingress server; this module owns the shutdown order.
//!
//! Shutdown: stop accepting and finish in-flight requests; stop leasing; let in-flight
//! deliveries finish within the grace period; name what is still running; return.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::accept::Acceptor;
use crate::admin::{AdminServer, AdminState};
use crate::config::{
    live, reload_channel, watch_file, Config, IngressConfig, Live, ReloadTrigger, SpoolBackend,
    SpoolConfig,
};
use crate::control::Pauses;
use crate::history::{History, HistoryError};
use crate::ingress::{self, IngressState};
use crate::reload::{Generation, Reloader};
use crate::routing::RouteTable;
use crate::server::Server;
use crate::server_tls::{ServerTls, ServerTlsError};
use crate::sinks::{self, Handler, Handlers};
use crate::sources::{self, SourcesState};
use crate::spool::{Retained, Spool, SpoolHandle};
use crate::telemetry::{Counters, ExportSettings, SpanExport};

/// A switchyard instance being assembled: a configuration plus registered handlers.
#[derive(Debug)]
pub struct Switchyard {
    config: Config,
    handlers: Handlers,
    admin_listener: Option<TcpListener>,
    config_file: Option<PathBuf>,
    config_source: Option<Vec<u8>>,
    watch: bool,
}

/// Why switchyard could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// A sink could not be built (for example an unregistered handler).
    #[error(transparent)]
    Sink(#[from] sinks::BuildError),
    /// The spool could not be opened (unreadable, damaged or from a newer version).
    #[error(transparent)]
    Spool(#[from] crate::spool::OpenError),
    /// The paused sinks could not be read (`<spool.path>/paused.json`).
    #[error(transparent)]
    Pauses(#[from] crate::control::PauseError),
    /// The saga store could not be opened (`<spool.path>/sagas.db`).
    #[error(transparent)]
    Sagas(#[from] crate::saga::SagaError),
    /// The delivery history could not be opened (`<spool.path>/history/`).
    #[error(transparent)]
    History(#[from] HistoryError),
    /// The store of delivered events kept for replay could not be opened
    /// (`<spool.path>/retained/`).
    #[error(transparent)]
    Retained(#[from] crate::spool::RetainError),
    /// The ingress or admin address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// TLS could not be set up for the ingress or admin server.
    #[error("{server} TLS: {source}")]
    Tls {
        /// `ingress` or `admin`.
        server: &'static str,
        /// Why.
        #[source]
        source: ServerTlsError,
    },
    /// The ingress server failed.
    #[error("ingress server failed: {0}")]
    Serve(#[source] std::io::Error),
    /// The server task panicked or was aborted.
    #[error("server task ended abnormally: {0}")]
    Task(#[from] tokio::task::JoinError),
}

impl Switchyard {
    /// A switchyard for a validated configuration.
    pub fn new(config: Config) -> Self {
        Self {
            config,
            handlers: Handlers::default(),
            admin_listener: None,
            config_file: None,
            config_source: None,
            watch: false,
        }
    }

    /// The file the configuration came from: enables reloading it (SIGHUP in the binary,
    /// `POST /api/v1/reload`), and with `watch` also whenever the file changes.
    pub fn config_file(mut self, path: impl Into<PathBuf>, watch: bool) -> Self {
        self.config_file = Some(path.into());
        self.watch = watch;
        self
    }

    /// The bytes the configuration was loaded from, when the caller read the file itself; a
    /// file event that leaves the file so is not reloaded. Without it the file is read at start.
    pub fn config_source(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        self.config_source = Some(bytes.into());
        self
    }

    /// Registers a Rust handler that `handler: { name }` sinks deliver to.
    pub fn handler(mut self, name: impl Into<String>, handler: impl Handler) -> Self {
        self.handlers.insert(name, handler);
        self
    }

    /// Serves the admin endpoints on `listener` instead of binding `admin_listen` (tests
    /// bind `127.0.0.1:0`).
    pub fn admin_listener(mut self, listener: TcpListener) -> Self {
        self.admin_listener = Some(listener);
        self
    }

    /// Binds `listen` and `admin_listen` from the configuration and starts serving.
    pub async fn start(mut self) -> Result<Running, RunError> {
        let addr = self.config.listen;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| RunError::Bind { addr, source })?;
        if self.admin_listener.is_none() {
            let addr = self.config.admin.listen;
            let admin = TcpListener::bind(addr)
                .await
                .map_err(|source| RunError::Bind { addr, source })?;
            self.admin_listener = Some(admin);
        }
        self.start_on(listener)
    }

    /// Starts serving on an already bound listener (tests bind `127.0.0.1:0`). The admin
    /// server uses the listener given to [`Switchyard::admin_listener`], or binds
    /// `admin_listen` now.
    pub fn start_on(self, listener: TcpListener) -> Result<Running, RunError> {
        let local_addr = listener.local_addr().map_err(RunError::Serve)?;
        let admin_listener = match self.admin_listener {
            Some(admin) => admin,
            None => bind_now(self.config.admin.listen)?,
        };
        let admin_addr = admin_listener.local_addr().map_err(RunError::Serve)?;
        let ingress_tls = start_tls("ingress", self.config.ingress.tls.as_ref())?;
        let admin_tls = start_tls("admin", self.config.admin.tls.as_ref())?;
        let config = Arc::new(self.config);
        let registry = Arc::new(sinks::build(&config, &self.handlers)?);
        let spool = Arc::new(SpoolHandle::open(&config.spool)?);
        let counters = Arc::new(Counters::default());
        let pauses = Arc::new(Pauses::open(pause_dir(&config.spool))?);
        let history = History::open(config.history, &config.spool)?;
        let retained = Retained::open(&config.spool, spool.clone())?;
        let spans = SpanExport::start(export_settings(&config.telemetry));
        let (routes, live_routes) = live(RouteTable::from_config(&config));
        let (ingress_config, live_ingress) = live(config.ingress.clone());
        let (config_publisher, live_config) = live(Config::clone(&config));
        let sagas = open_sagas(&config)?;
        let mut acceptor = Acceptor::new(live_routes, spool.clone(), counters.clone())
            .dedup_window(config.ingress.dedup_window);
        if let Some(sagas) = &sagas {
            acceptor = acceptor.sagas(sagas.clone());
        }
        let state = IngressState {
            acceptor: acceptor.clone(),
            config: live_ingress.clone(),
            counters: counters.clone(),
            traced: config.telemetry.traces_url.is_some(),
        };
        let hooks = SourcesState {
            acceptor: acceptor.clone(),
            config: live_config.clone(),
            counters: counters.clone(),
        };

        let shutdown = CancellationToken::new();
        // Expired sightings and dead letters go at the rate they expire, whatever the traffic.
        tokio::spawn(crate::spool::sweep_until(spool.clone(), shutdown.clone()));
        let deliveries = TaskTracker::new();
        let stop_leasing = CancellationToken::new();
        if let Some(sagas) = &sagas {
            let runner = crate::dispatch::SagaRunner {
                sagas: sagas.clone(),
                spool: spool.clone(),
                acceptor: acceptor.clone(),
                retention: config.saga_retention,
            };
            deliveries.spawn(runner.run(stop_leasing.clone()));
        }
        let loaded = match (self.config_source, &self.config_file) {
            (Some(bytes), _) => bytes,
            (None, Some(path)) => std::fs::read(path).unwrap_or_default(),
            (None, None) => Vec::new(),
        };
        let reloader = Reloader {
            path: self.config_file.clone().unwrap_or_default(),
            loaded,
            handlers: self.handlers,
            spool: spool.clone(),
            counters: counters.clone(),
            pauses: pauses.clone(),
            acceptor,
            routes,
            ingress: ingress_config,
            config: config_publisher,
            stop_leasing: stop_leasing.clone(),
            shutdown: shutdown.clone(),
            tracker: deliveries.clone(),
            history: history.clone(),
            retained: retained.clone(),
            sagas: sagas.clone(),
        };
        // Schedules feed the accept side, so they stop with ingress, before leasing stops.
        let runs = reloader.start_runs(Generation {
            config: &config,
            sinks: registry,
        });
        let (trigger, requests) = reload_channel();
        let (reload, watcher) = match &self.config_file {
            Some(path) => {
                let watcher = self.watch.then(|| watch(path, trigger.clone())).flatten();
                tokio::spawn(reloader.run(requests, runs));
                (Some(trigger), watcher)
            }
            None => (None, None),
        };
        deliveries.close();

        let admin = AdminServer::spawn(
            admin_listener,
            AdminState {
                config: live_config,
                spool: spool.clone(),
                counters: counters.clone(),
                pauses,
                stopping: shutdown.clone(),
                reload: reload.clone(),
                history: history.clone(),
                retained: retained.clone(),
                sagas,
            },
            admin_tls,
        );
        let server = tokio::spawn(serve_with_admin(
            admin,
            spans,
            (history, retained),
            ServeParts {
                listener,
                router: ingress::router(state).merge(sources::router(hooks)),
                meter: ingress::Meter::new(counters.clone()),
                limits: live_ingress,
                max_connections: config.ingress.connections.max_connections,
                tls: ingress_tls,
                shutdown: shutdown.clone(),
                stop_leasing,
                deliveries,
                grace: config.shutdown_grace,
                watcher,
            },
        ));
        tracing::info!(listen = %local_addr, admin = %admin_addr, routes = config.routes.len(), sinks = config.sinks.len(), "Switchyard started");
        if !local_addr.ip().is_loopback() && config.ingress.auth.is_empty() {
            tracing::warn!(listen = %local_addr, "Ingress accepts events from other hosts without credentials; set ingress.auth or listen on 127.0.0.1");
        }
        Ok(Running {
            local_addr,
            admin_addr,
            shutdown,
            server,
            counters,
            spool,
            reload,
        })
    }
}

/// A started switchyard.
#[derive(Debug)]
pub struct Running {
    local_addr: SocketAddr,
    admin_addr: SocketAddr,
    shutdown: CancellationToken,
    server: JoinHandle<Result<(), RunError>>,
    counters: Arc<Counters>,
    spool: Arc<SpoolHandle>,
    reload: Option<ReloadTrigger>,
}

impl Running {
    /// Asks for a reload of the configuration file; `None` when started without one
    /// (see [`Switchyard::config_file`]).
    pub fn reload_trigger(&self) -> Option<ReloadTrigger> {
        self.reload.clone()
    }

    /// The address ingress listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The address the admin server listens on.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// A token that starts the graceful shutdown when cancelled.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Counters of what happened since start.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Deliveries stored for `sink` (queued and in flight).
    pub fn spool_depth(&self, sink: &str) -> usize {
        self.spool.depth(sink)
    }

    /// Waits until the server has shut down (after the token is cancelled).
    pub async fn wait(self) -> Result<(), RunError> {
        self.server.await?
    }

    /// Starts the graceful shutdown and waits for it to finish.
    pub async fn stop(self) -> Result<(), RunError> {
        self.shutdown.cancel();
        self.wait().await
    }
}

/// Watches the configuration file; a failure to watch is logged, not fatal.
fn watch(path: &Path, trigger: ReloadTrigger) -> Option<notify::RecommendedWatcher> {
    match watch_file(path, trigger) {
        Ok(watcher) => Some(watcher),
        Err(error) => {
            tracing::warn!(path = %path.display(), %error, "Cannot watch the configuration file; reload with SIGHUP or the admin API");
            None
        }
    }
}

/// TLS for one server when configured.
fn start_tls(
    server: &'static str,
    config: Option<&crate::config::TlsServerConfig>,
) -> Result<Option<ServerTls>, RunError> {
    config
        .map(|c| ServerTls::start(server, c))
        .transpose()
        .map_err(|source| RunError::Tls { server, source })
}

/// Where paused sinks are kept across restarts: beside the spool, except for the `memory`
/// backend, whose state ends with the process anyway.
fn pause_dir(spool: &SpoolConfig) -> Option<&Path> {
    match spool.backend {
        SpoolBackend::Memory => None,
        SpoolBackend::Embedded | SpoolBackend::Nats => Some(&spool.path),
    }
}

/// The saga store, when the configuration has sagas or the spool directory has a store
/// (instances of sagas a later file removed still run to their end).
fn open_sagas(config: &Config) -> Result<Option<crate::saga::Sagas>, RunError> {
    let kept = config.spool.backend == SpoolBackend::Embedded
        && config.spool.path.join("sagas.db").exists();
    if config.sagas.is_empty() && !kept {
        return Ok(None);
    }
    Ok(Some(crate::saga::Sagas::open(&config.spool)?))
}

/// Binds `addr` without waiting (for the synchronous [`Switchyard::start_on`]).
/// What `SpanExport` needs of the telemetry settings; `None` when nothing is exported.
fn export_settings(config: &crate::config::TelemetryConfig) -> Option<ExportSettings<'_>> {
    Some(ExportSettings {
        url: config.traces_url.as_ref()?,
        service_name: &config.service_name,
        resource_attributes: &config.resource_attributes,
        headers: &config.headers,
        timeout: config.timeout,
        queue: config.queue_size,
    })
}

fn bind_now(addr: SocketAddr) -> Result<TcpListener, RunError> {
    let bind = || {
        let listener = std::net::TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        TcpListener::from_std(listener)
    };
    bind().map_err(|source| RunError::Bind { addr, source })
}

/// Serves until shutdown completes, then stops the admin server, which answers probes
/// (not ready) while ingress and deliveries drain, sends the last spans and writes the last
/// delivery history.
async fn serve_with_admin(
    admin: AdminServer,
    spans: SpanExport,
    (history, retained): (History, Retained),
    parts: ServeParts,
) -> Result<(), RunError> {
    let result = serve(parts).await;
    admin.stop().await;
    spans.flush().await;
    history.close().await;
    retained.close().await;
    result
}

struct ServeParts {
    listener: TcpListener,
    router: axum::Router,
    /// Records each answer in the ingress request metrics.
    meter: ingress::Meter,
    /// Timeouts for new connections (a reload changes them).
    limits: Live<IngressConfig>,
    /// Fixed at start: a reload that changes it is logged and waits for a restart.
    max_connections: usize,
    /// TLS termination; `None` serves plain HTTP.
    tls: Option<ServerTls>,
    shutdown: CancellationToken,
    stop_leasing: CancellationToken,
    deliveries: TaskTracker,
    grace: std::time::Duration,
    /// Kept alive while serving; dropping it stops watching the file.
    watcher: Option<notify::RecommendedWatcher>,
}

async fn serve(parts: ServeParts) -> Result<(), RunError> {
    let shutdown = parts.shutdown.clone();
    let watcher = parts.watcher;
    let limits = parts.limits;
    let server = Server {
        listener: parts.listener,
        router: parts.router,
        meter: Some(parts.meter),
        name: "ingress",
        max_connections: parts.max_connections,
        limits: move || limits.get().connections,
        tls: parts.tls,
    }
    .run(shutdown.clone());
    // Requests in flight get the grace period to finish; a client that never finishes
    // must not hold the process up.
    let overrun = async {
        shutdown.cancelled().await;
        tokio::time::sleep(parts.grace).await;
    };
    tokio::select! {
        () = server => {}
        () = overrun => tracing::warn!(grace = ?parts.grace, "Requests still in flight after the grace period; closing"),
    }
    drop(watcher);
    tracing::info!("Ingress stopped; stopping deliveries");
    parts.stop_leasing.cancel();
    if tokio::time::timeout(parts.grace, parts.deliveries.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            still_running = parts.deliveries.len(),
            grace = ?parts.grace,
            "Shutdown grace period ran out with deliveries in flight; they will be retried"
        );
    }
    tracing::info!("Switchyard stopped");
    Ok(())
}
