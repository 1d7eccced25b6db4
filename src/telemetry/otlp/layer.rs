//! The `tracing` layer that records the spans exported over OTLP: it keeps the start time,
//! fields and ids of each `delivery` span and hands the finished span to the exporter.
//!
//! A span whose `traceparent` field holds a valid W3C value continues that trace: its trace
//! id comes from there and the caller's span becomes its parent. Otherwise it continues an
//! exported ancestor's trace, or starts one with random ids. Imports nothing internal.

use std::time::SystemTime;

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::subscriber::Interest;
use tracing::{Event, Metadata, Subscriber};
use tracing_subscriber::layer::{Context, Filter, Layer};
use tracing_subscriber::registry::{LookupSpan, Registry};

use super::context::{SpanId, TraceId, TraceParent};
use super::export;

/// Names of the spans exported.
const EXPORTED_SPANS: &[&str] = &["delivery"];
/// Target of the events that set the outcome of the exported span they happen in.
pub(crate) const OUTCOME_TARGET: &str = "switchyard::telemetry::outcome";
/// The outcomes an exported span can end with, from least to most severe; a batch attempt
/// whose deliveries ended differently keeps the most severe.
const OUTCOMES: &[&str] = &["success", "retry", "dead_letter"];
/// The field that carries the W3C trace context of the span's parent.
const TRACEPARENT: &str = "traceparent";

/// A value of a span attribute.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum AttrValue {
    /// Text, and anything recorded with `%` or `?`.
    Str(String),
    /// A whole number (unsigned ones past `i64::MAX` are clamped).
    Int(i64),
    /// A flag.
    Bool(bool),
    /// A floating-point number.
    Double(f64),
}

/// A finished span, as the exporter sends it.
#[derive(Debug, Clone)]
pub(crate) struct FinishedSpan {
    /// The span's name (`delivery`).
    pub(crate) name: &'static str,
    /// The trace it belongs to.
    pub(crate) trace_id: TraceId,
    /// Its own id.
    pub(crate) span_id: SpanId,
    /// Its parent's id; `None` for the root of a trace.
    pub(crate) parent_id: Option<SpanId>,
    /// When it was entered first.
    pub(crate) start: SystemTime,
    /// When it closed.
    pub(crate) end: SystemTime,
    /// Its fields, in the order recorded.
    pub(crate) attributes: Vec<(&'static str, AttrValue)>,
    /// How the work it covers ended (`success`, `retry`, `dead_letter`), if reported.
    pub(crate) outcome: Option<&'static str>,
}

/// A span in progress, kept in the span's extensions.
#[derive(Debug)]
struct Recording {
    span: FinishedSpan,
    /// The caller sampled the trace; unsampled spans are not exported.
    sampled: bool,
}

/// Records `delivery` spans and passes them to the exporter when they close. Inert (and
/// filtered out by [`ExportFilter`]) while no exporter is attached.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct OtlpLayer;

impl<S> Layer<S> for OtlpLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut fields = Fields::default();
        attrs.record(&mut fields);
        // With the per-layer filter, the nearest parent seen here is an exported span.
        let inherited = span.parent().and_then(|parent| {
            let extensions = parent.extensions();
            let recording = extensions.get::<Recording>()?;
            Some((
                recording.span.trace_id,
                recording.span.span_id,
                recording.sampled,
            ))
        });
        let (trace_id, parent_id, sampled) = match (fields.parent, inherited) {
            (Some(tp), _) => (tp.trace_id, Some(tp.parent_id), tp.sampled),
            (None, Some((trace, parent, sampled))) => (trace, Some(parent), sampled),
            (None, None) => (TraceId::random(), None, true),
        };
        let now = SystemTime::now();
        let recording = Recording {
            span: FinishedSpan {
                name: attrs.metadata().name(),
                trace_id,
                span_id: SpanId::random(),
                parent_id,
                start: now,
                end: now,
                attributes: fields.attributes,
                outcome: None,
            },
            sampled,
        };
        span.extensions_mut().insert(recording);
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut extensions = span.extensions_mut();
        if let Some(recording) = extensions.get_mut::<Recording>() {
            let mut fields = Fields::default();
            values.record(&mut fields);
            recording.span.attributes.append(&mut fields.attributes);
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        if event.metadata().target() != OUTCOME_TARGET {
            return;
        }
        let mut visitor = OutcomeField(None);
        event.record(&mut visitor);
        let (Some(outcome), Some(scope)) = (visitor.0, ctx.event_scope(event)) else {
            return;
        };
        for span in scope {
            if let Some(recording) = span.extensions_mut().get_mut::<Recording>() {
                let rank = |o: Option<&str>| o.and_then(|o| OUTCOMES.iter().position(|k| *k == o));
                if rank(Some(outcome)) > rank(recording.span.outcome) {
                    recording.span.outcome = Some(outcome);
                }
                return;
            }
        }
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(&id) else { return };
        let recording = span.extensions_mut().remove::<Recording>();
        if let Some(Recording { mut span, sampled }) = recording {
            if sampled {
                span.end = SystemTime::now();
                export::push(span);
            }
        }
    }
}

