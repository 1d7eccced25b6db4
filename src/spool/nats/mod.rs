//! The NATS JetStream spool: any number of instances share one queue and compete for its
//! deliveries.
//!
//! Layout, for a `stream` prefix `P`:
//! - stream `P` (work-queue retention, discard new past `max_bytes`, duplicate window from
//!   `ingress.dedup_window`), subjects `P.d.>`, one message per delivery record on its
//!   sink's lane subject: `P.d.<sink token>.h` (high), `P.d.<sink token>` (normal) or
//!   `P.d.<sink token>.l` (low);
//! - one durable pull consumer per (sink, lane), filtered on the lane's subject and shared by
//!   all instances: `P-<sink token>_h`, `P-<sink token>` and `P-<sink token>_l`; explicit
//!   ack, redelivery after `ack_wait` without a sign of life (leased deliveries are kept
//!   alive while in flight);
//! - stream `P-dlq` (limits retention), subjects `P.dlq.<sink token>`: the dead-letter store,
//!   whose ids are its stream sequences.
//!
//! The normal lane keeps the subject and consumer of the layout before lanes, so a stream
//! written by an older version is read as it is: its deliveries are normal ones. An older
//! instance on the same stream leases the normal lane only, and when it starts it sets the
//! stream's subjects back to `P.d.*`, which refuses high and low publishes: upgrade every
//! instance.
//!
//! Lanes: each instance applies the lane picker of the other backends (`spool::lanes`) to
//! the leases it takes of a sink, fetching from the lanes in the order the picker chooses
//! and waiting only when every lane is empty (see `lanes`). With several instances each one
//! keeps its own picker, so 4:2:1 and the starvation bound hold for each instance's leases.
//!
//! Ordering: `ordering: subject` is not applied on this backend. The ordering key is kept in
//! the record, but the deliveries of one chain may be leased at the same time, by one
//! instance or several, and a retry is republished behind later deliveries. That costs only
//! the order: nothing is lost, delivered twice or refused because of it.
//!
//! Retries republish the updated record (attempts, last outcome, not-before) on the same lane
//! and then ack the old message, so the attempt count is exact; a leased record that is not
//! due yet is nak'ed with JetStream's delayed redelivery until it is. A request's deliveries
//! are stored all or none as far as JetStream allows (see `store`).
//!
//! Purging a sink purges the work stream of the sink's subjects. JetStream cannot spare the
//! messages leased at that moment, by this instance or another, so they are purged and
//! counted too. A delivery in flight then finishes its attempt: its ack succeeds and leaves
//! nothing behind (a dead letter is still recorded), and a failed attempt republishes its
//! retry, which is stored anew and counted in the sink's depth again.
//!
//! Every NATS failure is reported as [`SpoolError::Full`], so ingress answers 503 with
//! `Retry-After` and nothing accepted is lost.
//!
//! Imports `event`, `config` and the rest of `spool`.

mod conn;
mod dead;
mod depth;
mod lanes;
pub(super) mod record;
mod store;

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

use async_nats::jetstream::message::PublishMessage as Publish;
use async_nats::jetstream::message::{AckKind, Acker};
use async_nats::jetstream::{self, stream, Context};
use async_nats::Subject;
use dashmap::DashMap;
use futures_util::StreamExt;
use tokio::sync::OnceCell;
use tokio_util::sync::{CancellationToken, DropGuard};

use super::{Delivery, NewDelivery, Priority, PurgeError, SpoolError, FULL_RETRY_AFTER};
use crate::config::{NatsSpoolConfig, SpoolConfig};
use conn::Names;
use depth::Depths;
use lanes::SinkLanes;
use record::Record;

