//! The spool: where every (event, sink) delivery waits until its sink confirms it or it is
//! dead-lettered.
//!
//! Imports `event`, `config` and `telemetry`; never routing, dispatch or sinks. The accept
//! side calls [`Spool::put`]; the delivery side leases, acks, nacks and dead-letters, and
//! releases what it leased and will not attempt.
//! Persisted times are wall-clock ([`SystemTime`]) so that they mean the same after a restart.

mod bounds;
mod cache;
mod checkpoint;
mod db;
mod dead_letter;
mod disk;
mod embedded;
#[doc(hidden)]
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
mod journal;
mod lanes;
mod letters;
mod memory;
mod nats;
mod record;
mod repair;
mod retained;
mod rows;
mod space;
mod writer;

#[cfg(test)]
pub(crate) mod tests;

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

pub use crate::config::Priority;
use crate::config::{SpoolBackend, SpoolConfig};
use crate::event::Event;

pub use bounds::{event_size, sweep_until, Swept, SWEEP_EVERY};
pub use db::OpenError;
pub use dead_letter::{
    DeadLetter, DeadLetterId, DeadLetterQuery, DeadLetterRecord, MAX_QUERY_LIMIT,
};
pub use disk::DiskUsage;
pub use embedded::EmbeddedSpool;
pub use memory::MemorySpool;
pub(crate) use nats::connect as nats_context;
pub use nats::NatsSpool;
pub use repair::{
    repair, verify, DatabaseState, MaintenanceError, Repair, SegmentState, Verification,
};
pub use retained::{
    ReplayError, ReplayFilter, ReplayRequest, ReplayState, ReplayStatus, RetainError, Retained,
    REPLAY_EXTENSION,
};

/// Default bound on stored event bytes (`spool.max_bytes`): 1 GiB.
pub const DEFAULT_MAX_BYTES: u64 = 1 << 30;

/// The system call the bundled SQLite commits `spool.db` with: `fdatasync` when it was built
/// with `LIBSQLITE3_FLAGS=-DHAVE_FDATASYNC=1` (the repository's `.cargo/config.toml`), `fsync`
/// otherwise — as durable, but each commit also writes the inode's timestamps (see `build.rs`).
pub const SQLITE_SYNC: &str = env!("SWITCHYARD_SQLITE_SYNC");

/// Wait suggested to senders while the spool is over `max_bytes`.
pub(crate) const FULL_RETRY_AFTER: Duration = Duration::from_secs(5);

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
    /// The lane it waits in at its sink.
    pub priority: Priority,
    /// With `ordering: subject`, the event's subject: among the deliveries with the same
    /// (sink, route, key), one is leased at a time, in id order. `None` is unordered.
    pub ordering_key: Option<Arc<str>>,
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
    /// The lane it waits in at its sink.
    pub priority: Priority,
    /// Its ordering key (see [`NewDelivery::ordering_key`]).
    pub ordering_key: Option<Arc<str>>,
}

impl Delivery {
    /// A delivery as a backend stores it: its new id, no attempts yet, and its times as they
    /// read back from disk (whole milliseconds).
    pub(crate) fn stored(id: DeliveryId, new: &NewDelivery) -> Self {
        Self {
            id,
            event: new.event.clone(),
            route: new.route.clone(),
            sink: new.sink.clone(),
            attempts: 0,
            accepted_at: record::round_millis(new.accepted_at),
            not_before: record::round_millis(new.not_before),
            last_outcome: None,
            last_status: None,
            last_attempt_at: None,
            priority: new.priority,
            ordering_key: new.ordering_key.clone(),
        }
    }
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
    /// The spool's store cannot be reached (a NATS server down or cut off); the caller
    /// should try again after the given time.
    #[error("{store} unreachable")]
    Unreachable {
        /// What cannot be reached, e.g. "NATS".
        store: &'static str,
        /// Suggested wait before trying again.
        retry_after: Duration,
    },
    /// The spool is shutting down.
    #[error("spool is closed")]
    Closed,
}

