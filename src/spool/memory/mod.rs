//! In-memory spool: for tests and ephemeral runs. Everything queued is lost on exit.
//! Each sink's queue (lanes, ordering, parked deliveries) lives in `queue`.
//!
//! Bounds: stored bytes are counted per delivery (payload plus a fixed overhead) against
//! `max_bytes`; the dead-letter store keeps the newest [`DEAD_LETTERS_MAX`] records; the
//! duplicate-suppression table holds one entry per event accepted within the window.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use super::{
    DeadLetter, DeadLetterId, DeadLetterQuery, DeadLetterRecord, Delivery, NewDelivery, Priority,
    PurgeError, Refusals, Spool, SpoolError, DEFAULT_MAX_BYTES, FULL_RETRY_AFTER,
};
use crate::event::Event;
use dashmap::DashMap;
use queue::{SinkQueue, Take};

mod queue;

/// Most dead letters kept; past it the oldest is dropped (and logged).
const DEAD_LETTERS_MAX: usize = 10_000;
/// Bytes counted per stored delivery besides its payload.
const ENTRY_OVERHEAD: u64 = 256;
/// Fewest entries in the duplicate-suppression table before expired ones are pruned.
const SEEN_PRUNE_MIN: usize = 1024;

/// The in-memory backend.
#[derive(Debug)]
pub struct MemorySpool {
    queues: DashMap<Arc<str>, Arc<SinkQueue>>,
    next_id: AtomicU64,
    max_bytes: u64,
    stored_bytes: AtomicU64,
    refusals: Refusals,
    dead: Mutex<DeadStore>,
    /// (`source`, `id`) to the end of its window. Held across the store of a unique put,
    /// so two identical puts store once.
    seen: Mutex<Seen>,
}

#[derive(Debug, Default)]
struct DeadStore {
    records: BTreeMap<DeadLetterId, DeadLetterRecord>,
    next_id: DeadLetterId,
}

#[derive(Debug, Default)]
struct Seen {
    until: HashMap<(String, String), SystemTime>,
    prune_at: usize,
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

fn size(event: &Event) -> u64 {
    ENTRY_OVERHEAD + event.data.as_ref().map_or(0, |d| d.len() as u64)
}

impl MemorySpool {
    /// An empty spool.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty spool refusing puts past `max_bytes`.
    pub fn bounded(max_bytes: u64) -> Self {
        Self {
            queues: DashMap::new(),
            next_id: AtomicU64::new(0),
            max_bytes,
            stored_bytes: AtomicU64::new(0),
            refusals: Refusals::default(),
            dead: Mutex::default(),
            seen: Mutex::default(),
        }
    }

    /// Bytes stored, as `max_bytes` counts them.
    pub fn stored_bytes(&self) -> u64 {
        self.stored_bytes.load(Ordering::Relaxed)
    }

    /// Takes room for `deliveries`, or refuses them all.
    fn reserve(&self, deliveries: &[NewDelivery]) -> Result<(), SpoolError> {
        let bytes: u64 = deliveries.iter().map(|d| size(&d.event)).sum();
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
        self.queue(&delivery.sink).remove(delivery.id);
        self.free(size(&delivery.event));
    }

    /// Keeps the newest records only: an in-memory store has no disk to spill to.
    fn keep_dead(&self, delivery: &Delivery, info: DeadLetter) {
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
            if let Some((id, _)) = dead.records.pop_first() {
                tracing::warn!(
                    dead_letter = id,
                    "In-memory dead-letter store is full; oldest record dropped"
                );
            }
        }
    }

    /// Drops the deliveries of events seen within `window`; returns how many events.
    fn unseen(seen: &mut Seen, deliveries: &mut Vec<NewDelivery>, window: Duration) -> usize {
        let now = SystemTime::now();
        if seen.until.len() >= seen.prune_at.max(SEEN_PRUNE_MIN) {
            seen.until.retain(|_, until| *until > now);
            seen.prune_at = seen.until.len() * 2;
        }
        let mut verdicts: HashMap<*const Event, bool> = HashMap::new();
        for d in deliveries.iter() {
            verdicts.entry(Arc::as_ptr(&d.event)).or_insert_with(|| {
                let key = (d.event.source.clone(), d.event.id.clone());
                match seen.until.get(&key) {
                    Some(until) if *until > now => false,
                    _ => {
                        seen.until.insert(key, now + window);
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
        verdicts.values().filter(|fresh| !**fresh).count()
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
        self.reserve(&deliveries)?;
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
        self.reserve(&deliveries)?;
        let reserved: u64 = deliveries.iter().map(|d| size(&d.event)).sum();
        let duplicates = Self::unseen(&mut seen, &mut deliveries, window);
        let kept: u64 = deliveries.iter().map(|d| size(&d.event)).sum();
        self.free(reserved - kept);
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
        Ok(dead
            .records
            .range(from..)
            .map(|(_, r)| r)
            .filter(|r| query.matches(r))
            .take(query.limit)
            .cloned()
            .collect())
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
        for record in &selected {
            self.stored_bytes
                .fetch_add(size(&record.event), Ordering::Relaxed);
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
        Ok(lock(&self.dead).records.remove(&id).is_some())
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
