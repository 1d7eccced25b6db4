//! The NATS JetStream spool: any number of instances share one queue and compete for its
//! deliveries.
//!
//! Layout, for a `stream` prefix `P`:
//! - stream `P` (work-queue retention, discard new past `max_bytes`, duplicate window from
//!   `ingress.dedup_window`), subjects `P.d.<sink token>`, one message per delivery record;
//! - one durable pull consumer `P-<sink token>` per sink, explicit ack, redelivery after
//!   `ack_wait` without a sign of life (leased deliveries are kept alive while in flight);
//! - stream `P-dlq` (limits retention), subjects `P.dlq.<sink token>`: the dead-letter store,
//!   whose ids are its stream sequences.
//!
//! Retries republish the updated record (attempts, last outcome, not-before) and then ack the
//! old message, so the attempt count is exact; a leased record that is not due yet is nak'ed
//! with JetStream's delayed redelivery until it is. Every NATS failure is reported as
//! [`SpoolError::Full`], so ingress answers 503 with `Retry-After` and nothing accepted is lost.
//!
//! Imports `event`, `config` and the rest of `spool`.

mod conn;
mod dead;
mod depth;
mod record;

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

use async_nats::jetstream::consumer::PullConsumer;
use async_nats::jetstream::message::PublishMessage as Publish;
use async_nats::jetstream::message::{AckKind, Acker};
use async_nats::jetstream::{self, stream, Context};
use async_nats::Subject;
use dashmap::DashMap;
use futures_util::StreamExt;
use tokio::sync::OnceCell;
use tokio_util::sync::{CancellationToken, DropGuard};

use super::{Delivery, NewDelivery, SpoolError, FULL_RETRY_AFTER};
use crate::config::{NatsSpoolConfig, SpoolConfig};
use conn::Names;
use depth::Depths;
use record::Record;

use conn::{client, context, NatsError};

/// Longest single pull request while no delivery is waiting.
const LONG_POLL: Duration = Duration::from_secs(5);
/// How often depths are read from JetStream.
const DEPTH_REFRESH: Duration = Duration::from_secs(1);

/// The JetStream backend.
#[derive(Debug)]
pub struct NatsSpool {
    inner: Arc<Inner>,
    _stop: DropGuard,
}

struct Inner {
    config: NatsSpoolConfig,
    max_bytes: u64,
    names: Names,
    conn: OnceCell<Conn>,
    consumers: DashMap<String, PullConsumer>,
    /// Reply subjects of leased messages by delivery id, kept alive until acked.
    leased: DashMap<u64, Subject>,
    depths: Depths,
    stop: CancellationToken,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsSpool")
            .field("stream", &self.config.stream)
            .field("leased", &self.leased.len())
            .finish_non_exhaustive()
    }
}

/// A connected spool: the context and its two streams.
struct Conn {
    js: Context,
    work: stream::Stream,
    dead: stream::Stream,
}

/// Logs a NATS failure and reports it as "full", so that senders retry later.
fn unavailable(error: &dyn std::error::Error) -> SpoolError {
    tracing::warn!(%error, "NATS is unavailable; refusing work for now");
    SpoolError::Full {
        retry_after: FULL_RETRY_AFTER,
    }
}

impl NatsSpool {
    /// A spool that connects on first use; until NATS answers, puts are refused as full.
    pub fn new(config: &NatsSpoolConfig, max_bytes: u64) -> Self {
        let stop = CancellationToken::new();
        let inner = Arc::new(Inner {
            config: config.clone(),
            max_bytes,
            names: Names::new(&config.stream),
            conn: OnceCell::new(),
            consumers: DashMap::new(),
            leased: DashMap::new(),
            depths: Depths::default(),
            stop: stop.clone(),
        });
        Self {
            inner,
            _stop: stop.drop_guard(),
        }
    }

    /// The backend `config` names, connecting in the background when a runtime is running.
    pub fn open(config: &SpoolConfig) -> Self {
        let spool = Self::new(&config.nats.clone().unwrap_or_default(), config.max_bytes);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let inner = spool.inner.clone();
            // Failures are logged by `conn` and retried by the first operation.
            runtime.spawn(async move { inner.conn().await.map(|_| ()) });
        }
        spool
    }

    /// The configured stream prefix.
    pub fn stream_prefix(&self) -> &str {
        &self.inner.config.stream
    }

    /// Connects now (otherwise the first operation does).
    pub async fn connect(&self) -> Result<(), SpoolError> {
        self.inner.conn().await.map(|_| ())
    }

    /// Deletes both streams and everything in them (tests and teardown).
    pub async fn delete_streams(&self) -> Result<(), SpoolError> {
        let conn = self.inner.conn().await?;
        for name in [
            self.inner.names.work_stream().to_owned(),
            self.inner.names.dead_stream(),
        ] {
            conn.js
                .delete_stream(&name)
                .await
                .map_err(|e| unavailable(&e))?;
        }
        Ok(())
    }
}

