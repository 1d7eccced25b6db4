//! JSON building blocks shared by the structured, batched and Event Grid codecs: a borrowed
//! view of an object's members, typed reads of member values, and serialization wrappers.

use std::borrow::Cow;
use std::fmt;
use std::io::Write as _;

use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine as _;
use bytes::Bytes;
use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde::ser::{Serialize, Serializer};
use serde_json::value::RawValue;

use super::{is_json_media_type, is_textual_media_type, DecodeError, Event, ExtensionValue};

/// Standard Base64; padding is optional on input and always written on output.
pub(crate) const BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// A member name, borrowed from the input unless it contains escapes.
#[derive(serde::Deserialize)]
struct Key<'a>(#[serde(borrow)] Cow<'a, str>);

/// The members of one JSON object in input order, each value left unparsed.
#[derive(Debug)]
pub(crate) struct Members<'a>(pub(crate) Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'de> Deserialize<'de> for Members<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(MembersVisitor)
    }
}

struct MembersVisitor;

impl<'de> Visitor<'de> for MembersVisitor {
    type Value = Members<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut members = Vec::with_capacity(map.size_hint().unwrap_or(12));
        while let Some(Key(name)) = map.next_key()? {
            let value: &'de RawValue = map.next_value()?;
            members.push((name, value));
        }
        Ok(Members(members))
    }
}

/// Parses one JSON object into its members.
pub(crate) fn parse_members(body: &[u8]) -> Result<Members<'_>, DecodeError> {
    serde_json::from_slice(body).map_err(|e| json_error(&e))
}

/// Parses a JSON array into its elements, each left unparsed.
pub(crate) fn parse_array(body: &[u8]) -> Result<Vec<&RawValue>, DecodeError> {
    serde_json::from_slice(body).map_err(|e| json_error(&e))
}

/// Reads a JSON array of objects in one pass: each element's members and its size in bytes.
///
/// `None` when the body is anything else (malformed JSON, an element that is not an object,
/// more than `max_elements` elements): the caller then reads it with [`parse_array`], whose
/// error says what is wrong. Compared with [`parse_array`] and a [`parse_members`] per
/// element, the body is scanned once instead of twice.
pub(crate) fn parse_object_array(
    body: &[u8],
    max_elements: usize,
) -> Option<Vec<(Members<'_>, usize)>> {
    let mut at = skip_whitespace(body, 0);
    if body.get(at) != Some(&b'[') {
        return None;
    }
    at = skip_whitespace(body, at + 1);
    let mut elements = Vec::new();
    if body.get(at) == Some(&b']') {
        at += 1;
    } else {
        loop {
            if elements.len() == max_elements || body.get(at) != Some(&b'{') {
                return None;
            }
            let rest = body.get(at..)?;
            let mut stream = serde_json::Deserializer::from_slice(rest).into_iter::<Members>();
            let members = stream.next()?.ok()?;
            let size = stream.byte_offset();
            elements.push((members, size));
            at = skip_whitespace(body, at + size);
            match body.get(at) {
                Some(b',') => at = skip_whitespace(body, at + 1),
                Some(b']') => {
                    at += 1;
                    break;
                }
                _ => return None,
            }
        }
    }
    (skip_whitespace(body, at) == body.len()).then_some(elements)
}

/// The position of the first byte at or after `at` that is not JSON whitespace.
fn skip_whitespace(body: &[u8], mut at: usize) -> usize {
    while matches!(body.get(at), Some(b' ' | b'\t' | b'\n' | b'\r')) {
        at += 1;
    }
    at
}

/// Turns a serde_json error into a body error that keeps its line and column.
pub(crate) fn json_error(error: &serde_json::Error) -> DecodeError {
    use serde_json::error::Category;
    match error.classify() {
        Category::Syntax | Category::Eof | Category::Io => {
            DecodeError::body(format!("malformed JSON: {error}"))
        }
        Category::Data => DecodeError::body(format!("unexpected JSON: {error}")),
    }
}

/// Reads a string-typed member; JSON `null` means absent.
pub(crate) fn string_value(name: &str, raw: &RawValue) -> Result<Option<String>, DecodeError> {
    serde_json::from_str::<Option<String>>(raw.get())
        .map_err(|_| DecodeError::attribute(name, "must be a string"))
}

/// Reads an extension value: a string, a boolean or a 32-bit integer; `null` means absent.
pub(crate) fn extension_value(
    name: &str,
    raw: &RawValue,
) -> Result<Option<ExtensionValue>, DecodeError> {
    let text = raw.get();
    match text.as_bytes().first() {
        Some(b'n') => Ok(None),
        Some(b't') => Ok(Some(ExtensionValue::Bool(true))),
        Some(b'f') => Ok(Some(ExtensionValue::Bool(false))),
        Some(b'"') => string_value(name, raw).map(|s| s.map(ExtensionValue::String)),
        Some(b'-' | b'0'..=b'9') => {
            integer_value(name, text).map(|i| Some(ExtensionValue::Integer(i)))
        }
        _ => Err(DecodeError::attribute(
            name,
            "must be a string, a boolean or an integer",
        )),
    }
}

fn integer_value(name: &str, text: &str) -> Result<i64, DecodeError> {
    if text.contains(['.', 'e', 'E']) {
        return Err(DecodeError::attribute(name, "must be an integer"));
    }
    text.parse::<i32>()
        .map(i64::from)
        .map_err(|_| DecodeError::attribute(name, "integer outside the 32-bit range"))
}

/// Decodes a Base64 string member into bytes.
pub(crate) fn base64_value(name: &str, raw: &RawValue) -> Result<Bytes, DecodeError> {
    let text = string_value(name, raw)?.unwrap_or_default();
    BASE64
        .decode(text.as_bytes())
        .map(Bytes::from)
        .map_err(|_| DecodeError::attribute(name, "is not valid Base64"))
}

