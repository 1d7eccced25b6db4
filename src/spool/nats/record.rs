//! What a JetStream message of the spool holds: a versioned delivery record (the event as
//! structured CloudEvents JSON, where it goes, its attempts), and the names derived from sink
//! names (subject tokens, consumer names).

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::event::http::{decode_structured, encode_structured};
use crate::spool::{DeadLetter, DeadLetterId, DeadLetterRecord, Delivery, NewDelivery, Priority};

/// A stored record. Its `v` field names the layout, so that a later version can read
/// messages an older one wrote. (Not a tagged enum: serde buffers tagged content, which a
/// raw JSON value cannot pass through.)
#[derive(Debug, Serialize, Deserialize)]
#[serde(transparent)]
pub(in crate::spool) struct Record(RecordV1);

/// Version 1 of the record. Times are microseconds since the Unix epoch.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct RecordV1 {
    v: u32,
    event: Box<RawValue>,
    route: String,
    sink: String,
    attempts: u32,
    accepted_at: u64,
    not_before: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    last_outcome: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    last_status: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    last_attempt_at: Option<u64>,
    /// `Priority` as its number (0 high, 1 normal, 2 low).
    #[serde(default = "normal")]
    priority: u8,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ordering_key: Option<String>,
    /// Set on dead letters only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    dead: Option<DeadV1>,
}

/// Why a dead letter stopped (the [`DeadLetter`] fields).
#[derive(Debug, Serialize, Deserialize)]
struct DeadV1 {
    reason: String,
    at: u64,
}

