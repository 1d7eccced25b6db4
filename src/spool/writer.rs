//! The embedded spool's writer thread: the only code that changes the journal and the
//! database.
//!
//! It takes everything queued on its channel — puts, acks, nacks, dead-letters, replays and
//! purges (of a dead letter, of a sink's deliveries) from any number of callers — and applies
//! it as one group: first what the journal takes (plain puts, acks and purges of journaled
//! deliveries), appended and `fdatasync`'d together; then the rest in one SQLite transaction
//! with one synced commit, skipped when there is none. Then it publishes the changes to the
//! per-sink queues and answers the callers. Within a group journal work is applied before
//! database work; the two never touch the same delivery. Puts that would carry the stored
//! bytes past `spool.max_bytes` are refused first, so nothing stored is harmed.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::SystemTime;

use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

use crate::maps::HashMap;

use super::db::Key;
use super::embedded::{storage_failed, Shared};
use super::journal::{self, Journal, Loc};
use super::record::to_millis;
use super::rows::{Apply, Effect, Forward, PutBatch};
use super::space::Space;
use super::FULL_RETRY_AFTER;
use super::{
    DeadLetter, DeadLetterId, DeadLetterQuery, Delivery, DeliveryId, NewDelivery, Priority,
    SpoolError, Swept,
};

/// Most commands applied in one transaction; bounds a commit's size and latency.
const MAX_GROUP: usize = 4096;
/// Most acks that wait for a later commit (see [`Writer::defers`]); past it they are written
/// and synced at once.
const MAX_DEFERRED_ACKS: usize = 4096;
/// Freed event bytes after which free pages are handed back to the file system.
const VACUUM_AFTER: u64 = 8 << 20;
/// Most expired rows (sightings or dead letters) one sweep transaction deletes; a sweep
/// commits as many as it takes, so that no one transaction grows large.
const SWEEP_ROWS: i64 = 10_000;
/// While disk space is short, how often free pages and the WAL are handed back.
const SHRINK_EVERY_MS: i64 = 1_000;

/// A caller's answer: a count (duplicates dropped, records replayed or purged).
pub(super) type Reply = oneshot::Sender<Result<u64, SpoolError>>;

