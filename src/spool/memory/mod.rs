//! In-memory spool: for tests and ephemeral runs. Everything queued is lost on exit.
//! Each sink's queue (lanes, ordering, parked deliveries) lives in `queue`.
//!
//! Bounds: every delivery, dead letter and duplicate-suppression entry counts its whole size
//! against `max_bytes` (see `bounds`); the dead-letter store keeps the newest
//! [`DEAD_LETTERS_MAX`] records, each until `spool.dead_letter_ttl`; the duplicate-suppression
//! table holds one entry per event accepted within the window, kept in expiry order so that a
//! sweep removes what expired without looking at the rest.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use super::bounds::{event_size, seen_entry_size};
use super::{
    DeadLetter, DeadLetterId, DeadLetterQuery, DeadLetterRecord, Delivery, NewDelivery, Priority,
    PurgeError, Refusals, Spool, SpoolError, Swept, DEFAULT_MAX_BYTES, FULL_RETRY_AFTER,
};
use crate::event::Event;
use crate::maps::DashMap;
use queue::{SinkQueue, Take};

mod queue;

/// Most dead letters kept; past it the oldest is dropped (and logged).
const DEAD_LETTERS_MAX: usize = 10_000;
/// Bytes counted per stored delivery besides its event: the delivery and its queue slot.
const ENTRY_OVERHEAD: u64 = 256;

/// The in-memory backend.
#[derive(Debug)]
pub struct MemorySpool {
    queues: DashMap<Arc<str>, Arc<SinkQueue>>,
    next_id: AtomicU64,
    max_bytes: u64,
    stored_bytes: AtomicU64,
    refusals: Refusals,
    dead: Mutex<DeadStore>,
    /// `spool.dead_letter_ttl`; `None` keeps dead letters.
    dead_letter_ttl: Option<Duration>,
    /// (`source`, `id`) to the end of its window. Held across the store of a unique put,
    /// so two identical puts store once.
    seen: Mutex<Seen>,
}

#[derive(Debug, Default)]
struct DeadStore {
    records: BTreeMap<DeadLetterId, DeadLetterRecord>,
    next_id: DeadLetterId,
}

/// The duplicate-suppression table: each key (`source` and `id`, see [`seen_key`]) to the end
/// of its window, and the keys in the order they were stored, which is the order they expire
/// in while the window stays the same.
#[derive(Debug, Default)]
struct Seen {
    until: HashMap<Arc<str>, SystemTime>,
    order: VecDeque<(SystemTime, Arc<str>)>,
}

/// One string for (`source`, `id`): the source's length, then both, so no two pairs meet.
fn seen_key(event: &Event) -> Arc<str> {
    Arc::from(format!(
        "{}:{}{}",
        event.source.len(),
        event.source,
        event.id
    ))
}

impl Seen {
    /// Forgets the entries expired at `now`; returns how many and the bytes they held.
    ///
    /// Walks the expiry order from its front and stops at the first live entry. An entry
    /// stored again after it expired has a later slot too: its earlier one is skipped.
    fn expire(&mut self, now: SystemTime) -> (u64, u64) {
        let (mut count, mut bytes) = (0, 0);
        while let Some((at, _)) = self.order.front() {
            if *at > now {
                break;
            }
            let Some((at, key)) = self.order.pop_front() else {
                break;
            };
            if self.until.get(&key) == Some(&at) {
                self.until.remove(&key);
                count += 1;
                bytes += seen_entry_size(&key, "");
            }
        }
        (count, bytes)
    }
}

