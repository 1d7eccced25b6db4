//! The embedded spool's writer thread: the only code that changes the database.
//!
//! It takes everything queued on its channel — puts, acks, nacks, dead-letters, replays and
//! purges (of a dead letter, of a sink's deliveries) from any number of callers — applies it
//! in one transaction with one fsync'd commit (group commit), then publishes the changes to
//! the per-sink queues and answers the callers. Order on the channel is the order of
//! application. Puts that would carry the stored bytes past `spool.max_bytes` are refused
//! before the transaction, so nothing stored is harmed.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::SystemTime;

use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

use super::embedded::{storage_failed, Shared};
use super::record::to_millis;
use super::rows::{Apply, Effect, Forward, PutBatch};
use super::FULL_RETRY_AFTER;
use super::{DeadLetter, DeadLetterId, DeadLetterQuery, Delivery, DeliveryId, SpoolError};

/// Most commands applied in one transaction; bounds a commit's size and latency.
const MAX_GROUP: usize = 4096;
/// Freed event bytes after which free pages are handed back to the file system.
const VACUUM_AFTER: u64 = 8 << 20;
/// How often expired duplicate-suppression entries are pruned, in millis.
const PRUNE_EVERY_MS: i64 = 60_000;
/// Most expired entries pruned in one transaction, so a prune never makes a commit slow.
const PRUNE_ROWS: i64 = 10_000;

/// A caller's answer: a count (duplicates dropped, records replayed or purged).
pub(super) type Reply = oneshot::Sender<Result<u64, SpoolError>>;

/// What the writer is asked to do.
#[derive(Debug)]
pub(super) enum Command {
    Put {
        batch: PutBatch,
        reply: Reply,
    },
    Ack {
        id: DeliveryId,
        sink: Arc<str>,
    },
    /// The delivery carries its new attempt count, outcome and `not_before`.
    Nack(Delivery),
    DeadLetter {
        id: DeliveryId,
        sink: Arc<str>,
        info: DeadLetter,
        forward: Option<Forward>,
    },
    Replay {
        query: DeadLetterQuery,
        reply: Reply,
    },
    Purge {
        id: DeadLetterId,
        reply: Reply,
    },
    /// Delete up to `limit` deliveries of a sink that are not leased when it is applied.
    PurgeSink {
        sink: Arc<str>,
        limit: usize,
        reply: Reply,
    },
    /// Commit what came before, answer, and stop taking commands.
    Close(oneshot::Sender<()>),
}

/// The writer thread's state.
pub(super) struct Writer {
    pub(super) conn: Connection,
    pub(super) shared: Arc<Shared>,
    pub(super) commands: mpsc::Receiver<Command>,
    /// Next delivery id; ids are never reused within a process, so a stale ack cannot hit a
    /// newer delivery.
    pub(super) next_id: u64,
    /// Event bytes freed since free pages were last handed back.
    pub(super) freed: u64,
    /// When expired sightings were last pruned, in unix millis.
    pub(super) last_prune: i64,
}

/// Applies one command inside the transaction; returns the count its caller is told.
fn apply_one(
    apply: &mut Apply<'_, '_>,
    command: &Command,
    shared: &Shared,
) -> rusqlite::Result<u64> {
    match command {
        Command::Put { batch, .. } => return apply.put(batch),
        Command::Ack { id, sink } => apply.ack(*id, sink)?,
        Command::Nack(delivery) => apply.nack(delivery)?,
        Command::DeadLetter {
            id,
            sink,
            info,
            forward,
        } => apply.dead_letter((*id, sink), info, forward.as_ref())?,
        Command::Replay { query, .. } => return apply.replay(query),
        Command::Purge { id, .. } => return apply.purge(*id),
        Command::PurgeSink { sink, limit, .. } => {
            // The leases are read as the command is applied, not when it was sent.
            let leased = shared.queue(sink).lock().leased_ids();
            return apply.purge_sink(sink, &leased, *limit);
        }
        Command::Close(_) => {}
    }
    Ok(0)
}

impl Writer {
    /// Runs until every sender is gone or a `Close` arrives, and the queue is drained.
    pub(super) fn run(mut self) {
        while let Some(first) = self.commands.blocking_recv() {
            let mut group = vec![first];
            while group.len() < MAX_GROUP {
                match self.commands.try_recv() {
                    Ok(command) => group.push(command),
                    Err(_) => break,
                }
            }
            let group = self.admit(group);
            if !group.is_empty() {
                self.commit_group(group);
            }
        }
    }

    /// Refuses, with `Full`, every put that would carry the stored bytes past the bound.
    /// Removals in the same group are not counted: the check errs on the safe side.
    fn admit(&mut self, group: Vec<Command>) -> Vec<Command> {
        let max = self.shared.max_bytes;
        let mut stored = self.shared.stored_bytes.load(Ordering::Relaxed);
        let mut admitted = Vec::with_capacity(group.len());
        for command in group {
            if let Command::Put { batch, .. } = &command {
                let bytes = batch.bytes();
                if stored.saturating_add(bytes) > max {
                    let full = SpoolError::Full {
                        retry_after: FULL_RETRY_AFTER,
                    };
                    self.answer(command, Err(full));
                    continue;
                }
                stored += bytes;
            }
            admitted.push(command);
        }
        admitted
    }