/// A sweep's answer.
pub(super) type SweepReply = oneshot::Sender<Result<Swept, SpoolError>>;

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
        priority: Priority,
        /// Its lease position when it was leased.
        key: Key,
    },
    /// The delivery carries its new attempt count, outcome and `not_before`; `key` is its
    /// lease position when it was leased.
    Nack {
        delivery: Box<Delivery>,
        key: Key,
    },
    DeadLetter {
        /// As leased.
        delivery: Box<Delivery>,
        info: Box<DeadLetter>,
        forward: Option<Box<Forward>>,
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
    /// Delete the sightings expired at `now` and the dead letters from before `dead_before`
    /// (unix millis), in transactions of their own after the group's.
    Sweep {
        now: i64,
        dead_before: Option<i64>,
        reply: SweepReply,
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
    pub(super) journal: Journal,
    /// Set when a journal segment was deleted: `journal_moved` rows below this id are no
    /// longer needed.
    pub(super) prune_moved: Option<DeliveryId>,
    /// Journaled deliveries of a put that went to the database after all: retired by the
    /// next journal commit.
    pub(super) undone: Vec<(DeliveryId, u32)>,
    /// Acks of journaled deliveries whose gone records a failed commit did not write: done in
    /// memory and counted off their segments already, written by the next journal commit.
    pub(super) unwritten: Vec<(DeliveryId, u32)>,
    /// Acks the database refused (a full disk): their deliveries stay leased, so that they
    /// are not attempted again, and the acks are retried with every later group.
    pub(super) pending_acks: Vec<Command>,
    /// Journal records with more than one stored delivery, by (segment, offset): how many.
    /// An event's bytes are freed with its last delivery.
    pub(super) fanout: HashMap<(u32, u32), u32>,
    /// Records appended by the group being applied: where, and for how many deliveries.
    pub(super) written: Vec<(Loc, u32)>,
    /// The last sparse journal segment whose deliveries were moved into the database.
    pub(super) emptied: Option<u32>,
    /// Free disk space: the admission mark and the reserve.
    pub(super) space: Space,
    /// Event bytes of the deliveries stored in the journal.
    pub(super) journal_bytes: u64,
    /// When the database was last shrunk for lack of space, in unix millis.
    pub(super) last_shrink: i64,
    /// Retries of journaled deliveries kept in memory by the group being applied (see
    /// [`Via::Kept`]), published whatever becomes of the group's writes.
    pub(super) kept: Vec<Effect>,
}

/// How a command of a group is applied.
#[derive(Debug)]
enum Via {
    /// In the SQLite transaction.
    Sql,
    /// In the journal only (its caller, if any, is told 0).
    Journal,
    /// A journaled delivery that is copied into SQLite first (nacked or dead-lettered).
    Moved(Loc),
    /// A retry of a journaled delivery while the disk is full: copying its event into SQLite
    /// would take space the acks need, so it stays in the journal and its new schedule and
    /// attempt count are kept in memory (the count restarts if it is read back from disk).
    Kept,
}

/// A journaled delivery retired by this group (acked or purged).
#[derive(Debug)]
struct Retired {
    sink: Arc<str>,
    priority: Priority,
    key: Key,
    loc: Loc,
    /// The group's command that retired it.
    command: usize,
}

/// Applies one command inside the transaction; returns the count its caller is told. A
/// journaled delivery (`moved`) is first copied into the database, with its id.
fn apply_one(
    apply: &mut Apply<'_, '_>,
    command: &Command,
    moved: bool,
    shared: &Shared,
) -> rusqlite::Result<u64> {
    match command {
        Command::Put { batch, .. } => return apply.put(batch),
        Command::Ack { id, sink, .. } => apply.ack(*id, sink)?,
        Command::Nack { delivery, .. } => {
            if moved {
                apply.materialize(delivery)?;
            }
            apply.nack(delivery)?;
        }
        Command::DeadLetter {
            delivery,
            info,
            forward,
        } => {
            if moved {
                apply.materialize(delivery)?;
            }
            apply.dead_letter((delivery.id, &delivery.sink), info, forward.as_deref())?;
        }
        Command::Replay { query, .. } => return apply.replay(query),
        Command::Purge { id, .. } => return apply.purge(*id),
        Command::PurgeSink { sink, limit, .. } => {
            // The leases are read as the command is applied, not when it was sent.
            let leased = shared.queue(sink).lock().leased_ids();
            return apply.purge_sink(sink, &leased, *limit);
        }
        Command::Close(_) | Command::Sweep { .. } => {}
    }
    Ok(0)
}

/// Whether a put goes to the journal: no duplicate suppression, and every event and delivery
/// fits its record format. (`pending` is an event's number of deliveries.)
fn journalable(batch: &PutBatch) -> bool {
    batch.unique.is_none()
        && batch.events.iter().all(|(event, pending)| {
            journal::fits_event(event, usize::try_from(*pending).unwrap_or(usize::MAX))
        })
        && batch
            .deliveries
            .iter()
            .all(|(_, d)| journal::fits_delivery(d))
}

/// Splits the sweeps off a group; a group without one (nearly every group) is not copied.
fn take_sweeps(group: Vec<Command>) -> (Vec<Command>, Vec<Command>) {
    if !group.iter().any(|c| matches!(c, Command::Sweep { .. })) {
        return (Vec::new(), group);
    }
    group
        .into_iter()
        .partition(|c| matches!(c, Command::Sweep { .. }))
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
            group.append(&mut self.pending_acks);
            // Sweeps run after the rest of the group, in transactions of their own.
            let (sweeps, group) = take_sweeps(group);
            let group = self.admit(group);
            // A sweep comes every second: it also writes the acks that waited for a commit.
            if !group.is_empty() || (!sweeps.is_empty() && !self.unwritten.is_empty()) {
                self.commit_group(group);
            }
            for sweep in sweeps {
                if let Command::Sweep {
                    now,
                    dead_before,
                    reply,
                } = sweep
                {
                    let swept = self.sweep(now, dead_before).map_err(|e| storage_failed(&e));
                    drop(reply.send(swept));
                }
            }
            if self.space.low() {
                // Also when every put was refused: what drained must go back to the disk.
                self.shrink();
            }
            // Each sparse segment is tried once: one whose deliveries cannot be moved stays.
            if let Some(segment) = self.journal.sparse().filter(|s| Some(*s) != self.emptied) {
                self.emptied = Some(segment);
                self.empty_segment(segment);
            }
        }
        if !self.unwritten.is_empty() {
            self.commit_group(Vec::new());
        }
    }

    /// Whether a group's journaled acks (`acks` with those still waiting) are written by a
    /// later commit instead of their own: when the group holds nothing but acks, fewer than
    /// [`MAX_DEFERRED_ACKS`] wait, and the disk is not short of space. An ack has no caller
    /// waiting for it, and a lost ack only delivers its event again, as at-least-once allows:
    /// its sync would buy nothing a crash can tell apart. Acks still ride with the next put's
    /// sync, with any other journal commit, or with the next sweep (every second) at the latest,
    /// and `close` writes them. The delivery is retired in memory at once (never leased again);
    /// its segment may go meanwhile, which retires it durably.
    fn defers(&self, group: &[Command], acks: usize) -> bool {
        !group.is_empty()
            && acks < MAX_DEFERRED_ACKS
            && !self.journal.eager
            && group.iter().all(|c| matches!(c, Command::Ack { .. }))
    }

    /// Refuses, with `Full`, every put that would carry the stored bytes past the bound,
    /// and every put while the disk is short of space (see `space`). Removals in the same
    /// group are not counted: the check errs on the safe side.
    fn admit(&mut self, group: Vec<Command>) -> Vec<Command> {
        let max = self.shared.max_bytes;
        let mut stored = self.shared.stored_bytes.load(Ordering::Relaxed);
        let puts: u64 = group
            .iter()
            .map(|c| match c {
                Command::Put { batch, .. } => batch.bytes(),
                _ => 0,
            })
            .sum();
        let room = puts == 0 || self.space.admits(self.journal_bytes, puts);
        self.short_of_space(self.space.low());
        let mut admitted = Vec::with_capacity(group.len());
        for command in group {
            if let Command::Put { batch, .. } = &command {
                let bytes = batch.bytes();
                if !room || stored.saturating_add(bytes) > max {
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
        let mut effects = Vec::new();
        let mut retired = Vec::new();
        let mut via = Vec::with_capacity(group.len());
        for (index, command) in group.iter().enumerate() {
            via.push(self.route(index, command, &mut effects, &mut retired));
        }
        let mut gone: Vec<(DeliveryId, u32)> =
            retired.iter().map(|r| (r.key.1, r.loc.segment)).collect();
        let undone = std::mem::take(&mut self.undone);
        gone.extend_from_slice(&undone);
        // Those whose segment went meanwhile are durable already.
        let mut unwritten = std::mem::take(&mut self.unwritten);
        unwritten.retain(|(_, segment)| self.journal.holds(*segment));
        let deferred = undone.is_empty() && self.defers(&group, unwritten.len() + retired.len());
        if deferred {
            // Acks alone wait for a later commit (see `defers`).
            unwritten.extend(retired.iter().map(|r| (r.key.1, r.loc.segment)));
            self.unwritten = std::mem::take(&mut unwritten);
            gone.clear();
        }
        gone.extend_from_slice(&unwritten);
        let journaled =
            !deferred && (via.iter().any(|v| matches!(v, Via::Journal)) || !gone.is_empty());
        let mut results: Vec<Option<Result<u64, SpoolError>>> = Vec::with_capacity(group.len());
        results.resize_with(group.len(), || None);
        if journaled {
            let written = self
                .journal
                .gone(&gone)
                .and_then(|()| self.journal.commit());
            if let Err(error) = written {
                let failure = storage_failed(&error);
                self.space.exhausted();
                self.short_of_space(true);
                // Nothing of the journal's part happened: retire what it stored (part of it
                // may have reached the file) next time, and index what purges took again.
                // Acks stay done in memory (see `Journal::release`): the delivery is never
                // attempted again by this process, and its segment still goes once nothing
                // in it is stored, which makes them durable. Only a crash before that
                // delivers those events again, as at-least-once allows; attempting them over
                // and over while the disk is full would only repeat them.
                let mut kept = Vec::new();
                for effect in effects.drain(..) {
                    match effect {
                        Effect::Journaled(d, loc) => self.undone.push((d.id, loc.segment)),
                        removed @ Effect::Removed { .. } => kept.push(removed),
                        _ => {}
                    }
                }
                effects = kept;
                self.written.clear();
                let (acks, others): (Vec<_>, Vec<_>) = retired
                    .drain(..)
                    .partition(|r| matches!(group.get(r.command), Some(Command::Ack { .. })));
                if !acks.is_empty() {
                    tracing::debug!(acks = acks.len(), "Acknowledgements kept in memory until their segment goes or a commit writes them");
                }
                self.unwritten
                    .extend(acks.iter().map(|r| (r.key.1, r.loc.segment)));
                self.unwritten.extend(unwritten);
                retired = acks;
                for r in others {
                    let queue = self.shared.queue(&r.sink);
                    queue.lock().index(r.priority, r.key, r.loc);
                    if let Some(slot) = results.get_mut(r.command) {
                        *slot = Some(Err(clone_error(&failure)));
                    }
                }
                for (v, result) in via.iter().zip(results.iter_mut()) {
                    if matches!(v, Via::Journal) {
                        *result = Some(Err(clone_error(&failure)));
                    }
                }
                self.undone.extend(undone);
            } else {
                for (_, segment) in undone {
                    self.release(segment);
                }
            }
        }
        let mut freed_bytes = 0u64;
        for r in &retired {
            freed_bytes += self.free(r.loc);
            self.release(r.loc.segment);
        }
        let mut grown = 0u64;
        for (loc, n) in std::mem::take(&mut self.written) {
            grown += u64::from(loc.bytes);
            if n > 1 {
                self.fanout.insert((loc.segment, loc.offset), n);
            }
        }
        let mut purged = vec![0u64; group.len()];
        for r in &retired {
            if let Some(n) = purged.get_mut(r.command) {
                *n += 1;
            }
        }
        self.journal_bytes = (self.journal_bytes + grown).saturating_sub(freed_bytes);
        let stored = &self.shared.stored_bytes;
        stored.fetch_add(grown, Ordering::Relaxed);
        stored.fetch_sub(
            freed_bytes.min(stored.load(Ordering::Relaxed)),
            Ordering::Relaxed,
        );
        if journaled {
            self.shared.commits.fetch_add(1, Ordering::Relaxed);
        }
        self.publish(effects);

        let items: Vec<(usize, bool)> = via
            .iter()
            .enumerate()
            .filter_map(|(i, v)| match v {
                Via::Sql => Some((i, false)),
                Via::Moved(_) => Some((i, true)),
                Via::Journal | Via::Kept => None,
            })
            .collect();
        if !items.is_empty() || self.prune_moved.is_some() {
            self.commit_sql(&group, &items, &via, &mut results);
        }
        let kept = std::mem::take(&mut self.kept);
        self.publish(kept);
        for ((command, result), purged) in group.into_iter().zip(results).zip(purged) {
            // A sink purge counts what it took from the journal too.
            let result = result.unwrap_or(Ok(0)).map(|n| n + purged);
            self.answer(command, result);
        }
        self.vacuum();
    }

    /// Decides where a command is applied; journal work is appended to the journal's buffer
    /// (puts) or to `retired` (acks and purges of journaled deliveries) here.
    fn route(
        &mut self,
        index: usize,
        command: &Command,
        effects: &mut Vec<Effect>,
        retired: &mut Vec<Retired>,
    ) -> Via {
        match command {
            Command::Put { batch, .. } if journalable(batch) => self.journal_put(batch, effects),
            Command::Ack {
                id,
                sink,
                priority,
                key,
            } => {
                let loc = self.shared.queue(sink).lock().unindex(*priority, *key);
                let Some(loc) = loc else { return Via::Sql };
                retired.push(Retired {
                    sink: sink.clone(),
                    priority: *priority,
                    key: *key,
                    loc,
                    command: index,
                });
                effects.push(Effect::Removed {
                    sink: sink.clone(),
                    id: *id,
                    existed: true,
                });
                Via::Journal
            }
            Command::Nack { delivery, key } => {
                let queue = self.shared.queue(&delivery.sink);
                let mut state = queue.lock();
                match state.unindex(delivery.priority, *key) {
                    Some(loc) if self.space.reserve_spent() => {
                        state.index(delivery.priority, super::db::key_of(delivery), loc);
                        drop(state);
                        self.kept.push(Effect::Requeued((**delivery).clone()));
                        Via::Kept
                    }
                    loc => loc.map_or(Via::Sql, Via::Moved),
                }
            }
            Command::DeadLetter { delivery, .. } => {
                let key = super::db::key_of(delivery);
                let loc = self
                    .shared
                    .queue(&delivery.sink)
                    .lock()
                    .unindex(delivery.priority, key);
                loc.map_or(Via::Sql, Via::Moved)
            }
            Command::PurgeSink { sink, .. } => {
                // The journal's part goes at once; the database's part in the transaction,
                // which then counts on top.
                let taken = self.shared.queue(sink).lock().unindex_unleased();
                if !taken.is_empty() {
                    let ids = taken.iter().map(|(_, key, _)| key.1).collect();
                    effects.push(Effect::Purged {
                        sink: sink.clone(),
                        ids,
                    });
                }
                for (priority, key, loc) in taken {
                    retired.push(Retired {
                        sink: sink.clone(),
                        priority,
                        key,
                        loc,
                        command: index,
                    });
                }
                Via::Sql
            }
            _ => Via::Sql,
        }
    }

    /// Appends a put's events to the journal's buffer, one record per event.
    fn journal_put(&mut self, batch: &PutBatch, effects: &mut Vec<Effect>) -> Via {
        let mark = effects.len();
        let written = self.written.len();
        // The deliveries in event order (a stable sort keeps each event's in put order), then
        // one record per event over its run.
        let mut sorted: Vec<&(usize, NewDelivery)> = batch.deliveries.iter().collect();
        sorted.sort_by_key(|(slot, _)| *slot);
        let mut numbered: Vec<(DeliveryId, &NewDelivery)> = Vec::with_capacity(sorted.len());
        for (_, new) in &sorted {
            numbered.push((self.next_id, new));
            self.next_id += 1;
        }
        let mut start = 0;
        for (slot, (event, _)) in batch.events.iter().enumerate() {
            let run = sorted.get(start..).unwrap_or_default();
            let end = start + run.iter().take_while(|(s, _)| *s == slot).count();
            let deliveries = numbered.get(start..end).unwrap_or_default();
            start = end;
            match self.journal.put(event, deliveries) {
                Ok(stored) => {
                    if let Some((_, loc)) = stored.first() {
                        self.written
                            .push((*loc, u32::try_from(stored.len()).unwrap_or(u32::MAX)));
                    }
                    effects.extend(stored.into_iter().map(|(d, loc)| Effect::Journaled(d, loc)));
                }
                Err(error) => {
                    // The put goes to the database instead; what of it was already appended
                    // is retired in the same journal commit.
                    tracing::error!(%error, "Cannot journal a put; storing it in the database");
                    self.written.truncate(written);
                    let undone = effects.drain(mark..).filter_map(|e| match e {
                        Effect::Journaled(d, loc) => Some((d.id, loc.segment)),
                        _ => None,
                    });
                    self.undone.extend(undone);
                    return Via::Sql;
                }
            }
        }
        Via::Journal
    }

    /// Moves the stored deliveries of a sparse journal segment into the database, so that the
    /// segment and the later ones it holds on disk can go. Leased ones move too: their ack or
    /// nack then finds them in the database.
    fn empty_segment(&mut self, segment: u32) {
        let found = self.shared.journaled_in(segment);
        let mut deliveries = Vec::with_capacity(found.len());
        for (sink, _, key, loc) in &found {
            match self.shared.segments.read(*loc, key.1, sink) {
                Ok(delivery) => deliveries.push(delivery),
                Err(error) => {
                    tracing::error!(%error, "Cannot move a journaled delivery into the database");
                    return;
                }
            }
        }
        let added = match self.materialize_all(&deliveries) {
            Ok(bytes) => bytes,
            Err(error) => {
                tracing::error!(%error, "Cannot move journaled deliveries into the database");
                return;
            }
        };
        let mut freed = 0;
        for (sink, priority, key, loc) in found {
            if self
                .shared
                .queue(&sink)
                .lock()
                .unindex(priority, key)
                .is_some()
            {
                freed += self.free(loc);
                self.release(loc.segment);
            }
        }
        self.journal_bytes = self.journal_bytes.saturating_sub(freed);
        let stored = &self.shared.stored_bytes;
        stored.fetch_add(added, Ordering::Relaxed);
        stored.fetch_sub(freed.min(stored.load(Ordering::Relaxed)), Ordering::Relaxed);
        tracing::debug!(
            segment,
            moved = deliveries.len(),
            "Emptied a sparse journal segment"
        );
    }

    /// Copies deliveries into the database in one transaction; returns the event bytes added.
    fn materialize_all(&mut self, deliveries: &[Delivery]) -> rusqlite::Result<u64> {
        let tx = self.conn.transaction()?;
        let mut apply = Apply::new(&tx, self.next_id, to_millis(SystemTime::now()));
        for delivery in deliveries {
            apply.materialize(delivery)?;
        }
        let bytes = apply.bytes;
        tx.commit()?;
        self.shared.commits.fetch_add(1, Ordering::Relaxed);
        Ok(u64::try_from(bytes).unwrap_or(0))
    }

    /// Event bytes freed by retiring one journaled delivery: its event's, unless other
    /// deliveries of the same record are still stored.
    fn free(&mut self, loc: Loc) -> u64 {
        let at = (loc.segment, loc.offset);
        match self.fanout.get_mut(&at) {
            Some(left) if *left > 1 => {
                *left -= 1;
                0
            }
            Some(_) => {
                self.fanout.remove(&at);
                u64::from(loc.bytes)
            }
            None => u64::from(loc.bytes),
        }
    }

    /// A journaled delivery's retirement is durable: count it off its segment.
    fn release(&mut self, segment: u32) {
        let deleted = self.journal.release(segment);
        self.deleted(deleted);
    }

    /// Tells the journal whether space is short: while it is, a drained active segment is
    /// closed and deleted (see [`Journal::short_of_space`]).
    fn short_of_space(&mut self, short: bool) {
        let deleted = self.journal.short_of_space(short);
        self.deleted(deleted);
    }

    /// Journal segments whose files were deleted.
    fn deleted(&mut self, segments: Vec<u32>) {
        if segments.is_empty() {
            return;
        }
        for seq in segments {
            self.shared.segments.forget(seq);
        }
        self.prune_moved = Some(self.journal.oldest_id().unwrap_or(self.next_id));
    }

    /// Applies the database part of a group in one transaction, or command by command when
    /// that fails, so that one bad command fails alone.
    fn commit_sql(
        &mut self,
        group: &[Command],
        items: &[(usize, bool)],
        via: &[Via],
        results: &mut [Option<Result<u64, SpoolError>>],
    ) {
        match self.apply_all(group, items) {
            Ok((effects, counts)) => {
                self.moved(items, via);
                self.publish(effects);
                for ((index, _), count) in items.iter().zip(counts) {
                    if let Some(slot) = results.get_mut(*index) {
                        slot.get_or_insert(Ok(count));
                    }
                }
            }
            Err(error) => {
                tracing::error!(%error, commands = items.len(), "Spool group commit failed; retrying one by one");
                self.space.exhausted();
                self.short_of_space(true);
                for item in items {
                    let result = self.commit_alone(group, *item, via);
                    if let Some(slot) = results.get_mut(item.0) {
                        slot.get_or_insert(result);
                    }
                }
            }
        }
    }

    /// Journaled deliveries now stored in the database leave their segments.
    fn moved(&mut self, items: &[(usize, bool)], via: &[Via]) {
        for (index, _) in items {
            if let Some(Via::Moved(loc)) = via.get(*index) {
                let freed = self.free(*loc);
                self.journal_bytes = self.journal_bytes.saturating_sub(freed);
                let stored = &self.shared.stored_bytes;
                stored.fetch_sub(freed.min(stored.load(Ordering::Relaxed)), Ordering::Relaxed);
                self.release(loc.segment);
            }
        }
    }

    /// Applies one command in its own transaction.
    fn commit_alone(
        &mut self,
        group: &[Command],
        item: (usize, bool),
        via: &[Via],
    ) -> Result<u64, SpoolError> {
        match self.apply_all(group, std::slice::from_ref(&item)) {
            Ok((effects, counts)) => {
                self.moved(std::slice::from_ref(&item), via);
                self.publish(effects);
                Ok(counts.first().copied().unwrap_or(0))
            }
            Err(error) => {
                let failed = match group.get(item.0) {
                    Some(Command::Ack {
                        id,
                        sink,
                        priority,
                        key,
                    }) => {
                        tracing::debug!(%id, "Acknowledgement kept for the next group");
                        self.pending_acks.push(Command::Ack {
                            id: *id,
                            sink: sink.clone(),
                            priority: *priority,
                            key: *key,
                        });
                        None
                    }
                    Some(Command::Nack { delivery: d, key }) => {
                        Some((d.sink.clone(), d.id, Some((d.priority, *key))))
                    }
                    Some(Command::DeadLetter { delivery: d, .. }) => Some((
                        d.sink.clone(),
                        d.id,
                        Some((d.priority, super::db::key_of(d))),
                    )),
                    _ => None,
                };
                if let Some((sink, id, position)) = failed {
                    // A journaled delivery that could not be moved stays journaled.
                    if let (Some(Via::Moved(loc)), Some((priority, key))) =
                        (via.get(item.0), position)
                    {
                        self.shared.queue(&sink).lock().index(priority, key, *loc);
                    }
                    self.publish(vec![Effect::Failed { sink, id }]);
                }
                Err(storage_failed(&error))
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
            Command::Sweep { reply, .. } => drop(reply.send(Ok(Swept::default()))),
            Command::Ack { .. } | Command::Nack { .. } | Command::DeadLetter { .. } => {}
        }
    }

    /// One transaction for the given commands of the group (each with whether it moves a
    /// journaled delivery). Nothing of the writer's state changes unless it commits.
    fn apply_all(
        &mut self,
        group: &[Command],
        items: &[(usize, bool)],
    ) -> rusqlite::Result<(Vec<Effect>, Vec<u64>)> {
        let tx = self.conn.transaction()?;
        let now = to_millis(SystemTime::now());
        let mut apply = Apply::new(&tx, self.next_id, now);
        let mut counts = Vec::with_capacity(items.len());
        for (index, moved) in items {
            let command = group.get(*index).ok_or(rusqlite::Error::InvalidQuery)?;
            counts.push(apply_one(&mut apply, command, *moved, &self.shared)?);
        }
        if let Some(below) = self.prune_moved {
            apply.prune_moved(below)?;
        }
        let Apply {
            next_id,
            effects,
            bytes,
            freed,
            seen,
            ..
        } = apply;
        tx.commit()?;
        self.next_id = next_id;
        self.prune_moved = None;
        self.committed(bytes, freed, seen);
        Ok((effects, counts))
    }

    /// Counts a commit's changes: stored bytes, freed bytes and sightings.
    fn committed(&mut self, bytes: i64, freed: u64, seen: i64) {
        self.freed += freed;
        let stored = &self.shared.stored_bytes;
        match u64::try_from(bytes) {
            Ok(grown) => stored.fetch_add(grown, Ordering::Relaxed),
            Err(_) => stored.fetch_sub(bytes.unsigned_abs(), Ordering::Relaxed),
        };
        let entries = &self.shared.seen_entries;
        match u64::try_from(seen) {
            Ok(added) => entries.fetch_add(added, Ordering::Relaxed),
            Err(_) => entries.fetch_sub(seen.unsigned_abs(), Ordering::Relaxed),
        };
        self.shared.commits.fetch_add(1, Ordering::Relaxed);
    }

    /// Deletes the sightings expired at `now` and the dead letters from before `dead_before`,
    /// [`SWEEP_ROWS`] at a time, each batch in its own transaction.
    fn sweep(&mut self, now: i64, dead_before: Option<i64>) -> rusqlite::Result<Swept> {
        let mut swept = Swept::default();
        loop {
            let tx = self.conn.transaction()?;
            let mut apply = Apply::new(&tx, self.next_id, now);
            let sightings = apply.expire_seen(SWEEP_ROWS)?;
            let dead_letters = match dead_before {
                Some(before) => apply.expire_dead_letters(before, SWEEP_ROWS)?,
                None => 0,
            };
            let (bytes, freed, seen) = (apply.bytes, apply.freed, apply.seen);
            drop(apply);
            if sightings == 0 && dead_letters == 0 {
                return Ok(swept);
            }
            tx.commit()?;
            self.committed(bytes, freed, seen);
            swept.sightings += sightings;
            swept.dead_letters += dead_letters;
            if sightings < SWEEP_ROWS as u64 && dead_letters < SWEEP_ROWS as u64 {
                self.vacuum();
                return Ok(swept);
            }
        }
    }

    /// Hands free pages back to the file system once enough was freed (a no-op for files
    /// made without incremental auto-vacuum, which reuse their free pages instead).
    fn vacuum(&mut self) {
        if self.space.low() {
            // `shrink` does it.
            return;
        }
        if self.freed < VACUUM_AFTER {
            return;
        }
        self.freed = 0;
        if let Err(error) = self.conn.execute_batch("PRAGMA incremental_vacuum") {
            tracing::warn!(%error, "Spool vacuum failed; free pages stay in the file");
        }
    }

    /// While disk space is short: hands the database's free pages back and truncates its
    /// WAL, at most every [`SHRINK_EVERY_MS`], so that drained deliveries free the disk.
    fn shrink(&mut self) {
        let now = to_millis(SystemTime::now());
        if now.saturating_sub(self.last_shrink) < SHRINK_EVERY_MS {
            return;
        }
        self.last_shrink = now;
        self.freed = 0;
        // The WAL first: checkpointed and truncated, it gives its blocks back, and the vacuum
        // writes into the WAL, which on a disk full to the last block it could not grow. Each
        // step is tried whatever the one before did; the last one moves the vacuum's pages
        // into the database file and truncates the WAL again.
        let checkpoint = |conn: &rusqlite::Connection| {
            conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        };
        let steps = [
            checkpoint(&self.conn),
            self.conn.execute_batch("PRAGMA incremental_vacuum"),
            checkpoint(&self.conn),
        ];
        for error in steps.into_iter().filter_map(Result::err) {
            tracing::debug!(%error, "Cannot shrink the spool database yet");
        }
    }

    fn publish(&self, effects: Vec<Effect>) {
        // Each sink's waiters are woken once, after all of the group's changes are in.
        let mut wake: Vec<Arc<super::cache::SinkQueue>> = Vec::new();
        let mut last: Option<(Arc<str>, Arc<super::cache::SinkQueue>)> = None;
        for effect in effects {
            let sink = match &effect {
                Effect::Stored(d) | Effect::Requeued(d) | Effect::Journaled(d, _) => d.sink.clone(),
                Effect::Removed { sink, .. }
                | Effect::Failed { sink, .. }
                | Effect::Added { sink, .. }
                | Effect::Purged { sink, .. } => sink.clone(),
            };
            // Effects of one sink come in runs: look its queue up once per run.
            let queue = match &last {
                Some((name, queue)) if *name == sink => queue.clone(),
                _ => {
                    let queue = self.shared.queue(&sink);
                    last = Some((sink, queue.clone()));
                    queue
                }
            };
            // Waiters are woken when something may have become leasable sooner: a removal
            // only does that when it releases an ordered successor.
            {
                let mut state = queue.lock();
                match effect {
                    Effect::Stored(d) => state.stored(d),
                    Effect::Journaled(d, loc) => state.journaled(d, loc),
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
            if !wake.iter().any(|q| Arc::ptr_eq(q, &queue)) {
                wake.push(queue);
            }
        }
        for queue in wake {
            queue.added.notify_waiters();
        }
    }
}

/// The same error for another caller of a failed group.
fn clone_error(error: &SpoolError) -> SpoolError {
    match error {
        SpoolError::Full { retry_after } => SpoolError::Full {
            retry_after: *retry_after,
        },
        SpoolError::Unreachable { store, retry_after } => SpoolError::Unreachable {
            store,
            retry_after: *retry_after,
        },
        SpoolError::Closed => SpoolError::Closed,
    }
}
