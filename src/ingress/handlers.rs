//! The publish endpoints: authenticate → size check → detect the mode → read the body →
//! verify a body signature → decode → accept → 2xx, or one of [`IngressError`]'s answers.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::SystemTime;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderName, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use tracing::Instrument as _;

use super::auth::{self, Claim, ReplayGuard};
use super::error::IngressError;
use super::handshake;
use super::IngressState;
use crate::config::IngressConfig;
use crate::event::eventgrid::{self, EventGridBody};
use crate::event::{http, DecodeError, Event, ExtensionValue};
use crate::server::BodyError;
use crate::telemetry::{self, Counters, Format};

const BATCH: &str = "application/cloudevents-batch";
const BATCH_JSON: &str = "application/cloudevents-batch+json";
const STRUCTURED: &str = "application/cloudevents";
const STRUCTURED_JSON: &str = "application/cloudevents+json";
/// The header that marks a binary-mode CloudEvent.
const CE_SPECVERSION: HeaderName = HeaderName::from_static("ce-specversion");
/// W3C trace context, carried on as the CloudEvents `traceparent` extension.
const TRACEPARENT: &str = "traceparent";
/// The same name as a header name, made once.
const TRACEPARENT_HEADER: HeaderName = HeaderName::from_static(TRACEPARENT);
/// Longest `traceparent` value carried on (version 00 is 55 characters).
const MAX_TRACEPARENT: usize = 256;

/// Which ingress path a request came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    /// `POST /events`: a CloudEvents webhook target (202 on success).
    Webhook,
    /// `POST /api/events`: the Event Grid topic path (200 on success, as Event Grid answers).
    Topic,
}

/// How the request carries its events (CloudEvents HTTP binding §3, or Event Grid schema).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// `application/cloudevents-batch+json`.
    Batch,
    /// `application/cloudevents+json`.
    Structured,
    /// Attributes in `ce-*` headers, the body as data.
    Binary,
    /// A JSON array of Event Grid events (or the validation event).
    EventGrid,
}

impl Mode {
    /// The `format` label of the received-events metric.
    fn format(self) -> Format {
        match self {
            Self::Batch => Format::Batch,
            Self::Structured => Format::Structured,
            Self::Binary => Format::Binary,
            Self::EventGrid => Format::EventGrid,
        }
    }
}

/// What a decoded body asks for.
enum Decoded {
    Events(Vec<Event>),
    Validation(String),
}

/// `POST /events`.
pub(crate) async fn publish_webhook(
    State(state): State<IngressState>,
    State(replay): State<Arc<ReplayGuard>>,
    request: Request,
) -> Response {
    publish(&state, &replay, Endpoint::Webhook, request).await
}

/// `POST /api/events`.
pub(crate) async fn publish_topic(
    State(state): State<IngressState>,
    State(replay): State<Arc<ReplayGuard>>,
    request: Request,
) -> Response {
    publish(&state, &replay, Endpoint::Topic, request).await
}

async fn publish(
    state: &IngressState,
    replay: &Arc<ReplayGuard>,
    endpoint: Endpoint,
    request: Request,
) -> Response {
    // Read once: the metrics' format label and the decoder both need it.
    let mode = detect_mode(request.headers());
    let format = mode.as_ref().map_or(Format::Unknown, |mode| mode.format());
    let span = if state.traced {
        telemetry::ingress_span(request.headers())
    } else {
        tracing::Span::none()
    };
    let published = try_publish(state, replay, endpoint, request, mode)
        .instrument(span.clone())
        .await;
    telemetry::span_outcome(
        &span,
        if published.is_ok() {
            "accepted"
        } else {
            "rejected"
        },
    );
    match published {
        Ok(response) => response,
        Err(e) => {
            Counters::add(&state.counters.events_rejected, e.rejected_events());
            state.counters.received(format, false, e.rejected_events());
            e.into_response()
        }
    }
}

async fn try_publish(
    state: &IngressState,
    replay: &Arc<ReplayGuard>,
    endpoint: Endpoint,
    request: Request,
    mode: Result<Mode, IngressError>,
) -> Result<Response, IngressError> {
    let config = &*state.config.get();
    let (parts, body) = request.into_parts();
    let gate = auth::check(&config.auth, &parts.headers, &parts.uri, SystemTime::now())?;
    // Refuse a declared oversize body before reading a byte of it.
    if declared_length(&parts.headers).is_some_and(|n| n > config.max_request_bytes as u64) {
        return Err(too_large(config));
    }
    // An unsupported media type is answered after authentication and the length check.
    let mode = mode?;
    let body = read_body(body, config).await?;
    // A signature over the body is checked before a byte of it is decoded.
    let (authorized, claim) = gate.verify_body(&config.auth, &body, replay, SystemTime::now())?;
    let events = match decode(mode, &parts.headers, body, config)? {
        Decoded::Validation(code) => {
            if let Some(claim) = claim {
                claim.keep();
            }
            return Ok(authorized.mark(handshake::validation_response(code)));
        }
        Decoded::Events(mut events) => {
            carry_traceparent(&parts.headers, &mut events);
            events
        }
    };
    let count = events.len();
    let span = tracing::Span::current();
    if !span.is_disabled() {
        span.record("events", count);
        if let [one] = events.as_slice() {
            span.record("event_id", one.id.as_str());
        }
    }
    // The acceptor's store finishes even when this future is dropped (the client hung up),
    // so from here a dropped claim keeps its id: hanging up must not let a replay through.
    let claim = claim.map(Claim::kept_on_drop);
    let stored = state
        .acceptor
        .accept_from(events, Some(mode.format()))
        .await;
    if let Err(source) = stored {
        // Refused: nothing stored, so the sender's retry with the same id goes through.
        if let Some(claim) = claim {
            claim.release();
        }
        return Err(IngressError::Accept {
            source,
            events: count,
        });
    }
    Ok(authorized.mark(accepted(endpoint)))
}

