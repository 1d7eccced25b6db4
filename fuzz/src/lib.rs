//! What the fuzz targets share: turning bytes into requests, and the round-trip checks.

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};
use switchyard::event::http::{
    decode_batch, decode_binary, decode_structured, encode_batch, encode_binary, encode_structured,
};
use switchyard::event::Event;

/// A binary-mode request from fuzz input: `name:value` lines up to the first empty line
/// are headers (lines that are no valid header are left out, as the HTTP server would
/// refuse them), the rest is the body.
pub fn request(data: &[u8]) -> (HeaderMap, Bytes) {
    let mut headers = HeaderMap::new();
    let mut rest = data;
    loop {
        let (line, tail) = match rest.iter().position(|&b| b == b'\n') {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (rest, &rest[rest.len()..]),
        };
        rest = tail;
        if line.is_empty() {
            break;
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        if let (Ok(name), Ok(value)) =
            (HeaderName::from_bytes(name), HeaderValue::from_bytes(value))
        {
            headers.append(name, value);
        }
    }
    (headers, Bytes::copy_from_slice(rest))
}

/// Checks that a decoded event survives every encoding switchyard writes: structured and
/// batched exactly, binary mode up to what a header cannot carry.
pub fn check_round_trips(original: &Event) {
    let event = original;
    let structured = encode_structured(event);
    let expected = json_view(event);
    let event = &expected;
    let back = decode_structured(&structured).unwrap_or_else(|e| {
        panic!(
            "structured encoding of {event:?} does not decode: {e}\n{}",
            String::from_utf8_lossy(&structured)
        )
    });
    assert_eq!(
        &back,
        event,
        "structured round trip\n{}",
        String::from_utf8_lossy(&structured)
    );

    let batch = encode_batch([event, event]);
    let back = decode_batch(&batch, usize::MAX, usize::MAX).expect("batch encoding decodes");
    assert_eq!(
        back,
        vec![event.clone(), event.clone()],
        "batched round trip"
    );

    let mut headers = HeaderMap::new();
    let body = encode_binary(original, &mut headers);
    let back = decode_binary(&headers, body).unwrap_or_else(|e| {
        panic!("binary encoding of {event:?} does not decode: {e}\n{headers:?}")
    });
    assert_eq!(
        back,
        binary_view(original),
        "binary round trip\n{headers:?}"
    );
}

/// The event as binary mode carries it: extension values as strings, no content type a
/// header cannot hold, no empty payload, no Event Grid `dataVersion`.
pub fn binary_view(event: &Event) -> Event {
    let mut event = event.clone();
    for (_, value) in &mut event.extensions {
        *value = switchyard::event::ExtensionValue::String(value.to_canonical_string());
    }
    event.datacontenttype = event
        .datacontenttype
        .filter(|ct| HeaderValue::from_str(ct).is_ok());
    event.data = event.data.filter(|d| !d.is_empty());
    event.data_version = None;
    event
}

/// The event as JSON modes carry it: a JSON payload is embedded as a JSON value, so the
/// whitespace around it is not kept.
pub fn json_view(event: &Event) -> Event {
    let mut event = event.clone();
    if event.data_is_json() {
        if let Some(data) = &event.data {
            if let Ok(raw) = serde_json::from_slice::<&serde_json::value::RawValue>(data) {
                event.data = Some(Bytes::copy_from_slice(raw.get().as_bytes()));
            }
        }
    }
    event
}
