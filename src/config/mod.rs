//! The `routes.yaml` contract: raw YAML → validated [`Config`].
//!
//! Imports nothing internal but `cesql`, the expression language that `sql` filters are
//! parsed with, and `transform::Program`, which compiles `transform` programs (both leaves,
//! like dependency crates). Everything that can be wrong with a configuration is found
//! by [`load`] (and [`load_str`]), which reports every error at once, each with its YAML
//! path; the runtime is built only from the validated types in this file.

mod admin;
mod delivery;
mod env;
mod history;
mod live;
mod model;
mod nats;
mod outbound;
#[cfg(test)]
mod outbound_tests;
mod reload;
mod reply;
mod routes;
mod sagas;
mod schedules;
mod schema;
#[cfg(test)]
mod schema_tests;
mod server_tls;
mod sign;
mod sinks;
mod sources;
mod summary;
mod summary_json;
mod telemetry;
#[cfg(test)]
mod tests;
mod units;
mod validate;
mod x509;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use axum::http::{HeaderName, HeaderValue, Uri};

pub use admin::{AdminConfig, AdminToken, DEFAULT_ADMIN_LISTEN};
pub use delivery::{
    BatchPolicy, BreakerPolicy, DeliveryOrder, DeliveryPolicy, Priority, RateLimit,
    FILE_BATCH_EVENTS, MAX_BATCH_BYTES, MAX_BATCH_EVENTS,
};
pub use history::{HistoryConfig, DEFAULT_HISTORY_MAX_BYTES, DEFAULT_HISTORY_TTL};
pub use live::{live, Live, Publisher};
pub use nats::{
    NatsAuth, NatsConnection, NatsSinkConfig, NatsSpoolConfig, DEFAULT_DUPLICATE_WINDOW,
};
pub use outbound::{ClientCertificate, HttpTlsConfig, PemCertificates, ProxySetting};
pub use reload::{
    reload_channel, watch_file, watch_files, ReloadFailed, ReloadRequest, ReloadSummary,
    ReloadTrigger, RELOAD_SETTLE,
};
pub use reply::{ReplyPolicy, DEFAULT_MAX_HOPS, HOPS_EXTENSION};
pub use sagas::{SagaConfig, SagaStepConfig, DEFAULT_SAGA_RETENTION, DEFAULT_SAGA_TIMEOUT};
pub use schedules::{parse_cron, CronError, ScheduleConfig, ScheduledEvent};
pub use schema::SCHEMA;
pub use server_tls::{
    files_digest, load_client_roots, load_key_pair, provider as tls_provider, FilesDigest, KeyPair,
    TlsFileError, TlsServerConfig,
};
pub use sign::{DigestEncoding, HmacSignConfig, SecretKey, SignConfig};
pub use sources::{EventMapping, Part, Preset, SourceConfig, Template, TemplateError, Verify};
pub use summary_json::{AdminSummary, CheckSummary, RouteSummary, SinkSummary, SpoolSummary};
pub use telemetry::{TelemetryConfig, DEFAULT_SERVICE_NAME};
pub use units::{parse_duration, parse_rate, parse_size, UnitError};
pub use x509::{CertError, CertInfo};

/// A validated switchyard configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address of the ingress HTTP server.
    pub listen: SocketAddr,
    /// Where deliveries are kept until their sinks confirm them.
    pub spool: SpoolConfig,
    /// Ingress limits, authentication and handshake settings.
    pub ingress: IngressConfig,
    /// Delivery targets by name.
    pub sinks: BTreeMap<String, SinkConfig>,
    /// The routing table, in file order.
    pub routes: Vec<RouteConfig>,
    /// Cron schedules that emit events, in file order.
    pub schedules: Vec<ScheduleConfig>,
    /// How long shutdown waits for in-flight deliveries.
    pub shutdown_grace: Duration,
    /// The admin server (`admin_listen`, `admin:`).
    pub admin: AdminConfig,
    /// Trace export (`telemetry:`).
    pub telemetry: TelemetryConfig,
    /// Webhook endpoints by name (`sources:`, served at `POST /hooks/<name>`).
    pub sources: BTreeMap<String, SourceConfig>,
    /// Delivery history (`spool.history_ttl`, `spool.history_max_bytes`).
    pub history: HistoryConfig,
    /// Most replies in a chain (`max_hops`) for sinks that set none; a reply past it is dropped.
    pub max_hops: u32,
    /// Multi-step workflows with compensations (`sagas:`), in file order.
    pub sagas: Vec<SagaConfig>,
    /// How long a finished saga instance is kept (`spool.saga_retention`).
    pub saga_retention: Duration,
}

