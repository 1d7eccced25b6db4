//! Sagas: multi-step workflows whose steps are ordinary spool deliveries, with
//! compensations run in reverse order when a step is dead-lettered, the deadline passes or
//! an operator aborts the instance.
//!
//! Imports `config`, `event`, `spool` and `telemetry`. This module owns saga state the way the spool owns
//! deliveries: each instance and its step history live in a SQLite store ([`store`]) —
//! `<spool.path>/sagas.db` for the embedded spool, in memory for the memory spool — or, for
//! the nats spool, in a JetStream KV bucket shared by every daemon on it ([`jetstream`]). The
//! accept side starts instances ([`Sagas::start`]); the delivery side reports each step's
//! outcome ([`Sagas::advance`]) and puts what the store asks for.
//!
//! Why no step is skipped across a crash: a transition records the instance's new state and
//! the delivery it needs next (`pending`) in one commit, before the step delivery that caused
//! it is acked. The pending delivery is then put into the spool and cleared; a crash between
//! the two leaves it pending, and it is put again at start ([`Sagas::pending`]). A step may
//! so be delivered twice, never not at all: the second outcome of a step that is no longer
//! current is ignored ([`Sagas::is_current`]), and a delivery of such a step is acked
//! without an attempt.

mod events;
mod jetstream;
mod store;
#[cfg(test)]
mod tests;
mod transition;
mod views;

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::config::{SagaConfig, SpoolBackend, SpoolConfig};
use crate::event::{Event, ExtensionValue};
use crate::spool::{NewDelivery, Priority};
use crate::telemetry;

pub use views::{InstanceQuery, InstanceView, StepView};

/// The extension carrying the saga instance id on every event a step or compensation receives.
pub const SAGA_EXTENSION: &str = "switchyardsaga";
/// The extension carrying the step's name.
pub const STEP_EXTENSION: &str = "switchyardsagastep";
/// The extension marking a compensation (`true`).
pub const COMPENSATE_EXTENSION: &str = "switchyardcompensate";
/// Route names of saga deliveries start with this (`saga:order`); no route of the file is
/// named so, since route names cannot be looked up by it.
pub const ROUTE_PREFIX: &str = "saga:";
/// The type of the event a compensation sink receives.
pub const COMPENSATE_TYPE: &str = "switchyard.saga.compensate";
/// Most instances one listing page holds.
pub const MAX_LIST_LIMIT: usize = 1000;

/// The state of an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Steps are running.
    Running,
    /// Compensations are running.
    Compensating,
    /// Every step was delivered.
    Completed,
    /// A step failed (or the deadline passed, or it was aborted) and every compensation was
    /// delivered.
    Compensated,
    /// Compensating, and at least one compensation was dead-lettered.
    Failed,
}

impl State {
    /// All states, for parsing.
    pub const ALL: [Self; 5] = [
        Self::Running,
        Self::Compensating,
        Self::Completed,
        Self::Compensated,
        Self::Failed,
    ];

    /// Its name (`running`, …).
    pub fn name(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Compensating => "compensating",
            Self::Completed => "completed",
            Self::Compensated => "compensated",
            Self::Failed => "failed",
        }
    }

    /// Parses a name.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.name() == name)
    }

    /// True for the end states.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Completed | Self::Compensated | Self::Failed)
    }
}

/// Whether a delivery runs a step or undoes one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// A step.
    Forward,
    /// A compensation.
    Compensate,
}

impl Phase {
    /// Its name in the store and the API.
    pub fn name(self) -> &'static str {
        match self {
            Self::Forward => "step",
            Self::Compensate => "compensation",
        }
    }
}

/// A saga's definition as an instance keeps it from its start (a reload does not change it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Definition {
    /// The saga's name.
    pub name: String,
    /// The whole-instance deadline, in milliseconds from its start.
    pub timeout_ms: u64,
    /// The steps in order.
    pub steps: Vec<StepDefinition>,
}

/// One step of a [`Definition`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepDefinition {
    /// Its name.
    pub name: String,
    /// Its sink.
    pub to: String,
    /// The sink that undoes it.
    pub compensate: Option<String>,
}

impl Definition {
    /// The definition of a configured saga.
    pub fn of(config: &SagaConfig) -> Self {
        Self {
            name: config.name.clone(),
            timeout_ms: u64::try_from(config.timeout.as_millis()).unwrap_or(u64::MAX),
            steps: config
                .steps
                .iter()
                .map(|s| StepDefinition {
                    name: s.name.clone(),
                    to: s.to.clone(),
                    compensate: s.compensate.clone(),
                })
                .collect(),
        }
    }
}

