//! Observability at the side: log setup, metric names, the Prometheus recorder, the
//! process counters that the hot path bumps, and (in `otlp`) trace export.
//!
//! Imports nothing internal but `outbound` (the trace exporter's HTTP client). Every metric
//! name is a constant here (or in `ingress` and `process`) and every raw `metrics` macro call
//! lives in this module, so names and labels cannot drift between the places that record
//! them. Label handles are
//! registered once (per format, per route, per sink) and cached, so recording an event costs
//! an atomic add, not a registry lookup or an allocation.

mod ingress;
mod logging;
pub(crate) mod otlp;
mod process;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use crate::maps::DashMap;
use metrics::{Counter, Gauge, Histogram, SharedString};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

pub use ingress::{IngressMetrics, INGRESS_DURATION, INGRESS_REQUESTS};
pub use logging::{init_logging, LogFormat};
pub use otlp::{
    continue_trace, current_traceparent, exporting, ingress_span, otlp_layer, span_outcome,
    ExportSettings, SpanExport,
};
pub use process::{render_process, PROCESS_METRICS};

/// Events that reached ingress, by `format` and `outcome` (`accepted` or `rejected`).
pub const EVENTS_RECEIVED: &str = "switchyard_events_received_total";
/// Events that matched a route, by `route` (an event counts once per route it matched).
pub const EVENTS_ROUTED: &str = "switchyard_events_routed_total";
/// Evaluation errors of routes' CESQL filters, by `route` and `kind` (`cast`, `math`,
/// `missing_attribute`, `function_evaluation`); the route did not match those events.
pub const ROUTE_SQL_ERRORS: &str = "switchyard_route_sql_errors_total";
/// Events accepted that matched no route (dropped).
pub const EVENTS_UNROUTED: &str = "switchyard_events_unrouted_total";
/// Finished delivery attempts, by `sink` and `outcome` (`success`, `retry`, `dead_letter`).
pub const DELIVERIES: &str = "switchyard_deliveries_total";
/// Time one delivery attempt took, by `sink`.
pub const DELIVERY_DURATION: &str = "switchyard_delivery_duration_seconds";
/// Deliveries stored for a sink (queued and in flight), by `sink`.
pub const SPOOL_DEPTH: &str = "switchyard_spool_depth";
/// Seconds since the oldest delivery stored for a sink (queued, in flight or waiting for a
/// retry) was accepted, by `sink`; 0 when none is stored. On the `nats` spool, a lower bound
/// read from the oldest message of each lane every few seconds.
pub const SPOOL_OLDEST_AGE: &str = "switchyard_spool_oldest_age_seconds";
/// Bytes stored as `spool.max_bytes` counts them (on the `nats` spool, the work stream's bytes).
pub const SPOOL_BYTES: &str = "switchyard_spool_bytes";
/// Bytes of delivered events kept for replay (`spool.retain_delivered`).
pub const SPOOL_RETAINED_BYTES: &str = "switchyard_spool_retained_bytes";
/// `spool.max_bytes`: the most bytes the spool stores before ingress answers 503.
pub const SPOOL_MAX_BYTES: &str = "switchyard_spool_max_bytes";
/// Always 1, by `version`: the running build.
pub const BUILD_INFO: &str = "switchyard_build_info";
/// Share of the filesystem holding `spool.path` in use, 0 to 1 (embedded spool).
pub const SPOOL_DISK_USED_RATIO: &str = "switchyard_spool_disk_used_ratio";
/// Bytes still free on the filesystem holding `spool.path` (embedded spool).
pub const SPOOL_DISK_FREE_BYTES: &str = "switchyard_spool_disk_free_bytes";
/// Entries in the spool's duplicate-suppression table (`ingress.dedup_window`).
pub const SPOOL_DEDUP_ENTRIES: &str = "switchyard_spool_dedup_entries";
/// Deliveries dead-lettered, by `sink` and `reason` (Event Grid's `deadLetterReason`).
pub const DEAD_LETTERS: &str = "switchyard_dead_letters_total";
/// Configuration reloads, by `outcome` (`success` or `failure`).
pub const CONFIG_RELOADS: &str = "switchyard_config_reloads_total";
/// A sink's circuit breaker, by `sink`: 0 closed, 1 half-open, 2 open.
pub const BREAKER_STATE: &str = "switchyard_circuit_breaker_state";
/// A sink's in-flight limit, by `sink`: its `concurrency`, or where an adaptive one stands.
pub const SINK_CONCURRENCY_LIMIT: &str = "switchyard_sink_concurrency_limit";
/// Whether a sink is paused by the admin API, by `sink`: 1 paused, 0 delivering.
pub const SINK_PAUSED: &str = "switchyard_sink_paused";
/// Replies not accepted as events, by `sink` and `reason` (`max_hops`: past the hop limit;
/// `invalid`: not a valid CloudEvent). The deliveries that carried them count as delivered.
pub const REPLIES_DROPPED: &str = "switchyard_replies_dropped_total";
/// Spans the collector accepted (`telemetry.otlp_endpoint` or `OTEL_EXPORTER_OTLP_*`).
pub const OTLP_SPANS_EXPORTED: &str = "switchyard_otlp_spans_exported_total";
/// Spans not exported, by `reason` (`buffer_full`, `export_failed`, `exporter_stopped`).
pub const OTLP_SPANS_DROPPED: &str = "switchyard_otlp_spans_dropped_total";
/// Delivery attempts not recorded in the history because its writer was behind.
pub const HISTORY_DROPPED: &str = "switchyard_history_dropped_total";

