//! Batches end where exact encoded lengths end them, whether or not a cheaper upper bound
//! is added up first.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use proptest::prelude::*;

use crate::config::BatchPolicy;
use crate::dispatch::batch::{take, Size};
use crate::event::prop_tests::config;
use crate::event::Event;
use crate::sinks::tests::support::event;
use crate::spool::Delivery;

/// An event's length is its payload's; the bound adds `slack` per byte and a constant.
struct Lengths {
    slack: usize,
}

impl Size for Lengths {
    fn exact(&self, event: &Event) -> usize {
        event.data.as_ref().map_or(0, Bytes::len)
    }

    fn bound(&self, event: &Event) -> usize {
        self.exact(event) * (1 + self.slack) + self.slack
    }
}

fn delivery(id: u64, route: &str, len: usize) -> Box<Delivery> {
    let mut event = event(&id.to_string());
    event.data = Some(Bytes::from(vec![b'x'; len]));
    Box::new(Delivery {
        id,
        event: Arc::new(event),
        route: Arc::from(route),
        sink: Arc::from("s"),
        attempts: 0,
        accepted_at: SystemTime::UNIX_EPOCH,
        not_before: SystemTime::UNIX_EPOCH,
        last_outcome: None,
        last_status: None,
        last_attempt_at: None,
        priority: Default::default(),
        ordering_key: None,
    })
}

/// Every batch `take` makes of `pending`, as lists of ids.
fn batches(pending: &[(bool, usize)], policy: &BatchPolicy, size: &Lengths) -> Vec<Vec<u64>> {
    let mut queue: VecDeque<Box<Delivery>> = (0u64..)
        .zip(pending)
        .map(|(id, &(second, len))| delivery(id, if second { "b" } else { "a" }, len))
        .collect();
    let mut out = Vec::new();
    loop {
        let batch = take(&mut queue, policy, size);
        if batch.is_empty() {
            return out;
        }
        out.push(batch.iter().map(|d| d.id).collect());
    }
}

proptest! {
    #![proptest_config(config(256))]

    /// Adding up bounds first changes no batch; and every batch of more than one event fits
    /// `max_bytes` as a JSON array (brackets and commas counted).
    #[test]
    fn bounds_first_end_batches_where_exact_lengths_do(
        pending in proptest::collection::vec((any::<bool>(), 0usize..400), 0..40),
        max_events in 1usize..12,
        max_bytes in 1usize..3000,
        slack in 1usize..4,
    ) {
        let policy = BatchPolicy { max_events, max_bytes, ..BatchPolicy::default() };
        let exact = batches(&pending, &policy, &Lengths { slack: 0 });
        let bounded = batches(&pending, &policy, &Lengths { slack });
        prop_assert_eq!(&bounded, &exact);
        for batch in exact.iter().filter(|b| b.len() > 1) {
            let bytes: usize = batch.iter().map(|&id| pending[id as usize].1 + 1).sum::<usize>() + 1;
            prop_assert!(bytes <= max_bytes, "{batch:?} takes {bytes} bytes");
            prop_assert!(batch.len() <= max_events);
        }
    }
}