/// Where a delivery stands in a saga, read from its route and its event's extensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    /// The instance id.
    pub instance: String,
    /// The step's name.
    pub step: String,
    /// Step or compensation.
    pub phase: Phase,
}

impl Position {
    /// The position of a delivery through `route` of `event`; `None` for a delivery that is
    /// not part of a saga.
    pub fn of(route: &str, event: &Event) -> Option<Self> {
        if !route.starts_with(ROUTE_PREFIX) {
            return None;
        }
        let text = |name| match event.extension(name) {
            Some(ExtensionValue::String(s)) => Some(s.clone()),
            _ => None,
        };
        let phase = match event.extension(COMPENSATE_EXTENSION) {
            Some(ExtensionValue::Bool(true)) => Phase::Compensate,
            Some(ExtensionValue::String(s)) if s == "true" => Phase::Compensate,
            _ => Phase::Forward,
        };
        Some(Self {
            instance: text(SAGA_EXTENSION)?,
            step: text(STEP_EXTENSION)?,
            phase,
        })
    }
}

/// How a step's delivery ended.
#[derive(Debug, Clone)]
pub enum StepOutcome {
    /// The sink confirmed it, with the event it replied, if any.
    Delivered(Option<Box<Event>>),
    /// It was dead-lettered, for this reason (Event Grid's `deadLetterReason`).
    DeadLettered(String),
}

/// A step delivery's outcome with its attempt count and last HTTP status.
#[derive(Debug, Clone)]
pub struct StepResult {
    /// How it ended.
    pub outcome: StepOutcome,
    /// Attempts made.
    pub attempts: u32,
    /// The last HTTP status, when there was one.
    pub status: Option<u16>,
}

/// What the caller must do after a transition, in this order: put `deliveries` into the
/// spool, accept `finished` as an event, then call [`Sagas::flushed`] with `seq`.
#[derive(Debug, Clone, Default)]
pub struct Next {
    /// The instance.
    pub instance: String,
    /// Its saga's name.
    pub saga: String,
    /// The transition's number: [`Sagas::flushed`] clears only what this one asked for.
    pub seq: i64,
    /// The step or compensation to deliver next.
    pub deliveries: Vec<NewDelivery>,
    /// The outcome event of an instance that ended.
    pub finished: Option<Event>,
}

/// What transitions did, for the metrics.
#[derive(Debug, Clone, Default)]
pub(crate) struct Tally {
    /// (saga, outcome) of instances that ended.
    pub(crate) ended: Vec<(String, State)>,
    /// (saga, step, seconds) of steps and compensations that finished.
    pub(crate) steps: Vec<(String, String, f64)>,
    /// Sagas whose instances started.
    pub(crate) started: Vec<String>,
}

/// The answer to an abort.
#[derive(Debug, Clone)]
pub enum Abort {
    /// No instance has that id.
    NotFound,
    /// The instance is already compensating or ended, in this state.
    Already(State),
    /// Compensation started.
    Started(Box<Next>),
}

