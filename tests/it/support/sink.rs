//! A real HTTP sink server whose answers the test programs and which records every request.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;

/// One programmed answer.
#[derive(Debug, Clone)]
pub(crate) struct Respond {
    pub(crate) status: u16,
    pub(crate) retry_after: Option<String>,
    pub(crate) delay: Duration,
    /// Further response headers.
    pub(crate) headers: Vec<(String, String)>,
    /// The response body (empty by default).
    pub(crate) body: Bytes,
}

impl Respond {
    /// Answer with `status`.
    pub(crate) fn status(status: u16) -> Self {
        Self {
            status,
            retry_after: None,
            delay: Duration::ZERO,
            headers: Vec::new(),
            body: Bytes::new(),
        }
    }

    /// Add a response header.
    pub(crate) fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Answer with this body.
    pub(crate) fn body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = body.into();
        self
    }

    /// Add a `Retry-After` header.
    pub(crate) fn retry_after(mut self, value: &str) -> Self {
        self.retry_after = Some(value.to_owned());
        self
    }

    /// Wait before answering.
    pub(crate) fn delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
}

/// A request the sink received.
#[derive(Debug, Clone)]
pub(crate) struct Received {
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
    pub(crate) at: tokio::time::Instant,
    /// The status this request was answered with.
    pub(crate) status: u16,
}

impl Received {
    /// A header as a string.
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The body as JSON.
    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("sink body is JSON")
    }
}

#[derive(Debug)]
struct Inner {
    script: Mutex<VecDeque<Respond>>,
    default: Mutex<Respond>,
    received: Mutex<Vec<Received>>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

/// The sink server.
#[derive(Debug, Clone)]
pub(crate) struct TestSink {
    inner: Arc<Inner>,
    pub(crate) addr: SocketAddr,
}

impl TestSink {
    /// Starts a sink that answers 200 unless programmed otherwise.
    pub(crate) async fn start() -> Self {
        Self::start_on(0).await
    }

    /// Like [`TestSink::start`], on 127.0.0.1:`port` (0: any free port).
    pub(crate) async fn start_on(port: u16) -> Self {
        let inner = Arc::new(Inner {
            script: Mutex::new(VecDeque::new()),
            default: Mutex::new(Respond::status(200)),
            received: Mutex::new(Vec::new()),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
        });
        let app = Router::new().fallback(handle).with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("bind sink");
        let addr = listener.local_addr().expect("sink addr");
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { inner, addr }
    }

    /// The URL to configure as an `http` sink.
    pub(crate) fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    /// Answers the next requests with these, in order, then with the default.
    pub(crate) fn script(&self, answers: impl IntoIterator<Item = Respond>) {
        self.inner
            .script
            .lock()
            .expect("sink state")
            .extend(answers);
    }

    /// Sets the answer used once the script is exhausted.
    pub(crate) fn set_default(&self, answer: Respond) {
        *self.inner.default.lock().expect("sink state") = answer;
    }

    /// Everything received so far.
    pub(crate) fn received(&self) -> Vec<Received> {
        self.inner.received.lock().expect("sink state").clone()
    }

    /// Number of requests received so far.
    pub(crate) fn count(&self) -> usize {
        self.inner.received.lock().expect("sink state").len()
    }

    /// Highest number of requests handled at the same time.
    pub(crate) fn max_in_flight(&self) -> usize {
        self.inner.max_in_flight.load(Ordering::SeqCst)
    }

    /// Number of requests received so far that `matches` selects (nothing is copied).
    pub(crate) fn count_matching(&self, matches: impl Fn(&Received) -> bool) -> usize {
        let received = self.inner.received.lock().expect("sink state");
        received.iter().filter(|r| matches(r)).count()
    }
}

async fn handle(State(inner): State<Arc<Inner>>, headers: HeaderMap, body: Bytes) -> Response {
    let now = inner.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    inner.max_in_flight.fetch_max(now, Ordering::SeqCst);
    let answer = {
        let next = inner.script.lock().expect("sink state").pop_front();
        next.unwrap_or_else(|| inner.default.lock().expect("sink state").clone())
    };
    inner.received.lock().expect("sink state").push(Received {
        headers,
        body,
        at: tokio::time::Instant::now(),
        status: answer.status,
    });
    if !answer.delay.is_zero() {
        tokio::time::sleep(answer.delay).await;
    }
    inner.in_flight.fetch_sub(1, Ordering::SeqCst);
    let status = StatusCode::from_u16(answer.status).expect("valid status");
    let mut response = match answer.body.is_empty() {
        true => status.into_response(),
        false => (status, answer.body).into_response(),
    };
    let headers = response.headers_mut();
    let extra = answer.retry_after.map(|v| ("retry-after".to_owned(), v));
    for (name, value) in answer.headers.into_iter().chain(extra) {
        let name = axum::http::HeaderName::from_bytes(name.as_bytes()).expect("header name");
        headers.insert(name, value.parse().expect("header value"));
    }
    response
}
