//! Cron schedules: ticks become events that are routed and delivered like any other, and a
//! restart catches up the last missed tick only when asked to.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Datelike, TimeZone, Timelike, Utc};
use serde_json::{json, Value};
use switchyard::{Running, Switchyard};

use crate::support::{wait_until, TestApp, TestSink};

const WAIT: Duration = Duration::from_secs(5);

/// The structured CloudEvents the sink received, in arrival order.
fn received(sink: &TestSink) -> Vec<Value> {
    sink.received().iter().map(|r| r.json()).collect()
}

fn of_type(events: &[Value], ty: &str) -> Vec<Value> {
    events.iter().filter(|e| e["type"] == ty).cloned().collect()
}

fn tick_time(event: &Value) -> DateTime<Utc> {
    let time = event["time"].as_str().expect("time is a string");
    DateTime::parse_from_rfc3339(time)
        .expect("time is RFC 3339")
        .with_timezone(&Utc)
}

/// Starts a daemon whose spool (and so schedule state) lives in `spool`, which the test may
/// have prepared beforehand.
async fn start_on_spool(spool: &Path, yaml: &str) -> Running {
    let vars = BTreeMap::from([(
        "SWITCHYARD_SPOOL__PATH".to_owned(),
        spool.display().to_string(),
    )]);
    let config = switchyard::config::load_str(yaml, Path::new("test.yaml"), &vars)
        .unwrap_or_else(|e| panic!("test config is invalid: {e}\n{yaml}"));
    let ingress = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let admin = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind admin");
    Switchyard::new(config)
        .admin_listener(admin)
        .start_on(ingress)
        .expect("daemon starts")
}

#[tokio::test]
async fn an_every_second_schedule_delivers_its_event_on_each_tick() {
    let sink = TestSink::start().await;
    let app = TestApp::start(&format!(
        r#"
spool: {{ path: "{{dir}}/spool" }}
sinks:
  hook: {{ http: {{ url: "{}", format: cloudevents-structured }} }}
routes: [{{ name: all, to: [hook] }}]
schedules:
  - name: heartbeat
    cron: "* * * * * *"
    event:
      type: Contoso.Heartbeat
      source: /switchyard/schedules
      subject: pulse
      data: {{ region: eu, n: 1 }}
"#,
        sink.url()
    ))
    .await;

    wait_until("two ticks delivered", WAIT, || sink.count() >= 2).await;

    let events = received(&sink);
    for event in &events {
        assert_eq!(event["specversion"], "1.0");
        assert_eq!(event["type"], "Contoso.Heartbeat");
        assert_eq!(event["source"], "/switchyard/schedules");
        assert_eq!(event["subject"], "pulse");
        assert_eq!(event["datacontenttype"], "application/json");
        assert_eq!(event["data"], json!({"region": "eu", "n": 1}));
        let time = tick_time(event);
        assert_eq!(time.nanosecond(), 0, "ticks fall on whole seconds: {event}");
        assert!(event["time"].as_str().is_some_and(|t| t.ends_with('Z')));
        let id = format!("heartbeat-{}", event["time"].as_str().unwrap_or_default());
        assert_eq!(event["id"], id.as_str());
    }
    let ids: BTreeSet<&str> = events.iter().filter_map(|e| e["id"].as_str()).collect();
    assert_eq!(ids.len(), events.len(), "distinct ids: {events:#?}");

    let state = std::fs::read_to_string(app.path("spool/schedules.json")).expect("state file");
    let state: Value = serde_json::from_str(&state).expect("state is JSON");
    assert!(state["last_ticks"]["heartbeat"].is_string(), "{state}");
}

#[tokio::test]
async fn a_restart_catches_up_the_last_missed_tick_only_where_asked() {
    // A yearly tick (Jan 1, 00:00:00 UTC) last emitted a year before this year's: this year's
    // was missed. No regular tick of it can fall inside the test.
    let now = Utc::now();
    let year_start = |year| Utc.with_ymd_and_hms(year, 1, 1, 0, 0, 0).single();
    let missed = year_start(now.year()).expect("valid date");
    let last = year_start(now.year() - 1).expect("valid date");
    let spool = tempfile::tempdir().expect("temp dir");
    let last_ticks = json!({ "caught": last.to_rfc3339(), "skipped": last.to_rfc3339() });
    let state = json!({ "version": 1, "last_ticks": last_ticks });
    std::fs::write(spool.path().join("schedules.json"), state.to_string()).expect("state");

    let sink = TestSink::start().await;
    let event = |ty: &str| format!("{{ type: {ty}, source: /s }}");
    let running = start_on_spool(
        spool.path(),
        &format!(
            r#"
sinks:
  hook: {{ http: {{ url: "{}", format: cloudevents-structured }} }}
routes: [{{ name: all, to: [hook] }}]
schedules:
  - {{ name: caught, cron: "0 0 0 1 1 *", catch_up: true, event: {} }}
  - {{ name: skipped, cron: "0 0 0 1 1 *", event: {} }}
  - {{ name: heartbeat, cron: "* * * * * *", event: {} }}
"#,
            sink.url(),
            event("Caught"),
            event("Skipped"),
            event("Heartbeat"),
        ),
    )
    .await;

    // Two heartbeats prove the schedules have been running for over a second, well past the
    // moment a catch-up is emitted.
    wait_until("the catch-up and two heartbeats", WAIT, || {
        let events = received(&sink);
        !of_type(&events, "Caught").is_empty() && of_type(&events, "Heartbeat").len() >= 2
    })
    .await;

    let events = received(&sink);
    let caught = of_type(&events, "Caught");
    assert_eq!(caught.len(), 1, "one catch-up: {caught:#?}");
    assert_eq!(tick_time(&caught[0]), missed);
    let id = format!("caught-{}", missed.format("%Y-%m-%dT%H:%M:%SZ"));
    assert_eq!(caught[0]["id"], id.as_str());
    assert_eq!(of_type(&events, "Skipped"), Vec::<Value>::new());
    running.stop().await.expect("clean shutdown");
    let state = std::fs::read_to_string(spool.path().join("schedules.json")).expect("state");
    let state: Value = serde_json::from_str(&state).expect("state is JSON");
    let recorded = DateTime::parse_from_rfc3339(state["last_ticks"]["caught"].as_str().unwrap());
    assert_eq!(recorded.map(|t| t.with_timezone(&Utc)), Ok(missed));
}
