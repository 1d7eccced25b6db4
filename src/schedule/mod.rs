//! Cron schedules → events → the accept path.
//!
//! Imports `accept`, `event` and `config` only. Each schedule runs as one task that sleeps
//! until its next tick, builds the configured event and hands it to [`Acceptor::accept`], so a
//! scheduled event is routed, stored and delivered like any event from ingress. [`start`] is a
//! function of the schedule list and a token: a reload cancels the token and starts again.
//!
//! `tick` holds the pure time arithmetic; `state` the last emitted tick per schedule, which
//! tells a restart what it missed.

mod state;
#[cfg(test)]
mod tests;
mod tick;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::accept::{AcceptError, Acceptor};
use crate::config::ScheduleConfig;

use self::state::TickStore;
use self::tick::rfc3339;

/// Longest single sleep. The wall clock is read again at least this often, so a clock that
/// jumps while a schedule waits delays its tick by at most this much.
const MAX_NAP: Duration = Duration::from_secs(60);

/// Attempts to store one tick's event while the spool reports itself full.
const FULL_ATTEMPTS: u32 = 5;

/// Shortest and longest wait between those attempts (the spool's `retry_after`, clamped).
const FULL_WAIT: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(5));

/// Starts one task per schedule on `tracker`; they stop when `shutdown` is cancelled.
///
/// The last emitted tick of each schedule is kept in `schedules.json` under `spool_dir`.
pub(crate) fn start(
    schedules: &[ScheduleConfig],
    acceptor: &Acceptor,
    spool_dir: &Path,
    shutdown: &CancellationToken,
    tracker: &TaskTracker,
) {
    if schedules.is_empty() {
        return;
    }
    let schedules = schedules.to_vec();
    let acceptor = acceptor.clone();
    let path = spool_dir.join(state::FILE_NAME);
    let shutdown = shutdown.clone();
    let spawner = tracker.clone();
    tracker.spawn(async move {
        let ticks = match state::load(&path).await {
            Ok(ticks) => ticks,
            Err(error) => {
                tracing::warn!(%error, "Cannot read schedule state; no missed tick will be caught up");
                Default::default()
            }
        };
        let store = Arc::new(TickStore::new(path, ticks));
        tracing::info!(schedules = schedules.len(), "Schedules started");
        for schedule in schedules {
            let runner = Runner {
                schedule,
                acceptor: acceptor.clone(),
                store: store.clone(),
                shutdown: shutdown.clone(),
            };
            spawner.spawn(runner.run());
        }
    });
}

/// One schedule's task.
#[derive(Debug)]
struct Runner {
    schedule: ScheduleConfig,
    acceptor: Acceptor,
    store: Arc<TickStore>,
    shutdown: CancellationToken,
}

/// Whether a schedule's task goes on after an emit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    Continue,
    Stop,
}

impl Runner {
    async fn run(self) {
        let name = self.schedule.name.as_str();
        let mut last = self.store.last(name).await;
        if let Some(missed) = tick::missed_tick(&self.schedule, last, Utc::now()) {
            tracing::info!(schedule = name, tick = %rfc3339(missed), "Catching up a missed tick");
            if self.emit(missed).await == Flow::Stop {
                return;
            }
            last = Some(missed);
        }
        loop {
            let now = Utc::now();
            // Never before the last emitted tick: a clock set back must not repeat ticks.
            let after = last.map_or(now, |last| last.max(now));
            let Some(next) = tick::next_tick(&self.schedule, after) else {
                tracing::warn!(schedule = name, "Schedule has no future tick; stopping it");
                return;
            };
            if !self.sleep_until(next).await || self.emit(next).await == Flow::Stop {
                return;
            }
            last = Some(next);
        }
    }

    /// Sleeps until the wall clock reaches `tick`; false if shutdown came first.
    async fn sleep_until(&self, tick: DateTime<Utc>) -> bool {
        // Timers run on the monotonic clock; re-reading the wall clock after each nap keeps
        // the tick on wall-clock time even when the system clock is adjusted.
        while let Ok(left) = (tick - Utc::now()).to_std() {
            if left.is_zero() {
                break;
            }
            tokio::select! {
                () = self.shutdown.cancelled() => return false,
                () = tokio::time::sleep(left.min(MAX_NAP)) => {}
            }
        }
        !self.shutdown.is_cancelled()
    }

    /// Emits the event of `tick`, retrying a bounded number of times while the spool is full.
    async fn emit(&self, tick: DateTime<Utc>) -> Flow {
        let name = self.schedule.name.as_str();
        let event = tick::event_at(&self.schedule, tick);
        for attempt in 1..=FULL_ATTEMPTS {
            let retry_after = match self.acceptor.accept(vec![event.clone()]).await {
                Ok(receipt) => {
                    if receipt.unrouted > 0 {
                        tracing::debug!(schedule = name, id = %event.id, "Scheduled event matched no route");
                    }
                    self.record(tick).await;
                    return Flow::Continue;
                }
                Err(AcceptError::Closed) => return Flow::Stop,
                Err(
                    AcceptError::Full { retry_after }
                    | AcceptError::Unreachable { retry_after, .. },
                ) => retry_after.clamp(FULL_WAIT.0, FULL_WAIT.1),
            };
            if attempt == FULL_ATTEMPTS {
                break;
            }
            tracing::warn!(schedule = name, id = %event.id, attempt, retry_in = ?retry_after, "Spool is full; retrying the scheduled event");
            tokio::select! {
                () = self.shutdown.cancelled() => return Flow::Stop,
                () = tokio::time::sleep(retry_after) => {}
            }
        }
        tracing::error!(schedule = name, id = %event.id, attempts = FULL_ATTEMPTS, "Scheduled event dropped: the spool stayed full");
        Flow::Continue
    }

    async fn record(&self, tick: DateTime<Utc>) {
        if let Err(error) = self.store.record(&self.schedule.name, tick).await {
            tracing::warn!(schedule = %self.schedule.name, %error, "Cannot save the last tick; a restart may miss or repeat it");
        }
    }
}