/// Why the saga store failed.
#[derive(Debug, thiserror::Error)]
pub enum SagaError {
    /// SQLite failed.
    #[error("saga store: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A stored record does not read back (a damaged store).
    #[error("saga store: unreadable record: {0}")]
    Record(String),
    /// The blocking task running the query was lost.
    #[error("saga store: the query task ended abnormally")]
    Task,
    /// The commit shared by several steps failed (each of them gets this).
    #[error(transparent)]
    Shared(Arc<Self>),
    /// A JetStream request of the nats saga store failed.
    #[error("saga store: JetStream request failed")]
    Nats(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// A step outcome waiting for the next group commit, with where its answer goes.
type Waiting = (
    Position,
    StepResult,
    tokio::sync::oneshot::Sender<Result<Option<Next>, SagaError>>,
);

/// Where instances are kept.
#[derive(Debug, Clone)]
enum Backend {
    /// SQLite, in a file or in memory; this process is its only user.
    Sqlite(Arc<Mutex<store::Store>>),
    /// A JetStream KV bucket shared by every daemon on the nats spool.
    JetStream(Arc<jetstream::KvStore>),
}

/// What the last process left pending, until the saga runner takes it.
type Left = Option<Result<Vec<Next>, SagaError>>;

/// The saga store and the signal that tells the saga runner it has work.
#[derive(Debug, Clone)]
pub struct Sagas {
    backend: Backend,
    kick: Arc<Notify>,
    /// When the saga runner wakes next (ms since the epoch): a start whose deadline comes
    /// earlier kicks it.
    wakes_at: Arc<std::sync::atomic::AtomicI64>,
    /// Transitions made outside the delivery path (aborts) for the saga runner to carry out.
    queued: Arc<Mutex<Vec<Next>>>,
    /// Step outcomes waiting to be recorded together.
    waiting: Arc<Mutex<Vec<Waiting>>>,
    /// On SQLite, what the last process left pending, read when the store opened and before
    /// anything of this process could start or advance an instance; taken by [`Self::pending`].
    left: Arc<Mutex<Left>>,
}

impl Sagas {
    /// Opens the store the spool configuration calls for: `<path>/sagas.db` for the embedded
    /// spool, memory for the memory spool, the bucket `<stream>-sagas` for the nats spool
    /// (connected on first use).
    pub fn open(config: &SpoolConfig) -> Result<Self, SagaError> {
        // A transition of this process is pending from its commit until its deliveries are
        // put: read later, the store would offer those as left over and they would be put
        // twice. So what the last process left is read now, before anything runs.
        let sqlite = |mut store: store::Store| {
            let left = store.pending(SystemTime::now());
            (Backend::Sqlite(Arc::new(Mutex::new(store))), Some(left))
        };
        let (backend, left) = match config.backend {
            SpoolBackend::Embedded => sqlite(store::Store::open(&config.path.join("sagas.db"))?),
            SpoolBackend::Memory => sqlite(store::Store::memory()?),
            SpoolBackend::Nats => (
                Backend::JetStream(Arc::new(jetstream::KvStore::new(
                    config.nats.clone().unwrap_or_default(),
                ))),
                None,
            ),
        };
        Ok(Self {
            backend,
            kick: Arc::new(Notify::new()),
            wakes_at: Arc::new(std::sync::atomic::AtomicI64::new(0)),
            queued: Arc::default(),
            waiting: Arc::default(),
            left: Arc::new(Mutex::new(left)),
        })
    }

    /// Runs `f` on the SQLite store in a blocking task.
    async fn with<T: Send + 'static>(
        store: &Arc<Mutex<store::Store>>,
        f: impl FnOnce(&mut store::Store) -> Result<T, SagaError> + Send + 'static,
    ) -> Result<T, SagaError> {
        let store = store.clone();
        tokio::task::spawn_blocking(move || {
            // A panic while holding the lock leaves SQLite consistent (its transaction rolls
            // back), so a poisoned lock is safe to take.
            let mut guard = store.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut guard)
        })
        .await
        .map_err(|_| SagaError::Task)?
    }

    /// Records the transitions' effects in the metrics.
    pub(crate) fn note(tally: &Tally) {
        for saga in &tally.started {
            telemetry::saga_moved(saga, None);
        }
        for (saga, state) in &tally.ended {
            telemetry::saga_moved(saga, Some(state.name()));
        }
        for (saga, step, seconds) in &tally.steps {
            telemetry::saga_step(saga, step, *seconds);
        }
    }

    /// Starts one instance per (saga, trigger) (in one commit on SQLite); each [`Next`] holds
    /// the first step's delivery.
    pub async fn start(
        &self,
        starts: Vec<(Arc<SagaConfig>, Arc<Event>)>,
    ) -> Result<Vec<Next>, SagaError> {
        let now = SystemTime::now();
        let soonest = starts.iter().map(|(c, _)| c.timeout).min();
        let nexts = match &self.backend {
            Backend::Sqlite(store) => {
                let (nexts, tally) = Self::with(store, move |s| s.start(&starts, now)).await?;
                Self::note(&tally);
                nexts
            }
            Backend::JetStream(kv) => kv.start(starts, now).await?,
        };
        // The runner sleeps until the earliest deadline it knew of; these may come earlier.
        let wakes_at = self.wakes_at.load(std::sync::atomic::Ordering::Relaxed);
        if soonest.is_some_and(|t| millis(now + t) < wakes_at) {
            self.kick.notify_one();
        }
        Ok(nexts)
    }

    /// Removes instances whose first step could not be stored (the trigger was refused).
    pub async fn discard(&self, ids: Vec<String>) -> Result<(), SagaError> {
        match &self.backend {
            Backend::Sqlite(store) => Self::with(store, move |s| s.discard(&ids)).await,
            Backend::JetStream(kv) => kv.discard(ids).await,
        }
    }

