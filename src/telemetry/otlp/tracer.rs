//! The process-wide tracer behind the export layer, and the filter that lets the layer see
//! only exported spans.
//!
//! The `tracing` subscriber is installed once per process, but each daemon has its own
//! exporter (endpoint, resource, headers): a daemon attaches its SDK tracer when it starts and
//! detaches it when it stops, and the one attached last records every exported span of the
//! process (several daemons in one test process share it). A span keeps the tracer it was
//! started with, so it reaches its own daemon's exporter even if another attaches meanwhile.
//! Imports nothing internal.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{OnceLock, RwLock};

use opentelemetry::trace::{SpanBuilder, Tracer, TracerProvider as _};
use opentelemetry::Context;
use opentelemetry_sdk::trace::{Sampler, SdkTracer, SdkTracerProvider, Span};
use tracing::subscriber::Interest;
use tracing::Metadata;
use tracing_subscriber::layer::{Context as LayerContext, Filter};

/// Names of the spans exported: the ingress request and each delivery attempt.
pub(crate) const EXPORTED_SPANS: &[&str] = &["ingress", "delivery"];

/// The attached tracer and its generation; `None` while no exporter is attached.
static CURRENT: RwLock<Option<(u64, SdkTracer)>> = RwLock::new(None);
/// Mirrors `CURRENT.is_some()`, read by the filter without taking the lock.
static ATTACHED: AtomicBool = AtomicBool::new(false);
/// Numbers the exporters, so a stopping daemon detaches only its own.
static GENERATION: AtomicU64 = AtomicU64::new(0);

/// Whether a tracer is attached (spans are recorded only then).
pub(crate) fn is_attached() -> bool {
    ATTACHED.load(Ordering::Relaxed)
}

/// Makes `tracer` the process-wide one, replacing any other; returns its generation.
pub(super) fn attach(tracer: SdkTracer) -> u64 {
    let generation = GENERATION.fetch_add(1, Ordering::Relaxed);
    *CURRENT.write().unwrap_or_else(|e| e.into_inner()) = Some((generation, tracer));
    ATTACHED.store(true, Ordering::Relaxed);
    generation
}

/// Drops the tracer if it is still `generation`'s.
pub(super) fn detach(generation: u64) {
    let mut slot = CURRENT.write().unwrap_or_else(|e| e.into_inner());
    if slot.as_ref().is_some_and(|(g, _)| *g == generation) {
        *slot = None;
        ATTACHED.store(false, Ordering::Relaxed);
    }
}

/// The tracer `tracing-opentelemetry` starts spans with: whichever is attached when a span
/// starts, or one that records nothing.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct SwitchTracer;

impl Tracer for SwitchTracer {
    type Span = Span;

    fn build_with_context(&self, builder: SpanBuilder, parent_cx: &Context) -> Span {
        let slot = CURRENT.read().unwrap_or_else(|e| e.into_inner());
        match slot.as_ref() {
            Some((_, tracer)) => tracer.build_with_context(builder, parent_cx),
            None => idle().build_with_context(builder, parent_cx),
        }
    }
}

/// A tracer that samples nothing, for a span that starts between two daemons.
fn idle() -> &'static SdkTracer {
    static IDLE: OnceLock<SdkTracer> = OnceLock::new();
    IDLE.get_or_init(|| {
        SdkTracerProvider::builder()
            .with_sampler(Sampler::AlwaysOff)
            .build()
            .tracer("switchyard")
    })
}

/// Lets the export layer see only [`EXPORTED_SPANS`], and only while a tracer is attached,
/// so it costs other callsites (and every log event) nothing.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ExportFilter;

impl ExportFilter {
    fn interesting(metadata: &Metadata<'_>) -> bool {
        metadata.is_span() && EXPORTED_SPANS.contains(&metadata.name())
    }
}

impl<S> Filter<S> for ExportFilter {
    fn enabled(&self, metadata: &Metadata<'_>, _: &LayerContext<'_, S>) -> bool {
        Self::interesting(metadata) && is_attached()
    }

    fn callsite_enabled(&self, metadata: &'static Metadata<'static>) -> Interest {
        // `sometimes`: whether a tracer is attached changes at run time.
        if Self::interesting(metadata) {
            Interest::sometimes()
        } else {
            Interest::never()
        }
    }
}
