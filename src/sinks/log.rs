//! The `log` sink: each event becomes one structured log line.

use tracing::Level;

use super::{Attempt, BoxFuture, Sink, SinkError};

/// Writes each event to the log at a configured level; never fails.
#[derive(Debug)]
pub(crate) struct LogSink {
    level: Level,
}

impl LogSink {
    pub(crate) fn new(level: Level) -> Self {
        Self { level }
    }
}

/// Emits one event at a level chosen at run time (the `tracing` macros want a constant).
macro_rules! event_at {
    ($level:expr, $($rest:tt)*) => {
        match $level {
            Level::ERROR => tracing::error!($($rest)*),
            Level::WARN => tracing::warn!($($rest)*),
            Level::INFO => tracing::info!($($rest)*),
            Level::DEBUG => tracing::debug!($($rest)*),
            _ => tracing::trace!($($rest)*),
        }
    };
}

impl Sink for LogSink {
    fn deliver<'a>(&'a self, attempt: Attempt<'a>) -> BoxFuture<'a, Result<(), SinkError>> {
        let event = attempt.event;
        event_at!(
            self.level,
            id = %event.id,
            r#type = %event.ty,
            source = %event.source,
            subject = event.subject.as_deref(),
            route = attempt.route,
            delivery_count = attempt.delivery_count,
            "Event received"
        );
        Box::pin(async { Ok(()) })
    }
}