/// Sets a request's `traceparent` header as the `traceparent` extension of each event that
/// has none (CloudEvents distributed-tracing extension), so every delivery carries it on.
/// Without the header, while spans are exported, the request's own `ingress` span starts
/// the trace and is the one carried on.
fn carry_traceparent(headers: &HeaderMap, events: &mut [Event]) {
    let value = match headers
        .get(&TRACEPARENT_HEADER)
        .and_then(|v| v.to_str().ok())
    {
        Some(value) => Cow::Borrowed(value.trim()),
        None => match telemetry::current_traceparent() {
            Some(own) => Cow::Owned(own),
            None => return,
        },
    };
    if value.is_empty() || value.len() > MAX_TRACEPARENT {
        return;
    }
    for event in events
        .iter_mut()
        .filter(|e| e.extension(TRACEPARENT).is_none())
    {
        event.set_extension(TRACEPARENT, ExtensionValue::String(value.to_string()));
    }
}

/// The success answer: empty-bodied, 200 on the Event Grid topic path, 202 elsewhere.
fn accepted(endpoint: Endpoint) -> Response {
    match endpoint {
        Endpoint::Topic => StatusCode::OK,
        Endpoint::Webhook => StatusCode::ACCEPTED,
    }
    .into_response()
}

/// The 413 answer for a body over `max_request_bytes`.
pub(crate) fn too_large(config: &IngressConfig) -> IngressError {
    IngressError::RequestTooLarge {
        limit: config.max_request_bytes,
    }
}

/// The `Content-Length` a request declares, if any.
pub(crate) fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Reads the whole body, up to `max_request_bytes` (413 past it) and within `body_timeout`
/// (408 past it; the server enforces the deadline).
pub(crate) async fn read_body(body: Body, config: &IngressConfig) -> Result<Bytes, IngressError> {
    axum::body::to_bytes(body, config.max_request_bytes)
        .await
        .map_err(|e| {
            let limited = std::error::Error::source(&e)
                .is_some_and(|inner| inner.is::<http_body_util::LengthLimitError>());
            if limited {
                too_large(config)
            } else if let Some(timeout) = BodyError::timed_out(&e) {
                IngressError::BodyTimeout(timeout)
            } else {
                IngressError::BodyRead(e)
            }
        })
}

/// Picks the mode from `Content-Type` (batch prefix before structured, case-insensitive),
/// falling back to binary when `ce-specversion` is present.
pub(crate) fn detect_mode(headers: &HeaderMap) -> Result<Mode, IngressError> {
    let content_type = headers.get(header::CONTENT_TYPE);
    let essence = content_type
        .and_then(|v| v.to_str().ok())
        .map_or("", |ct| ct.split(';').next().unwrap_or("").trim());
    let has_ce_headers = headers.contains_key(&CE_SPECVERSION);
    let mode = if starts_with_ignore_case(essence, BATCH) {
        essence
            .eq_ignore_ascii_case(BATCH_JSON)
            .then_some(Mode::Batch)
    } else if starts_with_ignore_case(essence, STRUCTURED) {
        if essence.eq_ignore_ascii_case(STRUCTURED_JSON) {
            Some(Mode::Structured)
        } else {
            // An unknown event format: take it as binary when it carries `ce-` attributes.
            has_ce_headers.then_some(Mode::Binary)
        }
    } else if has_ce_headers {
        Some(Mode::Binary)
    } else {
        is_json(essence).then_some(Mode::EventGrid)
    };
    mode.ok_or_else(|| IngressError::UnsupportedMediaType {
        content_type: content_type.map_or_else(
            || "none".into(),
            |v| String::from_utf8_lossy(v.as_bytes()).into(),
        ),
    })
}

/// `application/json`, `text/json` or any `+json` type.
fn is_json(essence: &str) -> bool {
    essence.eq_ignore_ascii_case("application/json")
        || essence.eq_ignore_ascii_case("text/json")
        || ends_with_ignore_case(essence, "+json")
}

fn starts_with_ignore_case(s: &str, prefix: &str) -> bool {
    s.get(..prefix.len())
        .is_some_and(|head| head.eq_ignore_ascii_case(prefix))
}

fn ends_with_ignore_case(s: &str, suffix: &str) -> bool {
    s.len() >= suffix.len()
        && s.get(s.len() - suffix.len()..)
            .is_some_and(|tail| tail.eq_ignore_ascii_case(suffix))
}

fn decode(
    mode: Mode,
    headers: &HeaderMap,
    body: Bytes,
    config: &IngressConfig,
) -> Result<Decoded, IngressError> {
    let single_event_fits = |body: &Bytes| {
        if body.len() > config.max_event_bytes {
            Err(DecodeError::too_large(format!(
                "event is {} bytes; the limit is {}",
                body.len(),
                config.max_event_bytes
            )))
        } else {
            Ok(())
        }
    };
    let (max_bytes, max_events) = (config.max_event_bytes, config.max_batch_events);
    let decoded = match mode {
        Mode::Batch => Decoded::Events(http::decode_batch(&body, max_bytes, max_events)?),
        Mode::Structured => {
            single_event_fits(&body)?;
            Decoded::Events(vec![http::decode_structured(&body)?])
        }
        Mode::Binary => {
            single_event_fits(&body)?;
            Decoded::Events(vec![http::decode_binary(headers, body)?])
        }
        Mode::EventGrid => match eventgrid::decode(&body, max_bytes, max_events)? {
            EventGridBody::Events(events) => Decoded::Events(events),
            EventGridBody::Validation { code } => Decoded::Validation(code),
        },
    };
    Ok(decoded)
}
