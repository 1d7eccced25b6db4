//! Hands the outcome of each delivery's step to the delivery history: one non-blocking
//! send per delivery (see [`crate::history`]).

use std::time::{Duration, SystemTime};

use super::{DispatchContext, Outcome};
use crate::history::{Attempt, AttemptOutcome};
use crate::sinks::SinkError;
use crate::spool::Delivery;

/// Records one step of `deliveries` (each with its outcome, in the same order): an attempt
/// that took `took` and failed with `error`, if it did, or with `took` `None` an expiry
/// without an attempt.
pub(super) fn record(
    ctx: &DispatchContext,
    deliveries: &[Delivery],
    outcomes: &[Outcome],
    error: Option<&SinkError>,
    at: SystemTime,
    took: Option<Duration>,
) {
    if !ctx.history.enabled() {
        return;
    }
    let failure = error.map(|e| format!("{}: {}", e.outcome, e.message));
    for (delivery, outcome) in deliveries.iter().zip(outcomes) {
        let failure = failure.clone();
        let (outcome, detail) = match (outcome, took) {
            (Outcome::Delivered, _) => (AttemptOutcome::Delivered, None),
            (Outcome::Retrying { .. }, _) => (AttemptOutcome::Retrying, failure),
            (Outcome::DeadLettered { reason, .. }, None) => {
                (AttemptOutcome::Expired, Some((*reason).to_owned()))
            }
            (Outcome::DeadLettered { reason, .. }, Some(_)) => {
                let detail = match failure {
                    Some(failure) => format!("{reason}: {failure}"),
                    None => (*reason).to_owned(),
                };
                (AttemptOutcome::DeadLettered, Some(detail))
            }
        };
        ctx.history.record(Attempt {
            event: delivery.event.clone(),
            route: delivery.route.clone(),
            sink: delivery.sink.clone(),
            attempt: delivery.attempts,
            at,
            duration: took,
            outcome,
            status: error.and_then(|e| e.status),
            detail,
        });
    }
}
