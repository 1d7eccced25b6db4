//! Saga state in NATS JetStream, for the `nats` spool: one KV bucket, `<stream>-sagas`
//! (named after the spool's `stream` prefix, so every daemon on that spool shares it), with
//! one key per instance whose value is the whole instance with its steps ([`record`]).
//!
//! Every transition reads its instance, applies the change and writes it back with
//! compare-and-set on the revision it read: of two daemons advancing, expiring or aborting
//! the same instance at once, one write wins and the other reads again and finds the step
//! no longer current (or the instance no longer running). So each transition is one CAS
//! write, and clearing what it asked for once that is stored is a second one.
//!
//! A daemon killed between a transition and storing what it asked for leaves it pending in
//! the record; every daemon's saga runner claims such transitions once they are older than
//! [`STRANDED_AFTER`] (a CAS write moving `pending_at`, so one daemon wins) and stores them.
//!
//! Each daemon follows the bucket with a watch into an [`index::Index`] for listings,
//! deadlines, retention and the active gauges.

mod index;
mod record;
#[cfg(test)]
mod tests;

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_nats::jetstream::kv::{self, Operation, UpdateErrorKind};
use async_nats::jetstream::stream;
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::{watch, OnceCell};
use tokio_util::sync::{CancellationToken, DropGuard};

use super::{
    millis, Abort, InstanceQuery, InstanceView, Next, Position, SagaError, StepResult, Tally,
};
use crate::config::{NatsSpoolConfig, SagaConfig};
use crate::event::Event;
use crate::spool::nats_context;
use crate::telemetry;
use index::Index;
use record::Record;

/// How old a pending transition must be before another daemon stores it in place of the
/// one that recorded it (which stores it within milliseconds unless it died).
pub(crate) const STRANDED_AFTER: Duration = Duration::from_secs(10);
/// Most times a transition reads again after losing a compare-and-set.
const MAX_CONFLICTS: usize = 64;
/// Wait before following the bucket again after its watch failed.
const REWATCH_AFTER: Duration = Duration::from_secs(1);
/// How long opening waits for the watch to read the bucket's instances.
const CATCH_UP: Duration = Duration::from_secs(10);

/// The JetStream saga store.
#[derive(Debug)]
pub(super) struct KvStore {
    config: NatsSpoolConfig,
    bucket: String,
    kv: OnceCell<kv::Store>,
    index: Arc<Index>,
    /// The last listing order handed out here, so this daemon's are unique.
    order: AtomicI64,
    stop: CancellationToken,
    _stop: DropGuard,
}

fn nats(error: impl std::error::Error + Send + Sync + 'static) -> SagaError {
    SagaError::Nats(Box::new(error))
}

impl KvStore {
    /// The store of the spool `config`; it connects on first use.
    pub(super) fn new(config: NatsSpoolConfig) -> Self {
        let stop = CancellationToken::new();
        Self {
            bucket: format!("{}-sagas", config.stream),
            config,
            kv: OnceCell::new(),
            index: Arc::default(),
            order: AtomicI64::new(0),
            _stop: stop.clone().drop_guard(),
            stop,
        }
    }

    /// The bucket, connecting, creating it and starting the watch on first use.
    async fn kv(&self) -> Result<&kv::Store, SagaError> {
        self.kv.get_or_try_init(|| self.connect()).await
    }

    async fn connect(&self) -> Result<kv::Store, SagaError> {
        let lost = Arc::new(watch::Sender::new(0));
        let js = nats_context(&self.config.connection, lost)
            .await
            .map_err(nats)?;
        // The bucket's stream as JetStream's KV layout has it (made here rather than by the
        // client's bucket creation, which reads account details older servers lay out
        // otherwise); two daemons creating it at once get the same stream.
        let stream = stream::Config {
            name: format!("KV_{}", self.bucket),
            description: Some("switchyard saga instances".to_owned()),
            subjects: vec![format!("$KV.{}.>", self.bucket)],
            max_messages_per_subject: 1,
            num_replicas: self.config.replicas,
            allow_rollup: true,
            deny_delete: true,
            allow_direct: true,
            discard: stream::DiscardPolicy::New,
            ..stream::Config::default()
        };
        js.get_or_create_stream(stream).await.map_err(nats)?;
        let store = js.get_key_value(&self.bucket).await.map_err(nats)?;
        let values = store.status().await.map_err(nats)?.values();
        let (caught_up, mut known) = watch::channel(values == 0);
        tokio::spawn(follow(
            store.clone(),
            self.index.clone(),
            caught_up,
            self.stop.clone(),
        ));
        // Listings and sweeps right after the start see the instances already there.
        let wait = known.wait_for(|caught_up| *caught_up);
        if tokio::time::timeout(CATCH_UP, wait).await.is_err() {
            tracing::warn!(bucket = %self.bucket, "The saga bucket is still being read");
        }
        Ok(store)
    }

