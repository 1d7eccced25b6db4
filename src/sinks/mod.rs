//! Delivery targets. A sink delivers one event, or one batch of events as one request, and
//! classifies the outcome; it knows nothing of retries, the spool or routes.
//!
//! Batching: `http` sends a batch as one request (a CloudEvents batch or an Event Grid array)
//! and `file` writes a batch's lines with one sync; `log`, `exec` and `handler` do not batch,
//! so the dispatcher gives them one delivery per attempt.
//!
//! Imports `event`, `config`, `telemetry` and `outbound`.
//!
//! | module | target |
//! |---|---|
//! | `http` | a webhook (CloudEvents binary/structured, Event Grid schema) |
//! | `log` | the process log |
//! | `file` | a JSON-lines file, synced before success |
//! | `exec` | a command fed the event on stdin |
//! | `handler` | a Rust [`Handler`] registered by the embedding program |
//! | `nats` | a NATS subject (core NATS or JetStream), structured CloudEvents JSON |

pub(crate) mod classify;
mod exec;
mod file;
mod handler;
mod http;
mod log;
mod nats;
mod reply;
pub(crate) mod sign;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use crate::config::{Config, SinkConfig, SinkKind};
use crate::event::Event;
use crate::maps::HashMap;
use crate::outbound::{Client, ClientOptions, SystemRoots};

pub use handler::{Handler, HandlerError, Handlers, Replying};
pub use reply::Reply;

/// A boxed future returned by sinks.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One delivery attempt as a sink sees it.
#[derive(Debug, Clone, Copy)]
pub struct Attempt<'a> {
    /// The event to deliver.
    pub event: &'a Event,
    /// The route that matched it (Event Grid's subscription name).
    pub route: &'a str,
    /// Attempts made before this one (`aeg-delivery-count`).
    pub delivery_count: u32,
}

/// A delivery target.
pub trait Sink: Send + Sync + std::fmt::Debug {
    /// Delivers one event; `Ok` only when the target confirmed it.
    fn deliver<'a>(&'a self, attempt: Attempt<'a>) -> BoxFuture<'a, Result<(), SinkError>>;

    /// Whether [`Sink::deliver_batch`] sends a batch as one request.
    fn batches(&self) -> bool {
        false
    }

    /// Delivers events as one request that succeeds or fails as a whole. Sinks that do not
    /// batch deliver them one after another and stop at the first failure.
    fn deliver_batch<'a>(
        &'a self,
        batch: &'a [Attempt<'a>],
    ) -> BoxFuture<'a, Result<(), SinkError>> {
        Box::pin(async move {
            for attempt in batch {
                self.deliver(*attempt).await?;
            }
            Ok(())
        })
    }

    /// Delivers one event like [`Sink::deliver`] and returns the event the target answered
    /// with (`reply: true`). Sinks whose targets cannot answer return [`Reply::None`].
    fn deliver_for_reply<'a>(
        &'a self,
        attempt: Attempt<'a>,
    ) -> BoxFuture<'a, Result<Reply, SinkError>> {
        Box::pin(async move { self.deliver(attempt).await.map(|()| Reply::None) })
    }

    /// The bytes `event` adds to a batch request (for `batch.max_bytes`).
    fn encoded_len(&self, event: &Event) -> usize {
        crate::event::http::encode_structured(event).len()
    }

    /// At least [`Sink::encoded_len`], found without encoding the event: what a batch adds up
    /// while it is far from `batch.max_bytes`.
    fn encoded_len_bound(&self, event: &Event) -> usize {
        crate::event::http::structured_len_bound(event)
    }
}

/// A failed attempt, classified for the retry decision.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct SinkError {
    /// Whether another attempt could succeed.
    pub retryable: bool,
    /// Event Grid's name for the outcome (`BadRequest`, `TimedOut`, `Busy`, …).
    pub outcome: &'static str,
    /// HTTP status, when the target answered.
    pub status: Option<u16>,
    /// The wait the target asked for (`Retry-After`).
    pub retry_after: Option<Duration>,
    /// What happened, for logs.
    pub message: String,
}

/// Outcome names shared by several sinks (Event Grid's `lastDeliveryOutcome` vocabulary,
/// plus `GenericError` for failures Event Grid has no name for).
pub mod outcome {
    /// The attempt did not finish within the sink's timeout.
    pub const TIMED_OUT: &str = "TimedOut";
    /// The target could not be reached, or the connection failed.
    pub const SOCKET_ERROR: &str = "SocketError";
    /// Any other failure.
    pub const GENERIC_ERROR: &str = "GenericError";
}

