//! One attempt of one delivery, and what follows it: ack, nack or dead-letter.

use std::time::SystemTime;

use tracing::Instrument;

use super::dead_letter;
use super::retry::{self, Decision};
use super::DispatchContext;
use crate::config::SinkConfig;
use crate::sinks::{Attempt, Sink, SinkError};
use crate::spool::{Delivery, Spool, SpoolError};
use crate::telemetry::Counters;

/// What became of a delivery after one step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The sink confirmed it; it left the spool.
    Delivered,
    /// The attempt failed; the delivery waits in the spool until `not_before`.
    Retrying {
        /// Earliest time of the next attempt.
        not_before: SystemTime,
    },
    /// It will not be retried; it left the spool.
    DeadLettered {
        /// Event Grid's `deadLetterReason`.
        reason: &'static str,
        /// The dead-letter sink the record was queued for; `None` when it was dropped.
        forwarded_to: Option<String>,
    },
}

/// Runs one step of a leased delivery for the sink `config` describes: dead-letters it
/// without an attempt when its time to live has run out, otherwise attempts it once and
/// acks, nacks or dead-letters it. Errors only when the spool refuses the update.
pub async fn deliver_one(
    ctx: &DispatchContext,
    sink: &dyn Sink,
    config: &SinkConfig,
    mut delivery: Delivery,
) -> Result<Outcome, SpoolError> {
    let now = SystemTime::now();
    if let Some(Decision::DeadLetter { reason }) = retry::expired(&config.retry, &delivery, now) {
        return dead_letter::run(ctx, config, &delivery, reason, None).await;
    }
    let delivery_count = delivery.attempts;
    delivery.attempts = delivery.attempts.saturating_add(1);
    delivery.last_attempt_at = Some(now);
    let span = tracing::info_span!(
        "delivery",
        event_id = %delivery.event.id,
        route = %delivery.route,
        sink = %config.name,
        attempt = delivery.attempts,
    );
    let stats = ctx.counters.sink(&config.name);
    async {
        let attempt = Attempt {
            event: &delivery.event,
            route: &delivery.route,
            delivery_count,
        };
        let started = tokio::time::Instant::now();
        let result = {
            let _in_flight = stats.attempt();
            sink.deliver(attempt).await
        };
        stats.attempted(started.elapsed());
        match result {
            Ok(()) => {
                ctx.spool.ack(&delivery).await?;
                Counters::add(&ctx.counters.deliveries_succeeded, 1);
                stats.delivered();
                tracing::debug!("Delivered");
                Ok(Outcome::Delivered)
            }
            Err(error) => {
                stats.failed(&error);
                failed(ctx, config, delivery, &error).await
            }
        }
    }
    .instrument(span)
    .await
}

/// After a failed attempt: records its outcome on the delivery, then retries or dead-letters.
async fn failed(
    ctx: &DispatchContext,
    config: &SinkConfig,
    mut delivery: Delivery,
    error: &SinkError,
) -> Result<Outcome, SpoolError> {
    delivery.last_outcome = Some(error.outcome.to_owned());
    delivery.last_status = error.status;
    let now = SystemTime::now();
    match retry::decide(&config.retry, &delivery, error, now) {
        Decision::Retry { not_before } => {
            tracing::warn!(
                %error,
                outcome = error.outcome,
                status = error.status,
                retry_in = ?retry::wait_until(not_before, now),
                "Delivery attempt failed; will retry"
            );
            ctx.spool.nack(delivery, not_before).await?;
            Counters::add(&ctx.counters.deliveries_retried, 1);
            ctx.counters.sink(&config.name).retried();
            Ok(Outcome::Retrying { not_before })
        }
        Decision::DeadLetter { reason } => {
            dead_letter::run(ctx, config, &delivery, reason, Some(error)).await
        }
    }
}