/// Why a sink's stored deliveries could not be purged.
///
/// Kept apart from [`SpoolError`]: the accept and delivery paths handle every spool error, and
/// none of them can meet this one.
#[derive(Debug, thiserror::Error)]
pub enum PurgeError {
    /// This backend cannot remove one sink's deliveries.
    #[error("purging a sink's deliveries is not supported by this spool backend")]
    Unsupported,
    /// The spool failed.
    #[error(transparent)]
    Spool(#[from] SpoolError),
}

/// Remembers the last put refused for want of room under `max_bytes`, so that readiness can
/// say the spool refuses puts until that put would fit again.
#[derive(Debug, Default)]
pub(crate) struct Refusals {
    /// Bytes of the last refused put; 0 when the last put was taken.
    need: std::sync::atomic::AtomicU64,
}

impl Refusals {
    /// A put of `bytes` was refused as full.
    pub(crate) fn refused(&self, bytes: u64) {
        self.need
            .store(bytes.max(1), std::sync::atomic::Ordering::Relaxed);
    }

    /// A put was stored.
    pub(crate) fn taken(&self) {
        self.need.store(0, std::sync::atomic::Ordering::Relaxed);
    }

    /// Err while the last refused put would still not fit beside `stored` bytes.
    pub(crate) fn check(&self, stored: u64, max: u64) -> Result<(), String> {
        let need = self.need.load(std::sync::atomic::Ordering::Relaxed);
        if need > 0 && stored.saturating_add(need) > max {
            return Err(format!(
                "spool is full: {stored} of {max} bytes (spool.max_bytes) stored; puts are refused"
            ));
        }
        Ok(())
    }
}

/// The queue contract every backend keeps.
pub trait Spool: Send + Sync + 'static {
    /// Stores all the deliveries or none of them; once it returns `Ok` they are kept until
    /// acked or dead-lettered. Dropping the future part-way stores all or none of them too
    /// (an HTTP request whose client hung up is dropped), so callers need no task of their own.
    fn put(
        &self,
        deliveries: Vec<NewDelivery>,
    ) -> impl Future<Output = Result<(), SpoolError>> + Send;

    /// Waits until at least one delivery for `sink` is due, then leases up to `max` of them.
    /// Cancel-safe: a lease is taken only when the future completes.
    ///
    /// Order: by priority lane with a starvation bound (see `lanes`), then `not_before`,
    /// then id. A delivery with an ordering key is not leased while an earlier one with the
    /// same (sink, route, key) is still stored, leased or waiting for a retry.
    fn lease(
        &self,
        sink: &str,
        max: usize,
    ) -> impl Future<Output = Result<Vec<Delivery>, SpoolError>> + Send;

    /// Hands back a leased delivery that was not attempted: it is leasable again at once, with
    /// its attempt count, `not_before` and place in its ordered chain unchanged (unlike
    /// [`Spool::nack`], nothing about it is recorded). Never waits, so that a guard's `Drop`
    /// can call it; a backend that must talk to a server does so in the background.
    fn release(&self, delivery: Delivery);

    /// Whether the spool can take and hand out work now; `Err` says why not (readiness).
    fn health(&self) -> Result<(), String>;

    /// The delivery succeeded: forget it.
    fn ack(&self, delivery: &Delivery) -> impl Future<Output = Result<(), SpoolError>> + Send;

    /// The delivery failed and will be retried: keep it (with its updated attempt count and
    /// last outcome) until `not_before`.
    fn nack(
        &self,
        delivery: Delivery,
        not_before: SystemTime,
    ) -> impl Future<Output = Result<(), SpoolError>> + Send;

    /// The delivery will not be retried: remove it and, in the same step, keep it in the
    /// dead-letter store with `info` and store `forward` (its dead-letter delivery) when there
    /// is one.
    fn dead_letter(
        &self,
        delivery: &Delivery,
        info: DeadLetter,
        forward: Option<NewDelivery>,
    ) -> impl Future<Output = Result<(), SpoolError>> + Send;

    /// Like [`Spool::put`], but drops the deliveries of every event whose (`source`, `id`) was
    /// stored within `window`; the check and the store are one step. Returns how many events
    /// were dropped as duplicates.
    fn put_unique(
        &self,
        deliveries: Vec<NewDelivery>,
        window: Duration,
    ) -> impl Future<Output = Result<usize, SpoolError>> + Send;

    /// Dead letters the query selects, in id order.
    fn dead_letters(
        &self,
        query: &DeadLetterQuery,
    ) -> impl Future<Output = Result<Vec<DeadLetterRecord>, SpoolError>> + Send;

    /// Queues the selected dead letters again for their sinks, with no attempts and a fresh
    /// TTL, removing them from the dead-letter store in the same step. Returns how many.
    fn replay_dead_letters(
        &self,
        query: &DeadLetterQuery,
    ) -> impl Future<Output = Result<usize, SpoolError>> + Send;

