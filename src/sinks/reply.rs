//! A target's answer taken as an event (`reply: true`): how a response, a command's stdout
//! or a handler's return value is read into one, with the ingress decoders.

use axum::http::header::CONTENT_TYPE;
use axum::http::HeaderMap;
use bytes::Bytes;

use crate::event::{http as binding, Event};

/// What a target answered a successful delivery with.
#[derive(Debug)]
pub enum Reply {
    /// Nothing that is an event (no CloudEvent in the answer).
    None,
    /// A CloudEvent, decoded as ingress decodes one.
    Event(Box<Event>),
    /// The answer claims to be a CloudEvent but is not a valid one; the reason.
    Invalid(String),
}

/// How an HTTP response carries its reply, if it carries one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Carried {
    /// `Content-Type: application/cloudevents+json`.
    Structured,
    /// `ce-*` headers, the body as data.
    Binary,
}

/// The mode a response carries a CloudEvent in: structured by its content type, binary when
/// any `ce-` header is present; `None` for an ordinary answer.
pub(crate) fn carried(headers: &HeaderMap) -> Option<Carried> {
    let essence = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map_or("", |ct| ct.split(';').next().unwrap_or("").trim());
    if essence.eq_ignore_ascii_case("application/cloudevents+json") {
        return Some(Carried::Structured);
    }
    let binary = headers.keys().any(|name| name.as_str().starts_with("ce-"));
    binary.then_some(Carried::Binary)
}

/// Decodes a response's reply carried as `carried`.
pub(crate) fn from_response(carried: Carried, headers: &HeaderMap, body: Bytes) -> Reply {
    let decoded = match carried {
        Carried::Structured => binding::decode_structured(&body),
        Carried::Binary => binding::decode_binary(headers, body),
    };
    decoded.map_or_else(|e| Reply::Invalid(e.to_string()), event)
}

/// Decodes a structured-mode JSON document (a command's stdout, a handler's event); empty or
/// blank output is no reply.
pub(crate) fn from_json(output: &[u8]) -> Reply {
    if output.trim_ascii().is_empty() {
        return Reply::None;
    }
    binding::decode_structured(output).map_or_else(|e| Reply::Invalid(e.to_string()), event)
}

/// A decoded reply.
fn event(event: Event) -> Reply {
    Reply::Event(Box::new(event))
}

/// A reply longer than `limit` bytes.
pub(crate) fn too_large(limit: usize) -> Reply {
    Reply::Invalid(format!("the reply is over {limit} bytes"))
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn an_answer_carries_a_reply_only_in_a_cloudevents_mode() {
        let structured = headers(&[(
            "content-type",
            "Application/CloudEvents+JSON; charset=utf-8",
        )]);
        assert_eq!(carried(&structured), Some(Carried::Structured));
        let binary = headers(&[("ce-id", "1"), ("content-type", "application/json")]);
        assert_eq!(carried(&binary), Some(Carried::Binary));
        assert_eq!(
            carried(&headers(&[("content-type", "application/json")])),
            None
        );
        assert_eq!(carried(&HeaderMap::new()), None);
    }

    #[test]
    fn a_binary_answer_without_specversion_is_invalid() {
        let answer = headers(&[("ce-id", "1"), ("ce-type", "T"), ("ce-source", "/s")]);
        let reply = from_response(Carried::Binary, &answer, Bytes::new());
        assert!(matches!(reply, Reply::Invalid(_)), "{reply:?}");
    }

    #[test]
    fn blank_output_is_no_reply_and_text_is_invalid() {
        assert!(matches!(from_json(b" \n"), Reply::None));
        assert!(matches!(from_json(b"done\n"), Reply::Invalid(_)));
        let json = br#"{"specversion":"1.0","id":"1","source":"/s","type":"T"}"#;
        assert!(matches!(from_json(json), Reply::Event(e) if e.id == "1"));
    }
}
