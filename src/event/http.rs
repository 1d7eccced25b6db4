//! The CloudEvents HTTP protocol binding: decode binary, structured and batched mode
//! (ingress); encode binary, structured and batched mode (HTTP sinks, file sink).

use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use bytes::Bytes;

use super::draft::Draft;
use super::structured;
use super::{json, percent, DecodeError, Event};

/// Decodes a binary-mode request: attributes from `ce-*` headers (percent-decoded),
/// `datacontenttype` from `Content-Type`, the body as `data`.
pub fn decode_binary(headers: &HeaderMap, body: Bytes) -> Result<Event, DecodeError> {
    let mut draft = Draft::new("ce-");
    // Names are looked up again only when some name has more than one value.
    let repeated = headers.len() != headers.keys_len();
    for (name, value) in headers {
        let Some(attribute) = name.as_str().strip_prefix("ce-") else {
            continue;
        };
        if repeated && headers.get_all(name).iter().nth(1).is_some() {
            return Err(DecodeError::attribute(name.as_str(), "duplicate header"));
        }
        let value = percent::decode(name.as_str(), value.as_bytes())?;
        draft.set_string(attribute, value)?;
    }
    if let Some(content_type) = headers.get(CONTENT_TYPE) {
        if draft.has_datacontenttype() {
            return Err(DecodeError::attribute(
                "ce-datacontenttype",
                "must not be sent with Content-Type",
            ));
        }
        let content_type = content_type
            .to_str()
            .map_err(|_| DecodeError::attribute("content-type", "must be visible ASCII"))?;
        draft.set_string("datacontenttype", content_type.to_owned())?;
    }
    let mut event = draft.into_event()?;
    event.data = (!body.is_empty()).then_some(body);
    Ok(event)
}

/// Decodes one structured-mode event (`application/cloudevents+json`).
pub fn decode_structured(body: &[u8]) -> Result<Event, DecodeError> {
    structured::decode(body)
}

/// Decodes a batched-mode body (`application/cloudevents-batch+json`); errors name the index.
/// An event over `max_event_bytes` or more than `max_events` events is a `TooLarge` error.
pub fn decode_batch(
    body: &[u8],
    max_event_bytes: usize,
    max_events: usize,
) -> Result<Vec<Event>, DecodeError> {
    // One pass over a well-formed batch within its limits; anything else is read again
    // element by element, so that the error names what is wrong where.
    if let Some(elements) = json::parse_object_array(body, max_events) {
        if elements.iter().all(|(_, size)| *size <= max_event_bytes) {
            let events = elements
                .into_iter()
                .map(|(members, _)| structured::decode_members(members));
            return collect_batch(events);
        }
    }
    let elements = json::parse_array(body)?;
    check_batch_limits(&elements, max_event_bytes, max_events)?;
    collect_batch(
        elements
            .iter()
            .map(|raw| structured::decode(raw.get().as_bytes())),
    )
}

/// Collects a batch's decoded events: the first error, located at its index, ends it, and
/// every event must share the first one's `specversion`.
pub(crate) fn collect_batch(
    decoded: impl ExactSizeIterator<Item = Result<Event, DecodeError>>,
) -> Result<Vec<Event>, DecodeError> {
    let mut events: Vec<Event> = Vec::with_capacity(decoded.len());
    for (index, event) in decoded.enumerate() {
        let event = event.map_err(|e| e.at(index))?;
        if let Some(first) = events.first() {
            if first.specversion != event.specversion {
                let message = format!(
                    "specversion \"{}\" differs from the batch's \"{}\"",
                    event.specversion, first.specversion
                );
                return Err(DecodeError::attribute("specversion", message).at(index));
            }
        }
        events.push(event);
    }
    Ok(events)
}

/// Checks the event count and each element's size against the limits of a batch.
pub(crate) fn check_batch_limits(
    elements: &[&serde_json::value::RawValue],
    max_event_bytes: usize,
    max_events: usize,
) -> Result<(), DecodeError> {
    if elements.len() > max_events {
        return Err(DecodeError::too_large(format!(
            "batch has {} events; at most {max_events}",
            elements.len()
        )));
    }
    for (index, raw) in elements.iter().enumerate() {
        let size = raw.get().len();
        if size > max_event_bytes {
            return Err(DecodeError::too_large(format!(
                "event has {size} bytes; at most {max_event_bytes}"
            ))
            .at(index));
        }
    }
    Ok(())
}

