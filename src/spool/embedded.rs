//! The embedded spool: an append-only journal ([`super::journal`]) for the deliveries of plain
//! puts and a SQLite file (WAL, `synchronous = FULL`) for everything else — retries, dead
//! letters, ordered deliveries, duplicate suppression — in the configured directory.
//!
//! A `put` returns once all its deliveries are durable: journal records written and
//! `fdatasync`'d, or a transaction committed and synced. One writer thread
//! ([`super::writer`]) applies every change in group commits; leases are served from a bounded
//! per-sink cache ([`super::cache`]) filled by those commits, falling back to the journal's
//! index and a read connection when the cache runs dry. Leases live in memory only: after a
//! restart every stored delivery is leasable again (at-least-once), with its persisted
//! attempts and `not_before`; a released lease goes back into the cache at once.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use crate::maps::DashMap;
use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

use super::cache::{SinkQueue, Take};
use super::checkpoint::{self, Checkpoints};
use super::db::Key;
use super::db::{self, OpenError};
use super::journal::{self, Journal, Loc, Segments};
use super::letters;
use super::record::{to_millis, EncodedEvent};
use super::rows::{encode_put, Forward};
use super::space::Space;
use super::writer::{Command, Writer};
use super::{
    DeadLetter, DeadLetterId, DeadLetterQuery, DeadLetterRecord, Delivery, NewDelivery, Priority,
    PurgeError, Refusals, Spool, SpoolError, Swept, DEFAULT_MAX_BYTES, MAX_QUERY_LIMIT,
};

/// Commands that may wait for the writer; past it callers wait to enqueue (backpressure).
const QUEUE_CAPACITY: usize = 1024;
/// Rows read from disk per refill of a sink's cache.
const REFILL_ROWS: usize = 128;
/// Most deliveries one transaction of a sink purge deletes.
const PURGE_ROWS: usize = 10_000;
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
    checkpoints: Arc<Checkpoints>,
    checkpointer: Option<JoinHandle<()>>,
    /// Puts refused under `max_bytes` (readiness).
    refusals: Refusals,
    /// One more than the commit count after a put last failed in storage; 0 when the last
    /// put was stored.
    storage_failed_at: AtomicU64,
    /// `spool.dead_letter_ttl`; `None` keeps dead letters.
    dead_letter_ttl: Option<Duration>,
}

/// State shared by the async side and the writer thread.
pub(super) struct Shared {
    queues: DashMap<Arc<str>, Arc<SinkQueue>>,
    /// Serves cache refills; WAL lets it read while the writer commits.
    reader: Mutex<Connection>,
    pub(super) commits: AtomicU64,
    /// Event bytes stored, as of the last commit.
    pub(super) stored_bytes: AtomicU64,
    /// `spool.max_bytes`.
    pub(super) max_bytes: u64,
    /// Rows in the duplicate-suppression table, as of the last commit.
    pub(super) seen_entries: AtomicU64,
    closed: AtomicBool,
    path: PathBuf,
    /// Read access to the journal's segments.
    pub(super) segments: Segments,
}

impl fmt::Debug for EmbeddedSpool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmbeddedSpool")
            .field("path", &self.shared.path)
            .field("commits", &self.commits())
            .finish_non_exhaustive()
    }
}

/// Says at start which sync `spool.db`'s commits use, and how to get the faster one.
fn log_sync(path: &Path) {
    let path = path.display();
    if super::SQLITE_SYNC == "fdatasync" {
        tracing::info!(%path, sync = super::SQLITE_SYNC, "SQLite commits sync with fdatasync");
    } else {
        tracing::info!(
            %path,
            sync = super::SQLITE_SYNC,
            "SQLite commits sync with fsync (durable; slower than fdatasync): build with \
             LIBSQLITE3_FLAGS=-DHAVE_FDATASYNC=1 for fdatasync, as the repository's \
             .cargo/config.toml does"
        );
    }
}

impl EmbeddedSpool {
    /// Opens `<dir>/spool.db`, creating the directory and the file when absent. A damaged
    /// file, or one from a newer schema, is refused with an error naming it.
    pub fn open(dir: &Path) -> Result<Self, OpenError> {
        Self::open_bounded(dir, DEFAULT_MAX_BYTES)
    }