/// A stored record could not be read back.
#[derive(Debug, thiserror::Error)]
pub(in crate::spool) enum RecordError {
    /// The JSON of the record is malformed.
    #[error("malformed spool record")]
    Json(#[from] serde_json::Error),
    /// The event inside it is not a valid CloudEvent.
    #[error("malformed event in spool record")]
    Event(#[from] crate::event::DecodeError),
}

fn normal() -> u8 {
    Priority::Normal as u8
}

fn priority(n: u8) -> Priority {
    Priority::ALL
        .into_iter()
        .find(|p| *p as u8 == n)
        .unwrap_or_default()
}

fn micros(t: SystemTime) -> u64 {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    u64::try_from(since.as_micros()).unwrap_or(u64::MAX)
}

fn time(micros: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_micros(micros)
}

fn raw_event(event: &crate::event::Event) -> Box<RawValue> {
    let json = String::from_utf8(encode_structured(event)).unwrap_or_default();
    // `encode_structured` always writes one JSON object.
    RawValue::from_string(json).unwrap_or_else(|_| RawValue::NULL.to_owned())
}

impl Record {
    /// A new delivery, before its first attempt.
    pub(super) fn new(d: &NewDelivery) -> Self {
        Self(RecordV1 {
            v: 1,
            event: raw_event(&d.event),
            route: d.route.to_string(),
            sink: d.sink.to_string(),
            attempts: 0,
            accepted_at: micros(d.accepted_at),
            not_before: micros(d.not_before),
            last_outcome: None,
            last_status: None,
            last_attempt_at: None,
            priority: d.priority as u8,
            ordering_key: d.ordering_key.as_deref().map(str::to_owned),
            dead: None,
        })
    }

    /// A delivery as it is after an attempt, due again at `not_before`.
    pub(in crate::spool) fn retry(d: &Delivery, not_before: SystemTime) -> Self {
        Self(RecordV1 {
            v: 1,
            event: raw_event(&d.event),
            route: d.route.to_string(),
            sink: d.sink.to_string(),
            attempts: d.attempts,
            accepted_at: micros(d.accepted_at),
            not_before: micros(not_before),
            last_outcome: d.last_outcome.clone(),
            last_status: d.last_status,
            last_attempt_at: d.last_attempt_at.map(micros),
            priority: d.priority as u8,
            ordering_key: d.ordering_key.as_deref().map(str::to_owned),
            dead: None,
        })
    }

    /// A dead letter of `d`.
    pub(super) fn dead(d: &Delivery, info: &DeadLetter) -> Self {
        let Self(mut v1) = Self::retry(d, d.not_before);
        v1.attempts = info.attempts;
        v1.last_outcome.clone_from(&info.last_outcome);
        v1.last_status = info.last_status;
        v1.last_attempt_at = info.last_attempt_at.map(micros);
        v1.dead = Some(DeadV1 {
            reason: info.reason.clone(),
            at: micros(info.dead_lettered_at),
        });
        Self(v1)
    }

    /// The JSON bytes of the record.
    pub(in crate::spool) fn to_bytes(&self) -> bytes::Bytes {
        // A record of strings, numbers and a raw JSON value always serializes.
        serde_json::to_vec(self).unwrap_or_default().into()
    }

    /// Reads a record back.
    pub(in crate::spool) fn parse(bytes: &[u8]) -> Result<Self, RecordError> {
        Ok(serde_json::from_slice(bytes)?)
    }

    /// The stored delivery, leased under `id`.
    pub(in crate::spool) fn into_delivery(self, id: u64) -> Result<Delivery, RecordError> {
        let Self(r) = self;
        Ok(Delivery {
            id,
            event: Arc::new(decode_structured(r.event.get().as_bytes())?),
            route: Arc::from(r.route),
            sink: Arc::from(r.sink),
            attempts: r.attempts,
            accepted_at: time(r.accepted_at),
            not_before: time(r.not_before),
            last_outcome: r.last_outcome,
            last_status: r.last_status,
            last_attempt_at: r.last_attempt_at.map(time),
            priority: priority(r.priority),
            ordering_key: r.ordering_key.map(Arc::from),
        })
    }

    /// The stored dead letter, under `id`.
    pub(in crate::spool) fn into_dead_letter(
        self,
        id: DeadLetterId,
    ) -> Result<DeadLetterRecord, RecordError> {
        let Self(r) = self;
        let dead = r.dead.unwrap_or(DeadV1 {
            reason: String::new(),
            at: 0,
        });
        Ok(DeadLetterRecord {
            id,
            event: Arc::new(decode_structured(r.event.get().as_bytes())?),
            route: Arc::from(r.route),
            sink: Arc::from(r.sink),
            accepted_at: time(r.accepted_at),
            info: DeadLetter {
                reason: dead.reason,
                attempts: r.attempts,
                last_outcome: r.last_outcome,
                last_status: r.last_status,
                last_attempt_at: r.last_attempt_at.map(time),
                dead_lettered_at: time(dead.at),
            },
        })
    }

    /// When the event was accepted.
    pub(super) fn accepted_at(&self) -> SystemTime {
        let Self(r) = self;
        time(r.accepted_at)
    }

    /// When the delivery is due.
    pub(super) fn not_before(&self) -> SystemTime {
        let Self(r) = self;
        time(r.not_before)
    }
}

/// A sink name as one subject token and consumer-name suffix: letters, digits and `-` stay,
/// every other byte becomes `_` and two hex digits, so distinct names stay distinct.
pub(in crate::spool) fn token(sink: &str) -> String {
    let mut out = String::with_capacity(sink.len());
    for b in sink.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("_{b:02x}"));
        }
    }
    out
}

/// The sink name a [`token`] was made from.
pub(in crate::spool) fn sink_of(token: &str) -> Option<String> {
    let mut bytes = Vec::with_capacity(token.len());
    let mut rest = token.as_bytes();
    while let Some((&b, tail)) = rest.split_first() {
        if b == b'_' {
            let hex = std::str::from_utf8(tail.get(..2)?).ok()?;
            bytes.push(u8::from_str_radix(hex, 16).ok()?);
            rest = &tail[2..];
        } else {
            bytes.push(b);
            rest = tail;
        }
    }
    String::from_utf8(bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_subject_safe_and_reversible() {
        for name in ["orders-api", "a.b c>*", "x_y", "ü"] {
            let t = token(name);
            assert!(t
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
            assert_eq!(sink_of(&t).as_deref(), Some(name));
        }
    }
}
