//! One sink's lease loop: concurrency permit, breaker admission, lease, rate limit, batch,
//! and the sink's requests in flight.
//!
//! The requests run inside the worker's own task, in a [`FuturesUnordered`] that is polled
//! together with the lease loop: a request costs no task of its own (a spawn, a task cell, a
//! scheduling round), and one woken request is polled alone. When the worker stops leasing
//! it still drives what it started to the end. The I/O of each request runs on the
//! client's connection tasks; what the worker's task does per request is to build it and to
//! record its outcome.
//!
//! Each step takes a concurrency permit first (one per request in flight, so `concurrency`
//! is an exact ceiling), then asks the breaker, and only then leases: while the breaker is
//! open the sink's deliveries stay in the spool, untouched. Deliveries leased but not yet
//! sent (more than one probe's worth, or leased just before the breaker opened) wait in
//! `pending`, in memory, without an attempt being counted; at most `concurrency ×
//! batch.max_events` of them, except on a backend where a lease is a round trip to a server
//! (nats): there a worker leases ahead, up to four times its limit's worth (at most 512
//! beyond the free permits), because one pull request per delivery would bound the sink's
//! rate by the server's round trip. A delivery of a higher lane stored meanwhile waits for
//! what is pending to start. Each is [`Held`]: when the worker stops, or a step is cancelled
//! part-way (waiting for rate tokens, say), whatever it had not started goes back to the
//! spool at once.
//!
//! A pause is looked at (one atomic load) where the breaker is: before leasing, after the
//! lease, and before each request starts; a paused worker holds nothing leased.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::pin;
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use futures_util::stream::{FuturesUnordered, StreamExt as _};
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;

use super::adaptive::Limit;
use super::deliver::deliver_batch;
use super::gate::{Admission, Gate};
use super::lease::Held;
use super::rate::RateLimiter;
use super::{batch, DispatchContext};
use crate::config::SinkConfig;
use crate::sinks::{BoxFuture, Sink};
use crate::spool::{Spool, SpoolError};
use crate::telemetry::SinkStats;

/// Wait before leasing again after the spool refused a lease without saying how long.
const LEASE_BACKOFF: Duration = Duration::from_secs(1);

/// On a backend where each lease is a round trip to a server
/// ([`crate::spool::SpoolHandle::leases_cost_a_round_trip`]), a lease asks for this many
/// times the sink's concurrency limit.
const LEASE_AHEAD: usize = 4;

/// The most a lease asks for beyond what the free permits' requests take.
const MOST_AHEAD: usize = 512;

/// Leases deliveries for one sink and drives its requests.
#[derive(Debug)]
pub(super) struct Worker {
    /// Shared by the worker's requests: each clones one `Arc`, not the context.
    pub(super) ctx: Arc<DispatchContext>,
    pub(super) sink: Arc<dyn Sink>,
    /// Takes the deliveries while the breaker is open (`fallback`).
    pub(super) fallback: Option<Arc<dyn Sink>>,
    pub(super) config: Arc<SinkConfig>,
}

/// One request in flight.
type Request = BoxFuture<'static, ()>;

/// What the worker keeps between steps.
struct Lane {
    limit: Arc<Limit>,
    gate: Arc<Gate>,
    limiter: Option<RateLimiter>,
    pending: VecDeque<Held>,
    /// Requests a step started, until the loop moves them in flight: a step runs while the
    /// requests already in flight are polled, so it cannot reach them itself.
    started: Arc<Mutex<Vec<Request>>>,
}

/// Marks the sink's worker stopped (readiness fails) when it ends before it was told to:
/// the spool closed under it, or it panicked.
struct Watch<'a> {
    stats: Arc<SinkStats>,
    stop: &'a CancellationToken,
}

impl Drop for Watch<'_> {
    fn drop(&mut self) {
        if self.stop.is_cancelled() {
            return;
        }
        let reason = match std::thread::panicking() {
            true => "its delivery worker panicked",
            false => "its delivery worker stopped: the spool closed",
        };
        tracing::error!(sink = %self.stats.name(), reason, "Sink worker stopped unexpectedly");
        self.stats.set_worker_stopped(Some(reason));
    }
}

impl Worker {
    /// Runs until `stop` is cancelled or the spool closes.
    pub(super) async fn run(self, stop: CancellationToken) {
        let stats = self.ctx.counters.sink(&self.config.name);
        stats.set_worker_stopped(None);
        let _watch = Watch {
            stats: stats.clone(),
            stop: &stop,
        };
        let mut lane = Lane {
            limit: Arc::new(Limit::new(&self.config, stats.clone())),
            gate: Arc::new(Gate::new(&self.config, stats, &self.ctx.pauses)),
            limiter: self.config.delivery.rate_limit.map(RateLimiter::new),
            pending: VecDeque::new(),
            started: Arc::default(),
        };
        let started = lane.started.clone();
        let mut in_flight = FuturesUnordered::new();
        loop {
            let step = pin!(self.step(&mut lane, &stop));
            if !drive(step, &started, &mut in_flight).await {
                break;
            }
        }
        tracing::debug!(sink = %self.config.name, "Worker stopped leasing");
        take(&started, &mut in_flight);
        while in_flight.next().await.is_some() {}
    }

