//! Rust handlers registered by an embedding program, adapted into sinks.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use super::outcome::GENERIC_ERROR;
use super::reply::{self, Reply};
use super::{Attempt, BoxFuture, Sink, SinkError};
use crate::event::to_sdk;

/// A Rust event handler that a route can deliver to by name (`handler: { name }`).
///
/// Any `Fn(cloudevents::Event) -> impl Future<Output = Result<(), HandlerError>>` is one.
pub trait Handler: Send + Sync + 'static {
    /// Handles one event; `Ok` acknowledges it.
    fn handle(&self, event: cloudevents::Event) -> BoxFuture<'_, Result<(), HandlerError>>;

    /// Handles one event for a sink with `reply: true`; `Ok(Some(event))` answers with an
    /// event, which is routed like one received over HTTP. The default calls
    /// [`Handler::handle`] and answers with nothing.
    fn handle_reply(
        &self,
        event: cloudevents::Event,
    ) -> BoxFuture<'_, Result<Option<cloudevents::Event>, HandlerError>> {
        let handled = self.handle(event);
        Box::pin(async move { handled.await.map(|()| None) })
    }
}

/// A handler that may answer with an event: any
/// `Fn(cloudevents::Event) -> impl Future<Output = Result<Option<cloudevents::Event>, HandlerError>>`
/// wrapped in `Replying`. Without `reply: true` on its sink the answer is dropped.
pub struct Replying<F>(pub F);

impl<F> std::fmt::Debug for Replying<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replying").finish_non_exhaustive()
    }
}

impl<F, Fut> Handler for Replying<F>
where
    F: Fn(cloudevents::Event) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Option<cloudevents::Event>, HandlerError>> + Send + 'static,
{
    fn handle(&self, event: cloudevents::Event) -> BoxFuture<'_, Result<(), HandlerError>> {
        let answered = (self.0)(event);
        Box::pin(async move { answered.await.map(|_| ()) })
    }

    fn handle_reply(
        &self,
        event: cloudevents::Event,
    ) -> BoxFuture<'_, Result<Option<cloudevents::Event>, HandlerError>> {
        Box::pin((self.0)(event))
    }
}

impl<F, Fut> Handler for F
where
    F: Fn(cloudevents::Event) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), HandlerError>> + Send + 'static,
{
    fn handle(&self, event: cloudevents::Event) -> BoxFuture<'_, Result<(), HandlerError>> {
        Box::pin(self(event))
    }
}

/// A handler's failure.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct HandlerError {
    /// Whether a later attempt could succeed.
    pub retryable: bool,
    /// What went wrong.
    pub message: String,
}

impl HandlerError {
    /// A failure worth retrying.
    pub fn retry(message: impl Into<String>) -> Self {
        Self {
            retryable: true,
            message: message.into(),
        }
    }

    /// A failure no retry can fix (the delivery is dead-lettered).
    pub fn permanent(message: impl Into<String>) -> Self {
        Self {
            retryable: false,
            message: message.into(),
        }
    }
}

/// Registered handlers by name.
#[derive(Default, Clone)]
pub struct Handlers {
    map: HashMap<String, Arc<dyn Handler>>,
}

impl std::fmt::Debug for Handlers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.map.keys()).finish()
    }
}

impl Handlers {
    /// Registers `handler` under `name`, replacing any earlier one.
    pub fn insert(&mut self, name: impl Into<String>, handler: impl Handler) {
        self.map.insert(name.into(), Arc::new(handler));
    }

    /// The handler registered under `name`.
    pub fn get(&self, name: &str) -> Option<Arc<dyn Handler>> {
        self.map.get(name).cloned()
    }
}

/// Adapts a registered [`Handler`] into a [`Sink`].
pub(crate) struct HandlerSink {
    handler: Arc<dyn Handler>,
    /// Most bytes of a reply event, as structured JSON.
    reply_limit: usize,
}

impl std::fmt::Debug for HandlerSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HandlerSink").finish_non_exhaustive()
    }
}

impl HandlerSink {
    pub(crate) fn new(handler: Arc<dyn Handler>) -> Self {
        Self {
            handler,
            reply_limit: crate::config::MAX_BATCH_BYTES,
        }
    }

    /// Takes replies of at most `limit` bytes (as structured JSON).
    pub(crate) fn with_reply_limit(mut self, limit: usize) -> Self {
        self.reply_limit = limit;
        self
    }

    async fn call(&self, event: cloudevents::Event, want_reply: bool) -> Result<Reply, SinkError> {
        let handler = self.handler.clone();
        // Its own task, so that a panicking handler fails one attempt instead of the
        // worker; awaited right here, and aborted if this attempt is dropped.
        let mut task = AbortOnDrop(tokio::spawn(async move {
            match want_reply {
                true => handler.handle_reply(event).await,
                false => handler.handle(event).await.map(|()| None),
            }
        }));
        match task.await_join().await {
            Ok(Ok(answer)) => Ok(self.reply(answer)),
            Ok(Err(e)) if e.retryable => Err(SinkError::retryable(GENERIC_ERROR, e.message)),
            Ok(Err(e)) => Err(SinkError::permanent(GENERIC_ERROR, e.message)),
            Err(e) => Err(SinkError::retryable(
                "Aborted",
                format!("handler failed: {e}"),
            )),
        }
    }
}

impl HandlerSink {
    /// The handler's answer read as ingress reads a structured event.
    fn reply(&self, answer: Option<cloudevents::Event>) -> Reply {
        let Some(event) = answer else {
            return Reply::None;
        };
        match serde_json::to_vec(&event) {
            Ok(json) if json.len() > self.reply_limit => reply::too_large(self.reply_limit),
            Ok(json) => reply::from_json(&json),
            Err(e) => Reply::Invalid(format!("the event cannot be written as JSON: {e}")),
        }
    }
}

/// A task handle that aborts its task when dropped.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> AbortOnDrop<T> {
    async fn await_join(&mut self) -> Result<T, tokio::task::JoinError> {
        (&mut self.0).await
    }
}

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Sink for HandlerSink {
    fn deliver<'a>(&'a self, attempt: Attempt<'a>) -> BoxFuture<'a, Result<(), SinkError>> {
        Box::pin(async move { self.call(to_sdk(attempt.event), false).await.map(|_| ()) })
    }

    fn deliver_for_reply<'a>(
        &'a self,
        attempt: Attempt<'a>,
    ) -> BoxFuture<'a, Result<Reply, SinkError>> {
        Box::pin(self.call(to_sdk(attempt.event), true))
    }
}
