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
//! Acks: a delivered event's ack is a publish that does not wait for JetStream's answer, so
//! a delivery's permit is free again at once; an ack lost with its connection brings the
//! event back once after `ack_wait`. The acks after a retry's republish or a dead letter
//! wait for JetStream's confirmation (see `Settle` for why). While the client reconnects, an
//! ack is refused at once rather than queued.
//!
//! Purging a sink purges the work stream of the sink's subjects. JetStream cannot spare the
//! messages leased at that moment, by this instance or another, so they are purged and
//! counted too (a delivery acked a moment before, whose ack JetStream has not applied yet,
//! among them). A delivery in flight then finishes its attempt: its ack succeeds and leaves
//! nothing behind (a dead letter is still recorded), and a failed attempt republishes its
//! retry, which is stored anew and counted in the sink's depth again.
//!
//! A stream that refuses a publish for want of room is reported as [`SpoolError::Full`];
//! every other NATS failure (no connection, no answer in time, no JetStream) as
//! [`SpoolError::Unreachable`]. Ingress answers both with 503 and `Retry-After`, and nothing
//! accepted is lost.
//!
//! Outages: the client reconnects by itself, for as long as it takes, and everything here
//! carries on over the new connection. Every pull request has a deadline, so a request or an
//! answer lost with a connection (a server restart, a leader change, a network cut) ends the
//! lease with an error rather than holding it forever; a failed lease drops the sink's
//! consumers, which the next lease looks up (and creates, with the streams when those went
//! too) again. A failed ack, retry or dead letter ends the keep-alive of its delivery and of
//! every delivery leased before it, since their worker may have given up on them: JetStream
//! redelivers whatever is not acked after `ack_wait`. A settled delivery is no longer kept
//! alive either way, so an ack sent but lost on the way ends the same.
//!
//! Imports `event`, `config` and the rest of `spool`.

mod age;
mod conn;
mod dead;
mod depth;
mod lanes;
pub(super) mod record;
mod store;

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

use async_nats::connection::State;
use async_nats::jetstream::message::PublishMessage as Publish;
use async_nats::jetstream::message::{AckKind, Acker};
use async_nats::jetstream::{self, stream, Context, ErrorCode};
use async_nats::Subject;
use dashmap::DashMap;
use futures_util::StreamExt;
use tokio::sync::{watch, OnceCell};
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, DropGuard};

use super::{Delivery, NewDelivery, Priority, PurgeError, SpoolError, FULL_RETRY_AFTER};
use crate::config::{NatsConnection, NatsSpoolConfig, SpoolConfig};
use age::{Ages, AGE_REFRESH};
use conn::Names;
use depth::Depths;
use lanes::SinkLanes;
use record::Record;

use conn::{client, context, NatsError};

/// A JetStream context on a connection of its own to the servers of `connection`, with the
/// spool's timeouts (the saga store keeps its bucket beside the spool's streams).
pub(crate) async fn connect(
    connection: &NatsConnection,
    lost: Arc<watch::Sender<u64>>,
) -> Result<Context, NatsError> {
    Ok(context(client(connection, lost).await?))
}

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
    /// Leased messages by delivery id, kept alive until acked.
    leased: DashMap<u64, Lease>,
    /// Per sink, bumped by every failed settle of its deliveries; a lease of that sink taken
    /// before it is no longer kept alive (other sinks' leases are not touched).
    epochs: DashMap<Arc<str>, u64>,
    depths: Depths,
    /// Backlog ages and stored bytes, read every [`AGE_REFRESH`].
    ages: Ages,
    /// Bumped each time the client loses its connection.
    lost: Arc<watch::Sender<u64>>,
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

/// A leased message: where its acks go, and when and in which epoch of its sink it was taken.
struct Lease {
    reply: Subject,
    sink: Arc<str>,
    epoch: u64,
    at: Instant,
}

