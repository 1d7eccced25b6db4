//! Classification of webhook responses into Event Grid's delivery outcomes.
//!
//! | status | outcome | retried |
//! |---|---|---|
//! | 200–204 | success | — |
//! | 400 | `BadRequest` | no |
//! | 401 | `Unauthorized` | no |
//! | 403 | `Forbidden` | no |
//! | 413 | `PayloadTooLarge` | no |
//! | 410 | `Disabled` (the target retired itself, CloudEvents webhook spec) | no |
//! | 404 | `NotFound` | yes |
//! | 408 | `TimedOut` | yes |
//! | 429, 503 | `Busy` (honouring `Retry-After`) | yes |
//! | 507 | `Full` | yes |
//! | any other 1xx/2xx/3xx/4xx/5xx | `GenericError` (redirects are never followed) | yes |
//! | no answer within the timeout | `TimedOut` | yes |
//! | connect or I/O failure | `SocketError` | yes |

use std::time::{Duration, SystemTime};

use axum::http::{header, HeaderMap, StatusCode};

use super::outcome::GENERIC_ERROR;
use super::SinkError;

/// The outcome of a response status: `Ok` for 200–204, else a classified error.
pub(crate) fn classify(
    status: StatusCode,
    headers: &HeaderMap,
    now: SystemTime,
) -> Result<(), SinkError> {
    let code = status.as_u16();
    if (200..=204).contains(&code) {
        return Ok(());
    }
    let (retryable, outcome) = match code {
        400 => (false, "BadRequest"),
        401 => (false, "Unauthorized"),
        403 => (false, "Forbidden"),
        410 => (false, "Disabled"),
        413 => (false, "PayloadTooLarge"),
        404 => (true, "NotFound"),
        408 => (true, "TimedOut"),
        429 | 503 => (true, "Busy"),
        507 => (true, "Full"),
        _ => (true, GENERIC_ERROR),
    };
    let retry_after = match code {
        429 | 503 => retry_after(headers, now),
        _ => None,
    };
    Err(SinkError {
        retryable,
        outcome,
        status: Some(code),
        retry_after,
        message: format!("target answered {status}"),
    })
}

/// `Retry-After` as a wait from `now`: delta-seconds or an HTTP-date (a past date is zero).
pub(crate) fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let value = headers.get(header::RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}
