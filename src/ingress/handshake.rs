//! Endpoint validation: the CloudEvents webhook `OPTIONS` abuse-protection handshake, and
//! the answer to Event Grid's subscription validation event.

use std::sync::Arc;
use std::time::SystemTime;

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

use super::auth::{self, ReplayGuard};
use super::error::IngressError;
use super::IngressState;
use crate::config::IngressConfig;

/// Sent by the delivering system: who wants to deliver.
pub(crate) const REQUEST_ORIGIN: HeaderName = HeaderName::from_static("webhook-request-origin");
/// Granted origin (the requested one, or `*`).
pub(crate) const ALLOWED_ORIGIN: HeaderName = HeaderName::from_static("webhook-allowed-origin");
/// Granted rate in requests per minute, or `*`.
pub(crate) const ALLOWED_RATE: HeaderName = HeaderName::from_static("webhook-allowed-rate");

const ANY: HeaderValue = HeaderValue::from_static("*");
const ALLOW: HeaderValue = HeaderValue::from_static("POST, OPTIONS");

/// `OPTIONS` on an ingress path: grant or refuse the delivering origin.
///
/// The grant is always sent synchronously; `WebHook-Request-Callback` is not used. The rate
/// header is always sent (the spec makes it a MUST when a rate was requested, a SHOULD
/// otherwise).
pub(crate) async fn options(
    State(state): State<IngressState>,
    State(replay): State<Arc<ReplayGuard>>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, IngressError> {
    let config = state.config.get();
    let now = SystemTime::now();
    let gate = auth::check(&config.auth, &headers, &uri, now)?;
    // A signed handshake signs an empty body.
    let (authorized, claim) = gate.verify_body(&config.auth, &[], &replay, now)?;
    let origin = headers
        .get(REQUEST_ORIGIN)
        .filter(|o| !o.is_empty())
        .ok_or(IngressError::MissingOrigin)?;
    let granted = grant_origin(&config, origin).ok_or_else(|| IngressError::OriginNotAllowed {
        origin: String::from_utf8_lossy(origin.as_bytes()).into_owned(),
    })?;
    let rate = config.allowed_rate.map_or(ANY, HeaderValue::from);
    let grant = [
        (ALLOWED_ORIGIN, granted),
        (ALLOWED_RATE, rate),
        (header::ALLOW, ALLOW),
    ];
    if let Some(claim) = claim {
        claim.keep();
    }
    Ok(authorized.mark((StatusCode::OK, grant).into_response()))
}

/// The `WebHook-Allowed-Origin` value for `origin`: `*` when any origin is allowed, the
/// origin itself when it is listed (DNS names compare case-insensitively), else none.
fn grant_origin(config: &IngressConfig, origin: &HeaderValue) -> Option<HeaderValue> {
    let allowed = &config.allowed_origins;
    if allowed.iter().any(|o| o == "*") {
        return Some(ANY);
    }
    allowed
        .iter()
        .any(|o| o.as_bytes().eq_ignore_ascii_case(origin.as_bytes()))
        .then(|| origin.clone())
}

#[derive(Serialize)]
struct ValidationResponse {
    #[serde(rename = "validationResponse")]
    validation_response: String,
}

/// The synchronous answer to Event Grid's subscription validation event (200, never 202).
pub(crate) fn validation_response(code: String) -> Response {
    let body = ValidationResponse {
        validation_response: code,
    };
    (StatusCode::OK, Json(body)).into_response()
}
