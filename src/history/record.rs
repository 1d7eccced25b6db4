//! One stored attempt record and its binary form.
//!
//! A record is `0xA7`, a little-endian `u32` body length, then the body: fixed-size numbers
//! first, then length-prefixed strings, then the event's attributes (JSON) and the first
//! bytes of its data, which only a delivery's first record carries. A reader stops at the
//! first record that does not decode, so a tail torn by a crash costs that tail only.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::AttemptOutcome;
use crate::event::{http as ce_http, Event};

/// The first byte of every record.
const MAGIC: u8 = 0xA7;

/// Bytes before a record's body: the magic byte and the body length.
pub(super) const HEADER: usize = 5;

/// "None" for a number field.
const NONE: u64 = u64::MAX;

/// A record as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Stored {
    /// Position in the history, increasing; a listing's cursor and an event's key.
    pub(crate) seq: u64,
    /// When the attempt was made (or the delivery expired), in milliseconds since the epoch.
    pub(crate) at_ms: u64,
    /// How long the attempt took; `None` when none was made.
    pub(crate) duration_us: Option<u64>,
    /// The attempt's number (1 for the first; for an expiry, the attempts made before).
    pub(crate) attempt: u32,
    /// What became of the delivery.
    pub(crate) outcome: AttemptOutcome,
    /// HTTP status (or other status the sink reported).
    pub(crate) status: Option<u16>,
    /// The route.
    pub(crate) route: String,
    /// The sink.
    pub(crate) sink: String,
    /// The event's `source`.
    pub(crate) source: String,
    /// The event's `id`.
    pub(crate) id: String,
    /// The event's `type`.
    pub(crate) ty: String,
    /// The failure, or the dead-letter reason, cut to its first bytes.
    pub(crate) detail: Option<String>,
    /// The event as stored, when this record carries it (and it was read).
    pub(crate) event: Option<StoredEvent>,
}

/// The event as a record carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StoredEvent {
    /// Its attributes: a structured CloudEvent without `data` (JSON).
    pub(crate) attributes: Vec<u8>,
    /// The size of its data.
    pub(crate) data_size: u64,
    /// The first bytes of its data (all of it when `data_size` fits).
    pub(crate) data: Vec<u8>,
}

/// One record as written, borrowed from what it is made of: an attempt the delivery side
/// reported (nothing copied before it is written) or a [`Stored`] record.
#[derive(Debug)]
pub(super) struct Fields<'a> {
    /// See [`Stored::at_ms`].
    pub(super) at_ms: u64,
    /// See [`Stored::duration_us`].
    pub(super) duration_us: Option<u64>,
    /// See [`Stored::attempt`].
    pub(super) attempt: u32,
    /// See [`Stored::outcome`].
    pub(super) outcome: AttemptOutcome,
    /// See [`Stored::status`].
    pub(super) status: Option<u16>,
    /// The route, the sink, and the event's `source`, `id` and `type`.
    pub(super) texts: [&'a str; 5],
    /// See [`Stored::detail`].
    pub(super) detail: Option<&'a str>,
    /// The event, when this record carries it.
    pub(super) event: Option<EventFields<'a>>,
}

/// The event as one record carries it, borrowed.
#[derive(Debug)]
pub(super) struct EventFields<'a> {
    /// Its attributes.
    pub(super) attributes: AttributesOf<'a>,
    /// The size of its data.
    pub(super) data_size: u64,
    /// The first bytes of its data.
    pub(super) data: &'a [u8],
}

