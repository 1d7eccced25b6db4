//! Replays: retained events of one sink (and route), received in a time range and passing a
//! filter, put back into the spool as new deliveries to that sink.
//!
//! A replayed delivery starts afresh (no attempts, a new TTL) in the sink's own queue, so its
//! concurrency, rate limit and breaker pace it; its event carries the extension attribute
//! [`REPLAY_EXTENSION`] (the replay's id), which tells a receiver that it is a replay and lets
//! the delivery side count what became of it. Progress lives in memory: the last
//! [`KEPT_JOBS`] replays are remembered until the process stops.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::lock;
use super::record::{Head, Kept};
use super::store::{Pos, Store};
use crate::cesql::Expr;
use crate::event::{Event, ExtensionValue};
use crate::spool::record::to_millis;
use crate::spool::{NewDelivery, Spool, SpoolError, SpoolHandle};

/// The extension attribute a replayed event carries: the replay's id.
pub const REPLAY_EXTENSION: &str = "switchyardreplay";
/// Replays whose progress is remembered; the oldest is forgotten past it.
const KEPT_JOBS: usize = 64;
/// Deliveries put into the spool in one step.
const CHUNK: usize = 128;
/// Wait before putting again when the spool has no room.
const FULL_WAIT: Duration = Duration::from_millis(500);

/// What to replay.
#[derive(Debug, Clone)]
pub struct ReplayRequest {
    /// The sink the events were delivered to, and are delivered to again.
    pub sink: String,
    /// Only events that came through this route.
    pub route: Option<String>,
    /// Only events received at or after this time.
    pub since: SystemTime,
    /// Only events received before this time.
    pub until: SystemTime,
    /// Only events that pass this filter.
    pub filter: ReplayFilter,
}

/// Selects events by their attributes; every part given must hold.
#[derive(Debug, Clone, Default)]
pub struct ReplayFilter {
    /// The event's `type`, exactly.
    pub ty: Option<String>,
    /// The event's `source`, exactly.
    pub source: Option<String>,
    /// The event's `subject`, exactly.
    pub subject: Option<String>,
    /// A CloudEvents SQL expression that must be true.
    pub sql: Option<Arc<Expr>>,
}

impl ReplayFilter {
    /// Whether the filter selects every event.
    pub fn is_empty(&self) -> bool {
        self.ty.is_none() && self.source.is_none() && self.subject.is_none() && self.sql.is_none()
    }

    /// Whether `event` passes.
    pub fn matches(&self, event: &Event) -> bool {
        let text = |want: &Option<String>, have: Option<&str>| {
            want.as_deref().is_none_or(|w| Some(w) == have)
        };
        text(&self.ty, Some(&event.ty))
            && text(&self.source, Some(&event.source))
            && text(&self.subject, event.subject.as_deref())
            && self
                .sql
                .as_ref()
                .is_none_or(|sql| sql.filter(event).unwrap_or(false))
    }
}

/// Why a replay could not start.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// Retention is off.
    #[error("spool.retain_delivered is off: no delivered events are kept to replay")]
    Off,
    /// The store could not be read.
    #[error("cannot read the retained events")]
    Read,
}

/// Where a replay stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayState {
    /// Deliveries are still being queued or delivered.
    Running,
    /// Every matched event was delivered, dead-lettered or lost.
    Done,
}

impl ReplayState {
    /// The name the API uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Done => "done",
        }
    }
}

/// A replay's progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayStatus {
    /// Its id.
    pub id: u64,
    /// The sink.
    pub sink: String,
    /// The route, when the request named one.
    pub route: Option<String>,
    /// The range's start.
    pub since: SystemTime,
    /// The range's end.
    pub until: SystemTime,
    /// Retained events selected.
    pub matched: u64,
    /// Deliveries put into the spool.
    pub enqueued: u64,
    /// Deliveries the sink confirmed.
    pub delivered: u64,
    /// Deliveries dead-lettered.
    pub failed: u64,
    /// Selected events gone from the store before they were queued (expired or dropped for
    /// room), or not queued because the spool closed.
    pub lost: u64,
    /// Running or done.
    pub state: ReplayState,
}

/// One replay's counters.
#[derive(Debug)]
struct Job {
    request: ReplayRequest,
    id: u64,
    matched: u64,
    enqueued: AtomicU64,
    delivered: AtomicU64,
    failed: AtomicU64,
    lost: AtomicU64,
    /// Set once every selected event was queued or lost.
    queued_all: AtomicBool,
}

impl Job {
    fn status(&self) -> ReplayStatus {
        let read = |n: &AtomicU64| n.load(Ordering::Relaxed);
        let (delivered, failed, lost) =
            (read(&self.delivered), read(&self.failed), read(&self.lost));
        let finished =
            self.queued_all.load(Ordering::Acquire) && delivered + failed + lost >= self.matched;
        ReplayStatus {
            id: self.id,
            sink: self.request.sink.clone(),
            route: self.request.route.clone(),
            since: self.request.since,
            until: self.request.until,
            matched: self.matched,
            enqueued: read(&self.enqueued),
            delivered,
            failed,
            lost,
            state: if finished {
                ReplayState::Done
            } else {
                ReplayState::Running
            },
        }
    }
}

/// The replays remembered.
#[derive(Debug)]
pub(super) struct Jobs {
    /// Whether any replay was started (the delivery side checks this first).
    any: AtomicBool,
    next_id: AtomicU64,
    jobs: Mutex<VecDeque<Arc<Job>>>,
}

