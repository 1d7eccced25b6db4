//! Per-sink delivery control: circuit breaker and fallback, rate limit, batching, in-flight
//! ceiling and capped waits, against real sink servers.

use std::time::Duration;

use serde_json::Value;

use crate::support::daemon::event;
use crate::support::{json_lines, metric, wait_until, Respond, TestApp, TestSink};

const WAIT: Duration = Duration::from_secs(10);

/// Sends `ids` as one CloudEvents batch, so they reach the spool in one step.
/// `n` events with ids `<prefix>-0`, `<prefix>-1`, …
fn events(prefix: &str, n: usize) -> Vec<Value> {
    (0..n)
        .map(|i| event(&format!("{prefix}-{i}"), "T"))
        .collect()
}

fn counts(sink: &TestSink) -> Vec<String> {
    let got = sink.received();
    got.iter()
        .map(|r| r.header("aeg-delivery-count").unwrap_or("-").to_owned())
        .collect()
}

/// Polls the admin API until the sink's breaker is in `state`; returns the breaker object.
async fn breaker_in(app: &TestApp, name: &str, state: &str) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let body = app.admin_get("/api/v1/sinks", None).await.json();
        let list = body["sinks"].as_array().expect("sinks list").clone();
        let sink = list.into_iter().find(|s| s["name"] == name);
        let breaker = sink.expect("sink listed")["breaker"].clone();
        if breaker["state"] == state {
            return breaker;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "breaker never {state}: {breaker}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn the_breaker_opens_waits_probes_once_reopens_and_closes() {
    let sink = TestSink::start().await;
    sink.set_default(Respond::status(500));
    let app = TestApp::start(&format!(
        r#"
sinks:
  hook:
    http: {{ url: "{}" }}
    concurrency: 1
    retry: {{ schedule: [10ms] }}
    circuit_breaker: {{ consecutive_failures: 3, open_for: 500ms }}
routes: [{{ name: all, to: [hook] }}]
"#,
        sink.url()
    ))
    .await;
    breaker_in(&app, "hook", "closed").await;

    app.send(event("b-1", "T")).await;
    wait_until("three failed attempts", WAIT, || sink.count() == 3).await;
    let open = breaker_in(&app, "hook", "open").await;
    assert!(open["opened_at"].is_string(), "{open}");
    // The probe fails, and the breaker opens again.
    wait_until("first probe", WAIT, || sink.count() == 4).await;
    sink.set_default(Respond::status(200));
    wait_until("second probe", WAIT, || sink.count() == 5).await;
    wait_until("closed", WAIT, || app.running.spool_depth("hook") == 0).await;
    breaker_in(&app, "hook", "closed").await;

    let got = sink.received();
    let gap = |i: usize| got[i].at - got[i - 1].at;
    assert!(
        gap(3) >= Duration::from_millis(500),
        "probe after {:?}",
        gap(3)
    );
    assert!(
        gap(4) >= Duration::from_millis(500),
        "reprobe after {:?}",
        gap(4)
    );
    assert_eq!(
        counts(&sink),
        ["0", "1", "2", "3", "4"],
        "waiting adds no attempts"
    );

    // Closed again: deliveries flow without waiting.
    app.send_batch(events("after", 5)).await;
    wait_until("five more", Duration::from_secs(2), || sink.count() == 10).await;
}

#[tokio::test]
async fn deliveries_queued_while_open_keep_their_attempts() {
    let sink = TestSink::start().await;
    sink.script([Respond::status(503), Respond::status(503)]);
    let app = TestApp::start(&format!(
        r#"
sinks:
  hook:
    http: {{ url: "{}" }}
    retry: {{ schedule: [10ms] }}
    circuit_breaker: {{ consecutive_failures: 2, open_for: 400ms }}
routes: [{{ name: all, to: [hook] }}]
"#,
        sink.url()
    ))
    .await;
    app.send(event("q-0", "T")).await;
    wait_until("opened", WAIT, || sink.count() == 2).await;
    app.send_batch(events("q-new", 3)).await;
    wait_until("all delivered", WAIT, || sink.count() == 6).await;

    let got = sink.received();
    assert!(got[2].at - got[1].at >= Duration::from_millis(400));
    let fresh: Vec<&str> = got[2..]
        .iter()
        .filter(|r| r.header("ce-id") != Some("q-0"))
        .map(|r| r.header("aeg-delivery-count").unwrap_or("-"))
        .collect();
    assert_eq!(fresh, ["0", "0", "0"], "no attempt counted while waiting");
}