/// Where a record's attributes come from.
#[derive(Debug)]
pub(super) enum AttributesOf<'a> {
    /// Already encoded (JSON): a record read back and written again.
    #[cfg(test)]
    Json(&'a [u8]),
    /// Encoded from the event as the record is written.
    Event(&'a Event),
}

impl Fields<'_> {
    /// About the bytes [`Fields::encode`] writes.
    pub(super) fn size_hint(&self) -> usize {
        let text: usize = self.texts.iter().map(|t| t.len() + 4).sum();
        let event = self.event.as_ref().map_or(0, |e| {
            let attributes = match e.attributes {
                #[cfg(test)]
                AttributesOf::Json(json) => json.len(),
                AttributesOf::Event(event) => attributes_hint(event),
            };
            attributes + e.data.len()
        });
        HEADER + 64 + text + self.detail.map_or(0, str::len) + event
    }

    /// Appends the record's binary form, numbered `seq`, to `out`.
    pub(super) fn encode(&self, seq: u64, out: &mut Vec<u8>) {
        let start = out.len();
        out.push(MAGIC);
        out.extend_from_slice(&[0; 4]);
        put_u64(out, seq);
        put_u64(out, self.at_ms);
        put_u64(out, self.duration_us.unwrap_or(NONE));
        out.extend_from_slice(&self.attempt.to_le_bytes());
        out.push(self.outcome.code());
        put_u64(out, self.status.map_or(NONE, u64::from));
        for text in self.texts {
            put_bytes(out, text.as_bytes());
        }
        put_bytes(out, self.detail.unwrap_or_default().as_bytes());
        match &self.event {
            Some(event) => {
                match event.attributes {
                    #[cfg(test)]
                    AttributesOf::Json(json) => put_bytes(out, json),
                    AttributesOf::Event(attributes) => {
                        // Written in place; its length goes in front once known.
                        let at = out.len();
                        out.extend_from_slice(&[0; 4]);
                        ce_http::write_attributes(attributes, out);
                        let len = u32::try_from(out.len() - at - 4).unwrap_or(u32::MAX);
                        out[at..at + 4].copy_from_slice(&len.to_le_bytes());
                    }
                }
                put_u64(out, event.data_size);
                put_bytes(out, event.data);
            }
            None => {
                put_bytes(out, &[]);
                put_u64(out, 0);
                put_bytes(out, &[]);
            }
        }
        let body = u32::try_from(out.len() - start - HEADER).unwrap_or(u32::MAX);
        out[start + 1..start + HEADER].copy_from_slice(&body.to_le_bytes());
    }
}

/// About the bytes an event's attributes take as JSON.
fn attributes_hint(event: &Event) -> usize {
    let optional = [
        &event.datacontenttype,
        &event.dataschema,
        &event.subject,
        &event.time,
    ];
    let texts = event.specversion.len() + event.id.len() + event.source.len() + event.ty.len();
    let optional: usize = optional
        .iter()
        .filter_map(|t| t.as_ref())
        .map(String::len)
        .sum();
    96 + texts + optional + 48 * event.extensions.len()
}

impl Stored {
    /// The attempt's time.
    pub(crate) fn at(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.at_ms)
    }

    /// The record's fields as written (its `seq` is the store's to give).
    #[cfg(test)]
    pub(super) fn fields(&self) -> Fields<'_> {
        Fields {
            at_ms: self.at_ms,
            duration_us: self.duration_us,
            attempt: self.attempt,
            outcome: self.outcome,
            status: self.status,
            texts: [&self.route, &self.sink, &self.source, &self.id, &self.ty],
            detail: self.detail.as_deref(),
            event: self.event.as_ref().map(|e| EventFields {
                attributes: AttributesOf::Json(&e.attributes),
                data_size: e.data_size,
                data: &e.data,
            }),
        }
    }

    /// Decodes the record at the start of `bytes`, with its event when `with_event`; the
    /// record and its length, or `None` when the bytes hold no whole record.
    pub(super) fn decode(bytes: &[u8], with_event: bool) -> Option<(Self, usize)> {
        let (&magic, rest) = bytes.split_first()?;
        if magic != MAGIC {
            return None;
        }
        let len = u32::from_le_bytes(rest.get(..4)?.try_into().ok()?) as usize;
        let body = rest.get(4..4 + len)?;
        let mut r = Reader(body);
        let seq = r.u64()?;
        let at_ms = r.u64()?;
        let duration_us = Some(r.u64()?).filter(|&d| d != NONE);
        let attempt = u32::from_le_bytes(r.take(4)?.try_into().ok()?);
        let outcome = AttemptOutcome::from_code(*r.take(1)?.first()?)?;
        let status = match r.u64()? {
            NONE => None,
            s => Some(u16::try_from(s).ok()?),
        };
        let mut text = || r.bytes().map(|b| String::from_utf8_lossy(b).into_owned());
        let (route, sink, source, id, ty) = (text()?, text()?, text()?, text()?, text()?);
        let detail = Some(text()?).filter(|d| !d.is_empty());
        let attributes = r.bytes()?;
        let data_size = r.u64()?;
        let data = r.bytes()?;
        let event = (with_event && !attributes.is_empty()).then(|| StoredEvent {
            attributes: attributes.to_vec(),
            data_size,
            data: data.to_vec(),
        });
        let record = Self {
            seq,
            at_ms,
            duration_us,
            attempt,
            outcome,
            status,
            route,
            sink,
            source,
            id,
            ty,
            detail,
            event,
        };
        Some((record, HEADER + len))
    }
}