/// Saga instances that ended, by `saga` and `outcome` (`completed`, `compensated`, `failed`).
pub const SAGAS: &str = "switchyard_sagas_total";
/// Saga instances running or compensating, by `saga`.
pub const SAGAS_ACTIVE: &str = "switchyard_sagas_active";
/// Time from queuing a saga step (or compensation) to its outcome, by `saga` and `step`.
pub const SAGA_STEP_DURATION: &str = "switchyard_saga_step_duration_seconds";

/// Upper bounds of the delivery-duration histogram buckets, in seconds.
const DURATION_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];
/// Upper bounds of the ingress request-duration histogram buckets, in seconds.
const INGRESS_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

// === Prometheus recorder ===

/// The process-wide Prometheus recorder's handle, installing the recorder on first use.
///
/// Installed once per process, so several daemons started in one process share it. When an
/// embedding program installed a recorder of its own first, ours stays detached: `/metrics`
/// then renders only what is recorded through it, and a warning says so.
pub fn prometheus() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Full(DELIVERY_DURATION.to_owned()), DURATION_BUCKETS)
            .and_then(|b| {
                b.set_buckets_for_metric(Matcher::Full(INGRESS_DURATION.to_owned()), INGRESS_BUCKETS)
            })
            .and_then(|b| {
                b.set_buckets_for_metric(
                    Matcher::Full(SAGA_STEP_DURATION.to_owned()),
                    DURATION_BUCKETS,
                )
            })
            .unwrap_or_else(|_| PrometheusBuilder::new());
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        match metrics::set_global_recorder(recorder) {
            Ok(()) => describe(),
            Err(error) => tracing::warn!(%error, "A metrics recorder was already installed; /metrics will be empty"),
        }
        handle
    })
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(EVENTS_RECEIVED, "Events that reached ingress.");
    describe_counter!(EVENTS_ROUTED, "Events that matched a route.");
    describe_counter!(EVENTS_UNROUTED, "Events that matched no route.");
    describe_counter!(DELIVERIES, "Finished delivery attempts.");
    describe_histogram!(
        DELIVERY_DURATION,
        Unit::Seconds,
        "Time of one delivery attempt."
    );
    describe_gauge!(SPOOL_DEPTH, "Deliveries stored for a sink.");
    describe_gauge!(
        SPOOL_DISK_USED_RATIO,
        "Share of the spool's filesystem in use."
    );
    describe_gauge!(
        SPOOL_DISK_FREE_BYTES,
        Unit::Bytes,
        "Bytes free on the spool's filesystem."
    );
    describe_gauge!(
        SPOOL_DEDUP_ENTRIES,
        "Entries in the spool's duplicate-suppression table."
    );
    describe_counter!(DEAD_LETTERS, "Deliveries dead-lettered.");
    describe_counter!(CONFIG_RELOADS, "Configuration reloads.");
    describe_counter!(REPLIES_DROPPED, "Replies not accepted as events.");
    describe_counter!(OTLP_SPANS_EXPORTED, "Spans the OTLP collector accepted.");
    describe_counter!(OTLP_SPANS_DROPPED, "Spans not exported.");
    describe_counter!(
        HISTORY_DROPPED,
        "Delivery attempts not recorded in the history (its writer was behind)."
    );
    describe_gauge!(BREAKER_STATE, "Circuit breaker state.");
    describe_gauge!(
        SINK_CONCURRENCY_LIMIT,
        "Requests the sink may have in flight now (adaptive limits move)."
    );
    describe_gauge!(
        SINK_PAUSED,
        "Whether the sink is paused (1) or delivering (0)."
    );
    describe_gauge!(
        SPOOL_OLDEST_AGE,
        Unit::Seconds,
        "Age of the oldest delivery stored for a sink."
    );
    describe_gauge!(SPOOL_BYTES, Unit::Bytes, "Bytes stored in the spool.");
    describe_gauge!(
        SPOOL_RETAINED_BYTES,
        Unit::Bytes,
        "Bytes of delivered events kept for replay."
    );
    describe_gauge!(
        SPOOL_MAX_BYTES,
        Unit::Bytes,
        "The spool's bound (spool.max_bytes)."
    );
    describe_counter!(INGRESS_REQUESTS, "Ingress HTTP requests answered.");
    describe_histogram!(
        INGRESS_DURATION,
        Unit::Seconds,
        "Time from an ingress request's arrival to its answer."
    );
    describe_counter!(SAGAS, "Saga instances that ended.");
    describe_gauge!(SAGAS_ACTIVE, "Saga instances running or compensating.");
    describe_histogram!(
        SAGA_STEP_DURATION,
        Unit::Seconds,
        "Time from queuing a saga step or compensation to its outcome."
    );
    describe_gauge!(BUILD_INFO, "Always 1; the label says which build runs.");
    metrics::gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
}