    /// Whether `position` is the step or compensation its instance waits for.
    pub async fn is_current(&self, position: Position) -> Result<bool, SagaError> {
        match &self.backend {
            Backend::Sqlite(store) => Self::with(store, move |s| s.is_current(&position)).await,
            Backend::JetStream(kv) => kv.is_current(&position).await,
        }
    }

    /// Records the outcome of the delivery at `position` and what follows; `None` when that
    /// step is no longer current (a repeat, or the instance moved on).
    ///
    /// On SQLite, outcomes that arrive while another commit runs wait for the store together
    /// and are recorded in one synced commit (group commit): the first blocking task to get
    /// the store takes every outcome waiting, the others find none left. On JetStream each
    /// is one compare-and-set write of its instance.
    pub async fn advance(
        &self,
        position: Position,
        result: StepResult,
    ) -> Result<Option<Next>, SagaError> {
        let store = match &self.backend {
            Backend::Sqlite(store) => store.clone(),
            Backend::JetStream(kv) => return kv.advance(&position, &result).await,
        };
        let (answer, answered) = tokio::sync::oneshot::channel();
        self.waiting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((position, result, answer));
        let waiting = self.waiting.clone();
        tokio::task::spawn_blocking(move || {
            let mut store = store.lock().unwrap_or_else(|p| p.into_inner());
            let group = std::mem::take(&mut *waiting.lock().unwrap_or_else(|p| p.into_inner()));
            if group.is_empty() {
                return;
            }
            let (outcomes, answers): (Vec<_>, Vec<_>) =
                group.into_iter().map(|(p, r, a)| ((p, r), a)).unzip();
            match store.advance_all(&outcomes, SystemTime::now()) {
                Ok(results) => {
                    for (answer, result) in answers.into_iter().zip(results) {
                        // The caller may have gone (its delivery was dropped); nothing to do.
                        drop(answer.send(result));
                    }
                }
                Err(error) => {
                    let error = Arc::new(error);
                    for answer in answers {
                        drop(answer.send(Err(SagaError::Shared(error.clone()))));
                    }
                }
            }
        });
        answered.await.map_err(|_| SagaError::Task)?
    }

    /// Starts compensating instance `id` now; the saga runner puts the compensation.
    pub async fn abort(&self, id: String) -> Result<Abort, SagaError> {
        let abort = match &self.backend {
            Backend::Sqlite(store) => {
                let now = SystemTime::now();
                let (abort, tally) =
                    Self::with(store, move |s| s.abort(&id, "aborted", now)).await?;
                Self::note(&tally);
                abort
            }
            Backend::JetStream(kv) => kv.abort(&id, "aborted").await?,
        };
        if let Abort::Started(next) = &abort {
            self.queued
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(Next::clone(next));
            self.kick.notify_one();
        }
        Ok(abort)
    }

