//! In-memory spool: for tests and ephemeral runs. Everything queued is lost on exit.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use dashmap::DashMap;
use tokio::sync::Notify;

use super::{Delivery, NewDelivery, Spool, SpoolError};

/// The in-memory backend.
#[derive(Debug, Default)]
pub struct MemorySpool {
    queues: DashMap<Arc<str>, Arc<SinkQueue>>,
    next_id: AtomicU64,
}

/// One sink's deliveries, ordered by due time then arrival.
#[derive(Debug, Default)]
struct SinkQueue {
    state: Mutex<QueueState>,
    /// Woken when a delivery is queued, so that an idle lease does not poll.
    added: Notify,
}

#[derive(Debug, Default)]
struct QueueState {
    due: BinaryHeap<Reverse<Entry>>,
    leased: usize,
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

impl SinkQueue {
    fn lock(&self) -> MutexGuard<'_, QueueState> {
        // A panic while holding this lock leaves plain data behind; keep serving it.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn push(&self, delivery: Delivery) {
        self.lock().due.push(Reverse(Entry(delivery)));
        self.added.notify_one();
    }
}

impl MemorySpool {
    /// An empty spool.
    pub fn new() -> Self {
        Self::default()
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
            event: d.event,
            route: d.route,
            sink: d.sink,
        };
        self.queue(&delivery.sink).push(delivery);
    }
}

impl Spool for MemorySpool {
    async fn put(&self, deliveries: Vec<NewDelivery>) -> Result<(), SpoolError> {
        for d in deliveries {
            self.store(d);
        }
        Ok(())
    }

    async fn lease(&self, sink: &str, max: usize) -> Result<Vec<Delivery>, SpoolError> {
        let queue = self.queue(sink);
        loop {
            // Register interest before looking, so a push between the look and the wait
            // is not missed.
            let added = queue.added.notified();
            let wait = {
                let mut state = queue.lock();
                let now = SystemTime::now();
                let mut out = Vec::new();
                while out.len() < max.max(1) {
                    match state.due.peek() {
                        Some(Reverse(e)) if e.0.not_before <= now => {}
                        _ => break,
                    }
                    if let Some(Reverse(Entry(d))) = state.due.pop() {
                        out.push(d);
                    }
                }
                if !out.is_empty() {
                    state.leased += out.len();
                    return Ok(out);
                }
                state
                    .due
                    .peek()
                    .map(|Reverse(e)| e.0.not_before.duration_since(now).unwrap_or(Duration::ZERO))
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

    async fn ack(&self, delivery: &Delivery) -> Result<(), SpoolError> {
        let queue = self.queue(&delivery.sink);
        let mut state = queue.lock();
        state.leased = state.leased.saturating_sub(1);
        Ok(())
    }

    async fn nack(&self, mut delivery: Delivery, not_before: SystemTime) -> Result<(), SpoolError> {
        delivery.not_before = not_before;
        let queue = self.queue(&delivery.sink);
        {
            let mut state = queue.lock();
            state.leased = state.leased.saturating_sub(1);
        }
        queue.push(delivery);
        Ok(())
    }

    async fn dead_letter(
        &self,
        delivery: &Delivery,
        forward: Option<NewDelivery>,
    ) -> Result<(), SpoolError> {
        self.ack(delivery).await?;
        if let Some(d) = forward {
            self.store(d);
        }
        Ok(())
    }

    fn depth(&self, sink: &str) -> usize {
        self.queues.get(sink).map_or(0, |q| {
            let state = q.lock();
            state.due.len() + state.leased
        })
    }
}
