//! Delivery semantics: fan-out, retries, dead-lettering, TTL, Retry-After, isolation.

use std::time::Duration;

use hyper::StatusCode;

use crate::support::daemon::event;
use crate::support::{json_lines, wait_until, Respond, TestApp, TestSink};

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn one_event_fans_out_to_every_matching_sink() {
    let (a, b) = (TestSink::start().await, TestSink::start().await);
    let app = TestApp::start(&format!(
        r#"
sinks:
  a: {{ http: {{ url: "{}" }} }}
  b: {{ http: {{ url: "{}" }} }}
routes:
  - {{ name: everything, to: [a, b] }}
  - name: orders-only
    match: {{ types: ["Contoso.Orders.*"], subject: {{ begins_with: "/ORDERS/" }} }}
    to: [b]
"#,
        a.url(),
        b.url()
    ))
    .await;

    assert_eq!(
        app.send(event("f-1", "Contoso.Orders.Created"))
            .await
            .status,
        StatusCode::ACCEPTED
    );
    assert_eq!(
        app.send(event("f-2", "Contoso.Users.Created")).await.status,
        StatusCode::ACCEPTED
    );

    wait_until("a gets both, b gets three", WAIT, || {
        a.count() == 2 && b.count() == 3
    })
    .await;
    let routes: Vec<_> = b
        .received()
        .iter()
        .map(|r| r.header("aeg-subscription-name").unwrap().to_owned())
        .collect();
    assert_eq!(routes.iter().filter(|r| *r == "orders-only").count(), 1);
}

#[tokio::test]
async fn failed_deliveries_are_retried_on_the_schedule_until_they_succeed() {
    let sink = TestSink::start().await;
    sink.script([Respond::status(500), Respond::status(502)]);
    let app = TestApp::start(&format!(
        r#"
sinks:
  hook:
    http: {{ url: "{}" }}
    retry: {{ schedule: [20ms, 40ms], max_attempts: 5 }}
routes: [{{ name: all, to: [hook] }}]
"#,
        sink.url()
    ))
    .await;

    app.send(event("r-1", "T")).await;
    wait_until("third attempt", WAIT, || sink.count() == 3).await;
    let got = sink.received();
    let counts: Vec<_> = got
        .iter()
        .map(|r| r.header("aeg-delivery-count").unwrap().to_owned())
        .collect();
    assert_eq!(counts, ["0", "1", "2"]);
    assert!(got[1].at - got[0].at >= Duration::from_millis(20));
    assert!(got[2].at - got[1].at >= Duration::from_millis(40));
    wait_until("spool drained", WAIT, || {
        app.running.spool_depth("hook") == 0
    })
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(sink.count(), 3, "no attempt after success");
}

#[tokio::test]
async fn a_400_is_dead_lettered_at_once_with_its_reason() {
    let sink = TestSink::start().await;
    sink.set_default(Respond::status(400));
    let app = TestApp::start(&format!(
        r#"
sinks:
  hook:
    http: {{ url: "{}" }}
    retry: {{ schedule: [10ms] }}
    dead_letter: dlq
  dlq: {{ file: {{ path: "{{dir}}/dead.jsonl" }} }}
routes: [{{ name: all, to: [hook] }}]
"#,
        sink.url()
    ))
    .await;

    app.send(event("d-1", "T")).await;
    let path = app.path("dead.jsonl");
    wait_until("dead-letter record", WAIT, || json_lines(&path).len() == 1).await;
    let record = &json_lines(&path)[0];
    assert_eq!(record["id"], "d-1");
    assert_eq!(record["deliveryattempts"], 1);
    assert_eq!(record["lasthttpstatuscode"], 400);
    assert_eq!(record["lastdeliveryoutcome"], "BadRequest");
    assert!(
        record["deadletterreason"]
            .as_str()
            .unwrap()
            .contains("BadRequest"),
        "{record}"
    );
    assert!(record["publishtime"].is_string() && record["lastdeliveryattempttime"].is_string());
    assert_eq!(sink.count(), 1, "a 400 is not retried");
}