/// Sets the bytes of delivered events kept for replay (nothing when retention is off).
pub fn spool_retained_bytes(retained: Option<u64>) {
    if let Some(retained) = retained {
        metrics::gauge!(SPOOL_RETAINED_BYTES).set(retained as f64);
    }
}

/// Sets the spool's size gauges: bytes stored (when the backend can tell) and its bound.
pub fn spool_bytes(stored: Option<u64>, max: u64) {
    if let Some(stored) = stored {
        metrics::gauge!(SPOOL_BYTES).set(stored as f64);
    }
    metrics::gauge!(SPOOL_MAX_BYTES).set(max as f64);
}

/// Counts a saga instance that started (`ended` None) or ended with `outcome`, moving the
/// active gauge by one.
pub fn saga_moved(saga: &str, ended: Option<&'static str>) {
    let active = metrics::gauge!(SAGAS_ACTIVE, "saga" => saga.to_owned());
    match ended {
        None => active.increment(1.0),
        Some(outcome) => {
            active.decrement(1.0);
            metrics::counter!(SAGAS, "saga" => saga.to_owned(), "outcome" => outcome).increment(1);
        }
    }
}

/// Sets the active gauge of `saga` (at start, from the saga store).
pub fn sagas_active(saga: &str, n: u64) {
    metrics::gauge!(SAGAS_ACTIVE, "saga" => saga.to_owned()).set(n as f64);
}

