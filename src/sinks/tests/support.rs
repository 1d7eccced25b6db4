//! Test helpers shared by the sink and dispatch tests: events, configs and a real HTTP
//! receiver whose answers the test scripts.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

use crate::config::{
    Config, ConnectionLimits, DeliveryPolicy, HttpFormat, HttpSinkConfig, HttpTlsConfig,
    IngressConfig, ProxySetting, RetryPolicy, SinkConfig, SinkKind, SpoolBackend, SpoolConfig,
};
use crate::event::Event;
use crate::outbound::{Client, ClientOptions, SystemRoots};

/// A JSON event with id `id`.
pub(crate) fn event(id: &str) -> Event {
    Event {
        specversion: "1.0".into(),
        id: id.into(),
        source: "/tests".into(),
        ty: "com.example.test".into(),
        datacontenttype: Some("application/json".into()),
        dataschema: None,
        subject: Some("/orders/1".into()),
        time: None,
        extensions: Vec::new(),
        data_version: Some("2.0".into()),
        data: Some(Bytes::from_static(br#"{"total":5}"#)),
    }
}

/// An http sink config posting to `url`.
pub(crate) fn http_config(url: &Uri, format: HttpFormat, timeout: Duration) -> HttpSinkConfig {
    HttpSinkConfig {
        url: url.clone(),
        format,
        timeout,
        headers: vec![(
            HeaderName::from_static("x-api-key"),
            HeaderValue::from_static("secret"),
        )],
        sign: None,
        tls: HttpTlsConfig::default(),
        proxy: ProxySetting::Direct,
    }
}

/// A client for tests: direct connections, no system roots.
pub(crate) fn client() -> Client {
    Client::new(&ClientOptions::default(), &SystemRoots::none()).expect("client")
}

/// A sink with a millisecond retry schedule.
pub(crate) fn sink(name: &str, kind: SinkKind, concurrency: usize) -> SinkConfig {
    SinkConfig {
        name: name.into(),
        kind,
        concurrency,
        adaptive: None,
        retry: RetryPolicy {
            max_attempts: 5,
            event_ttl: Duration::from_secs(60),
            schedule: vec![Duration::from_millis(10)],
            ..RetryPolicy::default()
        },
        dead_letter: None,
        delivery: DeliveryPolicy::default(),
        transform: None,
    }
}

/// A configuration holding `sinks` and nothing else of note.
pub(crate) fn config(sinks: Vec<SinkConfig>) -> Config {
    Config {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        spool: SpoolConfig {
            backend: SpoolBackend::Memory,
            path: PathBuf::from("."),
            max_bytes: 1 << 30,
            dead_letter_ttl: None,
            retain_delivered: None,
            nats: None,
        },
        ingress: IngressConfig {
            max_event_bytes: 1 << 20,
            max_request_bytes: 1 << 20,
            max_batch_events: 5000,
            auth: Vec::new(),
            allowed_origins: vec!["*".into()],
            allowed_rate: None,
            dedup_window: None,
            connections: ConnectionLimits::default(),
            tls: None,
        },
        sinks: sinks
            .into_iter()
            .map(|s| (s.name.clone(), s))
            .collect::<BTreeMap<_, _>>(),
        routes: Vec::new(),
        schedules: Vec::new(),
        shutdown_grace: Duration::from_secs(1),
        admin: Default::default(),
        telemetry: Default::default(),
        history: Default::default(),
        sources: Default::default(),
        max_hops: crate::config::DEFAULT_MAX_HOPS,
        sagas: Vec::new(),
        saga_retention: crate::config::DEFAULT_SAGA_RETENTION,
    }
}

/// Polls `check` every 10 ms until it holds, failing the test after 5 s.
pub(crate) async fn wait_until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// One scripted answer.
#[derive(Debug, Clone)]
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(&'static str, String)>,
    pub(crate) delay: Duration,
}

impl Reply {
    pub(crate) fn status(status: u16) -> Self {
        Self {
            status,
            headers: Vec::new(),
            delay: Duration::ZERO,
        }
    }

    pub(crate) fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    pub(crate) fn after(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
}

type Script = Box<dyn Fn(usize) -> Reply + Send + Sync>;

struct Shared {
    script: Script,
    hits: AtomicUsize,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    requests: Mutex<Vec<(HeaderMap, Bytes)>>,
}

/// A real HTTP server on 127.0.0.1:0 answering request `n` (from 0) with `script(n)`.
pub(crate) struct Receiver {
    pub(crate) url: Uri,
    shared: Arc<Shared>,
    server: tokio::task::JoinHandle<()>,
}

impl Receiver {
    pub(crate) async fn start(script: impl Fn(usize) -> Reply + Send + Sync + 'static) -> Self {
        let shared = Arc::new(Shared {
            script: Box::new(script),
            hits: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
            requests: Mutex::new(Vec::new()),
        });
        let app = axum::Router::new()
            .fallback(answer)
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        let url = format!("http://{addr}/events").parse().unwrap();
        Self {
            url,
            shared,
            server,
        }
    }

    pub(crate) fn hits(&self) -> usize {
        self.shared.hits.load(Ordering::SeqCst)
    }

    pub(crate) fn max_in_flight(&self) -> usize {
        self.shared.max_in_flight.load(Ordering::SeqCst)
    }

    /// Headers and body of every request so far, in arrival order.
    pub(crate) fn requests(&self) -> Vec<(HeaderMap, Bytes)> {
        self.shared.requests.lock().unwrap().clone()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn answer(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let n = shared.hits.fetch_add(1, Ordering::SeqCst);
    let now = shared.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    shared.max_in_flight.fetch_max(now, Ordering::SeqCst);
    shared.requests.lock().unwrap().push((headers, body));
    let reply = (shared.script)(n);
    tokio::time::sleep(reply.delay).await;
    shared.in_flight.fetch_sub(1, Ordering::SeqCst);
    let mut response = StatusCode::from_u16(reply.status).unwrap().into_response();
    for (name, value) in reply.headers {
        response.headers_mut().insert(name, value.parse().unwrap());
    }
    response
}