    fn commit_group(&mut self, group: Vec<Command>) {
        match self.apply_all(&group) {
            Ok((effects, counts)) => {
                self.publish(effects);
                for (command, count) in group.into_iter().zip(counts) {
                    self.answer(command, Ok(count));
                }
            }
            Err(error) => {
                tracing::error!(%error, commands = group.len(), "Spool group commit failed; retrying one by one");
                for command in group {
                    self.commit_alone(command);
                }
            }
        }
        self.vacuum();
    }

    /// Applies one command in its own transaction, so one bad command fails alone.
    fn commit_alone(&mut self, command: Command) {
        match self.apply_all(std::slice::from_ref(&command)) {
            Ok((effects, counts)) => {
                self.publish(effects);
                self.answer(command, Ok(counts.first().copied().unwrap_or(0)));
            }
            Err(error) => {
                let failed = match &command {
                    Command::Ack { id, sink } | Command::DeadLetter { id, sink, .. } => {
                        Some((sink.clone(), *id))
                    }
                    Command::Nack(d) => Some((d.sink.clone(), d.id)),
                    Command::Put { .. }
                    | Command::Replay { .. }
                    | Command::Purge { .. }
                    | Command::PurgeSink { .. }
                    | Command::Close(_) => None,
                };
                if let Some((sink, id)) = failed {
                    self.publish(vec![Effect::Failed { sink, id }]);
                }
                self.answer(command, Err(storage_failed(&error)));
            }
        }
    }

    fn answer(&mut self, command: Command, result: Result<u64, SpoolError>) {
        match command {
            // The caller may have gone away (its request was cancelled); what was stored stays.
            Command::Put { reply, .. }
            | Command::Replay { reply, .. }
            | Command::Purge { reply, .. }
            | Command::PurgeSink { reply, .. } => drop(reply.send(result)),
            Command::Close(reply) => {
                self.commands.close();
                reply.send(()).unwrap_or(());
            }
            Command::Ack { .. } | Command::Nack(_) | Command::DeadLetter { .. } => {}
        }
    }

    /// One transaction for the whole group. Nothing of the writer's state changes unless it
    /// commits.
    fn apply_all(&mut self, group: &[Command]) -> rusqlite::Result<(Vec<Effect>, Vec<u64>)> {
        let tx = self.conn.transaction()?;
        let now = to_millis(SystemTime::now());
        let mut apply = Apply {
            tx: &tx,
            next_id: self.next_id,
            effects: Vec::new(),
            bytes: 0,
            freed: 0,
            now,
        };
        let mut counts = Vec::with_capacity(group.len());
        for command in group {
            counts.push(apply_one(&mut apply, command, &self.shared)?);
        }
        let prune = now.saturating_sub(self.last_prune) >= PRUNE_EVERY_MS;
        if prune {
            apply.prune_seen(PRUNE_ROWS)?;
        }
        let Apply {
            next_id,
            effects,
            bytes,
            freed,
            ..
        } = apply;
        tx.commit()?;
        self.next_id = next_id;
        if prune {
            self.last_prune = now;
        }
        self.freed += freed;
        let stored = &self.shared.stored_bytes;
        match u64::try_from(bytes) {
            Ok(grown) => stored.fetch_add(grown, Ordering::Relaxed),
            Err(_) => stored.fetch_sub(bytes.unsigned_abs(), Ordering::Relaxed),
        };
        self.shared.commits.fetch_add(1, Ordering::Relaxed);
        Ok((effects, counts))
    }

    /// Hands free pages back to the file system once enough was freed (a no-op for files
    /// made without incremental auto-vacuum, which reuse their free pages instead).
    fn vacuum(&mut self) {
        if self.freed < VACUUM_AFTER {
            return;
        }
        self.freed = 0;
        if let Err(error) = self.conn.execute_batch("PRAGMA incremental_vacuum") {
            tracing::warn!(%error, "Spool vacuum failed; free pages stay in the file");
        }
    }

    fn publish(&self, effects: Vec<Effect>) {
        for effect in effects {
            let sink = match &effect {
                Effect::Stored(d) | Effect::Requeued(d) => d.sink.clone(),
                Effect::Removed { sink, .. }
                | Effect::Failed { sink, .. }
                | Effect::Added { sink, .. }
                | Effect::Purged { sink, .. } => sink.clone(),
            };
            let queue = self.shared.queue(&sink);
            // Waiters are woken when something may have become leasable sooner: a removal
            // only does that when it releases an ordered successor.
            {
                let mut state = queue.lock();
                match effect {
                    Effect::Stored(d) => state.stored(d),
                    Effect::Requeued(d) => state.requeued(d),
                    Effect::Removed { id, existed, .. } => {
                        if !state.removed(id, existed) {
                            continue;
                        }
                    }
                    Effect::Failed { id, .. } => state.failed(id),
                    Effect::Added { count, .. } => state.added_on_disk(count),
                    // Nothing became leasable sooner: no one to wake.
                    Effect::Purged { ids, .. } => {
                        state.purged(&ids);
                        continue;
                    }
                }
            }
            queue.added.notify_waiters();
        }
    }
}