    /// A listing order after every one handed out here: the start in microseconds.
    fn next_order(&self, now: SystemTime) -> i64 {
        let micros = now
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_micros();
        let micros = i64::try_from(micros).unwrap_or(i64::MAX);
        let previous = self
            .order
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |last| {
                Some(micros.max(last + 1))
            });
        previous.map_or(micros, |last| micros.max(last + 1))
    }

    /// Reads instance `id` with its revision.
    async fn read(&self, id: &str) -> Result<Option<(Record, u64)>, SagaError> {
        let entry = self.kv().await?.entry(id).await.map_err(nats)?;
        match entry {
            Some(e) if e.operation == Operation::Put => {
                Ok(Some((Record::parse(&e.value)?, e.revision)))
            }
            _ => Ok(None),
        }
    }

    /// Applies `change` to instance `id` and writes it back with compare-and-set, reading
    /// again after a lost race. `change` returns `None` to write nothing.
    async fn transact<T>(
        &self,
        id: &str,
        mut change: impl FnMut(&mut Record) -> Result<Option<T>, SagaError>,
    ) -> Result<Option<T>, SagaError> {
        let kv = self.kv().await?;
        for _ in 0..MAX_CONFLICTS {
            let Some((mut record, revision)) = self.read(id).await? else {
                return Ok(None);
            };
            let Some(answer) = change(&mut record)? else {
                return Ok(None);
            };
            let value = Bytes::from(serde_json::to_vec(&record).map_err(nats)?);
            match kv.update(id, value, revision).await {
                Ok(revision) => {
                    self.index.put(revision, &record);
                    return Ok(Some(answer));
                }
                Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => continue,
                Err(e) => return Err(nats(e)),
            }
        }
        Err(SagaError::Record(format!(
            "instance {id} changed {MAX_CONFLICTS} times while being updated"
        )))
    }

    /// Records what the transitions did in the metrics; the active gauges count every
    /// instance in the bucket, whichever daemon moved it.
    fn note(&self, tally: &Tally) {
        super::Sagas::note(tally);
        if !tally.started.is_empty() || !tally.ended.is_empty() {
            self.set_gauges();
        }
    }

    /// Sets the active gauges from the index.
    pub(super) fn set_gauges(&self) {
        for (saga, n) in self.index.active() {
            telemetry::sagas_active(&saga, n);
        }
    }

    pub(super) async fn start(
        &self,
        starts: Vec<(Arc<SagaConfig>, Arc<Event>)>,
        now: SystemTime,
    ) -> Result<Vec<Next>, SagaError> {
        let kv = self.kv().await?;
        let mut nexts = Vec::with_capacity(starts.len());
        let mut tally = Tally::default();
        for (config, trigger) in &starts {
            let Some((record, next)) = Record::start(config, trigger, now, self.next_order(now))
            else {
                continue;
            };
            let created = match serde_json::to_vec(&record) {
                Ok(value) => kv.create(&record.inst.id, value.into()).await.map_err(nats),
                Err(error) => Err(nats(error)),
            };
            let revision = match created {
                Ok(revision) => revision,
                Err(error) => {
                    // The request is refused: the instances it made must not start later
                    // (another daemon would store their first steps as stranded).
                    let made = nexts.into_iter().map(|n: Next| n.instance).collect();
                    if let Err(error) = self.discard(made).await {
                        tracing::warn!(%error, "Cannot remove the saga instances of a refused request");
                    }
                    return Err(error);
                }
            };
            self.index.put(revision, &record);
            tally.started.push(next.saga.clone());
            nexts.push(next);
        }
        self.note(&tally);
        Ok(nexts)
    }

    /// Deletes instances whose first step was not stored; tries every one, and answers the
    /// last failure.
    pub(super) async fn discard(&self, ids: Vec<String>) -> Result<(), SagaError> {
        let kv = self.kv().await?;
        let mut failed = Ok(());
        for id in ids {
            match kv.purge(&id).await {
                Ok(()) => self.index.remove(&id, u64::MAX),
                Err(error) => failed = Err(nats(error)),
            }
        }
        self.set_gauges();
        failed
    }

    pub(super) async fn is_current(&self, p: &Position) -> Result<bool, SagaError> {
        let found = self.read(&p.instance).await?;
        Ok(found.is_some_and(|(record, _)| record.is_current(p)))
    }

    pub(super) async fn advance(
        &self,
        p: &Position,
        result: &StepResult,
    ) -> Result<Option<Next>, SagaError> {
        let now = SystemTime::now();
        let mut tally = Tally::default();
        let next = self
            .transact(&p.instance, |record| {
                tally = Tally::default();
                record.advance(p, result, now, &mut tally)
            })
            .await?;
        self.note(&tally);
        Ok(next)
    }

    pub(super) async fn abort(&self, id: &str, reason: &str) -> Result<Abort, SagaError> {
        let now = SystemTime::now();
        let mut tally = Tally::default();
        let mut answer = Abort::NotFound;
        let started = self
            .transact(id, |record| {
                tally = Tally::default();
                match record.abort(reason, now, &mut tally)? {
                    Abort::Started(next) => Ok(Some(next)),
                    other => {
                        answer = other;
                        Ok(None)
                    }
                }
            })
            .await?;
        self.note(&tally);
        Ok(started.map_or(answer, Abort::Started))
    }

    /// Starts compensating the running instances past their deadline; a daemon that loses
    /// the race for one finds it compensating already and leaves it.
    pub(super) async fn expire(&self, now: SystemTime) -> Result<Vec<Next>, SagaError> {
        let mut nexts = Vec::new();
        for id in self.index.due(millis(now)) {
            let late =
                |r: &Record| r.inst.state == super::State::Running && r.deadline <= millis(now);
            let mut tally = Tally::default();
            let started = self
                .transact(&id, |record| {
                    tally = Tally::default();
                    if !late(record) {
                        return Ok(None);
                    }
                    match record.abort("deadline passed", now, &mut tally)? {
                        Abort::Started(next) => Ok(Some(*next)),
                        _ => Ok(None),
                    }
                })
                .await?;
            self.note(&tally);
            nexts.extend(started);
        }
        Ok(nexts)
    }

    pub(super) fn next_deadline(&self) -> Option<SystemTime> {
        self.index.next_deadline().map(super::time)
    }

    /// Claims the transitions left pending longer than [`STRANDED_AFTER`] (their daemon
    /// died before storing what they asked for), for this daemon to store.
    pub(super) async fn stranded(&self, now: SystemTime) -> Result<Vec<Next>, SagaError> {
        let before = millis(now) - i64::try_from(STRANDED_AFTER.as_millis()).unwrap_or(0);
        let mut nexts = Vec::new();
        for id in self.index.stranded(before) {
            let claimed = self
                .transact(&id, |record| {
                    if record.pending_at.is_none_or(|at| at > before) {
                        return Ok(None);
                    }
                    record.pending_at = Some(millis(now));
                    record.pending_next(now).map(Some)
                })
                .await?;
            nexts.extend(claimed);
        }
        Ok(nexts)
    }

    pub(super) async fn flushed(&self, done: Vec<(String, i64)>) -> Result<(), SagaError> {
        for (id, seq) in done {
            self.transact(&id, |record| Ok(record.flushed(seq).then_some(())))
                .await?;
        }
        Ok(())
    }

    /// Deletes instances that ended before `now - retention`. Two daemons sweeping at once
    /// delete each instance once: the delete expects the revision that ended it.
    pub(super) async fn sweep(
        &self,
        now: SystemTime,
        retention: Duration,
    ) -> Result<usize, SagaError> {
        let kv = self.kv().await?;
        let cutoff = millis(now.checked_sub(retention).unwrap_or(UNIX_EPOCH));
        let mut removed = 0;
        for (id, revision) in self.index.ended_before(cutoff) {
            // A failure (another daemon deleted it, or the view is behind) leaves it to the
            // watch and the next sweep.
            if kv.purge_expect_revision(&id, Some(revision)).await.is_ok() {
                self.index.remove(&id, u64::MAX);
                removed += 1;
            }
        }
        self.set_gauges();
        Ok(removed)
    }

    pub(super) async fn active(&self) -> Result<Vec<(String, u64)>, SagaError> {
        self.kv().await?;
        Ok(self.index.active())
    }

    pub(super) async fn list(&self, query: &InstanceQuery) -> Result<Vec<InstanceView>, SagaError> {
        self.kv().await?;
        Ok(self.index.list(query))
    }

    pub(super) async fn get(&self, id: &str) -> Result<Option<InstanceView>, SagaError> {
        Ok(self.read(id).await?.map(|(record, _)| record.view(true)))
    }
}

