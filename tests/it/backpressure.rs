//! What ingress refuses or drops so the spool stays bounded: `spool.max_bytes` answers 503
//! with `Retry-After` until deliveries drain, and `ingress.dedup_window` acknowledges a repeat
//! of the same (`source`, `id`) without storing it again, even across a restart.

use std::time::Duration;

use serde_json::json;

use crate::support::daemon::event;
use crate::support::process::{free_port, Daemon};
use crate::support::{post, wait_until, Respond, TestApp, TestSink};

const WAIT: Duration = Duration::from_secs(15);

/// A structured event with about 4 KiB of data.
fn big_event(id: &str) -> serde_json::Value {
    json!({
        "specversion": "1.0", "id": id, "source": "/bp", "type": "Bp.Big",
        "datacontenttype": "application/json", "data": { "pad": "x".repeat(4096) }
    })
}

/// Requests for event `id` that the sink answered with success.
fn received_ok(sink: &TestSink, id: &str) -> usize {
    let got = sink.received();
    got.iter()
        .filter(|r| r.header("ce-id") == Some(id) && r.status == 200)
        .count()
}

fn received(sink: &TestSink, id: &str) -> usize {
    let got = sink.received();
    got.iter().filter(|r| r.header("ce-id") == Some(id)).count()
}

#[tokio::test]
async fn a_full_spool_answers_503_until_deliveries_drain() {
    let sink = TestSink::start().await;
    sink.set_default(Respond::status(503));
    let app = TestApp::start(&format!(
        r#"
spool: {{ max_bytes: 64KiB }}
sinks:
  bp-hook:
    http: {{ url: "{}" }}
    retry: {{ schedule: [50ms], max_attempts: 100, event_ttl: 1h }}
routes: [{{ name: bp, to: [bp-hook] }}]
"#,
        sink.url()
    ))
    .await;

    let mut accepted = 0;
    let refused = loop {
        let reply = app.send(big_event(&format!("b{accepted}"))).await;
        if !reply.status.is_success() {
            break reply;
        }
        accepted += 1;
        assert!(accepted < 100, "64KiB never filled");
    };
    assert!(accepted >= 5, "only {accepted} events fit in 64KiB");
    assert_eq!(refused.status.as_u16(), 503, "{}", refused.text());
    let retry_after: u64 = refused
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .expect("a Retry-After in seconds");
    assert!(retry_after >= 1);

    sink.set_default(Respond::status(200));
    wait_until("every accepted event delivered", WAIT, || {
        (0..accepted).all(|i| received(&sink, &format!("b{i}")) > 0)
    })
    .await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if app.send(big_event("after")).await.status.is_success() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "ingress never accepted again"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    wait_until("the new event delivered", WAIT, || {
        received(&sink, "after") == 1
    })
    .await;
}

async fn dedup_app(sink: &TestSink, window: &str) -> TestApp {
    TestApp::start(&format!(
        "ingress: {{ dedup_window: {window} }}\n\
         sinks: {{ dd-hook: {{ http: {{ url: \"{}\" }} }} }}\n\
         routes: [{{ name: dd, to: [dd-hook] }}]\n",
        sink.url()
    ))
    .await
}

#[tokio::test]
async fn a_repeat_within_the_window_is_acknowledged_and_delivered_once() {
    let sink = TestSink::start().await;
    let app = dedup_app(&sink, "10m").await;
    for _ in 0..2 {
        let reply = app.send(event("d1", "T")).await;
        assert!(reply.status.is_success(), "{}", reply.text());
    }
    let mut other = event("d1", "T");
    other["source"] = json!("/other");
    assert!(app.send(other).await.status.is_success());
    let (a, b) = (app.send(event("d2", "T")), app.send(event("d2", "T")));
    let (a, b) = tokio::join!(a, b);
    assert!(a.status.is_success() && b.status.is_success());
    app.send(event("marker", "T")).await;

    wait_until("d1 from two sources, d2 and the marker", WAIT, || {
        sink.count() >= 4 && received(&sink, "marker") == 1
    })
    .await;
    assert_eq!(received(&sink, "d1"), 2, "once per source");
    assert_eq!(received(&sink, "d2"), 1, "concurrent repeats stored once");
}

#[tokio::test]
async fn a_repeat_after_the_window_is_delivered_again() {
    let sink = TestSink::start().await;
    let app = dedup_app(&sink, "300ms").await;
    assert!(app.send(event("w1", "T")).await.status.is_success());
    wait_until("first delivery", WAIT, || received(&sink, "w1") == 1).await;
    // The window itself is what is under test, so the wait is real time.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(app.send(event("w1", "T")).await.status.is_success());
    wait_until("second delivery", WAIT, || received(&sink, "w1") == 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dedup_survives_a_restart_of_the_binary() {
    let dir = tempfile::tempdir().expect("temp dir");
    let sink = TestSink::start().await;
    let port = free_port();
    let config = dir.path().join("routes.yaml");
    let yaml = format!(
        "listen: 127.0.0.1:{port}\nadmin_listen: 127.0.0.1:0\n\
         spool: {{ path: \"{}/spool\" }}\ningress: {{ dedup_window: 10m }}\n\
         sinks: {{ hook: {{ http: {{ url: \"{}\" }}, retry: {{ schedule: [50ms] }} }} }}\n\
         routes: [{{ name: all, to: [hook] }}]\n",
        dir.path().display(),
        sink.url()
    );
    std::fs::write(&config, yaml).expect("write config");
    let url = format!("http://127.0.0.1:{port}/events");
    let ct = [("content-type", "application/cloudevents+json")];
    let send = |id: &str| post(&url, &ct, event(id, "T").to_string());

    // The sink refuses everything at first, so k1 is stored and pending (and never acked)
    // when the daemon is killed: the only way to a second k1 is a second stored delivery.
    sink.set_default(Respond::status(503));
    let mut daemon = Daemon::start(&config, port).await;
    assert!(send("k1").await.status.is_success());
    wait_until("a first attempt", WAIT, || received(&sink, "k1") >= 1).await;
    daemon.kill9();

    sink.set_default(Respond::status(200));
    let _daemon = Daemon::start(&config, port).await;
    assert!(
        send("k1").await.status.is_success(),
        "a repeat is acknowledged"
    );
    assert!(send("k2").await.status.is_success());
    wait_until("the marker delivered", WAIT, || {
        received_ok(&sink, "k2") == 1
    })
    .await;
    wait_until("the pending k1 delivered", WAIT, || {
        received_ok(&sink, "k1") >= 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        received_ok(&sink, "k1"),
        1,
        "the repeat was stored as a second delivery"
    );
}
