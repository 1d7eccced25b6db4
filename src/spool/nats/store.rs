//! Storing delivery records in the work stream: every publish of a request is acknowledged
//! before the request is, and a request refused part-way takes back what it had stored.
//!
//! The take-back deletes the stored messages by the stream sequences their acks named. It
//! covers what JetStream acknowledged; a publish whose ack was lost (a timeout) may still
//! have stored its message, and a message another instance leased in the meantime may
//! still be attempted once. Records with a message id (`put_unique`) are never taken back:
//! JetStream keeps a deleted message's id for its whole duplicate window, so deleting them
//! would make the sender's retry of the request count as a duplicate and lose them; that
//! retry stores only what is missing instead.
//!
//! While the client is not connected a request is refused before anything is sent: the
//! client keeps what is sent meanwhile and sends it when it reconnects, which would store
//! the deliveries of a request already answered 503. A publish sent just before a
//! connection is found lost may still be stored that way (and be delivered although the
//! sender was refused and retries).

use std::future::IntoFuture;
use std::sync::Arc;

use async_nats::jetstream::message::PublishMessage as Publish;

use super::record::Record;
use super::{unavailable, Inner};
use crate::spool::{NewDelivery, SpoolError};

/// A publish refused part-way: the sequences JetStream stored anew before, and why.
pub(super) struct Refused {
    stored: Vec<u64>,
    error: SpoolError,
}

impl From<Refused> for SpoolError {
    fn from(refused: Refused) -> Self {
        refused.error
    }
}

impl Inner {
    /// Publishes records to the work stream; `Ok` once JetStream acknowledged all of them,
    /// with whether each was a duplicate.
    pub(super) async fn publish(
        self: &Arc<Self>,
        records: Vec<(String, Publish)>,
    ) -> Result<Vec<bool>, Refused> {
        let refused = |error| Refused {
            stored: Vec::new(),
            error,
        };
        // The client would keep publishes sent while it reconnects and store them then,
        // long after the sender was told they were refused.
        let conn = self.live().await.map_err(refused)?;
        let mut pending = Vec::with_capacity(records.len());
        let mut failed = None;
        for (subject, publish) in records {
            match conn.js.send_publish(subject, publish).await {
                Ok(ack) => pending.push(ack.into_future()),
                Err(error) => {
                    failed = Some(unavailable(&error));
                    break;
                }
            }
        }
        // Every ack is awaited, also after a failure, so that a refusal knows what was
        // stored; at once, so that a lost connection costs one timeout, not one per record.
        let mut stored = Vec::new();
        let mut duplicates = Vec::with_capacity(pending.len());
        for ack in futures_util::future::join_all(pending).await {
            match ack {
                Ok(ack) if ack.duplicate => duplicates.push(true),
                Ok(ack) => {
                    stored.push(ack.sequence);
                    duplicates.push(false);
                }
                Err(error) => {
                    failed = failed.or_else(|| Some(unavailable(&error)));
                }
            }
        }
        match failed {
            None => Ok(duplicates),
            Some(error) => Err(Refused { stored, error }),
        }
    }

    /// Stores new deliveries, each with a message id when `unique`, all or none of them
    /// (see the module doc for the limits); returns which were duplicates.
    pub(super) async fn store(
        self: &Arc<Self>,
        deliveries: &[NewDelivery],
        unique: bool,
    ) -> Result<Vec<bool>, SpoolError> {
        let mut sinks: Vec<&str> = deliveries.iter().map(|d| &*d.sink).collect();
        sinks.sort_unstable();
        sinks.dedup();
        for sink in sinks {
            self.lanes(sink).await?;
        }
        let records = deliveries
            .iter()
            .map(|d| {
                let mut publish = Publish::build()
                    .payload(Record::new(d).to_bytes())
                    .header("ce-id", d.event.id.as_str())
                    .header("ce-source", d.event.source.as_str());
                if unique {
                    publish = publish.message_id(message_id(d));
                }
                (self.names.work_subject(&d.sink, d.priority), publish)
            })
            .collect();
        let duplicates = match self.publish(records).await {
            Ok(duplicates) => duplicates,
            Err(refused) if unique => return Err(refused.error),
            Err(refused) => {
                self.take_back(&refused.stored).await;
                return Err(refused.error);
            }
        };
        for (d, duplicate) in deliveries.iter().zip(&duplicates) {
            if !duplicate {
                self.depths.add(&d.sink, 1);
            }
        }
        Ok(duplicates)
    }

    /// Deletes the messages a refused request had stored. What stays is logged: the
    /// sender's retry stores it again, so it may be delivered twice.
    async fn take_back(&self, stored: &[u64]) {
        let Some(conn) = self.conn.get() else { return };
        let deletes = stored.iter().map(|seq| conn.work.delete_message(*seq));
        let results = futures_util::future::join_all(deletes).await;
        let kept = results.iter().filter(|r| !matches!(r, Ok(true))).count();
        if kept > 0 {
            let error = results.iter().find_map(|r| r.as_ref().err());
            tracing::warn!(
                kept,
                stored = stored.len(),
                error = error.map(tracing::field::display),
                "Deliveries of a refused request could not be taken back; a retry may deliver them twice"
            );
        }
    }
}

/// The `Nats-Msg-Id` of a delivery: (`source`, `id`, route, sink), each percent-encoded.
fn message_id(d: &NewDelivery) -> String {
    use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
    [&*d.event.source, &*d.event.id, &*d.route, &*d.sink]
        .iter()
        .map(|part| utf8_percent_encode(part, NON_ALPHANUMERIC).to_string())
        .collect::<Vec<_>>()
        .join("/")
}
