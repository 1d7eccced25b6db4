//! Trace export: `ingress` and `delivery` spans reach a real HTTP server standing in for an
//! OpenTelemetry collector (`POST /v1/traces`, OTLP protobuf), continuing the publisher's
//! trace; the standard `OTEL_*` environment configures the export; a collector that is down
//! or slow never delays a delivery.
//!
//! The in-process exporter is process-wide and the daemon started last records every
//! exported span of the test process, so the in-process tests take turns and pick their
//! spans by a trace id of their own. The environment tests run the compiled daemon.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, KeyValue};
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message as _;

use crate::support::client::{post as post_to, request};
use crate::support::daemon::event;
use crate::support::process::{free_port, Daemon};
use crate::support::{wait_until, Respond, TestApp, TestSink, EXPORTING};

const WAIT: Duration = Duration::from_secs(10);

/// One export request as the collector received it.
#[derive(Debug, Clone)]
struct Received {
    headers: HeaderMap,
    body: ExportTraceServiceRequest,
}

/// A span, with the resource attributes it was exported under.
#[derive(Debug, Clone)]
struct Exported {
    resource: Vec<KeyValue>,
    span: Span,
}

type Requests = Arc<Mutex<Vec<Received>>>;

/// A real axum server that decodes every `POST /v1/traces` and answers 200.
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

    fn requests(&self) -> Vec<Received> {
        self.requests.lock().expect("requests").clone()
    }

    /// Every span received in the trace `trace_id` (hex).
    fn spans(&self, trace_id: &str) -> Vec<Exported> {
        let mut found = Vec::new();
        for received in self.requests() {
            for rs in received.body.resource_spans {
                let resource = rs.resource.map(|r| r.attributes).unwrap_or_default();
                let spans = rs.scope_spans.into_iter().flat_map(|s| s.spans);
                for span in spans.filter(|s| hex(&s.trace_id) == trace_id) {
                    found.push(Exported {
                        resource: resource.clone(),
                        span,
                    });
                }
            }
        }
        found
    }

    /// The one span named `name` in `trace_id`.
    fn one(&self, trace_id: &str, name: &str) -> Exported {
        let spans: Vec<Exported> = self
            .spans(trace_id)
            .into_iter()
            .filter(|e| e.span.name == name)
            .collect();
        let [one] = spans.as_slice() else {
            panic!("one {name} span expected: {spans:#?}")
        };
        one.clone()
    }
}

