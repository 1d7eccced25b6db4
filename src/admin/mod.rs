//! The admin server, beside ingress on its own address: health and readiness probes,
//! Prometheus metrics, a JSON API over routes, sinks, dead letters and the delivery history,
//! and the operator dashboard that drives it.
//!
//! Imports `spool`, `config`, `control`, `history`, `telemetry`, and `event` and `routing` (to
//! explain an event); nothing imports `admin` except `app`.
//!
//! - `probes`: `GET /healthz` and `GET /readyz` (always open, for orchestrators).
//! - `dashboard`: the page at `GET /` and its script and style sheet (open: they hold no data).
//! - `api`: `GET /metrics`, `GET /api/v1/routes`, `GET /api/v1/sinks`,
//!   `DELETE /api/v1/sinks/{name}/deliveries` (orphaned deliveries),
//!   `POST /api/v1/sinks/{name}/pause` and `/resume`, `POST /api/v1/reload`.
//! - `dead_letters`: list, show, replay and purge dead letters under `/api/v1/dead-letters`.
//! - `events`: the delivery history under `/api/v1/events`.
//! - `explain`: `POST /api/v1/explain`, which routes match an event and why.
//! - `replay`: `POST /api/v1/replay` and `GET /api/v1/replays/{id}` (retained events).
//! - `auth`: with `admin.token` set, everything but the probes needs `Authorization: Bearer`;
//!   without it, only requests addressed to `localhost` or an IP address are served; requests
//!   that change something are refused when a browser sent them from another site.

mod api;
mod auth;
mod dashboard;
mod dead_letters;
mod events;
mod explain;
mod probes;
mod replay;
mod sagas;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::middleware;
use axum::routing::{delete, get, post};
use axum::Router;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, Live, ReloadTrigger};
use crate::control::Pauses;
use crate::history::History;
use crate::server::{Server, ADMIN_MAX_CONNECTIONS};
use crate::server_tls::ServerTls;
use crate::spool::{Retained, Spool, SpoolHandle};
use crate::telemetry::{self, Counters};

/// How often spool-depth gauges are refreshed and histogram samples folded in, so memory
/// stays bounded even when nothing scrapes `/metrics`.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// How long stopping waits for admin requests in flight.
const STOP_WAIT: Duration = Duration::from_secs(5);

/// What the admin handlers share.
#[derive(Debug, Clone)]
pub(crate) struct AdminState {
    /// The running configuration (replaced by reloads).
    pub(crate) config: Live<Config>,
    /// The spool (readiness probe and backlogs).
    pub(crate) spool: Arc<SpoolHandle>,
    /// Process counters and per-sink statistics.
    pub(crate) counters: Arc<Counters>,
    /// Paused sinks.
    pub(crate) pauses: Arc<Pauses>,
    /// Cancelled when the daemon starts shutting down (readiness then fails).
    pub(crate) stopping: CancellationToken,
    /// Asks for a configuration reload; `None` when there is no file to reload.
    pub(crate) reload: Option<ReloadTrigger>,
    /// Delivery history (`/api/v1/events`).
    pub(crate) history: History,
    /// Delivered events kept for replay (`/api/v1/replay`).
    pub(crate) retained: Retained,
    /// Saga instances (`/api/v1/sagas`); `None` when no saga runs here.
    pub(crate) sagas: Option<crate::saga::Sagas>,
}

impl AdminState {
    /// Sets each configured sink's spool-depth and backlog-age gauges, and the spool's size
    /// gauges, from the spool.
    fn refresh_depths(&self) {
        let config = self.config.get();
        let now = SystemTime::now();
        let ages = self.spool.tells_oldest();
        for name in config.sinks.keys() {
            let stats = self.counters.sink(name);
            stats.set_depth(self.spool.depth(name));
            if ages {
                stats.set_oldest(self.spool.oldest(name), now);
            }
        }
        telemetry::spool_bytes(self.spool.used_bytes(), config.spool.max_bytes);
        telemetry::spool_retained_bytes(self.retained.bytes());
    }
}

/// The admin router.
pub(crate) fn router(state: AdminState) -> Router {
    let guarded = Router::new()
        .route("/metrics", get(api::metrics))
        .route("/api/v1/routes", get(api::routes))
        .route("/api/v1/sinks", get(api::sinks))
        .route("/api/v1/sinks/{name}/deliveries", delete(api::purge_sink))
        .route("/api/v1/sinks/{name}/pause", post(api::pause))
        .route("/api/v1/sinks/{name}/resume", post(api::resume))
        .route("/api/v1/reload", post(api::reload))
        .route("/api/v1/explain", post(explain::explain))
        .merge(dead_letters::router())
        .merge(events::router())
        .merge(replay::router())
        .merge(sagas::router())
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_token,
        ))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::refuse_browsers,
        ));
    Router::new()
        .route("/healthz", get(probes::healthz))
        .route("/readyz", get(probes::readyz))
        .merge(dashboard::router())
        .merge(guarded)
        .with_state(state)
}

/// A running admin server.
#[derive(Debug)]
pub(crate) struct AdminServer {
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl AdminServer {
    /// Serves the admin router on `listener` until [`AdminServer::stop`].
    pub(crate) fn spawn(listener: TcpListener, state: AdminState, tls: Option<ServerTls>) -> Self {
        let stop = CancellationToken::new();
        let task = tokio::spawn(run(listener, state, tls, stop.clone()));
        Self { stop, task }
    }

    /// Stops serving and waits for requests in flight to finish, for [`STOP_WAIT`] at most:
    /// a client that does not read its answer must not hold the process up.
    pub(crate) async fn stop(mut self) {
        self.stop.cancel();
        let finished = match tokio::time::timeout(STOP_WAIT, &mut self.task).await {
            Ok(finished) => finished,
            Err(_elapsed) => {
                tracing::warn!(wait = ?STOP_WAIT, "Admin requests still in flight; closing");
                self.task.abort();
                return;
            }
        };
        if let Err(error) = finished {
            tracing::error!(%error, "Admin server task ended abnormally");
        }
    }
}

async fn run(
    listener: TcpListener,
    state: AdminState,
    tls: Option<ServerTls>,
    stop: CancellationToken,
) {
    let upkeep = upkeep(state.clone(), stop.clone());
    // The same client timeouts as ingress; a small fixed cap, as few clients need it.
    let config = state.config.clone();
    let server = Server {
        listener,
        router: router(state),
        meter: None,
        name: "admin",
        max_connections: ADMIN_MAX_CONNECTIONS,
        limits: move || config.get().ingress.connections,
        tls,
    }
    .run(stop);
    tokio::join!(server, upkeep);
}

async fn upkeep(state: AdminState, stop: CancellationToken) {
    let mut every = tokio::time::interval(UPKEEP_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = every.tick() => {
                state.refresh_depths();
                telemetry::prometheus().run_upkeep();
            }
        }
    }
}
