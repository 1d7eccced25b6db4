//! The embedded spool's row changes, applied by the writer inside one transaction: puts (with
//! duplicate suppression), acks, nacks, dead-letters and sink purges, and the effects each has
//! on the in-memory sink queues once the transaction commits.
//!
//! Event rows are shared: `events.pending` counts the deliveries and dead letters that refer
//! to a row, and the row goes with its last reference. Every stored or freed row changes the
//! byte count that `spool.max_bytes` bounds.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rusqlite::{params, CachedStatement, OptionalExtension, Transaction};

use super::bounds::{seen_entry_size, SEEN_ENTRY_OVERHEAD};
use super::record::{round_millis, to_millis, EncodedEvent, FRAMING};
use super::{DeadLetter, Delivery, DeliveryId, NewDelivery, SpoolError};
use crate::event::Event;

/// Deliveries of one `put`, with their events encoded once each.
#[derive(Debug)]
pub(super) struct PutBatch {
    /// Distinct events, with how many deliveries refer to each.
    pub(super) events: Vec<(EncodedEvent, i64)>,
    /// Deliveries, each with the index of its event in `events`.
    pub(super) deliveries: Vec<(usize, NewDelivery)>,
    /// With duplicate suppression: the window, and each event's (`source`, `id`) in the order
    /// of `events`.
    pub(super) unique: Option<(Duration, Vec<(String, String)>)>,
}

impl PutBatch {
    /// Bytes the batch stores at most: its events, and a sighting for each of them.
    pub(super) fn bytes(&self) -> u64 {
        let events: u64 = self.events.iter().map(|(e, _)| e.bytes()).sum();
        let sightings: u64 = self.unique.as_ref().map_or(0, |(_, keys)| {
            keys.iter().map(|(s, i)| seen_entry_size(s, i)).sum()
        });
        events + sightings
    }
}

/// Groups a put's deliveries by event (deliveries of one event share its `Arc`) and encodes
/// each event once, on the caller's task rather than the writer thread. With a `window`, each
/// event's (`source`, `id`) goes along for duplicate suppression.
pub(super) fn encode_put(
    deliveries: Vec<NewDelivery>,
    window: Option<Duration>,
) -> Result<PutBatch, SpoolError> {
    // The deliveries of one event come together: only a repeat after another event needs
    // the map (so a one-event put allocates none).
    let mut last: Option<(*const Event, usize)> = None;
    let mut index: HashMap<*const Event, usize> = HashMap::new();
    let mut batch = PutBatch {
        events: Vec::new(),
        deliveries: Vec::with_capacity(deliveries.len()),
        unique: window.map(|w| (w, Vec::new())),
    };
    for delivery in deliveries {
        let ptr = Arc::as_ptr(&delivery.event);
        let known = match last {
            Some((p, slot)) if p == ptr => Some(slot),
            _ => index.get(&ptr).copied(),
        };
        let slot = match known {
            Some(slot) => slot,
            None => {
                let encoded = EncodedEvent::encode(&delivery.event);
                batch.events.push((encoded, 0));
                if let Some((_, keys)) = &mut batch.unique {
                    let ev = &delivery.event;
                    keys.push((ev.source.clone(), ev.id.clone()));
                }
                batch.events.len() - 1
            }
        };
        if let Some((p, s)) = last.filter(|(p, _)| *p != ptr) {
            index.insert(p, s);
        }
        last = Some((ptr, slot));
        if let Some((_, pending)) = batch.events.get_mut(slot) {
            *pending += 1;
        }
        batch.deliveries.push((slot, delivery));
    }
    Ok(batch)
}

/// A dead-letter's forward delivery.
#[derive(Debug)]
pub(super) struct Forward {
    pub(super) event: EncodedEvent,
    /// The forward carries the dead-lettered delivery's own event: reuse its row.
    pub(super) same_event: bool,
    pub(super) delivery: NewDelivery,
}

/// A committed change, published to the sink queues after the commit.
#[derive(Debug)]
pub(super) enum Effect {
    Stored(Delivery),
    /// Stored in the journal, with where its record lies.
    Journaled(Delivery, super::journal::Loc),
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
    /// Deliveries were added on disk only (replayed dead letters): the cache must re-read.
    Added {
        sink: Arc<str>,
        count: usize,
    },
    /// Unleased deliveries were purged: the cache must forget them.
    Purged {
        sink: Arc<str>,
        ids: Vec<DeliveryId>,
    },
}

