//! Sources: any provider's webhooks in. `POST /hooks/<name>` verifies the provider's
//! signature over the raw body, builds one CloudEvent from it with the source's templates
//! and hands it to the acceptor, to be routed, stored and delivered like any other event.
//!
//! Imports `accept`, `config`, `event`, `ingress` (limits, body reading and the answers it
//! shares with the other endpoints), the signature primitives of `sinks::sign`, and
//! `telemetry`. [`verify`] holds the presets' signature checks, [`event`] the mapping.

mod event;
#[cfg(test)]
mod tests;
mod verify;

use std::sync::Arc;
use std::time::SystemTime;

use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use bytes::Bytes;

use crate::accept::Acceptor;
use crate::config::{Config, Live, Preset};
use crate::event::DecodeError;
use crate::ingress::error::IngressError;
use crate::ingress::handlers::{declared_length, read_body, too_large};
use crate::telemetry::{Counters, Format};
use event::BuildError;
use verify::Failure;

/// What the source endpoint shares.
#[derive(Debug, Clone)]
pub(crate) struct SourcesState {
    /// Routes and stores the events built.
    pub(crate) acceptor: Acceptor,
    /// The running configuration: `sources:`, and the ingress limits they share.
    pub(crate) config: Live<Config>,
    /// Process counters.
    pub(crate) counters: Arc<Counters>,
}

/// The sources router: `POST /hooks/{name}`.
///
/// Bodies are read within `ingress.max_request_bytes` (413 past it) and
/// `ingress.body_timeout` (408), as on `/events`. `ingress.auth` does not apply: each source
/// checks its provider's signature instead.
pub(crate) fn router(state: SourcesState) -> Router {
    Router::new()
        .route(crate::ingress::metered::HOOKS, post(hook))
        .with_state(state)
}

/// Why a source refused a request.
#[derive(Debug, thiserror::Error)]
enum SourceError {
    /// No source has this name.
    #[error("no source named {0:?}")]
    NotFound(String),
    /// The signature check failed.
    #[error("{0}")]
    Refused(Failure),
    /// The event's `type` or `source` could not be built.
    #[error(transparent)]
    Build(BuildError),
    /// A failure shared with the other ingress endpoints (size, body, spool).
    #[error(transparent)]
    Ingress(#[from] IngressError),
}

impl From<BuildError> for SourceError {
    fn from(e: BuildError) -> Self {
        match e {
            BuildError::Invalid(e) => Self::Ingress(IngressError::Decode(e)),
            missing @ BuildError::Missing { .. } => Self::Build(missing),
        }
    }
}

impl IntoResponse for SourceError {
    fn into_response(self) -> Response {
        let (status, code) = match self {
            Self::Ingress(e) => return e.into_response(),
            Self::NotFound(_) => (StatusCode::NOT_FOUND, "NotFound"),
            Self::Refused(_) => (StatusCode::UNAUTHORIZED, "Unauthorized"),
            Self::Build(_) => (StatusCode::BAD_REQUEST, "BadRequest"),
        };
        tracing::debug!(status = status.as_u16(), error = %self, "Source request refused.");
        let message = self.to_string();
        // The shape of every ingress error body (Event Grid's publish error).
        let body = serde_json::json!({
            "error": {
                "code": code,
                "message": message,
                "details": [{ "code": code, "message": message }],
            }
        });
        (status, Json(body)).into_response()
    }
}

async fn hook(
    State(state): State<SourcesState>,
    Path(name): Path<String>,
    request: Request,
) -> Response {
    match receive(&state, &name, request).await {
        Ok(response) => response,
        Err(e) => {
            Counters::add(&state.counters.events_rejected, 1);
            state.counters.received(Format::Source, false, 1);
            e.into_response()
        }
    }
}

/// Size check → read the body → verify → (Slack's challenge) → build → accept → 200.
async fn receive(
    state: &SourcesState,
    name: &str,
    request: Request,
) -> Result<Response, SourceError> {
    let config = state.config.get();
    let source = config
        .sources
        .get(name)
        .ok_or_else(|| SourceError::NotFound(name.to_owned()))?;
    let limits = &config.ingress;
    let (parts, body) = request.into_parts();
    if declared_length(&parts.headers).is_some_and(|n| n > limits.max_request_bytes as u64) {
        return Err(too_large(limits).into());
    }
    let body = read_body(body, limits).await?;
    verify::verify(&source.verify, &parts.headers, &body, SystemTime::now())
        .map_err(SourceError::Refused)?;
    if source.preset == Preset::Slack {
        if let Some(challenge) = slack_challenge(&body) {
            return Ok(challenge_response(challenge));
        }
    }
    if body.len() > limits.max_event_bytes {
        let message = format!(
            "event is {} bytes; the limit is {}",
            body.len(),
            limits.max_event_bytes
        );
        return Err(IngressError::Decode(DecodeError::too_large(message)).into());
    }
    let event = event::build(&source.event, &parts.headers, body, SystemTime::now())?;
    let receipt = state
        .acceptor
        .accept_from(vec![event], Some(Format::Source))
        .await
        .map_err(|source| IngressError::Accept { source, events: 1 })?;
    if receipt.duplicates > 0 {
        tracing::debug!(source = name, "Redelivery within the dedup window dropped.");
    }
    Ok(StatusCode::OK.into_response())
}

/// The `challenge` of Slack's `url_verification` request, if the body is one.
fn slack_challenge(body: &Bytes) -> Option<String> {
    memchr::memmem::find(body, b"url_verification")?;
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    if value.get("type")?.as_str()? != "url_verification" {
        return None;
    }
    value.get("challenge")?.as_str().map(str::to_owned)
}

/// Slack's handshake answer: the challenge as plain text.
fn challenge_response(challenge: String) -> Response {
    let mut response = (StatusCode::OK, challenge).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