    /// Deletes one dead letter; `false` when there was none with that id.
    fn purge_dead_letter(
        &self,
        id: DeadLetterId,
    ) -> impl Future<Output = Result<bool, SpoolError>> + Send;

    /// Removes every stored delivery of `sink` that is not leased (queued, parked behind an
    /// ordered predecessor or waiting for a retry), with each event no delivery or dead letter
    /// refers to any more; returns how many deliveries. Meant for the deliveries of a sink the
    /// configuration no longer names. Backends that cannot do it refuse with
    /// [`PurgeError::Unsupported`]; the `nats` backend cannot spare leased deliveries and
    /// removes and counts them too.
    fn purge_sink(&self, sink: &str) -> impl Future<Output = Result<usize, PurgeError>> + Send {
        let _ = sink;
        std::future::ready(Err(PurgeError::Unsupported))
    }

    /// Removes, as of `now`, every duplicate-suppression entry whose window has ended and
    /// every dead letter older than `spool.dead_letter_ttl`, with the bytes they held.
    /// Called every [`SWEEP_EVERY`] by [`sweep_until`], whatever the traffic.
    fn sweep(&self, now: SystemTime) -> impl Future<Output = Result<Swept, SpoolError>> + Send {
        let _ = now;
        std::future::ready(Ok(Swept::default()))
    }

    /// Entries in the duplicate-suppression table, expired ones not yet swept included.
    fn dedup_entries(&self) -> u64 {
        0
    }

    /// Deliveries stored for `sink` (queued and leased).
    fn depth(&self, sink: &str) -> usize;

    /// Every sink with stored deliveries, with its depth, by name.
    fn sink_depths(&self) -> Vec<(String, usize)>;

    /// When the oldest delivery stored for `sink` (queued, leased or waiting for a retry) was
    /// accepted; `None` when none is stored or the backend cannot tell cheaply. Read at each
    /// metrics scrape, so a backend answers from what it keeps at hand.
    fn oldest(&self, sink: &str) -> Option<SystemTime> {
        let _ = sink;
        None
    }

    /// Whether [`Spool::oldest`] answers for this backend (a `None` from it then means that
    /// nothing is stored).
    fn tells_oldest(&self) -> bool {
        false
    }

    /// Bytes stored as `spool.max_bytes` counts them; `None` when the backend cannot tell.
    fn used_bytes(&self) -> Option<u64> {
        None
    }
}

/// The configured spool backend.
#[derive(Debug)]
pub enum SpoolHandle {
    /// In memory.
    Memory(MemorySpool),
    /// On disk: a journal and a SQLite file.
    Embedded(EmbeddedSpool),
    /// NATS JetStream, shared with other instances.
    Nats(NatsSpool),
}

impl SpoolHandle {
    /// Opens the backend the configuration names.
    pub fn open(config: &SpoolConfig) -> Result<Self, OpenError> {
        match config.backend {
            SpoolBackend::Memory => Ok(Self::Memory(
                MemorySpool::bounded(config.max_bytes).dead_letter_ttl(config.dead_letter_ttl),
            )),
            SpoolBackend::Embedded => EmbeddedSpool::open_bounded(&config.path, config.max_bytes)
                .map(|s| Self::Embedded(s.dead_letter_ttl(config.dead_letter_ttl))),
            SpoolBackend::Nats => Ok(Self::Nats(NatsSpool::open(config))),
        }
    }

    /// True when queued events stay in this process's memory until delivered (the memory
    /// spool); the other backends copy them into their store.
    pub fn keeps_events(&self) -> bool {
        matches!(self, Self::Memory(_))
    }

    /// How full the filesystem holding the spool is; `None` for backends that keep nothing
    /// on this machine's disk (memory, nats) or when the filesystem cannot be asked.
    pub fn disk_usage(&self) -> Option<DiskUsage> {
        match self {
            Self::Embedded(s) => DiskUsage::of(s.path().parent()?),
            Self::Memory(_) | Self::Nats(_) => None,
        }
    }

    /// True when every lease is a round trip to a server (nats): a worker leases ahead of its
    /// free permits there, so that most of its steps find their deliveries already in hand.
    pub fn leases_cost_a_round_trip(&self) -> bool {
        matches!(self, Self::Nats(_))
    }

