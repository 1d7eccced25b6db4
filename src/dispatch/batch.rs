//! Grouping leased deliveries into one request: deliveries of the same route (so the
//! request's `aeg-subscription-name` holds for all), in lease order, up to `max_events` and
//! `max_bytes`. An event larger than `max_bytes` still goes, alone.

use std::collections::VecDeque;

use super::lease::Held;
use crate::config::BatchPolicy;
use crate::event::Event;

/// Takes the next batch from the front of `pending`; `size` is an event's encoded length.
/// Empty only when `pending` is.
pub(super) fn take(
    pending: &mut VecDeque<Held>,
    policy: &BatchPolicy,
    size: impl Fn(&Event) -> usize,
) -> Vec<Held> {
    let Some(first) = pending.pop_front() else {
        return Vec::new();
    };
    if policy.max_events <= 1 {
        return vec![first];
    }
    // A JSON array: brackets, and a comma between events.
    let mut bytes = 2 + size(&first.event);
    let route = first.route.clone();
    let mut batch = vec![first];
    let mut i = 0;
    while i < pending.len() && batch.len() < policy.max_events {
        if pending[i].route != route {
            i += 1;
            continue;
        }
        let more = 1 + size(&pending[i].event);
        if bytes + more > policy.max_bytes {
            break;
        }
        if let Some(delivery) = pending.remove(i) {
            bytes += more;
            batch.push(delivery);
        }
    }
    batch
}
