//! The spool's decoders of stored bytes, for the fuzz targets (see `crate::fuzzing`): journal
//! recovery and record reads, event records, NATS messages. Not a stable interface.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;

use super::journal::{Journal, Loc, ReadError, Segments, SEGMENT_BYTES};
use super::nats::record::{sink_of, token, Record};
use super::record::{decode_event, EncodedEvent};
use super::{DeadLetterRecord, Delivery, DeliveryId, OpenError};
use crate::event::Event;

/// What recovery made of a journal directory.
#[derive(Debug)]
pub struct JournalRecovery {
    /// The largest delivery id the segments hold.
    pub max_id: DeliveryId,
    /// Each delivery recovery found, read back from its record.
    pub deliveries: Vec<RecoveredDelivery>,
}

/// One delivery found by recovery, and what reading its record gave.
#[derive(Debug)]
pub struct RecoveredDelivery {
    /// Its id.
    pub id: DeliveryId,
    /// Its sink.
    pub sink: String,
    /// The delivery as the lease path reads it.
    pub read: Result<Delivery, JournalReadFault>,
}

/// Why a recovered delivery's record could not be read.
#[derive(Debug)]
pub enum JournalReadFault {
    /// The segment could not be read, or its bytes at the delivery's place are no record of
    /// it: recovery pointed at something that is not there.
    Lost(String),
    /// The record is whole but its event does not decode.
    Event(String),
}

/// Runs journal recovery over the segment files in `dir`, as opening the embedded spool
/// does, then reads every delivery it found as a lease would.
pub fn recover_journal(dir: &Path) -> Result<JournalRecovery, OpenError> {
    let mut found: Vec<(String, DeliveryId, Loc)> = Vec::new();
    let (journal, recovery) = Journal::open(dir, &HashSet::new(), SEGMENT_BYTES, |r| {
        found.push((r.sink.to_owned(), r.key.1, r.loc));
    })?;
    let segments = Segments::new(dir.to_owned());
    let deliveries = found
        .into_iter()
        .map(|(sink, id, loc)| {
            let read = segments
                .read(loc, id, &Arc::from(sink.as_str()))
                .map_err(|e| match e {
                    ReadError::Event { .. } => JournalReadFault::Event(e.to_string()),
                    ReadError::Io { .. } | ReadError::Damaged { .. } => {
                        JournalReadFault::Lost(e.to_string())
                    }
                });
            RecoveredDelivery { id, sink, read }
        })
        .collect();
    drop(journal);
    Ok(JournalRecovery {
        max_id: recovery.max_id,
        deliveries,
    })
}

/// Decodes an event record and its payload (an `events` row, a journal put).
pub fn decode_spool_record(record: &[u8], data: Option<&[u8]>) -> Result<Event, String> {
    decode_event(record, data.map(<[u8]>::to_vec)).map_err(|e| e.to_string())
}

/// Encodes an event as a record and its payload, as the embedded spool stores it.
pub fn encode_spool_record(event: &Event) -> (Vec<u8>, Option<Bytes>) {
    let encoded = EncodedEvent::encode(event);
    (encoded.record, encoded.data)
}

/// Reads a NATS spool message as a delivery (leased under `id`).
pub fn decode_nats_delivery(bytes: &[u8], id: u64) -> Result<Delivery, String> {
    Record::parse(bytes)
        .and_then(|r| r.into_delivery(id))
        .map_err(|e| e.to_string())
}

/// Reads a NATS spool message as a dead letter (under `id`).
pub fn decode_nats_dead_letter(bytes: &[u8], id: u64) -> Result<DeadLetterRecord, String> {
    Record::parse(bytes)
        .and_then(|r| r.into_dead_letter(id))
        .map_err(|e| e.to_string())
}

/// The NATS spool message of a delivery that waits for a retry.
pub fn encode_nats_delivery(delivery: &Delivery) -> Bytes {
    Record::retry(delivery, delivery.not_before).to_bytes()
}

/// A sink name as a NATS subject token.
pub fn nats_token(sink: &str) -> String {
    token(sink)
}

/// The sink name a NATS subject token was made from.
pub fn nats_sink_of(token: &str) -> Option<String> {
    sink_of(token)
}
