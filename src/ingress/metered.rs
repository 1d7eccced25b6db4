//! Request metrics for everything the ingress server answers: counted by route template
//! (not the raw URI, so the label stays bounded) and status, and timed.

use std::sync::Arc;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::Router;

use crate::telemetry::Counters;

/// The `path` label of a request no route serves.
const OTHER: &str = "other";

/// `router` with every request it answers counted and timed in `counters`.
pub(crate) fn metered(router: Router, counters: Arc<Counters>) -> Router {
    router.layer(middleware::from_fn_with_state(counters, meter))
}

async fn meter(State(counters): State<Arc<Counters>>, request: Request, next: Next) -> Response {
    let path = request.extensions().get::<MatchedPath>().cloned();
    let started = tokio::time::Instant::now();
    let response = next.run(request).await;
    let path = path.as_ref().map_or(OTHER, MatchedPath::as_str);
    counters
        .ingress
        .record(path, response.status().as_u16(), started.elapsed());
    response
}