async fn record(State(requests): State<Requests>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let Ok(body) = ExportTraceServiceRequest::decode(body) else {
        return StatusCode::BAD_REQUEST;
    };
    requests
        .lock()
        .expect("requests")
        .push(Received { headers, body });
    StatusCode::OK
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The value of the attribute `key`, as text (integers included).
fn attribute(attributes: &[KeyValue], key: &str) -> String {
    let value = attributes
        .iter()
        .find(|a| a.key == key)
        .and_then(|a| a.value.as_ref()?.value.as_ref());
    match value {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(n)) => n.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
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
async fn ingress_and_delivery_spans_continue_the_publishers_trace() {
    let _turn = EXPORTING.lock().await;
    let (collector, sink) = tokio::join!(Collector::start(), TestSink::start());
    let app = start_app(&collector, &sink, "").await;
    let (trace_id, parent_id, traceparent) = trace_context();

    publish(&app, "otlp-1", &traceparent).await;

    wait_until("the ingress and delivery spans", WAIT, || {
        collector.spans(&trace_id).len() == 2
    })
    .await;
    let ingress = collector.one(&trace_id, "ingress");
    let delivery = collector.one(&trace_id, "delivery");
    assert_eq!(attribute(&delivery.resource, "service.name"), "otlp-test");
    // Both continue the publisher's span: the request, and the delivery of what it stored.
    for (exported, kind) in [(&ingress, SpanKind::Server), (&delivery, SpanKind::Client)] {
        let span = &exported.span;
        assert_eq!(hex(&span.parent_span_id), parent_id, "{span:#?}");
        assert_eq!(span.kind, kind as i32, "{span:#?}");
        assert_eq!(attribute(&span.attributes, "event_id"), "otlp-1");
        assert!(span.start_time_unix_nano > 0, "{span:#?}");
        assert!(span.start_time_unix_nano <= span.end_time_unix_nano);
    }
    assert_ne!(ingress.span.span_id, delivery.span.span_id);
    assert_eq!(attribute(&ingress.span.attributes, "outcome"), "accepted");
    assert_eq!(attribute(&ingress.span.attributes, "events"), "1");
    let attrs = &delivery.span.attributes;
    assert_eq!(attribute(attrs, "route"), "otlp-route");
    assert_eq!(attribute(attrs, "sink"), "otlp-hook");
    assert_eq!(attribute(attrs, "attempt"), "1");
    assert_eq!(attribute(attrs, "outcome"), "success");
    // The webhook request names the delivery span as its parent, in the publisher's trace.
    let delivered = sink.received();
    let span_id = hex(&delivery.span.span_id);
    assert_eq!(
        delivered[0].header("traceparent"),
        Some(format!("00-{trace_id}-{span_id}-01").as_str())
    );
    let requests = collector.requests();
    assert!(requests
        .iter()
        .all(|r| r.headers["content-type"] == "application/x-protobuf"));
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
    // Stopping flushes the queue: no waiting for the export interval.
    app.running.stop().await.expect("clean shutdown");

    let mut spans: Vec<Span> = collector
        .spans(&trace_id)
        .into_iter()
        .map(|e| e.span)
        .filter(|s| s.name == "delivery")
        .collect();
    spans.sort_by_key(|s| attribute(&s.attributes, "attempt"));
    let summary: Vec<(String, String)> = spans
        .iter()
        .map(|s| {
            (
                attribute(&s.attributes, "attempt"),
                attribute(&s.attributes, "outcome"),
            )
        })
        .collect();
    let expected = [("1", "retry"), ("2", "success")].map(|(a, o)| (a.into(), o.into()));
    assert_eq!(summary, expected, "{spans:#?}");
    assert!(spans.iter().all(|s| hex(&s.parent_span_id) == parent_id));
    let status = |s: &Span| s.status.as_ref().map(|st| st.code);
    assert_eq!(status(&spans[0]), Some(2), "{:#?}", spans[0]);
    assert_eq!(status(&spans[1]), Some(1), "{:#?}", spans[1]);
}

#[tokio::test]
async fn without_a_traceparent_the_ingress_span_starts_the_trace() {
    let _turn = EXPORTING.lock().await;
    let (collector, sink) = tokio::join!(Collector::start(), TestSink::start());
    let app = start_app(&collector, &sink, "").await;

    let reply = app.send(event("otlp-3", "Otlp.Test")).await;
    assert_eq!(reply.status, StatusCode::ACCEPTED);

    let ingress_of = |c: &Collector| {
        c.requests()
            .into_iter()
            .flat_map(|r| r.body.resource_spans)
            .flat_map(|rs| rs.scope_spans)
            .flat_map(|ss| ss.spans)
            .find(|s| s.name == "ingress" && attribute(&s.attributes, "event_id") == "otlp-3")
    };
    wait_until("the ingress span", WAIT, || {
        ingress_of(&collector).is_some()
    })
    .await;
    let ingress = ingress_of(&collector).expect("ingress span");
    let trace_id = hex(&ingress.trace_id);
    wait_until("the delivery span", WAIT, || {
        collector.spans(&trace_id).len() == 2
    })
    .await;
    let delivery = collector.one(&trace_id, "delivery");
    assert!(ingress.parent_span_id.is_empty(), "{ingress:#?}");
    assert_eq!(delivery.span.parent_span_id, ingress.span_id);
    // The event carries the ingress span as its trace context, to the target too.
    let delivered = &sink.received()[0];
    let carried = format!("00-{trace_id}-{}-01", hex(&ingress.span_id));
    assert_eq!(delivered.header("ce-traceparent"), Some(carried.as_str()));
    app.running.stop().await.expect("clean shutdown");
}

// === The compiled daemon, configured by the standard environment ===

/// A spawned daemon routing every event to `sink`, with `env` set on it only.
struct Spawned {
    daemon: Daemon,
    dir: tempfile::TempDir,
    ingress: String,
    admin: String,
}

impl Spawned {
    async fn start(sink: &TestSink, env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().expect("dir");
        let (port, admin_port) = (free_port(), free_port());
        let yaml = format!(
            "listen: 127.0.0.1:{port}\nadmin_listen: 127.0.0.1:{admin_port}\n\
             spool: {{ backend: memory }}\n\
             sinks: {{ hook: {{ http: {{ url: \"{}\" }} }} }}\n\
             routes: [{{ name: all, to: [hook] }}]\n",
            sink.url()
        );
        let config = dir.path().join("routes.yaml");
        std::fs::write(&config, yaml).expect("write config");
        let log = dir.path().join("daemon.log");
        let daemon = Daemon::start_with(&config, port, env, Some(&log)).await;
        Self {
            daemon,
            dir,
            ingress: format!("http://127.0.0.1:{port}/events"),
            admin: format!("http://127.0.0.1:{admin_port}"),
        }
    }

    async fn publish_batch(&self, ids: &[String], traceparent: &str) {
        let events: Vec<serde_json::Value> = ids.iter().map(|id| event(id, "Otlp.Env")).collect();
        let headers = [
            ("content-type", "application/cloudevents-batch+json"),
            ("traceparent", traceparent),
        ];
        let body = serde_json::Value::Array(events).to_string();
        let reply = post_to(&self.ingress, &headers, body).await;
        assert_eq!(reply.status.as_u16(), 202, "{}", reply.text());
    }

    /// The sum of the series `name` whose line contains `label`.
    async fn metric(&self, name: &str, label: &str) -> f64 {
        let url = format!("{}/metrics", self.admin);
        let text = request(axum::http::Method::GET, &url, &[], "").await.text();
        text.lines()
            .filter(|l| l.starts_with(name) && l.contains(label))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default()
    }
}

#[tokio::test]
async fn the_standard_environment_configures_export() {
    let (collector, sink) = tokio::join!(Collector::start(), TestSink::start());
    let env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", collector.endpoint.as_str()),
        (
            "OTEL_EXPORTER_OTLP_HEADERS",
            "x-otlp-token=t0k%20en-7f3a,x-tenant=blue",
        ),
        ("OTEL_SERVICE_NAME", "edge-router"),
        (
            "OTEL_RESOURCE_ATTRIBUTES",
            "deployment.environment=test,team=events",
        ),
    ];
    let mut spawned = Spawned::start(&sink, &env).await;
    let (trace_id, parent_id, traceparent) = trace_context();

    spawned
        .publish_batch(&["env-1".to_owned()], &traceparent)
        .await;

    wait_until("the exported spans", WAIT, || {
        collector.spans(&trace_id).len() == 2
    })
    .await;
    let delivery = collector.one(&trace_id, "delivery");
    let ingress = collector.one(&trace_id, "ingress");
    assert_eq!(hex(&ingress.span.parent_span_id), parent_id);
    assert_eq!(hex(&delivery.span.parent_span_id), parent_id);
    let resource = &delivery.resource;
    assert_eq!(attribute(resource, "service.name"), "edge-router");
    assert_eq!(attribute(resource, "deployment.environment"), "test");
    assert_eq!(attribute(resource, "team"), "events");
    assert_eq!(attribute(resource, "telemetry.sdk.name"), "opentelemetry");
    for received in collector.requests() {
        assert_eq!(received.headers["x-otlp-token"], "t0k en-7f3a");
        assert_eq!(received.headers["x-tenant"], "blue");
    }
    spawned.daemon.terminate();
    // The credentials never reach the log, even at debug level.
    let log = spawned.log();
    assert!(log.contains("Exporting spans"), "{log}");
    assert!(!log.contains("t0k"), "{log}");
}

#[tokio::test]
async fn a_slow_or_down_collector_never_delays_deliveries_and_drops_are_counted() {
    // A collector that accepts connections and never answers, and one that is not there.
    let slow = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let slow_url = format!("http://{}", slow.local_addr().expect("addr"));
    let held = tokio::spawn(async move {
        let mut connections = Vec::new();
        while let Ok((stream, _)) = slow.accept().await {
            connections.push(stream);
        }
    });
    let down_url = format!("http://127.0.0.1:{}", free_port());
    for (collector, reason) in [(&slow_url, "buffer_full"), (&down_url, "export_failed")] {
        let sink = TestSink::start().await;
        let env = [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", collector.as_str()),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "60000"),
            ("OTEL_BSP_MAX_QUEUE_SIZE", "8"),
        ];
        let spawned = Spawned::start(&sink, &env).await;
        let ids: Vec<String> = (0..60).map(|i| format!("{reason}-{i}")).collect();
        let (_, _, traceparent) = trace_context();

        spawned.publish_batch(&ids, &traceparent).await;

        // Every delivery arrives while the exporter waits on the collector.
        wait_until("every delivery", WAIT, || sink.count() == ids.len()).await;
        let label = format!("reason=\"{reason}\"");
        let deadline = tokio::time::Instant::now() + WAIT;
        while spawned
            .metric("switchyard_otlp_spans_dropped_total", &label)
            .await
            == 0.0
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "no {reason} drops counted"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    held.abort();
}
