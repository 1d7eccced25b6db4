//! Transformations at delivery time: each delivery's event runs through its route's and its
//! sink's programs just before the attempt. The spool keeps the original, so a retry or a
//! replay transforms it again; a failed transformation dead-letters the delivery
//! (`TransformFailed`) as one attempt, since no later attempt could give another result.

use std::time::SystemTime;

use super::{dead_letter, DispatchContext, Outcome};
use crate::config::SinkConfig;
use crate::event::Event;
use crate::sinks::SinkError;
use crate::spool::{Delivery, SpoolError};
use crate::transform::{self, TransformError};

/// The dead-letter reason of a delivery whose transformation failed.
pub const TRANSFORM_FAILED: &str = "TransformFailed";

/// Deliveries to attempt, each with the event its sink receives when that differs from the
/// stored one.
pub(super) type Prepared = Vec<(Delivery, Option<Event>)>;

/// Transforms each of `live` for the sink `config` describes; those that fail are
/// dead-lettered (their outcomes appended to `outcomes`), the rest are returned.
pub(super) async fn prepare(
    ctx: &DispatchContext,
    config: &SinkConfig,
    live: Vec<Delivery>,
    now: SystemTime,
    outcomes: &mut Vec<Outcome>,
) -> Result<Prepared, SpoolError> {
    if !transform::any(&ctx.config) {
        return Ok(live.into_iter().map(|d| (d, None)).collect());
    }
    let mut prepared = Vec::with_capacity(live.len());
    for delivery in live {
        let steps = transform::steps(&ctx.config, &delivery.route, &config.name);
        match transform::apply_all(&delivery.event, &steps) {
            Ok(event) => prepared.push((delivery, event)),
            Err(error) => {
                outcomes.push(Box::pin(failed(ctx, config, delivery, &error, now)).await?)
            }
        }
    }
    Ok(prepared)
}

/// Dead-letters a delivery whose transformation failed, counting the transformation as its
/// attempt and keeping the error as its last outcome.
async fn failed(
    ctx: &DispatchContext,
    config: &SinkConfig,
    mut delivery: Delivery,
    error: &TransformError,
    now: SystemTime,
) -> Result<Outcome, SpoolError> {
    let message = error.to_string();
    delivery.attempts = delivery.attempts.saturating_add(1);
    delivery.last_attempt_at = Some(now);
    delivery.last_outcome = Some(message.clone());
    delivery.last_status = None;
    let cause = SinkError::permanent(TRANSFORM_FAILED, message);
    ctx.counters.sink(&config.name).failed(&cause);
    ctx.retained.observe(&delivery, false);
    dead_letter::run(ctx, config, &delivery, TRANSFORM_FAILED, Some(&cause)).await
}
