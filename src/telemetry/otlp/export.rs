//! The exporter: the OpenTelemetry SDK's batch span processor in front of the OTLP/HTTP
//! protobuf exporter, with a gate that bounds the queue and counts what it drops.
//!
//! The delivery path never waits for telemetry: a finished span is handed to the batch
//! processor's bounded queue without blocking, and past `queue` spans it is dropped and
//! counted (`reason="buffer_full"`). The processor exports from a thread of its own. Imports
//! `outbound` (the HTTP client) and nothing else internal.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderName, HeaderValue, Uri};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry::{Context, InstrumentationScope, KeyValue};
use opentelemetry_otlp::{Protocol, WithExportConfig as _, WithHttpConfig as _};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::resource::TelemetryResourceDetector;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, SdkTracerProvider, Span, SpanData, SpanExporter,
    SpanProcessor,
};
use opentelemetry_sdk::Resource;

use super::client::RuntimeClient;
use super::tracer;
use crate::outbound::{Client, ClientOptions, SystemRoots};
use crate::telemetry::{spans_dropped as dropped, spans_exported};

/// Most spans in one request.
const MAX_BATCH: usize = 512;
/// Longest a finished span waits before it is sent.
const INTERVAL: Duration = Duration::from_secs(1);
/// Time shutdown waits for the last batch.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// Where and how a daemon exports its spans (`telemetry` in the configuration, the
/// `OTEL_*` environment resolved).
#[derive(Debug, Clone, Copy)]
pub struct ExportSettings<'a> {
    /// The full URL spans are POSTed to (`…/v1/traces`).
    pub url: &'a Uri,
    /// The `service.name` resource attribute.
    pub service_name: &'a str,
    /// Further resource attributes.
    pub resource_attributes: &'a [(String, String)],
    /// Headers sent with every request (credentials: never logged).
    pub headers: &'a [(HeaderName, HeaderValue)],
    /// Time allowed for one request.
    pub timeout: Duration,
    /// Finished spans that may wait for export; past it, new spans are dropped and counted.
    pub queue: usize,
}

/// A daemon's span exporter: attached while this value lives. Call [`SpanExport::flush`]
/// at shutdown to send what is queued; dropping it detaches without waiting.
#[derive(Debug)]
pub struct SpanExport {
    running: Option<(u64, SdkTracerProvider)>,
}

impl SpanExport {
    /// Starts exporting as `settings` say; does nothing when they are `None`. Needs a Tokio
    /// runtime (export requests run on it).
    pub fn start(settings: Option<ExportSettings<'_>>) -> Self {
        let Some(settings) = settings else {
            return Self { running: None };
        };
        let provider = match provider(&settings) {
            Ok(provider) => provider,
            Err(error) => {
                tracing::error!(%error, "Cannot export spans; continuing without");
                return Self { running: None };
            }
        };
        if !super::ensure_layer() {
            tracing::warn!("The installed tracing subscriber has no span export layer; spans will not be exported");
        }
        let scope = InstrumentationScope::builder("switchyard")
            .with_version(env!("CARGO_PKG_VERSION"))
            .build();
        let generation = tracer::attach(provider.tracer_with_scope(scope));
        // The URL only: the headers may hold credentials.
        tracing::info!(url = %settings.url, service_name = settings.service_name, "Exporting spans over OTLP/HTTP");
        Self {
            running: Some((generation, provider)),
        }
    }

    /// Detaches the exporter and waits (a few seconds at most) until it has sent the spans
    /// it holds.
    pub async fn flush(mut self) {
        let Some((generation, provider)) = self.running.take() else {
            return;
        };
        tracer::detach(generation);
        // The processor's thread waits for the last export, which runs on this runtime.
        let stop =
            tokio::task::spawn_blocking(move || provider.shutdown_with_timeout(FLUSH_TIMEOUT));
        match tokio::time::timeout(FLUSH_TIMEOUT * 2, stop).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(error))) => tracing::warn!(%error, "The last spans were not exported"),
            Ok(Err(_)) | Err(_) => {
                tracing::warn!(timeout = ?FLUSH_TIMEOUT, "The last spans were not exported in time");
            }
        }
    }
}

impl Drop for SpanExport {
    fn drop(&mut self) {
        if let Some((generation, provider)) = self.running.take() {
            tracer::detach(generation);
            // Shutting the provider down waits for its thread: not on the caller's.
            let _stopping = std::thread::Builder::new()
                .name("span-export-stop".into())
                .spawn(move || drop(provider));
        }
    }
}

