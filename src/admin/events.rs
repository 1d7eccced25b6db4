//! The delivery history API: what happened to each event's deliveries, attempt by attempt.
//!
//! - `GET /api/v1/events?source=&id=&type=&sink=&outcome=&since=&until=&limit=&cursor=`
//!   → `{"events": [...], "next": key | null}`, newest first; each event with its
//!   deliveries' attempt count and last outcome.
//! - `GET /api/v1/events/{key}` → the event (attributes, and data up to 4 KiB), each of its
//!   deliveries and its attempts (the newest 1000 of each).
//!
//! `limit` is 1 to 1000 (default 100); `cursor` is the previous page's `next`. `since` and
//! `until` are RFC 3339 times. Both answer 404 when history is off.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine as _;
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Value};

use super::AdminState;
use crate::history::{AttemptOutcome, DeliveryView, EventView, HistoryQuery, MAX_LIMIT};

/// Events per page when the request names no `limit`.
const DEFAULT_LIMIT: usize = 100;

/// Most attempts shown per delivery (the newest); an event id sent again and again gathers
/// every delivery's attempts under one event.
const MAX_ATTEMPTS_SHOWN: usize = 1000;

/// The history routes; the caller puts them behind the admin token.
pub(super) fn router() -> Router<AdminState> {
    Router::new()
        .route("/api/v1/events", get(list))
        .route("/api/v1/events/{key}", get(show))
}

/// Why a history request failed; the one place these become responses.
#[derive(Debug, thiserror::Error)]
enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("no event with key {0} in the delivery history")]
    NotFound(String),
    #[error("delivery history is off (spool.history_ttl or spool.history_max_bytes is 0)")]
    Off,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match &self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::NotFound(_) | Self::Off => StatusCode::NOT_FOUND,
        };
        (status, Json(json!({ "error": self.to_string() }))).into_response()
    }
}

fn query(params: &BTreeMap<String, String>) -> Result<HistoryQuery, ApiError> {
    let mut query = HistoryQuery {
        limit: DEFAULT_LIMIT,
        ..HistoryQuery::default()
    };
    let bad = ApiError::BadRequest;
    for (key, value) in params {
        let value = value.clone();
        match key.as_str() {
            "source" => query.source = Some(value),
            "id" => query.id = Some(value),
            "type" => query.ty = Some(value),
            "sink" => query.sink = Some(value),
            "outcome" => {
                let outcome = AttemptOutcome::parse(&value);
                let names = AttemptOutcome::ALL.map(AttemptOutcome::as_str).join(", ");
                query.outcome =
                    Some(outcome.ok_or_else(|| bad(format!("outcome: expected one of {names}")))?);
            }
            "since" => query.since = Some(time("since", &value)?),
            "until" => query.until = Some(time("until", &value)?),
            "limit" => {
                query.limit = match value.parse::<usize>() {
                    Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
                    _ => return Err(bad(format!("limit: expected 1 to {MAX_LIMIT}"))),
                };
            }
            "cursor" => {
                let cursor = value.parse();
                query.cursor = Some(cursor.map_err(|_| bad("cursor: expected a key".into()))?);
            }
            other => return Err(bad(format!("unknown parameter `{other}`"))),
        }
    }
    Ok(query)
}

fn time(name: &str, value: &str) -> Result<SystemTime, ApiError> {
    let at = DateTime::parse_from_rfc3339(value)
        .map_err(|e| ApiError::BadRequest(format!("{name}: not an RFC 3339 time ({e})")))?;
    Ok(SystemTime::from(at.with_timezone(&Utc)))
}

