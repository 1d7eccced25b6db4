//! `GET /healthz` (the process answers) and `GET /readyz` (it can take events now).

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::AdminState;
use crate::spool::Spool;

/// Longest the spool may take to answer the readiness probe.
const SPOOL_PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// 200 while the process is alive.
pub(super) async fn healthz() -> Response {
    Json(json!({ "status": "ok" })).into_response()
}

/// 200 when the configuration is loaded, ingress is bound, the spool answers a probe and says
/// it is healthy, and every configured sink's worker runs; 503 with the reason otherwise
/// (also while shutting down, so load balancers drain us).
pub(super) async fn readyz(State(state): State<AdminState>) -> Response {
    // The admin server starts only after the configuration loaded and ingress bound, and
    // stops when ingress has stopped; what remains to check is shutdown, the spool and the
    // delivery workers.
    let reason = if state.stopping.is_cancelled() {
        Some("shutting down".to_owned())
    } else {
        probe_spool(&state)
            .await
            .and_then(|()| workers(&state))
            .err()
    };
    match reason {
        None => Json(json!({ "status": "ready" })).into_response(),
        Some(reason) => {
            let body = json!({ "status": "not ready", "reason": reason });
            (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
        }
    }
}

/// Asks the spool a cheap question and its health off the async threads, so a spool stuck
/// behind a lock fails the probe instead of stalling the admin server.
async fn probe_spool(state: &AdminState) -> Result<(), String> {
    let spool = state.spool.clone();
    let probe = tokio::task::spawn_blocking(move || {
        spool.depth("");
        spool.health()
    });
    match tokio::time::timeout(SPOOL_PROBE_TIMEOUT, probe).await {
        Ok(Ok(health)) => health,
        Ok(Err(error)) => Err(format!("spool probe failed: {error}")),
        Err(_elapsed) => Err(format!(
            "spool did not answer within {}s",
            SPOOL_PROBE_TIMEOUT.as_secs()
        )),
    }
}

/// Every configured sink's delivery worker runs.
fn workers(state: &AdminState) -> Result<(), String> {
    for name in state.config.get().sinks.keys() {
        if let Some(reason) = state.counters.sink(name).worker_stopped() {
            return Err(format!("sink {name}: {reason}"));
        }
    }
    Ok(())
}