#[tokio::test]
async fn the_fallback_takes_deliveries_while_the_breaker_is_open() {
    let (primary, fallback) = (TestSink::start().await, TestSink::start().await);
    primary.set_default(Respond::status(500));
    let app = TestApp::start(&format!(
        r#"
sinks:
  primary:
    http: {{ url: "{}" }}
    retry: {{ schedule: [10ms] }}
    circuit_breaker: {{ consecutive_failures: 1, open_for: 1m }}
    fallback: spare
  spare: {{ http: {{ url: "{}" }} }}
routes: [{{ name: all, to: [primary] }}]
"#,
        primary.url(),
        fallback.url()
    ))
    .await;
    app.send(event("first", "T")).await;
    wait_until("opened", WAIT, || primary.count() == 1).await;
    app.send_batch(events("f", 3)).await;
    wait_until("fallback got all four", WAIT, || fallback.count() == 4).await;
    wait_until("spool drained", WAIT, || {
        app.running.spool_depth("primary") == 0
    })
    .await;
    assert_eq!(primary.count(), 1, "nothing reaches the primary while open");
}

#[tokio::test]
async fn batches_respect_the_exact_in_flight_ceiling() {
    let sink = TestSink::start().await;
    sink.set_default(Respond::status(200).delay(Duration::from_millis(100)));
    let app = TestApp::start(&format!(
        r#"
sinks:
  hook:
    http: {{ url: "{}", format: cloudevents-structured }}
    concurrency: 2
    batch: {{ max_events: 3 }}
routes: [{{ name: all, to: [hook] }}]
"#,
        sink.url()
    ))
    .await;
    app.send_batch(events("c", 18)).await;
    let events = |s: &TestSink| -> usize {
        let got = s.received();
        got.iter()
            .map(|r| r.json().as_array().map_or(0, Vec::len))
            .sum()
    };
    wait_until("all 18 events", WAIT, || events(&sink) == 18).await;
    assert_eq!(sink.max_in_flight(), 2);
    assert!(sink
        .received()
        .iter()
        .all(|r| r.json().as_array().unwrap().len() <= 3));
}

#[tokio::test]
async fn the_rate_limit_holds_within_five_percent() {
    let sink = TestSink::start().await;
    let app = TestApp::start(&format!(
        r#"
sinks:
  hook: {{ http: {{ url: "{}" }}, rate_limit: 50/s, concurrency: 8 }}
routes: [{{ name: all, to: [hook] }}]
"#,
        sink.url()
    ))
    .await;
    app.send_batch(events("r", 101)).await;
    wait_until("101 requests", Duration::from_secs(30), || {
        sink.count() == 101
    })
    .await;
    let got = sink.received();
    let window = got[100].at - got[0].at;
    let rate = 100.0 / window.as_secs_f64();
    assert!((47.5..=52.5).contains(&rate), "{rate:.1}/s over {window:?}");
}

#[tokio::test]
async fn batches_use_the_batch_shape_of_each_format() {
    let (binary, structured, grid) = (
        TestSink::start().await,
        TestSink::start().await,
        TestSink::start().await,
    );
    let app = TestApp::start(&format!(
        r#"
sinks:
  binary: {{ http: {{ url: "{}" }}, batch: {{ max_events: 10, linger: 200ms }} }}
  structured:
    http: {{ url: "{}", format: cloudevents-structured }}
    batch: {{ max_events: 10, linger: 200ms }}
  grid: {{ http: {{ url: "{}", format: eventgrid }}, batch: {{ max_events: 10, linger: 200ms }} }}
routes: [{{ name: all, to: [binary, structured, grid] }}]
"#,
        binary.url(),
        structured.url(),
        grid.url()
    ))
    .await;
    app.send_batch(events("fmt", 4)).await;
    for (sink, content_type, id_key) in [
        (&binary, "application/cloudevents-batch+json", "id"),
        (&structured, "application/cloudevents-batch+json", "id"),
        (&grid, "application/json", "id"),
    ] {
        wait_until("one batch", WAIT, || sink.count() == 1).await;
        let request = &sink.received()[0];
        let ct = request.header("content-type").unwrap_or_default();
        assert!(ct.starts_with(content_type), "{ct}");
        let body = request.json();
        let got: Vec<&str> = body
            .as_array()
            .expect("a JSON array")
            .iter()
            .filter_map(|e| e[id_key].as_str())
            .collect();
        assert_eq!(got, ["fmt-0", "fmt-1", "fmt-2", "fmt-3"]);
        assert_eq!(request.header("aeg-delivery-count"), Some("0"));
    }
    assert!(grid.received()[0].json()[0]["eventType"].is_string());
}

