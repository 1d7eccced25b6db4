//! Per-sink state of the embedded spool: the stored count, the leased ids and a bounded
//! cache of the next deliveries to lease, so that leasing rarely touches the database.
//!
//! The cache holds a prefix of the sink's lease order (`not_before`, then id): every stored,
//! unleased delivery whose key is at or below `horizon` is in `ready`, and nothing above it
//! is. Rows above the horizon live only on disk and are read in chunks when `ready` runs dry,
//! so a backlog of millions costs a few hundred entries of memory.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Mutex, MutexGuard};
use std::time::SystemTime;

use tokio::sync::Notify;

use super::db::{Key, LoadedRow};
use super::record::to_millis;
use super::{Delivery, DeliveryId};

/// Most deliveries kept ready per sink.
const READY_MAX: usize = 1024;
/// Most event bytes (roughly) kept ready per sink.
const READY_MAX_BYTES: usize = 8 << 20;
/// Bookkeeping bytes counted per ready delivery besides its payload.
const ENTRY_OVERHEAD: usize = 256;

/// One sink's queue.
#[derive(Debug, Default)]
pub(super) struct SinkQueue {
    state: Mutex<SinkState>,
    /// Woken after a commit that may have made a delivery of this sink due sooner.
    pub(super) added: Notify,
}

impl SinkQueue {
    /// A queue for a sink that has `depth` deliveries on disk and none in memory yet.
    pub(super) fn stored(depth: usize) -> Self {
        let queue = Self::default();
        {
            let mut state = queue.lock();
            state.depth = depth;
            state.horizon = Horizon::Through((i64::MIN, 0));
        }
        queue
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, SinkState> {
        // A panic while holding this lock leaves plain data behind; keep serving it.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// How far the ready cache covers the sink's lease order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) enum Horizon {
    /// Every unleased delivery is in the cache.
    #[default]
    All,
    /// Unleased deliveries with keys up to this one are in the cache; later ones are only on
    /// disk.
    Through(Key),
}

/// What a lease attempt found.
#[derive(Debug)]
pub(super) enum Take {
    /// These deliveries are now leased.
    Leased(Vec<Delivery>),
    /// Nothing is due; the earliest known delivery is due at this time, if there is one.
    Wait(Option<SystemTime>),
    /// The cache is empty but the disk may hold more.
    Refill,
}

/// The state behind a sink's lock.
#[derive(Debug, Default)]
pub(super) struct SinkState {
    ready: BTreeMap<Key, Delivery>,
    ready_bytes: usize,
    horizon: Horizon,
    leased: HashSet<DeliveryId>,
    /// Stored deliveries, queued and leased, as of the last commit.
    pub(super) depth: usize,
}

fn key(delivery: &Delivery) -> Key {
    (to_millis(delivery.not_before), delivery.id)
}

fn size(delivery: &Delivery) -> usize {
    ENTRY_OVERHEAD + delivery.event.data.as_ref().map_or(0, |d| d.len())
}

impl SinkState {
    /// Leases up to `max` due deliveries, oldest first.
    pub(super) fn take_due(&mut self, now: SystemTime, max: usize) -> Take {
        let mut out = Vec::new();
        while out.len() < max.max(1) {
            let due = self
                .ready
                .first_key_value()
                .is_some_and(|(_, d)| d.not_before <= now);
            let Some((_, delivery)) = due.then(|| self.ready.pop_first()).flatten() else {
                break;
            };
            self.ready_bytes = self.ready_bytes.saturating_sub(size(&delivery));
            self.leased.insert(delivery.id);
            out.push(delivery);
        }
        if !out.is_empty() {
            return Take::Leased(out);
        }
        match (self.ready.first_key_value(), self.horizon) {
            (Some((_, d)), _) => Take::Wait(Some(d.not_before)),
            (None, Horizon::All) => Take::Wait(None),
            (None, Horizon::Through(_)) => Take::Refill,
        }
    }

    /// The cache is empty and the disk may have more after this key.
    pub(super) fn needs_refill(&self) -> Option<Key> {
        match self.horizon {
            Horizon::Through(after) if self.ready.is_empty() => Some(after),
            _ => None,
        }
    }

    /// Takes in rows read after the horizon; `limit` is how many were asked for, so fewer
    /// means the disk has nothing more.
    pub(super) fn refilled(&mut self, rows: Vec<LoadedRow>, limit: usize) {
        self.horizon = match rows.last() {
            Some((last, _)) if rows.len() >= limit => Horizon::Through(*last),
            _ => Horizon::All,
        };
        for (key, row) in rows {
            match row {
                Ok(delivery) => self.insert(delivery),
                Err(error) => tracing::error!(
                    delivery = key.1,
                    %error,
                    "Stored event record is unreadable; delivery skipped until restart"
                ),
            }
        }
    }

    /// A committed delivery that is not leased: keep it ready when it falls in the cached
    /// prefix.
    pub(super) fn insert(&mut self, delivery: Delivery) {
        let key = key(&delivery);
        let covered = match self.horizon {
            Horizon::All => true,
            Horizon::Through(h) => key <= h,
        };
        if !covered || self.leased.contains(&delivery.id) {
            return;
        }
        let bytes = size(&delivery);
        if self.ready.insert(key, delivery).is_none() {
            self.ready_bytes += bytes;
        }
        while self.ready.len() > READY_MAX
            || (self.ready_bytes > READY_MAX_BYTES && self.ready.len() > 1)
        {
            let Some((_, evicted)) = self.ready.pop_last() else {
                break;
            };
            self.ready_bytes = self.ready_bytes.saturating_sub(size(&evicted));
            if let Some((last, _)) = self.ready.last_key_value() {
                self.horizon = Horizon::Through(*last);
            }
        }
    }

    /// A new delivery was committed.
    pub(super) fn stored(&mut self, delivery: Delivery) {
        self.depth += 1;
        self.insert(delivery);
    }

    /// A leased delivery was acked or dead-lettered (`existed`: its row was still there).
    pub(super) fn removed(&mut self, id: DeliveryId, existed: bool) {
        self.leased.remove(&id);
        if existed {
            self.depth = self.depth.saturating_sub(1);
        }
    }

    /// A leased delivery was nacked: it is unleased again under its new `not_before`.
    pub(super) fn requeued(&mut self, delivery: Delivery) {
        self.leased.remove(&delivery.id);
        self.insert(delivery);
    }

    /// A change to a leased delivery could not be stored: the row stays as it was on disk.
    /// Release it and forget the cache, so the next lease reads the truth from disk.
    pub(super) fn failed(&mut self, id: DeliveryId) {
        self.leased.remove(&id);
        self.forget();
    }

    /// `count` deliveries were committed without being decoded (replayed dead letters):
    /// forget the cache so the next lease reads them from disk.
    pub(super) fn added_on_disk(&mut self, count: usize) {
        self.depth += count;
        self.forget();
    }

    fn forget(&mut self) {
        self.ready.clear();
        self.ready_bytes = 0;
        self.horizon = Horizon::Through((i64::MIN, 0));
    }
}
