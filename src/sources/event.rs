//! A verified request → one CloudEvent: the source's templates filled from headers and JSON
//! pointers into the body, `data` the raw body under its content type.

use std::time::SystemTime;

use axum::http::{header, HeaderMap, HeaderName};
use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::Value as Json;

use crate::config::{EventMapping, Part, Template};
use crate::event::{check_characters, DecodeError, Event};

/// What a template needed and the request did not have.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Missing {
    /// A header absent, empty or not text.
    #[error("header {0} is missing")]
    Header(HeaderName),
    /// A pointer that finds no string, number or boolean (or a body that is not JSON).
    #[error("JSON pointer {0} finds no value in the body")]
    Json(String),
}

/// Why a request could not become an event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum BuildError {
    /// `type` or `source` could not be built.
    #[error("cannot build the event's {attribute}: {missing}")]
    Missing {
        /// `type` or `source`.
        attribute: &'static str,
        /// What was missing.
        missing: Missing,
    },
    /// A built attribute holds characters CloudEvents does not allow.
    #[error(transparent)]
    Invalid(#[from] DecodeError),
}

/// What the templates read from: the headers, and the body parsed once when one reads JSON.
struct Input<'a> {
    headers: &'a HeaderMap,
    json: Option<Json>,
}

impl Input<'_> {
    fn render(&self, template: &Template) -> Result<String, Missing> {
        let mut out = String::new();
        for part in template.parts() {
            match part {
                Part::Literal(text) => out.push_str(text),
                Part::Header(name) => out.push_str(self.header(name)?),
                Part::Json(pointer) => self.json(pointer, &mut out)?,
            }
        }
        Ok(out)
    }

    fn header(&self, name: &HeaderName) -> Result<&str, Missing> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| Missing::Header(name.clone()))
    }

    fn json(&self, pointer: &str, out: &mut String) -> Result<(), Missing> {
        let missing = || Missing::Json(pointer.to_owned());
        match self.json.as_ref().and_then(|j| j.pointer(pointer)) {
            Some(Json::String(s)) if !s.is_empty() => out.push_str(s),
            Some(Json::Number(n)) => out.push_str(&n.to_string()),
            Some(Json::Bool(b)) => out.push_str(if *b { "true" } else { "false" }),
            _ => return Err(missing()),
        }
        Ok(())
    }
}

/// Builds the event of a verified request: `type` and `source` must be built, a missing
/// `id` part gives a generated id (UUID v4), a missing `subject` part leaves it out.
pub(crate) fn build(
    mapping: &EventMapping,
    headers: &HeaderMap,
    body: Bytes,
    now: SystemTime,
) -> Result<Event, BuildError> {
    let json = mapping
        .reads_json()
        .then(|| serde_json::from_slice(&body).ok())
        .flatten();
    let input = Input { headers, json };
    let required = |attribute: &'static str, t: &Template| {
        input
            .render(t)
            .map_err(|missing| BuildError::Missing { attribute, missing })
    };
    let ty = required("type", &mapping.ty)?;
    let source = required("source", &mapping.source)?;
    let optional = |t: &Option<Template>| t.as_ref().and_then(|t| input.render(t).ok());
    let id = optional(&mapping.id).unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let subject = optional(&mapping.subject);
    let datacontenttype = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty());
    for (name, value) in [("type", &ty), ("source", &source), ("id", &id)]
        .into_iter()
        .chain(subject.iter().map(|s| ("subject", s)))
        .chain(datacontenttype.iter().map(|c| ("datacontenttype", c)))
    {
        check_characters("", name, value)?;
    }
    let time = DateTime::<Utc>::from(now).to_rfc3339_opts(SecondsFormat::Millis, true);
    Ok(Event {
        specversion: "1.0".to_owned(),
        id,
        source,
        ty,
        datacontenttype,
        dataschema: None,
        subject,
        time: Some(time),
        extensions: Vec::new(),
        data_version: None,
        data: (!body.is_empty()).then_some(body),
    })
}
