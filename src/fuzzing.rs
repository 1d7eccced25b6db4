//! Entry points for the fuzz targets in `fuzz/`: thin wrappers over the decoders of outside
//! input that are not public otherwise. Not a stable interface.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, SystemTime};

use axum::http::header::RETRY_AFTER;
use axum::http::{HeaderMap, HeaderValue};

use crate::event::DecodeError;

pub use crate::spool::fuzzing::*;

/// Decodes a `ce-` header value (quoted-string syntax, then percent-decoding).
pub fn percent_decode(raw: &[u8]) -> Result<String, DecodeError> {
    crate::event::percent::decode("ce-fuzz", raw)
}

/// Encodes an attribute value for a `ce-` header.
pub fn percent_encode(value: &str) -> String {
    crate::event::percent::encode(value).into_owned()
}

/// What a `traceparent` value says: trace id and parent span id (lower-case hex), sampled.
pub fn parse_traceparent(value: &str) -> Option<(String, String, bool)> {
    crate::telemetry::otlp::parse_traceparent(value)
}

/// The wait a `Retry-After` header value asks for, read at `now`; `None` when it is not
/// a header value at all or not a valid `Retry-After`.
pub fn retry_after(value: &[u8], now: SystemTime) -> Option<Duration> {
    let mut headers = HeaderMap::new();
    headers.insert(RETRY_AFTER, HeaderValue::from_bytes(value).ok()?);
    crate::sinks::classify::retry_after(&headers, now)
}

/// Loads configuration text with no environment variables set.
pub fn load_config(text: &str) -> Result<crate::Config, crate::config::ConfigError> {
    crate::config::load_str(text, Path::new("routes.yaml"), &BTreeMap::new())
}

/// The text of the one JSON value `bytes` holds, as an event's JSON `data` is checked before
/// it is embedded in a JSON line or request.
pub fn json_value_text(bytes: &[u8]) -> Option<&[u8]> {
    crate::event::json_value::value_text(bytes)
}
