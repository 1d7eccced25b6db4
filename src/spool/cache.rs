//! Per-sink state of the embedded spool: the stored count, the leased ids, the ordering
//! index, and per priority lane a bounded cache of the next deliveries to lease, so that
//! leasing rarely touches the database.
//!
//! Each lane's cache holds a prefix of that lane's lease order (`not_before`, then id): every
//! stored, unleased and leasable delivery of the lane whose key is at or below the lane's
//! `horizon` is in `ready`, and nothing above it is. Rows above the horizon live only on disk
//! and are read in chunks when `ready` runs dry, so a backlog of millions costs a few hundred
//! entries of memory. One cache per lane means a high-priority row is never hidden behind
//! cached low ones.
//!
//! An ordered delivery behind an earlier one of its chain is not leasable and is not cached;
//! when its predecessor leaves, its id goes on the `fetch` list and the next refill reads it.
//!
//! "On disk" means in SQLite or in the journal: each lane also keeps the index of its
//! journaled deliveries (key and record location, 32 bytes each, in lease order), which a
//! refill merges with the rows it reads from SQLite.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use tokio::sync::Notify;

use crate::maps::HashMap;

use super::db::{key_of, Key, LoadedRow};
use super::journal::Loc;
use super::lanes::{lane, priority, LanePicker, OrderIndex, LANES};
use super::{Delivery, DeliveryId, Priority};

/// Most deliveries kept ready per lane of a sink.
const READY_MAX: usize = 1024;
/// Most bytes of events (whole, see `bounds`) kept ready per lane of a sink.
const READY_MAX_BYTES: usize = 8 << 20;
/// Bookkeeping bytes counted per ready delivery besides its event.
const ENTRY_OVERHEAD: usize = 256;
/// The horizon of a cache that knows nothing yet.
const NOTHING: Horizon = Horizon::Through((i64::MIN, 0));

/// One sink's queue.
#[derive(Debug, Default)]
pub(super) struct SinkQueue {
    state: Mutex<SinkState>,
    /// Woken after a commit that may have made a delivery of this sink leasable sooner.
    pub(super) added: Notify,
}

