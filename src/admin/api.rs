//! `GET /metrics` (Prometheus text) and the JSON admin API: `GET /api/v1/routes`,
//! `GET /api/v1/sinks`, `DELETE /api/v1/sinks/{name}/deliveries`,
//! `POST /api/v1/sinks/{name}/pause` and `/resume`, `POST /api/v1/reload`.

use std::time::{Duration, SystemTime};

use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Value};

use super::AdminState;
use crate::config::{DeliveryOrder, MatchConfig, RouteConfig, SinkConfig};
use crate::spool::{PurgeError, Spool};
use crate::telemetry;

/// The Prometheus text exposition format.
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Every metric in the Prometheus text format; spool depths are read at render time.
pub(super) async fn metrics(State(state): State<AdminState>) -> Response {
    state.refresh_depths();
    // One statvfs call: cheap, and the figure is current at each scrape.
    if let Some(disk) = state.spool.disk_usage() {
        telemetry::spool_disk(disk.used_ratio(), disk.free_bytes);
    }
    telemetry::spool_dedup_entries(state.spool.dedup_entries());
    let mut text = telemetry::prometheus().render();
    text.push_str(&telemetry::render_process());
    let mut response = text.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(PROMETHEUS_TEXT),
    );
    response
}

/// `{"routes": [{name, match, sql, to, priority, ordering}]}`, in routing-table order.
pub(super) async fn routes(State(state): State<AdminState>) -> Json<Value> {
    let routes: Vec<Value> = state.config.get().routes.iter().map(route).collect();
    Json(json!({ "routes": routes }))
}

fn route(route: &RouteConfig) -> Value {
    json!({
        "name": route.name,
        "match": match_summary(&route.filter),
        "sql": route.sql.as_ref().map(|sql| sql.source()),
        "to": route.to,
        "priority": route.priority.name(),
        "ordering": match route.ordering {
            DeliveryOrder::Any => None,
            DeliveryOrder::Subject => Some("subject"),
        },
    })
}

/// The `match:` block as data: type and source patterns, the subject filter, and each
/// advanced filter as its key and operator (operand values are left out).
fn match_summary(filter: &MatchConfig) -> Value {
    let subject = filter.subject.as_ref().map(|s| {
        json!({
            "begins_with": s.begins_with,
            "ends_with": s.ends_with,
            "case_sensitive": s.case_sensitive,
        })
    });
    let advanced: Vec<Value> = filter
        .advanced
        .iter()
        .map(|f| {
            let condition = format!("{:?}", f.condition);
            let op = condition.split('(').next().unwrap_or_default().to_owned();
            json!({ "key": f.key, "op": op })
        })
        .collect();
    json!({
        "types": filter.types,
        "sources": filter.sources,
        "subject": subject,
        "advanced": advanced,
    })
}

/// `{"sinks": [{name, kind, concurrency, adaptive, concurrency_limit, in_flight, backlog,
/// oldest_age_seconds, delivered, retried, dead_lettered, last_error, breaker, paused}]}`, by
/// name; the three counts are since the process started; `breaker` is `{state, opened_at}`,
/// or null for a sink without one; `adaptive` is `{min, max}`, or null for a fixed limit;
/// `concurrency_limit` is the limit in force now.
pub(super) async fn sinks(State(state): State<AdminState>) -> Json<Value> {
    let config = state.config.get();
    let mut sinks: Vec<Value> = config
        .sinks
        .values()
        .map(|sink| sink_status(&state, sink))
        .collect();
    // Deliveries kept for sinks that a reload removed: reported until the sink returns.
    sinks.extend(
        state
            .spool
            .sink_depths()
            .into_iter()
            .filter(|(name, depth)| *depth > 0 && !config.sinks.contains_key(name))
            .map(|(name, depth)| json!({ "name": name, "orphaned": true, "backlog": depth })),
    );
    Json(json!({ "sinks": sinks }))
}

/// `DELETE /api/v1/sinks/{name}/deliveries`: removes the deliveries kept for a sink that a
/// reload removed, except those being delivered right now (the `nats` spool removes those
/// too); `{"purged": n}`. 409 for a sink
/// the running configuration names, 404 when nothing is stored for the name, 501 when the
/// spool backend cannot purge, 503 when the spool fails.
pub(super) async fn purge_sink(
    State(state): State<AdminState>,
    Path(name): Path<String>,
) -> (StatusCode, Json<Value>) {
    let refuse = |status, error: String| (status, Json(json!({ "error": error })));
    if state.config.get().sinks.contains_key(&name) {
        let error = format!(
            "sink {name:?} is configured; only an orphaned sink's deliveries can be purged"
        );
        return refuse(StatusCode::CONFLICT, error);
    }
    if state.spool.depth(&name) == 0 {
        return refuse(
            StatusCode::NOT_FOUND,
            format!("no deliveries stored for sink {name:?}"),
        );
    }
    match state.spool.purge_sink(&name).await {
        Ok(purged) => {
            tracing::warn!(sink = %name, purged, "Orphaned deliveries purged by the admin API");
            (StatusCode::OK, Json(json!({ "purged": purged })))
        }
        Err(error @ PurgeError::Unsupported) => {
            refuse(StatusCode::NOT_IMPLEMENTED, error.to_string())
        }
        Err(PurgeError::Spool(_)) => refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "the spool is unavailable; try again later".to_owned(),
        ),
    }
}

