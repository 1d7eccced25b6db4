//! Saga steps on the delivery side: a step's outcome advances its instance before the step's
//! delivery is acked or dead-lettered, and what the instance asks for next — the next step,
//! a compensation, its outcome event — is stored. Also the saga runner: deadlines, aborts,
//! retention, and what a crash left pending.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;

use super::DispatchContext;
use crate::accept::{AcceptError, Acceptor};
use crate::event::Event;
use crate::saga::{Next, Position, Sagas, StepOutcome, StepResult};
use crate::sinks::{Reply, SinkError};
use crate::spool::{Delivery, Spool, SpoolError, SpoolHandle};
use crate::telemetry::{self, Format};

/// The outcome of a step delivery whose saga could not record it: retried like a failed
/// attempt.
const SAGA_NOT_RECORDED: &str = "SagaNotRecorded";

/// How often finished instances past `spool.saga_retention` are removed, and the longest
/// the runner sleeps between deadline checks.
const SWEEP_EVERY: Duration = Duration::from_secs(60);
/// Wait before the runner retries a transition it could not carry out.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// The saga position of a delivery, when it is a saga's and sagas run here.
pub(super) fn position(ctx: &DispatchContext, delivery: &Delivery) -> Option<Position> {
    ctx.sagas.as_ref()?;
    Position::of(&delivery.route, &delivery.event)
}

/// Keeps the deliveries that are not saga steps overtaken by their instance (a step after
/// the deadline or an abort, a repeat of a step already recorded); those are acked without
/// an attempt.
pub(super) async fn drop_overtaken(
    ctx: &DispatchContext,
    deliveries: Vec<Delivery>,
) -> Result<Vec<Delivery>, SpoolError> {
    let Some(sagas) = &ctx.sagas else {
        return Ok(deliveries);
    };
    let mut live = Vec::with_capacity(deliveries.len());
    for delivery in deliveries {
        let Some(position) = Position::of(&delivery.route, &delivery.event) else {
            live.push(delivery);
            continue;
        };
        // Boxed: the saga store's futures are large, and only a saga step should pay for
        // them in every delivery's future.
        match Box::pin(sagas.is_current(position)).await {
            Ok(false) => {
                tracing::debug!(event_id = %delivery.event.id, sink = %delivery.sink, "A saga step its instance no longer waits for; dropped without an attempt");
                ctx.spool.ack(&delivery).await?;
            }
            // The store unreadable: deliver, and let the outcome sort it out.
            Ok(true) | Err(_) => live.push(delivery),
        }
    }
    Ok(live)
}

/// A saga step was delivered (the sink answered `reply`): advances its instance and stores
/// what follows. `Ok(Err(_))` when that could not be recorded (the delivery is retried).
pub(super) async fn delivered(
    ctx: &DispatchContext,
    position: Position,
    delivery: &Delivery,
    reply: Reply,
) -> Result<Result<(), SinkError>, SpoolError> {
    let reply = match reply {
        Reply::Event(event) => Some(event),
        Reply::None => None,
        Reply::Invalid(reason) => {
            tracing::warn!(sink = %delivery.sink, event_id = %delivery.event.id, %reason, "A saga step's reply is not a valid CloudEvent; the next step gets this step's input");
            None
        }
    };
    let result = StepResult {
        outcome: StepOutcome::Delivered(reply),
        attempts: delivery.attempts,
        status: None,
    };
    advance(ctx, position, result).await
}

/// A delivery that went out in a batch was confirmed: when it is a saga step, its instance
/// advances (with no answer). A failure to record it is logged; the instance then waits
/// for its deadline.
pub(super) async fn delivered_in_batch(
    ctx: &DispatchContext,
    delivery: &Delivery,
) -> Result<(), SpoolError> {
    let Some(step) = position(ctx, delivery) else {
        return Ok(());
    };
    if let Err(error) = Box::pin(delivered(ctx, step, delivery, Reply::None)).await? {
        tracing::error!(%error, event_id = %delivery.event.id, "A saga could not record a step delivered in a batch; it compensates at its deadline");
    }
    Ok(())
}

/// A saga step (or compensation) is being dead-lettered: advances its instance.
pub(super) async fn dead_lettered(
    ctx: &DispatchContext,
    position: Position,
    delivery: &Delivery,
    reason: &str,
) -> Result<(), SpoolError> {
    let result = StepResult {
        outcome: StepOutcome::DeadLettered(reason.to_owned()),
        attempts: delivery.attempts,
        status: delivery.last_status,
    };
    match advance(ctx, position, result).await? {
        Ok(()) => Ok(()),
        Err(error) => {
            // The dead letter goes ahead; the instance waits for its deadline.
            tracing::error!(%error, event_id = %delivery.event.id, "A saga could not record a dead-lettered step; it compensates at its deadline");
            Ok(())
        }
    }
}

async fn advance(
    ctx: &DispatchContext,
    position: Position,
    result: StepResult,
) -> Result<Result<(), SinkError>, SpoolError> {
    let Some(sagas) = &ctx.sagas else {
        return Ok(Ok(()));
    };
    let next = match sagas.advance(position, result).await {
        Ok(Some(next)) => next,
        Ok(None) => return Ok(Ok(())),
        Err(error) => {
            return Ok(Err(SinkError::retryable(
                SAGA_NOT_RECORDED,
                format!("the saga did not record the step: {error}"),
            )))
        }
    };
    match carry_out(&ctx.spool, &ctx.replies, sagas, next.clone()).await {
        Ok(()) => Ok(Ok(())),
        Err(SpoolError::Closed) => Err(SpoolError::Closed),
        // Recorded and kept pending: the step is done, the runner stores what follows.
        Err(_) => {
            sagas.requeue(next);
            Ok(Ok(()))
        }
    }
}

