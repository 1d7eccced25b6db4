//! Each daemon's view of every instance in the bucket, kept up to date by a watch on the
//! bucket (and by its own writes, at once): listings, deadlines, pending transitions, the
//! active gauges and retention read it instead of scanning the bucket. It holds no steps.
//!
//! It is a view, never the authority: every transition reads its instance from the bucket
//! and writes it back with compare-and-set, so a view that lags only delays a sweep.

use std::collections::HashMap;
use std::sync::Mutex;

use super::super::{InstanceQuery, InstanceView, State};
use super::record::Record;

/// An instance's summary and the revision it was read at.
#[derive(Debug)]
struct Entry {
    revision: u64,
    view: InstanceView,
    deadline: i64,
    pending_at: Option<i64>,
    finished: Option<i64>,
}

/// Instances by id.
#[derive(Debug, Default)]
pub(super) struct Index {
    entries: Mutex<HashMap<String, Entry>>,
}

impl Index {
    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        // Nothing here can panic half-way through an update; a poisoned lock is safe to take.
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes `record` at `revision` unless a later revision is known.
    pub(super) fn put(&self, revision: u64, record: &Record) {
        let mut entries = self.entries();
        if entries
            .get(&record.inst.id)
            .is_some_and(|e| e.revision >= revision)
        {
            return;
        }
        let entry = Entry {
            revision,
            view: record.view(false),
            deadline: record.deadline,
            pending_at: record.pending_at,
            finished: record.finished,
        };
        entries.insert(record.inst.id.clone(), entry);
    }

    /// Forgets `id` (deleted at `revision`) unless a later revision is known.
    pub(super) fn remove(&self, id: &str, revision: u64) {
        let mut entries = self.entries();
        if entries.get(id).is_some_and(|e| e.revision < revision) {
            entries.remove(id);
        }
    }

    /// Instances the query selects, oldest first.
    pub(super) fn list(&self, q: &InstanceQuery) -> Vec<InstanceView> {
        let entries = self.entries();
        let since = q.since.map(super::super::millis);
        let mut found: Vec<&InstanceView> = entries
            .values()
            .map(|e| &e.view)
            .filter(|v| v.cursor > q.after.unwrap_or(0))
            .filter(|v| q.saga.as_ref().is_none_or(|s| *s == v.saga))
            .filter(|v| q.state.is_none_or(|s| s == v.state))
            .filter(|v| since.is_none_or(|t| super::super::millis(v.started_at) >= t))
            .collect();
        found.sort_by_key(|v| v.cursor);
        found.into_iter().take(q.limit).cloned().collect()
    }

    /// Running instances whose deadline is at or before `now` (ms).
    pub(super) fn due(&self, now: i64) -> Vec<String> {
        let entries = self.entries();
        let due = entries
            .iter()
            .filter(|(_, e)| running(e) && e.deadline <= now);
        due.map(|(id, _)| id.clone()).collect()
    }

    /// The earliest deadline of a running instance (ms).
    pub(super) fn next_deadline(&self) -> Option<i64> {
        let entries = self.entries();
        let deadlines = entries.values().filter(|e| running(e));
        deadlines.map(|e| e.deadline).min()
    }

    /// Instances whose pending transition was recorded or claimed at or before `before` (ms).
    pub(super) fn stranded(&self, before: i64) -> Vec<String> {
        let entries = self.entries();
        let old = entries
            .iter()
            .filter(|(_, e)| e.pending_at.is_some_and(|at| at <= before));
        old.map(|(id, _)| id.clone()).collect()
    }

    /// (id, revision) of instances that ended before `cutoff` (ms).
    pub(super) fn ended_before(&self, cutoff: i64) -> Vec<(String, u64)> {
        let entries = self.entries();
        let old = entries
            .iter()
            .filter(|(_, e)| e.finished.is_some_and(|at| at < cutoff));
        old.map(|(id, e)| (id.clone(), e.revision)).collect()
    }

    /// Running or compensating instances per saga.
    pub(super) fn active(&self) -> Vec<(String, u64)> {
        let mut counts: HashMap<String, u64> = HashMap::new();
        for e in self.entries().values() {
            let count = counts.entry(e.view.saga.clone()).or_default();
            *count += u64::from(!e.view.state.is_final());
        }
        counts.into_iter().collect()
    }
}

fn running(e: &Entry) -> bool {
    e.view.state == State::Running
}
