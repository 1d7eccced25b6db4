//! A sink's in-flight limit: fixed (`concurrency: 16`), or adaptive (`concurrency: adaptive`),
//! where it finds its own level from what the target shows, in the manner of TCP's congestion
//! control and Vector's adaptive request concurrency.
//!
//! Requests are observed in windows about one round trip long. At the end of a window the
//! limit drops by a tenth (at least one; by half the first time) when the target pushed back during it — a 429, a 503
//! or a timeout — or when the window's mean round trip rose well above the running average
//! of earlier windows (by more than [`DEVIATIONS`] of their deviation, and by at least
//! [`MIN_RISE`] of it), or above [`FLOOR_RISE`] times the lowest mean of the last seconds:
//! the target queues, and more requests in flight would only wait longer. Otherwise, if the
//! limit was reached during the window, it grows: it doubles until its first decrease (slow
//! start), then grows by one. The running average takes in only windows that did not rise.
//!
//! The limit is the number of permits of the worker's semaphore: growing adds permits; shrinking
//! forgets the free ones and withholds the rest as their requests finish.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::config::SinkConfig;
use crate::telemetry::SinkStats;

/// How far above the running average (in its deviations) a window's mean round trip counts as
/// a rise.
const DEVIATIONS: f64 = 2.5;
/// The smallest rise that counts, as a share of the running average: a target with very
/// steady round trips has a deviation near zero.
const MIN_RISE: f64 = 0.2;
/// Weight of the newest window in the running average.
const ALPHA: f64 = 0.4;
/// Share of the limit kept on a decrease.
const DECREASE: f64 = 0.9;
/// Shortest window, for targets that answer in microseconds.
const MIN_WINDOW: Duration = Duration::from_millis(5);
/// Past this multiple of the lowest round trip of the last [`FLOOR_SPAN`] to [`FLOOR_SPAN`]
/// × 2, a window's mean counts as a rise whatever the running average says: the average
/// follows a limit that oscillates, the floor does not.
const FLOOR_RISE: f64 = 1.5;
/// How long a lowest round trip is remembered (two spans at most), so that a target that
/// became slower for good is learned.
const FLOOR_SPAN: Duration = Duration::from_secs(10);

/// The permits a sink's worker takes, one per request in flight, and how their number
/// changes.
#[derive(Debug)]
pub(super) struct Limit {
    permits: Arc<Semaphore>,
    control: Option<Mutex<Control>>,
    stats: Arc<SinkStats>,
    /// `concurrency`: the fixed limit, or the adaptive one's ceiling.
    max: usize,
}

/// What a finished request tells the limit.
#[derive(Debug, Clone, Copy)]
pub(super) struct Observed {
    /// How long the target took to answer.
    pub(super) rtt: Duration,
    /// The target pushed back: 429, 503 or a timeout.
    pub(super) backpressure: bool,
}

#[derive(Debug)]
struct Control {
    min: usize,
    max: usize,
    limit: usize,
    /// Permits still to withhold as requests finish.
    debt: usize,
    window: Window,
    /// Running average and deviation of the round trip, in seconds; `None` before the first
    /// window ends.
    past: Option<(f64, f64)>,
    floor: Floor,
    /// No decrease yet: the limit doubles on each increase.
    slow_start: bool,
}

/// The lowest window mean of the current span and of the one before, in seconds.
#[derive(Debug)]
struct Floor {
    since: Instant,
    current: f64,
    previous: f64,
}

impl Floor {
    fn new(now: Instant) -> Self {
        Self {
            since: now,
            current: f64::INFINITY,
            previous: f64::INFINITY,
        }
    }

    /// Takes in a window's mean; gives the floor before it.
    fn update(&mut self, mean: f64, now: Instant) -> f64 {
        if now.duration_since(self.since) >= FLOOR_SPAN {
            self.previous = self.current;
            self.current = f64::INFINITY;
            self.since = now;
        }
        let floor = self.current.min(self.previous);
        self.current = self.current.min(mean);
        floor
    }
}

#[derive(Debug)]
struct Window {
    started: Instant,
    total: Duration,
    count: u32,
    backpressure: bool,
    /// Every permit was taken at some point of the window.
    reached: bool,
}

impl Window {
    fn new(now: Instant) -> Self {
        Self {
            started: now,
            total: Duration::ZERO,
            count: 0,
            backpressure: false,
            reached: false,
        }
    }
}