/// Records how long a saga step (or its compensation) took.
pub fn saga_step(saga: &str, step: &str, seconds: f64) {
    metrics::histogram!(SAGA_STEP_DURATION, "saga" => saga.to_owned(), "step" => step.to_owned())
        .record(seconds);
}

/// Sets a sink's paused gauge.
pub fn sink_paused(sink: &str, paused: bool) {
    let level = if paused { 1.0 } else { 0.0 };
    metrics::gauge!(SINK_PAUSED, "sink" => sink.to_owned()).set(level);
}

/// The wire format an ingress request carried its events in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// CloudEvents binary mode.
    Binary,
    /// CloudEvents structured mode.
    Structured,
    /// CloudEvents batched mode.
    Batch,
    /// The Event Grid schema.
    EventGrid,
    /// A provider's webhook, taken in by a source (`POST /hooks/<name>`).
    Source,
    /// Rejected before its format was known (bad credentials, unsupported media type).
    Unknown,
    /// A sink's reply to a delivery (`reply: true`).
    Reply,
    /// A saga's outcome event (`switchyard.saga.*`).
    Saga,
}

impl Format {
    const ALL: [Self; 8] = [
        Self::Binary,
        Self::Structured,
        Self::Batch,
        Self::EventGrid,
        Self::Source,
        Self::Unknown,
        Self::Reply,
        Self::Saga,
    ];

    /// The `format` label value.
    pub fn label(self) -> &'static str {
        match self {
            Self::Binary => "binary",
            Self::Structured => "structured",
            Self::Batch => "batch",
            Self::EventGrid => "eventgrid",
            Self::Source => "source",
            Self::Unknown => "unknown",
            Self::Reply => "reply",
            Self::Saga => "saga",
        }
    }
}

/// Cached `switchyard_events_received_total` handles: `[accepted, rejected]` per format.
#[derive(Debug)]
struct Received([[Counter; 2]; 8]);

impl Received {
    fn register() -> Self {
        Self(Format::ALL.map(|f| {
            ["accepted", "rejected"]
                .map(|o| metrics::counter!(EVENTS_RECEIVED, "format" => f.label(), "outcome" => o))
        }))
    }
}

/// Counts a configuration reload attempt (`success` is false when the new file was refused).
pub fn config_reloaded(success: bool) {
    let outcome = if success { "success" } else { "failure" };
    metrics::counter!(CONFIG_RELOADS, "outcome" => outcome).increment(1);
}

/// Sets the spool-disk gauges: the share of the filesystem in use and the bytes still free.
pub fn spool_disk(used_ratio: f64, free_bytes: u64) {
    metrics::gauge!(SPOOL_DISK_USED_RATIO).set(used_ratio);
    metrics::gauge!(SPOOL_DISK_FREE_BYTES).set(free_bytes as f64);
}

/// Sets the number of entries in the spool's duplicate-suppression table.
pub fn spool_dedup_entries(entries: u64) {
    metrics::gauge!(SPOOL_DEDUP_ENTRIES).set(entries as f64);
}

/// Counts `n` spans the OTLP collector accepted.
fn spans_exported(n: usize) {
    metrics::counter!(OTLP_SPANS_EXPORTED).increment(n as u64);
}

/// The counter of attempts the delivery history dropped; the history keeps the handle.
pub(crate) fn history_dropped() -> Counter {
    metrics::counter!(HISTORY_DROPPED)
}

/// Counts `n` spans dropped before export, and why.
fn spans_dropped(reason: &'static str, n: usize) {
    metrics::counter!(OTLP_SPANS_DROPPED, "reason" => reason).increment(n as u64);
}

// === Counters ===

