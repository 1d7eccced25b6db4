//! `POST /api/v1/explain`: the body is an event document (one structured CloudEvent, a
//! CloudEvents batch, or an Event Grid array), the answer says for each event which routes of
//! the running configuration match it and, for the others, the first condition that failed —
//! what `switchyard explain -o json` prints. Nothing is stored or delivered.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};

use super::AdminState;
use crate::event::decode_document;
use crate::routing::RouteTable;

/// `{"events": [{id, type, source, routes: [{route, matched, reason, sinks, sql}]}]}`; 400
/// with `{"error"}` when the body holds no valid event.
pub(super) async fn explain(
    State(state): State<AdminState>,
    body: Bytes,
) -> (StatusCode, Json<Value>) {
    let events = match decode_document(&body) {
        Ok(events) => events,
        Err(error) => {
            let error = format!("not a valid event: {error}");
            return (StatusCode::BAD_REQUEST, Json(json!({ "error": error })));
        }
    };
    // Compiled per request: explaining is for people, and the table follows reloads.
    let table = RouteTable::from_config(&state.config.get());
    let events: Vec<Value> = events
        .iter()
        .map(|event| {
            json!({
                "id": event.id,
                "type": event.ty,
                "source": event.source,
                "routes": table.explain(event).routes,
            })
        })
        .collect();
    (StatusCode::OK, Json(json!({ "events": events })))
}