/// How long a dead letter is kept when `spool.dead_letter_ttl` is absent: 14 days.
pub const DEFAULT_DEAD_LETTER_TTL: Duration = Duration::from_secs(14 * 24 * 60 * 60);

/// Spool settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpoolConfig {
    /// Which backend keeps the queue.
    pub backend: SpoolBackend,
    /// Directory for on-disk state.
    pub path: PathBuf,
    /// Most event bytes kept at once; past it ingress answers 503 with `Retry-After`.
    pub max_bytes: u64,
    /// How long a dead letter is kept (`spool.dead_letter_ttl`); `None` keeps it until it is
    /// replayed or purged.
    pub dead_letter_ttl: Option<Duration>,
    /// Settings of the `nats` backend; `None` for the others.
    pub nats: Option<NatsSpoolConfig>,
    /// How long a delivered event is kept for replay (`spool.retain_delivered`); `None`
    /// keeps none.
    pub retain_delivered: Option<Duration>,
}

/// The spool backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpoolBackend {
    /// A durable store under `spool.path` (the default).
    Embedded,
    /// In memory: everything queued is lost when the process exits.
    Memory,
    /// NATS JetStream, shared by every instance connected to it.
    Nats,
}

/// Ingress settings.
#[derive(Debug, Clone)]
pub struct IngressConfig {
    /// Largest accepted event, in bytes (413 past it).
    pub max_event_bytes: usize,
    /// Largest accepted request body, in bytes (413 past it).
    pub max_request_bytes: usize,
    /// Most events accepted in one batch request (413 past it).
    pub max_batch_events: usize,
    /// Credentials of which a request must present one; empty means no authentication.
    pub auth: Vec<AuthRule>,
    /// Origins granted by the CloudEvents webhook `OPTIONS` handshake (`*` grants any).
    pub allowed_origins: Vec<String>,
    /// Requests per minute granted in the `OPTIONS` handshake; `None` answers `*`.
    pub allowed_rate: Option<u32>,
    /// A repeat of the same (`source`, `id`) within this window is acknowledged and dropped.
    pub dedup_window: Option<Duration>,
    /// How long a client may hold a connection without making progress, and how many it may hold.
    pub connections: ConnectionLimits,
    /// TLS termination (`ingress.tls`); `None` serves plain HTTP.
    pub tls: Option<TlsServerConfig>,
}

/// What a client may hold of an HTTP server: time to send a request, and connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Time to send a request's headers; also how long an idle connection waits for its
    /// next request before it is closed.
    pub header_timeout: Duration,
    /// Time to send a request's body, counted from the end of its headers (408 past it).
    pub body_timeout: Duration,
    /// Most connections open at once; past it new connections wait in the listen backlog.
    pub max_connections: usize,
}

impl Default for ConnectionLimits {
    /// 10s for headers, 30s for a body, 1024 connections.
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            max_connections: 1024,
        }
    }
}

/// One accepted ingress credential.
#[derive(Clone, PartialEq, Eq)]
pub enum AuthRule {
    /// An Event Grid access key, sent as `aeg-sas-key` (header or query).
    SasKey(String),
    /// A bearer token, sent as `Authorization: Bearer <token>` or `?access_token=`.
    Bearer(String),
    /// The access key (decoded) that signs Event Grid SAS tokens, sent as `aeg-sas-token` or
    /// `Authorization: SharedAccessSignature`.
    SasToken(SecretKey),
    /// Standard Webhooks secrets (decoded): the request is signed with one of them.
    StandardWebhooks(Vec<SecretKey>),
}

impl std::fmt::Debug for AuthRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Secrets never reach logs or `check` output.
        match self {
            Self::SasKey(_) => f.write_str("SasKey(***)"),
            Self::Bearer(_) => f.write_str("Bearer(***)"),
            Self::SasToken(_) => f.write_str("SasToken(***)"),
            Self::StandardWebhooks(keys) => write!(f, "StandardWebhooks({} × ***)", keys.len()),
        }
    }
}

/// One delivery target.
#[derive(Debug, Clone)]
pub struct SinkConfig {
    /// The sink's name (its key under `sinks:`).
    pub name: String,
    /// What kind of target it is and its settings.
    pub kind: SinkKind,
    /// Most deliveries in flight to this sink at once (with `adaptive`, the ceiling).
    pub concurrency: usize,
    /// Set when the in-flight limit adapts itself between a minimum and `concurrency`.
    pub adaptive: Option<AdaptiveConcurrency>,
    /// Retry policy for failed deliveries.
    pub retry: RetryPolicy,
    /// Sink that receives dead-lettered deliveries, if any.
    pub dead_letter: Option<String>,
    /// Rate limit, batching, circuit breaker and fallback.
    pub delivery: DeliveryPolicy,
    /// A jq program run on each event delivered to this sink, after the route's (`transform`).
    pub transform: Option<crate::transform::Program>,
}

