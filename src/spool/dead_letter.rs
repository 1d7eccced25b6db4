//! The dead-letter store's types: what is kept about a dead-lettered delivery, the stored
//! record, and the query that selects records for listing, replay and purge.
//!
//! Imports `event` only. Every backend keeps dead letters in the same step that removes the
//! delivery, whether or not a `dead_letter` sink is configured.

use std::sync::Arc;
use std::time::SystemTime;

use crate::event::Event;

/// Unique id of a stored dead letter; never reused within one spool.
pub type DeadLetterId = u64;

/// Most records one query returns.
pub const MAX_QUERY_LIMIT: usize = 1000;

/// Why and how a delivery was dead-lettered, in Event Grid's terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// Event Grid's `deadLetterReason` (`MaxDeliveryAttemptsExceeded`, …).
    pub reason: String,
    /// Attempts made (`deliveryAttempts`).
    pub attempts: u32,
    /// Outcome of the last attempt (`lastDeliveryOutcome`).
    pub last_outcome: Option<String>,
    /// HTTP status of the last attempt (`lastHttpStatusCode`).
    pub last_status: Option<u16>,
    /// When the last attempt was made (`lastDeliveryAttemptTime`).
    pub last_attempt_at: Option<SystemTime>,
    /// When the delivery was dead-lettered.
    pub dead_lettered_at: SystemTime,
}

/// A dead letter as stored: the original event, where it was going, and why it stopped.
#[derive(Debug, Clone)]
pub struct DeadLetterRecord {
    /// The record's id.
    pub id: DeadLetterId,
    /// The original event (without dead-letter attributes).
    pub event: Arc<Event>,
    /// The route that matched it.
    pub route: Arc<str>,
    /// The sink it was being delivered to.
    pub sink: Arc<str>,
    /// When the event was accepted (`publishTime`).
    pub accepted_at: SystemTime,
    /// Why and how it was dead-lettered.
    pub info: DeadLetter,
}

/// Selects dead letters: every set field must match. Results come in id order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetterQuery {
    /// Only this record.
    pub id: Option<DeadLetterId>,
    /// Only this route.
    pub route: Option<String>,
    /// Only this sink.
    pub sink: Option<String>,
    /// Only this reason.
    pub reason: Option<String>,
    /// Only records dead-lettered at or after this time.
    pub since: Option<SystemTime>,
    /// Only records with a larger id (the pagination cursor).
    pub after: Option<DeadLetterId>,
    /// At most this many records.
    pub limit: usize,
    /// Listing stops once the records' events reach this many bytes (whole size, see
    /// [`super::event_size`]): the record that reaches it is the last one, so a listing
    /// returns at least one record when any matches.
    pub max_bytes: u64,
}

impl Default for DeadLetterQuery {
    fn default() -> Self {
        Self {
            id: None,
            route: None,
            sink: None,
            reason: None,
            since: None,
            after: None,
            limit: MAX_QUERY_LIMIT,
            max_bytes: u64::MAX,
        }
    }
}

impl DeadLetterQuery {
    /// Whether a listing that holds `count` records of `bytes` may take one more.
    pub fn wants_more(&self, count: usize, bytes: u64) -> bool {
        count < self.limit && bytes < self.max_bytes
    }

    /// Whether `record` is selected (the limit aside).
    pub fn matches(&self, record: &DeadLetterRecord) -> bool {
        let text = |want: &Option<String>, have: &str| want.as_deref().is_none_or(|w| w == have);
        self.id.is_none_or(|id| record.id == id)
            && text(&self.route, &record.route)
            && text(&self.sink, &record.sink)
            && text(&self.reason, &record.info.reason)
            && self
                .since
                .is_none_or(|since| record.info.dead_lettered_at >= since)
            && self.after.is_none_or(|after| record.id > after)
    }
}
