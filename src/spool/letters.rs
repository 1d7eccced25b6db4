//! The embedded spool's dead-letter store: reading records for the admin API, and the replay
//! and purge changes the writer applies.
//!
//! A record in `dead_letters` holds a reference to its event row (`events.pending`), so the
//! event stays stored for as long as the record does.

use std::collections::BTreeMap;
use std::sync::Arc;

use rusqlite::{params, Connection, OptionalExtension, Row};

use super::record::{decode_event, from_millis, to_millis};
use super::rows::{sql_id, Apply, Effect};
use super::{DeadLetter, DeadLetterId, DeadLetterQuery, DeadLetterRecord};

/// The filter every query shares; parameters ?1 to ?7 are [`filter_params`].
const FILTER: &str = "(?1 IS NULL OR l.id = ?1) AND (?2 IS NULL OR l.route = ?2)
    AND (?3 IS NULL OR l.sink = ?3) AND (?4 IS NULL OR l.reason = ?4)
    AND (?5 IS NULL OR l.dead_lettered_at >= ?5) AND (?6 IS NULL OR l.id > ?6)
    ORDER BY l.id LIMIT ?7";

type FilterParams<'q> = (
    Option<i64>,
    Option<&'q str>,
    Option<&'q str>,
    Option<&'q str>,
    Option<i64>,
    Option<i64>,
    i64,
);

fn filter_params(query: &DeadLetterQuery) -> FilterParams<'_> {
    (
        query.id.map(sql_id),
        query.route.as_deref(),
        query.sink.as_deref(),
        query.reason.as_deref(),
        query.since.map(to_millis),
        query.after.map(sql_id),
        i64::try_from(query.limit).unwrap_or(i64::MAX),
    )
}

/// The records a query selects; a record whose event cannot be decoded is logged and left
/// out.
pub(super) fn list(
    conn: &Connection,
    query: &DeadLetterQuery,
) -> rusqlite::Result<Vec<DeadLetterRecord>> {
    let sql = format!(
        "SELECT l.id, l.route, l.sink, l.reason, l.attempts, l.last_outcome, l.last_status,
                l.accepted_at, l.last_attempt_at, l.dead_lettered_at, e.record, e.data
         FROM dead_letters l JOIN events e ON e.id = l.event WHERE {FILTER}"
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(filter_params(query), read_record)?;
    let mut out = Vec::new();
    let mut bytes = 0;
    for row in rows {
        if !query.wants_more(out.len(), bytes) {
            break;
        }
        match row? {
            Ok(record) => {
                bytes += super::bounds::event_size(&record.event);
                out.push(record);
            }
            Err((id, error)) => {
                tracing::error!(dead_letter = id, %error, "Stored dead-letter event is unreadable; left out");
            }
        }
    }
    Ok(out)
}

type ReadRecord = Result<DeadLetterRecord, (DeadLetterId, serde_json::Error)>;

fn read_record(row: &Row<'_>) -> rusqlite::Result<ReadRecord> {
    let id = u64::try_from(row.get::<_, i64>(0)?).unwrap_or(0);
    let record: Vec<u8> = row.get(10)?;
    let event = match decode_event(&record, row.get(11)?) {
        Ok(event) => event,
        Err(error) => return Ok(Err((id, error))),
    };
    Ok(Ok(DeadLetterRecord {
        id,
        event: Arc::new(event),
        route: Arc::from(row.get::<_, String>(1)?),
        sink: Arc::from(row.get::<_, String>(2)?),
        accepted_at: from_millis(row.get(7)?),
        info: DeadLetter {
            reason: row.get(3)?,
            attempts: u32::try_from(row.get::<_, i64>(4)?).unwrap_or(u32::MAX),
            last_outcome: row.get(5)?,
            last_status: row
                .get::<_, Option<i64>>(6)?
                .and_then(|s| u16::try_from(s).ok()),
            last_attempt_at: row.get::<_, Option<i64>>(8)?.map(from_millis),
            dead_lettered_at: from_millis(row.get(9)?),
        },
    }))
}

impl Apply<'_, '_> {
    /// Turns the selected records back into deliveries due now, with no attempts and a fresh
    /// TTL; returns how many.
    pub(super) fn replay(&mut self, query: &DeadLetterQuery) -> rusqlite::Result<u64> {
        let sql =
            format!("SELECT l.id, l.event, l.route, l.sink FROM dead_letters l WHERE {FILTER}");
        let selected: Vec<(i64, i64, String, String)> = self
            .tx
            .prepare_cached(&sql)?
            .query_map(filter_params(query), |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })?
            .collect::<rusqlite::Result<_>>()?;
        let mut added: BTreeMap<String, usize> = BTreeMap::new();
        for (letter, event, route, sink) in &selected {
            let id = self.next_id;
            self.next_id += 1;
            self.tx
                .prepare_cached(
                    "INSERT INTO deliveries (id, event, route, sink, attempts, accepted_at,
                        not_before)
                     VALUES (?1, ?2, ?3, ?4, 0, ?5, ?5)",
                )?
                .execute(params![sql_id(id), event, route, sink, self.now])?;
            self.tx
                .prepare_cached("DELETE FROM dead_letters WHERE id = ?1")?
                .execute([letter])?;
            *added.entry(sink.clone()).or_default() += 1;
        }
        for (sink, count) in added {
            self.effects.push(Effect::Added {
                sink: Arc::from(sink),
                count,
            });
        }
        Ok(selected.len() as u64)
    }

    /// Deletes up to `limit` records dead-lettered before `before` (unix millis), oldest
    /// first, and releases their events; returns how many.
    pub(super) fn expire_dead_letters(&mut self, before: i64, limit: i64) -> rusqlite::Result<u64> {
        let events: Vec<i64> = self
            .tx
            .prepare_cached(
                "DELETE FROM dead_letters WHERE id IN
                   (SELECT id FROM dead_letters WHERE dead_lettered_at < ?1
                    ORDER BY dead_lettered_at LIMIT ?2)
                 RETURNING event",
            )?
            .query_map([before, limit], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        for event in &events {
            self.release_event(*event)?;
        }
        Ok(events.len() as u64)
    }

    /// Deletes one record and releases its event; returns 1 when it existed, else 0.
    pub(super) fn purge(&mut self, id: DeadLetterId) -> rusqlite::Result<u64> {
        let event: Option<i64> = self
            .tx
            .prepare_cached("DELETE FROM dead_letters WHERE id = ?1 RETURNING event")?
            .query_row([sql_id(id)], |r| r.get(0))
            .optional()?;
        match event {
            Some(event) => self.release_event(event).map(|()| 1),
            None => Ok(0),
        }
    }
}
