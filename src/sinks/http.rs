//! The `http` sink: one POST per attempt through a pooled client (see `outbound`), shared by
//! every http sink with the same `tls` and `proxy` settings.
//!
//! A sink with `batch.max_events` above 1 sends every attempt in the batch shape of its
//! format, even a batch of one, so the target always sees one shape: CloudEvents formats as
//! `application/cloudevents-batch+json`, `eventgrid` as its JSON array. A batch carries the
//! highest `aeg-delivery-count` of its events.
//!
//! With `sign` set, each request is signed over the exact bytes sent (see `sign`).

use std::time::SystemTime;

use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Request, Uri};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;

use super::classify::classify;
use super::outcome::{SOCKET_ERROR, TIMED_OUT};
use super::reply::{self, Carried, Reply};
use super::sign::Signer;
use super::{Attempt, BoxFuture, Sink, SinkError};
use crate::config::{HttpFormat, HttpSinkConfig, ProxySetting};
use crate::event::{eventgrid, http as binding, Event, ExtensionValue};
use crate::outbound::{Client, ClientOptions, Identity, Proxy};

/// Most response-body bytes read (and discarded) per attempt, so a huge reply costs little.
const MAX_RESPONSE_BODY: usize = 64 * 1024;

/// Bytes of a failed answer's body kept in the error (the delivery history shows them).
const BODY_IN_ERROR: usize = 256;

const STRUCTURED: &str = "application/cloudevents+json; charset=utf-8";
const EVENT_GRID: &str = "application/json; charset=utf-8";
const BATCH: &str = "application/cloudevents-batch+json; charset=utf-8";

/// The client options an http sink's settings ask for. Sinks whose options are equal share
/// one client, and with it one connection pool.
pub(crate) fn client_options(config: &HttpSinkConfig) -> ClientOptions {
    let tls = &config.tls;
    ClientOptions {
        extra_roots: tls
            .ca
            .as_ref()
            .map(|ca| ca.certs.clone())
            .unwrap_or_default(),
        identity: tls
            .client
            .as_ref()
            .map(|c| Identity::new(c.cert.certs.clone(), c.key().clone_key())),
        proxy: match &config.proxy {
            ProxySetting::Environment => Proxy::Environment,
            ProxySetting::Direct => Proxy::Direct,
            ProxySetting::Url(uri) => Proxy::Url((**uri).clone()),
        },
    }
}

/// Delivers to a webhook.
#[derive(Debug)]
pub(crate) struct HttpSink {
    client: Client,
    /// The sink's name, part of each delivery's `webhook-id`.
    name: String,
    config: HttpSinkConfig,
    /// Send the batch shape of the format, whatever the batch size.
    batched: bool,
    /// Signs each request, when `sign` is set.
    signer: Option<Signer>,
    /// Most bytes of a reply body read (`reply: true`).
    reply_limit: usize,
    /// The `Host` header of every request, made once: the client would otherwise format it
    /// for each request.
    host: Option<HeaderValue>,
}

/// A successful response whose body carries a reply, not read yet.
struct Answer {
    carried: Carried,
    headers: HeaderMap,
    body: Incoming,
}

impl HttpSink {
    pub(crate) fn new(client: Client, name: &str, config: HttpSinkConfig, batched: bool) -> Self {
        let signer = config.sign.as_ref().map(Signer::new);
        Self {
            client,
            name: name.to_owned(),
            host: host_value(&config.url),
            config,
            batched,
            signer,
            reply_limit: crate::config::MAX_BATCH_BYTES,
        }
    }

    /// A request's headers to start with: room for `capacity` more than the configured ones,
    /// and `Host` (which a configured `Host` replaces).
    fn headers(&self, capacity: usize) -> HeaderMap {
        let mut headers = HeaderMap::with_capacity(capacity + self.config.headers.len());
        if let Some(host) = &self.host {
            headers.insert(header::HOST, host.clone());
        }
        headers
    }

    /// Reads replies of at most `limit` bytes.
    pub(crate) fn with_reply_limit(mut self, limit: usize) -> Self {
        self.reply_limit = limit;
        self
    }