fn put_u64(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(&n.to_le_bytes());
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&bytes[..len as usize]);
}

/// Reads a body front to back; `None` past its end.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = (self.0.get(..n)?, self.0.get(n..)?);
        self.0 = rest;
        Some(head)
    }

    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }

    fn bytes(&mut self) -> Option<&'a [u8]> {
        let len = u32::from_le_bytes(self.take(4)?.try_into().ok()?) as usize;
        self.take(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(event: Option<StoredEvent>) -> Stored {
        Stored {
            seq: 7,
            at_ms: 1_700_000_000_123,
            duration_us: Some(1500),
            attempt: 2,
            outcome: AttemptOutcome::Retrying,
            status: Some(503),
            route: "r".into(),
            sink: "s".into(),
            source: "/src".into(),
            id: "e1".into(),
            ty: "T".into(),
            detail: Some("Busy: target answered 503".into()),
            event,
        }
    }

    #[test]
    fn a_record_reads_back_as_written_and_a_torn_one_not_at_all() {
        let event = StoredEvent {
            attributes: br#"{"id":"e1"}"#.to_vec(),
            data_size: 10,
            data: b"0123".to_vec(),
        };
        let mut out = Vec::new();
        record(Some(event.clone())).fields().encode(7, &mut out);
        record(None).fields().encode(7, &mut out);
        let (first, len) = Stored::decode(&out, true).expect("first");
        assert_eq!(first, record(Some(event)));
        let (second, _) = Stored::decode(&out[len..], true).expect("second");
        assert_eq!(second, record(None));
        let (light, _) = Stored::decode(&out, false).expect("without the event");
        assert_eq!(light.event, None);
        assert!(Stored::decode(&out[..len - 1], true).is_none());
        assert!(Stored::decode(&out[1..], true).is_none());
    }

    #[test]
    fn attributes_written_from_the_event_are_its_structured_form_without_data() {
        let mut event = crate::event::http::decode_structured(
            br#"{"specversion":"1.0","id":"e\"1","source":"/s","type":"T","subject":"x",
                "datacontenttype":"application/json","traffic":"7","data":{"big":true}}"#,
        )
        .expect("a valid event");
        let fields = Fields {
            at_ms: 1,
            duration_us: None,
            attempt: 1,
            outcome: AttemptOutcome::Delivered,
            status: None,
            texts: ["r", "s", &event.source, &event.id, &event.ty],
            detail: None,
            event: Some(EventFields {
                attributes: AttributesOf::Event(&event),
                data_size: 12,
                data: b"{\"big\":true}",
            }),
        };
        let mut out = Vec::new();
        fields.encode(3, &mut out);
        let (read, len) = Stored::decode(&out, true).expect("a record");
        assert_eq!(len, out.len());
        assert!(fields.size_hint() >= len, "{} < {len}", fields.size_hint());
        let stored = read.event.expect("the event");
        event.data = None;
        assert_eq!(
            stored.attributes,
            crate::event::http::encode_structured(&event)
        );
        assert_eq!(stored.data, br#"{"big":true}"#);
        assert_eq!((read.seq, read.id.as_str()), (3, "e\"1"));
        assert!(Stored::decode(&out[1..], true).is_none());
    }
}