/// How a settle acks its message.
///
/// A delivered event's ack is only sent: losing it (with a connection, or with a JetStream
/// leader) costs one redelivery after `ack_wait` of an event already delivered, which
/// at-least-once delivery allows, and waiting for JetStream's answer would hold the
/// delivery's permit for a round trip. A retry's and a dead letter's acks are confirmed.
/// Each follows a publish that already stored the delivery's next state (the retry record,
/// the dead letter), so a lost ack there leaves the delivery queued twice: the old record
/// would be attempted again beside the retry, each copy counting its own attempts, or
/// attempted once past its last attempt. A confirmed ack reports that loss as a failed
/// settle (the worker logs it, the sink's earlier leases are abandoned), and once it
/// returns the old record has left the stream, so a purge or a depth read after it counts
/// it no more. These follow failed attempts, so their round trip costs a healthy sink
/// nothing.
#[derive(Debug, Clone, Copy)]
enum Settle {
    /// Waits until JetStream confirms the ack ([`conn::confirmed_ack`]).
    Confirmed,
    /// Hands the ack to the client and returns; refused at once while the client is
    /// reconnecting ([`conn::sent_ack`]).
    Sent,
}

/// A connected spool: the client, its context and the two streams.
struct Conn {
    client: async_nats::Client,
    js: Context,
    work: stream::Stream,
    dead: stream::Stream,
}

