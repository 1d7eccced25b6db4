//! Priority lanes and per-subject ordering, end to end: a high event overtakes a low backlog
//! behind a slow sink, and a failed event holds back its same-subject successor.

use std::time::Duration;

use hyper::StatusCode;
use serde_json::Value;

use crate::support::daemon::event;
use crate::support::sink::Received;
use crate::support::{wait_until, Respond, TestApp, TestSink};

const WAIT: Duration = Duration::from_secs(10);

/// An event of type `ty` with the given subject.
fn subject_event(id: &str, ty: &str, subject: &str) -> Value {
    let mut e = event(id, ty);
    e["subject"] = Value::from(subject);
    e
}

fn id(r: &Received) -> String {
    r.header("ce-id").unwrap_or("-").to_owned()
}

#[tokio::test]
async fn a_high_event_overtakes_a_thousand_low_ones() {
    let sink = TestSink::start().await;
    sink.set_default(Respond::status(200).delay(Duration::from_millis(5)));
    let app = TestApp::start(&format!(
        r#"
sinks:
  slow: {{ http: {{ url: "{}" }}, concurrency: 1 }}
routes:
  - {{ name: bulk, match: {{ types: ["Bulk.*"] }}, priority: low, to: [slow] }}
  - {{ name: urgent, match: {{ types: ["Urgent.*"] }}, priority: high, to: [slow] }}
"#,
        sink.url()
    ))
    .await;
    let lows = (0..1000).map(|i| event(&format!("low-{i}"), "Bulk.Created"));
    app.send_batch(lows.collect()).await;
    wait_until("the backlog is being worked", WAIT, || sink.count() >= 5).await;

    let reply = app.send(event("high-1", "Urgent.Created")).await;
    assert_eq!(reply.status, StatusCode::ACCEPTED);
    // Counted once the event is acknowledged, that is stored: the requests from here on.
    let before = sink.count();
    wait_until("the high event arrives", WAIT, || {
        sink.received().iter().any(|r| id(r) == "high-1")
    })
    .await;

    let received = sink.received();
    let at = received.iter().position(|r| id(r) == "high-1");
    let position = at.map(|at| (at + 1).saturating_sub(before));
    assert!(
        position.is_some_and(|p| p <= 2),
        "high event was request {position:?} after it was sent"
    );
    assert!(received.len() < 1000, "the backlog was not drained first");
}

#[tokio::test]
async fn a_retried_event_holds_back_its_subject_but_not_others() {
    let sink = TestSink::start().await;
    sink.script([Respond::status(500)]);
    let app = TestApp::start(&format!(
        r#"
sinks:
  hook: {{ http: {{ url: "{}" }}, concurrency: 4, retry: {{ schedule: [300ms] }} }}
routes:
  - {{ name: orders, ordering: subject, to: [hook] }}
"#,
        sink.url()
    ))
    .await;
    app.send_batch(vec![subject_event("a1", "T", "/a")]).await;
    wait_until("a1's first attempt", WAIT, || sink.count() == 1).await;
    let next = vec![
        subject_event("a2", "T", "/a"),
        subject_event("b1", "T", "/b"),
    ];
    app.send_batch(next).await;
    wait_until("everything delivered", WAIT, || sink.count() == 4).await;

    let order: Vec<(String, u16)> = sink.received().iter().map(|r| (id(r), r.status)).collect();
    let names: Vec<&str> = order.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(names, ["a1", "b1", "a1", "a2"], "{order:?}");
    assert_eq!(order[0].1, 500);
    assert_eq!(order[2].1, 200, "a2 only after a1 succeeded");
}