    /// One turn of the loop; false when the worker should stop.
    async fn step(&self, lane: &mut Lane, stop: &CancellationToken) -> bool {
        // The stop is looked at first, then the permit is polled before the stop's future:
        // a permit that is free at once never registers a waiter on the token (a lock to
        // register and another to unregister, on every step).
        if stop.is_cancelled() {
            return false;
        }
        let first = tokio::select! {
            biased;
            permit = lane.limit.permits().clone().acquire_owned() => permit,
            () = stop.cancelled() => return false,
        };
        let Ok(first) = first else { return false };
        let Some(admission) = lane.gate.admit(stop, &mut lane.pending).await else {
            return false;
        };
        if lane.pending.is_empty() {
            let size = match admission {
                Admission::Probe => LeaseSize { ask: 1, enough: 1 },
                _ => self.lease_size(&lane.limit),
            };
            match self.lease(stop, size).await {
                Leased::Some(deliveries) => lane.pending.extend(deliveries),
                Leased::Stop => return false,
                Leased::Again => return true,
            }
        }
        // Told to stop while leasing: nothing starts; what was leased goes back to the spool
        // with the lane.
        if stop.is_cancelled() {
            return false;
        }
        // The lease may have waited long enough for the breaker to change, or for a pause.
        if !lane.gate.still_admits(admission) {
            abandon(&lane.gate, admission);
            return true;
        }
        self.send(lane, admission, first, stop).await
    }

    /// How many deliveries a lease asks for: enough for a full request on every free permit
    /// or, where each lease is a round trip to a server, for [`LEASE_AHEAD`] times the sink's
    /// limit (at most [`MOST_AHEAD`] more than the free permits take), so that most steps
    /// find their deliveries already in `pending` instead of waiting for the server.
    fn lease_size(&self, limit: &Limit) -> LeaseSize {
        let per_request = self.config.delivery.batch.max_events;
        let enough = (1 + limit.permits().available_permits()) * per_request;
        let ask = if self.ctx.spool.leases_cost_a_round_trip() {
            (LEASE_AHEAD * limit.current() * per_request).min(enough + MOST_AHEAD)
        } else {
            enough
        };
        LeaseSize {
            ask: ask.max(enough),
            enough,
        }
    }

    /// Groups pending deliveries into requests (one permit each), waits for their rate
    /// tokens, and starts them; false when `stop` came first.
    async fn send(
        &self,
        lane: &mut Lane,
        admission: Admission,
        first: OwnedSemaphorePermit,
        stop: &CancellationToken,
    ) -> bool {
        let target = match (admission, &self.fallback) {
            (Admission::Fallback, Some(fallback)) => fallback.clone(),
            _ => self.sink.clone(),
        };
        let policy = match target.batches() {
            true => self.config.delivery.batch,
            false => crate::config::BatchPolicy::default(),
        };
        let mut requests = Vec::new();
        let mut permit = Some(first);
        while let Some(held) = permit.take() {
            let batch = batch::take(&mut lane.pending, &policy, target.as_ref());
            if batch.is_empty() {
                break;
            }
            requests.push((batch, held));
            if admission != Admission::Probe {
                permit = lane.limit.permits().clone().try_acquire_owned().ok();
            }
        }
        lane.limit.taken();
        for (batch, permit) in requests {
            // Each request waits for its own tokens, so requests go out evenly spaced.
            let limiter = lane
                .limiter
                .as_mut()
                .filter(|_| admission != Admission::Fallback);
            if let Some(limiter) = limiter {
                let tokens = u32::try_from(batch.len()).unwrap_or(u32::MAX);
                let at = limiter.reserve(tokio::time::Instant::now(), tokens);
                tokio::select! {
                    () = stop.cancelled() => return false,
                    () = tokio::time::sleep_until(at) => {}
                }
            }
            // Paused while waiting for tokens: what is not started goes back to the spool.
            if lane.gate.paused() {
                abandon(&lane.gate, admission);
                return true;
            }
            self.spawn(batch, permit, admission, lane, target.clone());
        }
        true
    }

