//! Rust handlers registered by an embedding program, adapted into sinks.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use super::outcome::GENERIC_ERROR;
use super::{Attempt, BoxFuture, Sink, SinkError};
use crate::event::to_sdk;

/// A Rust event handler that a route can deliver to by name (`handler: { name }`).
///
/// Any `Fn(cloudevents::Event) -> impl Future<Output = Result<(), HandlerError>>` is one.
pub trait Handler: Send + Sync + 'static {
    /// Handles one event; `Ok` acknowledges it.
    fn handle(&self, event: cloudevents::Event) -> BoxFuture<'_, Result<(), HandlerError>>;
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
}

impl std::fmt::Debug for HandlerSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HandlerSink").finish_non_exhaustive()
    }
}

impl HandlerSink {
    pub(crate) fn new(handler: Arc<dyn Handler>) -> Self {
        Self { handler }
    }

    async fn call(&self, event: cloudevents::Event) -> Result<(), SinkError> {
        let handler = self.handler.clone();
        // Its own task, so that a panicking handler fails one attempt instead of the
        // worker; awaited right here, and aborted if this attempt is dropped.
        let mut task = AbortOnDrop(tokio::spawn(async move { handler.handle(event).await }));
        match task.await_join().await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) if e.retryable => Err(SinkError::retryable(GENERIC_ERROR, e.message)),
            Ok(Err(e)) => Err(SinkError::permanent(GENERIC_ERROR, e.message)),
            Err(e) => Err(SinkError::retryable(
                "Aborted",
                format!("handler failed: {e}"),
            )),
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
        Box::pin(self.call(to_sdk(attempt.event)))
    }
}