impl Inner {
    async fn conn(self: &Arc<Self>) -> Result<&Conn, SpoolError> {
        self.conn
            .get_or_try_init(|| async {
                let client = client(&self.config.connection).await?;
                let js = context(client);
                let (work, dead) =
                    conn::streams(&js, &self.names, &self.config, self.max_bytes).await?;
                tokio::spawn(keep_alive(Arc::downgrade(self), self.stop.clone()));
                tokio::spawn(refresh_depths(Arc::downgrade(self), self.stop.clone()));
                Ok::<_, NatsError>(Conn { js, work, dead })
            })
            .await
            .map_err(|e| unavailable(&e))
    }

    async fn consumer(self: &Arc<Self>, sink: &str) -> Result<PullConsumer, SpoolError> {
        if let Some(c) = self.consumers.get(sink) {
            return Ok(c.clone());
        }
        let conn = self.conn().await?;
        let ack_wait = self.config.ack_wait;
        let consumer = conn::consumer(&conn.work, &self.names, sink, ack_wait)
            .await
            .map_err(|e| unavailable(&e))?;
        self.consumers.insert(sink.to_owned(), consumer.clone());
        Ok(consumer)
    }

    /// Publishes records to the work stream; `Ok` once JetStream acknowledged all of them,
    /// with whether each was a duplicate.
    async fn publish(
        self: &Arc<Self>,
        records: Vec<(String, Publish)>,
    ) -> Result<Vec<bool>, SpoolError> {
        let conn = self.conn().await?;
        let mut pending = Vec::with_capacity(records.len());
        for (subject, publish) in records {
            let ack = conn.js.send_publish(subject, publish).await;
            pending.push(ack.map_err(|e| unavailable(&e))?);
        }
        let mut duplicates = Vec::with_capacity(pending.len());
        for ack in pending {
            duplicates.push(ack.await.map_err(|e| unavailable(&e))?.duplicate);
        }
        Ok(duplicates)
    }

    /// Stores new deliveries, each with a message id when `unique`; returns which were
    /// duplicates.
    async fn store(
        self: &Arc<Self>,
        deliveries: &[NewDelivery],
        unique: bool,
    ) -> Result<Vec<bool>, SpoolError> {
        let mut sinks: Vec<&str> = deliveries.iter().map(|d| &*d.sink).collect();
        sinks.sort_unstable();
        sinks.dedup();
        for sink in sinks {
            self.consumer(sink).await?;
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
                (self.names.work_subject(&d.sink), publish)
            })
            .collect();
        let duplicates = self.publish(records).await?;
        for (d, duplicate) in deliveries.iter().zip(&duplicates) {
            if !duplicate {
                self.depths.add(&d.sink, 1);
            }
        }
        Ok(duplicates)
    }

    /// Acks a leased message; a delivery not leased here is ignored.
    async fn settle(self: &Arc<Self>, delivery: &Delivery) -> Result<(), SpoolError> {
        let Some((_, reply)) = self.leased.remove(&delivery.id) else {
            return Ok(());
        };
        let conn = self.conn().await?;
        let acker = Acker::new(conn.js.clone(), Some(reply));
        acker.double_ack().await.map_err(|e| unavailable(&*e))
    }

    /// Turns fetched messages into leases; messages not due yet go back with a delay.
    fn take(&self, messages: Vec<jetstream::Message>) -> Vec<Delivery> {
        let now = SystemTime::now();
        let mut out = Vec::with_capacity(messages.len());
        let mut later = Vec::new();
        for message in messages {
            let Ok(seq) = message.info().map(|i| i.stream_sequence) else {
                continue;
            };
            // `split` moves the reply subject into the acker; the lease needs its own copy.
            let reply = message.reply.clone();
            let (message, acker) = message.split();
            let record = match Record::parse(&message.payload) {
                Ok(record) => record,
                Err(error) => {
                    tracing::error!(%error, seq, "Unreadable spool record; dropped");
                    later.push((acker, AckKind::Term));
                    continue;
                }
            };
            if let Ok(wait) = record.not_before().duration_since(now) {
                later.push((acker, AckKind::Nak(Some(wait))));
                continue;
            }
            match record.into_delivery(seq) {
                Ok(d) => {
                    if let Some(reply) = reply {
                        self.leased.insert(seq, reply);
                    }
                    out.push(d);
                }
                Err(error) => {
                    tracing::error!(%error, seq, "Unreadable event in spool record; dropped");
                    later.push((acker, AckKind::Term));
                }
            }
        }
        if !later.is_empty() {
            // Sent from a task so that taking a lease never awaits between the fetch and
            // the return; a cancelled lease then loses nothing it had taken.
            tokio::spawn(async move {
                for (acker, kind) in later {
                    if let Err(error) = acker.ack_with(kind).await {
                        tracing::debug!(%error, "Returning a message to JetStream failed");
                    }
                }
            });
        }
        out
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

/// Fetches what is waiting, up to `max`; with `wait`, holds the request open until at
/// least one message comes or `wait` passes.
async fn fetch(
    consumer: &PullConsumer,
    max: usize,
    wait: Option<Duration>,
) -> Result<Vec<jetstream::Message>, SpoolError> {
    let mut batch = match wait {
        Some(wait) => {
            consumer
                .batch()
                .max_messages(1)
                .expires(wait)
                .messages()
                .await
        }
        None => consumer.fetch().max_messages(max).messages().await,
    }
    .map_err(|e| unavailable(&e))?;
    let mut out = Vec::new();
    while let Some(message) = batch.next().await {
        out.push(message.map_err(|e| unavailable(&*e))?);
    }
    Ok(out)
}

/// Tells JetStream that leased deliveries are still in flight, so that a slow sink does not
/// get them redelivered to another instance.
async fn keep_alive(inner: Weak<Inner>, stop: CancellationToken) {
    let Some(period) = inner.upgrade().map(|i| i.config.ack_wait / 3) else {
        return;
    };
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(period) => {}
        }
        let Some(inner) = inner.upgrade() else { return };
        let Some(conn) = inner.conn.get() else {
            continue;
        };
        let replies: Vec<Subject> = inner.leased.iter().map(|r| r.value().clone()).collect();
        for reply in replies {
            let acker = Acker::new(conn.js.clone(), Some(reply));
            if let Err(error) = acker.ack_with(AckKind::Progress).await {
                tracing::debug!(%error, "Keeping a lease alive failed");
            }
        }
    }
}