/// `POST /api/v1/sinks/{name}/pause`: the sink's deliveries stay queued and none is attempted
/// until it is resumed, across reloads and restarts; `{"sink", "paused": true, "changed"}`.
pub(super) async fn pause(
    State(state): State<AdminState>,
    Path(name): Path<String>,
) -> (StatusCode, Json<Value>) {
    set_paused(&state, name, true).await
}

/// `POST /api/v1/sinks/{name}/resume`: delivery goes on; `{"sink", "paused": false, "changed"}`.
pub(super) async fn resume(
    State(state): State<AdminState>,
    Path(name): Path<String>,
) -> (StatusCode, Json<Value>) {
    set_paused(&state, name, false).await
}

/// 404 for a sink the running configuration does not name; 500 when the state file cannot
/// be written (nothing changes then).
async fn set_paused(state: &AdminState, name: String, paused: bool) -> (StatusCode, Json<Value>) {
    if !state.config.get().sinks.contains_key(&name) {
        let error = format!("no sink named {name:?} is configured");
        return (StatusCode::NOT_FOUND, Json(json!({ "error": error })));
    }
    match state.pauses.set(&name, paused).await {
        Ok(changed) => {
            let action = if paused { "paused" } else { "resumed" };
            if changed {
                tracing::warn!(sink = %name, "Sink {action} by the admin API");
            }
            let body = json!({ "sink": name, "paused": paused, "changed": changed });
            (StatusCode::OK, Json(body))
        }
        Err(error) => {
            tracing::error!(%error, sink = %name, "Cannot record the sink's pause state; nothing changed");
            let error = "cannot record the pause state; nothing changed (see the daemon's log)";
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                Json(json!({ "error": error })),
            )
        }
    }
}

fn sink_status(state: &AdminState, sink: &SinkConfig) -> Value {
    let stats = state.counters.sink(&sink.name);
    let outcomes = stats.outcomes();
    let last_error = stats
        .last_error()
        .map(|e| json!({ "message": e.message, "at": rfc3339(e.at) }));
    let breaker = stats
        .breaker()
        .map(|b| json!({ "state": b.state, "opened_at": b.opened_at.map(rfc3339) }));
    json!({
        "name": sink.name,
        "kind": sink.kind.name(),
        "concurrency": sink.concurrency,
        "adaptive": sink.adaptive.map(|a| json!({ "min": a.min, "max": sink.concurrency })),
        "concurrency_limit": stats.concurrency_limit(),
        "in_flight": stats.in_flight(),
        "backlog": state.spool.depth(&sink.name),
        "oldest_age_seconds": oldest_age(state, &sink.name),
        "delivered": outcomes.delivered,
        "retried": outcomes.retried,
        "dead_lettered": outcomes.dead_lettered,
        "last_error": last_error,
        "breaker": breaker,
        "paused": state.pauses.is_paused(&sink.name),
        "orphaned": false,
    })
}

/// Seconds the sink's oldest stored delivery has waited since it was accepted (0 when none
/// is stored); `None` when the spool backend cannot tell.
fn oldest_age(state: &AdminState, sink: &str) -> Option<f64> {
    if !state.spool.tells_oldest() {
        return None;
    }
    let age = state.spool.oldest(sink).map_or(Duration::ZERO, |at| {
        SystemTime::now()
            .duration_since(at)
            .unwrap_or(Duration::ZERO)
    });
    Some(age.as_secs_f64())
}

fn rfc3339(at: SystemTime) -> String {
    DateTime::<Utc>::from(at).to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// `POST /api/v1/reload`: reads the configuration file again; 200 with what is now in force,
/// 422 with every error when the file is refused (the running configuration stays), 409
/// when the daemon was started without a file.
pub(super) async fn reload(State(state): State<AdminState>) -> (StatusCode, Json<Value>) {
    let Some(trigger) = &state.reload else {
        let error = "started without a configuration file; nothing to reload";
        return (StatusCode::CONFLICT, Json(json!({ "error": error })));
    };
    match trigger.reload("admin API").await {
        Ok(summary) => (
            StatusCode::OK,
            Json(json!({ "status": "reloaded", "routes": summary.routes, "sinks": summary.sinks })),
        ),
        Err(error) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({ "error": error.to_string() })),
        ),
    }
}
