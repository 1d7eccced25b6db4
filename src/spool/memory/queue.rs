//! One sink's queue in the memory backend: a heap per priority lane ordered by (due time,
//! id), the ordering index, and the ordered deliveries parked behind an earlier one.
//!
//! Imports the spool's own types only.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap};
use std::sync::{Mutex, MutexGuard};
use std::time::SystemTime;

use tokio::sync::Notify;

use crate::maps::HashMap;

use super::super::lanes::{lane, LanePicker, OrderIndex, LANES};
use super::super::{Delivery, DeliveryId};

/// One sink's deliveries.
#[derive(Debug, Default)]
pub(super) struct SinkQueue {
    state: Mutex<QueueState>,
    /// Woken when a delivery becomes leasable, so that an idle lease does not poll.
    pub(super) added: Notify,
}

/// The state behind a sink's lock.
#[derive(Debug, Default)]
pub(super) struct QueueState {
    lanes: [BinaryHeap<Reverse<Entry>>; LANES],
    picker: LanePicker,
    order: OrderIndex,
    /// Ordered deliveries waiting for an earlier one of their chain to leave.
    parked: HashMap<DeliveryId, Delivery>,
    leased: usize,
    /// Every stored delivery (queued, parked or leased) by the time it was accepted, so the
    /// oldest is at hand for the backlog-age gauge; a delivery keeps its entry across leases
    /// and retries.
    ages: BTreeSet<(SystemTime, DeliveryId)>,
}

#[derive(Debug)]
struct Entry(Delivery);

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other).is_eq()
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Entry {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.0.not_before, self.0.id).cmp(&(other.0.not_before, other.0.id))
    }
}

/// What a lease attempt found.
pub(super) enum Take {
    /// These deliveries are now leased.
    Leased(Vec<Delivery>),
    /// Nothing is due; the earliest queued delivery is due at this time, if there is one.
    Wait(Option<SystemTime>),
}

impl SinkQueue {
    pub(super) fn lock(&self) -> MutexGuard<'_, QueueState> {
        // A panic while holding this lock leaves plain data behind; keep serving it.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a newly stored delivery.
    pub(super) fn push(&self, delivery: Delivery) {
        {
            let mut state = self.lock();
            let key = delivery.ordering_key.as_ref();
            state.order.add(delivery.id, &delivery.route, key);
            state.ages.insert((delivery.accepted_at, delivery.id));
            state.enqueue(delivery);
        }
        self.added.notify_one();
    }

    /// Queues a nacked or released delivery again (it keeps its place in its chain).
    pub(super) fn requeue(&self, delivery: Delivery) {
        {
            let mut state = self.lock();
            state.leased = state.leased.saturating_sub(1);
            state.enqueue(delivery);
        }
        self.added.notify_one();
    }

    /// Removes every delivery that is not leased and returns them. A leased delivery keeps its
    /// place in its chain; everything behind it was parked, so it goes too.
    pub(super) fn purge(&self) -> Vec<Delivery> {
        let mut guard = self.lock();
        let state = &mut *guard;
        let mut purged: Vec<Delivery> = state.parked.drain().map(|(_, d)| d).collect();
        for heap in &mut state.lanes {
            purged.extend(std::mem::take(heap).into_iter().map(|Reverse(Entry(d))| d));
        }
        for delivery in &purged {
            state.order.remove(delivery.id);
            state.ages.remove(&(delivery.accepted_at, delivery.id));
        }
        purged
    }

    /// Forgets a leased delivery that was acked or dead-lettered, releasing its successor.
    pub(super) fn remove(&self, delivery: &Delivery) {
        let id = delivery.id;
        let released = {
            let mut state = self.lock();
            state.leased = state.leased.saturating_sub(1);
            state.ages.remove(&(delivery.accepted_at, id));
            let next = state.order.remove(id);
            match next.and_then(|next| state.parked.remove(&next)) {
                Some(next) => {
                    state.enqueue(next);
                    true
                }
                None => false,
            }
        };
        if released {
            self.added.notify_one();
        }
    }
}

impl QueueState {
    fn enqueue(&mut self, delivery: Delivery) {
        if !self.order.may_lease(&delivery) {
            self.parked.insert(delivery.id, delivery);
            return;
        }
        if let Some(heap) = self.lanes.get_mut(lane(delivery.priority)) {
            heap.push(Reverse(Entry(delivery)));
        }
    }

    fn due(&self, now: SystemTime) -> [bool; LANES] {
        self.lanes
            .each_ref()
            .map(|heap| heap.peek().is_some_and(|Reverse(e)| e.0.not_before <= now))
    }

    /// Leases up to `max` due deliveries, lane by lane as the picker says.
    pub(super) fn take_due(&mut self, now: SystemTime, max: usize) -> Take {
        let mut out = Vec::new();
        while out.len() < max.max(1) {
            let Some(lane) = self.picker.pick(self.due(now)) else {
                break;
            };
            match self.lanes.get_mut(lane).and_then(BinaryHeap::pop) {
                Some(Reverse(Entry(d))) => out.push(d),
                None => break,
            }
        }
        if !out.is_empty() {
            self.leased += out.len();
            return Take::Leased(out);
        }
        let next = self
            .lanes
            .iter()
            .filter_map(|heap| heap.peek().map(|Reverse(e)| e.0.not_before))
            .min();
        Take::Wait(next)
    }

    /// When the oldest stored delivery (queued, parked or leased) was accepted.
    pub(super) fn oldest(&self) -> Option<SystemTime> {
        self.ages.first().map(|(at, _)| *at)
    }

    /// Deliveries stored: queued, parked and leased.
    pub(super) fn depth(&self) -> usize {
        self.lanes.iter().map(BinaryHeap::len).sum::<usize>() + self.parked.len() + self.leased
    }
}
