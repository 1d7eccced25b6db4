//! A value that a reload can replace while readers keep the one they started with.
//!
//! Readers call [`Live::get`] once per unit of work (a request, a lease round) and keep the
//! `Arc` they got, so work in flight finishes under the snapshot it began with.

use std::sync::Arc;

use tokio::sync::watch;

/// The reading side: always the latest published snapshot.
#[derive(Debug)]
pub struct Live<T> {
    rx: watch::Receiver<Arc<T>>,
}

impl<T> Clone for Live<T> {
    fn clone(&self) -> Self {
        Self {
            rx: self.rx.clone(),
        }
    }
}

/// The writing side: publishes a new snapshot to every [`Live`] made from it.
#[derive(Debug)]
pub struct Publisher<T> {
    tx: watch::Sender<Arc<T>>,
}

/// A publisher and a reader, starting with `initial`.
pub fn live<T>(initial: T) -> (Publisher<T>, Live<T>) {
    let (tx, rx) = watch::channel(Arc::new(initial));
    (Publisher { tx }, Live { rx })
}

impl<T> Live<T> {
    /// The current snapshot.
    pub fn get(&self) -> Arc<T> {
        self.rx.borrow().clone()
    }

    /// A reader that never changes (for tests and fixed setups).
    pub fn fixed(value: T) -> Self {
        live(value).1
    }
}

impl<T> Publisher<T> {
    /// Replaces the snapshot; readers see it from their next [`Live::get`].
    pub fn publish(&self, value: Arc<T>) {
        self.tx.send_replace(value);
    }

    /// A new reader of this publisher's snapshots.
    pub fn subscribe(&self) -> Live<T> {
        Live {
            rx: self.tx.subscribe(),
        }
    }
}
