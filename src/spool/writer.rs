//! The embedded spool's writer thread: the only code that changes the database.
//!
//! It takes everything queued on its channel — puts, acks, nacks and dead-letters from any
//! number of callers — applies it in one transaction with one fsync'd commit (group commit),
//! then publishes the changes to the per-sink queues and answers the callers. Order on the
//! channel is the order of application.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use rusqlite::{params, Connection, OptionalExtension, Transaction};
use tokio::sync::{mpsc, oneshot};

use super::embedded::{storage_failed, Shared};
use super::record::{round_millis, to_millis, EncodedEvent};
use super::{Delivery, DeliveryId, NewDelivery, SpoolError};

/// Most commands applied in one transaction; bounds a commit's size and latency.
const MAX_GROUP: usize = 4096;

/// Deliveries of one `put`, with their events encoded once each.
#[derive(Debug)]
pub(super) struct PutBatch {
    /// Distinct events, with how many deliveries refer to each.
    pub(super) events: Vec<(EncodedEvent, i64)>,
    /// Deliveries, each with the index of its event in `events`.
    pub(super) deliveries: Vec<(usize, NewDelivery)>,
}

/// A dead-letter's forward delivery.
#[derive(Debug)]
pub(super) struct Forward {
    pub(super) event: EncodedEvent,
    /// The forward carries the dead-lettered delivery's own event: reuse its row.
    pub(super) same_event: bool,
    pub(super) delivery: NewDelivery,
}

/// What the writer is asked to do.
#[derive(Debug)]
pub(super) enum Command {
    Put {
        batch: PutBatch,
        reply: oneshot::Sender<Result<(), SpoolError>>,
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
        forward: Option<Forward>,
    },
    /// Commit what came before, answer, and stop taking commands.
    Close(oneshot::Sender<()>),
}

/// A committed change, published to the sink queues after the commit.
#[derive(Debug)]
enum Effect {
    Stored(Delivery),
    Removed {
        sink: Arc<str>,
        id: DeliveryId,
        existed: bool,
    },
    Requeued(Delivery),
    Failed {
        sink: Arc<str>,
        id: DeliveryId,
    },
}

/// The writer thread's state.
pub(super) struct Writer {
    pub(super) conn: Connection,
    pub(super) shared: Arc<Shared>,
    pub(super) commands: mpsc::Receiver<Command>,
    /// Next delivery id; ids are never reused within a process, so a stale ack cannot hit a
    /// newer delivery.
    pub(super) next_id: u64,
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
            self.commit_group(group);
        }
    }

    fn commit_group(&mut self, group: Vec<Command>) {
        let start_id = self.next_id;
        match self.apply_all(&group) {
            Ok(effects) => {
                self.publish(effects);
                for command in group {
                    self.answer(command, Ok(()));
                }
            }
            Err(error) => {
                self.next_id = start_id;
                tracing::error!(%error, commands = group.len(), "Spool group commit failed; retrying one by one");
                for command in group {
                    self.commit_alone(command);
                }
            }
        }
    }

    /// Applies one command in its own transaction, so one bad command fails alone.
    fn commit_alone(&mut self, command: Command) {
        let start_id = self.next_id;
        match self.apply_all(std::slice::from_ref(&command)) {
            Ok(effects) => {
                self.publish(effects);
                self.answer(command, Ok(()));
            }
            Err(error) => {
                self.next_id = start_id;
                let failed = match &command {
                    Command::Ack { id, sink } | Command::DeadLetter { id, sink, .. } => {
                        Some((sink.clone(), *id))
                    }
                    Command::Nack(d) => Some((d.sink.clone(), d.id)),
                    Command::Put { .. } | Command::Close(_) => None,
                };
                if let Some((sink, id)) = failed {
                    self.publish(vec![Effect::Failed { sink, id }]);
                }
                self.answer(command, Err(storage_failed(&error)));
            }
        }
    }

    fn answer(&mut self, command: Command, result: Result<(), SpoolError>) {
        match command {
            // The caller may have gone away (its request was cancelled); what was stored stays.
            Command::Put { reply, .. } => drop(reply.send(result)),
            Command::Close(reply) => {
                self.commands.close();
                reply.send(()).unwrap_or(());
            }
            Command::Ack { .. } | Command::Nack(_) | Command::DeadLetter { .. } => {}
        }
    }

    fn apply_all(&mut self, group: &[Command]) -> rusqlite::Result<Vec<Effect>> {
        let tx = self.conn.transaction()?;
        let mut effects = Vec::new();
        let mut next_id = self.next_id;
        for command in group {
            match command {
                Command::Put { batch, .. } => put(&tx, batch, &mut next_id, &mut effects)?,
                Command::Ack { id, sink } => {
                    let existed = remove(&tx, *id)?.is_some();
                    effects.push(removed(sink, *id, existed));
                }
                Command::Nack(delivery) => effects.push(nack(&tx, delivery)?),
                Command::DeadLetter { id, sink, forward } => {
                    dead_letter(
                        &tx,
                        (*id, sink),
                        forward.as_ref(),
                        &mut next_id,
                        &mut effects,
                    )?;
                }
                Command::Close(_) => {}
            }
        }
        tx.commit()?;
        self.next_id = next_id;
        self.shared.commits.fetch_add(1, Ordering::Relaxed);
        Ok(effects)
    }

    fn publish(&self, effects: Vec<Effect>) {
        for effect in effects {
            let sink = match &effect {
                Effect::Stored(d) | Effect::Requeued(d) => d.sink.clone(),
                Effect::Removed { sink, .. } | Effect::Failed { sink, .. } => sink.clone(),
            };
            // Waiters are woken when something may have become leasable sooner.
            let wake = !matches!(effect, Effect::Removed { .. });
            let queue = self.shared.queue(&sink);
            {
                let mut state = queue.lock();
                match effect {
                    Effect::Stored(d) => state.stored(d),
                    Effect::Requeued(d) => state.requeued(d),
                    Effect::Removed { id, existed, .. } => state.removed(id, existed),
                    Effect::Failed { id, .. } => state.failed(id),
                }
            }
            if wake {
                queue.added.notify_waiters();
            }
        }
    }
}