impl Default for MemorySpool {
    fn default() -> Self {
        Self::bounded(DEFAULT_MAX_BYTES)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding this lock leaves plain data behind; keep serving it.
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// Bytes a stored delivery of `event` (or a dead letter of it) is counted at.
fn size(event: &Event) -> u64 {
    ENTRY_OVERHEAD + event_size(event)
}

impl MemorySpool {
    /// An empty spool.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty spool refusing puts past `max_bytes`.
    pub fn bounded(max_bytes: u64) -> Self {
        Self {
            queues: DashMap::default(),
            next_id: AtomicU64::new(0),
            max_bytes,
            stored_bytes: AtomicU64::new(0),
            refusals: Refusals::default(),
            dead: Mutex::default(),
            dead_letter_ttl: None,
            seen: Mutex::default(),
        }
    }

    /// Removes dead letters older than `ttl` at each sweep; `None` (the default) keeps them.
    pub fn dead_letter_ttl(mut self, ttl: Option<Duration>) -> Self {
        self.dead_letter_ttl = ttl;
        self
    }

    /// Bytes stored, as `max_bytes` counts them.
    pub fn stored_bytes(&self) -> u64 {
        self.stored_bytes.load(Ordering::Relaxed)
    }

    /// Takes room for `deliveries` (and `extra` bytes), or refuses them all.
    fn reserve(&self, deliveries: &[NewDelivery], extra: u64) -> Result<(), SpoolError> {
        let bytes: u64 = extra + deliveries.iter().map(|d| size(&d.event)).sum::<u64>();
        let before = self.stored_bytes.fetch_add(bytes, Ordering::Relaxed);
        if before.saturating_add(bytes) > self.max_bytes {
            self.free(bytes);
            self.refusals.refused(bytes);
            return Err(SpoolError::Full {
                retry_after: FULL_RETRY_AFTER,
            });
        }
        self.refusals.taken();
        Ok(())
    }

    fn free(&self, bytes: u64) {
        let _previous = self
            .stored_bytes
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                Some(b.saturating_sub(bytes))
            });
    }

    /// Forgets a leased delivery.
    fn remove(&self, delivery: &Delivery) {
        self.queue(&delivery.sink).remove(delivery);
        self.free(size(&delivery.event));
    }

    /// Keeps the newest records only: an in-memory store has no disk to spill to. The record
    /// counts against `max_bytes` until it is replayed, purged, dropped or expired.
    fn keep_dead(&self, delivery: &Delivery, info: DeadLetter) {
        self.stored_bytes
            .fetch_add(size(&delivery.event), Ordering::Relaxed);
        let mut dead = lock(&self.dead);
        dead.next_id += 1;
        let record = DeadLetterRecord {
            id: dead.next_id,
            event: delivery.event.clone(),
            route: delivery.route.clone(),
            sink: delivery.sink.clone(),
            accepted_at: delivery.accepted_at,
            info,
        };
        dead.records.insert(record.id, record);
        while dead.records.len() > DEAD_LETTERS_MAX {
            if let Some((id, record)) = dead.records.pop_first() {
                self.free(size(&record.event));
                tracing::warn!(
                    dead_letter = id,
                    "In-memory dead-letter store is full; oldest record dropped"
                );
            }
        }
    }

    /// Drops the deliveries of events seen within `window`; returns how many events, and
    /// the bytes of the entries added.
    fn unseen(
        &self,
        seen: &mut Seen,
        deliveries: &mut Vec<NewDelivery>,
        window: Duration,
    ) -> (usize, u64) {
        let now = SystemTime::now();
        // Whatever expired goes first: a cheap look at the front when nothing did.
        let (_, freed) = seen.expire(now);
        self.free(freed);
        let mut added = 0;
        let mut verdicts: HashMap<*const Event, bool> = HashMap::new();
        for d in deliveries.iter() {
            verdicts.entry(Arc::as_ptr(&d.event)).or_insert_with(|| {
                let key = seen_key(&d.event);
                match seen.until.get(&key) {
                    Some(until) if *until > now => false,
                    known => {
                        if known.is_none() {
                            added += seen_entry_size(&key, "");
                        }
                        seen.until.insert(key.clone(), now + window);
                        seen.order.push_back((now + window, key));
                        true
                    }
                }
            });
        }
        deliveries.retain(|d| {
            verdicts
                .get(&Arc::as_ptr(&d.event))
                .copied()
                .unwrap_or(true)
        });
        (verdicts.values().filter(|fresh| !**fresh).count(), added)
    }