/// One transaction's changes and what they amount to.
pub(super) struct Apply<'t, 'c> {
    pub(super) tx: &'t Transaction<'c>,
    /// Next delivery id.
    pub(super) next_id: u64,
    pub(super) effects: Vec<Effect>,
    /// Change in stored event bytes.
    pub(super) bytes: i64,
    /// Event bytes deleted.
    pub(super) freed: u64,
    /// Change in the number of sightings.
    pub(super) seen: i64,
    /// The transaction's wall-clock time, in unix millis.
    pub(super) now: i64,
}

const INSERT_EVENT: &str = "INSERT INTO events (pending, record, data) VALUES (?1, ?2, ?3)";

const INSERT_DELIVERY: &str =
    "INSERT INTO deliveries (id, event, route, sink, attempts, accepted_at, not_before,
        priority, ordering_key)
     VALUES (?1, ?2, ?3, ?4, 0, ?5, ?6, ?7, ?8)";

pub(super) fn sql_id(id: u64) -> i64 {
    i64::try_from(id).unwrap_or(i64::MAX)
}

fn removed(sink: &Arc<str>, id: DeliveryId, existed: bool) -> Effect {
    Effect::Removed {
        sink: sink.clone(),
        id,
        existed,
    }
}

impl<'t, 'c> Apply<'t, 'c> {
    /// Changes made in `tx`, numbering new deliveries from `next_id`, at `now`.
    pub(super) fn new(tx: &'t Transaction<'c>, next_id: u64, now: i64) -> Self {
        Self {
            tx,
            next_id,
            effects: Vec::new(),
            bytes: 0,
            freed: 0,
            seen: 0,
            now,
        }
    }

    /// Stores a batch; returns how many of its events were dropped as duplicates.
    pub(super) fn put(&mut self, batch: &PutBatch) -> rusqlite::Result<u64> {
        let mut rows = Vec::with_capacity(batch.events.len());
        let mut duplicates = 0;
        // Looked up once per put rather than once per row: a batch inserts many rows.
        let mut insert_event = self.tx.prepare_cached(INSERT_EVENT)?;
        for (index, (event, pending)) in batch.events.iter().enumerate() {
            let key = batch
                .unique
                .as_ref()
                .and_then(|(w, keys)| Some((*w, keys.get(index)?)));
            if let Some((window, (source, id))) = key {
                if !self.first_sighting(source, id, window)? {
                    duplicates += 1;
                    rows.push(None);
                    continue;
                }
            }
            rows.push(Some(self.insert_event_with(
                &mut insert_event,
                event,
                *pending,
            )?));
        }
        drop(insert_event);
        let mut insert_delivery = self.tx.prepare_cached(INSERT_DELIVERY)?;
        self.effects.reserve(batch.deliveries.len());
        for (index, delivery) in &batch.deliveries {
            let row = rows.get(*index).ok_or(rusqlite::Error::InvalidQuery)?;
            if let Some(row) = *row {
                let stored = self.insert_delivery_with(&mut insert_delivery, row, delivery)?;
                self.effects.push(Effect::Stored(stored));
            }
        }
        Ok(duplicates)
    }

    /// Records (`source`, `id`) as seen for `window`; `false` when it already was, unexpired.
    fn first_sighting(
        &mut self,
        source: &str,
        id: &str,
        window: Duration,
    ) -> rusqlite::Result<bool> {
        let expires: Option<i64> = self
            .tx
            .prepare_cached("SELECT expires_at FROM seen WHERE source = ?1 AND id = ?2")?
            .query_row([source, id], |r| r.get(0))
            .optional()?;
        if expires.is_some_and(|at| at > self.now) {
            return Ok(false);
        }
        let window = i64::try_from(window.as_millis()).unwrap_or(i64::MAX);
        self.tx
            .prepare_cached(
                "INSERT INTO seen (source, id, expires_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (source, id) DO UPDATE SET expires_at = excluded.expires_at",
            )?
            .execute(params![source, id, self.now.saturating_add(window)])?;
        if expires.is_none() {
            self.seen += 1;
            self.bytes += i64::try_from(seen_entry_size(source, id)).unwrap_or(i64::MAX);
        }
        Ok(true)
    }