impl SinkError {
    /// A failure that a later attempt may get past.
    pub fn retryable(outcome: &'static str, message: impl Into<String>) -> Self {
        Self {
            retryable: true,
            outcome,
            status: None,
            retry_after: None,
            message: message.into(),
        }
    }

    /// A failure that no later attempt can fix.
    pub fn permanent(outcome: &'static str, message: impl Into<String>) -> Self {
        Self {
            retryable: false,
            ..Self::retryable(outcome, message)
        }
    }
}

/// The sinks of one configuration, by name.
#[derive(Debug, Default, Clone)]
pub struct Registry {
    sinks: HashMap<String, Arc<dyn Sink>>,
}

impl Registry {
    /// The sink called `name`.
    pub fn get(&self, name: &str) -> Option<Arc<dyn Sink>> {
        self.sinks.get(name).cloned()
    }

    /// The names of all sinks, in no particular order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.sinks.keys().map(String::as_str)
    }

    /// Adds (or replaces) a sink; for embedding programs and tests.
    pub fn insert(&mut self, name: impl Into<String>, sink: Arc<dyn Sink>) {
        self.sinks.insert(name.into(), sink);
    }
}

/// A sink that could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// A `handler` sink names a handler the embedding program did not register.
    #[error("sinks.{sink}.handler.name: no handler named {name:?} is registered")]
    UnknownHandler {
        /// The sink.
        sink: String,
        /// The handler name it asked for.
        name: String,
    },
    /// An `http` sink's client could not be built from its `tls` and `proxy` settings.
    #[error("sinks.{sink}.http: {source}")]
    Client {
        /// The sink.
        sink: String,
        /// Why.
        #[source]
        source: crate::outbound::BuildError,
    },
}

/// Builds every sink of a configuration. `http` sinks with the same `tls` and `proxy`
/// settings share one pooled client.
pub fn build(config: &Config, handlers: &Handlers) -> Result<Registry, BuildError> {
    let mut clients = Clients::default();
    let mut registry = Registry::default();
    // A reply is taken in like one event at ingress, so ingress's limits bound it.
    let reply_limit = config
        .ingress
        .max_event_bytes
        .min(config.ingress.max_request_bytes);
    for (name, sink) in &config.sinks {
        let built = build_one(sink, &mut clients, handlers, reply_limit)?;
        registry.insert(name.clone(), built);
    }
    Ok(registry)
}

/// The outbound clients of one build, by options; the system's roots are loaded once, by
/// the first `http` sink.
#[derive(Debug, Default)]
struct Clients {
    roots: Option<SystemRoots>,
    built: Vec<(ClientOptions, Client)>,
}

impl Clients {
    fn get(&mut self, sink: &str, options: ClientOptions) -> Result<Client, BuildError> {
        if let Some((_, client)) = self.built.iter().find(|(o, _)| *o == options) {
            return Ok(client.clone());
        }
        let roots = self.roots.get_or_insert_with(SystemRoots::load);
        let client = Client::new(&options, roots).map_err(|source| BuildError::Client {
            sink: sink.to_owned(),
            source,
        })?;
        self.built.push((options, client.clone()));
        Ok(client)
    }
}

fn build_one(
    sink: &SinkConfig,
    clients: &mut Clients,
    handlers: &Handlers,
    reply_limit: usize,
) -> Result<Arc<dyn Sink>, BuildError> {
    Ok(match &sink.kind {
        SinkKind::Http(c) => {
            let client = clients.get(&sink.name, http::client_options(c))?;
            let batched = sink.delivery.batch.enabled();
            Arc::new(
                http::HttpSink::new(client, &sink.name, c.clone(), batched)
                    .with_reply_limit(reply_limit),
            )
        }
        SinkKind::Log(c) => Arc::new(log::LogSink::new(c.level)),
        SinkKind::File(c) => Arc::new(file::FileSink::new(c.path.clone())),
        SinkKind::Exec(c) => Arc::new(exec::ExecSink::new(c.clone()).with_reply_limit(reply_limit)),
        SinkKind::Nats(c) => Arc::new(nats::NatsSink::new(c.clone())),
        SinkKind::Handler(c) => {
            let handler = handlers
                .get(&c.name)
                .ok_or_else(|| BuildError::UnknownHandler {
                    sink: sink.name.clone(),
                    name: c.name.clone(),
                })?;
            Arc::new(handler::HandlerSink::new(handler).with_reply_limit(reply_limit))
        }
    })
}

#[cfg(test)]
pub(crate) mod tests;