    async fn post(&self, batch: &[Attempt<'_>]) -> Result<(), SinkError> {
        self.exchange(batch, false).await.map(|_| ())
    }

    /// Sends one request and classifies the answer; with `want_reply`, a successful answer
    /// that carries a CloudEvent is read into a [`Reply`], all within the sink's timeout. A
    /// reply body that is too large or too slow is an invalid reply, not a failed delivery.
    async fn exchange(&self, batch: &[Attempt<'_>], want_reply: bool) -> Result<Reply, SinkError> {
        let request = match batch {
            [attempt] if !self.batched => self.request(*attempt)?,
            _ => self.batch_request(batch)?,
        };
        let deadline = tokio::time::Instant::now() + self.config.timeout;
        let exchange = async {
            let response = self.client.send(request).await.map_err(socket_error)?;
            let (parts, body) = response.into_parts();
            let classified = classify(parts.status, &parts.headers, SystemTime::now());
            let carried = want_reply.then(|| reply::carried(&parts.headers)).flatten();
            if let (Ok(()), Some(carried)) = (&classified, carried) {
                return Ok(Some(Answer {
                    carried,
                    headers: parts.headers,
                    body,
                }));
            }
            let keep = if classified.is_err() {
                BODY_IN_ERROR
            } else {
                0
            };
            let head = drain(body, keep).await?;
            classified.map(|()| None).map_err(|mut error| {
                if !head.is_empty() {
                    let text = String::from_utf8_lossy(&head);
                    error.message = format!("{}: {}", error.message, text.trim());
                }
                error
            })
        };
        let answer = tokio::time::timeout_at(deadline, exchange)
            .await
            .unwrap_or_else(|_| {
                let after = self.config.timeout;
                Err(SinkError::retryable(
                    TIMED_OUT,
                    format!("no complete answer within {after:?}"),
                ))
            })?;
        let Some(answer) = answer else {
            return Ok(Reply::None);
        };
        let limit = self.reply_limit;
        let read = tokio::time::timeout_at(deadline, read_limited(answer.body, limit)).await;
        Ok(match read {
            Ok(Ok(Some(body))) => reply::from_response(answer.carried, &answer.headers, body),
            Ok(Ok(None)) => reply::too_large(limit),
            Ok(Err(e)) => Reply::Invalid(format!("the reply body could not be read: {e}")),
            Err(_) => Reply::Invalid(format!(
                "the reply body was not read within {:?}",
                self.config.timeout
            )),
        })
    }

    fn request(&self, attempt: Attempt<'_>) -> Result<Request<Full<Bytes>>, SinkError> {
        // Room for every header a delivery usually carries, so the map never grows.
        let mut headers = self.headers(16);
        let body = encode(self.config.format, attempt.event, &mut headers);
        for (name, value) in &self.config.headers {
            headers.insert(name.clone(), value.clone());
        }
        aeg_headers(self.config.format, attempt, &mut headers);
        traceparent_header(attempt.event, &mut headers);
        self.sign(&[attempt], &body, &mut headers);
        self.build(body, headers)
    }

    /// Adds the signature headers last, so that no configured header replaces them.
    fn sign(&self, batch: &[Attempt<'_>], body: &[u8], headers: &mut HeaderMap) {
        if let Some(signer) = &self.signer {
            signer.sign(&self.name, batch, SystemTime::now(), body, headers);
        }
    }

    /// One request for a whole batch: the format's batch shape, the highest delivery count,
    /// and the event-specific headers only when the batch holds one event.
    fn batch_request(&self, batch: &[Attempt<'_>]) -> Result<Request<Full<Bytes>>, SinkError> {
        let Some(first) = batch.first() else {
            return Err(SinkError::permanent("BadRequest", "an empty batch"));
        };
        let mut headers = self.headers(12);
        let events = batch.iter().map(|a| a.event);
        let (body, content_type) = match self.config.format {
            HttpFormat::EventGrid => (eventgrid::encode(events), EVENT_GRID),
            _ => (binding::encode_batch(events), BATCH),
        };
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        for (name, value) in &self.config.headers {
            headers.insert(name.clone(), value.clone());
        }
        let delivery_count = batch.iter().map(|a| a.delivery_count).max().unwrap_or(0);
        let summary = Attempt {
            delivery_count,
            ..*first
        };
        aeg_headers(self.config.format, summary, &mut headers);
        if batch.len() > 1 {
            headers.remove("aeg-output-event-id");
            headers.remove("aeg-data-version");
        } else {
            traceparent_header(first.event, &mut headers);
        }
        self.sign(batch, &body, &mut headers);
        self.build(Bytes::from(body), headers)
    }

    fn build(&self, body: Bytes, headers: HeaderMap) -> Result<Request<Full<Bytes>>, SinkError> {
        let mut request = Request::post(self.config.url.clone())
            .body(Full::new(body))
            .map_err(|e| {
                SinkError::permanent("BadRequest", format!("cannot build request: {e}"))
            })?;
        *request.headers_mut() = headers;
        Ok(request)
    }
}

impl Sink for HttpSink {
    fn deliver<'a>(&'a self, attempt: Attempt<'a>) -> BoxFuture<'a, Result<(), SinkError>> {
        Box::pin(async move { self.post(&[attempt]).await })
    }

    fn deliver_for_reply<'a>(
        &'a self,
        attempt: Attempt<'a>,
    ) -> BoxFuture<'a, Result<Reply, SinkError>> {
        Box::pin(async move { self.exchange(&[attempt], true).await })
    }

    fn batches(&self) -> bool {
        true
    }

    fn deliver_batch<'a>(
        &'a self,
        batch: &'a [Attempt<'a>],
    ) -> BoxFuture<'a, Result<(), SinkError>> {
        Box::pin(self.post(batch))
    }

    fn encoded_len(&self, event: &Event) -> usize {
        match self.config.format {
            HttpFormat::EventGrid => eventgrid::encode([event]).len(),
            _ => binding::encode_structured(event).len(),
        }
    }

    fn encoded_len_bound(&self, event: &Event) -> usize {
        match self.config.format {
            HttpFormat::EventGrid => self.encoded_len(event),
            _ => binding::structured_len_bound(event),
        }
    }
}

