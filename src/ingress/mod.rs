//! The HTTP ingress: CloudEvents (binary, structured, batched) and Event Grid webhooks,
//! the validation handshakes, authentication and limits.
//!
//! Imports `accept`, `event`, `config` and `telemetry`. [`handlers`] holds the publish
//! endpoints, [`handshake`] the `OPTIONS` and validation-event answers, [`auth`] the
//! credential checks and [`error`] the one error type and its `IntoResponse`.

mod auth;
mod error;
mod handlers;
mod handshake;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use axum::routing::post;
use axum::Router;

use crate::accept::Acceptor;
use crate::config::{IngressConfig, Live};
use crate::telemetry::Counters;

/// What the ingress handlers share.
#[derive(Debug, Clone)]
pub struct IngressState {
    /// Routes and stores accepted events.
    pub acceptor: Acceptor,
    /// Limits, credentials and handshake settings.
    pub config: Live<IngressConfig>,
    /// Process counters.
    pub counters: Arc<Counters>,
}

/// The ingress router: `POST /events`, `POST /api/events`, `OPTIONS` on both.
///
/// Handlers read request bodies themselves, bounded by `max_request_bytes` (413 past it), so
/// no extractor-level body limit applies. Any other method answers 405 with `Allow`.
pub fn router(state: IngressState) -> Router {
    Router::new()
        .route(
            "/events",
            post(handlers::publish_webhook).options(handshake::options),
        )
        .route(
            "/api/events",
            post(handlers::publish_topic).options(handshake::options),
        )
        .with_state(state)
}