    /// Leases up to `size.ask` deliveries; with a `linger`, waits that long for
    /// `size.enough` of them (a full batch for every free permit).
    async fn lease(&self, stop: &CancellationToken, size: LeaseSize) -> Leased {
        let LeaseSize { ask: max, enough } = size;
        let spool = &self.ctx.spool;
        // As for the permit: deliveries ready at once are taken without a waiter on `stop`.
        if stop.is_cancelled() {
            return Leased::Stop;
        }
        let first = tokio::select! {
            biased;
            leased = spool.lease(&self.config.name, max) => leased,
            () = stop.cancelled() => return Leased::Stop,
        };
        let mut leased = match first {
            Ok(deliveries) => Held::all(spool, deliveries),
            Err(SpoolError::Closed) => return Leased::Stop,
            Err(error) => {
                let wait = if let SpoolError::Full { retry_after } = &error {
                    (*retry_after).max(LEASE_BACKOFF)
                } else {
                    LEASE_BACKOFF
                };
                tracing::warn!(%error, sink = %self.config.name, ?wait, "Lease failed; pausing");
                pause(stop, wait).await;
                return Leased::Again;
            }
        };
        let linger = self.config.delivery.batch.linger;
        let deadline = tokio::time::Instant::now() + linger;
        while !linger.is_zero() && leased.len() < enough {
            let more = tokio::select! {
                () = stop.cancelled() => break,
                () = tokio::time::sleep_until(deadline) => break,
                more = spool.lease(&self.config.name, max - leased.len()) => more,
            };
            match more {
                Ok(more) => leased.extend(Held::all(spool, more)),
                Err(_) => break,
            }
        }
        Leased::Some(leased)
    }

    /// Starts one request: it goes in flight with the step's end (see [`drive`]).
    fn spawn(
        &self,
        batch: Vec<Held>,
        permit: OwnedSemaphorePermit,
        admission: Admission,
        lane: &Lane,
        target: Arc<dyn Sink>,
    ) {
        let ctx = self.ctx.clone();
        let config = self.config.clone();
        let gate = lane.gate.clone();
        let limit = lane.limit.clone();
        let request = Box::pin(async move {
            // Taken only once the request is first polled: one dropped unstarted releases its
            // batch.
            let mut deliveries = Vec::with_capacity(batch.len());
            deliveries.extend(batch.into_iter().map(Held::take));
            match deliver_batch(&ctx, target.as_ref(), &config, deliveries).await {
                Ok(step) => {
                    gate.report(admission, step.attempt);
                    // Only the sink's own answers teach its limit, not the fallback's.
                    let observed = step.observed.filter(|_| admission != Admission::Fallback);
                    limit.finish(permit, observed);
                }
                Err(error) => {
                    gate.report(admission, None);
                    limit.finish(permit, None);
                    tracing::error!(%error, sink = %config.name, "Spool refused a delivery update; the outcome is not recorded and the delivery will be attempted again");
                }
            }
        });
        lock(&lane.started).push(request);
    }
}

/// Polls `step` and the requests in flight together until the step ends; requests the step
/// starts join those in flight as soon as it yields. Returns what the step returned.
async fn drive(
    mut step: std::pin::Pin<&mut impl Future<Output = bool>>,
    started: &Mutex<Vec<Request>>,
    in_flight: &mut FuturesUnordered<Request>,
) -> bool {
    std::future::poll_fn(|cx| loop {
        let stepped = step.as_mut().poll(cx);
        take(started, in_flight);
        // Each finished request may free what the step waits for (a permit): poll it again.
        let mut finished = false;
        while let Poll::Ready(Some(())) = in_flight.poll_next_unpin(cx) {
            finished = true;
        }
        match stepped {
            Poll::Ready(go_on) => return Poll::Ready(go_on),
            Poll::Pending if finished => continue,
            Poll::Pending => return Poll::Pending,
        }
    })
    .await
}

/// Moves the requests started since the last look in flight.
fn take(started: &Mutex<Vec<Request>>, in_flight: &mut FuturesUnordered<Request>) {
    in_flight.extend(lock(started).drain(..));
}

fn lock(started: &Mutex<Vec<Request>>) -> std::sync::MutexGuard<'_, Vec<Request>> {
    started.lock().unwrap_or_else(|e| e.into_inner())
}

/// How much one lease takes.
#[derive(Debug, Clone, Copy)]
struct LeaseSize {
    /// The most it asks the spool for.
    ask: usize,
    /// Enough to stop waiting out a batch's `linger` for more.
    enough: usize,
}

/// The result of leasing.
enum Leased {
    Some(Vec<Held>),
    Stop,
    Again,
}

/// Gives up a step admitted as `admission` without an attempt; a probe is offered again.
fn abandon(gate: &Gate, admission: Admission) {
    if admission == Admission::Probe {
        gate.report(admission, None);
    }
}

async fn pause(stop: &CancellationToken, wait: Duration) {
    tokio::select! {
        () = stop.cancelled() => {}
        () = tokio::time::sleep(wait) => {}
    }
}
