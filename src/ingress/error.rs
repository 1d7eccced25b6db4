//! `IngressError`: every way an ingress request can fail, and its single `IntoResponse`.
//!
//! Error bodies follow Event Grid's publish error shape, extended with where the fault is:
//! `{"error":{"code","message","details":[{"code","message","index"?,"attribute"?}]}}`.

use std::time::Duration;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

use super::auth::AuthFailure;
use crate::accept::AcceptError;
use crate::event::{DecodeError, DecodeErrorKind};

/// Why an ingress request was refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum IngressError {
    /// Authentication is configured and the request carried no credential.
    #[error("missing credential: send an access key, a bearer token, a SAS token or a signature")]
    MissingCredential,
    /// The request carried credentials, none of them valid.
    #[error("invalid credential")]
    InvalidCredential,
    /// A signed credential (SAS token, Standard Webhooks signature) failed one check.
    #[error("{0}")]
    Refused(AuthFailure),
    /// Every slot for remembering `webhook-id`s is taken by ids still inside the window.
    #[error("too many signed requests within the replay window; retry shortly")]
    ReplayWindowFull,
    /// An `OPTIONS` handshake without `WebHook-Request-Origin`.
    #[error("missing WebHook-Request-Origin header")]
    MissingOrigin,
    /// An `OPTIONS` handshake from an origin that is not allowed.
    #[error("origin {origin:?} is not allowed to deliver here")]
    OriginNotAllowed {
        /// The requested origin.
        origin: String,
    },
    /// The request body is over `max_request_bytes`.
    #[error("request body is over the limit of {limit} bytes")]
    RequestTooLarge {
        /// The configured limit.
        limit: usize,
    },
    /// A `Content-Type` that names no format this ingress accepts.
    #[error(
        "unsupported content type {content_type:?}: send application/cloudevents+json, \
         application/cloudevents-batch+json, application/json (Event Grid schema), \
         or a binary-mode CloudEvent with ce- headers"
    )]
    UnsupportedMediaType {
        /// The content type received (`none` when absent).
        content_type: String,
    },
    /// The body did not arrive within `ingress.body_timeout` of the headers.
    #[error("the request body did not arrive within {0:?}")]
    BodyTimeout(Duration),
    /// The body could not be read (the client went away or sent a broken body).
    #[error("could not read the request body")]
    BodyRead(#[source] axum::Error),
    /// The body is not a valid event or batch.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// The spool did not take the events.
    #[error("{source}")]
    Accept {
        /// Why.
        #[source]
        source: AcceptError,
        /// Events in the refused request.
        events: usize,
    },
}

impl IngressError {
    /// The HTTP status this error answers with.
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            Self::MissingCredential | Self::InvalidCredential | Self::Refused(_) => {
                StatusCode::UNAUTHORIZED
            }
            Self::MissingOrigin | Self::BodyRead(_) => StatusCode::BAD_REQUEST,
            Self::OriginNotAllowed { .. } => StatusCode::FORBIDDEN,
            Self::RequestTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            Self::UnsupportedMediaType { .. } => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Decode(e) => match e.kind {
                DecodeErrorKind::Invalid => StatusCode::BAD_REQUEST,
                DecodeErrorKind::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            },
            Self::Accept { .. } | Self::ReplayWindowFull => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// How many events this refusal counts as in `events_rejected` (at least the request).
    pub(crate) fn rejected_events(&self) -> u64 {
        match self {
            Self::Accept { events, .. } => (*events).max(1) as u64,
            _ => 1,
        }
    }

    /// Seconds the client should wait before retrying, for the 503 answers.
    fn retry_after(&self) -> Option<u64> {
        match self {
            Self::Accept {
                source:
                    AcceptError::Full { retry_after } | AcceptError::Unreachable { retry_after, .. },
                ..
            } => Some(whole_seconds(*retry_after)),
            Self::Accept {
                source: AcceptError::Closed,
                ..
            } => Some(1),
            Self::ReplayWindowFull => Some(1),
            _ => None,
        }
    }

    fn detail(&self) -> Detail<'_> {
        match self {
            Self::Decode(e) => Detail {
                code: match e.kind {
                    DecodeErrorKind::Invalid => "InvalidEvent",
                    DecodeErrorKind::TooLarge => "PayloadTooLarge",
                },
                message: e.message.clone(),
                index: e.index,
                attribute: e.attribute.as_deref(),
            },
            _ => Detail {
                code: status_code_name(self.status()),
                message: self.to_string(),
                index: None,
                attribute: None,
            },
        }
    }

    fn log(&self) {
        match self {
            // The spool refusing work is load leveling doing its job, but an operator
            // wants to know it is happening.
            Self::Accept {
                source: AcceptError::Full { .. },
                events,
            } => tracing::warn!(events, "Spool full; refusing events."),
            Self::Accept {
                source: AcceptError::Unreachable { store, .. },
                events,
            } => tracing::warn!(events, "{store} unreachable; refusing events."),
            // Client errors (and shutdown refusals) are the client's business.
            _ => {
                tracing::debug!(status = self.status().as_u16(), error = %self, "Request refused.")
            }
        }
    }
}

/// Rounds up so that a sub-second wait never reads as `Retry-After: 0`.
fn whole_seconds(d: Duration) -> u64 {
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    secs.max(1)
}

/// Event Grid's names for the statuses ingress answers with.
fn status_code_name(status: StatusCode) -> &'static str {
    match status {
        StatusCode::BAD_REQUEST => "BadRequest",
        StatusCode::UNAUTHORIZED => "Unauthorized",
        StatusCode::FORBIDDEN => "Forbidden",
        StatusCode::REQUEST_TIMEOUT => "RequestTimeout",
        StatusCode::PAYLOAD_TOO_LARGE => "PayloadTooLarge",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "UnsupportedMediaType",
        StatusCode::SERVICE_UNAVAILABLE => "ServiceUnavailable",
        _ => "Error",
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: ErrorInfo<'a>,
}

#[derive(Serialize)]
struct ErrorInfo<'a> {
    code: &'static str,
    message: String,
    details: [Detail<'a>; 1],
}

#[derive(Serialize)]
struct Detail<'a> {
    code: &'static str,
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    index: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    attribute: Option<&'a str>,
}

impl IntoResponse for IngressError {
    fn into_response(self) -> Response {
        self.log();
        let status = self.status();
        let body = ErrorBody {
            error: ErrorInfo {
                code: status_code_name(status),
                message: self.to_string(),
                details: [self.detail()],
            },
        };
        let mut response = (status, Json(body)).into_response();
        if let Some(secs) = self.retry_after() {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if matches!(self, Self::BodyTimeout(_)) {
            // The rest of the body is not read: the connection cannot carry another request.
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}