/// Counters of what happened to events and deliveries since start, and the cached metric
/// handles that mirror them in Prometheus.
#[derive(Debug)]
pub struct Counters {
    /// Events accepted at ingress (stored, or matched no route).
    pub events_received: AtomicU64,
    /// Events rejected at ingress (bad input, too large, unauthorized, spool full).
    pub events_rejected: AtomicU64,
    /// Events that matched no route and were dropped.
    pub events_unrouted: AtomicU64,
    /// Deliveries confirmed by their sink.
    pub deliveries_succeeded: AtomicU64,
    /// Failed attempts that were scheduled for retry.
    pub deliveries_retried: AtomicU64,
    /// Deliveries dead-lettered (forwarded to a dead-letter sink or dropped).
    pub deliveries_dead_lettered: AtomicU64,
    /// Dead-lettered deliveries with no dead-letter sink to take them (logged at ERROR).
    pub dead_letters_dropped: AtomicU64,
    /// Replies dropped: past `max_hops`, or not a valid CloudEvent.
    pub replies_dropped: AtomicU64,
    received: Received,
    unrouted: Counter,
    routes: DashMap<Arc<str>, Counter>,
    sql_errors: DashMap<(Arc<str>, &'static str), Counter>,
    /// Unix second of the last CESQL error logged (they are logged at most once a second).
    sql_error_logged: AtomicU64,
    sinks: DashMap<Arc<str>, Arc<SinkStats>>,
    /// Ingress request counts and durations.
    pub ingress: IngressMetrics,
}

impl Default for Counters {
    fn default() -> Self {
        prometheus();
        // Registered now so that they are rendered (at zero) before anything happens.
        config_reloaded_register();
        Self {
            events_received: AtomicU64::new(0),
            events_rejected: AtomicU64::new(0),
            events_unrouted: AtomicU64::new(0),
            deliveries_succeeded: AtomicU64::new(0),
            deliveries_retried: AtomicU64::new(0),
            deliveries_dead_lettered: AtomicU64::new(0),
            dead_letters_dropped: AtomicU64::new(0),
            replies_dropped: AtomicU64::new(0),
            received: Received::register(),
            unrouted: metrics::counter!(EVENTS_UNROUTED),
            routes: DashMap::default(),
            sql_errors: DashMap::default(),
            sql_error_logged: AtomicU64::new(0),
            sinks: DashMap::default(),
            ingress: IngressMetrics::default(),
        }
    }
}

fn config_reloaded_register() {
    for outcome in ["success", "failure"] {
        metrics::counter!(CONFIG_RELOADS, "outcome" => outcome).increment(0);
    }
}

impl Counters {
    /// Counts a reply from `sink` that was not accepted as an event, and why (`max_hops`,
    /// `invalid`).
    pub fn reply_dropped(&self, sink: &str, reason: &'static str) {
        Self::add(&self.replies_dropped, 1);
        metrics::counter!(REPLIES_DROPPED, "sink" => sink.to_owned(), "reason" => reason)
            .increment(1);
    }

    /// Adds `n` to a counter.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Reads a counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    /// Records `n` events of one ingress request in `format`, accepted or rejected.
    pub fn received(&self, format: Format, accepted: bool, n: u64) {
        let [ok, rejected] = &self.received.0[format as usize];
        if accepted { ok } else { rejected }.increment(n);
    }

    /// Records `n` events that matched no route.
    pub fn unrouted(&self, n: u64) {
        Self::add(&self.events_unrouted, n);
        self.unrouted.increment(n);
    }

    /// Records one event matched by `route`.
    pub fn routed(&self, route: &Arc<str>) {
        if let Some(counter) = self.routes.get(route) {
            counter.increment(1);
            return;
        }
        let label = SharedString::from(Arc::clone(route));
        let counter = metrics::counter!(EVENTS_ROUTED, "route" => label);
        counter.increment(1);
        self.routes.insert(Arc::clone(route), counter);
    }

