//! Versioned on-disk form of an [`Event`], and wall-clock times as unix milliseconds.
//!
//! Imports `event` only. Records are a tagged serde enum so that a later version of
//! switchyard can still read rows written by an older one: a new version adds a variant and
//! keeps decoding the old ones.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::Deserialize;

use crate::event::{json, Event, ExtensionValue};

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

/// Appends `event` to `out` in the current record version, the JSON text
/// [`EventRecord::V1`] reads: the tag first, then each field present, in declaration order,
/// extensions as `[name, value]` pairs. Written by hand, not by a derived serializer: it runs
/// for every stored event, and attribute values rarely need an escape (see
/// [`json::write_str`]).
fn write_record(event: &Event, out: &mut Vec<u8>) {
    out.extend_from_slice(br#"{"v":"1""#);
    json::write_member(out, "specversion", &event.specversion);
    json::write_member(out, "id", &event.id);
    json::write_member(out, "source", &event.source);
    json::write_member(out, "ty", &event.ty);
    let optional = [
        ("datacontenttype", &event.datacontenttype),
        ("dataschema", &event.dataschema),
        ("subject", &event.subject),
        ("time", &event.time),
    ];
    for (name, value) in optional {
        if let Some(value) = value {
            json::write_member(out, name, value);
        }
    }
    if !event.extensions.is_empty() {
        out.extend_from_slice(br#","extensions":["#);
        for (index, (name, value)) in event.extensions.iter().enumerate() {
            if index > 0 {
                out.push(b',');
            }
            out.push(b'[');
            json::write_str(out, name);
            out.push(b',');
            json::write_extension(out, value);
            out.push(b']');
        }
        out.push(b']');
    }
    if let Some(version) = &event.data_version {
        json::write_member(out, "data_version", version);
    }
    out.push(b'}');
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
    pub(super) fn encode(event: &Event) -> Self {
        let mut record = Vec::with_capacity(256);
        write_record(event, &mut record);
        Self {
            record,
            data: event.data.clone(),
        }
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
        let encoded = EncodedEvent::encode(&event);
        let text = std::str::from_utf8(&encoded.record).unwrap();
        assert!(text.starts_with(r#"{"v":"1","#), "{text}");
        assert!(
            !text.contains("dataschema"),
            "absent attributes are left out: {text}"
        );
        let back = decode_event(&encoded.record, Some(b"{}".to_vec())).unwrap();
        assert_eq!(back, event);
        event.extensions.clear();
        let encoded = EncodedEvent::encode(&event);
        let back = decode_event(&encoded.record, Some(b"{}".to_vec())).unwrap();
        assert_eq!(back, event);
    }

    proptest::proptest! {
        #![proptest_config(crate::event::prop_tests::config(256))]

        /// Any event (escapes, non-ASCII, typed extensions, an Event Grid `dataVersion`) reads
        /// back from its record as it was.
        #[test]
        fn any_event_reads_back_from_its_record(
            event in crate::event::prop_tests::any_event(),
            data_version in proptest::option::of("[ -~\u{80}-\u{10ffff}]{0,8}"),
        ) {
            let event = Event { data_version, ..event };
            let encoded = EncodedEvent::encode(&event);
            let data = encoded.data.as_ref().map(|d| d.to_vec());
            proptest::prop_assert_eq!(decode_event(&encoded.record, data).unwrap(), event);
        }
    }
}
