//! The delivery engine: per-sink workers lease from the spool, deliver, and decide
//! ack / retry / dead-letter.
//!
//! Imports `spool`, `sinks`, `event`, `config`, `control`, `telemetry` and `transform`.
//!
//! - `worker`: one lease loop per sink, bounded by the sink's own in-flight limit, breaker and
//!   rate limit, so a slow or failing sink never delays another.
//! - `adaptive`: the in-flight limit, fixed or adapting to the target's round trips.
//! - `deliver`: one attempt of one delivery or batch and what follows ([`deliver_one`]).
//! - [`retry`]: the pure schedule ([`retry::decide`]).
//! - [`breaker`]: the pure circuit breaker; `gate` shares it between a worker and its tasks.
//! - [`rate`]: the pure token bucket behind `rate_limit`.
//! - `batch`: grouping deliveries into one request.
//! - `lease`: a leased delivery held until its attempt; dropped unattempted, it goes back to
//!   the spool at once.
//! - `dead_letter`: the dead-letter record.
//! - `transform`: the route's and the sink's programs, run on each event before its attempt.
//! - `reply`: a target's reply (`reply: true`) handed to the acceptor before the ack.
//! - `saga`: a saga step's outcome advances its instance before the ack or dead letter; the
//!   saga runner handles deadlines, aborts and what a crash left pending.
//!
//! Time to live under an open breaker: the TTL runs from acceptance and is never extended,
//! but it is only acted on when a delivery comes up for an attempt. An open breaker leaves
//! its deliveries in the spool, so none is dead-lettered while it is open; once it lets
//! deliveries through again, those already past their TTL are dead-lettered
//! (`TimeToLiveExceeded`) without an attempt and without counting for the breaker. Waiting
//! behind the breaker or the rate limit never counts an attempt.
//!
//! A paused sink (see [`crate::control`]) waits at the same point as behind an open breaker,
//! and more strictly: not even the fallback or a probe goes out, and deliveries its worker
//! had leased but not started go back to the spool. Requests already started finish.

mod adaptive;
mod batch;
pub mod breaker;
mod dead_letter;
mod deliver;
mod gate;
mod history;
mod lease;
pub mod rate;
mod reply;
pub mod retry;
mod saga;
mod transform;
mod worker;

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::accept::Acceptor;
use crate::config::Config;
use crate::control::Pauses;
use crate::history::History;
use crate::sinks::Registry;
use crate::spool::{Retained, SpoolHandle};
use crate::telemetry::Counters;

pub use deliver::{deliver_one, Outcome};
pub use saga::SagaRunner;
pub use transform::TRANSFORM_FAILED;

/// What the dispatcher needs to run.
#[derive(Debug, Clone)]
pub struct DispatchContext {
    /// Where deliveries wait.
    pub spool: Arc<SpoolHandle>,
    /// The sinks by name.
    pub sinks: Arc<Registry>,
    /// The configuration (sink policies).
    pub config: Arc<Config>,
    /// Process counters.
    pub counters: Arc<Counters>,
    /// Which sinks are paused (kept across reloads).
    pub pauses: Arc<Pauses>,
    /// Where each attempt's outcome is recorded.
    pub history: History,
    /// Takes sinks' replies in as events (the acceptor ingress uses).
    pub replies: Acceptor,
    /// Where delivered events are kept for replay (`spool.retain_delivered`).
    pub retained: Retained,
    /// The saga store, whose steps are advanced by their deliveries' outcomes.
    pub sagas: Option<crate::saga::Sagas>,
}

/// Starts one worker per configured sink on `tracker`. Workers stop leasing when `stop` is
/// cancelled; each drives the requests it had started to completion before it ends.
pub fn start(ctx: &DispatchContext, stop: &CancellationToken, tracker: &TaskTracker) {
    let shared = Arc::new(ctx.clone());
    for (name, config) in &ctx.config.sinks {
        let Some(sink) = ctx.sinks.get(name) else {
            tracing::warn!(sink = %name, "Configured sink was not built; nothing delivers to it");
            continue;
        };
        let fallback = config.delivery.fallback.as_deref();
        let worker = worker::Worker {
            ctx: shared.clone(),
            sink,
            fallback: fallback.and_then(|name| ctx.sinks.get(name)),
            config: Arc::new(config.clone()),
        };
        tracker.spawn(worker.run(stop.clone()));
    }
}

#[cfg(test)]
mod tests;