/// A change a window decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Change {
    Up(usize),
    Down(usize),
    Keep,
}

impl Limit {
    /// The limit `config` asks for; an adaptive one starts at its minimum.
    pub(super) fn new(config: &SinkConfig, stats: Arc<SinkStats>) -> Self {
        let max = config.concurrency.max(1);
        let control = config.adaptive.map(|adaptive| {
            Mutex::new(Control::new(
                adaptive.min.clamp(1, max),
                max,
                Instant::now(),
            ))
        });
        let start = control.as_ref().map_or(max, |c| lock(c).limit);
        stats.set_concurrency_limit(start);
        Self {
            permits: Arc::new(Semaphore::new(start)),
            control,
            stats,
            max,
        }
    }

    /// The limit now: the fixed one, or where the adaptive one stands.
    pub(super) fn current(&self) -> usize {
        self.control
            .as_ref()
            .map_or(self.max, |control| lock(control).limit)
    }

    /// The semaphore a request's permit comes from.
    pub(super) fn permits(&self) -> &Arc<Semaphore> {
        &self.permits
    }

    /// Called after a step took its permits: notes when none was left, which is when a higher
    /// limit could have been used.
    pub(super) fn taken(&self) {
        if let Some(control) = &self.control {
            if self.permits.available_permits() == 0 {
                lock(control).window.reached = true;
            }
        }
    }

    /// A request finished: gives its permit back (or withholds it, while the limit shrinks)
    /// and, for an adaptive limit, learns from what the request saw.
    pub(super) fn finish(&self, permit: OwnedSemaphorePermit, observed: Option<Observed>) {
        let Some(control) = &self.control else {
            drop(permit);
            return;
        };
        let mut control = lock(control);
        if control.debt > 0 {
            control.debt -= 1;
            permit.forget();
        } else {
            drop(permit);
        }
        let Some(observed) = observed else { return };
        let now = Instant::now();
        let change = control.observe(observed, now);
        match change {
            Change::Up(by) => {
                control.limit += by;
                let repaid = by.min(control.debt);
                control.debt -= repaid;
                self.permits.add_permits(by - repaid);
            }
            Change::Down(by) => {
                control.limit -= by;
                let forgotten = self.permits.forget_permits(by);
                control.debt += by - forgotten;
            }
            Change::Keep => return,
        }
        let limit = control.limit;
        drop(control);
        tracing::debug!(sink = %self.stats.name(), limit, "Adaptive concurrency limit changed");
        self.stats.set_concurrency_limit(limit);
    }
}

impl Control {
    /// A limit at `min`, in slow start, that has observed nothing yet.
    fn new(min: usize, max: usize, now: Instant) -> Self {
        Self {
            min,
            max,
            limit: min,
            debt: 0,
            window: Window::new(now),
            past: None,
            floor: Floor::new(now),
            slow_start: true,
        }
    }

    /// Adds a request to the window; at the window's end, decides the change.
    fn observe(&mut self, observed: Observed, now: Instant) -> Change {
        let window = &mut self.window;
        window.total += observed.rtt;
        window.count += 1;
        window.backpressure |= observed.backpressure;
        let length = self
            .past
            .map_or(observed.rtt, |(mean, _)| Duration::from_secs_f64(mean))
            .max(MIN_WINDOW);
        // A window judges the limit in force only once a limit's worth of requests finished
        // in it (those started at an older limit are then behind), or after four lengths.
        let elapsed = now.duration_since(window.started);
        let full = (window.count as usize) >= self.limit;
        if elapsed < length || (!full && elapsed < length * 4) {
            return Change::Keep;
        }
        let mean = window.total.as_secs_f64() / f64::from(window.count.max(1));
        let floor = self.floor.update(mean, now);
        let risen = mean > FLOOR_RISE * floor
            || self.past.is_some_and(|(past, deviation)| {
                mean > past + (DEVIATIONS * deviation).max(MIN_RISE * past)
            });
        let change = if window.backpressure || risen {
            // Leaving slow start, the limit had doubled past what the target takes: halve.
            let share = match self.slow_start {
                true => 0.5,
                false => DECREASE,
            };
            let kept = (self.limit as f64 * share).floor() as usize;
            let by = self.limit.saturating_sub(kept.max(self.min)).max(1);
            match self.limit > self.min {
                true => Change::Down(by.min(self.limit - self.min)),
                false => Change::Keep,
            }
        } else if window.reached && self.limit < self.max {
            // Until the first decrease the limit doubles, as TCP's slow start: a healthy
            // target is found in a few round trips, not in one per request of its level.
            let by = match self.slow_start {
                true => self.limit,
                false => 1,
            };
            Change::Up(by.min(self.max - self.limit))
        } else {
            Change::Keep
        };
        if matches!(change, Change::Down(_)) {
            self.slow_start = false;
        }
        if !risen && !window.backpressure {
            self.past = Some(match self.past {
                None => (mean, 0.0),
                Some((past, deviation)) => {
                    let next = past + ALPHA * (mean - past);
                    let spread = deviation + ALPHA * ((mean - past).abs() - deviation);
                    (next, spread)
                }
            });
        }
        self.window = Window::new(now);
        change
    }
}

