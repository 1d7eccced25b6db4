//! Grouping leased deliveries into one request: deliveries of the same route (so the
//! request's `aeg-subscription-name` holds for all), in lease order, up to `max_events` and
//! `max_bytes`. An event larger than `max_bytes` still goes, alone.

use std::collections::VecDeque;
use std::ops::Deref;

use crate::config::BatchPolicy;
use crate::event::Event;
use crate::sinks::Sink;
use crate::spool::Delivery;

/// Takes the next batch from the front of `pending`; `size` gives an event's encoded length.
/// Empty only when `pending` is.
pub(super) fn take<H: Deref<Target = Delivery>, S: Size + ?Sized>(
    pending: &mut VecDeque<H>,
    policy: &BatchPolicy,
    size: &S,
) -> Vec<H> {
    let Some(first) = pending.pop_front() else {
        return Vec::new();
    };
    if policy.max_events <= 1 {
        return vec![first];
    }
    // A JSON array: brackets, and a comma between events. Upper bounds are added while they
    // fit; the first that would not switches to exact lengths (the batch so far measured
    // again), so the batch ends where exact lengths end it, and a batch well under
    // `max_bytes` (the usual one) is not encoded once more just to be measured.
    let mut exact = false;
    let mut bytes = 2 + size.bound(&first.event);
    let route = first.route.clone();
    let mut batch = vec![first];
    let mut i = 0;
    while i < pending.len() && batch.len() < policy.max_events {
        if pending[i].route != route {
            i += 1;
            continue;
        }
        let event = &pending[i].event;
        let mut more = 1 + if exact {
            size.exact(event)
        } else {
            size.bound(event)
        };
        if !exact && bytes + more > policy.max_bytes {
            exact = true;
            bytes = 1 + batch
                .iter()
                .map(|h| 1 + size.exact(&h.event))
                .sum::<usize>();
            more = 1 + size.exact(event);
        }
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

/// An event's encoded length in a batch: exact, and a cheaper upper bound.
pub(super) trait Size {
    /// The length the event's encoding takes.
    fn exact(&self, event: &Event) -> usize;
    /// At least [`Size::exact`].
    fn bound(&self, event: &Event) -> usize;
}

impl Size for dyn Sink {
    fn exact(&self, event: &Event) -> usize {
        self.encoded_len(event)
    }

    fn bound(&self, event: &Event) -> usize {
        self.encoded_len_bound(event)
    }
}
