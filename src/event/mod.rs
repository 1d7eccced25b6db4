//! The normalize stage: one internal CloudEvent model for every ingress format.
//!
//! Imports nothing internal. [`http`] decodes and encodes the CloudEvents HTTP binding,
//! [`eventgrid`] the Event Grid schema.

mod draft;
pub mod eventgrid;
pub mod http;
pub(crate) mod json;
pub(crate) mod json_value;
pub(crate) mod percent;
mod sdk;
mod structured;

#[cfg(test)]
mod conformance;
#[cfg(test)]
mod eventgrid_tests;
#[cfg(test)]
pub(crate) mod prop_tests;
#[cfg(test)]
mod sdk_tests;
#[cfg(test)]
mod structured_tests;
#[cfg(test)]
mod tests;

pub use sdk::to_sdk;

pub(crate) use draft::check_characters;

use bytes::Bytes;

/// One event, as switchyard keeps it from ingress to delivery.
///
/// `data` holds the payload as the binary mode would carry it: the body bytes, the raw JSON
/// text of a JSON `data` member, the characters of a string `data` under a non-JSON content
/// type, or the decoded bytes of `data_base64`. It is parsed only when a filter asks for a
/// `data.*` key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// `specversion`: `1.0` (or `0.3` for older senders).
    pub specversion: String,
    /// `id`.
    pub id: String,
    /// `source` (Event Grid: `topic`).
    pub source: String,
    /// `type` (Event Grid: `eventType`).
    pub ty: String,
    /// `datacontenttype`.
    pub datacontenttype: Option<String>,
    /// `dataschema` (`schemaurl` in 0.3).
    pub dataschema: Option<String>,
    /// `subject`.
    pub subject: Option<String>,
    /// `time`, an RFC 3339 timestamp (Event Grid: `eventTime`).
    pub time: Option<String>,
    /// Extension attributes in arrival order; names are lower-case `[a-z0-9]+`.
    pub extensions: Vec<(String, ExtensionValue)>,
    /// Event Grid `dataVersion`, when the event came in the Event Grid schema.
    pub data_version: Option<String>,
    /// The payload (see the type's documentation).
    pub data: Option<Bytes>,
}

/// The value of an extension attribute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExtensionValue {
    /// A string (also URI, timestamp and binary attributes, in canonical string form).
    String(String),
    /// A 32-bit integer.
    Integer(i64),
    /// A boolean.
    Bool(bool),
}

impl ExtensionValue {
    /// The canonical string form (as sent in a `ce-` header).
    pub fn to_canonical_string(&self) -> String {
        match self {
            Self::String(s) => s.clone(),
            Self::Integer(i) => i.to_string(),
            Self::Bool(b) => b.to_string(),
        }
    }
}

impl Event {
    /// The value of an extension attribute by name.
    pub fn extension(&self, name: &str) -> Option<&ExtensionValue> {
        self.extensions
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v)
    }

    /// Sets (or replaces) an extension attribute.
    pub fn set_extension(&mut self, name: &str, value: ExtensionValue) {
        match self.extensions.iter_mut().find(|(n, _)| n == name) {
            Some(slot) => slot.1 = value,
            None => self.extensions.push((name.to_owned(), value)),
        }
    }

    /// Gives `data` an allocation of its own, so that keeping the event does not keep alive
    /// the larger buffer its bytes were cut from (a connection's read buffer, in binary mode).
    pub fn own_data(&mut self) {
        if let Some(data) = &mut self.data {
            *data = Bytes::copy_from_slice(data);
        }
    }

    /// True when `datacontenttype` is absent or JSON-typed (`*/json`, `*/*+json`).
    pub fn data_is_json(&self) -> bool {
        self.datacontenttype
            .as_deref()
            .is_none_or(is_json_media_type)
    }
}

/// True for media types `*/json` and `*/*+json` (parameters ignored, case-insensitive).
pub fn is_json_media_type(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence.ends_with("/json") || essence.ends_with("+json")
}

/// Decodes a JSON document of events as a file or a pasted text holds them: one structured
/// CloudEvent, a CloudEvents batch (a JSON array), or an Event Grid array (recognised by an
/// `eventType` member). No size limit: the caller bounds the input. Backs `switchyard
/// explain` and the admin API's explain endpoint.
pub fn decode_document(body: &[u8]) -> Result<Vec<Event>, DecodeError> {
    const LIMIT: usize = usize::MAX;
    if memchr::memmem::find(body, b"\"eventType\"").is_some() {
        return match eventgrid::decode(body, LIMIT, LIMIT)? {
            eventgrid::EventGridBody::Events(events) => Ok(events),
            eventgrid::EventGridBody::Validation { .. } => Err(DecodeError::body(
                "this is an Event Grid subscription validation event",
            )),
        };
    }
    match body.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'[') => http::decode_batch(body, LIMIT, LIMIT),
        _ => http::decode_structured(body).map(|event| vec![event]),
    }
}

/// True for media types whose payload is text: `text/*`, `*/xml`, `*/*+xml`, and any media
/// type with a `charset` parameter (parameters compared case-insensitively).
pub fn is_textual_media_type(content_type: &str) -> bool {
    let lower = content_type.to_ascii_lowercase();
    let mut parts = lower.split(';');
    let essence = parts.next().unwrap_or("").trim();
    essence.starts_with("text/")
        || essence.ends_with("/xml")
        || essence.ends_with("+xml")
        || parts.any(|param| param.trim_start().starts_with("charset="))
}

/// Why a request body or an event in it is not a valid event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{message}", location(.index, .attribute))]
pub struct DecodeError {
    /// Whether the input is invalid or too large.
    pub kind: DecodeErrorKind,
    /// Position of the offending event in a batch, when the request carried several.
    pub index: Option<usize>,
    /// The attribute, header or member at fault, when one is.
    pub attribute: Option<String>,
    /// What is wrong.
    pub message: String,
}

/// The classes of decode failure (each maps to one HTTP status at ingress).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeErrorKind {
    /// Malformed JSON, a missing or bad attribute, a bad `specversion` (400).
    Invalid,
    /// An event or a batch over its configured limit (413).
    TooLarge,
}

fn location(index: &Option<usize>, attribute: &Option<String>) -> String {
    match (index, attribute) {
        (Some(i), Some(a)) => format!("event {i}, {a}: "),
        (Some(i), None) => format!("event {i}: "),
        (None, Some(a)) => format!("{a}: "),
        (None, None) => String::new(),
    }
}

impl DecodeError {
    /// An error about one attribute (or header, or member).
    pub fn attribute(attribute: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            kind: DecodeErrorKind::Invalid,
            index: None,
            attribute: Some(attribute.into()),
            message: message.into(),
        }
    }

    /// An error about the whole body.
    pub fn body(message: impl Into<String>) -> Self {
        Self {
            kind: DecodeErrorKind::Invalid,
            index: None,
            attribute: None,
            message: message.into(),
        }
    }

    /// An error about an event or a batch that is over a limit.
    pub fn too_large(message: impl Into<String>) -> Self {
        Self {
            kind: DecodeErrorKind::TooLarge,
            ..Self::body(message)
        }
    }

    /// The same error, located at event `index` of a batch.
    pub fn at(mut self, index: usize) -> Self {
        self.index = Some(index);
        self
    }
}
