//! Delivery history: every attempt of every delivery, kept for `spool.history_ttl` within
//! `spool.history_max_bytes`, oldest out first; `0` for either switches it off.
//!
//! Imports `event`, `config` and `telemetry`. The delivery side hands each attempt's outcome
//! to [`History::record`], which never waits: it puts the record in a bounded channel and,
//! when that is full, drops it and counts it (`switchyard_history_dropped_total`). A
//! background task takes the records in batches (every [`LINGER`] at most, so a busy
//! daemon wakes it a few dozen times a second, not once per delivery) and appends them to a
//! store of its own, apart from the spool and its writer:
//!
//! - `embedded` and `nats` spools: segment files under `<spool.path>/history/`, local to the
//!   instance (with the `nats` spool, each instance keeps the attempts it made);
//! - `memory` spool: the same segments in memory.
//!
//! A delivery's first record carries the event: its attributes and the first
//! [`DATA_MAX_BYTES`] of its data (the spool lets go of an event once delivered, so the
//! history keeps its own copy). `query` answers the admin API from a scan of the store.

mod query;
mod record;
mod store;

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::{HistoryConfig, SpoolBackend, SpoolConfig};
use crate::event::Event;
use crate::telemetry;

pub use query::{AttemptView, DeliveryView, EventView, HistoryQuery, Page, MAX_LIMIT};
use record::{AttributesOf, EventFields, Fields};
pub use store::HistoryError;
use store::Store;

/// Records waiting for the writer; past it new ones are dropped.
const CHANNEL: usize = 16 * 1024;
/// Most records appended in one write.
const BATCH: usize = 4096;
/// Pause after each write, so records gather into batches.
const LINGER: Duration = Duration::from_millis(20);
/// Bytes of an event's data kept with its first record.
pub const DATA_MAX_BYTES: usize = 4 << 10;
/// Bytes of a failure's text kept.
pub const DETAIL_MAX_BYTES: usize = 256;

/// What became of a delivery after an attempt (or without one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AttemptOutcome {
    /// The sink confirmed it.
    Delivered,
    /// The attempt failed; it will be retried.
    Retrying,
    /// It failed and will not be retried: dead-lettered.
    DeadLettered,
    /// Its time to live ran out before an attempt: dead-lettered without one.
    Expired,
}

impl AttemptOutcome {
    /// Every outcome.
    pub const ALL: [Self; 4] = [
        Self::Delivered,
        Self::Retrying,
        Self::DeadLettered,
        Self::Expired,
    ];

    /// The name the API uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Delivered => "delivered",
            Self::Retrying => "retrying",
            Self::DeadLettered => "dead-lettered",
            Self::Expired => "expired",
        }
    }

    /// The outcome an API name stands for.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|o| o.as_str() == name)
    }

    fn code(self) -> u8 {
        match self {
            Self::Delivered => 0,
            Self::Retrying => 1,
            Self::DeadLettered => 2,
            Self::Expired => 3,
        }
    }

    fn from_code(code: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|o| o.code() == code)
    }
}

/// One attempt as the delivery side reports it.
#[derive(Debug, Clone)]
pub struct Attempt {
    /// The event.
    pub event: Arc<Event>,
    /// The route that matched it.
    pub route: Arc<str>,
    /// The sink.
    pub sink: Arc<str>,
    /// The attempt's number (1 for the first); for an expiry, the attempts made before.
    pub attempt: u32,
    /// When it was made.
    pub at: SystemTime,
    /// How long it took; `None` when no attempt was made.
    pub duration: Option<Duration>,
    /// What became of the delivery.
    pub outcome: AttemptOutcome,
    /// The status the sink reported (HTTP status).
    pub status: Option<u16>,
    /// The failure or the dead-letter reason.
    pub detail: Option<String>,
}

/// The delivery history: a cheap handle to clone; records nothing when off.
#[derive(Debug, Clone, Default)]
pub struct History {
    inner: Option<Arc<Inner>>,
}