fn removed(sink: &Arc<str>, id: DeliveryId, existed: bool) -> Effect {
    Effect::Removed {
        sink: sink.clone(),
        id,
        existed,
    }
}

fn sql_id(id: u64) -> i64 {
    i64::try_from(id).unwrap_or(i64::MAX)
}

fn put(
    tx: &Transaction<'_>,
    batch: &PutBatch,
    next_id: &mut u64,
    effects: &mut Vec<Effect>,
) -> rusqlite::Result<()> {
    let mut rows = Vec::with_capacity(batch.events.len());
    for (event, pending) in &batch.events {
        rows.push(insert_event(tx, event, *pending)?);
    }
    for (index, delivery) in &batch.deliveries {
        let row = rows
            .get(*index)
            .copied()
            .ok_or(rusqlite::Error::InvalidQuery)?;
        effects.push(Effect::Stored(insert_delivery(tx, row, delivery, next_id)?));
    }
    Ok(())
}

fn insert_event(tx: &Transaction<'_>, event: &EncodedEvent, pending: i64) -> rusqlite::Result<i64> {
    tx.prepare_cached("INSERT INTO events (pending, record, data) VALUES (?1, ?2, ?3)")?
        .execute(params![pending, event.record, event.data.as_deref()])?;
    Ok(tx.last_insert_rowid())
}

fn insert_delivery(
    tx: &Transaction<'_>,
    event_row: i64,
    new: &NewDelivery,
    next_id: &mut u64,
) -> rusqlite::Result<Delivery> {
    let id = *next_id;
    *next_id += 1;
    let delivery = Delivery {
        id,
        event: new.event.clone(),
        route: new.route.clone(),
        sink: new.sink.clone(),
        attempts: 0,
        accepted_at: round_millis(new.accepted_at),
        not_before: round_millis(new.not_before),
        last_outcome: None,
        last_status: None,
        last_attempt_at: None,
    };
    tx.prepare_cached(
        "INSERT INTO deliveries (id, event, route, sink, attempts, accepted_at, not_before)
         VALUES (?1, ?2, ?3, ?4, 0, ?5, ?6)",
    )?
    .execute(params![
        sql_id(id),
        event_row,
        &*delivery.route,
        &*delivery.sink,
        to_millis(delivery.accepted_at),
        to_millis(delivery.not_before),
    ])?;
    Ok(delivery)
}

/// Deletes a delivery; returns its event's row when it was there.
fn remove(tx: &Transaction<'_>, id: DeliveryId) -> rusqlite::Result<Option<i64>> {
    let event: Option<i64> = tx
        .prepare_cached("DELETE FROM deliveries WHERE id = ?1 RETURNING event")?
        .query_row([sql_id(id)], |r| r.get(0))
        .optional()?;
    if let Some(event) = event {
        release_event(tx, event)?;
    }
    Ok(event)
}

/// Drops one reference to an event row, deleting the row with its last delivery.
fn release_event(tx: &Transaction<'_>, event: i64) -> rusqlite::Result<()> {
    let pending: i64 = tx
        .prepare_cached("UPDATE events SET pending = pending - 1 WHERE id = ?1 RETURNING pending")?
        .query_row([event], |r| r.get(0))?;
    if pending <= 0 {
        tx.prepare_cached("DELETE FROM events WHERE id = ?1")?
            .execute([event])?;
    }
    Ok(())
}

fn nack(tx: &Transaction<'_>, delivery: &Delivery) -> rusqlite::Result<Effect> {
    let mut delivery = delivery.clone();
    delivery.not_before = round_millis(delivery.not_before);
    delivery.last_attempt_at = delivery.last_attempt_at.map(round_millis);
    let changed = tx
        .prepare_cached(
            "UPDATE deliveries SET attempts = ?2, not_before = ?3, last_outcome = ?4,
                last_status = ?5, last_attempt_at = ?6
             WHERE id = ?1",
        )?
        .execute(params![
            sql_id(delivery.id),
            i64::from(delivery.attempts),
            to_millis(delivery.not_before),
            delivery.last_outcome,
            delivery.last_status.map(i64::from),
            delivery.last_attempt_at.map(to_millis),
        ])?;
    Ok(if changed == 0 {
        removed(&delivery.sink, delivery.id, false)
    } else {
        Effect::Requeued(delivery)
    })
}

fn dead_letter(
    tx: &Transaction<'_>,
    (id, sink): (DeliveryId, &Arc<str>),
    forward: Option<&Forward>,
    next_id: &mut u64,
    effects: &mut Vec<Effect>,
) -> rusqlite::Result<()> {
    let event: Option<i64> = tx
        .prepare_cached("DELETE FROM deliveries WHERE id = ?1 RETURNING event")?
        .query_row([sql_id(id)], |r| r.get(0))
        .optional()?;
    effects.push(removed(sink, id, event.is_some()));
    let reuse = event.filter(|_| forward.is_some_and(|f| f.same_event));
    if let (Some(event), None) = (event, reuse) {
        release_event(tx, event)?;
    }
    if let Some(forward) = forward {
        let row = match reuse {
            Some(row) => row,
            None => insert_event(tx, &forward.event, 1)?,
        };
        let stored = insert_delivery(tx, row, &forward.delivery, next_id)?;
        effects.push(Effect::Stored(stored));
    }
    Ok(())
}