fn encode(format: HttpFormat, event: &Event, headers: &mut HeaderMap) -> Bytes {
    match format {
        HttpFormat::CloudEventsBinary => binding::encode_binary(event, headers),
        HttpFormat::CloudEventsStructured => {
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(STRUCTURED));
            Bytes::from(binding::encode_structured(event))
        }
        HttpFormat::EventGrid => {
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(EVENT_GRID));
            Bytes::from(eventgrid::encode([event]))
        }
    }
}

/// Event Grid's delivery headers (reference §4.6). Values that are not valid header text
/// (an id with control characters, say) are left out rather than failing the delivery.
fn aeg_headers(format: HttpFormat, attempt: Attempt<'_>, headers: &mut HeaderMap) {
    const DELIVERY_COUNT: HeaderName = HeaderName::from_static("aeg-delivery-count");
    const EVENT_TYPE: HeaderName = HeaderName::from_static("aeg-event-type");
    const SUBSCRIPTION: HeaderName = HeaderName::from_static("aeg-subscription-name");
    const METADATA_VERSION: HeaderName = HeaderName::from_static("aeg-metadata-version");
    const OUTPUT_EVENT_ID: HeaderName = HeaderName::from_static("aeg-output-event-id");
    const DATA_VERSION: HeaderName = HeaderName::from_static("aeg-data-version");
    let event = attempt.event;
    headers.insert(DELIVERY_COUNT, count_value(attempt.delivery_count));
    headers.insert(EVENT_TYPE, HeaderValue::from_static("Notification"));
    let version = match format {
        HttpFormat::EventGrid => Some(HeaderValue::from_static("1")),
        _ => binding::version_value(&event.specversion)
            .or_else(|| HeaderValue::from_str(&event.specversion).ok()),
    };
    if let Some(version) = version {
        headers.insert(METADATA_VERSION, version);
    }
    let mut set = |name: HeaderName, value: &str| {
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert(name, value);
        }
    };
    set(SUBSCRIPTION, attempt.route);
    set(OUTPUT_EVENT_ID, &event.id);
    if format == HttpFormat::EventGrid {
        set(DATA_VERSION, event.data_version.as_deref().unwrap_or(""));
    }
}

/// The `Host` header for `url`, as the client would write it: the host, and the port when
/// it is not the scheme's default.
pub(crate) fn host_value(url: &Uri) -> Option<HeaderValue> {
    let host = url.host()?;
    let default = match url.scheme_str() {
        Some("https") => 443,
        _ => 80,
    };
    match url.port_u16() {
        Some(port) if port != default => HeaderValue::from_str(&format!("{host}:{port}")).ok(),
        _ => HeaderValue::from_str(host).ok(),
    }
}

/// A delivery count as a header value; the usual ones (below ten) are constants, made
/// without an allocation.
pub(crate) fn count_value(count: u32) -> HeaderValue {
    const SMALL: [&str; 10] = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];
    match usize::try_from(count).ok().and_then(|i| SMALL.get(i)) {
        Some(digit) => HeaderValue::from_static(digit),
        None => HeaderValue::from(count),
    }
}

/// A plain W3C `traceparent` header, so a target that knows trace context but not
/// CloudEvents joins the trace: the exported delivery span when there is one (the target's
/// spans become its children), else the event's `traceparent` extension.
fn traceparent_header(event: &Event, headers: &mut HeaderMap) {
    let value = match crate::telemetry::current_traceparent() {
        Some(own) => HeaderValue::from_str(&own).ok(),
        None => match event.extension("traceparent") {
            Some(ExtensionValue::String(value)) => HeaderValue::from_str(value).ok(),
            _ => None,
        },
    };
    if let Some(value) = value {
        const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
        headers.insert(TRACEPARENT, value);
    }
}

/// Reads and discards up to [`MAX_RESPONSE_BODY`] bytes, keeping the first `keep`; a longer
/// body is abandoned (its connection is then not reused).
async fn drain(mut body: Incoming, keep: usize) -> Result<Vec<u8>, SinkError> {
    let mut read = 0;
    let mut head = Vec::new();
    while read < MAX_RESPONSE_BODY {
        match body.frame().await {
            None => break,
            Some(Ok(frame)) => {
                let data = frame.data_ref().map_or(&[][..], |d| &d[..]);
                let room = keep.saturating_sub(head.len()).min(data.len());
                head.extend_from_slice(&data[..room]);
                read += data.len();
            }
            Some(Err(e)) => return Err(socket_error(e)),
        }
    }
    Ok(head)
}

/// Reads a whole body of at most `limit` bytes; `None` when it is longer.
async fn read_limited(body: Incoming, limit: usize) -> Result<Option<Bytes>, SinkError> {
    match http_body_util::Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(Some(collected.to_bytes())),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Ok(None),
        Err(e) => Err(SinkError::retryable(SOCKET_ERROR, e.to_string())),
    }
}

/// A transport failure, with its cause chain in the message.
fn socket_error(error: impl std::error::Error) -> SinkError {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    SinkError::retryable(SOCKET_ERROR, message)
}
