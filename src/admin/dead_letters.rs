//! The dead-letter API: list, show, replay and purge the records the spool keeps for every
//! dead-lettered delivery.
//!
//! - `GET /api/v1/dead-letters?route=&sink=&reason=&since=&limit=&after=`
//! - `GET /api/v1/dead-letters/{id}`
//! - `POST /api/v1/dead-letters/{id}/replay`
//! - `POST /api/v1/dead-letters/replay?route=&sink=&reason=&since=` → `{"replayed": n}`
//! - `DELETE /api/v1/dead-letters/{id}`
//!
//! Listing pages by id: `limit` (default 100, at most 1000) and `after` (the last id seen);
//! the answer's `next` is the cursor for the following page, `null` on the last one. A page
//! also ends, with `next`, once its records reach 4 MiB of JSON, so one answer stays a
//! few MiB whatever the events' sizes (a page holds at least one record).

use std::collections::BTreeMap;
use std::time::SystemTime;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::value::RawValue;
use serde_json::{json, Value};

use super::AdminState;
use crate::event::http as ce_http;
use crate::spool::{
    event_size, DeadLetterQuery, DeadLetterRecord, Spool, SpoolError, MAX_QUERY_LIMIT,
};

/// Records per page when the request names no `limit`.
const DEFAULT_LIMIT: usize = 100;

/// Bytes of records (as JSON) past which a listing page ends early, with `next`.
const PAGE_MAX_BYTES: usize = 4 << 20;

/// The dead-letter routes; the caller puts them behind the admin token.
pub(super) fn router() -> Router<AdminState> {
    Router::new()
        .route("/api/v1/dead-letters", get(list))
        .route("/api/v1/dead-letters/replay", post(replay_matching))
        .route("/api/v1/dead-letters/{id}", get(show).delete(purge))
        .route("/api/v1/dead-letters/{id}/replay", post(replay_one))
}

/// Why a dead-letter request failed; the one place these become responses.
#[derive(Debug, thiserror::Error)]
enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("no dead letter with id {0}")]
    NotFound(String),
    #[error("the spool is unavailable; try again later")]
    Spool(#[from] SpoolError),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match &self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Spool(_) => StatusCode::SERVICE_UNAVAILABLE,
        };
        (status, Json(json!({ "error": self.to_string() }))).into_response()
    }
}

/// Reads the filters and, when `paged`, `limit` and `after`; any other parameter is refused.
fn query(params: &BTreeMap<String, String>, paged: bool) -> Result<DeadLetterQuery, ApiError> {
    let mut query = DeadLetterQuery {
        limit: if paged { DEFAULT_LIMIT } else { usize::MAX },
        ..DeadLetterQuery::default()
    };
    let bad = |what: String| ApiError::BadRequest(what);
    for (key, value) in params {
        match key.as_str() {
            "route" => query.route = Some(value.clone()),
            "sink" => query.sink = Some(value.clone()),
            "reason" => query.reason = Some(value.clone()),
            "since" => {
                let since = DateTime::parse_from_rfc3339(value)
                    .map_err(|e| bad(format!("since: not an RFC 3339 time ({e})")))?;
                query.since = Some(SystemTime::from(since.with_timezone(&Utc)));
            }
            "limit" if paged => {
                query.limit = match value.parse::<usize>() {
                    Ok(n) if (1..=MAX_QUERY_LIMIT).contains(&n) => n,
                    _ => return Err(bad(format!("limit: expected 1 to {MAX_QUERY_LIMIT}"))),
                };
            }
            "after" if paged => {
                let after = value
                    .parse()
                    .map_err(|_| bad("after: expected an id".into()))?;
                query.after = Some(after);
            }
            other => return Err(bad(format!("unknown parameter `{other}`"))),
        }
    }
    Ok(query)
}

fn id(text: &str) -> Result<u64, ApiError> {
    text.parse()
        .map_err(|_| ApiError::NotFound(text.to_owned()))
}

fn rfc3339(at: SystemTime) -> String {
    DateTime::<Utc>::from(at).to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// A record as JSON, with its event as a structured CloudEvent.
fn record_json(record: &DeadLetterRecord) -> Value {
    let info = &record.info;
    let event: Value =
        serde_json::from_slice(&ce_http::encode_structured(&record.event)).unwrap_or(Value::Null);
    json!({
        "id": record.id,
        "route": &*record.route,
        "sink": &*record.sink,
        "reason": info.reason,
        "attempts": info.attempts,
        "last_outcome": info.last_outcome,
        "last_status": info.last_status,
        "publish_time": rfc3339(record.accepted_at),
        "last_attempt_time": info.last_attempt_at.map(rfc3339),
        "dead_lettered_time": rfc3339(info.dead_lettered_at),
        "event": event,
    })
}

/// `{"dead_letters": [...], "next": id | null}`.
async fn list(
    State(state): State<AdminState>,
    Query(params): Query<BTreeMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let mut query = query(&params, true)?;
    // The spool reads no more events than a page can carry.
    query.max_bytes = PAGE_MAX_BYTES as u64;
    let records = state.spool.dead_letters(&query).await?;
    let read: u64 = records.iter().map(|r| event_size(&r.event)).sum();
    let mut full = records.len() == query.limit || read >= query.max_bytes;
    let mut page: Vec<Box<RawValue>> = Vec::with_capacity(records.len());
    let mut bytes = 0;
    let mut last = None;
    for record in &records {
        let Ok(raw) = serde_json::value::to_raw_value(&record_json(record)) else {
            continue;
        };
        if !page.is_empty() && bytes + raw.get().len() > PAGE_MAX_BYTES {
            full = true;
            break;
        }
        bytes += raw.get().len();
        last = Some(record.id);
        page.push(raw);
    }
    let next = last.filter(|_| full);
    Ok(Json(json!({ "dead_letters": page, "next": next })))
}

async fn show(
    State(state): State<AdminState>,
    Path(text): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let record = state.spool.dead_letter_record(id(&text)?).await?;
    record
        .map(|r| Json(record_json(&r)))
        .ok_or(ApiError::NotFound(text))
}

/// `{"replayed": 1}`; 404 when there is no such record.
async fn replay_one(
    State(state): State<AdminState>,
    Path(text): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let query = DeadLetterQuery {
        id: Some(id(&text)?),
        limit: 1,
        ..DeadLetterQuery::default()
    };
    match state.spool.replay_dead_letters(&query).await? {
        0 => Err(ApiError::NotFound(text)),
        n => Ok(Json(json!({ "replayed": n }))),
    }
}

/// `{"replayed": n}` for every record the filters select.
async fn replay_matching(
    State(state): State<AdminState>,
    Query(params): Query<BTreeMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let query = query(&params, false)?;
    let replayed = state.spool.replay_dead_letters(&query).await?;
    tracing::info!(replayed, "Dead letters replayed");
    Ok(Json(json!({ "replayed": replayed })))
}

/// 204 once deleted; 404 when there is no such record.
async fn purge(
    State(state): State<AdminState>,
    Path(text): Path<String>,
) -> Result<StatusCode, ApiError> {
    if state.spool.purge_dead_letter(id(&text)?).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound(text))
    }
}
