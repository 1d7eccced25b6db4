//! Delivered events kept for replay (`spool.retain_delivered`), and the replays made from
//! them.
//!
//! When a sink confirms a delivery, the delivery side hands it to [`Retained::keep`] before
//! it acks the spool: a writer task appends the event (attributes and payload), its route,
//! sink, lane and its accepted and delivered times to a store of its own, apart from the
//! spool and its writer (`<spool.path>/retained/`, or memory with the `memory` spool), and
//! answers once the bytes are written. So an acked delivery is always retained, and a crash
//! between the two costs at most a second copy. Switched off, nothing here runs: `keep` and
//! `observe` return at once.
//!
//! Retained events count toward `spool.max_bytes` but never take room from new events: after
//! each write, and at least once a second, the oldest are dropped until the spool's own
//! bytes plus the retained ones fit under the bound, and while the disk is short of what the
//! spool needs (see `Store::make_room`); past `retain_delivered` they go too.
//!
//! [`Retained::replay`] puts the retained events of one sink received in a time range back
//! into the spool as new deliveries (see `replay`).

mod record;
mod replay;
mod store;

use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{Delivery, Spool, SpoolHandle};
use crate::config::{SpoolBackend, SpoolConfig};
use record::Kept;
use replay::Jobs;
pub use replay::{
    ReplayError, ReplayFilter, ReplayRequest, ReplayState, ReplayStatus, REPLAY_EXTENSION,
};
use store::Store;

/// Batches of delivered events waiting for the writer; past it delivery waits (they must be
/// kept before they are acked).
const CHANNEL: usize = 1024;
/// Most batches written at once.
const BATCH: usize = 256;
/// Longest time between two checks of the bounds.
const TICK_MAX: Duration = Duration::from_secs(1);
/// Shortest time between two checks of the bounds.
const TICK_MIN: Duration = Duration::from_millis(50);

/// Why the store of retained events could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("retained events {path}: {source}")]
pub struct RetainError {
    /// The directory.
    path: PathBuf,
    /// Why.
    #[source]
    source: io::Error,
}

/// Delivered events kept for replay: a cheap handle to clone; keeps nothing when off.
#[derive(Debug, Clone, Default)]
pub struct Retained {
    inner: Option<Arc<Inner>>,
}

#[derive(Debug)]
struct Inner {
    ttl: Duration,
    store: Arc<Mutex<Store>>,
    batches: mpsc::Sender<Batch>,
    jobs: Jobs,
    stop: CancellationToken,
    writer: Mutex<Option<JoinHandle<()>>>,
}

/// Delivered events to keep, and who waits for them to be written.
#[derive(Debug)]
struct Batch {
    kept: Vec<Kept>,
    done: oneshot::Sender<()>,
}

/// What the writer needs besides its channel.
struct WriterParts {
    store: Arc<Mutex<Store>>,
    spool: Arc<SpoolHandle>,
    ttl: Duration,
    max_bytes: u64,
    stop: CancellationToken,
}

impl Retained {
    /// Retention switched off: keeps nothing; replays are refused.
    pub fn off() -> Self {
        Self::default()
    }

    /// Opens the store `spool.retain_delivered` asks for beside `spool` and starts its
    /// writer (call within a Tokio runtime); off when the setting is absent.
    pub fn open(config: &SpoolConfig, spool: Arc<SpoolHandle>) -> Result<Self, RetainError> {
        let Some(ttl) = config.retain_delivered else {
            return Ok(Self::off());
        };
        let store = match config.backend {
            // `check` refuses the setting with the nats backend; kept in memory should the
            // library be called without it.
            SpoolBackend::Memory | SpoolBackend::Nats => Store::memory(config.max_bytes),
            SpoolBackend::Embedded => {
                let path = config.path.join("retained");
                Store::open(&path, config.max_bytes)
                    .map_err(|source| RetainError { path, source })?
            }
        };
        let store = Arc::new(Mutex::new(store));
        let (batches, rx) = mpsc::channel(CHANNEL);
        let stop = CancellationToken::new();
        let parts = WriterParts {
            store: store.clone(),
            spool,
            ttl,
            max_bytes: config.max_bytes,
            stop: stop.clone(),
        };
        let writer = tokio::spawn(write(rx, parts));
        Ok(Self {
            inner: Some(Arc::new(Inner {
                ttl,
                store,
                batches,
                jobs: Jobs::default(),
                stop,
                writer: Mutex::new(Some(writer)),
            })),
        })
    }

    /// Whether delivered events are kept.
    pub fn enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// Keeps `delivered` (confirmed by their sink at `at`), returning once they are written;
    /// returns at once when retention is off. A failure to write is logged and does not hold
    /// the delivery up.
    pub async fn keep(&self, delivered: &[Delivery], at: SystemTime) {
        let Some(inner) = &self.inner else { return };
        let kept = delivered.iter().map(|d| Kept::new(d, at)).collect();
        let (done, written) = oneshot::channel();
        if inner.batches.send(Batch { kept, done }).await.is_ok() {
            // An error means the writer stopped (shutdown): nothing more to wait for.
            let _stopped = written.await;
        }
    }