    /// Like [`EmbeddedSpool::open`], refusing puts past `max_bytes` of stored events.
    pub fn open_bounded(dir: &Path, max_bytes: u64) -> Result<Self, OpenError> {
        Self::open_with(dir, max_bytes, journal::SEGMENT_BYTES)
    }

    /// Like [`EmbeddedSpool::open_bounded`], closing journal segments at `segment_bytes`.
    pub(super) fn open_with(
        dir: &Path,
        max_bytes: u64,
        segment_bytes: u64,
    ) -> Result<Self, OpenError> {
        let opened = db::open(dir)?;
        log_sync(&opened.path);
        let sqlite = |source| OpenError::Sqlite {
            path: opened.path.clone(),
            source,
        };
        let (depths, max_id) = db::inventory(&opened.writer).map_err(sqlite)?;
        let stored_bytes = db::stored_bytes(&opened.writer).map_err(sqlite)?;
        let seen_entries = db::seen_entries(&opened.writer).map_err(sqlite)?;
        let moved = db::journal_moved(&opened.writer).map_err(sqlite)?;
        let ordered = db::ordered(&opened.writer).map_err(sqlite)?;
        let queues: DashMap<Arc<str>, Arc<SinkQueue>> = DashMap::default();
        for (sink, depth) in depths {
            queues.insert(Arc::from(sink), Arc::new(SinkQueue::stored(depth)));
        }
        for (sink, id, route, key) in ordered {
            if let Some(queue) = queues.get(sink.as_str()) {
                queue.lock().ordered(id, &Arc::from(route), &Arc::from(key));
            }
        }
        let journal_dir = dir.join("journal");
        let (journal, recovery) = Journal::open(&journal_dir, &moved, segment_bytes, |d| {
            let queue = match queues.get(d.sink) {
                Some(queue) => queue.clone(),
                None => queues.entry(Arc::from(d.sink)).or_default().clone(),
            };
            queue.lock().recovered(d.priority, d.key, d.loc);
        })?;
        let max_id = max_id
            .max(recovery.max_id)
            .max(moved.iter().copied().max().unwrap_or(0));
        // Moves whose journal records are gone need no remembering.
        let below = journal.oldest_id().unwrap_or(max_id + 1);
        db::prune_moved(&opened.writer, below).map_err(sqlite)?;
        let space = Space::open(dir).map_err(|source| OpenError::Io {
            path: dir.to_owned(),
            source,
        })?;
        let checkpoints = Arc::new(Checkpoints::default());
        let mut conn = opened.writer;
        checkpoint::install(&mut conn, checkpoints.clone()).map_err(sqlite)?;
        let shared = Arc::new(Shared {
            queues,
            reader: Mutex::new(opened.reader),
            commits: AtomicU64::new(0),
            stored_bytes: AtomicU64::new(stored_bytes + recovery.bytes),
            max_bytes,
            seen_entries: AtomicU64::new(seen_entries),
            closed: AtomicBool::new(false),
            path: opened.path,
            segments: Segments::new(journal_dir),
        });
        let thread_failed = |source| OpenError::Thread {
            path: shared.path.clone(),
            source,
        };
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        let writer = Writer {
            conn,
            shared: shared.clone(),
            commands: rx,
            next_id: max_id + 1,
            freed: 0,
            journal,
            prune_moved: None,
            undone: Vec::new(),
            unwritten: Vec::new(),
            pending_acks: Vec::new(),
            fanout: recovery.fanout,
            written: Vec::new(),
            emptied: None,
            space,
            journal_bytes: recovery.bytes,
            last_shrink: 0,
            kept: Vec::new(),
        };
        let thread = std::thread::Builder::new()
            .name("spool-writer".into())
            .spawn(move || writer.run())
            .map_err(thread_failed)?;
        // Started after the writer: should it fail, dropping `tx` lets the writer end too.
        let checkpointer = {
            let (conn, checkpoints) = (opened.checkpointer, checkpoints.clone());
            std::thread::Builder::new()
                .name("spool-checkpoint".into())
                .spawn(move || checkpoint::run(&conn, &checkpoints))
                .map_err(thread_failed)?
        };
        Ok(Self {
            shared,
            commands: Some(tx),
            writer: Some(thread),
            checkpoints,
            checkpointer: Some(checkpointer),
            refusals: Refusals::default(),
            storage_failed_at: AtomicU64::new(0),
            dead_letter_ttl: None,
        })
    }

