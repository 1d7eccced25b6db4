//! The saga API: list instances, show one with its steps, abort one.
//!
//! - `GET /api/v1/sagas?name=&state=&since=&limit=&after=` → `{"sagas": [...], "next": n | null}`
//! - `GET /api/v1/sagas/{id}` → the instance with `steps`
//! - `POST /api/v1/sagas/{id}/abort` → the instance, compensating (409 when it is not running)
//!
//! Listing pages like the dead-letter API: `limit` (default 100, at most 1000) and `after`
//! (the previous page's `next`). Without a saga store (no `sagas:` configured) every
//! instance is unknown and listings are empty.

use std::collections::BTreeMap;
use std::time::SystemTime;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Value};

use super::AdminState;
use crate::saga::{
    Abort, InstanceQuery, InstanceView, SagaError, State as SagaState, StepView, MAX_LIST_LIMIT,
};

/// Instances per page when the request names no `limit`.
const DEFAULT_LIMIT: usize = 100;

/// The saga routes; the caller puts them behind the admin token.
pub(super) fn router() -> Router<AdminState> {
    Router::new()
        .route("/api/v1/sagas", get(list))
        .route("/api/v1/sagas/{id}", get(show))
        .route("/api/v1/sagas/{id}/abort", post(abort))
}

/// Why a saga request failed; the one place these become responses.
#[derive(Debug, thiserror::Error)]
enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("no saga instance with id {0}")]
    NotFound(String),
    #[error("saga instance {0} is {1}, not running")]
    NotRunning(String, &'static str),
    #[error("the saga store is unavailable; try again later")]
    Store(#[from] SagaError),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match &self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::NotRunning(..) => StatusCode::CONFLICT,
            Self::Store(error) => {
                tracing::error!(%error, "Saga API request failed");
                StatusCode::SERVICE_UNAVAILABLE
            }
        };
        (status, Json(json!({ "error": self.to_string() }))).into_response()
    }
}

fn query(params: &BTreeMap<String, String>) -> Result<InstanceQuery, ApiError> {
    let mut query = InstanceQuery {
        limit: DEFAULT_LIMIT,
        ..InstanceQuery::default()
    };
    let bad = |what: String| ApiError::BadRequest(what);
    for (key, value) in params {
        match key.as_str() {
            "name" => query.saga = Some(value.clone()),
            "state" => {
                let names = SagaState::ALL.map(SagaState::name).join(", ");
                query.state = Some(
                    SagaState::parse(value)
                        .ok_or_else(|| bad(format!("state: expected one of {names}")))?,
                );
            }
            "since" => {
                let since = DateTime::parse_from_rfc3339(value)
                    .map_err(|e| bad(format!("since: not an RFC 3339 time ({e})")))?;
                query.since = Some(SystemTime::from(since.with_timezone(&Utc)));
            }
            "limit" => {
                query.limit = match value.parse::<usize>() {
                    Ok(n) if (1..=MAX_LIST_LIMIT).contains(&n) => n,
                    _ => return Err(bad(format!("limit: expected 1 to {MAX_LIST_LIMIT}"))),
                };
            }
            "after" => {
                let after = value
                    .parse()
                    .map_err(|_| bad("after: expected a cursor (a previous `next`)".into()))?;
                query.after = Some(after);
            }
            other => return Err(bad(format!("unknown parameter `{other}`"))),
        }
    }
    Ok(query)
}

fn rfc3339(at: SystemTime) -> String {
    DateTime::<Utc>::from(at).to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn step_json(step: &StepView) -> Value {
    json!({
        "name": step.name,
        "kind": step.phase.name(),
        "sink": step.sink,
        "started": rfc3339(step.started_at),
        "finished": step.finished_at.map(rfc3339),
        "attempts": step.attempts,
        "status": step.status,
        "outcome": step.outcome,
        "detail": step.detail,
        "reply_id": step.reply_id,
    })
}

fn instance_json(view: &InstanceView, steps: bool) -> Value {
    let mut value = json!({
        "id": view.id,
        "saga": view.saga,
        "state": view.state.name(),
        "step": view.step,
        "trigger": view.trigger,
        "started": rfc3339(view.started_at),
        "deadline": rfc3339(view.deadline),
        "finished": view.finished_at.map(rfc3339),
        "reason": view.reason,
        "failed_compensations": view.failed,
    });
    if steps {
        value["steps"] = view.steps.iter().map(step_json).collect();
    }
    value
}

async fn list(
    State(state): State<AdminState>,
    Query(params): Query<BTreeMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let query = query(&params)?;
    let Some(sagas) = &state.sagas else {
        return Ok(Json(json!({ "sagas": [], "next": null })));
    };
    let limit = query.limit;
    let page = sagas.list(query).await?;
    let next = page
        .last()
        .map(|v| v.cursor)
        .filter(|_| page.len() == limit);
    let items: Vec<Value> = page.iter().map(|v| instance_json(v, false)).collect();
    Ok(Json(json!({ "sagas": items, "next": next })))
}

async fn show(
    State(state): State<AdminState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let Some(sagas) = &state.sagas else {
        return Err(ApiError::NotFound(id));
    };
    match sagas.get(id.clone()).await? {
        Some(view) => Ok(Json(instance_json(&view, true))),
        None => Err(ApiError::NotFound(id)),
    }
}

async fn abort(
    State(state): State<AdminState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let Some(sagas) = &state.sagas else {
        return Err(ApiError::NotFound(id));
    };
    match sagas.abort(id.clone()).await? {
        Abort::NotFound => Err(ApiError::NotFound(id)),
        Abort::Already(s) => Err(ApiError::NotRunning(id, s.name())),
        Abort::Started(_) => {
            tracing::info!(instance = %id, "Saga instance aborted; compensating");
            let view = sagas.get(id.clone()).await?;
            view.map(|v| Json(instance_json(&v, true)))
                .ok_or(ApiError::NotFound(id))
        }
    }
}
