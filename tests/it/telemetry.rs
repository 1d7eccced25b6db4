//! What operators see of the traffic: every Prometheus series moving with it, and a
//! `traceparent` header carried through to the sink.
//!
//! The metrics recorder is shared by every daemon of the test process, so sinks and routes
//! are named uniquely here and format-wide series are compared before and after.

use std::time::Duration;

use hyper::StatusCode;
use serde_json::json;

use crate::support::daemon::event;
use crate::support::{wait_until, Respond, TestApp, TestSink};

const WAIT: Duration = Duration::from_secs(10);
const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// The value of the series `name` whose labels include every one of `labels`.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .find(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

fn received(text: &str, format: &str, outcome: &str) -> f64 {
    let labels = [("format", format), ("outcome", outcome)];
    sample(text, "switchyard_events_received_total", &labels).unwrap_or(0.0)
}

fn deliveries(text: &str, sink: &str, outcome: &str) -> Option<f64> {
    let labels = [("sink", sink), ("outcome", outcome)];
    sample(text, "switchyard_deliveries_total", &labels)
}

/// Four sinks: one that takes everything, one that fails once, one that answers 400 and
/// one that keeps answering 503 (so its delivery waits in the spool).
async fn start_metrics_app() -> (TestApp, [TestSink; 4]) {
    let (ok, flaky, bad, stuck) = tokio::join!(
        TestSink::start(),
        TestSink::start(),
        TestSink::start(),
        TestSink::start()
    );
    flaky.script([Respond::status(500)]);
    bad.set_default(Respond::status(400));
    stuck.set_default(Respond::status(503));
    let app = TestApp::start(&format!(
        r#"
sinks:
  tm-ok: {{ http: {{ url: "{}" }} }}
  tm-flaky: {{ http: {{ url: "{}" }}, retry: {{ schedule: [20ms] }} }}
  tm-bad: {{ http: {{ url: "{}" }} }}
  tm-stuck: {{ http: {{ url: "{}" }}, retry: {{ schedule: [1h] }} }}
routes:
  - {{ name: tm-all, match: {{ types: ["Tm.*"] }}, to: [tm-ok, tm-flaky, tm-bad, tm-stuck] }}
"#,
        ok.url(),
        flaky.url(),
        bad.url(),
        stuck.url()
    ))
    .await;
    (app, [ok, flaky, bad, stuck])
}

/// One routed binary event, then unrouted structured, batch and Event Grid ones, and one
/// malformed structured request.
async fn send_every_format(app: &TestApp) {
    let binary = [
        ("ce-specversion", "1.0"),
        ("ce-id", "m-1"),
        ("ce-source", "/t"),
        ("ce-type", "Tm.Binary"),
    ];
    let reply = app.post("/events", &binary, "{}").await;
    assert_eq!(reply.status, StatusCode::ACCEPTED);
    app.send(event("m-2", "Other.Unrouted")).await;
    let batch = json!([event("m-3", "Other.A"), event("m-4", "Other.B")]);
    let ct = [("content-type", "application/cloudevents-batch+json")];
    app.post("/events", &ct, batch.to_string()).await;
    let grid = json!([{"id": "m-5", "subject": "/s", "eventType": "Other.Grid",
        "eventTime": "2024-01-01T00:00:00Z", "data": {}, "dataVersion": "1"}]);
    let ct = [("content-type", "application/json")];
    app.post("/api/events", &ct, grid.to_string()).await;
    let ct = [("content-type", "application/cloudevents+json")];
    let malformed = app.post("/events", &ct, "{").await;
    assert_eq!(malformed.status, StatusCode::BAD_REQUEST);
}

