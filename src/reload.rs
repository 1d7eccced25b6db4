//! Hot reload: read the configuration file again, validate all of it, then swap the route
//! table, ingress settings, sinks, dispatcher and schedules; on any error keep what runs.
//!
//! Wiring-level like `app` (it sees both the accept and the delivery side). Requests come
//! through `config::ReloadTrigger` from SIGHUP, the file watcher and the admin API, and are
//! carried out one at a time by [`run`].
//!
//! Why nothing is lost or delivered twice: a request routes under the table it loaded at its
//! start; deliveries live in the spool, not in the workers, so stopping a worker only stops
//! its leasing — what it has in flight finishes and is acked, and a lease is never handed to
//! a second worker. Deliveries for a sink the new file removes stay in the spool (orphaned)
//! until the sink returns.
//!
//! What is refused, besides an invalid file: a file caught while being written (read twice,
//! [`config::RELOAD_SETTLE`] apart, with different bytes), and a file that removes the last
//! ingress credential or the admin token — dropping authentication takes a restart, so an
//! edit of a mounted file cannot open the daemon up.

use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::accept::Acceptor;
use crate::config::{
    self, Config, IngressConfig, Publisher, ReloadFailed, ReloadRequest, ReloadSummary,
};
use crate::control::Pauses;
use crate::dispatch::{self, DispatchContext};
use crate::history::History;
use crate::routing::RouteTable;
use crate::schedule;
use crate::sinks::{self, Handlers, Registry};
use crate::spool::SpoolHandle;
use crate::telemetry::{self, Counters};

/// Everything a reload replaces, and what it needs to build the replacements.
#[derive(Debug)]
pub(crate) struct Reloader {
    /// The configuration file.
    pub(crate) path: PathBuf,
    /// The bytes the running configuration was loaded from (a file event that leaves them
    /// as they are is not reloaded).
    pub(crate) loaded: Vec<u8>,
    /// Registered Rust handlers (kept across reloads).
    pub(crate) handlers: Handlers,
    /// The spool (kept).
    pub(crate) spool: Arc<SpoolHandle>,
    /// Process counters (kept).
    pub(crate) counters: Arc<Counters>,
    /// Paused sinks (kept): workers a reload starts begin paused.
    pub(crate) pauses: Arc<Pauses>,
    /// The accept side, for schedules.
    pub(crate) acceptor: Acceptor,
    /// The route table readers use.
    pub(crate) routes: Publisher<RouteTable>,
    /// Ingress limits and credentials.
    pub(crate) ingress: Publisher<IngressConfig>,
    /// The whole configuration (admin API).
    pub(crate) config: Publisher<Config>,
    /// Cancelled at shutdown: parent of every dispatcher run.
    pub(crate) stop_leasing: CancellationToken,
    /// Cancelled at shutdown: parent of every schedules run.
    pub(crate) shutdown: CancellationToken,
    /// Tracks workers, deliveries and schedule tasks.
    pub(crate) tracker: TaskTracker,
    /// Delivery history (kept).
    pub(crate) history: History,
    /// Delivered events kept for replay (kept).
    pub(crate) retained: crate::spool::Retained,
    /// The saga store (kept).
    pub(crate) sagas: Option<crate::saga::Sagas>,
}

/// The tokens of the dispatcher and schedules now running.
#[derive(Debug)]
pub(crate) struct Runs {
    dispatch: CancellationToken,
    schedules: CancellationToken,
}

/// What the delivery side and the schedules run with.
#[derive(Debug)]
pub(crate) struct Generation<'a> {
    /// The configuration.
    pub(crate) config: &'a Arc<Config>,
    /// Its sinks.
    pub(crate) sinks: Arc<Registry>,
}

impl Reloader {
    /// Starts the dispatcher and the schedules for one configuration generation.
    pub(crate) fn start_runs(&self, generation: Generation<'_>) -> Runs {
        let runs = Runs {
            dispatch: self.stop_leasing.child_token(),
            schedules: self.shutdown.child_token(),
        };
        let ctx = DispatchContext {
            spool: self.spool.clone(),
            sinks: generation.sinks,
            config: generation.config.clone(),
            counters: self.counters.clone(),
            pauses: self.pauses.clone(),
            history: self.history.clone(),
            retained: self.retained.clone(),
            replies: self.acceptor.clone(),
            sagas: self.sagas.clone(),
        };
        dispatch::start(&ctx, &runs.dispatch, &self.tracker);
        schedule::start(
            &generation.config.schedules,
            &self.acceptor,
            &generation.config.spool.path,
            &runs.schedules,
            &self.tracker,
        );
        runs
    }

    /// Serves reload requests one at a time until shutdown.
    pub(crate) async fn run(mut self, mut requests: mpsc::Receiver<ReloadRequest>, mut runs: Runs) {
        let mut loaded = std::mem::take(&mut self.loaded);
        loop {
            let request = tokio::select! {
                () = self.shutdown.cancelled() => return,
                request = requests.recv() => match request {
                    Some(request) => request,
                    None => return,
                },
            };
            let bytes = self
                .read_settled()
                .await
                .map_err(|error| self.refused(request.cause, &error));
            if request.if_changed && bytes.as_ref().is_ok_and(|b| *b == loaded) {
                tracing::debug!(cause = request.cause, path = %self.path.display(), "Configuration file unchanged; not reloading");
                continue;
            }
            let outcome = match bytes {
                Ok(bytes) => {
                    self.reload(&mut runs, request.cause, bytes, &mut loaded)
                        .await
                }
                Err(refused) => Err(refused),
            };
            telemetry::config_reloaded(outcome.is_ok());
            if let Some(reply) = request.reply {
                // The asker may have given up waiting; the reload happened regardless.
                let _delivered = reply.send(outcome).is_ok();
            }
        }
    }

