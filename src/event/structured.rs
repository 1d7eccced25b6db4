//! The CloudEvents JSON event format: one event as a JSON object, read through a borrowed
//! view of its members (no `serde_json::Value`) and written straight into a buffer.

use bytes::Bytes;
use serde_json::value::RawValue;

use super::draft::Draft;
use super::json::{self, Payload, BASE64};
use super::{is_textual_media_type, DecodeError, Event, ExtensionValue};
use base64::Engine as _;

/// Decodes one structured-mode event from the text of a JSON object.
pub(crate) fn decode(body: &[u8]) -> Result<Event, DecodeError> {
    decode_members(json::parse_members(body)?)
}

/// Decodes one structured-mode event from the members of its JSON object.
pub(crate) fn decode_members(members: json::Members<'_>) -> Result<Event, DecodeError> {
    let mut draft = Draft::new("");
    let mut data: Option<&RawValue> = None;
    let mut data_base64: Option<&RawValue> = None;
    for (name, raw) in members.0 {
        let name = name.as_ref();
        match name {
            "data" | "data_base64" => {
                let slot = if name == "data" {
                    &mut data
                } else {
                    &mut data_base64
                };
                if slot.is_some() {
                    return Err(DecodeError::attribute(name, "duplicate member"));
                }
                *slot = Some(raw);
            }
            _ if Draft::is_string_attribute(name) => {
                if let Some(value) = json::string_value(name, raw)? {
                    draft.set_string(name, value)?;
                }
            }
            _ => {
                if let Some(value) = json::extension_value(name, raw)? {
                    draft.set_extension(name, value)?;
                }
            }
        }
    }
    let data_base64 = data_base64.filter(|raw| !json::is_null(raw));
    let data = decode_data(&draft, data, data_base64)?;
    let mut event = draft.into_event()?;
    event.data = data;
    Ok(event)
}

/// The payload bytes of `data` / `data_base64`, as binary mode would carry them.
fn decode_data(
    draft: &Draft,
    data: Option<&RawValue>,
    data_base64: Option<&RawValue>,
) -> Result<Option<Bytes>, DecodeError> {
    let raw = match (data, data_base64) {
        (Some(_), Some(_)) => {
            return Err(DecodeError::attribute(
                "data_base64",
                "`data` and `data_base64` are mutually exclusive",
            ))
        }
        (None, Some(encoded)) => return json::base64_value("data_base64", encoded).map(Some),
        (None, None) => return Ok(None),
        (Some(raw), None) => raw,
    };
    if draft.data_is_base64() {
        return json::base64_value("data", raw).map(Some);
    }
    let text = raw.get();
    if !json::json_typed(draft.datacontenttype()) && text.starts_with('"') {
        // A string under a non-JSON content type carries the payload's characters.
        let chars = json::string_value("data", raw)?.unwrap_or_default();
        return Ok(Some(Bytes::from(chars)));
    }
    Ok(Some(Bytes::copy_from_slice(text.as_bytes())))
}

/// True when `name` is a context attribute of `specversion`, so no extension may use it.
pub(crate) fn is_reserved(specversion: &str, name: &str) -> bool {
    match name {
        "specversion" | "id" | "source" | "type" | "datacontenttype" | "subject" | "time"
        | "data" | "data_base64" => true,
        "dataschema" => specversion != "0.3",
        "schemaurl" | "datacontentencoding" => specversion == "0.3",
        _ => false,
    }
}

/// Room for the attributes of a usual event, reserved with room for its data before writing.
const ATTRIBUTES_ROOM: usize = 384;

