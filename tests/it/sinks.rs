//! Built-in sinks and registered handlers, configured from YAML.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::StatusCode;

use crate::support::daemon::event;
use crate::support::{wait_until, TestApp};

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn file_exec_and_log_sinks_receive_the_event() {
    let app = TestApp::start(
        r#"
sinks:
  archive: { file: { path: "{dir}/out/events.jsonl" } }
  script: { exec: { command: ["sh", "-c", "cat > {dir}/exec-$SWITCHYARD_EVENT_ID.json"], timeout: 5s } }
  console: { log: { level: info } }
routes: [{ name: all, to: [archive, script, console] }]
"#,
    )
    .await;
    assert_eq!(
        app.send(event("s-1", "T")).await.status,
        StatusCode::ACCEPTED
    );

    let file = app.path("out/events.jsonl");
    let exec_out = app.path("exec-s-1.json");
    let counters = app.running.counters();
    wait_until("three deliveries", WAIT, || {
        switchyard::telemetry::Counters::get(&counters.deliveries_succeeded) == 3
    })
    .await;
    let line: serde_json::Value =
        serde_json::from_str(std::fs::read_to_string(&file).unwrap().trim()).unwrap();
    assert_eq!(line["id"], "s-1");
    assert_eq!(line["data"], serde_json::json!({"n": 1}));
    let piped: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&exec_out).unwrap()).unwrap();
    assert_eq!(piped["id"], "s-1");
}

#[tokio::test]
async fn a_failing_command_is_retried() {
    let app = TestApp::start(
        r#"
sinks:
  flaky:
    exec: { command: ["sh", "-c", "test -e {dir}/ok || { touch {dir}/ok; exit 3; }"] }
    retry: { schedule: [10ms] }
routes: [{ name: all, to: [flaky] }]
"#,
    )
    .await;
    app.send(event("x-1", "T")).await;
    let counters = app.running.counters();
    wait_until("success after one retry", WAIT, || {
        switchyard::telemetry::Counters::get(&counters.deliveries_succeeded) == 1
    })
    .await;
    assert_eq!(
        switchyard::telemetry::Counters::get(&counters.deliveries_retried),
        1
    );
}

#[tokio::test]
async fn a_registered_rust_handler_receives_routed_events() {
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let sink = seen.clone();
    let app = TestApp::start_with(
        r#"
sinks:
  audit: { handler: { name: audit } }
routes: [{ name: all, match: { types: ["Contoso.*"] }, to: [audit] }]
"#,
        move |s| {
            s.handler("audit", move |event: cloudevents::Event| {
                let sink = sink.clone();
                async move {
                    use cloudevents::AttributesReader;
                    sink.lock().unwrap().push(event.id().to_owned());
                    Ok(())
                }
            })
        },
    )
    .await;
    app.send(event("h-1", "Contoso.Orders.Created")).await;
    app.send(event("h-2", "Other.Type")).await;
    wait_until("handler called", WAIT, || seen.lock().unwrap().len() == 1).await;
    assert_eq!(*seen.lock().unwrap(), ["h-1"]);
}