/// The tracer provider: resource, batch processor behind the gate, OTLP/HTTP exporter.
fn provider(settings: &ExportSettings<'_>) -> Result<SdkTracerProvider, String> {
    let client = Client::new(&ClientOptions::default(), &SystemRoots::load())
        .map_err(|e| format!("no HTTP client: {e}"))?;
    let runtime = tokio::runtime::Handle::try_current().map_err(|e| e.to_string())?;
    let headers: HashMap<String, String> = settings
        .headers
        .iter()
        .filter_map(|(name, value)| Some((name.to_string(), value.to_str().ok()?.to_owned())))
        .collect();
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(RuntimeClient::new(client, runtime, settings.timeout))
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(settings.url.to_string())
        .with_timeout(settings.timeout)
        .with_headers(headers)
        .build()
        .map_err(|e| e.to_string())?;
    let pending = Arc::new(AtomicUsize::new(0));
    let exporter = Counted {
        inner: exporter,
        pending: pending.clone(),
        failing: AtomicBool::new(false),
    };
    let config = BatchConfigBuilder::default()
        .with_max_queue_size(settings.queue)
        .with_max_export_batch_size(MAX_BATCH.min(settings.queue))
        .with_scheduled_delay(INTERVAL)
        .build();
    let gate = Gate {
        inner: BatchSpanProcessor::new(exporter, config),
        pending,
        capacity: settings.queue,
        stopped: AtomicBool::new(false),
    };
    Ok(SdkTracerProvider::builder()
        .with_span_processor(gate)
        .with_resource(resource(settings))
        .build())
}

fn resource(settings: &ExportSettings<'_>) -> Resource {
    let attributes = settings
        .resource_attributes
        .iter()
        .map(|(k, v)| KeyValue::new(k.clone(), v.clone()));
    Resource::builder_empty()
        .with_detector(Box::new(TelemetryResourceDetector))
        .with_attributes(attributes)
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .with_service_name(settings.service_name.to_owned())
        .build()
}

/// Bounds what waits for export: counts spans between the processor's queue and the
/// exporter, and drops (and counts) a span rather than let the processor's queue fill.
#[derive(Debug)]
struct Gate {
    inner: BatchSpanProcessor,
    /// Spans handed to `inner` and not yet taken by the exporter.
    pending: Arc<AtomicUsize>,
    /// Most spans `pending` may hold: the processor's queue size.
    capacity: usize,
    /// Shut down: spans that end now are not exported.
    stopped: AtomicBool,
}

impl SpanProcessor for Gate {
    fn on_start(&self, span: &mut Span, cx: &Context) {
        self.inner.on_start(span, cx);
    }

    fn on_end(&self, span: SpanData) {
        if self.stopped.load(Ordering::Relaxed) {
            dropped("exporter_stopped", 1);
            return;
        }
        if self.pending.fetch_add(1, Ordering::AcqRel) >= self.capacity {
            self.pending.fetch_sub(1, Ordering::AcqRel);
            dropped("buffer_full", 1);
            return;
        }
        self.inner.on_end(span);
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.stopped.store(true, Ordering::Relaxed);
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// The OTLP exporter, counting what it sends and what fails.
#[derive(Debug)]
struct Counted<E> {
    inner: E,
    /// Shared with [`Gate`]: a batch taken for export leaves the count.
    pending: Arc<AtomicUsize>,
    /// The last export failed (failures are logged at WARN once, then until recovery at DEBUG).
    failing: AtomicBool,
}

impl<E: SpanExporter> SpanExporter for Counted<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let n = batch.len();
        let _taken = self
            .pending
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |p| {
                Some(p.saturating_sub(n))
            });
        let result = self.inner.export(batch).await;
        match &result {
            Ok(()) => {
                spans_exported(n);
                if self.failing.swap(false, Ordering::Relaxed) {
                    tracing::info!("Span export recovered");
                }
            }
            Err(error) => {
                dropped("export_failed", n);
                if self.failing.swap(true, Ordering::Relaxed) {
                    tracing::debug!(%error, spans = n, "Span export failed");
                } else {
                    tracing::warn!(%error, spans = n, "Span export failed; dropping spans until the collector answers");
                }
            }
        }
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}
