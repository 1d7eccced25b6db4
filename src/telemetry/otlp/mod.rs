//! Trace export with the OpenTelemetry SDK: an `ingress` span for each publish request and
//! a `delivery` span for each attempt, continuing the trace that the publisher's
//! `traceparent` names, exported over OTLP/HTTP (protobuf) to a collector.
//!
//! `tracing-opentelemetry` turns the two `tracing` spans into OpenTelemetry spans (`tracer`
//! holds the process-wide tracer it starts them with and the filter that hides every other
//! span and event from it); `export` runs the SDK's batch processor and the OTLP exporter
//! behind a bounded, counted queue; `client` posts through the daemon's own HTTP client. The
//! layer is part of the subscriber that [`crate::telemetry::init_logging`] installs; a daemon
//! started without it (in tests, or in a program that installed no subscriber) installs one
//! holding only this layer. Imports nothing internal but `outbound` (the HTTP client).

mod client;
mod export;
mod tracer;

use axum::http::HeaderMap;
use opentelemetry::propagation::{Extractor, TextMapPropagator as _};
use opentelemetry::trace::{Status, TraceContextExt as _};
use opentelemetry::Context;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing::Subscriber;
use tracing_opentelemetry::{OpenTelemetryLayer, OpenTelemetrySpanExt as _};
use tracing_subscriber::layer::{Layer, SubscriberExt as _};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt as _;

pub use export::{ExportSettings, SpanExport};
use tracer::{is_attached, ExportFilter, SwitchTracer};

/// The W3C trace context header (and CloudEvents extension).
const TRACEPARENT: &str = "traceparent";

/// The layer that records `ingress` and `delivery` spans for export, for a program that
/// builds its own `tracing` subscriber; it records nothing until a daemon that exports
/// spans starts.
pub fn otlp_layer<S>() -> impl Layer<S>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    OpenTelemetryLayer::new(SwitchTracer)
        .with_context_activation(false)
        .with_tracked_inactivity(false)
        .with_threads(false)
        .with_location(false)
        .with_level(false)
        .with_target(false)
        .with_filter(ExportFilter)
}

/// Whether spans are being exported (a daemon with an exporter is running).
pub fn exporting() -> bool {
    is_attached()
}

/// The W3C `traceparent` naming the exported span the caller runs in, for an outgoing
/// request to carry so that the receiver's spans become its children; `None` when no span
/// is being exported or its trace is not sampled.
pub fn current_traceparent() -> Option<String> {
    if !is_attached() {
        return None;
    }
    let cx = tracing::Span::current().context();
    let span = cx.span();
    let sc = span.span_context();
    (sc.is_valid() && sc.is_sampled()).then(|| format!("00-{}-{}-01", sc.trace_id(), sc.span_id()))
}

/// The span of one publish request, from its arrival until its events are stored (or
/// refused); a child of the request's `traceparent` when it has a valid one. A disabled
/// span while no exporter is attached.
pub fn ingress_span(headers: &HeaderMap) -> tracing::Span {
    // Only for export: while nothing is exported a request costs no span at all.
    if !is_attached() {
        return tracing::Span::none();
    }
    let span = tracing::info_span!(
        "ingress",
        otel.kind = "server",
        events = tracing::field::Empty,
        event_id = tracing::field::Empty,
        outcome = tracing::field::Empty,
    );
    if !span.is_disabled() {
        let parent = headers.get(TRACEPARENT).and_then(|v| v.to_str().ok());
        continue_trace(&span, parent);
    }
    span
}

/// Makes `span` a child of the span that the W3C `traceparent` value names (so it continues
/// that trace); leaves it a root when the value is absent or invalid.
pub fn continue_trace(span: &tracing::Span, traceparent: Option<&str>) {
    let Some(cx) = traceparent.and_then(extract) else {
        return;
    };
    // Fails only when the span is not recorded for export, which needs no parent.
    let _not_exported = span.set_parent(cx);
}

/// Sets how the work of `span` ended: `accepted`, `success` (status OK) or `rejected`,
/// `retry`, `dead_letter` (status error).
pub fn span_outcome(span: &tracing::Span, outcome: &'static str) {
    if span.is_disabled() {
        return;
    }
    span.set_attribute("outcome", outcome);
    match outcome {
        "success" | "accepted" => span.set_status(Status::Ok),
        failed => span.set_status(Status::error(failed)),
    }
}

/// The remote parent a valid `traceparent` value names.
fn extract(traceparent: &str) -> Option<Context> {
    if !well_formed(traceparent) {
        return None;
    }
    let cx = TraceContextPropagator::new().extract(&OneHeader(traceparent));
    cx.span().span_context().is_valid().then_some(cx)
}

/// Whether `value` has the W3C form `vv-<32 hex>-<16 hex>-ff` in lower-case hex (version
/// `00` exactly that; a later version may add `-…`). The SDK's parser reads each part as a
/// number of any length (`00-1-1-1`, `+1`), so it is shown only values of this form.
fn well_formed(value: &str) -> bool {
    let b = value.as_bytes();
    let hex = |part: &[u8]| part.iter().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'));
    b.len() >= 55
        && hex(&b[0..2])
        && &b[0..2] != b"ff"
        && b[2] == b'-'
        && hex(&b[3..35])
        && b[35] == b'-'
        && hex(&b[36..52])
        && b[52] == b'-'
        && hex(&b[53..55])
        && (b.len() == 55 || (&b[0..2] != b"00" && b[55] == b'-'))
}

/// What a `traceparent` value says: trace id and parent span id (lower-case hex), sampled.
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn parse_traceparent(value: &str) -> Option<(String, String, bool)> {
    let cx = extract(value)?;
    let span = cx.span();
    let sc = span.span_context();
    Some((
        sc.trace_id().to_string(),
        sc.span_id().to_string(),
        sc.is_sampled(),
    ))
}

/// A carrier holding only a `traceparent` value.
struct OneHeader<'a>(&'a str);

impl Extractor for OneHeader<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        key.eq_ignore_ascii_case(TRACEPARENT).then_some(self.0)
    }

    fn keys(&self) -> Vec<&str> {
        vec![TRACEPARENT]
    }
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
    tracing::dispatcher::get_default(|dispatch| dispatch.downcast_ref::<ExportFilter>().is_some())
}

#[cfg(test)]
mod tests;
