//! Trace export over OTLP/HTTP JSON: delivery spans, continuing the trace that the event's
//! `traceparent` names, sent in batches to an OpenTelemetry collector.
//!
//! `layer` records spans, `export` buffers and sends them, `encode` writes the OTLP JSON and
//! `context` reads and makes W3C trace ids. The layer is part of the subscriber that
//! [`crate::telemetry::init_logging`] installs; a daemon started without it (in tests, or
//! in a program that installed no subscriber) installs one holding only this layer.
//! Imports nothing internal but `outbound` (the HTTP client `export` posts with).

pub(crate) mod context;
mod encode;
mod export;
mod layer;

use tracing::Subscriber;
use tracing_subscriber::layer::{Layer, SubscriberExt as _};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt as _;

pub use export::SpanExport;
use layer::{ExportFilter, OtlpLayer, OUTCOME_TARGET};

/// The W3C `traceparent` naming the delivery span the caller runs in, for an outgoing
/// request to carry so that the receiver's spans become its children; `None` when no span
/// is being exported.
pub fn current_traceparent() -> Option<String> {
    layer::current_traceparent()
}

/// The layer that records delivery spans for export, for a program that builds its own
/// `tracing` subscriber; it records nothing until a daemon with `telemetry.otlp_endpoint`
/// starts.
pub fn otlp_layer<S>() -> impl Layer<S>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    OtlpLayer.with_filter(ExportFilter)
}

/// Sets how the work of the enclosing exported span ended: `success`, `retry` or
/// `dead_letter` (a batch keeps the most severe).
pub(crate) fn record_outcome(outcome: &'static str) {
    tracing::trace!(target: OUTCOME_TARGET, outcome);
}

/// Makes sure the process-wide subscriber holds the export layer, installing one with only
/// that layer when none is installed; false when another subscriber without it is.
fn ensure_layer() -> bool {
    if !tracing::dispatcher::has_been_set() {
        // Losing a race to another thread's installation is fine: that is checked below.
        let _installed = tracing_subscriber::registry()
            .with(otlp_layer())
            .try_init()
            .is_ok();
    }
    tracing::dispatcher::get_default(|dispatch| dispatch.downcast_ref::<OtlpLayer>().is_some())
}

#[cfg(test)]
mod tests;
