//! The spool: where every (event, sink) delivery waits until its sink confirms it or it is
//! dead-lettered.
//!
//! Imports `event`, `config` and `telemetry`; never routing, dispatch or sinks. The accept
//! side calls [`Spool::put`]; the delivery side leases, acks, nacks and dead-letters.
//! Persisted times are wall-clock ([`SystemTime`]) so that they mean the same after a restart.

mod cache;
mod db;
mod embedded;
mod memory;
mod record;
mod writer;

#[cfg(test)]
mod tests;

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::config::{SpoolBackend, SpoolConfig};
use crate::event::Event;

pub use db::OpenError;
pub use embedded::EmbeddedSpool;
pub use memory::MemorySpool;

/// A delivery to be stored: one event for one sink through one route.
#[derive(Debug, Clone)]
pub struct NewDelivery {
    /// The event.
    pub event: Arc<Event>,
    /// The route that matched it.
    pub route: Arc<str>,
    /// The sink to deliver to.
    pub sink: Arc<str>,
    /// When the event was accepted (the TTL is measured from here).
    pub accepted_at: SystemTime,
    /// Earliest time of the first attempt.
    pub not_before: SystemTime,
}

/// Unique id of a stored delivery.
pub type DeliveryId = u64;

/// A stored delivery, as leased to the dispatcher.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// Unique id within this spool.
    pub id: DeliveryId,
    /// The event.
    pub event: Arc<Event>,
    /// The route that matched it.
    pub route: Arc<str>,
    /// The sink to deliver to.
    pub sink: Arc<str>,
    /// Attempts made so far (0 before the first).
    pub attempts: u32,
    /// When the event was accepted (Event Grid's `publishTime`).
    pub accepted_at: SystemTime,
    /// Earliest time of the next attempt.
    pub not_before: SystemTime,
    /// Outcome of the last attempt, in Event Grid's words (`BadRequest`, `TimedOut`, …).
    pub last_outcome: Option<String>,
    /// HTTP status of the last attempt, when there was one.
    pub last_status: Option<u16>,
    /// When the last attempt was made.
    pub last_attempt_at: Option<SystemTime>,
}

/// Why the spool could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// The spool is full; the caller should try again after the given time.
    #[error("spool is full")]
    Full {
        /// Suggested wait before trying again.
        retry_after: Duration,
    },
    /// The spool is shutting down.
    #[error("spool is closed")]
    Closed,
}

/// The queue contract every backend keeps.
pub trait Spool: Send + Sync + 'static {
    /// Stores all the deliveries or none of them; once it returns `Ok` they are kept until
    /// acked or dead-lettered.
    fn put(
        &self,
        deliveries: Vec<NewDelivery>,
    ) -> impl Future<Output = Result<(), SpoolError>> + Send;

    /// Waits until at least one delivery for `sink` is due, then leases up to `max` of them.
    /// Cancel-safe: a lease is taken only when the future completes.
    fn lease(
        &self,
        sink: &str,
        max: usize,
    ) -> impl Future<Output = Result<Vec<Delivery>, SpoolError>> + Send;

    /// The delivery succeeded: forget it.
    fn ack(&self, delivery: &Delivery) -> impl Future<Output = Result<(), SpoolError>> + Send;

    /// The delivery failed and will be retried: keep it (with its updated attempt count and
    /// last outcome) until `not_before`.
    fn nack(
        &self,
        delivery: Delivery,
        not_before: SystemTime,
    ) -> impl Future<Output = Result<(), SpoolError>> + Send;

    /// The delivery will not be retried: remove it and, in the same step, store `forward`
    /// (its dead-letter delivery) when there is one.
    fn dead_letter(
        &self,
        delivery: &Delivery,
        forward: Option<NewDelivery>,
    ) -> impl Future<Output = Result<(), SpoolError>> + Send;

    /// Deliveries stored for `sink` (queued and leased).
    fn depth(&self, sink: &str) -> usize;
}

/// The configured spool backend.
#[derive(Debug)]
pub enum SpoolHandle {
    /// In memory.
    Memory(MemorySpool),
    /// A SQLite file on disk.
    Embedded(EmbeddedSpool),
}

impl SpoolHandle {
    /// Opens the backend the configuration names.
    pub fn open(config: &SpoolConfig) -> Result<Self, OpenError> {
        match config.backend {
            SpoolBackend::Memory => Ok(Self::Memory(MemorySpool::new())),
            SpoolBackend::Embedded => Self::open_embedded(&config.path),
        }
    }

    /// Opens the embedded backend on `<dir>/spool.db`.
    pub fn open_embedded(dir: &Path) -> Result<Self, OpenError> {
        EmbeddedSpool::open(dir).map(Self::Embedded)
    }
}

impl Spool for SpoolHandle {
    async fn put(&self, deliveries: Vec<NewDelivery>) -> Result<(), SpoolError> {
        match self {
            Self::Memory(s) => s.put(deliveries).await,
            Self::Embedded(s) => s.put(deliveries).await,
        }
    }

    async fn lease(&self, sink: &str, max: usize) -> Result<Vec<Delivery>, SpoolError> {
        match self {
            Self::Memory(s) => s.lease(sink, max).await,
            Self::Embedded(s) => s.lease(sink, max).await,
        }
    }

    async fn ack(&self, delivery: &Delivery) -> Result<(), SpoolError> {
        match self {
            Self::Memory(s) => s.ack(delivery).await,
            Self::Embedded(s) => s.ack(delivery).await,
        }
    }

    async fn nack(&self, delivery: Delivery, not_before: SystemTime) -> Result<(), SpoolError> {
        match self {
            Self::Memory(s) => s.nack(delivery, not_before).await,
            Self::Embedded(s) => s.nack(delivery, not_before).await,
        }
    }

    async fn dead_letter(
        &self,
        delivery: &Delivery,
        forward: Option<NewDelivery>,
    ) -> Result<(), SpoolError> {
        match self {
            Self::Memory(s) => s.dead_letter(delivery, forward).await,
            Self::Embedded(s) => s.dead_letter(delivery, forward).await,
        }
    }

    fn depth(&self, sink: &str) -> usize {
        match self {
            Self::Memory(s) => s.depth(sink),
            Self::Embedded(s) => s.depth(sink),
        }
    }
}
