//! Ingress tests: the router served on 127.0.0.1:0, spoken to over plain HTTP/1.1.
//!
//! Tests marked "decoder" need the `event::http` / `event::eventgrid` decoders; the rest
//! exercise only what ingress decides before or after decoding.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::IntoResponse;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::auth::{constant_time_eq, form_decode};
use super::error::IngressError;
use super::handlers::{detect_mode, Mode};
use super::{router, IngressState};
use crate::accept::{AcceptError, Acceptor};
use crate::config::{
    AuthRule, Config, ConnectionLimits, IngressConfig, Live, LogSinkConfig, MatchConfig,
    RetryPolicy, RouteConfig, SinkConfig, SinkKind, SpoolBackend, SpoolConfig,
};
use crate::event::{DecodeError, DecodeErrorKind};
use crate::routing::RouteTable;
use crate::spool::{MemorySpool, Spool, SpoolHandle};
use crate::telemetry::Counters;

const SINK: &str = "out";

fn ingress_config() -> IngressConfig {
    IngressConfig {
        max_event_bytes: 512,
        max_request_bytes: 2048,
        max_batch_events: 3,
        auth: Vec::new(),
        allowed_origins: vec!["eventgrid.azure.net".into()],
        allowed_rate: None,
        dedup_window: None,
        connections: ConnectionLimits::default(),
        tls: None,
    }
}

fn config(ingress: IngressConfig) -> Config {
    let sink = SinkConfig {
        name: SINK.into(),
        kind: SinkKind::Log(LogSinkConfig {
            level: tracing::Level::INFO,
        }),
        concurrency: 1,
        adaptive: None,
        retry: RetryPolicy::default(),
        dead_letter: None,
        delivery: Default::default(),
        transform: None,
    };
    Config {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        spool: SpoolConfig {
            backend: SpoolBackend::Memory,
            path: PathBuf::new(),
            max_bytes: 1 << 30,
            dead_letter_ttl: None,
            retain_delivered: None,
            nats: None,
        },
        ingress,
        sinks: BTreeMap::from([(SINK.to_owned(), sink)]),
        routes: vec![RouteConfig {
            name: "all".into(),
            filter: MatchConfig::default(),
            sql: None,
            to: vec![SINK.into()],
            priority: Default::default(),
            ordering: Default::default(),
            transform: None,
        }],
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

/// The router serving on an ephemeral port, with its spool and counters.
struct Server {
    addr: SocketAddr,
    spool: Arc<SpoolHandle>,
    counters: Arc<Counters>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Server {
    async fn start(ingress: IngressConfig) -> Self {
        let config = config(ingress);
        let spool = Arc::new(SpoolHandle::Memory(MemorySpool::new()));
        let counters = Arc::new(Counters::default());
        let routes = Live::fixed(RouteTable::from_config(&config));
        let state = IngressState {
            acceptor: Acceptor::new(routes, spool.clone(), counters.clone()),
            config: Live::fixed(config.ingress),
            counters: counters.clone(),
            traced: false,
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            axum::serve(listener, router(state)).await.unwrap();
        });
        Self {
            addr,
            spool,
            counters,
            task,
        }
    }

    fn stored(&self) -> usize {
        self.spool.depth(SINK)
    }

    fn rejected(&self) -> u64 {
        Counters::get(&self.counters.events_rejected)
    }

    async fn post(&self, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
        self.send("POST", path, headers, Body::Sized(body)).await
    }

    async fn options(&self, path: &str, headers: &[(&str, &str)]) -> Reply {
        self.send("OPTIONS", path, headers, Body::Empty).await
    }

    /// One request on a fresh connection (`Connection: close`), read to the end.
    async fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Body<'_>,
    ) -> Reply {
        let mut head = format!("{method} {path} HTTP/1.1\r\nhost: test\r\nconnection: close\r\n");
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        let payload = match body {
            Body::Empty => Vec::new(),
            Body::Sized(b) => {
                head.push_str(&format!("content-length: {}\r\n", b.len()));
                b.to_vec()
            }
            Body::Chunked(b) => {
                head.push_str("transfer-encoding: chunked\r\n");
                let mut out = Vec::new();
                for chunk in b.chunks(256) {
                    out.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
                    out.extend_from_slice(chunk);
                    out.extend_from_slice(b"\r\n");
                }
                out.extend_from_slice(b"0\r\n\r\n");
                out
            }
        };
        head.push_str("\r\n");
        let mut stream = TcpStream::connect(self.addr).await.unwrap();
        stream.write_all(head.as_bytes()).await.unwrap();
        // The server may answer (413) and close before taking the whole body, and a reset
        // may follow the answer: what was read is what counts.
        let _written = stream.write_all(&payload).await;
        let mut raw = Vec::new();
        let _read = stream.read_to_end(&mut raw).await;
        Reply::parse(&raw)
    }
}

enum Body<'a> {
    Empty,
    Sized(&'a [u8]),
    Chunked(&'a [u8]),
}

/// A parsed HTTP/1.1 response (fixed-length bodies only, which is all axum sends here).
#[derive(Debug)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn parse(raw: &[u8]) -> Self {
        let split = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap_or_else(|| panic!("no response head in {:?}", String::from_utf8_lossy(raw)));
        let head = std::str::from_utf8(&raw[..split]).unwrap();
        let mut lines = head.split("\r\n");
        let status = lines
            .next()
            .unwrap()
            .split(' ')
            .nth(1)
            .unwrap()
            .parse()
            .unwrap();
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        Self {
            status,
            headers,
            body: raw[split + 4..].to_vec(),
        }
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{e}: {:?}", String::from_utf8_lossy(&self.body)))
    }
}

const BINARY_HEADERS: &[(&str, &str)] = &[
    ("ce-specversion", "1.0"),
    ("ce-id", "b-1"),
    ("ce-source", "/test"),
    ("ce-type", "com.example.test"),
    ("content-type", "application/json"),
];

const STRUCTURED_EVENT: &str =
    r#"{"specversion":"1.0","id":"s-1","source":"/test","type":"com.example.test","data":{"a":1}}"#;

const EVENT_GRID_EVENTS: &str = r#"[
 {"id":"g-1","subject":"/a","eventType":"Contoso.Test","eventTime":"2024-01-01T00:00:00Z","data":{"n":1},"dataVersion":"1"},
 {"id":"g-2","subject":"/b","eventType":"Contoso.Test","eventTime":"2024-01-01T00:00:00Z","data":{"n":2},"dataVersion":"1"}
]"#;

const VALIDATION_EVENT: &str = r#"[{"id":"v-1","topic":"/subscriptions/x","subject":"",
 "data":{"validationCode":"512d38b6-c7b8-40c8-89fe-f46f9e9622b6","validationUrl":"https://example.net/validate"},
 "eventType":"Microsoft.EventGrid.SubscriptionValidationEvent","eventTime":"2022-10-28T04:23:35.1981776Z",
 "metadataVersion":"1","dataVersion":"1"}]"#;

fn batch_of(n: usize) -> String {
    let events: Vec<String> = (0..n)
        .map(|i| format!(r#"{{"specversion":"1.0","id":"{i}","source":"/test","type":"t"}}"#))
        .collect();
    format!("[{}]", events.join(","))
}

mod handshake;
mod publish;
mod signed;
mod units;
