//! The retry schedule: pure decisions from a failed attempt, the policy and `now`.
//!
//! The sink classifies an attempt ([`SinkError::retryable`], outcome, status, `Retry-After`);
//! this module only schedules. Dead-letter reasons (Event Grid's `deadLetterReason`):
//!
//! | reason | when |
//! |---|---|
//! | `UndeliverableDueToHttpBadRequest` | the target answered 400 (Event Grid's name) |
//! | `UndeliverableDueToClientError` | any other failure the sink marked as not retryable (401, 403, 410, 413, a permanent handler error) |
//! | `MaxDeliveryAttemptsExceeded` | `max_attempts` attempts failed (Event Grid's name) |
//! | `TimeToLiveExceeded` | the next attempt would fall after `accepted_at + event_ttl`, or a leased delivery is already past it |
//! | `TransformFailed` | the route's or the sink's `transform` failed for the event (decided in `transform`, after one attempt) |

use std::time::{Duration, SystemTime};

use crate::config::RetryPolicy;
use crate::sinks::SinkError;
use crate::spool::Delivery;

/// The target answered 400.
pub const BAD_REQUEST: &str = "UndeliverableDueToHttpBadRequest";
/// The sink marked the failure as not retryable.
pub const CLIENT_ERROR: &str = "UndeliverableDueToClientError";
/// Every allowed attempt failed.
pub const MAX_ATTEMPTS: &str = "MaxDeliveryAttemptsExceeded";
/// The event's time to live ran out.
pub const TTL_EXCEEDED: &str = "TimeToLiveExceeded";

/// Most jitter added to a scheduled delay, as a fraction of it.
const MAX_JITTER: f64 = 0.1;

/// What to do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Try again, not before the given time.
    Retry {
        /// Earliest time of the next attempt.
        not_before: SystemTime,
    },
    /// Give up and dead-letter the delivery.
    DeadLetter {
        /// Event Grid's `deadLetterReason`.
        reason: &'static str,
    },
}

/// Decides after a failed attempt; `delivery.attempts` already counts it. Adds a random
/// jitter of up to 10% to scheduled delays (never to a target's `Retry-After`); the result
/// is capped by `max_backoff`, and a `Retry-After` by `max_retry_after`.
pub fn decide(
    policy: &RetryPolicy,
    delivery: &Delivery,
    error: &SinkError,
    now: SystemTime,
) -> Decision {
    decide_with_jitter(policy, delivery, error, now, fastrand::f64())
}

/// [`decide`] with the jitter given as a fraction in `0.0..=1.0` of the 10% maximum.
pub fn decide_with_jitter(
    policy: &RetryPolicy,
    delivery: &Delivery,
    error: &SinkError,
    now: SystemTime,
    jitter: f64,
) -> Decision {
    if !error.retryable {
        let reason = if error.status == Some(400) {
            BAD_REQUEST
        } else {
            CLIENT_ERROR
        };
        return Decision::DeadLetter { reason };
    }
    if delivery.attempts >= policy.max_attempts {
        return Decision::DeadLetter {
            reason: MAX_ATTEMPTS,
        };
    }
    let delay = match error.retry_after {
        Some(asked) => policy.max_retry_after.map_or(asked, |cap| asked.min(cap)),
        None => {
            let scheduled = policy.delay_after(delivery.attempts);
            let jittered = scheduled + scheduled.mul_f64(jitter.clamp(0.0, 1.0) * MAX_JITTER);
            policy.max_backoff.map_or(jittered, |cap| jittered.min(cap))
        }
    };
    let Some(not_before) = now.checked_add(delay) else {
        return Decision::DeadLetter {
            reason: TTL_EXCEEDED,
        };
    };
    match deadline(policy, delivery) {
        Some(deadline) if not_before <= deadline => Decision::Retry { not_before },
        Some(_) => Decision::DeadLetter {
            reason: TTL_EXCEEDED,
        },
        // A TTL too large to represent never runs out.
        None => Decision::Retry { not_before },
    }
}

/// Checked before an attempt: a delivery already past its time to live is dead-lettered
/// without one.
pub fn expired(policy: &RetryPolicy, delivery: &Delivery, now: SystemTime) -> Option<Decision> {
    match deadline(policy, delivery) {
        Some(deadline) if now > deadline => Some(Decision::DeadLetter {
            reason: TTL_EXCEEDED,
        }),
        _ => None,
    }
}

fn deadline(policy: &RetryPolicy, delivery: &Delivery) -> Option<SystemTime> {
    delivery.accepted_at.checked_add(policy.event_ttl)
}

/// The wait from `now` until `not_before` (zero when it has passed).
pub(crate) fn wait_until(not_before: SystemTime, now: SystemTime) -> Duration {
    not_before.duration_since(now).unwrap_or(Duration::ZERO)
}