    /// Records an evaluation error of `route`'s CESQL filter; returns whether to log it (true
    /// at most once a second, so that a filter failing on every event cannot flood the log).
    pub fn sql_error(&self, route: &Arc<str>, kind: &'static str, now: SystemTime) -> bool {
        let key = (Arc::clone(route), kind);
        match self.sql_errors.get(&key) {
            Some(counter) => counter.increment(1),
            None => {
                let label = SharedString::from(Arc::clone(route));
                let counter = metrics::counter!(ROUTE_SQL_ERRORS, "route" => label, "kind" => kind);
                counter.increment(1);
                self.sql_errors.insert(key, counter);
            }
        }
        let second = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let last = self.sql_error_logged.load(Ordering::Relaxed);
        last < second
            && self
                .sql_error_logged
                .compare_exchange(last, second, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }

    /// The live statistics of `sink`, created on first use.
    pub fn sink(&self, sink: &str) -> Arc<SinkStats> {
        if let Some(stats) = self.sinks.get(sink) {
            return Arc::clone(&stats);
        }
        let name: Arc<str> = Arc::from(sink);
        let stats = self
            .sinks
            .entry(Arc::clone(&name))
            .or_insert_with(|| Arc::new(SinkStats::register(name)));
        Arc::clone(&stats)
    }
}

// === Per-sink statistics ===

/// What one sink is doing: deliveries in flight, the last failure, and its metric handles.
/// Shared by the dispatcher (which updates it) and the admin API (which reads it).
#[derive(Debug)]
pub struct SinkStats {
    name: Arc<str>,
    in_flight: AtomicUsize,
    concurrency_limit: AtomicUsize,
    last_error: Mutex<Option<LastError>>,
    success: Counter,
    retry: Counter,
    dead_letter: Counter,
    /// The three outcome counters above, readable (the admin API shows them).
    outcomes: [AtomicU64; 3],
    duration: Histogram,
    depth: Gauge,
    /// Registered at its first value, so a backend that cannot tell exports no series.
    oldest_age: OnceLock<Gauge>,
    breaker: Mutex<Option<BreakerStatus>>,
    /// Why the sink's delivery worker stopped without being told to; `None` while it runs.
    worker_stopped: Mutex<Option<&'static str>>,
}

/// A sink's circuit breaker as last reported by the dispatcher.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BreakerStatus {
    /// `closed`, `open` or `half_open`.
    pub state: &'static str,
    /// When it last opened; `None` while closed.
    pub opened_at: Option<SystemTime>,
}

/// How many of a sink's deliveries ended each way since the process started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SinkOutcomes {
    /// Confirmed by the sink.
    pub delivered: u64,
    /// Failed attempts scheduled for retry.
    pub retried: u64,
    /// Dead-lettered.
    pub dead_lettered: u64,
}

/// The most recent failed attempt of a sink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastError {
    /// What went wrong.
    pub message: String,
    /// When it happened.
    pub at: SystemTime,
}

