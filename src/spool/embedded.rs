//! The embedded spool: a SQLite file (WAL, `synchronous = FULL`) in the configured directory.
//!
//! A `put` returns once a transaction holding all its deliveries is committed and fsync'd.
//! One writer thread ([`super::writer`]) applies every change in group commits; leases are
//! served from a bounded per-sink cache ([`super::cache`]) filled by those commits, falling
//! back to a read connection when the cache runs dry. Leases live in memory only: after a
//! restart every stored delivery is leasable again (at-least-once), with its persisted
//! attempts and `not_before`.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use dashmap::DashMap;
use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

use super::cache::{SinkQueue, Take};
use super::db::{self, OpenError};
use super::record::EncodedEvent;
use super::writer::{Command, Forward, PutBatch, Writer};
use super::{Delivery, NewDelivery, Spool, SpoolError};

/// Commands that may wait for the writer; past it callers wait to enqueue (backpressure).
const QUEUE_CAPACITY: usize = 1024;
/// Rows read from disk per refill of a sink's cache.
const REFILL_ROWS: usize = 128;
/// Wait suggested to callers when storage fails (a full disk, an I/O error).
const STORAGE_RETRY_AFTER: Duration = Duration::from_secs(1);

/// Logs a storage failure and reports it the way callers already handle a temporarily
/// unavailable spool: ingress answers 503 with `Retry-After`, a lane pauses leasing.
pub(super) fn storage_failed(error: &dyn std::error::Error) -> SpoolError {
    tracing::error!(%error, "Spool storage failed");
    SpoolError::Full {
        retry_after: STORAGE_RETRY_AFTER,
    }
}

/// The on-disk backend.
pub struct EmbeddedSpool {
    shared: Arc<Shared>,
    /// `None` once dropped, which tells the writer to drain and stop.
    commands: Option<mpsc::Sender<Command>>,
    writer: Option<JoinHandle<()>>,
}

/// State shared by the async side and the writer thread.
pub(super) struct Shared {
    queues: DashMap<Arc<str>, Arc<SinkQueue>>,
    /// Serves cache refills; WAL lets it read while the writer commits.
    reader: Mutex<Connection>,
    pub(super) commits: AtomicU64,
    closed: AtomicBool,
    path: PathBuf,
}

impl fmt::Debug for EmbeddedSpool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmbeddedSpool")
            .field("path", &self.shared.path)
            .field("commits", &self.commits())
            .finish_non_exhaustive()
    }
}