/// The W3C `traceparent` of the exported span the caller runs in (its trace, with that span
/// as the parent); `None` outside one, or when its trace is not sampled.
pub(crate) fn current_traceparent() -> Option<String> {
    let found = tracing::Span::current().with_subscriber(|(id, dispatch)| {
        let span = dispatch.downcast_ref::<Registry>()?.span(id)?;
        span.scope().find_map(|s| {
            let extensions = s.extensions();
            let recording = extensions.get::<Recording>()?;
            let FinishedSpan {
                trace_id, span_id, ..
            } = &recording.span;
            recording
                .sampled
                .then(|| format!("00-{trace_id}-{span_id}-01"))
        })
    });
    found.flatten()
}

/// Lets [`OtlpLayer`] see only exported spans and outcome events, and only while an
/// exporter is attached, so it costs other callsites nothing.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ExportFilter;

impl ExportFilter {
    fn interesting(metadata: &Metadata<'_>) -> bool {
        if metadata.is_span() {
            EXPORTED_SPANS.contains(&metadata.name())
        } else {
            metadata.target() == OUTCOME_TARGET
        }
    }
}

impl<S> Filter<S> for ExportFilter {
    fn enabled(&self, metadata: &Metadata<'_>, _: &Context<'_, S>) -> bool {
        Self::interesting(metadata) && export::is_attached()
    }

    fn callsite_enabled(&self, metadata: &'static Metadata<'static>) -> Interest {
        // `sometimes`: whether an exporter is attached changes at run time.
        if Self::interesting(metadata) {
            Interest::sometimes()
        } else {
            Interest::never()
        }
    }
}

/// The fields of a span: its attributes, and the parent its `traceparent` names.
#[derive(Debug, Default)]
struct Fields {
    attributes: Vec<(&'static str, AttrValue)>,
    parent: Option<TraceParent>,
}

impl Fields {
    fn add(&mut self, field: &Field, value: AttrValue) {
        self.attributes.push((field.name(), value));
    }
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == TRACEPARENT {
            self.parent = TraceParent::parse(value);
        } else {
            self.add(field, AttrValue::Str(value.to_owned()));
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.add(field, AttrValue::Int(value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.add(
            field,
            AttrValue::Int(i64::try_from(value).unwrap_or(i64::MAX)),
        );
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.add(field, AttrValue::Bool(value));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.add(field, AttrValue::Double(value));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        // `%value` arrives here too, formatted with its `Display`.
        self.record_str(field, &format!("{value:?}"));
    }
}

/// Reads the `outcome` field of an outcome event as one of [`OUTCOMES`].
struct OutcomeField(Option<&'static str>);

impl Visit for OutcomeField {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "outcome" {
            self.0 = OUTCOMES.iter().copied().find(|o| *o == value);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.record_str(field, &format!("{value:?}"));
    }
}