/// Encodes an event in binary mode: sets `ce-*` and `Content-Type` headers, returns the body.
///
/// Attributes that cannot travel in a header (an extension whose name is not a valid
/// attribute name, a content type with characters a header cannot hold) are left out.
pub fn encode_binary(event: &Event, headers: &mut HeaderMap) -> Bytes {
    // The names are constants: made once at compile time, not parsed for every event.
    const SPECVERSION: HeaderName = HeaderName::from_static("ce-specversion");
    const ID: HeaderName = HeaderName::from_static("ce-id");
    const SOURCE: HeaderName = HeaderName::from_static("ce-source");
    const TYPE: HeaderName = HeaderName::from_static("ce-type");
    const SUBJECT: HeaderName = HeaderName::from_static("ce-subject");
    const TIME: HeaderName = HeaderName::from_static("ce-time");
    const SCHEMAURL: HeaderName = HeaderName::from_static("ce-schemaurl");
    const DATASCHEMA: HeaderName = HeaderName::from_static("ce-dataschema");
    let schema = if event.specversion == "0.3" {
        SCHEMAURL
    } else {
        DATASCHEMA
    };
    // A known version is a constant: no copy of its own for every event.
    match version_value(&event.specversion) {
        Some(version) => {
            headers.insert(SPECVERSION, version);
        }
        None => set_header(headers, SPECVERSION, &event.specversion),
    }
    let core = [
        (ID, Some(&event.id)),
        (SOURCE, Some(&event.source)),
        (TYPE, Some(&event.ty)),
        (SUBJECT, event.subject.as_ref()),
        (TIME, event.time.as_ref()),
        (schema, event.dataschema.as_ref()),
    ];
    for (name, value) in core {
        if let Some(value) = value {
            set_header(headers, name, value);
        }
    }
    for (name, value) in &event.extensions {
        if super::draft::is_attribute_name(name)
            && !structured::is_reserved(&event.specversion, name)
        {
            if let Ok(name) = HeaderName::from_bytes(format!("ce-{name}").as_bytes()) {
                set_header(headers, name, &value.to_canonical_string());
            }
        }
    }
    if let Some(content_type) = &event.datacontenttype {
        // `from_str` also takes non-ASCII text, which a receiver reads as no text at all.
        if let Ok(value) = HeaderValue::from_str(content_type) {
            if value.to_str().is_ok() {
                headers.insert(CONTENT_TYPE, value);
            }
        }
    }
    event.data.clone().unwrap_or_default()
}

/// A `specversion` this binding knows, as a header value made without a copy.
pub(crate) fn version_value(version: &str) -> Option<HeaderValue> {
    match version {
        "1.0" => Some(HeaderValue::from_static("1.0")),
        "0.3" => Some(HeaderValue::from_static("0.3")),
        _ => None,
    }
}

/// Sets a `ce-` header to the percent-encoded `value` (always visible ASCII).
fn set_header(headers: &mut HeaderMap, name: HeaderName, value: &str) {
    if let Ok(value) = HeaderValue::from_str(&percent::encode(value)) {
        headers.insert(name, value);
    }
}

/// Encodes an event as one structured-mode JSON object.
pub fn encode_structured(event: &Event) -> Vec<u8> {
    let mut out = Vec::new();
    structured::write(event, &mut out);
    out
}

/// Appends an event to `out` as one structured-mode JSON object.
pub fn write_structured(event: &Event, out: &mut Vec<u8>) {
    structured::write(event, out);
}

/// At least the length [`encode_structured`] gives `event`, found without encoding it.
pub fn structured_len_bound(event: &Event) -> usize {
    structured::len_bound(event)
}

/// Appends an event's attributes to `out` as one structured-mode JSON object without `data`
/// (what [`encode_structured`] writes for the event with its data taken out).
pub fn write_attributes(event: &Event, out: &mut Vec<u8>) {
    structured::write_attributes(event, out);
}

/// Encodes events as a batched-mode JSON array.
pub fn encode_batch<'a>(events: impl IntoIterator<Item = &'a Event>) -> Vec<u8> {
    json::to_array(events, structured::write)
}
