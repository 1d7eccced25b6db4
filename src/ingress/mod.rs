//! The HTTP ingress: CloudEvents (binary, structured, batched) and Event Grid webhooks,
//! the validation handshakes, authentication and limits.
//!
//! Imports `accept`, `event`, `config` and `telemetry`. [`handlers`] holds the publish
//! endpoints, [`handshake`] the `OPTIONS` and validation-event answers, [`auth`] the
//! credential checks and [`error`] the one error type and its `IntoResponse`.

pub(crate) mod auth;
pub(crate) mod error;
pub(crate) mod handlers;
mod handshake;
pub(crate) mod metered;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use axum::extract::FromRef;
use axum::routing::post;
use axum::Router;

use crate::accept::Acceptor;
use crate::config::{IngressConfig, Live};
use crate::telemetry::Counters;

pub(crate) use metered::Meter;

/// What the ingress handlers share.
#[derive(Debug, Clone)]
pub struct IngressState {
    /// Routes and stores accepted events.
    pub acceptor: Acceptor,
    /// Limits, credentials and handshake settings.
    pub config: Live<IngressConfig>,
    /// Process counters.
    pub counters: Arc<Counters>,
    /// This daemon exports spans: each publish request gets an `ingress` span.
    pub traced: bool,
}

/// What the handlers of one router share: [`IngressState`], and the `webhook-id`s seen
/// within the replay window, which outlive configuration reloads.
#[derive(Debug, Clone)]
struct Shared {
    state: IngressState,
    replay: Arc<auth::ReplayGuard>,
}

impl FromRef<Shared> for IngressState {
    fn from_ref(shared: &Shared) -> Self {
        shared.state.clone()
    }
}

impl FromRef<Shared> for Arc<auth::ReplayGuard> {
    fn from_ref(shared: &Shared) -> Self {
        shared.replay.clone()
    }
}

/// The ingress router: `POST /events`, `POST /api/events`, `OPTIONS` on both.
///
/// Handlers read request bodies themselves, bounded by `max_request_bytes` (413 past it), so
/// no extractor-level body limit applies. Any other method answers 405 with `Allow`.
pub fn router(state: IngressState) -> Router {
    let shared = Shared {
        state,
        replay: Arc::default(),
    };
    Router::new()
        .route(
            metered::EVENTS,
            post(handlers::publish_webhook).options(handshake::options),
        )
        .route(
            metered::API_EVENTS,
            post(handlers::publish_topic).options(handshake::options),
        )
        .with_state(shared)
}