    /// Counts what became of a replayed delivery: `delivered`, or dead-lettered when not.
    pub fn observe(&self, delivery: &Delivery, delivered: bool) {
        if let Some(inner) = &self.inner {
            inner.jobs.observe(delivery, delivered);
        }
    }

    /// Bytes the retained events take; `None` when retention is off.
    pub fn bytes(&self) -> Option<u64> {
        Some(lock(&self.inner.as_ref()?.store).bytes())
    }

    /// Starts a replay: selects the retained events the request names and puts them back
    /// into `spool` as new deliveries, in the background; answers with its first status.
    pub async fn replay(
        &self,
        request: ReplayRequest,
        spool: Arc<SpoolHandle>,
    ) -> Result<ReplayStatus, ReplayError> {
        let inner = self.inner.as_ref().ok_or(ReplayError::Off)?;
        let cutoff = store::cutoff(SystemTime::now(), inner.ttl);
        replay::start(&inner.jobs, &inner.store, request, cutoff, spool).await
    }

    /// A replay's progress; `None` when there is no such replay (or retention is off).
    pub fn replay_status(&self, id: u64) -> Option<ReplayStatus> {
        self.inner.as_ref()?.jobs.status(id)
    }

    /// Writes what is waiting and stops the writer.
    pub async fn close(&self) {
        let Some(inner) = &self.inner else { return };
        inner.stop.cancel();
        let writer = lock(&inner.writer).take();
        if let Some(writer) = writer {
            if let Err(error) = writer.await {
                tracing::error!(%error, "Writer of retained events ended abnormally");
            }
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // The store stays consistent between appends: a panic mid-append loses that batch only.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The writer: appends batches as they come, then answers their senders; between batches
/// and at every tick it keeps the store within its bounds.
async fn write(mut rx: mpsc::Receiver<Batch>, parts: WriterParts) {
    let mut tick = tokio::time::interval((parts.ttl / 4).clamp(TICK_MIN, TICK_MAX));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut batches = Vec::with_capacity(BATCH);
    loop {
        tokio::select! {
            () = parts.stop.cancelled(), if !rx.is_closed() => rx.close(),
            _ = tick.tick() => {
                let (store, budget, ttl) = (parts.store.clone(), budget(&parts), parts.ttl);
                let bounded = tokio::task::spawn_blocking(move || bound(&store, budget, ttl));
                let _finished = bounded.await.is_ok();
                continue;
            }
            n = rx.recv_many(&mut batches, BATCH) => if n == 0 { return },
        }
        let taken = std::mem::replace(&mut batches, Vec::with_capacity(BATCH));
        let (kept, waiting): (Vec<_>, Vec<_>) = taken.into_iter().map(|b| (b.kept, b.done)).unzip();
        let (store, budget, ttl) = (parts.store.clone(), budget(&parts), parts.ttl);
        let written = tokio::task::spawn_blocking(move || {
            let written = append(&store, &kept, budget.used);
            bound(&store, budget, ttl);
            written
        });
        match written.await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                tracing::warn!(%error, "Cannot write retained events; those deliveries cannot be replayed");
            }
            Err(error) => tracing::error!(%error, "Writing retained events ended abnormally"),
        }
        for done in waiting {
            let _gone = done.send(());
        }
    }
}

/// The spool's own bytes now, and what they leave of `spool.max_bytes` to retained events.
#[derive(Debug, Clone, Copy)]
struct Budget {
    used: u64,
    left: u64,
}

fn budget(parts: &WriterParts) -> Budget {
    let used = parts.spool.used_bytes().unwrap_or(0);
    Budget {
        used,
        left: parts.max_bytes.saturating_sub(used),
    }
}

/// Drops what is past the TTL, then the oldest while over the budget or while the disk is
/// short.
fn bound(store: &Mutex<Store>, budget: Budget, ttl: Duration) {
    let mut store = lock(store);
    store.expire(store::cutoff(SystemTime::now(), ttl));
    let before = store.bytes();
    store.evict_to(budget.left);
    store.make_room(0, budget.used);
    let evicted = before - store.bytes();
    if evicted > 0 {
        tracing::debug!(
            bytes = evicted,
            "Dropped the oldest retained events to make room in the spool"
        );
    }
}

/// Encodes delivered events (off the delivery path) and appends them, unless the disk is
/// short even without any retained event (the spool comes first).
fn append(store: &Mutex<Store>, kept: &[Vec<Kept>], spool_bytes: u64) -> io::Result<()> {
    let mut bytes = Vec::new();
    for kept in kept.iter().flatten() {
        kept.encode(&mut bytes);
    }
    let mut store = lock(store);
    if !store.make_room(bytes.len() as u64, spool_bytes) {
        tracing::warn!(
            bytes = bytes.len(),
            "The disk is short: delivered events not retained"
        );
        return Ok(());
    }
    store.append(&bytes, SystemTime::now())
}

#[cfg(test)]
mod tests;
