//! A leased delivery as the delivery side holds it until its attempt begins. Dropping one
//! that was not taken for an attempt hands it back to the spool at once
//! ([`Spool::release`]), with no attempt counted. Whatever ends a worker or a step (a
//! reload, shutdown, cancellation while waiting for rate-limit tokens or a permit, a batch
//! being assembled) drops what it holds, so a lease never outlives the code holding it:
//! no timeout is needed, and the `memory` and `embedded` backends have none.

use std::ops::Deref;
use std::sync::Arc;

use crate::spool::{Delivery, Spool, SpoolHandle};

/// One leased, unattempted delivery.
#[derive(Debug)]
pub(super) struct Held {
    /// `Some` until taken for an attempt.
    delivery: Option<Delivery>,
    spool: Arc<SpoolHandle>,
}

impl Held {
    /// Holds what `spool` just leased.
    pub(super) fn all(spool: &Arc<SpoolHandle>, leased: Vec<Delivery>) -> Vec<Self> {
        leased
            .into_iter()
            .map(|delivery| Self {
                delivery: Some(delivery),
                spool: spool.clone(),
            })
            .collect()
    }

    /// Takes the delivery for its attempt (or its dead-lettering): from here on its outcome
    /// is acked, nacked or dead-lettered, never released.
    pub(super) fn take(mut self) -> Delivery {
        self.delivery
            .take()
            .expect("a held delivery is taken once, by value")
    }
}

impl Deref for Held {
    type Target = Delivery;

    fn deref(&self) -> &Delivery {
        self.delivery
            .as_ref()
            .expect("a held delivery is there until taken")
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Some(delivery) = self.delivery.take() {
            tracing::trace!(delivery = delivery.id, sink = %delivery.sink, "Lease released unattempted");
            self.spool.release(delivery);
        }
    }
}
