//! The CloudEvents HTTP protocol binding: decode binary, structured and batched mode
//! (ingress); encode binary, structured and batched mode (HTTP sinks, file sink).

use axum::http::HeaderMap;
use bytes::Bytes;

use super::{DecodeError, Event};

/// Decodes a binary-mode request: attributes from `ce-*` headers (percent-decoded),
/// `datacontenttype` from `Content-Type`, the body as `data`.
pub fn decode_binary(headers: &HeaderMap, body: Bytes) -> Result<Event, DecodeError> {
    let _ = (headers, body);
    Err(DecodeError::body("not implemented"))
}

/// Decodes one structured-mode event (`application/cloudevents+json`).
pub fn decode_structured(body: &[u8]) -> Result<Event, DecodeError> {
    let _ = body;
    Err(DecodeError::body("not implemented"))
}

/// Decodes a batched-mode body (`application/cloudevents-batch+json`); errors name the index.
/// An event over `max_event_bytes` or more than `max_events` events is a `TooLarge` error.
pub fn decode_batch(
    body: &[u8],
    max_event_bytes: usize,
    max_events: usize,
) -> Result<Vec<Event>, DecodeError> {
    let _ = (body, max_event_bytes, max_events);
    Err(DecodeError::body("not implemented"))
}

/// Encodes an event in binary mode: sets `ce-*` and `Content-Type` headers, returns the body.
pub fn encode_binary(event: &Event, headers: &mut HeaderMap) -> Bytes {
    let _ = (event, headers);
    Bytes::new()
}

/// Encodes an event as one structured-mode JSON object.
pub fn encode_structured(event: &Event) -> Vec<u8> {
    let _ = event;
    Vec::new()
}

/// Encodes events as a batched-mode JSON array.
pub fn encode_batch<'a>(events: impl IntoIterator<Item = &'a Event>) -> Vec<u8> {
    let _ = events.into_iter();
    Vec::new()
}
