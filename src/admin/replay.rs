//! Replay of delivered events kept by `spool.retain_delivered`.
//!
//! - `POST /api/v1/replay` with `{"sink": S, "route": R?, "since": T, "until": T,
//!   "filter": {"type", "source", "subject", "sql"}?}` → 202 `{"id": n, "matched": n}`;
//!   every retained event received in [since, until) that was delivered to `sink` (through
//!   `route`, when given) goes to that sink again as a new delivery.
//! - `GET /api/v1/replays/{id}` → its progress: `matched`, `enqueued`, `delivered`,
//!   `failed` (dead-lettered), `lost` (gone from the store before it was queued) and `state`
//!   (`running` or `done`).
//!
//! Errors: an unknown sink 404, `since` not before `until` 400, retention off 409.

use std::sync::Arc;
use std::time::SystemTime;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Deserialize;
use serde_json::{json, Value};

use super::AdminState;
use crate::cesql::Expr;
use crate::spool::{ReplayError, ReplayFilter, ReplayRequest, ReplayStatus};

/// The replay routes; the caller puts them behind the admin token.
pub(super) fn router() -> Router<AdminState> {
    Router::new()
        .route("/api/v1/replay", post(start))
        .route("/api/v1/replays/{id}", get(show))
}

/// Why a replay request failed; the one place these become responses.
#[derive(Debug, thiserror::Error)]
enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error(transparent)]
    Replay(#[from] ReplayError),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match &self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Replay(ReplayError::Off) => StatusCode::CONFLICT,
            Self::Replay(ReplayError::Read) => StatusCode::SERVICE_UNAVAILABLE,
        };
        (status, Json(json!({ "error": self.to_string() }))).into_response()
    }
}

/// The request body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Body {
    sink: String,
    #[serde(default)]
    route: Option<String>,
    since: String,
    until: String,
    #[serde(default)]
    filter: Option<FilterBody>,
}

/// `filter`: the same attribute names as the history's query (`type`, `source`), the
/// event's `subject`, and a CloudEvents SQL expression.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FilterBody {
    #[serde(default, rename = "type")]
    ty: Option<String>,
    #[serde(default)]
    source: Option<String>,
    #[serde(default)]
    subject: Option<String>,
    #[serde(default)]
    sql: Option<String>,
}

fn time(name: &str, value: &str) -> Result<SystemTime, ApiError> {
    let at = DateTime::parse_from_rfc3339(value)
        .map_err(|e| ApiError::BadRequest(format!("{name}: not an RFC 3339 time ({e})")))?;
    Ok(SystemTime::from(at.with_timezone(&Utc)))
}

fn rfc3339(at: SystemTime) -> String {
    DateTime::<Utc>::from(at).to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Reads and checks the request against the running configuration.
fn request(state: &AdminState, body: &[u8]) -> Result<ReplayRequest, ApiError> {
    let body: Body = serde_json::from_slice(body)
        .map_err(|e| ApiError::BadRequest(format!("request body: {e}")))?;
    if !state.config.get().sinks.contains_key(&body.sink) {
        return Err(ApiError::NotFound(format!("no sink named `{}`", body.sink)));
    }
    let (since, until) = (time("since", &body.since)?, time("until", &body.until)?);
    if since >= until {
        return Err(ApiError::BadRequest("since must be before until".into()));
    }
    let filter = body.filter.unwrap_or_default();
    let sql = match filter.sql {
        None => None,
        Some(text) => {
            Some(Arc::new(Expr::parse(&text).map_err(|e| {
                ApiError::BadRequest(format!("filter.sql: {e}"))
            })?))
        }
    };
    Ok(ReplayRequest {
        sink: body.sink,
        route: body.route,
        since,
        until,
        filter: ReplayFilter {
            ty: filter.ty,
            source: filter.source,
            subject: filter.subject,
            sql,
        },
    })
}

/// 202 `{"id": n, "matched": n}`.
async fn start(
    State(state): State<AdminState>,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    if !state.retained.enabled() {
        return Err(ReplayError::Off.into());
    }
    let request = request(&state, &body)?;
    let status = state.retained.replay(request, state.spool.clone()).await?;
    tracing::info!(id = status.id, sink = %status.sink, matched = status.matched, "Replay started");
    let answer = json!({ "id": status.id, "matched": status.matched });
    Ok((StatusCode::ACCEPTED, Json(answer)))
}

fn status_json(status: &ReplayStatus) -> Value {
    json!({
        "id": status.id,
        "sink": status.sink,
        "route": status.route,
        "since": rfc3339(status.since),
        "until": rfc3339(status.until),
        "matched": status.matched,
        "enqueued": status.enqueued,
        "delivered": status.delivered,
        "failed": status.failed,
        "lost": status.lost,
        "state": status.state.as_str(),
    })
}

/// The replay's progress; 404 when there is none with that id.
async fn show(
    State(state): State<AdminState>,
    Path(text): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let missing = || ApiError::NotFound(format!("no replay with id {text}"));
    let id = text.parse().map_err(|_| missing())?;
    let status = state.retained.replay_status(id).ok_or_else(missing)?;
    Ok(Json(status_json(&status)))
}