#[tokio::test]
async fn deliveries_past_their_ttl_are_dead_lettered_with_the_ttl_reason() {
    let sink = TestSink::start().await;
    sink.set_default(Respond::status(500));
    let app = TestApp::start(&format!(
        r#"
sinks:
  hook:
    http: {{ url: "{}" }}
    retry: {{ schedule: [50ms], event_ttl: 300ms }}
    dead_letter: dlq
  dlq: {{ file: {{ path: "{{dir}}/dead.jsonl" }} }}
routes: [{{ name: all, to: [hook] }}]
"#,
        sink.url()
    ))
    .await;

    app.send(event("t-1", "T")).await;
    let path = app.path("dead.jsonl");
    wait_until("ttl dead-letter", WAIT, || json_lines(&path).len() == 1).await;
    let record = &json_lines(&path)[0];
    assert_eq!(record["deadletterreason"], "TimeToLiveExceeded");
    let attempts = record["deliveryattempts"].as_i64().unwrap();
    assert!(
        (2..=7).contains(&attempts),
        "attempts within a 300ms TTL at 50ms spacing: {attempts}"
    );
}

#[tokio::test]
async fn exhausted_attempts_without_a_dead_letter_sink_are_counted() {
    let sink = TestSink::start().await;
    sink.set_default(Respond::status(500));
    let app = TestApp::start(&format!(
        r#"
sinks:
  hook: {{ http: {{ url: "{}" }}, retry: {{ schedule: [5ms], max_attempts: 3 }} }}
routes: [{{ name: all, to: [hook] }}]
"#,
        sink.url()
    ))
    .await;
    app.send(event("m-1", "T")).await;
    let counters = app.running.counters();
    wait_until("dropped dead letter", WAIT, || {
        switchyard::telemetry::Counters::get(&counters.dead_letters_dropped) == 1
    })
    .await;
    assert_eq!(sink.count(), 3);
}

#[tokio::test]
async fn retry_after_from_a_503_is_honoured() {
    let sink = TestSink::start().await;
    sink.script([Respond::status(503).retry_after("1")]);
    let app = TestApp::start(&format!(
        r#"
sinks:
  hook: {{ http: {{ url: "{}" }}, retry: {{ schedule: [10ms] }} }}
routes: [{{ name: all, to: [hook] }}]
"#,
        sink.url()
    ))
    .await;
    app.send(event("ra-1", "T")).await;
    wait_until("second attempt", WAIT, || sink.count() == 2).await;
    let got = sink.received();
    let gap = got[1].at - got[0].at;
    assert!(
        gap >= Duration::from_millis(950),
        "retried after {gap:?}, Retry-After said 1s"
    );
}

#[tokio::test]
async fn a_stalled_and_a_failing_sink_do_not_delay_a_healthy_one() {
    let (stalled, failing, healthy) = (
        TestSink::start().await,
        TestSink::start().await,
        TestSink::start().await,
    );
    stalled.set_default(Respond::status(200).delay(Duration::from_secs(30)));
    failing.set_default(Respond::status(500));
    let app = TestApp::start(&format!(
        r#"
shutdown_grace: 100ms
sinks:
  stalled: {{ http: {{ url: "{}", timeout: 60s }}, concurrency: 2 }}
  failing: {{ http: {{ url: "{}" }}, retry: {{ schedule: [1ms] }}, concurrency: 2 }}
  healthy: {{ http: {{ url: "{}" }}, concurrency: 2 }}
routes: [{{ name: all, to: [stalled, failing, healthy] }}]
"#,
        stalled.url(),
        failing.url(),
        healthy.url()
    ))
    .await;
    for i in 0..50 {
        assert_eq!(
            app.send(event(&format!("i-{i}"), "T")).await.status,
            StatusCode::ACCEPTED
        );
    }
    // The stalled sink holds its two connections for 30 s; everything must reach the
    // healthy sink long before that.
    wait_until("healthy sink got all 50", Duration::from_secs(10), || {
        healthy.count() == 50
    })
    .await;
    assert!(stalled.count() <= 2);
}

#[tokio::test]
async fn concurrency_caps_requests_in_flight_to_a_sink() {
    let sink = TestSink::start().await;
    sink.set_default(Respond::status(200).delay(Duration::from_millis(100)));
    let app = TestApp::start(&format!(
        r#"
sinks:
  hook: {{ http: {{ url: "{}" }}, concurrency: 3 }}
routes: [{{ name: all, to: [hook] }}]
"#,
        sink.url()
    ))
    .await;
    for i in 0..12 {
        app.send(event(&format!("c-{i}"), "T")).await;
    }
    wait_until("all delivered", WAIT, || sink.count() == 12).await;
    assert_eq!(sink.max_in_flight(), 3);
}
