//! One sink's lease loop.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{deliver_one, DispatchContext};
use crate::config::SinkConfig;
use crate::sinks::Sink;
use crate::spool::{Delivery, Spool, SpoolError};

/// Wait before leasing again after the spool refused a lease without saying how long.
const LEASE_BACKOFF: Duration = Duration::from_secs(1);

/// Leases deliveries for one sink and runs each on the tracker.
#[derive(Debug)]
pub(super) struct Worker {
    pub(super) ctx: DispatchContext,
    pub(super) sink: Arc<dyn Sink>,
    pub(super) config: Arc<SinkConfig>,
    pub(super) tracker: TaskTracker,
}

impl Worker {
    /// Runs until `stop` is cancelled or the spool closes.
    pub(super) async fn run(self, stop: CancellationToken) {
        // Permits are taken before leasing, so the worker never holds a delivery it
        // cannot start: what it does not lease stays in the spool for later.
        let permits = Arc::new(Semaphore::new(self.config.concurrency.max(1)));
        loop {
            let first = tokio::select! {
                biased;
                () = stop.cancelled() => break,
                permit = permits.clone().acquire_owned() => permit,
            };
            let Ok(first) = first else { break };
            let mut held = vec![first];
            while let Ok(more) = permits.clone().try_acquire_owned() {
                held.push(more);
            }
            let leased = tokio::select! {
                biased;
                () = stop.cancelled() => break,
                leased = self.ctx.spool.lease(&self.config.name, held.len()) => leased,
            };
            match leased {
                Ok(deliveries) => {
                    for delivery in deliveries {
                        // The spool gives at most what was asked; should it give more, the
                        // extra deliveries are leased already and wait for a permit here.
                        let permit = match held.pop() {
                            Some(permit) => permit,
                            None => match permits.clone().acquire_owned().await {
                                Ok(permit) => permit,
                                Err(_closed) => return,
                            },
                        };
                        self.spawn(delivery, permit);
                    }
                }
                Err(SpoolError::Closed) => break,
                Err(error) => {
                    drop(held);
                    let wait = if let SpoolError::Full { retry_after } = &error {
                        (*retry_after).max(LEASE_BACKOFF)
                    } else {
                        LEASE_BACKOFF
                    };
                    tracing::warn!(%error, sink = %self.config.name, ?wait, "Lease failed; pausing");
                    pause(&stop, wait).await;
                }
            }
        }
        tracing::debug!(sink = %self.config.name, "Worker stopped leasing");
    }

    fn spawn(&self, delivery: Delivery, permit: OwnedSemaphorePermit) {
        let ctx = self.ctx.clone();
        let sink = self.sink.clone();
        let config = self.config.clone();
        self.tracker.spawn(async move {
            let _permit = permit;
            if let Err(error) = deliver_one(&ctx, sink.as_ref(), &config, delivery).await {
                tracing::error!(%error, sink = %config.name, "Spool refused a delivery update; the delivery stays leased");
            }
        });
    }
}

async fn pause(stop: &CancellationToken, wait: Duration) {
    tokio::select! {
        () = stop.cancelled() => {}
        () = tokio::time::sleep(wait) => {}
    }
}