/// Marks one attempt in flight until dropped.
#[derive(Debug)]
pub struct InFlight<'a>(&'a SinkStats);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl SinkStats {
    fn register(name: Arc<str>) -> Self {
        let sink = || SharedString::from(Arc::clone(&name));
        let outcome =
            |o: &'static str| metrics::counter!(DELIVERIES, "sink" => sink(), "outcome" => o);
        Self {
            in_flight: AtomicUsize::new(0),
            concurrency_limit: AtomicUsize::new(0),
            last_error: Mutex::new(None),
            success: outcome("success"),
            retry: outcome("retry"),
            dead_letter: outcome("dead_letter"),
            outcomes: [AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)],
            duration: metrics::histogram!(DELIVERY_DURATION, "sink" => sink()),
            depth: metrics::gauge!(SPOOL_DEPTH, "sink" => sink()),
            oldest_age: OnceLock::new(),
            breaker: Mutex::new(None),
            worker_stopped: Mutex::new(None),
            name,
        }
    }

    /// The sink's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Records why the sink's worker stopped unexpectedly (`None`: it runs).
    pub fn set_worker_stopped(&self, reason: Option<&'static str>) {
        *self
            .worker_stopped
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = reason;
    }

    /// Why the sink's worker stopped unexpectedly; `None` while it runs (readiness).
    pub fn worker_stopped(&self) -> Option<&'static str> {
        *self
            .worker_stopped
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Starts an attempt; it counts as in flight until the guard is dropped.
    pub fn attempt(&self) -> InFlight<'_> {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self)
    }

    /// Records how long an attempt took, whatever its outcome.
    pub fn attempted(&self, took: Duration) {
        self.duration.record(took.as_secs_f64());
    }

    /// Records a confirmed delivery.
    pub fn delivered(&self) {
        self.success.increment(1);
        Counters::add(&self.outcomes[0], 1);
    }

    /// Records a failed attempt scheduled for retry.
    pub fn retried(&self) {
        self.retry.increment(1);
        Counters::add(&self.outcomes[1], 1);
    }

    /// Records a dead-lettered delivery and Event Grid's `reason` for it.
    pub fn dead_lettered(&self, reason: &'static str) {
        self.dead_letter.increment(1);
        Counters::add(&self.outcomes[2], 1);
        let sink = SharedString::from(Arc::clone(&self.name));
        metrics::counter!(DEAD_LETTERS, "sink" => sink, "reason" => reason).increment(1);
    }

    /// Remembers the failure of an attempt (shown by the admin API).
    pub fn failed(&self, error: &dyn std::fmt::Display) {
        let last = LastError {
            message: error.to_string(),
            at: SystemTime::now(),
        };
        // A poisoned lock only means a panic elsewhere mid-update; the value is still usable.
        let mut slot = self.last_error.lock().unwrap_or_else(|e| e.into_inner());
        *slot = Some(last);
    }

    /// Records the sink's in-flight limit.
    pub fn set_concurrency_limit(&self, limit: usize) {
        self.concurrency_limit.store(limit, Ordering::Relaxed);
        let sink = SharedString::from(Arc::clone(&self.name));
        metrics::gauge!(SINK_CONCURRENCY_LIMIT, "sink" => sink).set(limit as f64);
    }

    /// The sink's in-flight limit as last set; 0 before its worker started.
    pub fn concurrency_limit(&self) -> usize {
        self.concurrency_limit.load(Ordering::Relaxed)
    }

    /// Records the circuit breaker's state (shown by the admin API and as a gauge).
    pub fn set_breaker(&self, status: BreakerStatus) {
        let level = match status.state {
            "closed" => 0.0,
            "half_open" => 1.0,
            _ => 2.0,
        };
        let sink = SharedString::from(Arc::clone(&self.name));
        metrics::gauge!(BREAKER_STATE, "sink" => sink).set(level);
        *self.breaker.lock().unwrap_or_else(|e| e.into_inner()) = Some(status);
    }

    /// The circuit breaker's state; `None` when the sink has none.
    pub fn breaker(&self) -> Option<BreakerStatus> {
        self.breaker
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Sets the spool-depth gauge.
    pub fn set_depth(&self, depth: usize) {
        self.depth.set(depth as f64);
    }

    /// Sets the backlog-age gauge from when the oldest stored delivery was accepted (`None`:
    /// nothing is stored, age 0). A time ahead of `now` (a clock step) counts as 0.
    pub fn set_oldest(&self, oldest: Option<SystemTime>, now: SystemTime) {
        let age = oldest.map_or(Duration::ZERO, |at| {
            now.duration_since(at).unwrap_or(Duration::ZERO)
        });
        let gauge = self.oldest_age.get_or_init(|| {
            let sink = SharedString::from(Arc::clone(&self.name));
            metrics::gauge!(SPOOL_OLDEST_AGE, "sink" => sink)
        });
        gauge.set(age.as_secs_f64());
    }

    /// Outcomes counted since the process started.
    pub fn outcomes(&self) -> SinkOutcomes {
        let [delivered, retried, dead_lettered] = self.outcomes.each_ref().map(Counters::get);
        SinkOutcomes {
            delivered,
            retried,
            dead_lettered,
        }
    }

    /// Attempts in flight now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// The most recent failure, if any.
    pub fn last_error(&self) -> Option<LastError> {
        self.last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}
