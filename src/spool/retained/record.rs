//! One retained event and its binary form.
//!
//! A record is `0xB3`, a little-endian `u32` body length, then the body: the times and the
//! lane first, then length-prefixed route, sink, the event's stored record (the spool's own
//! versioned JSON, see [`super::super::record`]) and its data. A reader stops at the first
//! record that does not decode, so a tail torn by a crash costs that tail only.

use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;

use super::super::record::{decode_event, to_millis, EncodedEvent};
use super::super::Priority;
use crate::event::Event;

/// The first byte of every record.
const MAGIC: u8 = 0xB3;

/// Bytes before a record's body: the magic byte and the body length.
pub(super) const HEADER: usize = 5;

/// A delivered event as retained: what it was, where it went and when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Kept {
    /// When the event was accepted, in milliseconds since the epoch.
    pub(crate) accepted_ms: i64,
    /// When its sink confirmed it, in milliseconds since the epoch.
    pub(crate) delivered_ms: i64,
    /// Its lane at the sink.
    pub(crate) priority: Priority,
    /// The route that matched it.
    pub(crate) route: Arc<str>,
    /// The sink it was delivered to.
    pub(crate) sink: Arc<str>,
    /// The event, payload included.
    pub(crate) event: Arc<Event>,
}

impl Kept {
    /// A record of `event` delivered at `delivered`.
    pub(crate) fn new(delivery: &super::super::Delivery, delivered: SystemTime) -> Self {
        Self {
            accepted_ms: to_millis(delivery.accepted_at),
            delivered_ms: to_millis(delivered),
            priority: delivery.priority,
            route: delivery.route.clone(),
            sink: delivery.sink.clone(),
            event: delivery.event.clone(),
        }
    }

    /// Appends the record's binary form to `out`.
    pub(super) fn encode(&self, out: &mut Vec<u8>) {
        let event = EncodedEvent::encode(&self.event);
        let start = out.len();
        out.push(MAGIC);
        out.extend_from_slice(&[0; 4]);
        out.extend_from_slice(&self.accepted_ms.to_le_bytes());
        out.extend_from_slice(&self.delivered_ms.to_le_bytes());
        out.push(lane_code(self.priority));
        put_bytes(out, self.route.as_bytes());
        put_bytes(out, self.sink.as_bytes());
        put_bytes(out, &event.record);
        match &event.data {
            Some(data) => {
                out.push(1);
                put_bytes(out, data);
            }
            None => out.push(0),
        }
        let body = u32::try_from(out.len() - start - HEADER).unwrap_or(u32::MAX);
        out[start + 1..start + HEADER].copy_from_slice(&body.to_le_bytes());
    }

    /// Reads the record at the start of `bytes`: its head (times and sink) always, the whole
    /// record when `whole`; with the record's length. `None` when the bytes hold no whole
    /// record.
    pub(super) fn decode(bytes: &[u8], whole: bool) -> Option<(Decoded, usize)> {
        let (&magic, rest) = bytes.split_first()?;
        if magic != MAGIC {
            return None;
        }
        let len = u32::from_le_bytes(rest.get(..4)?.try_into().ok()?) as usize;
        let mut r = Reader(rest.get(4..4 + len)?);
        let accepted_ms = i64::from_le_bytes(r.take(8)?.try_into().ok()?);
        let delivered_ms = i64::from_le_bytes(r.take(8)?.try_into().ok()?);
        let priority = lane_from(*r.take(1)?.first()?)?;
        let route = std::str::from_utf8(r.bytes()?).ok()?;
        let sink = std::str::from_utf8(r.bytes()?).ok()?;
        let head = Head {
            accepted_ms,
            delivered_ms,
            route: route.to_owned(),
            sink: sink.to_owned(),
        };
        if !whole {
            return Some((Decoded::Head(head), HEADER + len));
        }
        let record = r.bytes()?;
        let data = match *r.take(1)?.first()? {
            0 => None,
            _ => Some(r.bytes()?.to_vec()),
        };
        let mut event = decode_event(record, data).ok()?;
        // The payload was read into its own buffer: nothing larger is kept alive.
        event.data = event.data.map(|d| Bytes::copy_from_slice(&d));
        let kept = Self {
            accepted_ms,
            delivered_ms,
            priority,
            route: Arc::from(head.route),
            sink: Arc::from(head.sink),
            event: Arc::new(event),
        };
        Some((Decoded::Whole(kept), HEADER + len))
    }
}

/// The fixed part of a record, read without the event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Head {
    /// When the event was accepted (ms since the epoch).
    pub(crate) accepted_ms: i64,
    /// When it was delivered (ms since the epoch).
    pub(crate) delivered_ms: i64,
    /// Its route.
    pub(crate) route: String,
    /// Its sink.
    pub(crate) sink: String,
}

/// What [`Kept::decode`] read.
#[derive(Debug)]
pub(super) enum Decoded {
    /// The head only.
    Head(Head),
    /// The whole record.
    Whole(Kept),
}

fn lane_code(priority: Priority) -> u8 {
    match priority {
        Priority::High => 0,
        Priority::Normal => 1,
        Priority::Low => 2,
    }
}

fn lane_from(code: u8) -> Option<Priority> {
    match code {
        0 => Some(Priority::High),
        1 => Some(Priority::Normal),
        2 => Some(Priority::Low),
        _ => None,
    }
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

    fn bytes(&mut self) -> Option<&'a [u8]> {
        let len = u32::from_le_bytes(self.take(4)?.try_into().ok()?) as usize;
        self.take(len)
    }
}