    /// Removes dead letters older than the TTL at `now`; returns how many.
    fn expire_dead(&self, now: SystemTime) -> u64 {
        let Some(ttl) = self.dead_letter_ttl else {
            return 0;
        };
        let Some(before) = now.checked_sub(ttl) else {
            return 0;
        };
        let mut dead = lock(&self.dead);
        let expired: Vec<DeadLetterId> = dead
            .records
            .values()
            .filter(|r| r.info.dead_lettered_at <= before)
            .map(|r| r.id)
            .collect();
        for id in &expired {
            if let Some(record) = dead.records.remove(id) {
                self.free(size(&record.event));
            }
        }
        expired.len() as u64
    }

    fn queue(&self, sink: &str) -> Arc<SinkQueue> {
        if let Some(q) = self.queues.get(sink) {
            return q.clone();
        }
        self.queues.entry(Arc::from(sink)).or_default().clone()
    }

    fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed) + 1
    }

    fn store(&self, d: NewDelivery) {
        let delivery = Delivery {
            id: self.next_id(),
            attempts: 0,
            accepted_at: d.accepted_at,
            not_before: d.not_before,
            last_outcome: None,
            last_status: None,
            last_attempt_at: None,
            priority: d.priority,
            ordering_key: d.ordering_key,
            event: d.event,
            route: d.route,
            sink: d.sink,
        };
        self.queue(&delivery.sink).push(delivery);
    }
}

impl Spool for MemorySpool {
    async fn put(&self, deliveries: Vec<NewDelivery>) -> Result<(), SpoolError> {
        self.reserve(&deliveries, 0)?;
        for d in deliveries {
            self.store(d);
        }
        Ok(())
    }

    async fn put_unique(
        &self,
        mut deliveries: Vec<NewDelivery>,
        window: Duration,
    ) -> Result<usize, SpoolError> {
        let mut seen = lock(&self.seen);
        // Room for an entry per delivery (at least one per event): what is not needed is
        // given back below.
        let entries: u64 = deliveries
            .iter()
            .map(|d| seen_entry_size(&d.event.source, &d.event.id) + 8)
            .sum();
        self.reserve(&deliveries, entries)?;
        let reserved: u64 = entries + deliveries.iter().map(|d| size(&d.event)).sum::<u64>();
        let (duplicates, added) = self.unseen(&mut seen, &mut deliveries, window);
        let kept: u64 = added + deliveries.iter().map(|d| size(&d.event)).sum::<u64>();
        self.free(reserved.saturating_sub(kept));
        for d in deliveries {
            self.store(d);
        }
        Ok(duplicates)
    }

    async fn lease(&self, sink: &str, max: usize) -> Result<Vec<Delivery>, SpoolError> {
        let queue = self.queue(sink);
        loop {
            // Register interest before looking, so a push between the look and the wait
            // is not missed.
            let added = queue.added.notified();
            let now = SystemTime::now();
            let take = queue.lock().take_due(now, max);
            let wait = match take {
                Take::Leased(deliveries) => return Ok(deliveries),
                Take::Wait(due) => due.map(|due| due.duration_since(now).unwrap_or(Duration::ZERO)),
            };
            match wait {
                Some(wait) => {
                    tokio::select! {
                        () = added => {}
                        () = tokio::time::sleep(wait) => {}
                    }
                }
                None => added.await,
            }
        }
    }

    fn release(&self, delivery: Delivery) {
        self.queue(&delivery.sink).requeue(delivery);
    }

    fn health(&self) -> Result<(), String> {
        self.refusals.check(self.stored_bytes(), self.max_bytes)
    }

    async fn ack(&self, delivery: &Delivery) -> Result<(), SpoolError> {
        self.remove(delivery);
        Ok(())
    }