use conn::{client, context, NatsError};

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
    /// Each sink's lane consumers, created on first use.
    lanes: DashMap<String, Arc<SinkLanes>>,
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
            lanes: DashMap::new(),
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

    /// The sink's lanes, with their consumers created when missing.
    async fn lanes(self: &Arc<Self>, sink: &str) -> Result<Arc<SinkLanes>, SpoolError> {
        if let Some(lanes) = self.lanes.get(sink) {
            return Ok(lanes.clone());
        }
        let conn = self.conn().await?;
        let consumer = |priority| {
            let ack_wait = self.config.ack_wait;
            conn::consumer(&conn.work, &self.names, sink, priority, ack_wait)
        };
        let (high, normal, low) = tokio::try_join!(
            consumer(Priority::High),
            consumer(Priority::Normal),
            consumer(Priority::Low),
        )
        .map_err(|e| unavailable(&e))?;
        let lanes = Arc::new(SinkLanes::new([high, normal, low]));
        self.lanes.insert(sink.to_owned(), lanes.clone());
        Ok(lanes)
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
        let mut seen: HashMap<String, u64> = HashMap::new();
        let mut consumers = conn.work.consumers();
        while let Some(Ok(info)) = consumers.next().await {
            if let Some(sink) = inner.names.consumer_sink(&info.name) {
                *seen.entry(sink).or_default() += info.num_pending + info.num_ack_pending as u64;
            }
        }
        inner.depths.observed(&before, seen.into_iter().collect());
    }
}

impl NatsSpool {
    /// Publishes a request's deliveries in a task of its own: once begun, the publishing (or
    /// its undo) finishes even if the caller is dropped, so a request is stored all or nothing.
    async fn store(
        &self,
        deliveries: Vec<NewDelivery>,
        unique: bool,
    ) -> Result<(Vec<NewDelivery>, Vec<bool>), SpoolError> {
        let inner = self.inner.clone();
        let stored = tokio::spawn(async move {
            let duplicates = inner.store(&deliveries, unique).await?;
            Ok((deliveries, duplicates))
        });
        stored.await.map_err(|_| SpoolError::Closed)?
    }
}

impl super::Spool for NatsSpool {
    async fn put(&self, deliveries: Vec<NewDelivery>) -> Result<(), SpoolError> {
        self.store(deliveries, false).await.map(drop)
    }

    async fn put_unique(
        &self,
        deliveries: Vec<NewDelivery>,
        _window: Duration,
    ) -> Result<usize, SpoolError> {
        // The window is the work stream's duplicate window, set from `ingress.dedup_window`.
        let (deliveries, duplicates) = self.store(deliveries, true).await?;
        let mut events: HashMap<(&str, &str), bool> = HashMap::new();
        for (d, duplicate) in deliveries.iter().zip(duplicates) {
            *events.entry((&d.event.source, &d.event.id)).or_default() |= duplicate;
        }
        Ok(events.values().filter(|d| **d).count())
    }

    async fn lease(&self, sink: &str, max: usize) -> Result<Vec<Delivery>, SpoolError> {
        let max = max.max(1);
        let lanes = self.inner.lanes(sink).await?;
        loop {
            let leased = self.inner.take(lanes.messages(max).await?);
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
        let subject = self
            .inner
            .names
            .work_subject(&delivery.sink, delivery.priority);
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

    async fn purge_sink(&self, sink: &str) -> Result<usize, PurgeError> {
        let conn = self.inner.conn().await?;
        let mut purged = 0;
        for filter in self.inner.names.sink_filters(sink) {
            let purge = conn.work.purge().filter(filter).await;
            purged += purge.map_err(|e| unavailable(&e))?.purged;
        }
        let purged = i64::try_from(purged).unwrap_or(i64::MAX);
        self.inner.depths.add(sink, -purged);
        Ok(usize::try_from(purged).unwrap_or(usize::MAX))
    }

    fn depth(&self, sink: &str) -> usize {
        self.inner.depths.get(sink)
    }

    fn sink_depths(&self) -> Vec<(String, usize)> {
        self.inner.depths.all()
    }
}
