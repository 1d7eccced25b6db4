//! The circuit breaker: a pure closed / open / half-open state machine that takes `now`.
//!
//! Closed, it lets every delivery through and counts failed attempts in a row; at
//! `consecutive_failures` it opens. Open, it lets nothing through for `open_for`; then the
//! next caller gets the one probe (half-open). The probe's success closes it, its failure
//! opens it again for another `open_for`. Imports `config` only.

use std::time::Duration;

use tokio::time::Instant;

use crate::config::BreakerPolicy;

/// Where the breaker stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Deliveries flow.
    Closed,
    /// Deliveries wait until the given time.
    Open,
    /// One probe delivery is out; everything else waits for its result.
    HalfOpen,
}

impl State {
    /// The name shown by the admin API and logs (`closed`, `open`, `half_open`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half_open",
        }
    }
}

/// What a caller about to deliver may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permit {
    /// Deliver.
    Allow,
    /// Deliver exactly one delivery, the probe, and report its result.
    Probe,
    /// Do not deliver; ask again at the given time (or when a result changes the state).
    Wait(Instant),
}

/// A change of state caused by a result, for logging.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// Closed → open: too many failures in a row.
    Opened,
    /// Half-open → open: the probe failed.
    Reopened,
    /// Half-open → closed: the probe succeeded.
    Closed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen,
}

/// One sink's breaker.
#[derive(Debug, Clone)]
pub struct Breaker {
    threshold: u32,
    open_for: Duration,
    phase: Phase,
}

impl Breaker {
    /// A closed breaker with the given policy.
    pub fn new(policy: BreakerPolicy) -> Self {
        Self {
            threshold: policy.consecutive_failures.max(1),
            open_for: policy.open_for,
            phase: Phase::Closed { failures: 0 },
        }
    }

    /// The current state.
    pub fn state(&self) -> State {
        match self.phase {
            Phase::Closed { .. } => State::Closed,
            Phase::Open { .. } => State::Open,
            Phase::HalfOpen => State::HalfOpen,
        }
    }

    /// Asks to deliver at `now`. Once `open_for` has passed, the first caller gets
    /// [`Permit::Probe`] and the breaker turns half-open; callers meanwhile wait.
    pub fn permit(&mut self, now: Instant) -> Permit {
        match self.phase {
            Phase::Closed { .. } => Permit::Allow,
            Phase::Open { until } if now >= until => {
                self.phase = Phase::HalfOpen;
                Permit::Probe
            }
            Phase::Open { until } => Permit::Wait(until),
            // The probe's result wakes waiters; the time is only when to look again.
            Phase::HalfOpen => Permit::Wait(now + self.open_for),
        }
    }

    /// Records the result of an attempt that finished at `now`. While open, results of
    /// attempts that started before it opened change nothing.
    pub fn on_result(&mut self, now: Instant, ok: bool) -> Option<Transition> {
        match (self.phase, ok) {
            (Phase::Closed { .. }, true) => {
                self.phase = Phase::Closed { failures: 0 };
                None
            }
            (Phase::Closed { failures }, false) => {
                let failures = failures.saturating_add(1);
                if failures >= self.threshold {
                    self.open(now);
                    return Some(Transition::Opened);
                }
                self.phase = Phase::Closed { failures };
                None
            }
            (Phase::HalfOpen, true) => {
                self.phase = Phase::Closed { failures: 0 };
                Some(Transition::Closed)
            }
            (Phase::HalfOpen, false) => {
                self.open(now);
                Some(Transition::Reopened)
            }
            (Phase::Open { .. }, _) => None,
        }
    }

    /// The probe was given up without an attempt (its delivery had expired, say): the next
    /// caller may probe at once.
    pub fn probe_abandoned(&mut self, now: Instant) {
        if self.phase == Phase::HalfOpen {
            self.phase = Phase::Open { until: now };
        }
    }

    fn open(&mut self, now: Instant) {
        self.phase = Phase::Open {
            until: now + self.open_for,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPEN_FOR: Duration = Duration::from_secs(60);

    fn breaker(failures: u32) -> Breaker {
        Breaker::new(BreakerPolicy {
            consecutive_failures: failures,
            open_for: OPEN_FOR,
        })
    }

    fn fail(b: &mut Breaker, times: u32) -> Option<Transition> {
        (0..times).fold(None, |_, _| b.on_result(Instant::now(), false))
    }

    #[tokio::test(start_paused = true)]
    async fn opens_after_n_consecutive_failures() {
        let mut b = breaker(3);
        assert_eq!(fail(&mut b, 2), None);
        assert_eq!(b.permit(Instant::now()), Permit::Allow);
        assert_eq!(fail(&mut b, 1), Some(Transition::Opened));
        assert_eq!(b.state(), State::Open);
        assert_eq!(
            b.permit(Instant::now()),
            Permit::Wait(Instant::now() + OPEN_FOR)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_success_resets_the_count() {
        let mut b = breaker(3);
        fail(&mut b, 2);
        assert_eq!(b.on_result(Instant::now(), true), None);
        assert_eq!(fail(&mut b, 2), None);
        assert_eq!(b.state(), State::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn exactly_one_probe_after_open_for() {
        let mut b = breaker(1);
        fail(&mut b, 1);
        tokio::time::advance(OPEN_FOR - Duration::from_millis(1)).await;
        assert!(matches!(b.permit(Instant::now()), Permit::Wait(_)));
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(b.permit(Instant::now()), Permit::Probe);
        assert_eq!(b.state(), State::HalfOpen);
        assert!(matches!(b.permit(Instant::now()), Permit::Wait(_)));
        assert!(matches!(b.permit(Instant::now()), Permit::Wait(_)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_good_probe_closes_and_a_bad_one_reopens() {
        let mut b = breaker(1);
        fail(&mut b, 1);
        tokio::time::advance(OPEN_FOR).await;
        assert_eq!(b.permit(Instant::now()), Permit::Probe);
        assert_eq!(fail(&mut b, 1), Some(Transition::Reopened));
        let reopened = Instant::now();
        assert_eq!(b.permit(reopened), Permit::Wait(reopened + OPEN_FOR));
        tokio::time::advance(OPEN_FOR).await;
        assert_eq!(b.permit(Instant::now()), Permit::Probe);
        assert_eq!(b.on_result(Instant::now(), true), Some(Transition::Closed));
        assert_eq!(b.permit(Instant::now()), Permit::Allow);
    }

    #[tokio::test(start_paused = true)]
    async fn late_results_while_open_change_nothing() {
        let mut b = breaker(1);
        fail(&mut b, 1);
        assert_eq!(b.on_result(Instant::now(), true), None);
        assert_eq!(b.state(), State::Open);
    }

    #[tokio::test(start_paused = true)]
    async fn an_abandoned_probe_is_offered_again_at_once() {
        let mut b = breaker(1);
        fail(&mut b, 1);
        tokio::time::advance(OPEN_FOR).await;
        assert_eq!(b.permit(Instant::now()), Permit::Probe);
        b.probe_abandoned(Instant::now());
        assert_eq!(b.permit(Instant::now()), Permit::Probe);
    }
}
