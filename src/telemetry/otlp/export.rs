//! The exporter: a bounded buffer between the layer and a background task that POSTs
//! batches of finished spans to `{endpoint}/v1/traces` as OTLP/HTTP JSON.
//!
//! The `tracing` subscriber is process-wide, so the buffer's sending end is too: a daemon
//! attaches its exporter when it starts and detaches it when it stops, and the one attached
//! last receives every exported span of the process (several daemons in one test process
//! share it). Imports `outbound` (the HTTP client) and nothing else internal.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::RwLock;
use std::time::Duration;

use axum::http::{header, Request, Uri};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use tokio::sync::mpsc::{self, error::TrySendError};
use tokio::task::JoinHandle;

use super::encode;
use super::layer::FinishedSpan;
use crate::outbound::{Client, ClientOptions, SystemRoots};
use crate::telemetry::{spans_dropped as dropped, spans_exported};

/// Finished spans waiting for the exporter; past this, new spans are dropped and counted,
/// because the delivery path must never wait for telemetry.
const BUFFER: usize = 2048;
/// Most spans in one request.
const MAX_BATCH: usize = 512;
/// Longest a finished span waits before it is sent.
const INTERVAL: Duration = Duration::from_secs(1);
/// Time allowed for one request, the collector's answer included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Time shutdown waits for the last batch.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest collector answer read (it is read only so the connection can be reused).
const MAX_ANSWER: usize = 64 * 1024;

/// The process-wide sending end; `None` while no exporter is attached.
static SENDER: RwLock<Option<Attached>> = RwLock::new(None);
/// Mirrors `SENDER.is_some()`, read by the layer's filter without taking the lock.
static ATTACHED: AtomicBool = AtomicBool::new(false);
/// Numbers the exporters, so a stopping daemon detaches only its own.
static GENERATION: AtomicU64 = AtomicU64::new(0);

#[derive(Debug)]
struct Attached {
    generation: u64,
    sender: mpsc::Sender<FinishedSpan>,
}

/// Whether an exporter is attached (spans are recorded only then).
pub(crate) fn is_attached() -> bool {
    ATTACHED.load(Ordering::Relaxed)
}

/// Hands a finished span to the attached exporter without waiting; drops and counts it
/// when the buffer is full.
pub(crate) fn push(span: FinishedSpan) {
    let slot = SENDER.read().unwrap_or_else(|e| e.into_inner());
    let Some(attached) = slot.as_ref() else {
        return;
    };
    match attached.sender.try_send(span) {
        Ok(()) => {}
        Err(TrySendError::Full(_)) => dropped("buffer_full", 1),
        Err(TrySendError::Closed(_)) => dropped("exporter_stopped", 1),
    }
}

/// A daemon's span exporter: attached while this value lives. Call [`SpanExport::flush`]
/// at shutdown to send what is buffered; dropping it detaches without waiting.
#[derive(Debug)]
pub struct SpanExport {
    running: Option<(u64, JoinHandle<()>)>,
}

impl SpanExport {
    /// Starts exporting to the collector at `endpoint` (spans go to `{endpoint}/v1/traces`)
    /// as `service_name`; does nothing when `endpoint` is `None`. Needs a Tokio runtime.
    pub fn start(endpoint: Option<&Uri>, service_name: &str) -> Self {
        let Some(endpoint) = endpoint else {
            return Self { running: None };
        };
        let Some(poster) = Poster::new(endpoint, service_name) else {
            return Self { running: None };
        };
        if !super::ensure_layer() {
            tracing::warn!("The installed tracing subscriber has no span export layer; spans will not be exported");
        }
        let (sender, receiver) = mpsc::channel(BUFFER);
        let task = tokio::spawn(run(receiver, poster));
        let generation = attach(sender);
        tracing::info!(endpoint = %endpoint, service_name, "Exporting delivery spans over OTLP");
        Self {
            running: Some((generation, task)),
        }
    }

    /// Detaches the exporter and waits (a few seconds at most) until it has sent the spans
    /// it holds.
    pub async fn flush(mut self) {
        let Some((generation, task)) = self.running.take() else {
            return;
        };
        detach(generation);
        if tokio::time::timeout(FLUSH_TIMEOUT, task).await.is_err() {
            tracing::warn!(timeout = ?FLUSH_TIMEOUT, "The last spans were not exported in time");
        }
    }
}

impl Drop for SpanExport {
    fn drop(&mut self) {
        if let Some((generation, _task)) = self.running.take() {
            detach(generation);
        }
    }
}