/// Stores what a transition asked for: its deliveries, then its outcome event; then clears
/// it from the saga store.
pub(crate) async fn carry_out(
    spool: &SpoolHandle,
    acceptor: &Acceptor,
    sagas: &Sagas,
    next: Next,
) -> Result<(), SpoolError> {
    if !next.deliveries.is_empty() {
        spool.put(next.deliveries).await?;
    }
    if let Some(event) = next.finished {
        announce(acceptor, event).await?;
    }
    if let Err(error) = sagas.flushed(next.instance, next.seq).await {
        // Left pending: put again at the next start (a repeat, never a loss).
        tracing::warn!(%error, "Cannot clear a saga's stored transition");
    }
    Ok(())
}

/// Routes an instance's outcome event like any other.
async fn announce(acceptor: &Acceptor, event: Event) -> Result<(), SpoolError> {
    match acceptor.accept_from(vec![event], Some(Format::Saga)).await {
        Ok(_) => Ok(()),
        Err(AcceptError::Closed) => Err(SpoolError::Closed),
        Err(AcceptError::Full { retry_after }) => Err(SpoolError::Full { retry_after }),
        Err(AcceptError::Unreachable { store, retry_after }) => {
            Err(SpoolError::Unreachable { store, retry_after })
        }
    }
}

/// What the saga runner works with.
#[derive(Debug, Clone)]
pub struct SagaRunner {
    /// The saga store.
    pub sagas: Sagas,
    /// Where steps are put.
    pub spool: Arc<SpoolHandle>,
    /// Where outcome events are accepted.
    pub acceptor: Acceptor,
    /// How long finished instances are kept.
    pub retention: Duration,
}

impl SagaRunner {
    /// Until `stop`: stores what a crash left pending, then compensates instances past their
    /// deadline, carries out aborts, removes finished instances past retention and, on a
    /// store other daemons share, stores what a daemon that died left pending.
    pub async fn run(self, stop: CancellationToken) {
        self.recover().await;
        let mut swept = tokio::time::Instant::now();
        let mut retry: Vec<Next> = Vec::new();
        loop {
            // Until it knows when it wakes, every start kicks it (the kick is kept for the
            // wait below), so a deadline stored meanwhile is not slept past.
            self.sagas
                .sleeps_until(SystemTime::UNIX_EPOCH + Duration::from_secs(u64::from(u32::MAX)));
            let wait = match (retry.is_empty(), self.sagas.next_deadline().await) {
                (false, _) => RETRY_AFTER,
                (true, Ok(Some(at))) => at
                    .duration_since(SystemTime::now())
                    .unwrap_or_default()
                    .min(SWEEP_EVERY),
                (true, _) => SWEEP_EVERY,
            };
            let wait = self.sagas.poll_every().map_or(wait, |most| wait.min(most));
            self.sagas.sleeps_until(SystemTime::now() + wait);
            tokio::select! {
                () = stop.cancelled() => return,
                () = self.sagas.kicked() => {}
                () = tokio::time::sleep(wait) => {}
            }
            let mut due = std::mem::take(&mut retry);
            due.extend(self.sagas.take_queued());
            match self.sagas.expire(SystemTime::now()).await {
                Ok(expired) => due.extend(expired),
                Err(error) => tracing::warn!(%error, "Cannot check saga deadlines"),
            }
            match self.sagas.stranded().await {
                Ok(stranded) => due.extend(stranded),
                Err(error) => tracing::warn!(%error, "Cannot look for stranded saga steps"),
            }
            self.sagas.refresh_gauges();
            for next in due {
                if let Err(error) =
                    carry_out(&self.spool, &self.acceptor, &self.sagas, next.clone()).await
                {
                    tracing::debug!(%error, instance = %next.instance, "Cannot store a saga's next step yet; will retry");
                    retry.push(next);
                }
            }
            if swept.elapsed() >= SWEEP_EVERY {
                swept = tokio::time::Instant::now();
                if let Err(error) = self.sagas.sweep(SystemTime::now(), self.retention).await {
                    tracing::warn!(%error, "Cannot remove finished saga instances");
                }
            }
        }
    }

    /// Stores every transition a crash left pending and sets the active gauges.
    async fn recover(&self) {
        match self.sagas.active().await {
            Ok(active) => {
                for (saga, n) in active {
                    telemetry::sagas_active(&saga, n);
                }
            }
            Err(error) => tracing::warn!(%error, "Cannot count active saga instances"),
        }
        let pending = match self.sagas.pending().await {
            Ok(pending) => pending,
            Err(error) => {
                tracing::error!(%error, "Cannot read pending saga steps");
                return;
            }
        };
        if !pending.is_empty() {
            tracing::info!(
                instances = pending.len(),
                "Storing saga steps left pending at the last stop"
            );
        }
        for next in pending {
            if let Err(error) =
                carry_out(&self.spool, &self.acceptor, &self.sagas, next.clone()).await
            {
                tracing::warn!(%error, instance = %next.instance, "Cannot store a pending saga step; will retry");
                self.sagas.requeue(next);
            }
        }
    }
}
