//! Versioned on-disk form of an [`Event`], and wall-clock times as unix milliseconds.
//!
//! Imports `event` only. Records are a tagged serde enum so that a later version of
//! switchyard can still read rows written by an older one: a new version adds a variant and
//! keeps decoding the old ones.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::event::{Event, ExtensionValue};

/// An event as stored in the `events` table.
///
/// `data` is kept out of the JSON text and stored beside it as a raw BLOB, so payloads are
/// neither escaped nor base64-inflated on disk.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "v")]
pub(super) enum EventRecord {
    /// The first record version; mirrors [`Event`] field for field.
    #[serde(rename = "1")]
    V1 {
        specversion: String,
        id: String,
        source: String,
        ty: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        datacontenttype: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        dataschema: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        subject: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        time: Option<String>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        extensions: Vec<(String, ExtensionRecord)>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        data_version: Option<String>,
        /// Filled from the `data` column, never from the JSON text.
        #[serde(skip)]
        data: Option<Bytes>,
    },
}

/// An extension attribute value; JSON's own types tell the variants apart.
#[derive(Debug, Serialize, Deserialize)]
#[serde(untagged)]
pub(super) enum ExtensionRecord {
    Bool(bool),
    Integer(i64),
    String(String),
}

/// An event encoded for the `events` table: the record's JSON text and the raw payload.
#[derive(Debug)]
pub(super) struct EncodedEvent {
    pub(super) record: Vec<u8>,
    pub(super) data: Option<Bytes>,
}

impl EncodedEvent {
    /// Encodes an event in the current record version.
    pub(super) fn encode(event: &Event) -> Result<Self, serde_json::Error> {
        let record = EventRecord::V1 {
            specversion: event.specversion.clone(),
            id: event.id.clone(),
            source: event.source.clone(),
            ty: event.ty.clone(),
            datacontenttype: event.datacontenttype.clone(),
            dataschema: event.dataschema.clone(),
            subject: event.subject.clone(),
            time: event.time.clone(),
            extensions: event
                .extensions
                .iter()
                .map(|(name, value)| (name.clone(), ExtensionRecord::from(value)))
                .collect(),
            data_version: event.data_version.clone(),
            data: None,
        };
        Ok(Self {
            record: serde_json::to_vec(&record)?,
            data: event.data.clone(),
        })
    }

    /// Bytes the event takes in the `events` table: its record text and its payload.
    pub(super) fn bytes(&self) -> u64 {
        (self.record.len() + self.data.as_ref().map_or(0, Bytes::len)) as u64
    }
}

/// Decodes a stored record (of any known version) and its payload column into an event.
pub(super) fn decode_event(
    record: &[u8],
    data: Option<Vec<u8>>,
) -> Result<Event, serde_json::Error> {
    let EventRecord::V1 {
        specversion,
        id,
        source,
        ty,
        datacontenttype,
        dataschema,
        subject,
        time,
        extensions,
        data_version,
        data: _,
    } = serde_json::from_slice(record)?;
    Ok(Event {
        specversion,
        id,
        source,
        ty,
        datacontenttype,
        dataschema,
        subject,
        time,
        extensions: extensions
            .into_iter()
            .map(|(name, value)| (name, ExtensionValue::from(value)))
            .collect(),
        data_version,
        data: data.map(Bytes::from),
    })
}

impl From<&ExtensionValue> for ExtensionRecord {
    fn from(value: &ExtensionValue) -> Self {
        match value {
            ExtensionValue::String(s) => Self::String(s.clone()),
            ExtensionValue::Integer(i) => Self::Integer(*i),
            ExtensionValue::Bool(b) => Self::Bool(*b),
        }
    }
}

impl From<ExtensionRecord> for ExtensionValue {
    fn from(value: ExtensionRecord) -> Self {
        match value {
            ExtensionRecord::String(s) => Self::String(s),
            ExtensionRecord::Integer(i) => Self::Integer(i),
            ExtensionRecord::Bool(b) => Self::Bool(b),
        }
    }
}

/// A wall-clock time as unix milliseconds (negative before 1970, saturating far out).
pub(super) fn to_millis(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(e) => i64::try_from(e.duration().as_millis()).map_or(i64::MIN, |ms| -ms),
    }
}

/// The inverse of [`to_millis`].
pub(super) fn from_millis(ms: i64) -> SystemTime {
    let magnitude = Duration::from_millis(ms.unsigned_abs());
    if ms >= 0 {
        UNIX_EPOCH + magnitude
    } else {
        UNIX_EPOCH - magnitude
    }
}

/// A time rounded to the millisecond, as it reads back from disk.
pub(super) fn round_millis(t: SystemTime) -> SystemTime {
    from_millis(to_millis(t))
}