    /// Reads the file twice, [`config::RELOAD_SETTLE`] apart: different bytes mean it is
    /// still being written, and half a file may well be a valid one (with fewer routes).
    async fn read_settled(&self) -> Result<Vec<u8>, String> {
        let read = || async {
            tokio::fs::read(&self.path)
                .await
                .map_err(|e| format!("cannot read {}: {e}", self.path.display()))
        };
        let first = read().await?;
        tokio::time::sleep(config::RELOAD_SETTLE).await;
        let second = read().await?;
        if first != second {
            return Err(format!(
                "{} changed while it was being read (still being written?); reload again once it is complete",
                self.path.display()
            ));
        }
        Ok(second)
    }

    async fn reload(
        &self,
        runs: &mut Runs,
        cause: &'static str,
        bytes: Vec<u8>,
        loaded: &mut Vec<u8>,
    ) -> Result<ReloadSummary, ReloadFailed> {
        let Ok(text) = std::str::from_utf8(&bytes).map(str::to_owned) else {
            let error = format!("{} is not UTF-8 text", self.path.display());
            return Err(self.refused(cause, &error));
        };
        let path = self.path.clone();
        let parsed = tokio::task::spawn_blocking(move || config::load_text(&text, &path))
            .await
            .map_err(|e| ReloadFailed(format!("reload task failed: {e}")))?;
        let mut next = match parsed {
            Ok(next) => next,
            Err(error) => return Err(self.refused(cause, &error)),
        };
        let current = self.config.subscribe().get();
        keeps_authentication(&current, &next).map_err(|e| self.refused(cause, &e))?;
        let sinks = sinks::build(&next, &self.handlers).map_err(|e| self.refused(cause, &e))?;
        keep_restart_only_settings(&current, &mut next);
        let next = Arc::new(next);

        // Readers pick up the new table and settings from their next request.
        self.routes
            .publish(Arc::new(RouteTable::from_config(&next)));
        self.ingress.publish(Arc::new(next.ingress.clone()));
        self.config.publish(next.clone());
        // Old workers stop leasing; what they have in flight finishes and is acked.
        runs.dispatch.cancel();
        runs.schedules.cancel();
        *runs = self.start_runs(Generation {
            config: &next,
            sinks: Arc::new(sinks),
        });
        let summary = ReloadSummary {
            routes: next.routes.len(),
            sinks: next.sinks.len(),
        };
        tracing::info!(cause, path = %self.path.display(), routes = summary.routes, sinks = summary.sinks, "Configuration reloaded");
        *loaded = bytes;
        Ok(summary)
    }

    fn refused(&self, cause: &'static str, error: &dyn std::fmt::Display) -> ReloadFailed {
        tracing::error!(cause, path = %self.path.display(), %error, "Configuration reload refused; the running configuration stays");
        ReloadFailed(error.to_string())
    }
}

/// Refuses a configuration that drops the last ingress credential or the admin token:
/// changing a credential is a reload, removing authentication is a restart.
fn keeps_authentication(current: &Config, next: &Config) -> Result<(), String> {
    let mut removed = Vec::new();
    if !current.ingress.auth.is_empty() && next.ingress.auth.is_empty() {
        removed.push("every ingress.auth credential (ingress would accept anyone)");
    }
    if current.admin.token.is_some() && next.admin.token.is_none() {
        removed.push("admin.token (the admin API would need none)");
    }
    if removed.is_empty() {
        return Ok(());
    }
    Err(format!(
        "the new configuration removes {}; removing authentication takes a restart, a reload only replaces credentials",
        removed.join(" and ")
    ))
}

/// Addresses, the connection cap and the spool are set at start: a changed value waits for a
/// restart.
fn keep_restart_only_settings(current: &Config, next: &mut Config) {
    if next.listen != current.listen {
        tracing::warn!(old = %current.listen, new = %next.listen, "listen changes only on restart");
        next.listen = current.listen;
    }
    if next.ingress.tls != current.ingress.tls {
        tracing::warn!("ingress.tls changes only on restart (the certificate files are re-read when they change)");
        next.ingress.tls = current.ingress.tls.clone();
    }
    if next.admin.tls != current.admin.tls {
        tracing::warn!("admin.tls changes only on restart (the certificate files are re-read when they change)");
        next.admin.tls = current.admin.tls.clone();
    }
    if next.admin.listen != current.admin.listen {
        tracing::warn!(old = %current.admin.listen, new = %next.admin.listen, "admin_listen changes only on restart");
        next.admin.listen = current.admin.listen;
    }
    let (old, new) = (&current.ingress.connections, &mut next.ingress.connections);
    if new.max_connections != old.max_connections {
        tracing::warn!(
            old = old.max_connections,
            new = new.max_connections,
            "ingress.max_connections changes only on restart"
        );
        new.max_connections = old.max_connections;
    }
    if next.spool != current.spool {
        tracing::warn!("spool settings change only on restart");
        next.spool = current.spool.clone();
    }
}
