//! The dead-letter store of the `nats` spool: the `<prefix>-dlq` stream, read by sequence.

use std::sync::Arc;
use std::time::SystemTime;

use async_nats::jetstream::message::PublishMessage as Publish;
use async_nats::jetstream::stream::{DeleteMessageErrorKind, RawMessageErrorKind};

use super::record::Record;
use super::{unavailable, Inner, Settle};
use crate::spool::{
    DeadLetter, DeadLetterId, DeadLetterQuery, DeadLetterRecord, Delivery, NewDelivery, SpoolError,
};

/// Keeps `delivery` as a dead letter, stores its forward, then acks it. Each publish carries
/// a message id derived from the delivery, so a repeat after a crash stores nothing twice.
pub(super) async fn dead_letter(
    inner: &Arc<Inner>,
    delivery: &Delivery,
    info: &DeadLetter,
    forward: Option<NewDelivery>,
) -> Result<(), SpoolError> {
    let conn = inner.conn().await?;
    let publish = Publish::build()
        .payload(Record::dead(delivery, info).to_bytes())
        .message_id(format!("dead-{}", delivery.id));
    let subject = inner.names.dead_subject(&delivery.sink);
    let ack = conn.js.send_publish(subject, publish).await;
    ack.map_err(|e| unavailable(&e))?
        .await
        .map_err(|e| unavailable(&e))?;
    if let Some(forward) = forward {
        inner.lanes(&forward.sink).await?;
        let publish = Publish::build()
            .payload(Record::new(&forward).to_bytes())
            .message_id(format!("forward-{}", delivery.id));
        let subject = inner.names.work_subject(&forward.sink, forward.priority);
        inner.publish(vec![(subject, publish)]).await?;
        inner.depths.add(&forward.sink, 1);
    }
    inner.settle(delivery, Settle::Confirmed).await?;
    inner.depths.add(&delivery.sink, -1);
    Ok(())
}

/// The dead letters `query` selects, in id (stream sequence) order.
pub(super) async fn list(
    inner: &Arc<Inner>,
    query: &DeadLetterQuery,
) -> Result<Vec<DeadLetterRecord>, SpoolError> {
    let conn = inner.conn().await?;
    let subject = match &query.sink {
        Some(sink) => inner.names.dead_subject(sink),
        None => inner.names.dead_subjects(),
    };
    let mut next = query
        .id
        .unwrap_or(0)
        .max(query.after.map_or(0, |a| a + 1))
        .max(1);
    let mut out = Vec::new();
    let mut bytes = 0;
    while query.wants_more(out.len(), bytes) {
        let got = conn
            .dead
            .raw_message_builder()
            .sequence(next)
            .next_by_subject(subject.clone())
            .send()
            .await;
        let message = match got {
            Ok(message) => message,
            Err(e) if matches!(e.kind(), RawMessageErrorKind::NoMessageFound) => break,
            Err(e) => return Err(unavailable(&e)),
        };
        if query.id.is_some_and(|id| id != message.sequence) {
            break;
        }
        next = message.sequence + 1;
        let record =
            Record::parse(&message.payload).and_then(|r| r.into_dead_letter(message.sequence));
        match record {
            Ok(record) if query.matches(&record) => {
                bytes += crate::spool::event_size(&record.event);
                out.push(record);
            }
            Ok(_) => {}
            Err(error) => {
                tracing::warn!(%error, id = message.sequence, "Unreadable dead letter skipped");
            }
        }
    }
    Ok(out)
}

/// Queues the selected dead letters again with no attempts and a fresh TTL, then deletes
/// them from the dead-letter stream.
pub(super) async fn replay(
    inner: &Arc<Inner>,
    query: &DeadLetterQuery,
) -> Result<usize, SpoolError> {
    let selected = list(inner, query).await?;
    let conn = inner.conn().await?;
    let now = SystemTime::now();
    for record in &selected {
        let delivery = NewDelivery {
            event: record.event.clone(),
            route: record.route.clone(),
            sink: record.sink.clone(),
            accepted_at: now,
            not_before: now,
            priority: crate::spool::Priority::default(),
            ordering_key: None,
        };
        inner.store(std::slice::from_ref(&delivery), false).await?;
        conn.dead
            .delete_message(record.id)
            .await
            .map_err(|e| unavailable(&e))?;
    }
    Ok(selected.len())
}

/// Deletes one dead letter; `false` when there was none with that id.
pub(super) async fn purge(inner: &Arc<Inner>, id: DeadLetterId) -> Result<bool, SpoolError> {
    let conn = inner.conn().await?;
    match conn.dead.delete_message(id).await {
        Ok(deleted) => Ok(deleted),
        Err(e) if matches!(e.kind(), DeleteMessageErrorKind::JetStream(_)) => Ok(false),
        Err(e) => Err(unavailable(&e)),
    }
}