#[tokio::test]
async fn a_failed_batch_is_retried_whole_with_counts_per_event() {
    let sink = TestSink::start().await;
    sink.script([Respond::status(500)]);
    let app = TestApp::start(&format!(
        r#"
sinks:
  hook:
    http: {{ url: "{}", format: cloudevents-structured }}
    batch: {{ max_events: 10, linger: 300ms }}
    retry: {{ schedule: [20ms] }}
routes: [{{ name: all, to: [hook] }}]
"#,
        sink.url()
    ))
    .await;
    app.send_batch(events("w", 3)).await;
    let events = |s: &TestSink| -> usize {
        let got = s.received();
        got.iter()
            .map(|r| r.json().as_array().map_or(0, Vec::len))
            .sum()
    };
    wait_until("batch and its retry", WAIT, || events(&sink) == 6).await;
    let got = sink.received();
    assert_eq!(got.len(), 2);
    let ids = |r: &crate::support::sink::Received| -> Vec<String> {
        let mut ids: Vec<String> = r
            .json()
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["id"].to_string())
            .collect();
        ids.sort();
        ids
    };
    assert_eq!(ids(&got[0]), ids(&got[1]), "the same three events again");
    assert_eq!(counts(&sink), ["0", "1"]);
}

#[tokio::test]
async fn each_event_of_a_failing_batch_is_dead_lettered_with_its_own_attempts() {
    let sink = TestSink::start().await;
    sink.set_default(Respond::status(500));
    let app = TestApp::start(&format!(
        r#"
sinks:
  hook:
    http: {{ url: "{}" }}
    batch: {{ max_events: 10 }}
    retry: {{ schedule: [10ms], max_attempts: 2 }}
    dead_letter: dlq
  dlq: {{ file: {{ path: "{{dir}}/dead.jsonl" }} }}
routes: [{{ name: all, to: [hook] }}]
"#,
        sink.url()
    ))
    .await;
    app.send_batch(events("d", 3)).await;
    let path = app.path("dead.jsonl");
    let lines = || -> Vec<Value> {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        text.lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    };
    wait_until("three dead letters", WAIT, || lines().len() == 3).await;
    for record in lines() {
        assert_eq!(record["deliveryattempts"], 2, "{record}");
        assert_eq!(record["deadletterreason"], "MaxDeliveryAttemptsExceeded");
    }
}

#[tokio::test]
async fn an_honoured_retry_after_is_capped_by_max_retry_after() {
    let sink = TestSink::start().await;
    sink.script([Respond::status(503).retry_after("30")]);
    let app = TestApp::start(&format!(
        r#"
sinks:
  hook: {{ http: {{ url: "{}" }}, retry: {{ schedule: [10ms], max_retry_after: 100ms }} }}
routes: [{{ name: all, to: [hook] }}]
"#,
        sink.url()
    ))
    .await;
    app.send(event("ra-1", "T")).await;
    wait_until("retried", Duration::from_secs(5), || sink.count() == 2).await;
    let got = sink.received();
    let gap = got[1].at - got[0].at;
    assert!(gap >= Duration::from_millis(100), "{gap:?}");
    assert!(gap < Duration::from_secs(1), "{gap:?}");
}