    /// Forgets up to `limit` sightings expired at `now`, oldest first; returns how many.
    pub(super) fn expire_seen(&mut self, limit: i64) -> rusqlite::Result<u64> {
        let sizes: Vec<i64> = self
            .tx
            .prepare_cached(
                "DELETE FROM seen WHERE rowid IN
                   (SELECT rowid FROM seen WHERE expires_at <= ?1 ORDER BY expires_at LIMIT ?2)
                 RETURNING length(CAST(source AS BLOB)) + length(CAST(id AS BLOB))",
            )?
            .query_map([self.now, limit], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        let count = sizes.len() as u64;
        let overhead = i64::try_from(SEEN_ENTRY_OVERHEAD).unwrap_or(0);
        let bytes: i64 = sizes.iter().map(|s| s + overhead).sum();
        self.bytes -= bytes;
        self.freed += u64::try_from(bytes).unwrap_or(0);
        self.seen -= i64::try_from(count).unwrap_or(0);
        Ok(count)
    }

    pub(super) fn insert_event(
        &mut self,
        event: &EncodedEvent,
        pending: i64,
    ) -> rusqlite::Result<i64> {
        let mut stmt = self.tx.prepare_cached(INSERT_EVENT)?;
        self.insert_event_with(&mut stmt, event, pending)
    }

    fn insert_event_with(
        &mut self,
        stmt: &mut CachedStatement<'_>,
        event: &EncodedEvent,
        pending: i64,
    ) -> rusqlite::Result<i64> {
        stmt.execute(params![pending, event.record, event.data.as_deref()])?;
        self.bytes += i64::try_from(event.bytes()).unwrap_or(i64::MAX);
        Ok(self.tx.last_insert_rowid())
    }

    pub(super) fn insert_delivery(
        &mut self,
        event_row: i64,
        new: &NewDelivery,
    ) -> rusqlite::Result<Delivery> {
        let mut stmt = self.tx.prepare_cached(INSERT_DELIVERY)?;
        self.insert_delivery_with(&mut stmt, event_row, new)
    }

    fn insert_delivery_with(
        &mut self,
        stmt: &mut CachedStatement<'_>,
        event_row: i64,
        new: &NewDelivery,
    ) -> rusqlite::Result<Delivery> {
        let id = self.next_id;
        self.next_id += 1;
        let delivery = Delivery::stored(id, new);
        stmt.execute(params![
            sql_id(id),
            event_row,
            &*delivery.route,
            &*delivery.sink,
            to_millis(delivery.accepted_at),
            to_millis(delivery.not_before),
            delivery.priority as i64,
            delivery.ordering_key.as_deref(),
        ])?;
        Ok(delivery)
    }

    /// Copies a journaled delivery, as it stands, into the database under its own id, and
    /// records that it moved so that recovery does not take it from the journal too.
    pub(super) fn materialize(&mut self, delivery: &Delivery) -> rusqlite::Result<()> {
        let event = EncodedEvent::encode(&delivery.event);
        let row = self.insert_event(&event, 1)?;
        self.tx
            .prepare_cached(
                "INSERT INTO deliveries (id, event, route, sink, attempts, accepted_at,
                    not_before, last_outcome, last_status, last_attempt_at, priority,
                    ordering_key)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
            )?
            .execute(params![
                sql_id(delivery.id),
                row,
                &*delivery.route,
                &*delivery.sink,
                i64::from(delivery.attempts),
                to_millis(delivery.accepted_at),
                to_millis(delivery.not_before),
                delivery.last_outcome,
                delivery.last_status.map(i64::from),
                delivery.last_attempt_at.map(to_millis),
                delivery.priority as i64,
                delivery.ordering_key.as_deref(),
            ])?;
        self.tx
            .prepare_cached("INSERT OR IGNORE INTO journal_moved (id) VALUES (?1)")?
            .execute([sql_id(delivery.id)])?;
        Ok(())
    }

    /// Forgets moves of deliveries whose journal records are all deleted.
    pub(super) fn prune_moved(&self, below: DeliveryId) -> rusqlite::Result<usize> {
        super::db::prune_moved(self.tx, below)
    }

    /// The delivery succeeded: delete it.
    pub(super) fn ack(&mut self, id: DeliveryId, sink: &Arc<str>) -> rusqlite::Result<()> {
        let event = self.delete_delivery(id)?;
        if let Some(event) = event {
            self.release_event(event)?;
        }
        self.effects.push(removed(sink, id, event.is_some()));
        Ok(())
    }

    /// Deletes a delivery row; returns its event's row when it was there.
    fn delete_delivery(&self, id: DeliveryId) -> rusqlite::Result<Option<i64>> {
        self.tx
            .prepare_cached("DELETE FROM deliveries WHERE id = ?1 RETURNING event")?
            .query_row([sql_id(id)], |r| r.get(0))
            .optional()
    }