/// Appends `event` to `out` as one structured-mode JSON object.
pub(crate) fn write(event: &Event, out: &mut Vec<u8>) {
    // Enough for the data in any of its forms (Base64 is the longest but for escapes), so
    // the buffer seldom grows while it is written.
    let data = event.data.as_ref().map_or(0, |d| d.len() / 3 * 4 + 4);
    out.reserve(ATTRIBUTES_ROOM + data);
    write_attributes_open(event, out);
    match Payload::of(event) {
        None => {}
        Some(Payload::Json(text)) => {
            out.extend_from_slice(b",\"data\":");
            out.extend_from_slice(text);
        }
        Some(Payload::Text(text)) => json::write_member(out, "data", text),
        Some(Payload::Binary(bytes)) => {
            if event.specversion == "0.3" {
                json::write_member(out, "datacontentencoding", "base64");
                out.extend_from_slice(b",\"data\":\"");
            } else {
                out.extend_from_slice(b",\"data_base64\":\"");
            }
            out.extend_from_slice(BASE64.encode(bytes).as_bytes());
            out.push(b'"');
        }
    }
    out.push(b'}');
}

/// At least the length [`write`] gives `event`, found without writing it: attribute values
/// are measured (each escape counted at its longest, six bytes), and `data` at the longest
/// of its forms (as is, escaped text, Base64) rather than checked for which one it takes.
pub(crate) fn len_bound(event: &Event) -> usize {
    // `{}`, and per member its name, quotes, colon and comma (names of ours are short).
    const MEMBER: usize = 32;
    let text = |s: &str| json::str_len_bound(s) + MEMBER;
    let optional = [
        &event.datacontenttype,
        &event.dataschema,
        &event.subject,
        &event.time,
    ];
    let mut len = 2
        + text(&event.specversion)
        + text(&event.id)
        + text(&event.source)
        + text(&event.ty)
        + optional
            .iter()
            .filter_map(|v| v.as_deref())
            .map(text)
            .sum::<usize>();
    for (name, value) in &event.extensions {
        len += json::str_len_bound(name) + MEMBER;
        len += match value {
            ExtensionValue::String(s) => json::str_len_bound(s),
            // i64::MIN has 20 characters.
            ExtensionValue::Integer(_) => 20,
            ExtensionValue::Bool(_) => 5,
        };
    }
    if let Some(data) = &event.data {
        // JSON `data` goes as is (shorter than its Base64) unless it is not JSON; text as an
        // escaped string unless it is not UTF-8; anything else as Base64.
        let textual = !event.data_is_json()
            && event
                .datacontenttype
                .as_deref()
                .is_some_and(is_textual_media_type);
        let longest = if textual {
            data.len() * 6 + 2
        } else {
            data.len().div_ceil(3) * 4 + 2
        };
        // `datacontentencoding` (0.3) and the `data` member.
        len += 2 * MEMBER + longest;
    }
    len
}

/// Appends `event`'s attributes to `out` as one structured-mode JSON object without its
/// data: what [`write`] writes for the same event with `data` taken out.
pub(crate) fn write_attributes(event: &Event, out: &mut Vec<u8>) {
    write_attributes_open(event, out);
    out.push(b'}');
}

/// Opens the object and appends every attribute of `event` as its members, in the order
/// structured mode writes them; the caller closes it.
fn write_attributes_open(event: &Event, out: &mut Vec<u8>) {
    let v03 = event.specversion == "0.3";
    out.extend_from_slice(b"{\"specversion\":");
    json::write_str(out, &event.specversion);
    json::write_member(out, "id", &event.id);
    json::write_member(out, "source", &event.source);
    json::write_member(out, "type", &event.ty);
    let schema_name = if v03 { "schemaurl" } else { "dataschema" };
    let optional = [
        ("datacontenttype", &event.datacontenttype),
        (schema_name, &event.dataschema),
        ("subject", &event.subject),
        ("time", &event.time),
    ];
    for (name, value) in optional {
        if let Some(value) = value {
            json::write_member(out, name, value);
        }
    }
    for (name, value) in &event.extensions {
        if !is_reserved(&event.specversion, name) {
            out.push(b',');
            json::write_str(out, name);
            out.push(b':');
            json::write_extension(out, value);
        }
    }
}