    /// Removes dead letters older than `ttl` at each sweep; `None` (the default) keeps them.
    pub fn dead_letter_ttl(mut self, ttl: Option<Duration>) -> Self {
        self.dead_letter_ttl = ttl;
        self
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    /// Checkpoints the writer had to run itself because the checkpointer fell behind.
    pub fn forced_checkpoints(&self) -> u64 {
        self.checkpoints.forced()
    }

    /// Transactions committed since open (one per group of commands).
    pub fn commits(&self) -> u64 {
        self.shared.commits.load(Ordering::Relaxed)
    }

    /// Bytes stored (events with their framing, and duplicate-suppression entries), as
    /// `spool.max_bytes` counts them.
    pub fn stored_bytes(&self) -> u64 {
        self.shared.stored_bytes.load(Ordering::Relaxed)
    }

    /// Sends a command that answers with a count, and waits for the answer.
    async fn ask(
        &self,
        command: impl FnOnce(super::writer::Reply) -> Command,
    ) -> Result<u64, SpoolError> {
        let (reply, answer) = oneshot::channel();
        self.send(command(reply)).await?;
        answer.await.map_err(|_| SpoolError::Closed)?
    }

    async fn put_batch(
        &self,
        deliveries: Vec<NewDelivery>,
        window: Option<Duration>,
    ) -> Result<usize, SpoolError> {
        if deliveries.is_empty() {
            return Ok(0);
        }
        let batch = encode_put(deliveries, window)?;
        let bytes = batch.bytes();
        let answer = self.ask(|reply| Command::Put { batch, reply }).await;
        match &answer {
            Ok(_) => {
                self.refusals.taken();
                self.storage_failed_at.store(0, Ordering::Relaxed);
            }
            Err(SpoolError::Full { .. }) => {
                if self.stored_bytes().saturating_add(bytes) > self.shared.max_bytes {
                    self.refusals.refused(bytes);
                } else {
                    // Healthy again after the next commit that succeeds.
                    let after = self.commits() + 1;
                    self.storage_failed_at.store(after, Ordering::Relaxed);
                }
            }
            Err(SpoolError::Closed | SpoolError::Unreachable { .. }) => {}
        }
        Ok(usize::try_from(answer?).unwrap_or(usize::MAX))
    }

    /// Why the writer cannot store puts now, if it cannot.
    fn writer_health(&self) -> Result<(), String> {
        if self.shared.closed.load(Ordering::Acquire) {
            return Err("spool is closed".to_owned());
        }
        let stopped = self.commands.as_ref().is_none_or(mpsc::Sender::is_closed)
            || self.writer.as_ref().is_none_or(JoinHandle::is_finished);
        if stopped {
            return Err(format!(
                "spool writer has stopped ({})",
                self.shared.path.display()
            ));
        }
        // A failed put counts until a later commit (of anything) succeeds.
        let failed_at = self.storage_failed_at.load(Ordering::Relaxed);
        if failed_at > 0 && self.commits() < failed_at {
            return Err(format!(
                "spool storage is failing ({}); puts are refused",
                self.shared.path.display()
            ));
        }
        Ok(())
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
        self.checkpoints.close();
        if let Some(thread) = self.checkpointer.take() {
            if thread.join().is_err() {
                tracing::error!(path = %self.shared.path.display(), "Spool checkpointer panicked");
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

    /// Every sink's journaled deliveries whose records are in `segment`.
    pub(super) fn journaled_in(&self, segment: u32) -> Vec<(Arc<str>, Priority, Key, Loc)> {
        let mut found = Vec::new();
        for queue in &self.queues {
            let here = queue.value().lock().journaled_in(segment);
            found.extend(
                here.into_iter()
                    .map(|(p, k, l)| (queue.key().clone(), p, k, l)),
            );
        }
        found
    }

    /// Reads released deliveries and the next rows of each lane that ran dry into the sink's
    /// caches.
    ///
    /// The sink's lock is held across the reads so that the writer cannot publish a commit
    /// in between: a row the read saw and the writer then publishes is deduplicated by key,
    /// and a row committed after the read is published against the new horizon.
    fn refill(&self, queue: &SinkQueue, sink: &Arc<str>) -> Result<(), SpoolError> {
        let mut state = queue.lock();
        let Some(wanted) = state.wanted() else {
            return Ok(());
        };
        let reader = self.reader.lock().unwrap_or_else(|e| e.into_inner());
        let failed = |e: rusqlite::Error| storage_failed(&e);
        if !wanted.ids.is_empty() {
            let rows = db::load_ids(&reader, sink, &wanted.ids).map_err(failed)?;
            state.fetched(&wanted.ids, rows);
        }
        for (priority, after) in wanted.lanes {
            let mut rows =
                db::load_after(&reader, (sink, priority), after, REFILL_ROWS).map_err(failed)?;
            let journaled = state.journal_after(priority, after, REFILL_ROWS);
            if !journaled.is_empty() {
                // The lane's next rows are the first of both sources, merged.
                let read = journaled.into_iter().map(|(key, loc)| {
                    // The index holds its schedule: a retry kept in memory is due later
                    // than its record says.
                    let delivery = self.segments.read(loc, key.1, sink).map(|mut d| {
                        d.not_before = super::record::from_millis(key.0);
                        d
                    });
                    (key, delivery.map_err(db::RowError::from))
                });
                rows.extend(read);
                rows.sort_unstable_by_key(|(key, _)| *key);
                rows.truncate(REFILL_ROWS);
            }
            state.refilled(priority, rows, REFILL_ROWS);
        }
        Ok(())
    }
}

impl Spool for EmbeddedSpool {
    async fn put(&self, deliveries: Vec<NewDelivery>) -> Result<(), SpoolError> {
        self.put_batch(deliveries, None).await.map(drop)
    }

    async fn put_unique(
        &self,
        deliveries: Vec<NewDelivery>,
        window: Duration,
    ) -> Result<usize, SpoolError> {
        self.put_batch(deliveries, Some(window)).await
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

    /// Leases live in the sink's cache only (nothing on disk marks a delivery leased), so a
    /// release is a change to the cache under its lock: no command for the writer.
    fn release(&self, delivery: Delivery) {
        let queue = self.shared.queue(&delivery.sink);
        queue.lock().requeued(delivery);
        queue.added.notify_waiters();
    }

    fn health(&self) -> Result<(), String> {
        self.writer_health()?;
        self.refusals
            .check(self.stored_bytes(), self.shared.max_bytes)
    }

    async fn ack(&self, delivery: &Delivery) -> Result<(), SpoolError> {
        self.send(Command::Ack {
            id: delivery.id,
            sink: delivery.sink.clone(),
            priority: delivery.priority,
            key: db::key_of(delivery),
        })
        .await
    }

    async fn nack(&self, mut delivery: Delivery, not_before: SystemTime) -> Result<(), SpoolError> {
        let key = db::key_of(&delivery);
        delivery.not_before = not_before;
        self.send(Command::Nack {
            delivery: Box::new(delivery),
            key,
        })
        .await
    }

    async fn dead_letter(
        &self,
        delivery: &Delivery,
        info: DeadLetter,
        forward: Option<NewDelivery>,
    ) -> Result<(), SpoolError> {
        let forward = match forward {
            None => None,
            Some(new) => Some(Forward {
                event: EncodedEvent::encode(&new.event),
                same_event: Arc::ptr_eq(&new.event, &delivery.event) || new.event == delivery.event,
                delivery: new,
            }),
        };
        self.send(Command::DeadLetter {
            delivery: Box::new(delivery.clone()),
            info: Box::new(info),
            forward: forward.map(Box::new),
        })
        .await
    }

    async fn dead_letters(
        &self,
        query: &DeadLetterQuery,
    ) -> Result<Vec<DeadLetterRecord>, SpoolError> {
        let shared = self.shared.clone();
        let query = query.clone();
        let read = move || {
            let reader = shared.reader.lock().unwrap_or_else(|e| e.into_inner());
            letters::list(&reader, &query).map_err(|e| storage_failed(&e))
        };
        tokio::task::spawn_blocking(read)
            .await
            .map_err(|e| storage_failed(&e))?
    }

    async fn replay_dead_letters(&self, query: &DeadLetterQuery) -> Result<usize, SpoolError> {
        // In chunks, so that replaying a large store never makes one huge transaction; each
        // chunk is atomic, and replayed records leave the selection.
        let mut total = 0;
        loop {
            let chunk = DeadLetterQuery {
                limit: query.limit.saturating_sub(total).min(MAX_QUERY_LIMIT),
                ..query.clone()
            };
            if chunk.limit == 0 {
                return Ok(total);
            }
            let asked = chunk.limit;
            let done = self
                .ask(|reply| Command::Replay {
                    query: chunk,
                    reply,
                })
                .await?;
            let done = usize::try_from(done).unwrap_or(usize::MAX);
            total += done;
            if done < asked {
                return Ok(total);
            }
        }
    }

    async fn purge_dead_letter(&self, id: DeadLetterId) -> Result<bool, SpoolError> {
        Ok(self.ask(|reply| Command::Purge { id, reply }).await? > 0)
    }

    async fn sweep(&self, now: SystemTime) -> Result<Swept, SpoolError> {
        let dead_before = self
            .dead_letter_ttl
            .and_then(|ttl| now.checked_sub(ttl))
            .map(to_millis);
        let (reply, answer) = oneshot::channel();
        self.send(Command::Sweep {
            now: to_millis(now),
            dead_before,
            reply,
        })
        .await?;
        answer.await.map_err(|_| SpoolError::Closed)?
    }

    fn dedup_entries(&self) -> u64 {
        self.shared.seen_entries.load(Ordering::Relaxed)
    }

    async fn purge_sink(&self, sink: &str) -> Result<usize, PurgeError> {
        // In chunks, like a replay, so that a large backlog never makes one huge transaction.
        let sink: Arc<str> = Arc::from(sink);
        let mut total = 0;
        loop {
            let command = |reply| Command::PurgeSink {
                sink: sink.clone(),
                limit: PURGE_ROWS,
                reply,
            };
            let done = usize::try_from(self.ask(command).await?).unwrap_or(usize::MAX);
            total += done;
            if done < PURGE_ROWS {
                return Ok(total);
            }
        }
    }

    fn depth(&self, sink: &str) -> usize {
        self.shared.queues.get(sink).map_or(0, |q| q.lock().depth)
    }

    /// The earlier of the journal index's front and one probe of SQLite's `deliveries_age`
    /// index; a failed read leaves the database's part out (it is logged by the next refill).
    fn oldest(&self, sink: &str) -> Option<SystemTime> {
        let journaled = {
            let queue = self.shared.queues.get(sink)?;
            let state = queue.lock();
            // Leased first: a retry moving into the database is leased until it is there.
            match (state.journal_oldest(), state.leased_oldest()) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            }
        };
        let stored = {
            let reader = self.shared.reader.lock().unwrap_or_else(|e| e.into_inner());
            db::oldest(&reader, sink).ok().flatten()
        };
        let millis = match (journaled, stored) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => a.or(b)?,
        };
        Some(super::record::from_millis(millis))
    }

    fn tells_oldest(&self) -> bool {
        true
    }

    fn used_bytes(&self) -> Option<u64> {
        Some(self.stored_bytes())
    }

    fn sink_depths(&self) -> Vec<(String, usize)> {
        let mut depths: Vec<(String, usize)> = self
            .shared
            .queues
            .iter()
            .map(|q| (q.key().to_string(), q.value().lock().depth))
            .filter(|(_, depth)| *depth > 0)
            .collect();
        depths.sort();
        depths
    }
}