/// Pauses or resumes (`action`) the sink `sink` through the admin API.
async fn sink_action(app: &TestApp, sink: &str, action: &str) {
    let url = format!("{}/api/v1/sinks/{sink}/{action}", app.admin);
    let reply = crate::support::request(hyper::Method::POST, &url, &[], "").await;
    assert_eq!(
        reply.status.as_u16(),
        200,
        "{action} {sink}: {}",
        reply.text()
    );
}

/// The ids of the events in a JSON-lines file, in order.
fn line_ids(path: &std::path::Path) -> Vec<String> {
    let ids = json_lines(path)
        .into_iter()
        .map(|event| event["id"].as_str().map(str::to_owned));
    ids.map(|id| id.expect("an id")).collect()
}

#[tokio::test]
async fn a_file_sink_writes_what_waits_in_batches_unless_told_one_by_one() {
    let app = TestApp::start(
        r#"
sinks:
  batched: { file: { path: "{dir}/batched.jsonl" } }
  single: { file: { path: "{dir}/single.jsonl" }, batch: { max_events: 1 } }
routes: [{ name: all, to: [batched, single] }]
"#,
    )
    .await;
    for sink in ["batched", "single"] {
        sink_action(&app, sink, "pause").await;
    }
    app.send_batch(events("w", 100)).await;
    for sink in ["batched", "single"] {
        sink_action(&app, sink, "resume").await;
    }
    let expected: Vec<String> = (0..100).map(|i| format!("w-{i}")).collect();
    for sink in ["batched", "single"] {
        let path = app.path(&format!("{sink}.jsonl"));
        wait_until("every line", WAIT, || line_ids(&path).len() >= 100).await;
        let mut got = line_ids(&path);
        got.sort_unstable();
        let mut want = expected.clone();
        want.sort_unstable();
        assert_eq!(got, want, "{sink}: each event exactly once");
    }
    // What waited when the sink resumed was leased together: two appends of up to 64 lines
    // for the default, one per event where `max_events: 1` says so.
    let attempts = |sink: &str| {
        let prefix = format!("switchyard_delivery_duration_seconds_count{{sink=\"{sink}\"");
        let admin = app.admin.clone();
        async move { metric(&admin, &prefix).await }
    };
    assert_eq!(attempts("batched").await, 2.0);
    assert_eq!(attempts("single").await, 100.0);
}

#[tokio::test]
async fn batches_stop_at_max_bytes_and_not_before() {
    const MAX_BYTES: usize = 1000;
    let sink = TestSink::start().await;
    let app = TestApp::start(&format!(
        r#"
sinks:
  target: {{ http: {{ url: "{}" }}, batch: {{ max_events: 100, max_bytes: {MAX_BYTES} }} }}
routes: [{{ name: all, to: [target] }}]
"#,
        sink.url()
    ))
    .await;
    sink_action(&app, "target", "pause").await;
    // Ids of one length, so every event takes the same bytes in a batch.
    let same_size = (10..50).map(|i| event(&format!("b-{i}"), "T")).collect();
    app.send_batch(same_size).await;
    sink_action(&app, "target", "resume").await;
    wait_until("every event", WAIT, || {
        let got = sink.received();
        got.iter()
            .map(|r| r.json().as_array().map_or(0, Vec::len))
            .sum::<usize>()
            >= 40
    })
    .await;
    let received = sink.received();
    assert!(
        received.len() > 1,
        "max_bytes split nothing: one batch of 40"
    );
    let mut ids = Vec::new();
    for (index, request) in received.iter().enumerate() {
        let events = request.json();
        let events = events.as_array().expect("a JSON array");
        // `[`, the events with a comma between each two, `]`: one event's share.
        let each = (request.body.len() - 1) / events.len();
        assert!(
            request.body.len() <= MAX_BYTES,
            "batch {index}: {} bytes",
            request.body.len()
        );
        if index + 1 < received.len() {
            assert!(
                request.body.len() + each > MAX_BYTES,
                "batch {index} ({} bytes, {} events) had room for one more",
                request.body.len(),
                events.len()
            );
        }
        ids.extend(
            events
                .iter()
                .map(|e| e["id"].as_str().expect("an id").to_owned()),
        );
    }
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 40, "each event once");
}
