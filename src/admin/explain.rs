//! `POST /api/v1/explain[?transform=true]`: the body is an event document (one structured
//! CloudEvent, a CloudEvents batch, or an Event Grid array), the answer says for each event
//! which routes of the running configuration match it and, for the others, the first
//! condition that failed — what `switchyard explain -o json` prints; with `transform=true`,
//! also what each matched sink would receive after the transforms (`explain --transform`).
//! Nothing is stored or delivered.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};

use super::AdminState;
use crate::config::Config;
use crate::event::{decode_document, http as ce_http, Event};
use crate::routing::RouteTable;
use crate::transform;

/// `{"events": [{id, type, source, routes: [{route, matched, reason, sinks, sql}]}]}`; 400
/// with `{"error"}` when the body holds no valid event.
pub(super) async fn explain(
    State(state): State<AdminState>,
    Query(params): Query<BTreeMap<String, String>>,
    body: Bytes,
) -> (StatusCode, Json<Value>) {
    let refuse = |error: String| (StatusCode::BAD_REQUEST, Json(json!({ "error": error })));
    let mut transforms = false;
    for (key, value) in &params {
        match (key.as_str(), value.as_str()) {
            ("transform", "true") => transforms = true,
            ("transform", "false") => transforms = false,
            ("transform", _) => return refuse("transform: expected true or false".into()),
            (other, _) => return refuse(format!("unknown parameter `{other}`")),
        }
    }
    let events = match decode_document(&body) {
        Ok(events) => events,
        Err(error) => return refuse(format!("not a valid event: {error}")),
    };
    let config = state.config.get();
    // Compiled per request: explaining is for people, and the table follows reloads.
    let table = RouteTable::from_config(&config);
    let events: Vec<Value> = events
        .iter()
        .map(|event| {
            let mut verdicts = json!({
                "id": event.id,
                "type": event.ty,
                "source": event.source,
                "routes": table.explain(event).routes,
            });
            if transforms {
                verdicts["sinks"] = received(&config, &table, event);
            }
            verdicts
        })
        .collect();
    (StatusCode::OK, Json(json!({ "events": events })))
}

/// `[{route, sink, event, error}]`: what each (route, sink) the event matches would hand its
/// sink, as structured CloudEvent JSON, or the transform's error.
fn received(config: &Config, table: &RouteTable, event: &Event) -> Value {
    let mut targets = Vec::new();
    table.targets(event, &mut targets);
    targets
        .iter()
        .map(|t| {
            let (event, error) = match transform::preview(config, event, &t.route, &t.sink) {
                Ok(e) => {
                    let json = ce_http::encode_structured(&e);
                    (serde_json::from_slice(&json).unwrap_or(Value::Null), None)
                }
                Err(e) => (Value::Null, Some(e.to_string())),
            };
            json!({ "route": &*t.route, "sink": &*t.sink, "event": event, "error": error })
        })
        .collect()
}