    /// Opens the embedded backend in `<dir>` (`journal/` and `spool.db`).
    pub fn open_embedded(dir: &Path) -> Result<Self, OpenError> {
        EmbeddedSpool::open(dir).map(Self::Embedded)
    }

    /// The record with this id, if it is stored.
    pub async fn dead_letter_record(
        &self,
        id: DeadLetterId,
    ) -> Result<Option<DeadLetterRecord>, SpoolError> {
        let query = DeadLetterQuery {
            id: Some(id),
            limit: 1,
            ..DeadLetterQuery::default()
        };
        Ok(self.dead_letters(&query).await?.pop())
    }
}

/// Calls the same method on whichever backend the handle holds.
macro_rules! each_backend {
    ($self:ident, $s:ident => $call:expr) => {
        match $self {
            Self::Memory($s) => $call,
            Self::Embedded($s) => $call,
            Self::Nats($s) => $call,
        }
    };
    // For the calls on a delivery's or a request's path: the nats backend's futures are
    // boxed, so that they do not make every caller's future as large as theirs.
    (boxed_nats $self:ident, $s:ident => $call:expr) => {
        match $self {
            Self::Memory($s) => $call,
            Self::Embedded($s) => $call,
            Self::Nats($s) => Box::pin(async move { $call }).await,
        }
    };
}

impl Spool for SpoolHandle {
    async fn put(&self, deliveries: Vec<NewDelivery>) -> Result<(), SpoolError> {
        each_backend!(boxed_nats self, s => s.put(deliveries).await)
    }

    async fn lease(&self, sink: &str, max: usize) -> Result<Vec<Delivery>, SpoolError> {
        each_backend!(boxed_nats self, s => s.lease(sink, max).await)
    }

    async fn ack(&self, delivery: &Delivery) -> Result<(), SpoolError> {
        each_backend!(boxed_nats self, s => s.ack(delivery).await)
    }

    async fn nack(&self, delivery: Delivery, not_before: SystemTime) -> Result<(), SpoolError> {
        each_backend!(boxed_nats self, s => s.nack(delivery, not_before).await)
    }

    async fn dead_letter(
        &self,
        delivery: &Delivery,
        info: DeadLetter,
        forward: Option<NewDelivery>,
    ) -> Result<(), SpoolError> {
        each_backend!(boxed_nats self, s => s.dead_letter(delivery, info, forward).await)
    }

    async fn put_unique(
        &self,
        deliveries: Vec<NewDelivery>,
        window: Duration,
    ) -> Result<usize, SpoolError> {
        each_backend!(boxed_nats self, s => s.put_unique(deliveries, window).await)
    }

    async fn dead_letters(
        &self,
        query: &DeadLetterQuery,
    ) -> Result<Vec<DeadLetterRecord>, SpoolError> {
        each_backend!(self, s => s.dead_letters(query).await)
    }

    async fn replay_dead_letters(&self, query: &DeadLetterQuery) -> Result<usize, SpoolError> {
        each_backend!(self, s => s.replay_dead_letters(query).await)
    }

    async fn purge_dead_letter(&self, id: DeadLetterId) -> Result<bool, SpoolError> {
        each_backend!(self, s => s.purge_dead_letter(id).await)
    }

    async fn purge_sink(&self, sink: &str) -> Result<usize, PurgeError> {
        each_backend!(self, s => s.purge_sink(sink).await)
    }

    fn release(&self, delivery: Delivery) {
        each_backend!(self, s => s.release(delivery));
    }

    fn health(&self) -> Result<(), String> {
        each_backend!(self, s => s.health())
    }

    async fn sweep(&self, now: SystemTime) -> Result<Swept, SpoolError> {
        each_backend!(self, s => s.sweep(now).await)
    }

    fn dedup_entries(&self) -> u64 {
        each_backend!(self, s => s.dedup_entries())
    }

    fn depth(&self, sink: &str) -> usize {
        each_backend!(self, s => s.depth(sink))
    }

    fn sink_depths(&self) -> Vec<(String, usize)> {
        each_backend!(self, s => s.sink_depths())
    }

    fn oldest(&self, sink: &str) -> Option<SystemTime> {
        each_backend!(self, s => s.oldest(sink))
    }

    fn tells_oldest(&self) -> bool {
        each_backend!(self, s => s.tells_oldest())
    }

    fn used_bytes(&self) -> Option<u64> {
        each_backend!(self, s => s.used_bytes())
    }
}
