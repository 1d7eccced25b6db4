//! Depths per sink for the synchronous [`crate::spool::Spool::depth`]: adjusted at once by
//! this instance's own puts, acks and dead letters, and corrected in the background from
//! JetStream's consumer state (which also sees the other instances' work).

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

/// One sink's depth and how many local changes it has seen.
#[derive(Debug, Default, Clone, Copy)]
struct Depth {
    count: i64,
    changes: u64,
}

/// Depths by sink name.
#[derive(Debug, Default)]
pub(super) struct Depths {
    sinks: Mutex<HashMap<String, Depth>>,
}

impl Depths {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Depth>> {
        // Plain counters: a panic elsewhere leaves them usable.
        self.sinks.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Applies a local change.
    pub(super) fn add(&self, sink: &str, delta: i64) {
        let mut sinks = self.lock();
        let depth = sinks.entry(sink.to_owned()).or_default();
        depth.count = (depth.count + delta).max(0);
        depth.changes += 1;
    }

    /// The local change counters, taken before asking JetStream.
    pub(super) fn changes(&self) -> HashMap<String, u64> {
        self.lock()
            .iter()
            .map(|(sink, d)| (sink.clone(), d.changes))
            .collect()
    }

    /// Takes JetStream's depths, except for sinks changed locally since `before` (their
    /// observed value may predate the change).
    pub(super) fn observed(&self, before: &HashMap<String, u64>, seen: Vec<(String, u64)>) {
        let mut sinks = self.lock();
        for (sink, count) in seen {
            let depth = sinks.entry(sink.clone()).or_default();
            if before.get(&sink).copied().unwrap_or(0) == depth.changes {
                depth.count = i64::try_from(count).unwrap_or(i64::MAX);
            }
        }
    }

    /// One sink's depth.
    pub(super) fn get(&self, sink: &str) -> usize {
        self.lock()
            .get(sink)
            .map_or(0, |d| usize::try_from(d.count).unwrap_or(0))
    }

    /// Every sink with a depth above zero, by name.
    pub(super) fn all(&self) -> Vec<(String, usize)> {
        let mut all: Vec<(String, usize)> = self
            .lock()
            .iter()
            .filter(|(_, d)| d.count > 0)
            .map(|(sink, d)| (sink.clone(), usize::try_from(d.count).unwrap_or(0)))
            .collect();
        all.sort();
        all
    }
}
