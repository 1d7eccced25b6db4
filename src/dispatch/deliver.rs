//! One attempt of one delivery, or of a batch sent as one request, and what follows for
//! each delivery: ack, nack or dead-letter. Each event is transformed for its sink first
//! (see `transform`).

use std::time::SystemTime;

use tracing::Instrument;

use super::adaptive::Observed;
use super::dead_letter;
use super::history;
use super::reply;
use super::retry::{self, Decision};
use super::saga;
use super::transform::{self, Prepared};
use super::DispatchContext;
use crate::config::SinkConfig;
use crate::event::Event;
use crate::sinks::{Attempt, Reply, Sink, SinkError};
use crate::spool::{Delivery, Spool, SpoolError};
use crate::telemetry::{self, Counters};

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
    delivery: Delivery,
) -> Result<Outcome, SpoolError> {
    let step = deliver_batch(ctx, sink, config, vec![delivery]).await?;
    let outcome = step.outcomes.into_iter().next();
    Ok(outcome.expect("deliver_batch gives one outcome per delivery"))
}

/// What one step did.
#[derive(Debug)]
pub(super) struct Step {
    /// One outcome per delivery, expired ones first.
    pub(super) outcomes: Vec<Outcome>,
    /// The attempt's result for the breaker: `Some(ok)` when one was made. Failures the
    /// target marked as not retryable (a 400, say) count as `ok`: the target answered.
    pub(super) attempt: Option<bool>,
    /// What the attempt showed of the target, for an adaptive concurrency limit.
    pub(super) observed: Option<Observed>,
}

/// [`deliver_one`] for deliveries sent as one request: the expired ones are dead-lettered
/// without an attempt, the rest succeed or fail as a whole, and each failed delivery is then
/// retried or dead-lettered by its own attempt count and age.
pub(super) async fn deliver_batch(
    ctx: &DispatchContext,
    sink: &dyn Sink,
    config: &SinkConfig,
    deliveries: Vec<Delivery>,
) -> Result<Step, SpoolError> {
    let now = SystemTime::now();
    let mut outcomes = Vec::with_capacity(deliveries.len());
    let mut live = Vec::with_capacity(deliveries.len());
    for delivery in deliveries {
        match retry::expired(&config.retry, &delivery, now) {
            Some(Decision::DeadLetter { reason }) => {
                let outcome =
                    Box::pin(dead_letter::run(ctx, config, &delivery, reason, None)).await?;
                observe(
                    ctx,
                    std::slice::from_ref(&delivery),
                    std::slice::from_ref(&outcome),
                );
                history::record(
                    ctx,
                    &[delivery],
                    std::slice::from_ref(&outcome),
                    None,
                    now,
                    None,
                );
                outcomes.push(outcome);
            }
            _ => live.push(delivery),
        }
    }
    let before = live.len();
    let live = saga::drop_overtaken(ctx, live).await?;
    outcomes.extend((live.len()..before).map(|_| Outcome::Delivered));
    let live = transform::prepare(ctx, config, live, now, &mut outcomes).await?;
    let Some((first, _)) = live.first() else {
        return Ok(Step {
            outcomes,
            attempt: None,
            observed: None,
        });
    };
    let span = delivery_span(config, &live);
    if !span.is_disabled() {
        // The publisher's trace context: the exported span continues that trace.
        let parent = first.event.extension("traceparent");
        telemetry::continue_trace(&span, parent.map(|t| t.to_canonical_string()).as_deref());
    }
    let (ok, observed, mut done) = attempt(ctx, sink, config, live, now)
        .instrument(span.clone())
        .await?;
    telemetry::span_outcome(&span, most_severe(&done));
    outcomes.append(&mut done);
    Ok(Step {
        outcomes,
        attempt: Some(ok),
        observed: Some(observed),
    })
}