impl Default for Jobs {
    fn default() -> Self {
        // Ids start at the clock's milliseconds, so ids from before a restart are not reused.
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Self {
            any: AtomicBool::new(false),
            next_id: AtomicU64::new(u64::try_from(now.as_millis()).unwrap_or(1)),
            jobs: Mutex::new(VecDeque::new()),
        }
    }
}

impl Jobs {
    fn add(&self, request: ReplayRequest, matched: u64) -> Arc<Job> {
        let job = Arc::new(Job {
            request,
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            matched,
            enqueued: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            lost: AtomicU64::new(0),
            queued_all: AtomicBool::new(false),
        });
        let mut jobs = lock(&self.jobs);
        if jobs.len() >= KEPT_JOBS {
            jobs.pop_front();
        }
        jobs.push_back(job.clone());
        self.any.store(true, Ordering::Release);
        job
    }

    fn find(&self, id: u64) -> Option<Arc<Job>> {
        lock(&self.jobs).iter().find(|j| j.id == id).cloned()
    }

    pub(super) fn status(&self, id: u64) -> Option<ReplayStatus> {
        self.find(id).map(|job| job.status())
    }

    /// Counts the outcome of `delivery` against its replay, if it is a replayed delivery to
    /// that replay's sink.
    pub(super) fn observe(&self, delivery: &crate::spool::Delivery, delivered: bool) {
        if !self.any.load(Ordering::Acquire) {
            return;
        }
        let Some(ExtensionValue::String(id)) = delivery.event.extension(REPLAY_EXTENSION) else {
            return;
        };
        let Some(job) = id.parse().ok().and_then(|id| self.find(id)) else {
            return;
        };
        if *delivery.sink != *job.request.sink {
            return;
        }
        let counter = if delivered {
            &job.delivered
        } else {
            &job.failed
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Selects the events, remembers the replay and starts queueing them in the background.
pub(super) async fn start(
    jobs: &Jobs,
    store: &Arc<Mutex<Store>>,
    request: ReplayRequest,
    cutoff: SystemTime,
    spool: Arc<SpoolHandle>,
) -> Result<ReplayStatus, ReplayError> {
    let (found, selected) = (store.clone(), request.clone());
    let select = move || select(&lock(&found), &selected, cutoff);
    let positions = tokio::task::spawn_blocking(select)
        .await
        .map_err(|_| ReplayError::Read)?;
    let job = jobs.add(request, positions.len() as u64);
    let status = job.status();
    tokio::spawn(enqueue(job, store.clone(), positions, spool));
    Ok(status)
}

/// The places of the retained events the request selects, oldest delivery first.
fn select(store: &Store, request: &ReplayRequest, cutoff: SystemTime) -> Vec<Pos> {
    let (since, until) = (to_millis(request.since), to_millis(request.until));
    let wanted = |head: &Head| {
        head.sink == request.sink
            && request.route.as_deref().is_none_or(|r| r == head.route)
            && (since..until).contains(&head.accepted_ms)
    };
    let mut positions = store.scan(cutoff, wanted);
    if !request.filter.is_empty() {
        positions.retain(|&pos| {
            store
                .read(pos)
                .is_some_and(|kept| request.filter.matches(&kept.event))
        });
    }
    positions
}

/// Puts the selected events into the spool, a chunk at a time; waits while the spool is
/// full, stops when it closes.
async fn enqueue(
    job: Arc<Job>,
    store: Arc<Mutex<Store>>,
    positions: Vec<Pos>,
    spool: Arc<SpoolHandle>,
) {
    let extension = ExtensionValue::String(job.id.to_string());
    for chunk in positions.chunks(CHUNK) {
        let (from, wanted) = (store.clone(), chunk.to_vec());
        let read = move || {
            let store = lock(&from);
            wanted
                .iter()
                .map(|&pos| store.read(pos))
                .collect::<Vec<_>>()
        };
        let Ok(read) = tokio::task::spawn_blocking(read).await else {
            job.lost.fetch_add(chunk.len() as u64, Ordering::Relaxed);
            continue;
        };
        let now = SystemTime::now();
        let deliveries: Vec<NewDelivery> = read
            .into_iter()
            .flatten()
            .map(|kept| fresh(kept, &extension, now))
            .collect();
        let missing = (chunk.len() - deliveries.len()) as u64;
        job.lost.fetch_add(missing, Ordering::Relaxed);
        let count = deliveries.len() as u64;
        if !put(&spool, deliveries).await {
            let rest = positions.len() as u64 - job.enqueued.load(Ordering::Relaxed);
            job.lost.store(rest, Ordering::Relaxed);
            break;
        }
        job.enqueued.fetch_add(count, Ordering::Relaxed);
    }
    job.queued_all.store(true, Ordering::Release);
}

/// A new delivery of a retained event to its sink: no attempts, a fresh TTL, unordered.
fn fresh(kept: Kept, extension: &ExtensionValue, now: SystemTime) -> NewDelivery {
    let mut event = Event::clone(&kept.event);
    event.set_extension(REPLAY_EXTENSION, extension.clone());
    NewDelivery {
        event: Arc::new(event),
        route: kept.route,
        sink: kept.sink,
        accepted_at: now,
        not_before: now,
        priority: kept.priority,
        ordering_key: None,
    }
}

/// Puts `deliveries`, waiting while the spool is full or unreachable; `false` once it closed.
async fn put(spool: &SpoolHandle, deliveries: Vec<NewDelivery>) -> bool {
    loop {
        match spool.put(deliveries.clone()).await {
            Ok(()) => return true,
            Err(SpoolError::Closed) => return false,
            Err(SpoolError::Full { retry_after } | SpoolError::Unreachable { retry_after, .. }) => {
                tokio::time::sleep(retry_after.min(FULL_WAIT)).await;
            }
        }
    }
}