/// How an event's `data` is written in JSON.
#[derive(Debug)]
pub(crate) enum Payload<'a> {
    /// Valid JSON under a JSON-typed (or absent) content type: embedded as is (without the
    /// whitespace around it).
    Json(&'a [u8]),
    /// UTF-8 text under a textual content type: a JSON string.
    Text(&'a str),
    /// Anything else: Base64.
    Binary(&'a [u8]),
}

impl<'a> Payload<'a> {
    /// Classifies the payload of `event`, if it has one.
    pub(crate) fn of(event: &'a Event) -> Option<Self> {
        let data = event.data.as_deref()?;
        if event.data_is_json() {
            if let Some(text) = super::json_value::value_text(data) {
                return Some(Self::Json(text));
            }
        } else if event
            .datacontenttype
            .as_deref()
            .is_some_and(is_textual_media_type)
        {
            if let Ok(text) = std::str::from_utf8(data) {
                return Some(Self::Text(text));
            }
        }
        Some(Self::Binary(data))
    }
}

/// Serializes an extension value with its JSON type.
#[derive(Debug)]
pub(crate) struct ExtensionJson<'a>(pub(crate) &'a ExtensionValue);

impl Serialize for ExtensionJson<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            ExtensionValue::String(s) => serializer.serialize_str(s),
            ExtensionValue::Integer(i) => serializer.serialize_i64(*i),
            ExtensionValue::Bool(b) => serializer.serialize_bool(*b),
        }
    }
}

/// Appends `text` to `out` as a JSON string, escaped as serde_json escapes it.
///
/// Attribute values seldom hold a character JSON must escape (a control character, `"` or
/// `\`), so the usual case is one pass over the bytes and one copy; serde_json's byte-by-byte
/// escaping runs only for the rest.
pub(crate) fn write_str(out: &mut Vec<u8>, text: &str) {
    if needs_escape(text.as_bytes()) {
        serde_json::to_writer(&mut *out, text).expect("writing a string to a Vec cannot fail");
        return;
    }
    out.reserve(text.len() + 2);
    out.push(b'"');
    out.extend_from_slice(text.as_bytes());
    out.push(b'"');
}

/// Appends `,"name":` and `value` as a JSON string; `name` is one of ours and needs no
/// escape.
pub(crate) fn write_member(out: &mut Vec<u8>, name: &str, value: &str) {
    out.extend_from_slice(b",\"");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\":");
    write_str(out, value);
}

/// At least the length [`write_str`] gives `text`: exact when nothing needs an escape, six
/// bytes (`\u00XX`) per byte otherwise.
pub(crate) fn str_len_bound(text: &str) -> usize {
    match needs_escape(text.as_bytes()) {
        false => text.len() + 2,
        true => text.len() * 6 + 2,
    }
}

/// True when a byte of `bytes` must be escaped inside a JSON string. Written without an early
/// exit so that it compiles to a loop over whole vector registers.
fn needs_escape(bytes: &[u8]) -> bool {
    bytes.iter().fold(false, |found, &b| found | must_escape(b))
}

/// True for a byte a JSON string cannot hold as is: a control character, `"` or `\`.
#[inline]
pub(crate) fn must_escape(byte: u8) -> bool {
    (byte < 0x20) | (byte == b'"') | (byte == b'\\')
}

/// Appends an extension value to `out` with its JSON type.
pub(crate) fn write_extension(out: &mut Vec<u8>, value: &ExtensionValue) {
    match value {
        ExtensionValue::String(s) => write_str(out, s),
        ExtensionValue::Integer(i) => {
            write!(out, "{i}").expect("writing to a Vec cannot fail");
        }
        ExtensionValue::Bool(true) => out.extend_from_slice(b"true"),
        ExtensionValue::Bool(false) => out.extend_from_slice(b"false"),
    }
}

/// Writes `items` into a new buffer as one JSON array, each by `write`.
pub(crate) fn to_array<T>(
    items: impl IntoIterator<Item = T>,
    mut write: impl FnMut(T, &mut Vec<u8>),
) -> Vec<u8> {
    let mut out = Vec::with_capacity(1024);
    out.push(b'[');
    for (index, item) in items.into_iter().enumerate() {
        if index > 0 {
            out.push(b',');
        }
        write(item, &mut out);
    }
    out.push(b']');
    out
}

/// True when the (unparsed) value is JSON `null`.
pub(crate) fn is_null(raw: &RawValue) -> bool {
    raw.get() == "null"
}

/// True when a content type says the payload is JSON (absent counts as JSON).
pub(crate) fn json_typed(content_type: Option<&str>) -> bool {
    content_type.is_none_or(is_json_media_type)
}

#[cfg(test)]
mod tests {
    use super::needs_escape;

    /// Every byte value at every place of strings of several lengths (around the widths a
    /// vector loop takes at once), among bytes that need no escape and among non-ASCII ones.
    #[test]
    fn every_byte_that_needs_an_escape_is_found_wherever_it_stands() {
        for fill in [b'a', 0xC3, 0x7F, b' '] {
            for len in [1, 7, 8, 9, 15, 16, 17, 31, 32, 33] {
                for at in 0..len {
                    for byte in 0..=u8::MAX {
                        let mut bytes = vec![fill; len];
                        bytes[at] = byte;
                        let expected = byte < 0x20 || byte == b'"' || byte == b'\\';
                        assert_eq!(
                            needs_escape(&bytes),
                            expected,
                            "{byte:#04x} at {at} of {len}"
                        );
                    }
                }
            }
        }
        assert!(!needs_escape(b""));
    }
}