#[derive(Debug)]
struct Inner {
    records: mpsc::Sender<Attempt>,
    store: Arc<Mutex<Store>>,
    dropped: metrics::Counter,
    stop: CancellationToken,
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl History {
    /// History switched off: records nothing, answers nothing.
    pub fn off() -> Self {
        Self::default()
    }

    /// Opens the history the configuration asks for beside `spool` and starts its writer
    /// (call within a Tokio runtime).
    pub fn open(config: HistoryConfig, spool: &SpoolConfig) -> Result<Self, HistoryError> {
        if !config.enabled() {
            return Ok(Self::off());
        }
        let store = match spool.backend {
            SpoolBackend::Memory => Store::memory(config),
            SpoolBackend::Embedded | SpoolBackend::Nats => {
                Store::open(&spool.path.join("history"), config)?
            }
        };
        let store = Arc::new(Mutex::new(store));
        let (records, rx) = mpsc::channel(CHANNEL);
        let stop = CancellationToken::new();
        let dropped = telemetry::history_dropped();
        let writer = tokio::spawn(write(
            rx,
            store.clone(),
            (config, dropped.clone()),
            stop.clone(),
        ));
        Ok(Self {
            inner: Some(Arc::new(Inner {
                records,
                store,
                dropped,
                stop,
                writer: Mutex::new(Some(writer)),
            })),
        })
    }

    /// Whether attempts are recorded.
    pub fn enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// Hands one attempt to the writer without waiting; drops it (counted) when the writer
    /// is behind.
    pub fn record(&self, attempt: Attempt) {
        let Some(inner) = &self.inner else { return };
        // Closed only once shutdown has written the last records: nothing to count then.
        if let Err(mpsc::error::TrySendError::Full(_)) = inner.records.try_send(attempt) {
            inner.dropped.increment(1);
        }
    }

    /// Writes what is waiting and stops the writer; later records are dropped.
    pub async fn close(&self) {
        let Some(inner) = &self.inner else { return };
        inner.stop.cancel();
        let writer = lock(&inner.writer).take();
        if let Some(writer) = writer {
            if let Err(error) = writer.await {
                tracing::error!(%error, "Delivery history writer ended abnormally");
            }
        }
    }

    /// One page of events, newest first; `None` when history is off.
    pub async fn events(&self, query: HistoryQuery) -> Option<Page> {
        let store = self.inner.as_ref()?.store.clone();
        let now = SystemTime::now();
        let page = tokio::task::spawn_blocking(move || query::page(&lock(&store), &query, now));
        page.await.ok()
    }

    /// One event with every attempt of each of its deliveries; `None` when history is off
    /// or holds no such key.
    pub async fn event(&self, key: u64) -> Option<EventView> {
        let store = self.inner.as_ref()?.store.clone();
        let now = SystemTime::now();
        let found = tokio::task::spawn_blocking(move || query::event(&lock(&store), key, now));
        found.await.ok().flatten()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // The store stays consistent between appends: a panic mid-append loses that batch only.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The writer: takes records in batches and appends them; sweeps expired segments when idle.
async fn write(
    mut rx: mpsc::Receiver<Attempt>,
    store: Arc<Mutex<Store>>,
    (config, dropped): (HistoryConfig, metrics::Counter),
    stop: CancellationToken,
) {
    let mut sweep = tokio::time::interval((config.ttl / 4).clamp(LINGER, Duration::from_secs(60)));
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        tokio::select! {
            () = stop.cancelled() => rx.close(),
            _ = sweep.tick() => {
                let store = store.clone();
                let swept = tokio::task::spawn_blocking(move || lock(&store).prune(SystemTime::now()));
                let _finished = swept.await.is_ok();
                continue;
            }
            n = rx.recv_many(&mut batch, BATCH) => if n == 0 { return },
        }
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(attempt) => batch.push(attempt),
                Err(_) => break,
            }
        }
        if batch.is_empty() && rx.is_closed() && rx.is_empty() {
            return;
        }
        let attempts = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
        let count = attempts.len() as u64;
        let store = store.clone();
        let written = tokio::task::spawn_blocking(move || append(&store, &attempts)).await;
        match written {
            Ok(Ok(true)) => {}
            // The disk is short: the spool beside the history comes first.
            Ok(Ok(false)) => dropped.increment(count),
            Ok(Err(error)) => {
                dropped.increment(count);
                tracing::warn!(%error, "Cannot write delivery history; those attempts are not recorded");
            }
            Err(error) => tracing::error!(%error, "Delivery history write ended abnormally"),
        }
        if !stop.is_cancelled() {
            tokio::time::sleep(LINGER).await;
        }
    }
}

/// Appends attempts as records (off the delivery path), each written straight from the
/// attempt.
fn append(store: &Mutex<Store>, attempts: &[Attempt]) -> std::io::Result<bool> {
    let records: Vec<Fields<'_>> = attempts.iter().map(fields).collect();
    lock(store).append(&records, SystemTime::now())
}

fn fields(attempt: &Attempt) -> Fields<'_> {
    let event = &attempt.event;
    // A delivery's first record (or its expiry without one) carries the event.
    let carried = attempt.attempt <= 1 || attempt.duration.is_none();
    Fields {
        at_ms: store::millis(attempt.at),
        duration_us: attempt
            .duration
            .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX)),
        attempt: attempt.attempt,
        outcome: attempt.outcome,
        status: attempt.status,
        texts: [
            &attempt.route,
            &attempt.sink,
            &event.source,
            &event.id,
            &event.ty,
        ],
        detail: attempt
            .detail
            .as_deref()
            .map(|d| cut_str(d, DETAIL_MAX_BYTES)),
        event: carried.then(|| {
            let data = event.data.as_deref().unwrap_or_default();
            EventFields {
                attributes: AttributesOf::Event(event),
                data_size: data.len() as u64,
                data: &data[..data.len().min(DATA_MAX_BYTES)],
            }
        }),
    }
}

/// `text` cut to at most `max` bytes, on a character boundary.
fn cut_str(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests;