/// Follows the bucket into `index` until `stop`; `caught_up` turns true once the values
/// present at the start were read.
async fn follow(
    kv: kv::Store,
    index: Arc<Index>,
    caught_up: watch::Sender<bool>,
    stop: CancellationToken,
) {
    let mut from = 1;
    loop {
        let watched = tokio::select! {
            () = stop.cancelled() => return,
            watched = kv.watch_all_from_revision(from) => watched,
        };
        match watched {
            Ok(mut entries) => loop {
                let entry = tokio::select! {
                    () = stop.cancelled() => return,
                    entry = entries.next() => entry,
                };
                match entry {
                    Some(Ok(entry)) => {
                        from = entry.revision + 1;
                        take(&index, &entry);
                        if entry.delta == 0 {
                            caught_up.send_replace(true);
                        }
                    }
                    Some(Err(error)) => {
                        tracing::warn!(%error, "The watch on the saga bucket failed; watching again");
                        break;
                    }
                    None => break,
                }
            },
            Err(error) => tracing::warn!(%error, "Cannot watch the saga bucket; retrying"),
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(REWATCH_AFTER) => {}
        }
    }
}

/// Takes one watched entry into the index.
fn take(index: &Index, entry: &kv::Entry) {
    match entry.operation {
        Operation::Put => match Record::parse(&entry.value) {
            Ok(record) => index.put(entry.revision, &record),
            Err(error) => {
                tracing::warn!(%error, key = %entry.key, "An unreadable saga record; not listed");
            }
        },
        Operation::Delete | Operation::Purge => index.remove(&entry.key, entry.revision),
    }
}
