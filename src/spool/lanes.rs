//! Lease order shared by the spool backends: priority lanes with a starvation bound, and the
//! per-subject ordering index.
//!
//! Imports the spool's own types only.
//!
//! Lanes: a lease takes from the highest lane (high, normal, low) with due work, except that
//! a lower lane with due work is passed over at most [`PASS_LIMIT`] leases in a row (normal
//! 2, low 6). With every lane backlogged, high, normal and low get 4:2:1 of the leases; a new
//! high delivery waits behind at most one starved normal and one starved low lease.
//!
//! Ordering: among the stored deliveries of one sink with the same (route, ordering key), only
//! the one with the lowest id may be leased. It stays first while leased or waiting for a
//! retry, so its successors wait until it is acked or dead-lettered.

use std::collections::BTreeSet;
use std::sync::Arc;

use crate::maps::HashMap;

use super::{Delivery, DeliveryId, Priority};

/// Number of lanes, one per [`Priority`].
pub(super) const LANES: usize = Priority::ALL.len();

/// Leases a lane with due work may be passed over in a row, by lane (high is never passed
/// over for starvation, only for a starved lower lane).
const PASS_LIMIT: [u32; LANES] = [u32::MAX, 2, 6];

/// The lane index of a priority (0 is leased first).
pub(super) fn lane(priority: Priority) -> usize {
    priority as usize
}

/// The priority of a lane index; anything past the last lane reads as low.
pub(super) fn priority(lane: usize) -> Priority {
    Priority::ALL.get(lane).copied().unwrap_or(Priority::Low)
}

/// Chooses the lane of each lease of one sink.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct LanePicker {
    /// Leases in a row that went elsewhere while the lane had due work.
    passed: [u32; LANES],
}

impl LanePicker {
    /// Chooses the lane of the next lease among those with due work, and counts the choice.
    pub(super) fn pick(&mut self, due: [bool; LANES]) -> Option<usize> {
        let starved = (1..LANES)
            .rev()
            .find(|&l| due[l] && self.passed[l] >= PASS_LIMIT[l]);
        let chosen = starved.or_else(|| (0..LANES).find(|&l| due[l]))?;
        for (l, passed) in self.passed.iter_mut().enumerate() {
            // A lane without due work is not waiting: its count starts over.
            *passed = match due[l] && l != chosen {
                true => passed.saturating_add(1),
                false => 0,
            };
        }
        Some(chosen)
    }
}

/// A chain of ordered deliveries: (route, ordering key).
type Chain = (Arc<str>, Arc<str>);

/// One sink's stored deliveries that keep an order, by chain, in id order.
#[derive(Debug, Default)]
pub(super) struct OrderIndex {
    chains: HashMap<Chain, BTreeSet<DeliveryId>>,
    members: HashMap<DeliveryId, Chain>,
}

impl OrderIndex {
    /// Records a stored delivery (unordered ones are ignored).
    pub(super) fn add(&mut self, id: DeliveryId, route: &Arc<str>, key: Option<&Arc<str>>) {
        let Some(key) = key else { return };
        let chain = (route.clone(), key.clone());
        self.chains.entry(chain.clone()).or_default().insert(id);
        self.members.insert(id, chain);
    }

    /// True when the delivery may be leased: it is unordered, or the first of its chain.
    /// An ordered delivery the index does not know yet may not.
    pub(super) fn may_lease(&self, delivery: &Delivery) -> bool {
        if delivery.ordering_key.is_none() {
            return true;
        }
        self.members
            .get(&delivery.id)
            .and_then(|chain| self.chains.get(chain))
            .and_then(|ids| ids.first())
            .is_some_and(|first| *first == delivery.id)
    }

    /// Forgets a delivery that left the spool; returns the id that became first of its
    /// chain because of it, if any.
    pub(super) fn remove(&mut self, id: DeliveryId) -> Option<DeliveryId> {
        let chain = self.members.remove(&id)?;
        let ids = self.chains.get_mut(&chain)?;
        let was_first = ids.first() == Some(&id);
        ids.remove(&id);
        let next = ids.first().copied();
        if ids.is_empty() {
            self.chains.remove(&chain);
        }
        next.filter(|_| was_first)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lone_lane_takes_every_lease_and_high_comes_first() {
        let mut picker = LanePicker::default();
        for _ in 0..100 {
            assert_eq!(picker.pick([false, false, true]), Some(2));
        }
        assert_eq!(picker.pick([true, false, true]), Some(0));
        assert_eq!(picker.pick([false, false, false]), None);
    }

    #[test]
    fn backlogged_lanes_share_four_two_one() {
        let mut picker = LanePicker::default();
        let mut counts = [0; LANES];
        let mut low_gap = 0;
        let mut worst_gap = 0;
        for _ in 0..700 {
            let lane = picker.pick([true; LANES]).expect("a lane is due");
            counts[lane] += 1;
            low_gap = if lane == 2 { 0 } else { low_gap + 1 };
            worst_gap = worst_gap.max(low_gap);
        }
        assert_eq!(counts, [400, 200, 100]);
        assert!(worst_gap <= 7, "low waited {worst_gap} leases");
    }
}