impl EmbeddedSpool {
    /// Opens `<dir>/spool.db`, creating the directory and the file when absent. A damaged
    /// file, or one from a newer schema, is refused with an error naming it.
    pub fn open(dir: &Path) -> Result<Self, OpenError> {
        let opened = db::open(dir)?;
        let sqlite = |source| OpenError::Sqlite {
            path: opened.path.clone(),
            source,
        };
        let (depths, max_id) = db::inventory(&opened.writer).map_err(sqlite)?;
        let queues = DashMap::new();
        for (sink, depth) in depths {
            queues.insert(Arc::from(sink), Arc::new(SinkQueue::stored(depth)));
        }
        let shared = Arc::new(Shared {
            queues,
            reader: Mutex::new(opened.reader),
            commits: AtomicU64::new(0),
            closed: AtomicBool::new(false),
            path: opened.path,
        });
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        let writer = Writer {
            conn: opened.writer,
            shared: shared.clone(),
            commands: rx,
            next_id: max_id + 1,
        };
        let thread = std::thread::Builder::new()
            .name("spool-writer".into())
            .spawn(move || writer.run())
            .map_err(|source| OpenError::Thread {
                path: shared.path.clone(),
                source,
            })?;
        Ok(Self {
            shared,
            commands: Some(tx),
            writer: Some(thread),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    /// Transactions committed since open (one per group of commands).
    pub fn commits(&self) -> u64 {
        self.shared.commits.load(Ordering::Relaxed)
    }

    /// Commits everything queued so far, then refuses further work; leases waiting now or
    /// later end with [`SpoolError::Closed`].
    pub async fn close(&self) -> Result<(), SpoolError> {
        let (reply, done) = oneshot::channel();
        let sent = self.send(Command::Close(reply)).await;
        self.shared.closed.store(true, Ordering::Release);
        for queue in &self.shared.queues {
            queue.added.notify_waiters();
        }
        match sent {
            Ok(()) => done.await.map_err(|_| SpoolError::Closed),
            // Already closed: nothing queued is left to commit.
            Err(_) => Ok(()),
        }
    }

    async fn send(&self, command: Command) -> Result<(), SpoolError> {
        let commands = self.commands.as_ref().ok_or(SpoolError::Closed)?;
        commands.send(command).await.map_err(|_| SpoolError::Closed)
    }

    async fn refill(&self, queue: Arc<SinkQueue>, sink: Arc<str>) -> Result<(), SpoolError> {
        let shared = self.shared.clone();
        tokio::task::spawn_blocking(move || shared.refill(&queue, &sink))
            .await
            .map_err(|e| storage_failed(&e))?
    }
}

impl Drop for EmbeddedSpool {
    fn drop(&mut self) {
        // Closing the channel lets the writer commit what is queued and then return.
        self.commands = None;
        if let Some(thread) = self.writer.take() {
            if thread.join().is_err() {
                tracing::error!(path = %self.shared.path.display(), "Spool writer panicked");
            }
        }
    }
}

impl Shared {
    /// The queue of a sink, created empty on first use.
    pub(super) fn queue(&self, sink: &str) -> Arc<SinkQueue> {
        if let Some(q) = self.queues.get(sink) {
            return q.clone();
        }
        self.queues.entry(Arc::from(sink)).or_default().clone()
    }

    /// Reads the next rows of a sink into its cache.
    ///
    /// The sink's lock is held across the read so that the writer cannot publish a commit
    /// in between: a row the read saw and the writer then publishes is deduplicated by key,
    /// and a row committed after the read is published against the new horizon.
    fn refill(&self, queue: &SinkQueue, sink: &Arc<str>) -> Result<(), SpoolError> {
        let mut state = queue.lock();
        let Some(after) = state.needs_refill() else {
            return Ok(());
        };
        let rows = {
            let reader = self.reader.lock().unwrap_or_else(|e| e.into_inner());
            db::load_after(&reader, sink, after, REFILL_ROWS).map_err(|e| storage_failed(&e))?
        };
        state.refilled(rows, REFILL_ROWS);
        Ok(())
    }
}

/// Groups a put's deliveries by event (deliveries of one event share its `Arc`) and encodes
/// each event once, on the caller's task rather than the writer thread.
fn encode_put(deliveries: Vec<NewDelivery>) -> Result<PutBatch, SpoolError> {
    let mut index: HashMap<*const crate::event::Event, usize> = HashMap::new();
    let mut batch = PutBatch {
        events: Vec::new(),
        deliveries: Vec::with_capacity(deliveries.len()),
    };
    for delivery in deliveries {
        let slot = match index.get(&Arc::as_ptr(&delivery.event)) {
            Some(&slot) => slot,
            None => {
                let encoded =
                    EncodedEvent::encode(&delivery.event).map_err(|e| storage_failed(&e))?;
                batch.events.push((encoded, 0));
                index.insert(Arc::as_ptr(&delivery.event), batch.events.len() - 1);
                batch.events.len() - 1
            }
        };
        if let Some((_, pending)) = batch.events.get_mut(slot) {
            *pending += 1;
        }
        batch.deliveries.push((slot, delivery));
    }
    Ok(batch)
}

impl Spool for EmbeddedSpool {
    async fn put(&self, deliveries: Vec<NewDelivery>) -> Result<(), SpoolError> {
        if deliveries.is_empty() {
            return Ok(());
        }
        let batch = encode_put(deliveries)?;
        let (reply, stored) = oneshot::channel();
        self.send(Command::Put { batch, reply }).await?;
        stored.await.map_err(|_| SpoolError::Closed)?
    }

    async fn lease(&self, sink: &str, max: usize) -> Result<Vec<Delivery>, SpoolError> {
        let queue = self.shared.queue(sink);
        loop {
            // Register interest before looking, so a commit between the look and the wait
            // is not missed.
            let added = queue.added.notified();
            if self.shared.closed.load(Ordering::Acquire) {
                return Err(SpoolError::Closed);
            }
            let now = SystemTime::now();
            let take = queue.lock().take_due(now, max);
            match take {
                Take::Leased(deliveries) => return Ok(deliveries),
                Take::Refill => self.refill(queue.clone(), Arc::from(sink)).await?,
                Take::Wait(None) => added.await,
                Take::Wait(Some(due)) => {
                    let wait = due.duration_since(now).unwrap_or(Duration::ZERO);
                    tokio::select! {
                        () = added => {}
                        () = tokio::time::sleep(wait) => {}
                    }
                }
            }
        }
    }

    async fn ack(&self, delivery: &Delivery) -> Result<(), SpoolError> {
        self.send(Command::Ack {
            id: delivery.id,
            sink: delivery.sink.clone(),
        })
        .await
    }

    async fn nack(&self, mut delivery: Delivery, not_before: SystemTime) -> Result<(), SpoolError> {
        delivery.not_before = not_before;
        self.send(Command::Nack(delivery)).await
    }

    async fn dead_letter(
        &self,
        delivery: &Delivery,
        forward: Option<NewDelivery>,
    ) -> Result<(), SpoolError> {
        let forward = match forward {
            None => None,
            Some(new) => Some(Forward {
                event: EncodedEvent::encode(&new.event).map_err(|e| storage_failed(&e))?,
                same_event: Arc::ptr_eq(&new.event, &delivery.event) || new.event == delivery.event,
                delivery: new,
            }),
        };
        self.send(Command::DeadLetter {
            id: delivery.id,
            sink: delivery.sink.clone(),
            forward,
        })
        .await
    }

    fn depth(&self, sink: &str) -> usize {
        self.shared.queues.get(sink).map_or(0, |q| q.lock().depth)
    }
}