/// Reads every consumer's pending and unacknowledged counts into the depths.
async fn refresh_depths(inner: Weak<Inner>, stop: CancellationToken) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(DEPTH_REFRESH) => {}
        }
        let Some(inner) = inner.upgrade() else { return };
        let Some(conn) = inner.conn.get() else {
            continue;
        };
        let before = inner.depths.changes();
        let mut seen = Vec::new();
        let mut consumers = conn.work.consumers();
        while let Some(Ok(info)) = consumers.next().await {
            let sink = inner
                .names
                .consumer_token(&info.name)
                .and_then(record::sink_of);
            if let Some(sink) = sink {
                seen.push((sink, info.num_pending + info.num_ack_pending as u64));
            }
        }
        inner.depths.observed(&before, seen);
    }
}

impl super::Spool for NatsSpool {
    async fn put(&self, deliveries: Vec<NewDelivery>) -> Result<(), SpoolError> {
        self.inner.store(&deliveries, false).await.map(|_| ())
    }

    async fn put_unique(
        &self,
        deliveries: Vec<NewDelivery>,
        _window: Duration,
    ) -> Result<usize, SpoolError> {
        // The window is the work stream's duplicate window, set from `ingress.dedup_window`.
        let duplicates = self.inner.store(&deliveries, true).await?;
        let mut events: HashMap<(&str, &str), bool> = HashMap::new();
        for (d, duplicate) in deliveries.iter().zip(duplicates) {
            *events.entry((&d.event.source, &d.event.id)).or_default() |= duplicate;
        }
        Ok(events.values().filter(|d| **d).count())
    }

    async fn lease(&self, sink: &str, max: usize) -> Result<Vec<Delivery>, SpoolError> {
        let max = max.max(1);
        let consumer = self.inner.consumer(sink).await?;
        loop {
            let mut messages = fetch(&consumer, max, None).await?;
            if messages.is_empty() {
                messages = fetch(&consumer, 1, Some(LONG_POLL)).await?;
                if !messages.is_empty() && max > 1 {
                    messages.extend(fetch(&consumer, max - 1, None).await?);
                }
            }
            let leased = self.inner.take(messages);
            if !leased.is_empty() {
                return Ok(leased);
            }
        }
    }

    async fn ack(&self, delivery: &Delivery) -> Result<(), SpoolError> {
        self.inner.settle(delivery).await?;
        self.inner.depths.add(&delivery.sink, -1);
        Ok(())
    }

    async fn nack(&self, delivery: Delivery, not_before: SystemTime) -> Result<(), SpoolError> {
        let publish = Publish::build()
            .payload(Record::retry(&delivery, not_before).to_bytes())
            .message_id(format!("retry-{}", delivery.id));
        let subject = self.inner.names.work_subject(&delivery.sink);
        self.inner.publish(vec![(subject, publish)]).await?;
        self.inner.settle(&delivery).await
    }

    async fn dead_letter(
        &self,
        delivery: &Delivery,
        info: super::DeadLetter,
        forward: Option<NewDelivery>,
    ) -> Result<(), SpoolError> {
        dead::dead_letter(&self.inner, delivery, &info, forward).await
    }

    async fn dead_letters(
        &self,
        query: &super::DeadLetterQuery,
    ) -> Result<Vec<super::DeadLetterRecord>, SpoolError> {
        dead::list(&self.inner, query).await
    }

    async fn replay_dead_letters(
        &self,
        query: &super::DeadLetterQuery,
    ) -> Result<usize, SpoolError> {
        dead::replay(&self.inner, query).await
    }

    async fn purge_dead_letter(&self, id: super::DeadLetterId) -> Result<bool, SpoolError> {
        dead::purge(&self.inner, id).await
    }

    fn depth(&self, sink: &str) -> usize {
        self.inner.depths.get(sink)
    }

    fn sink_depths(&self) -> Vec<(String, usize)> {
        self.inner.depths.all()
    }
}