fn lock(control: &Mutex<Control>) -> MutexGuard<'_, Control> {
    control.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A controller past slow start (growing by one), unless a test turns it back on.
    fn control(min: usize, max: usize) -> Control {
        Control {
            slow_start: false,
            ..Control::new(min, max, Instant::now())
        }
    }

    /// Feeds one full window of `rtt`, reached or not, and applies the change.
    fn window(c: &mut Control, rtt: Duration, reached: bool, backpressure: bool) -> Change {
        c.window.started = Instant::now() - rtt.max(MIN_WINDOW) * 2;
        c.window.reached = reached;
        c.window.count = u32::try_from(c.limit).unwrap_or(u32::MAX);
        let change = c.observe(Observed { rtt, backpressure }, Instant::now());
        match change {
            Change::Up(by) => c.limit += by,
            Change::Down(by) => c.limit -= by,
            Change::Keep => {}
        }
        change
    }

    #[test]
    fn the_limit_grows_by_one_per_window_while_it_is_reached_and_round_trips_hold() {
        let mut c = control(1, 10);
        let rtt = Duration::from_millis(10);
        for expected in 2..=10 {
            assert_eq!(window(&mut c, rtt, true, false), Change::Up(1));
            assert_eq!(c.limit, expected);
        }
        assert_eq!(window(&mut c, rtt, true, false), Change::Keep, "max");
        assert_eq!(c.limit, 10);
    }

    #[test]
    fn the_limit_doubles_until_its_first_decrease() {
        let mut c = control(1, 100);
        c.slow_start = true;
        let rtt = Duration::from_millis(10);
        for expected in [2, 4, 8, 16, 32, 64, 100] {
            window(&mut c, rtt, true, false);
            assert_eq!(c.limit, expected);
        }
        c.limit = 50;
        assert!(
            matches!(window(&mut c, rtt, true, true), Change::Down(25)),
            "halved"
        );
        c.limit = 50;
        assert!(matches!(window(&mut c, rtt, true, true), Change::Down(5)));
        assert_eq!(window(&mut c, rtt, true, false), Change::Up(1));
    }

    #[test]
    fn an_unreached_limit_does_not_grow() {
        let mut c = control(4, 10);
        assert_eq!(
            window(&mut c, Duration::from_millis(10), false, false),
            Change::Keep
        );
        assert_eq!(c.limit, 4);
    }

    #[test]
    fn backpressure_cuts_a_tenth_and_at_least_one_but_never_below_the_minimum() {
        let mut c = control(2, 200);
        c.limit = 100;
        let rtt = Duration::from_millis(10);
        assert_eq!(window(&mut c, rtt, true, true), Change::Down(10));
        c.limit = 5;
        assert_eq!(window(&mut c, rtt, true, true), Change::Down(1));
        c.limit = 2;
        assert_eq!(window(&mut c, rtt, true, true), Change::Keep);
        assert_eq!(c.limit, 2);
    }

    #[test]
    fn a_rising_round_trip_cuts_the_limit_and_does_not_move_the_average() {
        let mut c = control(1, 100);
        c.limit = 20;
        for _ in 0..5 {
            window(&mut c, Duration::from_millis(10), true, false);
        }
        let before = c.past.map(|(mean, _)| mean);
        let limit = c.limit;
        assert!(matches!(
            window(&mut c, Duration::from_millis(30), true, false),
            Change::Down(_)
        ));
        assert!(c.limit < limit);
        assert_eq!(c.past.map(|(mean, _)| mean), before);
        // A small wobble is not a rise.
        assert_eq!(
            window(&mut c, Duration::from_millis(11), true, false),
            Change::Up(1)
        );
    }
}
