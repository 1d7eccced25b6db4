//! The breaker as one sink's worker and its delivery tasks share it: admission before a
//! lease, results after an attempt, state changes logged (WARN on open, INFO on close) and
//! published to the sink's statistics for the admin API and the breaker gauge.
//!
//! The operator's pause stops the sink at the same point: [`Gate::admit`] waits while it is
//! set, and hands back whatever the worker had leased but not started.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::breaker::{Breaker, Permit, State, Transition};
use super::lease::Held;
use crate::config::SinkConfig;
use crate::control::{PauseFlag, Pauses};
use crate::telemetry::{BreakerStatus, SinkStats};

/// How the deliveries of one step may go out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Admission {
    /// To the sink.
    Normal,
    /// One delivery to the sink, as the half-open probe.
    Probe,
    /// To the fallback sink, while the breaker is open.
    Fallback,
}

/// One sink's breaker (if it has one) and pause switch, with a wake-up for a worker waiting
/// on them.
#[derive(Debug)]
pub(super) struct Gate {
    sink: String,
    breaker: Option<Mutex<Breaker>>,
    has_fallback: bool,
    pause: Arc<PauseFlag>,
    /// The fallback sink's switch: while it is paused, nothing goes to the fallback either.
    fallback_pause: Option<Arc<PauseFlag>>,
    changed: Notify,
    stats: Arc<SinkStats>,
}

impl Gate {
    pub(super) fn new(config: &SinkConfig, stats: Arc<SinkStats>, pauses: &Pauses) -> Self {
        let breaker = config.delivery.breaker.map(|p| Mutex::new(Breaker::new(p)));
        if breaker.is_some() {
            stats.set_breaker(status(State::Closed, None));
        }
        Self {
            sink: config.name.clone(),
            breaker,
            has_fallback: config.delivery.fallback.is_some(),
            pause: pauses.flag(&config.name),
            fallback_pause: config.delivery.fallback.as_deref().map(|f| pauses.flag(f)),
            changed: Notify::new(),
            stats,
        }
    }

    /// Waits until deliveries may go out, and says where; `None` once `stop` is cancelled.
    /// Waiting consumes nothing: no attempt is counted and nothing is leased meanwhile; while
    /// the sink is paused, the deliveries in `held` go back to the spool.
    pub(super) async fn admit(
        &self,
        stop: &CancellationToken,
        held: &mut VecDeque<Held>,
    ) -> Option<Admission> {
        // Most steps are admitted at once: looked at without registering for wake-ups (a
        // lock to register and another to unregister on each of two notifiers).
        if !self.pause.is_paused() {
            if let Ok(admission) = self.admission() {
                return Some(admission);
            }
        }
        loop {
            let changed = self.changed.notified();
            let toggled = self.pause.changed();
            tokio::pin!(changed, toggled);
            // Registered before looking, so a result between the look and the wait wakes us.
            changed.as_mut().enable();
            toggled.as_mut().enable();
            if self.pause.is_paused() {
                held.clear();
                tokio::select! {
                    () = stop.cancelled() => return None,
                    () = &mut toggled => {}
                }
                continue;
            }
            let until = match self.admission() {
                Ok(admission) => return Some(admission),
                Err(until) => until,
            };
            tokio::select! {
                () = stop.cancelled() => return None,
                () = &mut changed => {}
                () = &mut toggled => {}
                () = tokio::time::sleep_until(until) => {}
            }
        }
    }

    /// Where deliveries may go now, or until when the breaker says wait (a wait changes
    /// nothing, so the caller may ask again).
    fn admission(&self) -> Result<Admission, Instant> {
        match self.permit() {
            Permit::Allow => Ok(Admission::Normal),
            Permit::Probe => Ok(Admission::Probe),
            Permit::Wait(_) if self.has_fallback && !self.fallback_paused() => {
                Ok(Admission::Fallback)
            }
            Permit::Wait(until) => Err(until),
        }
    }

    /// Whether the sink is paused now: one atomic load.
    pub(super) fn paused(&self) -> bool {
        self.pause.is_paused()
    }

    fn fallback_paused(&self) -> bool {
        self.fallback_pause.as_ref().is_some_and(|f| f.is_paused())
    }

    /// Whether `admission`, given before a lease that may have waited, still holds.
    pub(super) fn still_admits(&self, admission: Admission) -> bool {
        if self.paused() {
            return false;
        }
        let closed = self.state() == State::Closed;
        match admission {
            Admission::Normal => closed,
            Admission::Probe => true,
            Admission::Fallback => !closed && !self.fallback_paused(),
        }
    }

    /// Records how a step admitted as `admission` went: `Some(ok)` after an attempt,
    /// `None` when no attempt was made (every delivery had expired).
    pub(super) fn report(&self, admission: Admission, attempt: Option<bool>) {
        let Some(mut breaker) = self.lock() else {
            return;
        };
        let now = Instant::now();
        let transition = match (admission, attempt) {
            (Admission::Fallback, _) | (Admission::Normal, None) => None,
            (Admission::Probe, None) => {
                breaker.probe_abandoned(now);
                drop(breaker);
                self.changed.notify_waiters();
                return;
            }
            (Admission::Probe, Some(ok)) => breaker.on_result(now, ok),
            // Results of attempts admitted before the breaker left closed are stale.
            (Admission::Normal, Some(ok)) if breaker.state() == State::Closed => {
                breaker.on_result(now, ok)
            }
            (Admission::Normal, Some(_)) => None,
        };
        drop(breaker);
        if let Some(transition) = transition {
            self.log(transition);
            self.changed.notify_waiters();
        }
    }

    fn permit(&self) -> Permit {
        let Some(mut breaker) = self.lock() else {
            return Permit::Allow;
        };
        let permit = breaker.permit(Instant::now());
        drop(breaker);
        if permit == Permit::Probe {
            let opened_at = self.stats.breaker().and_then(|b| b.opened_at);
            self.stats.set_breaker(status(State::HalfOpen, opened_at));
            tracing::info!(sink = %self.sink, "Circuit breaker half-open; sending one probe delivery");
        }
        permit
    }

    fn state(&self) -> State {
        self.lock().map_or(State::Closed, |b| b.state())
    }

    fn lock(&self) -> Option<MutexGuard<'_, Breaker>> {
        // The breaker is plain data; a panic elsewhere does not leave it inconsistent.
        let breaker = self.breaker.as_ref()?;
        Some(breaker.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn log(&self, transition: Transition) {
        let sink = &self.sink;
        match transition {
            Transition::Opened | Transition::Reopened => {
                self.stats
                    .set_breaker(status(State::Open, Some(SystemTime::now())));
                let reopened = transition == Transition::Reopened;
                tracing::warn!(%sink, reopened, "Circuit breaker opened; deliveries to the sink wait");
            }
            Transition::Closed => {
                self.stats.set_breaker(status(State::Closed, None));
                tracing::info!(%sink, "Circuit breaker closed; deliveries resume");
            }
        }
    }
}

fn status(state: State, opened_at: Option<SystemTime>) -> BreakerStatus {
    BreakerStatus {
        state: state.name(),
        opened_at,
    }
}