    /// Takes the transitions queued for the saga runner.
    pub fn take_queued(&self) -> Vec<Next> {
        std::mem::take(&mut *self.queued.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Starts compensating every running instance whose deadline is past `now`.
    pub async fn expire(&self, now: SystemTime) -> Result<Vec<Next>, SagaError> {
        match &self.backend {
            Backend::Sqlite(store) => {
                let (nexts, tally) = Self::with(store, move |s| s.expire(now)).await?;
                Self::note(&tally);
                Ok(nexts)
            }
            Backend::JetStream(kv) => kv.expire(now).await,
        }
    }

    /// The earliest deadline of a running instance.
    pub async fn next_deadline(&self) -> Result<Option<SystemTime>, SagaError> {
        match &self.backend {
            Backend::Sqlite(store) => Self::with(store, store::Store::next_deadline).await,
            Backend::JetStream(kv) => Ok(kv.next_deadline()),
        }
    }

    /// What transitions of an earlier process asked for that was not confirmed put (after a
    /// crash): on SQLite, what was pending when the store opened, once (later calls get
    /// nothing; this process's own transitions in flight are never offered). On JetStream,
    /// only what waited longer than a live daemon takes to store it, claimed for this daemon:
    /// the others' transitions in flight are theirs to store.
    pub async fn pending(&self) -> Result<Vec<Next>, SagaError> {
        match &self.backend {
            Backend::Sqlite(_) => {
                let mut left = self.left.lock().unwrap_or_else(|p| p.into_inner());
                left.take().unwrap_or_else(|| Ok(Vec::new()))
            }
            Backend::JetStream(kv) => kv.stranded(SystemTime::now()).await,
        }
    }

    /// What transitions left pending and no one stores: on SQLite nothing (the runner stores
    /// what the last process left, [`Self::pending`], at start); on JetStream what a daemon
    /// that died left pending, claimed for this one.
    pub async fn stranded(&self) -> Result<Vec<Next>, SagaError> {
        let now = SystemTime::now();
        match &self.backend {
            Backend::Sqlite(_) => Ok(Vec::new()),
            Backend::JetStream(kv) => kv.stranded(now).await,
        }
    }

    /// The longest the saga runner sleeps when other daemons share the store (the nats
    /// spool): their deadlines and stranded transitions are found within this long.
    pub fn poll_every(&self) -> Option<Duration> {
        match &self.backend {
            Backend::Sqlite(_) => None,
            Backend::JetStream(_) => Some(jetstream::STRANDED_AFTER / 2),
        }
    }

    /// Sets the active gauges from a store other daemons share (their starts and ends
    /// count too); nothing on SQLite, whose gauges move with each transition here.
    pub fn refresh_gauges(&self) {
        if let Backend::JetStream(kv) = &self.backend {
            kv.set_gauges();
        }
    }

    /// The deliveries and finished event of transition `seq` of `instance` are stored.
    pub async fn flushed(&self, instance: String, seq: i64) -> Result<(), SagaError> {
        self.flushed_all(vec![(instance, seq)]).await
    }

    /// [`Sagas::flushed`] for several transitions (in one commit on SQLite).
    pub async fn flushed_all(&self, done: Vec<(String, i64)>) -> Result<(), SagaError> {
        match &self.backend {
            Backend::Sqlite(store) => Self::with(store, move |s| s.flushed(&done)).await,
            Backend::JetStream(kv) => kv.flushed(done).await,
        }
    }

    /// Deletes instances that ended before `now - retention`; returns how many.
    pub async fn sweep(&self, now: SystemTime, retention: Duration) -> Result<usize, SagaError> {
        match &self.backend {
            Backend::Sqlite(store) => Self::with(store, move |s| s.sweep(now, retention)).await,
            Backend::JetStream(kv) => kv.sweep(now, retention).await,
        }
    }

    /// Running or compensating instances per saga.
    pub async fn active(&self) -> Result<Vec<(String, u64)>, SagaError> {
        match &self.backend {
            Backend::Sqlite(store) => Self::with(store, store::Store::active).await,
            Backend::JetStream(kv) => kv.active().await,
        }
    }

    /// Hands a transition that could not be carried out to the saga runner, to retry.
    pub fn requeue(&self, next: Next) {
        self.queued
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(next);
        self.kick.notify_one();
    }

    /// Instances the query selects, oldest first.
    pub async fn list(&self, query: InstanceQuery) -> Result<Vec<InstanceView>, SagaError> {
        match &self.backend {
            Backend::Sqlite(store) => Self::with(store, move |s| s.list(&query)).await,
            Backend::JetStream(kv) => kv.list(&query).await,
        }
    }

    /// One instance with its steps.
    pub async fn get(&self, id: String) -> Result<Option<InstanceView>, SagaError> {
        match &self.backend {
            Backend::Sqlite(store) => Self::with(store, move |s| s.get(&id)).await,
            Backend::JetStream(kv) => kv.get(&id).await,
        }
    }

    /// The saga runner sleeps until `at` unless kicked.
    pub fn sleeps_until(&self, at: SystemTime) {
        self.wakes_at
            .store(millis(at), std::sync::atomic::Ordering::Relaxed);
    }

    /// Resolves once something asks the saga runner to look again (a start, an abort).
    pub async fn kicked(&self) {
        self.kick.notified().await;
    }
}

/// The spool delivery of a step or compensation event to `sink`.
fn delivery(saga: &str, sink: &str, event: Event, now: SystemTime) -> NewDelivery {
    NewDelivery {
        event: Arc::new(event),
        route: Arc::from(format!("{ROUTE_PREFIX}{saga}")),
        sink: Arc::from(sink),
        accepted_at: now,
        not_before: now,
        priority: Priority::Normal,
        ordering_key: None,
    }
}

/// Milliseconds since the epoch.
fn millis(t: SystemTime) -> i64 {
    let ms = t.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis();
    i64::try_from(ms).unwrap_or(i64::MAX)
}

/// The time `ms` milliseconds after the epoch.
fn time(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}
