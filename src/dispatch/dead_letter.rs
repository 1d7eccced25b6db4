//! Dead-lettering: the record Event Grid would write, queued for the dead-letter sink.

use std::sync::Arc;
use std::time::SystemTime;

use chrono::{DateTime, SecondsFormat, Utc};

use super::{DispatchContext, Outcome};
use crate::config::SinkConfig;
use crate::event::{Event, ExtensionValue};
use crate::sinks::SinkError;
use crate::spool::{DeadLetter, Delivery, NewDelivery, Spool, SpoolError};
use crate::telemetry::Counters;

/// Moves `delivery` from the queue into the spool's dead-letter store and, in the same step,
/// queues its dead-letter record for the sink's `dead_letter` target, when it has a usable
/// one. `cause` is the failure of the last attempt, when this follows one.
pub(super) async fn run(
    ctx: &DispatchContext,
    config: &SinkConfig,
    delivery: &Delivery,
    reason: &'static str,
    cause: Option<&SinkError>,
) -> Result<Outcome, SpoolError> {
    if let Some(step) = super::saga::position(ctx, delivery) {
        // The instance moves on (to its compensations) before the step leaves the spool.
        super::saga::dead_lettered(ctx, step, delivery, reason).await?;
    }
    let now = SystemTime::now();
    let target = config
        .dead_letter
        .as_deref()
        // A sink that is its own dead-letter target would loop forever.
        .filter(|t| *t != config.name && ctx.config.sinks.contains_key(*t));
    let forward = target.map(|t| NewDelivery {
        event: Arc::new(record(delivery, reason)),
        route: delivery.route.clone(),
        sink: Arc::from(t),
        accepted_at: now,
        not_before: now,
        // The record keeps its lane; the dead-letter sink has no order to keep.
        priority: delivery.priority,
        ordering_key: None,
    });
    let info = DeadLetter {
        reason: reason.to_owned(),
        attempts: delivery.attempts,
        last_outcome: delivery.last_outcome.clone(),
        last_status: delivery.last_status,
        last_attempt_at: delivery.last_attempt_at,
        dead_lettered_at: now,
    };
    ctx.spool.dead_letter(delivery, info, forward).await?;
    Counters::add(&ctx.counters.deliveries_dead_lettered, 1);
    ctx.counters.sink(&config.name).dead_lettered(reason);
    let (event_id, route, sink) = (&delivery.event.id, &delivery.route, &config.name);
    let error = cause.map(tracing::field::display);
    match target {
        Some(target) => {
            tracing::warn!(
                %event_id,
                %route,
                %sink,
                reason,
                error,
                dead_letter = target,
                "Delivery dead-lettered"
            );
        }
        None => {
            Counters::add(&ctx.counters.dead_letters_dropped, 1);
            tracing::warn!(
                %event_id,
                %route,
                %sink,
                reason,
                error,
                attempts = delivery.attempts,
                last_outcome = delivery.last_outcome.as_deref(),
                "Delivery dead-lettered with no dead-letter sink; kept in the dead-letter store"
            );
        }
    }
    Ok(Outcome::DeadLettered {
        reason,
        forwarded_to: target.map(str::to_owned),
    })
}

/// The event with Event Grid's dead-letter fields as CloudEvents extension attributes
/// (lower-case names, as in Event Grid's CloudEvents dead-letter records).
/// `lastdeliveryoutcome`, `lasthttpstatuscode` and `lastdeliveryattempttime` are left out
/// when there was no attempt, or no HTTP status.
pub(super) fn record(delivery: &Delivery, reason: &str) -> Event {
    let mut event = Event::clone(&delivery.event);
    let text = |s: &str| ExtensionValue::String(s.to_owned());
    event.set_extension("deadletterreason", text(reason));
    let attempts = i64::from(delivery.attempts);
    event.set_extension("deliveryattempts", ExtensionValue::Integer(attempts));
    if let Some(outcome) = &delivery.last_outcome {
        event.set_extension("lastdeliveryoutcome", text(outcome));
    }
    if let Some(status) = delivery.last_status {
        event.set_extension("lasthttpstatuscode", ExtensionValue::Integer(status.into()));
    }
    event.set_extension("publishtime", text(&rfc3339(delivery.accepted_at)));
    if let Some(at) = delivery.last_attempt_at {
        event.set_extension("lastdeliveryattempttime", text(&rfc3339(at)));
    }
    event
}

fn rfc3339(at: SystemTime) -> String {
    DateTime::<Utc>::from(at).to_rfc3339_opts(SecondsFormat::Millis, true)
}
