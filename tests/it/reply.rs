//! Reply events: a target's answer to a delivery, taken in as an event (`reply: true`).

use std::time::Duration;

use hyper::StatusCode;
use switchyard::telemetry::Counters;

use crate::support::daemon::event;
use crate::support::{wait_until, Respond, TestApp, TestSink};

const WAIT: Duration = Duration::from_secs(10);

/// A 200 that carries a binary-mode CloudEvent of type `ty`.
fn binary_reply(id: &str, ty: &str) -> Respond {
    Respond::status(200)
        .header("ce-specversion", "1.0")
        .header("ce-id", id)
        .header("ce-source", "/replier")
        .header("ce-type", ty)
        .header("content-type", "application/json")
        .body(r#"{"answer":42}"#)
}

/// Sink `a` (the replier) and sink `b` (where replies of type `Reply.Done` go).
fn two_sinks(a: &TestSink, b: &TestSink, a_extra: &str) -> String {
    format!(
        r#"
sinks:
  a: {{ http: {{ url: "{}" }}, {a_extra} }}
  b: {{ http: {{ url: "{}" }} }}
routes:
  - {{ name: orders, match: {{ types: ["Order.Placed"] }}, to: [a] }}
  - {{ name: replies, match: {{ types: ["Reply.Done"] }}, to: [b] }}
"#,
        a.url(),
        b.url()
    )
}

fn dropped(app: &TestApp) -> u64 {
    Counters::get(&app.running.counters().replies_dropped)
}

fn delivered(app: &TestApp) -> u64 {
    Counters::get(&app.running.counters().deliveries_succeeded)
}

#[tokio::test]
async fn a_binary_mode_reply_is_routed_to_a_second_sink() {
    let (a, b) = (TestSink::start().await, TestSink::start().await);
    a.set_default(binary_reply("r-1", "Reply.Done"));
    let app = TestApp::start(&two_sinks(&a, &b, "reply: true")).await;

    let sent = app.send(event("o-1", "Order.Placed")).await;
    assert_eq!(sent.status, StatusCode::ACCEPTED);

    wait_until("the reply reaches b", WAIT, || b.count() == 1).await;
    let got = &b.received()[0];
    assert_eq!(got.header("ce-id"), Some("r-1"));
    assert_eq!(got.header("ce-type"), Some("Reply.Done"));
    assert_eq!(got.header("ce-source"), Some("/replier"));
    assert_eq!(got.header("ce-switchyardhops"), Some("1"));
    assert_eq!(got.json(), serde_json::json!({"answer": 42}));
    assert_eq!(a.count(), 1, "the original is delivered once");
    wait_until("both deliveries acked", WAIT, || delivered(&app) == 2).await;
    let metrics = app.admin_get("/metrics", None).await.text();
    let line = metrics
        .lines()
        .find(|l| {
            l.starts_with("switchyard_events_received_total")
                && l.contains(r#"format="reply""#)
                && l.contains(r#"outcome="accepted""#)
        })
        .unwrap_or_else(|| panic!("no reply line in:\n{metrics}"));
    let count: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(count >= 1.0, "{line}");
}

#[tokio::test]
async fn a_structured_reply_is_routed() {
    let (a, b) = (TestSink::start().await, TestSink::start().await);
    let reply = serde_json::json!({
        "specversion": "1.0", "id": "r-2", "source": "/replier", "type": "Reply.Done",
        "subject": "done", "datacontenttype": "application/json", "data": {"ok": true}
    });
    a.set_default(
        Respond::status(200)
            .header(
                "content-type",
                "application/cloudevents+json; charset=utf-8",
            )
            .body(reply.to_string()),
    );
    let app = TestApp::start(&two_sinks(&a, &b, "reply: true")).await;

    app.send(event("o-2", "Order.Placed")).await;

    wait_until("the reply reaches b", WAIT, || b.count() == 1).await;
    let got = &b.received()[0];
    assert_eq!(got.header("ce-id"), Some("r-2"));
    assert_eq!(got.header("ce-subject"), Some("done"));
    assert_eq!(got.header("ce-switchyardhops"), Some("1"));
    assert_eq!(got.json(), serde_json::json!({"ok": true}));
}

#[tokio::test]
async fn a_reply_loop_stops_at_max_hops_and_counts_the_drop() {
    let looping = TestSink::start().await;
    // Every answer is an event its own route matches again.
    looping.set_default(binary_reply("again", "Order.Placed"));
    let app = TestApp::start(&format!(
        r#"
max_hops: 5
sinks:
  loop: {{ http: {{ url: "{}" }}, reply: true, max_hops: 3 }}
routes: [{{ name: orders, match: {{ types: ["Order.Placed"] }}, to: [loop] }}]
"#,
        looping.url()
    ))
    .await;

    app.send(event("o-3", "Order.Placed")).await;

    wait_until("the fourth reply is dropped", WAIT, || dropped(&app) == 1).await;
    // The original and the replies with hops 1, 2 and 3; the reply with hops 4 is dropped.
    wait_until("four deliveries acked", WAIT, || delivered(&app) == 4).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let hops: Vec<Option<String>> = looping
        .received()
        .iter()
        .map(|r| r.header("ce-switchyardhops").map(str::to_owned))
        .collect();
    assert_eq!(
        hops,
        [None, Some("1".into()), Some("2".into()), Some("3".into())]
    );
    assert_eq!(dropped(&app), 1);
    let metrics = app.admin_get("/metrics", None).await.text();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("switchyard_replies_dropped_total")
                && l.contains(r#"reason="max_hops""#)
                && l.contains(r#"sink="loop""#)),
        "{metrics}"
    );
}

#[tokio::test]
async fn an_exec_sink_replies_with_the_json_it_prints() {
    let b = TestSink::start().await;
    let app = TestApp::start(&format!(
        r#"
sinks:
  script:
    exec:
      command: ["sh", "-c", "cat >/dev/null; sleep 0.05; printf '%s' '{{\"specversion\":\"1.0\",\"id\":\"x-1\",\"source\":\"/exec\",\"type\":\"Reply.Done\",\"data\":{{\"from\":\"'$SWITCHYARD_EVENT_ID'\"}}}}'"]
    reply: true
  b: {{ http: {{ url: "{}" }} }}
routes:
  - {{ name: orders, match: {{ types: ["Order.Placed"] }}, to: [script] }}
  - {{ name: replies, match: {{ types: ["Reply.Done"] }}, to: [b] }}
"#,
        b.url()
    ))
    .await;

    app.send(event("o-4", "Order.Placed")).await;

    wait_until("the exec reply reaches b", WAIT, || b.count() == 1).await;
    let got = &b.received()[0];
    assert_eq!(got.header("ce-id"), Some("x-1"));
    assert_eq!(got.header("ce-source"), Some("/exec"));
    assert_eq!(got.header("ce-switchyardhops"), Some("1"));
    assert_eq!(got.json(), serde_json::json!({"from": "o-4"}));
}

#[tokio::test]
async fn a_registered_handler_replies_with_the_event_it_returns() {
    let b = TestSink::start().await;
    let yaml = format!(
        r#"
sinks:
  answer: {{ handler: {{ name: answer }}, reply: true }}
  b: {{ http: {{ url: "{}" }} }}
routes:
  - {{ name: orders, match: {{ types: ["Order.Placed"] }}, to: [answer] }}
  - {{ name: replies, match: {{ types: ["Reply.Done"] }}, to: [b] }}
"#,
        b.url()
    );
    let app = TestApp::start_with(&yaml, |s| {
        s.handler(
            "answer",
            switchyard::sinks::Replying(|event: cloudevents::Event| async move {
                use cloudevents::{AttributesReader, EventBuilder, EventBuilderV10};
                let reply = EventBuilderV10::new()
                    .id(format!("re-{}", event.id()))
                    .source("/handler")
                    .ty("Reply.Done")
                    .build()
                    .map_err(|e| switchyard::HandlerError::permanent(e.to_string()))?;
                Ok(Some(reply))
            }),
        )
    })
    .await;

    app.send(event("o-5", "Order.Placed")).await;

    wait_until("the handler's reply reaches b", WAIT, || b.count() == 1).await;
    assert_eq!(b.received()[0].header("ce-id"), Some("re-o-5"));
    assert_eq!(b.received()[0].header("ce-switchyardhops"), Some("1"));
}

#[tokio::test]
async fn without_reply_a_cloudevent_response_is_ignored() {
    let (a, b) = (TestSink::start().await, TestSink::start().await);
    a.set_default(binary_reply("r-6", "Reply.Done"));
    let app = TestApp::start(&two_sinks(&a, &b, "concurrency: 1")).await;

    app.send(event("o-6", "Order.Placed")).await;

    wait_until("the original is delivered", WAIT, || delivered(&app) == 1).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(b.count(), 0, "a reply was routed without reply: true");
    assert_eq!(
        Counters::get(&app.running.counters().events_received),
        1,
        "only the original was received"
    );
    assert_eq!(dropped(&app), 0);
}

#[tokio::test]
async fn an_invalid_reply_does_not_fail_the_delivery() {
    let (a, b) = (TestSink::start().await, TestSink::start().await);
    a.set_default(
        Respond::status(200)
            .header("content-type", "application/cloudevents+json")
            .body("{ this is not an event"),
    );
    let app = TestApp::start(&two_sinks(&a, &b, "reply: true")).await;

    app.send(event("o-7", "Order.Placed")).await;

    wait_until("the invalid reply is counted", WAIT, || dropped(&app) == 1).await;
    wait_until("the delivery is acked", WAIT, || delivered(&app) == 1).await;
    let counters = app.running.counters();
    assert_eq!(Counters::get(&counters.deliveries_retried), 0);
    assert_eq!(Counters::get(&counters.deliveries_dead_lettered), 0);
    assert_eq!(a.count(), 1);
    assert_eq!(b.count(), 0);
    wait_until("nothing left for a", WAIT, || {
        app.running.spool_depth("a") == 0
    })
    .await;
}

#[tokio::test]
async fn a_reply_over_the_ingress_limit_is_invalid_not_a_failure() {
    let (a, b) = (TestSink::start().await, TestSink::start().await);
    a.set_default(binary_reply("r-8", "Reply.Done").body(vec![b'x'; 4096]));
    let yaml = format!(
        "ingress: {{ max_event_bytes: 1KiB }}\n{}",
        two_sinks(&a, &b, "reply: true")
    );
    let app = TestApp::start(&yaml).await;

    app.send(event("o-8", "Order.Placed")).await;

    wait_until("the large reply is dropped", WAIT, || dropped(&app) == 1).await;
    wait_until("the delivery is acked", WAIT, || delivered(&app) == 1).await;
    assert_eq!(b.count(), 0);
}

#[test]
fn check_accepts_the_reply_keys_and_rejects_bad_values_with_their_path() {
    let dir = tempfile::tempdir().unwrap();
    let check = |name: &str, yaml: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, yaml).unwrap();
        std::process::Command::new(crate::support::process::BIN)
            .arg("check")
            .arg("--config")
            .arg(&path)
            .output()
            .unwrap()
    };
    let good = check(
        "good.yaml",
        r#"
max_hops: 4
sinks:
  hook: { http: { url: "http://127.0.0.1:1/x" }, reply: true, max_hops: 2 }
  script: { exec: { command: ["true"] }, reply: false }
routes: [{ name: r, to: [hook, script] }]
"#,
    );
    assert!(
        good.status.success(),
        "{}",
        String::from_utf8_lossy(&good.stderr)
    );

    let bad = check(
        "bad.yaml",
        r#"
max_hops: 0
sinks:
  hook: { http: { url: "http://127.0.0.1:1/x" }, reply: maybe, max_hops: 1000 }
  console: { log: {}, reply: true }
  batched: { http: { url: "http://127.0.0.1:1/y" }, reply: true, batch: { max_events: 10 } }
routes: [{ name: r, to: [hook, console, batched] }]
"#,
    );
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert_eq!(bad.status.code(), Some(64), "{stderr}");
    for path in [
        "max_hops",
        "sinks.hook.reply",
        "sinks.hook.max_hops",
        "sinks.console.reply",
        "sinks.batched.reply",
    ] {
        let at = format!("- {path}: ");
        let found = stderr.lines().any(|l| l.trim_start().starts_with(&at));
        assert!(found, "no error at {path}:\n{stderr}");
    }
}

/// A daemon whose exec sink answers each event with a reply `re-<id>`, routed to `b`.
fn kill9_config(dir: &std::path::Path, port: u16, b: &TestSink) -> std::path::PathBuf {
    let path = dir.join("routes.yaml");
    let yaml = format!(
        r#"
listen: 127.0.0.1:{port}
admin_listen: 127.0.0.1:0
spool: {{ backend: embedded, path: "{}/spool" }}
sinks:
  script:
    exec:
      command: ["sh", "-c", "cat >/dev/null; printf '{{\"specversion\":\"1.0\",\"id\":\"re-%s\",\"source\":\"/exec\",\"type\":\"Reply.Done\"}}' \"$SWITCHYARD_EVENT_ID\""]
    reply: true
    concurrency: 4
  b:
    http: {{ url: "{}", timeout: 2s }}
    retry: {{ schedule: [20ms, 50ms, 100ms], max_attempts: 100, event_ttl: 1h }}
routes:
  - {{ name: orders, match: {{ types: ["Order.Placed"] }}, to: [script] }}
  - {{ name: replies, match: {{ types: ["Reply.Done"] }}, to: [b] }}
"#,
        dir.display(),
        b.url()
    );
    std::fs::write(&path, yaml).expect("write config");
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_survive_sigkill_while_deliveries_are_answered() {
    use crate::support::process::{free_port, Daemon};
    const EVENTS: usize = 40;
    let dir = tempfile::tempdir().expect("temp dir");
    let b = TestSink::start().await;
    b.set_default(Respond::status(503));
    let port = free_port();
    let config = kill9_config(dir.path(), port, &b);
    let mut daemon = Daemon::start(&config, port).await;
    let url = format!("http://127.0.0.1:{port}/events");
    // One batch: every event is stored at once, and the kill meets them part-way.
    let batch: Vec<_> = (0..EVENTS)
        .map(|n| event(&format!("k-{n}"), "Order.Placed"))
        .collect();
    let headers = [("content-type", "application/cloudevents-batch+json")];
    let body = serde_json::Value::Array(batch).to_string();
    let reply = crate::support::post(&url, &headers, body).await;
    assert_eq!(reply.status, StatusCode::ACCEPTED);
    // Killed while the exec sink is still answering: some replies are stored, some not yet.
    wait_until("some replies stored", WAIT, || b.count() >= 3).await;
    daemon.kill9();
    let before = b.count();
    let stored_before: std::collections::BTreeSet<String> = b
        .received()
        .iter()
        .filter_map(|r| r.header("ce-id").map(str::to_owned))
        .collect();

    b.set_default(Respond::status(200));
    let _daemon = Daemon::start(&config, port).await;
    let answered = |b: &TestSink| {
        let ids: std::collections::BTreeSet<String> = b
            .received()
            .iter()
            .filter(|r| r.status == 200)
            .filter_map(|r| r.header("ce-id").map(str::to_owned))
            .collect();
        ids
    };
    wait_until("every reply delivered", Duration::from_secs(30), || {
        answered(&b).len() == EVENTS
    })
    .await;
    let expected: std::collections::BTreeSet<String> =
        (0..EVENTS).map(|n| format!("re-k-{n}")).collect();
    assert_eq!(answered(&b), expected);
    assert!(before >= 3, "the kill came after replies were stored");
    assert!(
        stored_before.len() < EVENTS,
        "the kill came after every reply was stored ({})",
        stored_before.len()
    );
    eprintln!(
        "replies stored before SIGKILL: {} of {EVENTS}; requests to b after restart: {}",
        stored_before.len(),
        b.count() - before
    );
}