/// An in-flight limit that finds its own level from the target's round trips and push-back
/// (`concurrency: adaptive` or `concurrency: { min, max }`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdaptiveConcurrency {
    /// The lowest limit, and the first.
    pub min: usize,
}

/// The kinds of sink.
#[derive(Debug, Clone)]
pub enum SinkKind {
    /// An HTTP webhook.
    Http(HttpSinkConfig),
    /// Writes each event to the log.
    Log(LogSinkConfig),
    /// Appends each event as one JSON line to a file.
    File(FileSinkConfig),
    /// Runs a command with the event JSON on stdin.
    Exec(ExecSinkConfig),
    /// A Rust handler registered by the embedding program.
    Handler(HandlerSinkConfig),
    /// Publishes each event to a NATS subject.
    Nats(NatsSinkConfig),
}

impl SinkKind {
    /// The YAML key naming this kind (`http`, `log`, …).
    pub fn name(&self) -> &'static str {
        match self {
            Self::Http(_) => "http",
            Self::Log(_) => "log",
            Self::File(_) => "file",
            Self::Exec(_) => "exec",
            Self::Handler(_) => "handler",
            Self::Nats(_) => "nats",
        }
    }
}

/// Settings of an `http` sink.
#[derive(Debug, Clone)]
pub struct HttpSinkConfig {
    /// Target URL (`http` or `https`).
    pub url: Uri,
    /// Wire format of each delivery.
    pub format: HttpFormat,
    /// Per-attempt response timeout.
    pub timeout: Duration,
    /// Extra headers sent with every delivery.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// How each request is signed; `None` sends it unsigned.
    pub sign: Option<SignConfig>,
    /// CA certificates trusted besides the system's roots, and the client certificate.
    pub tls: HttpTlsConfig,
    /// How the target is reached: the environment's proxy, none, or a given one.
    pub proxy: ProxySetting,
}

/// Wire formats of the `http` sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpFormat {
    /// CloudEvents binary mode (`ce-*` headers, data as the body).
    CloudEventsBinary,
    /// CloudEvents structured mode (`application/cloudevents+json`).
    CloudEventsStructured,
    /// Event Grid schema (a JSON array).
    EventGrid,
}

/// Settings of a `log` sink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogSinkConfig {
    /// Log level of each event line.
    pub level: tracing::Level,
}

/// Settings of a `file` sink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSinkConfig {
    /// File to append to (created with its parent directories).
    pub path: PathBuf,
}

/// Settings of an `exec` sink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecSinkConfig {
    /// Program and arguments.
    pub command: Vec<String>,
    /// Time after which the process is killed and the attempt fails.
    pub timeout: Duration,
    /// Variables passed through from the daemon's environment; the process gets no others
    /// besides the `SWITCHYARD_*` event variables.
    pub env: Vec<String>,
}

/// Settings of a `handler` sink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandlerSinkConfig {
    /// Name under which the embedding program registered the handler.
    pub name: String,
}

/// Retry policy of a sink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Most delivery attempts, the first included.
    pub max_attempts: u32,
    /// Time after the event was accepted past which it is no longer retried.
    pub event_ttl: Duration,
    /// Delays between attempts; the last one repeats.
    pub schedule: Vec<Duration>,
    /// Longest scheduled delay (`max_backoff`); `None` leaves the schedule as written.
    pub max_backoff: Option<Duration>,
    /// Longest honoured `Retry-After` (`max_retry_after`); `None` honours any (within the TTL).
    pub max_retry_after: Option<Duration>,
}

impl RetryPolicy {
    /// Event Grid's schedule: 10s, 30s, 1m, 5m, 10m, 30m, 1h, 3h, 6h, then every 12h.
    pub fn default_schedule() -> Vec<Duration> {
        [
            10,
            30,
            60,
            300,
            600,
            1800,
            3600,
            3 * 3600,
            6 * 3600,
            12 * 3600,
        ]
        .into_iter()
        .map(Duration::from_secs)
        .collect()
    }

    /// The delay before attempt `n + 1` after `n` failed attempts (`n` ≥ 1), before jitter;
    /// at most `max_backoff`.
    pub fn delay_after(&self, failed_attempts: u32) -> Duration {
        let i = (failed_attempts.max(1) - 1) as usize;
        let delay = self
            .schedule
            .get(i)
            .or(self.schedule.last())
            .copied()
            .unwrap_or(Duration::ZERO);
        self.max_backoff.map_or(delay, |cap| delay.min(cap))
    }