/// Renders `/metrics` until every delivery has been counted (or [`WAIT`] passes).
async fn settled_metrics(app: &TestApp) -> String {
    let settled = [
        ("tm-stuck", "retry"),
        ("tm-flaky", "success"),
        ("tm-ok", "success"),
        ("tm-bad", "dead_letter"),
    ];
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let text = app.admin_get("/metrics", None).await.text();
        let done = settled
            .iter()
            .all(|(sink, outcome)| deliveries(&text, sink, outcome) == Some(1.0));
        if done || tokio::time::Instant::now() >= deadline {
            return text;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn every_metric_is_exported_and_moves_with_traffic() {
    let (app, [_ok, flaky, _bad, _stuck]) = start_metrics_app().await;
    let metrics = app.admin_get("/metrics", None).await;
    assert_eq!(
        metrics.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let before = metrics.text();

    send_every_format(&app).await;
    wait_until("the retry", WAIT, || flaky.count() == 2).await;
    let after = settled_metrics(&app).await;

    for format in ["binary", "structured", "batch", "eventgrid"] {
        let moved = received(&after, format, "accepted") > received(&before, format, "accepted");
        assert!(moved, "{format} accepted:\n{after}");
    }
    let rejected = |t: &str| received(t, "structured", "rejected");
    assert!(rejected(&after) > rejected(&before), "{after}");
    let unrouted = |t: &str| sample(t, "switchyard_events_unrouted_total", &[]).unwrap_or(0.0);
    assert!(unrouted(&after) >= unrouted(&before) + 4.0, "{after}");
    let routed = sample(
        &after,
        "switchyard_events_routed_total",
        &[("route", "tm-all")],
    );
    assert_eq!(routed, Some(1.0));
    assert_eq!(deliveries(&after, "tm-flaky", "retry"), Some(1.0));
    let reason = ("reason", "UndeliverableDueToHttpBadRequest");
    let dead = sample(
        &after,
        "switchyard_dead_letters_total",
        &[("sink", "tm-bad"), reason],
    );
    assert_eq!(dead, Some(1.0));
    let duration = "switchyard_delivery_duration_seconds";
    let attempts = sample(
        &after,
        &format!("{duration}_count"),
        &[("sink", "tm-flaky")],
    );
    assert_eq!(attempts, Some(2.0));
    let bucket = [("sink", "tm-ok"), ("le", "0.5")];
    assert!(
        sample(&after, &format!("{duration}_bucket"), &bucket).is_some(),
        "{after}"
    );
    let depth = |sink: &str| sample(&after, "switchyard_spool_depth", &[("sink", sink)]);
    assert_eq!((depth("tm-stuck"), depth("tm-ok")), (Some(1.0), Some(0.0)));
    let reloads = sample(
        &after,
        "switchyard_config_reloads_total",
        &[("outcome", "success")],
    );
    assert!(reloads.is_some(), "{after}");
    assert_spool_series(&after);
    assert_ingress_series(&before, &after);
    assert_process_series(&after);
}

/// The stuck sink's delivery is the oldest waiting one; the spool's bytes and bound.
fn assert_spool_series(after: &str) {
    let age = |sink: &str| {
        sample(
            after,
            "switchyard_spool_oldest_age_seconds",
            &[("sink", sink)],
        )
    };
    let stuck = age("tm-stuck").expect("age of tm-stuck");
    assert!(stuck > 0.0 && stuck < WAIT.as_secs_f64(), "{after}");
    assert_eq!(age("tm-ok"), Some(0.0), "nothing waits for tm-ok");
    let stored = sample(after, "switchyard_spool_bytes", &[]).expect("spool bytes");
    assert!(stored > 0.0, "{after}");
    let max = sample(after, "switchyard_spool_max_bytes", &[]);
    assert_eq!(
        max,
        Some(f64::from(1u32 << 30)),
        "the default spool.max_bytes"
    );
    let version = ("version", env!("CARGO_PKG_VERSION"));
    assert_eq!(
        sample(after, "switchyard_build_info", &[version]),
        Some(1.0)
    );
}

/// Requests counted by route template and status, and timed by route template.
fn assert_ingress_series(before: &str, after: &str) {
    let requests = |t: &str, path: &str, status: &str| {
        let labels = [("path", path), ("status", status)];
        sample(t, "switchyard_ingress_requests_total", &labels).unwrap_or(0.0)
    };
    for (path, status, n) in [
        ("/events", "202", 3.0),
        ("/events", "400", 1.0),
        ("/api/events", "200", 1.0),
    ] {
        let moved = requests(after, path, status) - requests(before, path, status);
        assert!(moved >= n, "{path} {status} moved {moved}:\n{after}");
    }
    let timed = |t: &str| {
        let name = "switchyard_ingress_request_duration_seconds_count";
        sample(t, name, &[("path", "/events")]).unwrap_or(0.0)
    };
    assert!(timed(after) >= timed(before) + 4.0, "{after}");
    let bucket = [("path", "/api/events"), ("le", "0.001")];
    let name = "switchyard_ingress_request_duration_seconds_bucket";
    assert!(sample(after, name, &bucket).is_some(), "{after}");
}

/// The standard process series, read from /proc.
fn assert_process_series(after: &str) {
    let value = |name: &str| sample(after, name, &[]).unwrap_or_else(|| panic!("{name}:\n{after}"));
    assert!(value("process_cpu_seconds_total") > 0.0);
    assert!(value("process_resident_memory_bytes") > 1e6);
    let (open, max) = (value("process_open_fds"), value("process_max_fds"));
    assert!(open > 3.0 && max >= open, "{open} of {max}");
    let started = value("process_start_time_seconds");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs_f64();
    assert!(
        started > now - 86_400.0 && started <= now + 1.0,
        "{started}"
    );
    assert!(after.contains("# TYPE process_cpu_seconds_total counter"));
}

#[tokio::test]
async fn a_path_no_route_serves_is_counted_under_other() {
    let app =
        TestApp::start("sinks: { o-log: { log: {} } }\nroutes: [{ name: o, to: [o-log] }]\n").await;
    let count = |t: &str| {
        let labels = [("path", "other"), ("status", "404")];
        sample(t, "switchyard_ingress_requests_total", &labels).unwrap_or(0.0)
    };
    let before = count(&app.admin_get("/metrics", None).await.text());
    let reply = app.post("/no/such/path/7f3a", &[], "{}").await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    let after = app.admin_get("/metrics", None).await.text();
    assert!(count(&after) > before, "{after}");
    assert!(!after.contains("7f3a"), "the raw path is no label value");
}

#[tokio::test]
async fn a_traceparent_header_travels_with_the_event_to_the_sink() {
    // Exported delivery spans would put their own trace context in the header instead.
    let _turn = crate::support::EXPORTING.lock().await;
    let target = TestSink::start().await;
    let app = TestApp::start(&format!(
        "sinks: {{ tp-hook: {{ http: {{ url: \"{}\" }} }} }}\nroutes: [{{ name: tp, to: [tp-hook] }}]\n",
        target.url()
    ))
    .await;
    let structured = [
        ("content-type", "application/cloudevents+json"),
        ("traceparent", TRACEPARENT),
    ];
    app.post("/events", &structured, event("tp-1", "T").to_string())
        .await;
    let own = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let binary = [
        ("ce-specversion", "1.0"),
        ("ce-id", "tp-2"),
        ("ce-source", "/t"),
        ("ce-type", "T"),
        ("ce-traceparent", own),
        ("traceparent", TRACEPARENT),
    ];
    app.post("/events", &binary, "").await;

    wait_until("both delivered", WAIT, || target.count() == 2).await;
    let got = target.received();
    let by_id = |id: &str| {
        got.iter()
            .find(|r| r.header("ce-id") == Some(id))
            .expect("delivered")
    };
    assert_eq!(by_id("tp-1").header("ce-traceparent"), Some(TRACEPARENT));
    assert_eq!(by_id("tp-1").header("traceparent"), Some(TRACEPARENT));
    let kept = by_id("tp-2").header("ce-traceparent");
    assert_eq!(kept, Some(own), "an event's own trace context wins");
}