fn rfc3339(at: SystemTime) -> String {
    DateTime::<Utc>::from(at).to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn millis(duration: Option<Duration>) -> Option<f64> {
    duration.map(|d| d.as_secs_f64() * 1000.0)
}

/// A delivery in a listing: its attempt count and last outcome.
fn delivery_summary(delivery: &DeliveryView) -> Value {
    let last = delivery.attempts.last();
    json!({
        "route": delivery.route,
        "sink": delivery.sink,
        "attempts": last.map(|a| a.attempt),
        "outcome": last.map(|a| a.outcome.as_str()),
        "status": last.and_then(|a| a.status),
        "time": last.map(|a| rfc3339(a.at)),
    })
}

/// A delivery with its attempts (the newest [`MAX_ATTEMPTS_SHOWN`]).
fn delivery_full(delivery: &DeliveryView) -> Value {
    let omitted = delivery.attempts.len().saturating_sub(MAX_ATTEMPTS_SHOWN);
    let attempts: Vec<Value> = delivery.attempts[omitted..]
        .iter()
        .map(|a| {
            json!({
                "attempt": a.attempt,
                "time": rfc3339(a.at),
                "duration_ms": millis(a.duration),
                "outcome": a.outcome.as_str(),
                "status": a.status,
                "error": a.detail,
            })
        })
        .collect();
    let mut value = delivery_summary(delivery);
    value["attempt_log"] = Value::Array(attempts);
    if omitted > 0 {
        value["attempt_log_omitted"] = json!(omitted);
    }
    value
}

fn summary(event: &EventView) -> Value {
    let times = event
        .deliveries
        .iter()
        .flat_map(|d| &d.attempts)
        .map(|a| a.at);
    json!({
        "key": event.key,
        "id": event.id,
        "source": event.source,
        "type": event.ty,
        "first_time": times.clone().min().map(rfc3339),
        "last_time": times.max().map(rfc3339),
        "deliveries": event.deliveries.iter().map(delivery_summary).collect::<Vec<_>>(),
    })
}

/// The event as a structured CloudEvent: its attributes, and its data when kept whole
/// (JSON, or text); `data_base64` for other bytes; `data_truncated` when cut.
fn event_json(event: &EventView) -> Value {
    let mut value = event
        .attributes
        .as_deref()
        .and_then(|a| serde_json::from_slice::<Value>(a).ok())
        .unwrap_or(Value::Null);
    let (Value::Object(map), Some(data)) = (&mut value, &event.data) else {
        return value;
    };
    if event.data_size == 0 {
        return value;
    }
    let whole = data.len() as u64 == event.data_size;
    let json_data = whole
        .then(|| serde_json::from_slice::<Value>(data).ok())
        .flatten();
    // Data cut inside a character is still text up to that character.
    let text = match std::str::from_utf8(data) {
        Ok(text) => Some(text),
        Err(e) if e.error_len().is_none() => std::str::from_utf8(&data[..e.valid_up_to()]).ok(),
        Err(_) => None,
    };
    match (json_data, text) {
        (Some(json), _) => map.insert("data".into(), json),
        (None, Some(text)) => map.insert("data".into(), Value::String(text.to_owned())),
        (None, None) => map.insert(
            "data_base64".into(),
            Value::String(base64::engine::general_purpose::STANDARD.encode(data)),
        ),
    };
    if !whole {
        map.insert("data_truncated".into(), Value::Bool(true));
        map.insert("data_size".into(), json!(event.data_size));
    }
    value
}

async fn list(
    State(state): State<AdminState>,
    Query(params): Query<BTreeMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let query = query(&params)?;
    let page = state.history.events(query).await.ok_or(ApiError::Off)?;
    let events: Vec<Value> = page.events.iter().map(summary).collect();
    Ok(Json(json!({ "events": events, "next": page.next })))
}

async fn show(
    State(state): State<AdminState>,
    Path(text): Path<String>,
) -> Result<Json<Value>, ApiError> {
    if !state.history.enabled() {
        return Err(ApiError::Off);
    }
    let key = text.parse().map_err(|_| ApiError::NotFound(text.clone()))?;
    let event = state.history.event(key).await;
    let event = event.ok_or(ApiError::NotFound(text))?;
    let mut value = summary(&event);
    value["event"] = event_json(&event);
    value["deliveries"] = event.deliveries.iter().map(delivery_full).collect();
    Ok(Json(value))
}
