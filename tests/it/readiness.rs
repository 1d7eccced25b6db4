//! Readiness and counters tell the truth: `/readyz` fails with the reason while the spool
//! refuses puts or NATS is unreachable, and recovers after; events stored for clients that hung up are
//! counted as routed; the spool's disk gauges are exported.

use std::time::Duration;

use serde_json::json;
use tokio::io::AsyncWriteExt;

use crate::support::nats_server::NatsServer;
use crate::support::{wait_until, Respond, TestApp, TestSink};

const WAIT: Duration = Duration::from_secs(15);

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

fn big_event(id: &str) -> serde_json::Value {
    json!({
        "specversion": "1.0", "id": id, "source": "/ready", "type": "Ready.Big",
        "datacontenttype": "application/json", "data": { "pad": "x".repeat(4096) }
    })
}

async fn readiness_follows_a_full_spool(backend: &str) {
    let sink = TestSink::start().await;
    sink.set_default(Respond::status(503));
    let app = TestApp::start(&format!(
        r#"
spool: {{ backend: {backend}, max_bytes: 64KiB }}
sinks:
  rd-hook:
    http: {{ url: "{}" }}
    retry: {{ schedule: [50ms], max_attempts: 100, event_ttl: 1h }}
routes: [{{ name: rd, to: [rd-hook] }}]
"#,
        sink.url()
    ))
    .await;
    let ready = app.admin_get("/readyz", None).await;
    assert_eq!(ready.status.as_u16(), 200, "{}", ready.text());

    let mut accepted = 0;
    while app
        .send(big_event(&format!("f{accepted}")))
        .await
        .status
        .is_success()
    {
        accepted += 1;
        assert!(accepted < 100, "64KiB never filled");
    }
    let full = app.admin_get("/readyz", None).await;
    assert_eq!(full.status.as_u16(), 503, "{}", full.text());
    let reason = full.json()["reason"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(reason.contains("spool is full"), "{reason}");

    sink.set_default(Respond::status(200));
    wait_until("the spool drains", WAIT, || {
        app.running.spool_depth("rd-hook") == 0
    })
    .await;
    let again = app.admin_get("/readyz", None).await;
    assert_eq!(again.status.as_u16(), 200, "{}", again.text());
}

#[tokio::test]
async fn readiness_fails_while_the_embedded_spool_is_full_and_recovers_when_it_drains() {
    readiness_follows_a_full_spool("embedded").await;
}

#[tokio::test]
async fn readiness_fails_while_the_memory_spool_is_full_and_recovers_when_it_drains() {
    readiness_follows_a_full_spool("memory").await;
}

/// Sends one structured event over a fresh connection and hangs up without reading the
/// answer.
async fn send_and_hang_up(app: &TestApp, id: &str) {
    let addr = app.base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect to ingress");
    let body = json!({
        "specversion": "1.0", "id": id, "source": "/hangup", "type": "Hangup.Sent",
        "datacontenttype": "application/json", "data": { "n": 1 }
    })
    .to_string();
    let head = format!(
        "POST /events HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/cloudevents+json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    stream
        .write_all(format!("{head}{body}").as_bytes())
        .await
        .expect("request sent");
    drop(stream);
}

#[tokio::test]
async fn events_stored_for_clients_that_hung_up_are_counted_as_routed() {
    let sink = TestSink::start().await;
    let app = TestApp::start(&format!(
        r#"
sinks:
  hu-hook: {{ http: {{ url: "{}" }} }}
routes: [{{ name: hu-route, to: [hu-hook] }}]
"#,
        sink.url()
    ))
    .await;
    for i in 0..200 {
        send_and_hang_up(&app, &format!("h-{i}")).await;
    }
    // Whatever was stored is delivered; wait until the count at the sink holds still.
    let mut delivered = usize::MAX;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = sink.count();
        if now == delivered && app.running.spool_depth("hu-hook") == 0 {
            break;
        }
        delivered = now;
    }
    assert!(delivered > 0, "no event of a hung-up client was stored");
    let metrics = app.admin_get("/metrics", None).await.text();
    let routed = sample(
        &metrics,
        "switchyard_events_routed_total",
        &[("route", "hu-route")],
    );
    assert_eq!(
        routed,
        Some(delivered as f64),
        "routed events against events delivered"
    );
}

#[tokio::test]
async fn the_spool_disk_gauges_are_exported() {
    let app =
        TestApp::start("sinks: { dg-log: { log: {} } }\nroutes: [{ name: dg, to: [dg-log] }]\n")
            .await;
    let metrics = app.admin_get("/metrics", None).await.text();
    let used = sample(&metrics, "switchyard_spool_disk_used_ratio", &[]);
    let used = used.unwrap_or_else(|| panic!("no disk gauge:\n{metrics}"));
    assert!(used > 0.0 && used <= 1.0, "used ratio {used}");
    let free = sample(&metrics, "switchyard_spool_disk_free_bytes", &[]);
    assert!(free.is_some_and(|f| f > 0.0), "free bytes {free:?}");
}

/// Polls `/readyz` until it answers `status`; returns its body.
async fn ready_becomes(app: &TestApp, status: u16, within: Duration) -> serde_json::Value {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let reply = app.admin_get("/readyz", None).await;
        if reply.status.as_u16() == status {
            return reply.json();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "/readyz stayed {} ({}) instead of {status}",
            reply.status,
            reply.text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn readiness_fails_while_nats_is_unreachable_and_recovers_when_it_returns() {
    let store = tempfile::tempdir().expect("temp dir");
    let mut server = NatsServer::start(store.path());
    // The server and its store are this test's own: nothing to clean up on a shared one.
    let stream = crate::support::nats::unique("sy-it-ready");
    let app = TestApp::start(&format!(
        r#"
spool: {{ backend: nats, nats: {{ url: "{}", stream: {stream} }} }}
sinks: {{ nr-log: {{ log: {{}} }} }}
routes: [{{ name: nr, to: [nr-log] }}]
"#,
        server.url()
    ))
    .await;
    ready_becomes(&app, 200, WAIT).await;

    server.kill();
    let down = ready_becomes(&app, 503, WAIT).await;
    let reason = down["reason"].as_str().unwrap_or_default().to_owned();
    assert!(reason.contains("NATS is unreachable"), "{reason}");

    server.restart();
    ready_becomes(&app, 200, Duration::from_secs(30)).await;
}