    /// The time from the first attempt to the last one if every attempt fails, capped by the TTL.
    pub fn horizon(&self) -> Duration {
        let total: Duration = (1..self.max_attempts).map(|n| self.delay_after(n)).sum();
        total.min(self.event_ttl)
    }
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 30,
            event_ttl: Duration::from_secs(24 * 3600),
            schedule: Self::default_schedule(),
            max_backoff: None,
            max_retry_after: None,
        }
    }
}

/// One route: which events, to which sinks.
#[derive(Debug, Clone)]
pub struct RouteConfig {
    /// The route's name (also sent as `aeg-subscription-name`).
    pub name: String,
    /// Conditions an event must meet; all of them (AND).
    pub filter: MatchConfig,
    /// A CESQL v1 expression the event must also satisfy (`sql`).
    pub sql: Option<crate::cesql::Expr>,
    /// Sinks that receive matching events.
    pub to: Vec<String>,
    /// The lane its deliveries wait in at each sink (`priority`, default normal).
    pub priority: Priority,
    /// Whether its deliveries keep per-subject order at each sink (`ordering`).
    pub ordering: DeliveryOrder,
    /// A jq program run on each event it delivers, before the sink's (`transform`).
    pub transform: Option<crate::transform::Program>,
}

/// The `match:` block of a route. Every part that is present must hold.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MatchConfig {
    /// Event types, exact or with a trailing `*` wildcard; empty matches every type.
    pub types: Vec<String>,
    /// Event sources, exact or with a trailing `*` wildcard; empty matches every source.
    pub sources: Vec<String>,
    /// Subject prefix/suffix filter.
    pub subject: Option<SubjectFilter>,
    /// Event Grid advanced filters, AND-ed.
    pub advanced: Vec<AdvancedFilter>,
}

/// `subject: { begins_with, ends_with, case_sensitive }`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubjectFilter {
    /// Required prefix of the subject.
    pub begins_with: Option<String>,
    /// Required suffix of the subject.
    pub ends_with: Option<String>,
    /// Compare case-sensitively (default false, as Event Grid).
    pub case_sensitive: bool,
}

/// One Event Grid advanced filter: a key and a condition on its value.
#[derive(Debug, Clone, PartialEq)]
pub struct AdvancedFilter {
    /// `data.a.b`, `subject`, `source`, `type`, `id`, an extension name, or an Event Grid name.
    pub key: String,
    /// The operator and its operands.
    pub condition: Condition,
}

/// An advanced-filter operator with its validated operands.
#[derive(Debug, Clone, PartialEq)]
#[expect(
    missing_docs,
    reason = "each variant is the Event Grid operator of the same name"
)]
pub enum Condition {
    NumberIn(Vec<f64>),
    NumberNotIn(Vec<f64>),
    NumberLessThan(f64),
    NumberGreaterThan(f64),
    NumberLessThanOrEquals(f64),
    NumberGreaterThanOrEquals(f64),
    NumberInRange(Vec<(f64, f64)>),
    NumberNotInRange(Vec<(f64, f64)>),
    BoolEquals(bool),
    StringIn(Vec<String>),
    StringNotIn(Vec<String>),
    StringContains(Vec<String>),
    StringNotContains(Vec<String>),
    StringBeginsWith(Vec<String>),
    StringNotBeginsWith(Vec<String>),
    StringEndsWith(Vec<String>),
    StringNotEndsWith(Vec<String>),
    IsNullOrUndefined,
    IsNotNull,
}

/// A configuration that could not be loaded: every problem found, each with its YAML path.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid YAML, or not a mapping at the top.
    #[error("{path}: {message}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// The file parsed but its contents are invalid.
    #[error("{} configuration error(s):\n{}", .0.len(), ConfigError::list(.0))]
    Invalid(Vec<FieldError>),
}

impl ConfigError {
    fn list(errors: &[FieldError]) -> String {
        errors
            .iter()
            .map(|e| format!("  - {e}"))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// One problem at one place in the YAML.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct FieldError {
    /// YAML path such as `sinks.orders-api.retry.schedule[2]`.
    pub path: String,
    /// What is wrong there.
    pub message: String,
}

/// Loads and validates a configuration file (with `${VAR}` and `SWITCHYARD_*` from the environment).
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    load_str(&text, path, &env::process_env())
}

/// Loads and validates configuration text read from `origin` (with `${VAR}` and `SWITCHYARD_*`
/// from the environment), for a caller that has read the file itself.
pub fn load_text(text: &str, origin: &Path) -> Result<Config, ConfigError> {
    load_str(text, origin, &env::process_env())
}

/// Loads and validates configuration text; `origin` names it in errors, `vars` is the environment.
pub fn load_str(
    text: &str,
    origin: &Path,
    vars: &BTreeMap<String, String>,
) -> Result<Config, ConfigError> {
    validate::load(text, origin, vars)
}
