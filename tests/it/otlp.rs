//! Trace export: delivery spans reach a real HTTP server standing in for an OpenTelemetry
//! collector (`POST /v1/traces`, OTLP JSON), continuing the publisher's trace.
//!
//! The exporter is process-wide and the daemon started last receives every exported span of
//! the test process, so these tests take turns and pick their spans by a trace id of
//! their own.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use serde_json::Value;

use crate::support::daemon::event;
use crate::support::{wait_until, Respond, TestApp, TestSink};

const WAIT: Duration = Duration::from_secs(10);

/// Held by a test while its daemon exports spans.
static EXPORTING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// What the fake collector received: the `content-type` and JSON body of each POST.
type Requests = Arc<Mutex<Vec<(Option<String>, Value)>>>;

/// A real axum server that records every `POST /v1/traces` and answers 200.
struct Collector {
    requests: Requests,
    endpoint: String,
}

impl Collector {
    async fn start() -> Self {
        let requests = Requests::default();
        let app = Router::new()
            .route("/v1/traces", post(record))
            .with_state(requests.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind collector");
        let addr = listener.local_addr().expect("collector addr");
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self {
            requests,
            endpoint: format!("http://{addr}"),
        }
    }

    /// Every span received in `trace_id`, with the `service.name` of its resource.
    fn spans(&self, trace_id: &str) -> Vec<(String, Value)> {
        let requests = self.requests.lock().expect("requests");
        let mut found = Vec::new();
        for (_, body) in requests.iter() {
            for resource in body["resourceSpans"].as_array().into_iter().flatten() {
                let service = attribute(&resource["resource"], "service.name");
                let scopes = resource["scopeSpans"].as_array().into_iter().flatten();
                for span in scopes.flat_map(|s| s["spans"].as_array().into_iter().flatten()) {
                    if span["traceId"] == trace_id {
                        found.push((service.clone(), span.clone()));
                    }
                }
            }
        }
        found
    }

    fn content_types(&self) -> Vec<Option<String>> {
        let requests = self.requests.lock().expect("requests");
        requests.iter().map(|(ct, _)| ct.clone()).collect()
    }
}

async fn record(State(requests): State<Requests>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let Ok(json) = serde_json::from_slice(&body) else {
        return StatusCode::BAD_REQUEST;
    };
    requests
        .lock()
        .expect("requests")
        .push((content_type, json));
    StatusCode::OK
}

/// The value of the attribute `key` of a span or resource, as text (`intValue` included).
fn attribute(holder: &Value, key: &str) -> String {
    let attributes = holder["attributes"].as_array().into_iter().flatten();
    let Some(found) = attributes.into_iter().find(|a| a["key"] == key) else {
        return String::new();
    };
    let value = &found["value"];
    let text = value.get("stringValue").or_else(|| value.get("intValue"));
    text.and_then(Value::as_str).unwrap_or_default().to_owned()
}

/// A fresh W3C trace id and parent span id, and the `traceparent` naming them.
fn trace_context() -> (String, String, String) {
    let trace_id = uuid::Uuid::new_v4().simple().to_string();
    let parent_id = uuid::Uuid::new_v4().simple().to_string()[..16].to_owned();
    let traceparent = format!("00-{trace_id}-{parent_id}-01");
    (trace_id, parent_id, traceparent)
}

async fn start_app(collector: &Collector, sink: &TestSink, extra: &str) -> TestApp {
    TestApp::start(&format!(
        r#"
telemetry: {{ otlp_endpoint: "{}", service_name: otlp-test }}
sinks:
  otlp-hook: {{ http: {{ url: "{}" }}{extra} }}
routes: [ {{ name: otlp-route, to: [otlp-hook] }} ]
"#,
        collector.endpoint,
        sink.url()
    ))
    .await
}

async fn publish(app: &TestApp, id: &str, traceparent: &str) {
    let headers = [
        ("content-type", "application/cloudevents+json"),
        ("traceparent", traceparent),
    ];
    let reply = app
        .post("/events", &headers, event(id, "Otlp.Test").to_string())
        .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED);
}

#[tokio::test]
async fn a_delivery_span_continues_the_publishers_trace() {
    let _turn = EXPORTING.lock().await;
    let (collector, sink) = tokio::join!(Collector::start(), TestSink::start());
    let app = start_app(&collector, &sink, "").await;
    let (trace_id, parent_id, traceparent) = trace_context();

    publish(&app, "otlp-1", &traceparent).await;

    wait_until("the delivery span", WAIT, || {
        !collector.spans(&trace_id).is_empty()
    })
    .await;
    let spans = collector.spans(&trace_id);
    let [(service, span)] = spans.as_slice() else {
        panic!("one span expected: {spans:#?}")
    };
    assert_eq!(service, "otlp-test");
    assert_eq!(span["name"], "delivery");
    assert_eq!(span["parentSpanId"], parent_id.as_str());
    let span_id = span["spanId"].as_str().expect("spanId");
    assert!(span_id.len() == 16 && span_id != parent_id, "{span}");
    assert_eq!(attribute(span, "event_id"), "otlp-1");
    assert_eq!(attribute(span, "route"), "otlp-route");
    assert_eq!(attribute(span, "sink"), "otlp-hook");
    assert_eq!(attribute(span, "attempt"), "1");
    assert_eq!(attribute(span, "outcome"), "success");
    // The webhook request names switchyard's span as its parent, in the same trace.
    let delivered = sink.received();
    assert_eq!(
        delivered[0].header("traceparent"),
        Some(format!("00-{trace_id}-{span_id}-01").as_str())
    );
    let time = |k: &str| span[k].as_str().and_then(|t| t.parse::<u128>().ok());
    assert!(
        time("startTimeUnixNano") <= time("endTimeUnixNano"),
        "{span}"
    );
    assert!(time("startTimeUnixNano").is_some_and(|t| t > 0), "{span}");
    let types = collector.content_types();
    assert!(types
        .iter()
        .all(|t| t.as_deref() == Some("application/json")));
    app.running.stop().await.expect("clean shutdown");
}

#[tokio::test]
async fn every_attempt_is_a_span_and_shutdown_sends_the_last_ones() {
    let _turn = EXPORTING.lock().await;
    let (collector, sink) = tokio::join!(Collector::start(), TestSink::start());
    sink.script([Respond::status(503)]);
    let app = start_app(&collector, &sink, ", retry: { schedule: [20ms] }").await;
    let (trace_id, parent_id, traceparent) = trace_context();

    publish(&app, "otlp-2", &traceparent).await;
    wait_until("the retried delivery", WAIT, || sink.count() == 2).await;
    // Stopping flushes the buffer: no waiting for the export interval.
    app.running.stop().await.expect("clean shutdown");

    let mut spans = collector.spans(&trace_id);
    spans.sort_by_key(|(_, span)| attribute(span, "attempt"));
    let summary: Vec<(String, String)> = spans
        .iter()
        .map(|(_, s)| (attribute(s, "attempt"), attribute(s, "outcome")))
        .collect();
    let expected = [("1", "retry"), ("2", "success")].map(|(a, o)| (a.into(), o.into()));
    assert_eq!(summary, expected, "{spans:#?}");
    assert!(spans
        .iter()
        .all(|(_, s)| s["parentSpanId"] == parent_id.as_str()));
    assert_eq!(spans[0].1["status"]["code"], 2, "{:#}", spans[0].1);
    assert_ne!(spans[0].1["spanId"], spans[1].1["spanId"]);
}