/// The span of one attempt: made for the exporter when spans are exported, and for the log
/// lines within it (context such as `delivery{event_id=… sink=…}:`) only when `debug` lines
/// are logged, where those lines are; otherwise none, which costs nothing.
fn delivery_span(config: &SinkConfig, live: &Prepared) -> tracing::Span {
    let Some((first, _)) = live.first() else {
        return tracing::Span::none();
    };
    // `enabled!` is asked first: a per-layer filter that may take a span later (the
    // exporter's) leaves its callsite enabled even while every layer would refuse it.
    if !telemetry::exporting() && !tracing::enabled!(tracing::Level::DEBUG) {
        return tracing::Span::none();
    }
    tracing::debug_span!(
        "delivery",
        event_id = %first.event.id,
        route = %first.route,
        sink = %config.name,
        attempt = live.iter().map(|(d, _)| d.attempts).max().unwrap_or(0).saturating_add(1),
        events = live.len(),
        otel.kind = "client",
    )
}

/// How a (batch) attempt ended, for its span: the most severe outcome of its deliveries.
fn most_severe(outcomes: &[Outcome]) -> &'static str {
    let rank = |o: &Outcome| match o {
        Outcome::Delivered => 0,
        Outcome::Retrying { .. } => 1,
        Outcome::DeadLettered { .. } => 2,
    };
    match outcomes.iter().map(rank).max() {
        Some(2) => "dead_letter",
        Some(1) => "retry",
        _ => "success",
    }
}

/// One attempt of `live` (not expired), then ack, nack or dead-letter for each.
async fn attempt(
    ctx: &DispatchContext,
    sink: &dyn Sink,
    config: &SinkConfig,
    live: Prepared,
    now: SystemTime,
) -> Result<(bool, Observed, Vec<Outcome>), SpoolError> {
    let (mut live, shown): (Vec<Delivery>, Vec<Option<Event>>) = live.into_iter().unzip();
    let counts: Vec<u32> = live.iter().map(|d| d.attempts).collect();
    for delivery in &mut live {
        delivery.attempts = delivery.attempts.saturating_add(1);
        delivery.last_attempt_at = Some(now);
    }
    let stats = ctx.counters.sink(&config.name);
    // A saga step's reply is its instance's, whatever the sink's `reply` says.
    let step = match live.as_slice() {
        [one] => saga::position(ctx, one),
        _ => None,
    };
    let started = tokio::time::Instant::now();
    let result = {
        let attempts: Vec<Attempt<'_>> = live
            .iter()
            .zip(&shown)
            .zip(counts)
            .map(|((d, shown), delivery_count)| Attempt {
                event: shown.as_ref().unwrap_or(&d.event),
                route: &d.route,
                delivery_count,
            })
            .collect();
        let _in_flight = stats.attempt();
        match attempts.as_slice() {
            [one] if config.delivery.reply.enabled || step.is_some() => {
                sink.deliver_for_reply(*one).await
            }
            [one] => sink.deliver(*one).await.map(|()| Reply::None),
            many => sink.deliver_batch(many).await.map(|()| Reply::None),
        }
    };
    let took = started.elapsed();
    stats.attempted(took);
    let observed = Observed {
        rtt: took,
        backpressure: result.as_ref().err().is_some_and(pushed_back),
    };
    // A reply is stored before the delivery it answers is acked.
    let batched = live.len() > 1;
    let result = match (result, live.first(), step) {
        (Ok(answer), Some(first), Some(step)) => {
            Box::pin(saga::delivered(ctx, step, first, answer)).await?
        }
        (Ok(Reply::None), _, None) => Ok(()),
        (Ok(answer), Some(first), None) => {
            Box::pin(reply::take(ctx, config, &first.event, answer)).await?
        }
        (result, _, _) => result.map(|_| ()),
    };
    let mut outcomes = Vec::with_capacity(live.len());
    let ok = match &result {
        Ok(()) => {
            // Kept for replay before the spool lets go of them.
            if ctx.retained.enabled() {
                ctx.retained.keep(&live, SystemTime::now()).await;
            }
            for delivery in &live {
                if batched {
                    // A step sent in a batch has no answer of its own.
                    saga::delivered_in_batch(ctx, delivery).await?;
                }
                ctx.spool.ack(delivery).await?;
                Counters::add(&ctx.counters.deliveries_succeeded, 1);
                stats.delivered();
                outcomes.push(Outcome::Delivered);
            }
            tracing::debug!("Delivered");
            true
        }
        Err(error) => {
            stats.failed(error);
            // One time and one jitter for the batch: deliveries with the same attempt count
            // come due together and are retried as one batch again.
            let decided = (SystemTime::now(), fastrand::f64());
            for delivery in &live {
                let failed = failed(ctx, config, delivery.clone(), error, decided);
                outcomes.push(Box::pin(failed).await?);
            }
            !error.retryable
        }
    };
    observe(ctx, &live, &outcomes);
    history::record(
        ctx,
        &live,
        &outcomes,
        result.err().as_ref(),
        now,
        Some(took),
    );
    Ok((ok, observed, outcomes))
}

