//! The CloudEvents JSON event format: one event as a JSON object, read through a borrowed
//! view of its members (no `serde_json::Value`) and written straight into a buffer.

use bytes::Bytes;
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::value::RawValue;

use super::draft::Draft;
use super::json::{self, ExtensionJson, Payload, BASE64};
use super::{DecodeError, Event};
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

/// Serializes an event as one structured-mode JSON object.
#[derive(Debug)]
pub(crate) struct Structured<'a>(pub(crate) &'a Event);

/// Serializes an event's attributes as a structured-mode JSON object without its data: what
/// [`Structured`] writes for the same event with `data` taken out.
#[derive(Debug)]
pub(crate) struct Attributes<'a>(pub(crate) &'a Event);

impl Serialize for Attributes<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        attributes(self.0, &mut map)?;
        map.end()
    }
}

impl Serialize for Structured<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let event = self.0;
        let v03 = event.specversion == "0.3";
        let mut map = serializer.serialize_map(None)?;
        attributes(event, &mut map)?;
        match Payload::of(event) {
            None => {}
            Some(Payload::Json(raw)) => map.serialize_entry("data", raw)?,
            Some(Payload::Text(text)) => map.serialize_entry("data", text)?,
            Some(Payload::Binary(bytes)) if v03 => {
                map.serialize_entry("datacontentencoding", "base64")?;
                map.serialize_entry("data", &BASE64.encode(bytes))?;
            }
            Some(Payload::Binary(bytes)) => {
                map.serialize_entry("data_base64", &BASE64.encode(bytes))?;
            }
        }
        map.end()
    }
}

/// Every attribute of `event` as members of `map`, in the order structured mode writes them.
fn attributes<M: SerializeMap>(event: &Event, map: &mut M) -> Result<(), M::Error> {
    let v03 = event.specversion == "0.3";
    map.serialize_entry("specversion", &event.specversion)?;
    map.serialize_entry("id", &event.id)?;
    map.serialize_entry("source", &event.source)?;
    map.serialize_entry("type", &event.ty)?;
    let schema_name = if v03 { "schemaurl" } else { "dataschema" };
    let optional = [
        ("datacontenttype", &event.datacontenttype),
        (schema_name, &event.dataschema),
        ("subject", &event.subject),
        ("time", &event.time),
    ];
    for (name, value) in optional {
        if let Some(value) = value {
            map.serialize_entry(name, value)?;
        }
    }
    for (name, value) in &event.extensions {
        if !is_reserved(&event.specversion, name) {
            map.serialize_entry(name, &ExtensionJson(value))?;
        }
    }
    Ok(())
}
