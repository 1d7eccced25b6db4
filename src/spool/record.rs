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
#[derive(Debug, Deserialize)]
#[serde(tag = "v")]
pub(super) enum EventRecord {
    /// The first record version; mirrors [`Event`] field for field.
    #[serde(rename = "1")]
    V1 {
        specversion: String,
        id: String,
        source: String,
        ty: String,
        #[serde(default)]
        datacontenttype: Option<String>,
        #[serde(default)]
        dataschema: Option<String>,
        #[serde(default)]
        subject: Option<String>,
        #[serde(default)]
        time: Option<String>,
        #[serde(default)]
        extensions: Vec<(String, ExtensionRecord)>,
        #[serde(default)]
        data_version: Option<String>,
    },
}

/// An extension attribute value; JSON's own types tell the variants apart.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum ExtensionRecord {
    Bool(bool),
    Integer(i64),
    String(String),
}

/// The current record version as [`EncodedEvent::encode`] writes it, borrowing every field
/// from the event (no copies on the accept path); it reads back as [`EventRecord::V1`].
#[derive(Serialize)]
#[serde(tag = "v")]
enum RecordOut<'a> {
    #[serde(rename = "1")]
    V1 {
        specversion: &'a str,
        id: &'a str,
        source: &'a str,
        ty: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        datacontenttype: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        dataschema: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        subject: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        time: Option<&'a str>,
        #[serde(skip_serializing_if = "Extensions::is_empty")]
        extensions: Extensions<'a>,
        #[serde(skip_serializing_if = "Option::is_none")]
        data_version: Option<&'a str>,
    },
}

/// An event's extensions, written as `[name, value]` pairs.
struct Extensions<'a>(&'a [(String, ExtensionValue)]);

impl Extensions<'_> {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Serialize for Extensions<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let mut seq = serializer.serialize_seq(Some(self.0.len()))?;
        for (name, value) in self.0 {
            match value {
                ExtensionValue::String(s) => seq.serialize_element(&(name, s))?,
                ExtensionValue::Integer(i) => seq.serialize_element(&(name, i))?,
                ExtensionValue::Bool(b) => seq.serialize_element(&(name, b))?,
            }
        }
        seq.end()
    }
}

/// Bytes an embedded-spool event is counted at besides its record text and payload: the
/// journal's frame and delivery entry, or the database row's header and index entries.
pub(super) const FRAMING: u64 = 64;

/// An event encoded for the `events` table: the record's JSON text and the raw payload.
#[derive(Debug)]
pub(super) struct EncodedEvent {
    pub(super) record: Vec<u8>,
    pub(super) data: Option<Bytes>,
}

impl EncodedEvent {
    /// Encodes an event in the current record version.
    pub(super) fn encode(event: &Event) -> Result<Self, serde_json::Error> {
        let record = RecordOut::V1 {
            specversion: &event.specversion,
            id: &event.id,
            source: &event.source,
            ty: &event.ty,
            datacontenttype: event.datacontenttype.as_deref(),
            dataschema: event.dataschema.as_deref(),
            subject: event.subject.as_deref(),
            time: event.time.as_deref(),
            extensions: Extensions(&event.extensions),
            data_version: event.data_version.as_deref(),
        };
        Ok(Self {
            record: serde_json::to_vec(&record)?,
            data: event.data.clone(),
        })
    }

    /// Bytes the event is counted at: its record text (every attribute and extension), its
    /// payload and its [`FRAMING`].
    pub(super) fn bytes(&self) -> u64 {
        (self.record.len() + self.data.as_ref().map_or(0, Bytes::len)) as u64 + FRAMING
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_reads_back_as_the_event_it_was_written_from() {
        let mut event = Event {
            specversion: "1.0".into(),
            id: "e\"1".into(),
            source: "/s".into(),
            ty: "T".into(),
            datacontenttype: Some("application/json".into()),
            dataschema: None,
            subject: Some("/a/b".into()),
            time: None,
            extensions: vec![
                ("traceparent".into(), ExtensionValue::String("00-x".into())),
                ("n".into(), ExtensionValue::Integer(-3)),
                ("b".into(), ExtensionValue::Bool(true)),
            ],
            data_version: Some("2".into()),
            data: Some(Bytes::from_static(b"{}")),
        };
        let encoded = EncodedEvent::encode(&event).unwrap();
        let text = std::str::from_utf8(&encoded.record).unwrap();
        assert!(text.starts_with(r#"{"v":"1","#), "{text}");
        assert!(
            !text.contains("dataschema"),
            "absent attributes are left out: {text}"
        );
        let back = decode_event(&encoded.record, Some(b"{}".to_vec())).unwrap();
        assert_eq!(back, event);
        event.extensions.clear();
        let encoded = EncodedEvent::encode(&event).unwrap();
        let back = decode_event(&encoded.record, Some(b"{}".to_vec())).unwrap();
        assert_eq!(back, event);
    }
}