impl SinkQueue {
    /// A queue for a sink that has `depth` deliveries on disk and none in memory yet.
    pub(super) fn stored(depth: usize) -> Self {
        let queue = Self::default();
        {
            let mut state = queue.lock();
            state.depth = depth;
            state.forget();
        }
        queue
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, SinkState> {
        // A panic while holding this lock leaves plain data behind; keep serving it.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// How far a lane's ready cache covers the lane's lease order.
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
    /// A cache is empty but the disk may hold more, or released deliveries are to be read.
    Refill,
}

/// What a refill should read: released ids, and the lanes to read past their horizon.
#[derive(Debug, Default)]
pub(super) struct Wanted {
    pub(super) ids: Vec<DeliveryId>,
    pub(super) lanes: Vec<(Priority, Key)>,
}

/// One lane's cache.
#[derive(Debug, Default)]
struct Lane {
    ready: BTreeMap<Key, Delivery>,
    bytes: usize,
    horizon: Horizon,
}

/// The state behind a sink's lock.
#[derive(Debug, Default)]
pub(super) struct SinkState {
    lanes: [Lane; LANES],
    picker: LanePicker,
    order: OrderIndex,
    /// Ordered deliveries whose predecessor left: read them by id.
    fetch: Vec<DeliveryId>,
    /// Leased deliveries, with when each was accepted (unix millis).
    leased: HashMap<DeliveryId, i64>,
    /// Stored deliveries, queued and leased, as of the last commit.
    pub(super) depth: usize,
    /// Per lane, the journaled deliveries (leased ones included), in lease order.
    journal: [VecDeque<(Key, Loc)>; LANES],
}

/// Bytes a ready delivery is counted at: its whole event (see `bounds`) and its bookkeeping.
fn size(delivery: &Delivery) -> usize {
    let event = usize::try_from(super::bounds::event_size(&delivery.event)).unwrap_or(usize::MAX);
    ENTRY_OVERHEAD.saturating_add(event)
}

impl Lane {
    fn pop_first(&mut self) -> Option<Delivery> {
        let (_, delivery) = self.ready.pop_first()?;
        self.bytes = self.bytes.saturating_sub(size(&delivery));
        Some(delivery)
    }

    fn is_due(&self, now: SystemTime) -> bool {
        self.ready
            .first_key_value()
            .is_some_and(|(_, d)| d.not_before <= now)
    }

    fn needs_refill(&self) -> Option<Key> {
        match self.horizon {
            Horizon::Through(after) if self.ready.is_empty() => Some(after),
            _ => None,
        }
    }

    fn insert(&mut self, delivery: Delivery) {
        let key = key_of(&delivery);
        if matches!(self.horizon, Horizon::Through(h) if key > h) {
            return;
        }
        let bytes = size(&delivery);
        if self.ready.insert(key, delivery).is_none() {
            self.bytes += bytes;
        }
        while self.ready.len() > READY_MAX || (self.bytes > READY_MAX_BYTES && self.ready.len() > 1)
        {
            let Some((_, evicted)) = self.ready.pop_last() else {
                break;
            };
            self.bytes = self.bytes.saturating_sub(size(&evicted));
            if let Some((last, _)) = self.ready.last_key_value() {
                self.horizon = Horizon::Through(*last);
            }
        }
    }
}

impl SinkState {
    /// Leases up to `max` due deliveries, lane by lane as the picker says, oldest first
    /// within a lane. Refills first when a lane's cache cannot tell what it holds.
    pub(super) fn take_due(&mut self, now: SystemTime, max: usize) -> Take {
        if self.needs_refill() {
            return Take::Refill;
        }
        let mut out = Vec::new();
        while out.len() < max.max(1) {
            self.drop_blocked();
            let due = self.lanes.each_ref().map(|l| l.is_due(now));
            let Some(chosen) = self.picker.pick(due) else {
                break;
            };
            let Some(delivery) = self.lanes.get_mut(chosen).and_then(Lane::pop_first) else {
                break;
            };
            self.leased
                .insert(delivery.id, super::record::to_millis(delivery.accepted_at));
            out.push(delivery);
        }
        if !out.is_empty() {
            return Take::Leased(out);
        }
        if self.needs_refill() {
            return Take::Refill;
        }
        let next = self.lanes.iter().filter_map(|l| l.ready.first_key_value());
        Take::Wait(next.map(|(_, d)| d.not_before).min())
    }

    /// Drops cached heads that may not be leased (yet): they come back by id or by refill.
    fn drop_blocked(&mut self) {
        for lane in &mut self.lanes {
            while lane
                .ready
                .first_key_value()
                .is_some_and(|(_, d)| !self.order.may_lease(d))
            {
                lane.pop_first();
            }
        }
    }

    fn needs_refill(&self) -> bool {
        !self.fetch.is_empty() || self.lanes.iter().any(|l| l.needs_refill().is_some())
    }

    /// What the next refill should read, or `None` when every cache is usable.
    pub(super) fn wanted(&self) -> Option<Wanted> {
        let lanes: Vec<(Priority, Key)> = (0..LANES)
            .filter_map(|l| Some((priority(l), self.lanes.get(l)?.needs_refill()?)))
            .collect();
        if lanes.is_empty() && self.fetch.is_empty() {
            return None;
        }
        Some(Wanted {
            ids: self.fetch.clone(),
            lanes,
        })
    }

    /// Takes in released deliveries read by id.
    pub(super) fn fetched(&mut self, ids: &[DeliveryId], rows: Vec<LoadedRow>) {
        self.fetch.retain(|id| !ids.contains(id));
        self.take_rows(rows);
    }

    /// Takes in rows of `priority`'s lane read after its horizon; `limit` is how many were
    /// asked for, so fewer means the disk has nothing more.
    pub(super) fn refilled(&mut self, priority: Priority, rows: Vec<LoadedRow>, limit: usize) {
        if let Some(lane) = self.lanes.get_mut(lane(priority)) {
            lane.horizon = match rows.last() {
                Some((last, _)) if rows.len() >= limit => Horizon::Through(*last),
                _ => Horizon::All,
            };
        }
        self.take_rows(rows);
    }

    fn take_rows(&mut self, rows: Vec<LoadedRow>) {
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

    /// A committed delivery that is not leased: keep it ready when it is leasable and falls
    /// in its lane's cached prefix.
    pub(super) fn insert(&mut self, delivery: Delivery) {
        if self.leased.contains_key(&delivery.id) || !self.order.may_lease(&delivery) {
            return;
        }
        if let Some(lane) = self.lanes.get_mut(lane(delivery.priority)) {
            lane.insert(delivery);
        }
    }

    /// Records a stored ordered delivery found on disk at open.
    pub(super) fn ordered(&mut self, id: DeliveryId, route: &Arc<str>, key: &Arc<str>) {
        self.order.add(id, route, Some(key));
    }

    /// A new delivery was committed.
    pub(super) fn stored(&mut self, delivery: Delivery) {
        self.depth += 1;
        let key = delivery.ordering_key.as_ref();
        self.order.add(delivery.id, &delivery.route, key);
        self.insert(delivery);
    }

    /// A delivery was committed to the journal.
    pub(super) fn journaled(&mut self, delivery: Delivery, loc: Loc) {
        self.index(delivery.priority, key_of(&delivery), loc);
        self.stored(delivery);
    }

    /// A journaled delivery found at open.
    pub(super) fn recovered(&mut self, priority: Priority, key: Key, loc: Loc) {
        self.index(priority, key, loc);
        self.depth += 1;
        self.forget();
    }

    /// Puts a journaled delivery (back) into its lane's index.
    pub(super) fn index(&mut self, priority: Priority, key: Key, loc: Loc) {
        if let Some(index) = self.journal.get_mut(lane(priority)) {
            // New deliveries arrive in about key order: the place is at or near the end.
            let at = index.partition_point(|(k, _)| *k < key);
            if index.get(at).is_none_or(|(k, _)| *k != key) {
                index.insert(at, (key, loc));
            }
        }
    }

    /// The earliest `not_before` (unix millis) of the journaled deliveries, leased ones
    /// included: the front of each lane's index. Every delivery the daemon stores is due
    /// when it is accepted, and a retry moves a journaled one into SQLite (only a retry while
    /// the disk is full stays, due later), so this is when the oldest of them was accepted.
    pub(super) fn journal_oldest(&self) -> Option<i64> {
        self.journal
            .iter()
            .filter_map(|index| index.front().map(|((millis, _), _)| *millis))
            .min()
    }

    /// When the earliest leased delivery was accepted (unix millis). A retry of a journaled
    /// delivery leaves the journal's index before its row is committed to the database and
    /// stays leased until then, so this covers it in between.
    pub(super) fn leased_oldest(&self) -> Option<i64> {
        self.leased.values().min().copied()
    }

    /// Takes a delivery out of its lane's journal index; `None` when it is not journaled.
    pub(super) fn unindex(&mut self, priority: Priority, key: Key) -> Option<Loc> {
        let index = self.journal.get_mut(lane(priority))?;
        let at = index.binary_search_by(|(k, _)| k.cmp(&key)).ok()?;
        index.remove(at).map(|(_, loc)| loc)
    }

    /// Up to `limit` journaled deliveries of `priority`'s lane after `after`, in lease order.
    pub(super) fn journal_after(
        &self,
        priority: Priority,
        after: Key,
        limit: usize,
    ) -> Vec<(Key, Loc)> {
        let Some(index) = self.journal.get(lane(priority)) else {
            return Vec::new();
        };
        let from = index.partition_point(|(k, _)| *k <= after);
        index.range(from..).take(limit).copied().collect()
    }

    /// The journaled deliveries whose records are in `segment`.
    pub(super) fn journaled_in(&self, segment: u32) -> Vec<(Priority, Key, Loc)> {
        let mut found = Vec::new();
        for (l, index) in self.journal.iter().enumerate() {
            let here = index.iter().filter(|(_, loc)| loc.segment == segment);
            found.extend(here.map(|(key, loc)| (priority(l), *key, *loc)));
        }
        found
    }

    /// Takes every journaled delivery that is not leased out of the index, for a purge.
    pub(super) fn unindex_unleased(&mut self) -> Vec<(Priority, Key, Loc)> {
        let mut taken = Vec::new();
        for (l, index) in self.journal.iter_mut().enumerate() {
            index.retain(|(key, loc)| {
                let keep = self.leased.contains_key(&key.1);
                if !keep {
                    taken.push((priority(l), *key, *loc));
                }
                keep
            });
        }
        taken
    }

    /// A leased delivery was acked or dead-lettered (`existed`: its row was still there).
    /// Returns true when it released an ordered successor.
    pub(super) fn removed(&mut self, id: DeliveryId, existed: bool) -> bool {
        self.leased.remove(&id);
        if existed {
            self.depth = self.depth.saturating_sub(1);
        }
        let next = self.order.remove(id);
        if let Some(next) = next {
            self.fetch.push(next);
        }
        next.is_some()
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

    /// Unleased deliveries were purged from disk: forget them and the cache, so the next
    /// lease reads what is left. A purged id leased in the meantime stays leased until its
    /// ack, which then finds no row.
    pub(super) fn purged(&mut self, ids: &[DeliveryId]) {
        self.depth = self.depth.saturating_sub(ids.len());
        for id in ids {
            self.order.remove(*id);
        }
        self.forget();
    }

    /// The deliveries leased now, which a purge must spare.
    pub(super) fn leased_ids(&self) -> Vec<DeliveryId> {
        self.leased.keys().copied().collect()
    }

    fn forget(&mut self) {
        for lane in &mut self.lanes {
            *lane = Lane {
                horizon: NOTHING,
                ..Lane::default()
            };
        }
        self.fetch.clear();
    }
}