    /// Drops one reference to an event row, deleting the row with its last reference.
    ///
    /// The delete is tried first: most events have one delivery, and their row then goes in
    /// one statement without being rewritten with a lower count.
    pub(super) fn release_event(&mut self, event: i64) -> rusqlite::Result<()> {
        let size: Option<i64> = self
            .tx
            .prepare_cached(
                "DELETE FROM events WHERE id = ?1 AND pending <= 1
                 RETURNING length(record) + ifnull(length(data), 0) + ?2",
            )?
            .query_row([event, i64::try_from(FRAMING).unwrap_or(0)], |r| r.get(0))
            .optional()?;
        match size {
            Some(size) => {
                self.bytes -= size;
                self.freed += u64::try_from(size).unwrap_or(0);
            }
            None => {
                self.tx
                    .prepare_cached("UPDATE events SET pending = pending - 1 WHERE id = ?1")?
                    .execute([event])?;
            }
        }
        Ok(())
    }

    /// Deletes up to `limit` deliveries of `sink`, sparing the `leased` ones, and releases
    /// their events; returns how many.
    pub(super) fn purge_sink(
        &mut self,
        sink: &Arc<str>,
        leased: &[DeliveryId],
        limit: usize,
    ) -> rusqlite::Result<u64> {
        // The leased ids go in as one JSON array, so the statement stays the same and cached.
        let spared = serde_json::to_string(leased).map_err(|_| rusqlite::Error::InvalidQuery)?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let deleted: Vec<(i64, i64)> = self
            .tx
            .prepare_cached(
                "DELETE FROM deliveries WHERE id IN
                   (SELECT id FROM deliveries WHERE sink = ?1
                      AND id NOT IN (SELECT value FROM json_each(?2)) LIMIT ?3)
                 RETURNING id, event",
            )?
            .query_map(params![&**sink, spared, limit], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?
            .collect::<rusqlite::Result<_>>()?;
        let mut ids = Vec::with_capacity(deleted.len());
        for (id, event) in deleted {
            self.release_event(event)?;
            ids.push(u64::try_from(id).unwrap_or(0));
        }
        let count = ids.len() as u64;
        if !ids.is_empty() {
            self.effects.push(Effect::Purged {
                sink: sink.clone(),
                ids,
            });
        }
        Ok(count)
    }

    pub(super) fn nack(&mut self, delivery: &Delivery) -> rusqlite::Result<()> {
        let mut delivery = delivery.clone();
        delivery.not_before = round_millis(delivery.not_before);
        delivery.last_attempt_at = delivery.last_attempt_at.map(round_millis);
        let changed = self
            .tx
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
        self.effects.push(if changed == 0 {
            removed(&delivery.sink, delivery.id, false)
        } else {
            Effect::Requeued(delivery)
        });
        Ok(())
    }

    /// Moves a delivery into the dead-letter store (its event row stays referenced by the
    /// record) and stores its forward delivery, when there is one.
    pub(super) fn dead_letter(
        &mut self,
        (id, sink): (DeliveryId, &Arc<str>),
        info: &DeadLetter,
        forward: Option<&Forward>,
    ) -> rusqlite::Result<()> {
        self.tx
            .prepare_cached(
                "INSERT INTO dead_letters (event, route, sink, reason, attempts, last_outcome,
                    last_status, accepted_at, last_attempt_at, dead_lettered_at)
                 SELECT event, route, sink, ?2, ?3, ?4, ?5, accepted_at, ?6, ?7
                 FROM deliveries WHERE id = ?1",
            )?
            .execute(params![
                sql_id(id),
                info.reason,
                i64::from(info.attempts),
                info.last_outcome,
                info.last_status.map(i64::from),
                info.last_attempt_at.map(to_millis),
                to_millis(info.dead_lettered_at),
            ])?;
        let event = self.delete_delivery(id)?;
        self.effects.push(removed(sink, id, event.is_some()));
        let Some(forward) = forward else {
            return Ok(());
        };
        let row = match event.filter(|_| forward.same_event) {
            Some(row) => {
                self.tx
                    .prepare_cached("UPDATE events SET pending = pending + 1 WHERE id = ?1")?
                    .execute([row])?;
                row
            }
            None => self.insert_event(&forward.event, 1)?,
        };
        let stored = self.insert_delivery(row, &forward.delivery)?;
        self.effects.push(Effect::Stored(stored));
        Ok(())
    }
}