/// Logs a NATS failure and reports it as "full" when the stream refused for want of room,
/// as "unreachable" otherwise, so that senders retry later.
fn unavailable(error: &(dyn std::error::Error + 'static)) -> SpoolError {
    if out_of_room(error) {
        tracing::warn!(%error, "The JetStream stream is full; refusing work for now");
        return SpoolError::Full {
            retry_after: FULL_RETRY_AFTER,
        };
    }
    tracing::warn!(%error, "NATS unreachable; refusing work for now");
    SpoolError::Unreachable {
        store: "NATS",
        retry_after: FULL_RETRY_AFTER,
    }
}

/// Whether JetStream answered that it has no room (the stream's `max_bytes`, or the
/// server's or account's storage limits).
fn out_of_room(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(error) = next {
        if let Some(answer) = error.downcast_ref::<jetstream::Error>() {
            return matches!(
                answer.error_code(),
                ErrorCode::STREAM_STORE_FAILED
                    | ErrorCode::INSUFFICIENT_RESOURCES
                    | ErrorCode::STORAGE_RESOURCES_EXCEEDED
                    | ErrorCode::MEMORY_RESOURCES_EXCEEDED
                    | ErrorCode::ACCOUNT_RESOURCES_EXCEEDED
                    | ErrorCode::STREAM_MAX_STREAM_BYTES_EXCEEDED
            );
        }
        next = error.source();
    }
    false
}

impl NatsSpool {
    /// A spool that connects on first use; until NATS answers, puts are refused as
    /// unreachable.
    pub fn new(config: &NatsSpoolConfig, max_bytes: u64) -> Self {
        let stop = CancellationToken::new();
        let inner = Arc::new(Inner {
            config: config.clone(),
            max_bytes,
            names: Names::new(&config.stream),
            conn: OnceCell::new(),
            lanes: DashMap::new(),
            leased: DashMap::new(),
            epochs: DashMap::new(),
            depths: Depths::default(),
            ages: Ages::default(),
            lost: Arc::new(watch::Sender::new(0)),
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

    /// Whether the client is connected to a NATS server now. False before the first
    /// connection and while the client reconnects (a server restart, a network cut); puts
    /// are refused as unreachable meanwhile. For readiness checks.
    pub fn is_connected(&self) -> bool {
        self.inner.conn.get().is_some_and(Conn::connected)
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

impl Conn {
    /// Whether the client is connected now.
    fn connected(&self) -> bool {
        self.client.connection_state() == State::Connected
    }
}

impl Inner {
    async fn conn(self: &Arc<Self>) -> Result<&Conn, SpoolError> {
        self.conn
            .get_or_try_init(|| async {
                let client = client(&self.config.connection, self.lost.clone()).await?;
                let js = context(client.clone());
                let (work, dead) =
                    conn::streams(&js, &self.names, &self.config, self.max_bytes).await?;
                tokio::spawn(keep_alive(Arc::downgrade(self), self.stop.clone()));
                tokio::spawn(refresh_depths(Arc::downgrade(self), self.stop.clone()));
                Ok::<_, NatsError>(Conn {
                    client,
                    js,
                    work,
                    dead,
                })
            })
            .await
            .map_err(|e| unavailable(&e))
    }

    /// The connection, refused at once while the client is reconnecting: what is sent
    /// meanwhile waits for the reconnection, past any request's timeout.
    async fn live(self: &Arc<Self>) -> Result<&Conn, SpoolError> {
        let conn = self.conn().await?;
        match conn.connected() {
            true => Ok(conn),
            false => Err(unavailable(&NatsError::NotConnected)),
        }
    }

    /// The sink's lanes, with their consumers created when missing.
    async fn lanes(self: &Arc<Self>, sink: &str) -> Result<Arc<SinkLanes>, SpoolError> {
        if let Some(lanes) = self.lanes.get(sink) {
            return Ok(lanes.clone());
        }
        let conn = self.live().await?;
        let consumers = || async {
            let consumer = |priority| {
                let ack_wait = self.config.ack_wait;
                conn::consumer(&conn.work, &self.names, sink, priority, ack_wait)
            };
            tokio::try_join!(
                consumer(Priority::High),
                consumer(Priority::Normal),
                consumer(Priority::Low),
            )
        };
        let (high, normal, low) = match consumers().await {
            Ok(consumers) => consumers,
            Err(error) => {
                // The streams may have gone with the server's store: set them up again.
                tracing::debug!(%error, sink, "Setting up the streams again");
                conn::streams(&conn.js, &self.names, &self.config, self.max_bytes)
                    .await
                    .map_err(|e| unavailable(&e))?;
                consumers().await.map_err(|e| unavailable(&e))?
            }
        };
        let lanes = Arc::new(SinkLanes::new([high, normal, low], self.lost.subscribe()));
        self.lanes.insert(sink.to_owned(), lanes.clone());
        Ok(lanes)
    }

    /// Acks a leased message as `how` says; a delivery not leased here is ignored.
    async fn settle(self: &Arc<Self>, delivery: &Delivery, how: Settle) -> Result<(), SpoolError> {
        let Some((_, lease)) = self.leased.remove(&delivery.id) else {
            return Ok(());
        };
        let acked = async {
            match how {
                Settle::Confirmed => {
                    let conn = self.conn().await?;
                    let acked = conn::confirmed_ack(&conn.client, lease.reply).await;
                    acked.map_err(|e| unavailable(&e))
                }
                Settle::Sent => {
                    let conn = self.live().await?;
                    let acked = conn::sent_ack(&conn.client, lease.reply).await;
                    acked.map_err(|e| unavailable(&e))
                }
            }
        };
        let acked = acked.await;
        if acked.is_err() {
            self.abandon(delivery);
        }
        acked
    }

    /// After a failed settle of `delivery`: stops keeping it and every earlier lease of its
    /// sink alive. Their worker may have given up on them (it stops at the first failure of
    /// a batch), so they are left to JetStream, which redelivers what is not acked after
    /// `ack_wait`; an ack that does come still counts.
    fn abandon(&self, delivery: &Delivery) {
        self.leased.remove(&delivery.id);
        *self.epochs.entry(delivery.sink.clone()).or_default() += 1;
    }

    /// The current epoch of `sink`'s leases.
    fn epoch(&self, sink: &str) -> u64 {
        self.epochs.get(sink).map_or(0, |e| *e)
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
                        let sink = d.sink.clone();
                        let epoch = self.epoch(&sink);
                        let at = Instant::now();
                        let lease = Lease {
                            reply,
                            sink,
                            epoch,
                            at,
                        };
                        self.leased.insert(seq, lease);
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

/// How long a lease that is no longer kept alive (see [`Inner::abandon`]) is remembered for a
/// late ack, in `ack_wait`s.
const ABANDONED_KEPT: u32 = 20;

/// Tells JetStream that leased deliveries are still in flight, so that a slow sink does not
/// get them redelivered to another instance. Leases taken before the last failed settle are
/// not kept alive, and forgotten after [`ABANDONED_KEPT`] `ack_wait`s.
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
        let forget = inner.config.ack_wait * ABANDONED_KEPT;
        let current = |lease: &Lease| lease.epoch == inner.epoch(&lease.sink);
        inner
            .leased
            .retain(|_, lease| current(lease) || lease.at.elapsed() < forget);
        let replies: Vec<Subject> = inner
            .leased
            .iter()
            .filter(|lease| current(lease))
            .map(|lease| lease.reply.clone())
            .collect();
        for reply in replies {
            let acker = Acker::new(conn.js.clone(), Some(reply));
            if let Err(error) = acker.ack_with(AckKind::Progress).await {
                tracing::debug!(%error, "Keeping a lease alive failed");
            }
        }
    }
}

/// Reads every consumer's pending and unacknowledged counts into the depths, and every
/// [`AGE_REFRESH`] the backlog ages and the stream's size.
async fn refresh_depths(inner: Weak<Inner>, stop: CancellationToken) {
    let mut ages_read: Option<Instant> = None;
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
        // Acks do not wait for JetStream (see `Settle`), but every ack counted in `before`
        // was queued on this connection ahead of the reads below, and the server takes a
        // connection's messages in order: a sink unchanged since is not read back with the
        // deliveries it has acked (unless JetStream is still applying one; the next refresh
        // corrects that).
        let mut seen: HashMap<String, u64> = HashMap::new();
        let mut consumers = conn.work.consumers();
        while let Some(Ok(info)) = consumers.next().await {
            if let Some(sink) = inner.names.consumer_sink(&info.name) {
                *seen.entry(sink).or_default() += info.num_pending + info.num_ack_pending as u64;
            }
        }
        inner.depths.observed(&before, seen.into_iter().collect());
        if ages_read.is_none_or(|at| at.elapsed() >= AGE_REFRESH) {
            ages_read = Some(Instant::now());
            let sinks = inner.depths.all().into_iter().map(|(sink, _)| sink);
            let names = &inner.names;
            inner.ages.refresh(&conn.work, names, sinks.collect()).await;
        }
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
            let messages = match lanes.messages(max).await {
                Ok(messages) => messages,
                Err(error) => {
                    // The next lease looks the consumers up again: they may have to be
                    // created anew after the server lost them. The caller backs off.
                    self.inner
                        .lanes
                        .remove_if(sink, |_, l| Arc::ptr_eq(l, &lanes));
                    return Err(error);
                }
            };
            let leased = self.inner.take(messages);
            if !leased.is_empty() {
                return Ok(leased);
            }
        }
    }

    /// Naks the message with no delay, from a task: JetStream offers it again at once, and
    /// its delivery count says nothing about attempts (the record carries those).
    fn release(&self, delivery: Delivery) {
        let Some((_, lease)) = self.inner.leased.remove(&delivery.id) else {
            return;
        };
        let (Some(conn), Ok(runtime)) =
            (self.inner.conn.get(), tokio::runtime::Handle::try_current())
        else {
            // Without a connection or a runtime the lease ends with `ack_wait`, unrenewed.
            return;
        };
        let acker = Acker::new(conn.js.clone(), Some(lease.reply));
        runtime.spawn(async move {
            if let Err(error) = acker.ack_with(AckKind::Nak(None)).await {
                tracing::debug!(%error, "Releasing a lease to JetStream failed");
            }
        });
    }

    fn health(&self) -> Result<(), String> {
        let Some(conn) = self.inner.conn.get() else {
            return Err("NATS is unreachable: not connected yet".to_owned());
        };
        match conn.js.client().connection_state() {
            async_nats::connection::State::Connected => Ok(()),
            state => Err(format!("NATS is unreachable: connection is {state}")),
        }
    }

    async fn ack(&self, delivery: &Delivery) -> Result<(), SpoolError> {
        self.inner.settle(delivery, Settle::Sent).await?;
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
        if let Err(refused) = self.inner.publish(vec![(subject, publish)]).await {
            self.inner.abandon(&delivery);
            return Err(refused.into());
        }
        self.inner.settle(&delivery, Settle::Confirmed).await
    }

    async fn dead_letter(
        &self,
        delivery: &Delivery,
        info: super::DeadLetter,
        forward: Option<NewDelivery>,
    ) -> Result<(), SpoolError> {
        let done = dead::dead_letter(&self.inner, delivery, &info, forward).await;
        if done.is_err() {
            self.inner.abandon(delivery);
        }
        done
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

    /// As read at the last refresh (see `age`); `None` once the sink's depth is 0.
    fn oldest(&self, sink: &str) -> Option<SystemTime> {
        if self.inner.depths.get(sink) == 0 {
            return None;
        }
        self.inner.ages.oldest(sink)
    }

    fn tells_oldest(&self) -> bool {
        true
    }

    fn used_bytes(&self) -> Option<u64> {
        self.inner.ages.bytes()
    }
}