    async fn nack(&self, mut delivery: Delivery, not_before: SystemTime) -> Result<(), SpoolError> {
        delivery.not_before = not_before;
        self.queue(&delivery.sink).requeue(delivery);
        Ok(())
    }

    async fn dead_letter(
        &self,
        delivery: &Delivery,
        info: DeadLetter,
        forward: Option<NewDelivery>,
    ) -> Result<(), SpoolError> {
        self.remove(delivery);
        self.keep_dead(delivery, info);
        if let Some(d) = forward {
            // The removal freed at least as much as a forward of the same event needs; a
            // forward is never refused, so a dead letter is never lost to a full spool.
            self.stored_bytes
                .fetch_add(size(&d.event), Ordering::Relaxed);
            self.store(d);
        }
        Ok(())
    }

    async fn dead_letters(
        &self,
        query: &DeadLetterQuery,
    ) -> Result<Vec<DeadLetterRecord>, SpoolError> {
        let dead = lock(&self.dead);
        let from = query.after.map_or(0, |a| a.saturating_add(1));
        let mut out = Vec::new();
        let mut bytes = 0;
        let selected = dead.records.range(from..).map(|(_, r)| r);
        for record in selected.filter(|r| query.matches(r)) {
            if !query.wants_more(out.len(), bytes) {
                break;
            }
            bytes += event_size(&record.event);
            out.push(record.clone());
        }
        Ok(out)
    }

    async fn replay_dead_letters(&self, query: &DeadLetterQuery) -> Result<usize, SpoolError> {
        let selected = {
            let mut dead = lock(&self.dead);
            let ids: Vec<DeadLetterId> = dead
                .records
                .values()
                .filter(|r| query.matches(r))
                .take(query.limit)
                .map(|r| r.id)
                .collect();
            ids.iter()
                .filter_map(|id| dead.records.remove(id))
                .collect::<Vec<_>>()
        };
        let now = SystemTime::now();
        // Each record's bytes stay counted, now for its delivery.
        for record in &selected {
            self.store(NewDelivery {
                event: record.event.clone(),
                route: record.route.clone(),
                sink: record.sink.clone(),
                accepted_at: now,
                not_before: now,
                priority: Priority::default(),
                ordering_key: None,
            });
        }
        Ok(selected.len())
    }

    async fn purge_dead_letter(&self, id: DeadLetterId) -> Result<bool, SpoolError> {
        let removed = lock(&self.dead).records.remove(&id);
        if let Some(record) = &removed {
            self.free(size(&record.event));
        }
        Ok(removed.is_some())
    }

    async fn sweep(&self, now: SystemTime) -> Result<Swept, SpoolError> {
        let (sightings, freed) = lock(&self.seen).expire(now);
        self.free(freed);
        let dead_letters = self.expire_dead(now);
        Ok(Swept {
            sightings,
            dead_letters,
        })
    }

    fn dedup_entries(&self) -> u64 {
        lock(&self.seen).until.len() as u64
    }

    async fn purge_sink(&self, sink: &str) -> Result<usize, PurgeError> {
        let Some(queue) = self.queues.get(sink).map(|q| q.clone()) else {
            return Ok(0);
        };
        let purged = queue.purge();
        self.free(purged.iter().map(|d| size(&d.event)).sum());
        Ok(purged.len())
    }

    fn depth(&self, sink: &str) -> usize {
        self.queues.get(sink).map_or(0, |q| q.lock().depth())
    }

    fn oldest(&self, sink: &str) -> Option<SystemTime> {
        self.queues.get(sink)?.lock().oldest()
    }

    fn tells_oldest(&self) -> bool {
        true
    }

    fn used_bytes(&self) -> Option<u64> {
        Some(self.stored_bytes())
    }

    fn sink_depths(&self) -> Vec<(String, usize)> {
        let mut depths: Vec<(String, usize)> = self
            .queues
            .iter()
            .map(|q| (q.key().to_string(), self.depth(q.key())))
            .filter(|(_, depth)| *depth > 0)
            .collect();
        depths.sort();
        depths
    }
}