/// Makes `sender` the process-wide sending end, replacing any other; returns its generation.
pub(super) fn attach(sender: mpsc::Sender<FinishedSpan>) -> u64 {
    let generation = GENERATION.fetch_add(1, Ordering::Relaxed);
    *SENDER.write().unwrap_or_else(|e| e.into_inner()) = Some(Attached { generation, sender });
    ATTACHED.store(true, Ordering::Relaxed);
    generation
}

/// Drops the sending end if it is still `generation`'s; its task then sends what it holds
/// and ends.
pub(super) fn detach(generation: u64) {
    let mut slot = SENDER.write().unwrap_or_else(|e| e.into_inner());
    if slot.as_ref().is_some_and(|a| a.generation == generation) {
        *slot = None;
        ATTACHED.store(false, Ordering::Relaxed);
    }
}

/// Collects spans into batches and sends each when it is full or [`INTERVAL`] has passed;
/// sends the rest and ends when the sending end is dropped.
async fn run(mut spans: mpsc::Receiver<FinishedSpan>, mut poster: Poster) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut tick = tokio::time::interval(INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            received = spans.recv() => match received {
                Some(span) => {
                    batch.push(span);
                    if batch.len() >= MAX_BATCH {
                        poster.send(&mut batch).await;
                    }
                }
                None => break,
            },
            _ = tick.tick() => poster.send(&mut batch).await,
        }
    }
    poster.send(&mut batch).await;
}

/// Sends batches to the collector.
#[derive(Debug)]
struct Poster {
    client: Client,
    url: Uri,
    service_name: String,
    /// The last request failed (failures are logged at WARN once, then until recovery at DEBUG).
    failing: bool,
}

impl Poster {
    fn new(endpoint: &Uri, service_name: &str) -> Option<Self> {
        let base = endpoint.to_string();
        let url = match format!("{}/v1/traces", base.trim_end_matches('/')).parse::<Uri>() {
            Ok(url) => url,
            Err(error) => {
                tracing::error!(endpoint = %endpoint, %error, "Invalid OTLP endpoint; spans will not be exported");
                return None;
            }
        };
        // The system's roots, and the environment's proxy for a collector off this host.
        let client = match Client::new(&ClientOptions::default(), &SystemRoots::load()) {
            Ok(client) => client,
            Err(error) => {
                tracing::error!(%error, "No client for the OTLP endpoint; spans will not be exported");
                return None;
            }
        };
        Some(Self {
            client,
            url,
            service_name: service_name.to_owned(),
            failing: false,
        })
    }

    /// POSTs `batch` (emptying it); a failed batch is dropped and counted.
    async fn send(&mut self, batch: &mut Vec<FinishedSpan>) {
        if batch.is_empty() {
            return;
        }
        let body = encode::traces(&self.service_name, batch);
        let n = batch.len();
        batch.clear();
        match self.post(body).await {
            Ok(()) => {
                spans_exported(n);
                if std::mem::take(&mut self.failing) {
                    tracing::info!(url = %self.url, "Span export recovered");
                }
            }
            Err(error) => {
                dropped("export_failed", n);
                if std::mem::replace(&mut self.failing, true) {
                    tracing::debug!(url = %self.url, %error, spans = n, "Span export failed");
                } else {
                    tracing::warn!(url = %self.url, %error, spans = n, "Span export failed; dropping spans until the collector answers");
                }
            }
        }
    }

    async fn post(&self, body: Vec<u8>) -> Result<(), ExportError> {
        let request = Request::post(self.url.clone())
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(ExportError::Request)?;
        let exchange = async {
            let response = self.client.send(request).await?;
            let status = response.status();
            // Read to the end so the connection goes back to the pool.
            let _answer = Limited::new(response.into_body(), MAX_ANSWER)
                .collect()
                .await;
            Ok::<_, ExportError>(status)
        };
        let status = tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .map_err(|_| ExportError::Timeout)??;
        if status.is_success() {
            Ok(())
        } else {
            Err(ExportError::Status(status.as_u16()))
        }
    }
}

/// Why a batch could not be exported.
#[derive(Debug, thiserror::Error)]
enum ExportError {
    #[error("cannot build the request: {0}")]
    Request(#[source] axum::http::Error),
    #[error("request failed: {0}")]
    Send(#[from] hyper_util::client::legacy::Error),
    #[error("no answer within {REQUEST_TIMEOUT:?}")]
    Timeout,
    #[error("the collector answered {0}")]
    Status(u16),
}