/// Counts the final outcomes of replayed deliveries (see [`crate::spool::Retained::replay`]).
fn observe(ctx: &DispatchContext, deliveries: &[Delivery], outcomes: &[Outcome]) {
    if !ctx.retained.enabled() {
        return;
    }
    for (delivery, outcome) in deliveries.iter().zip(outcomes) {
        match outcome {
            Outcome::Delivered => ctx.retained.observe(delivery, true),
            Outcome::DeadLettered { .. } => ctx.retained.observe(delivery, false),
            Outcome::Retrying { .. } => {}
        }
    }
}

/// Whether a failure says the target is overloaded: 429, 503 or no answer in time.
fn pushed_back(error: &SinkError) -> bool {
    matches!(error.status, Some(429 | 503)) || error.outcome == crate::sinks::outcome::TIMED_OUT
}

/// After a failed attempt: records its outcome on the delivery, then retries or dead-letters.
async fn failed(
    ctx: &DispatchContext,
    config: &SinkConfig,
    mut delivery: Delivery,
    error: &SinkError,
    (now, jitter): (SystemTime, f64),
) -> Result<Outcome, SpoolError> {
    delivery.last_outcome = Some(error.outcome.to_owned());
    delivery.last_status = error.status;
    match retry::decide_with_jitter(&config.retry, &delivery, error, now, jitter) {
        Decision::Retry { not_before } => {
            // A retry is the normal path for a flaky target and can happen thousands of times
            // a second for a dead one: the sink's `last_error` (admin API) and the retry metric
            // carry it; the log gets it at DEBUG. Breaker changes and dead letters log at WARN.
            tracing::debug!(
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::SystemTime;

    use tracing_subscriber::layer::{Layer as _, SubscriberExt as _};

    use super::delivery_span;
    use crate::sinks::tests::support::{event, http_config, sink};
    use crate::spool::Delivery;

    /// The span of an attempt under a subscriber like the daemon's, logging at `level`.
    fn span_at(level: &str) -> bool {
        let lines = tracing_subscriber::fmt::layer()
            .with_writer(std::io::sink)
            .with_filter(tracing_subscriber::EnvFilter::new(level));
        let subscriber = tracing_subscriber::registry()
            .with(lines)
            .with(crate::telemetry::otlp_layer());
        let http = http_config(
            &hyper::Uri::from_static("http://127.0.0.1:9/"),
            crate::config::HttpFormat::CloudEventsBinary,
            std::time::Duration::from_secs(1),
        );
        let config = sink("api", crate::config::SinkKind::Http(http), 1);
        let delivery = Delivery {
            id: 1,
            event: Arc::new(event("ev-1")),
            route: Arc::from("orders"),
            sink: Arc::from("api"),
            attempts: 0,
            accepted_at: SystemTime::now(),
            not_before: SystemTime::now(),
            last_outcome: None,
            last_status: None,
            last_attempt_at: None,
            priority: Default::default(),
            ordering_key: None,
        };
        tracing::subscriber::with_default(subscriber, || {
            !delivery_span(&config, &vec![(delivery, None)]).is_disabled()
        })
    }

    #[test]
    fn an_attempt_makes_a_span_only_for_debug_lines_or_export() {
        assert!(!span_at("info"), "a span at info, with nothing exported");
        assert!(!span_at("warn"), "a span at warn, with nothing exported");
        assert!(span_at("debug"), "no span for debug lines");
    }
}
