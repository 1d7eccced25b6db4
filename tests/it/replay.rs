//! Retention and replay by time range: a sink that answered 200 and lost what it was sent
//! gets exactly the events of a time range again, and no others; progress reaches done;
//! retained events expire, survive `kill -9` on the embedded spool, and a replay with
//! retention off says why; `switchyard replay` drives it from the command line.

use std::time::{Duration, SystemTime};

use chrono::{DateTime, SecondsFormat, Utc};
use hyper::{Method, StatusCode};
use serde_json::{json, Value};

use crate::support::cli::run;
use crate::support::daemon::event;
use crate::support::process::{free_port, Daemon};
use crate::support::{request, wait_until, TestApp, TestSink};

const WAIT: Duration = Duration::from_secs(10);

fn rfc3339(at: SystemTime) -> String {
    DateTime::<Utc>::from(at).to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Now, a few milliseconds clear of the events accepted just before and after.
async fn mark() -> SystemTime {
    tokio::time::sleep(Duration::from_millis(5)).await;
    let now = SystemTime::now();
    tokio::time::sleep(Duration::from_millis(5)).await;
    now
}

async fn admin(admin: &str, method: Method, path: &str, body: &Value) -> (StatusCode, Value) {
    let headers = [("content-type", "application/json")];
    let text = if body.is_null() {
        String::new()
    } else {
        body.to_string()
    };
    let reply = request(method, &format!("{admin}{path}"), &headers, text).await;
    let body = serde_json::from_slice(&reply.body).unwrap_or(Value::Null);
    (reply.status, body)
}

async fn replay(app: &str, body: Value) -> (StatusCode, Value) {
    admin(app, Method::POST, "/api/v1/replay", &body).await
}

/// Polls the replay's progress until it is done; the last answer.
async fn done(admin_url: &str, id: u64) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (status, body) = admin(
            admin_url,
            Method::GET,
            &format!("/api/v1/replays/{id}"),
            &Value::Null,
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        if body["state"] == "done" {
            return body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "replay never done: {body}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The `ce-id` of each request `sink` received, in order.
fn ids(sink: &TestSink) -> Vec<String> {
    sink.received()
        .iter()
        .filter_map(|r| r.header("ce-id").map(str::to_owned))
        .collect()
}

async fn send_all(app: &TestApp, ids: &[&str]) {
    for id in ids {
        let reply = app.send(event(id, "Orders.Created")).await;
        assert!(reply.status.is_success(), "{}", reply.text());
    }
}

/// Waits until every delivery left the spool (delivered, so retained).
async fn drained(app: &TestApp, sinks: &[&str]) {
    wait_until("deliveries acked", WAIT, || {
        sinks.iter().all(|s| app.running.spool_depth(s) == 0)
    })
    .await;
}

fn config(lossy: &TestSink, other: &TestSink, retain: &str) -> String {
    format!(
        r#"
spool: {{ {retain} }}
sinks:
  lossy: {{ http: {{ url: "{}" }} }}
  other: {{ http: {{ url: "{}" }} }}
routes:
  - {{ name: orders, match: {{ types: [Orders.*] }}, to: [lossy, other] }}
  - {{ name: audit, match: {{ types: [Audit.*] }}, to: [lossy] }}
"#,
        lossy.url(),
        other.url()
    )
}

#[tokio::test]
async fn a_replay_sends_exactly_the_range_to_that_sink_again_and_reports_progress() {
    let (lossy, other) = (TestSink::start().await, TestSink::start().await);
    let app = TestApp::start(&config(&lossy, &other, "retain_delivered: 1h")).await;
    send_all(&app, &["before"]).await;
    drained(&app, &["lossy", "other"]).await;
    let since = mark().await;
    send_all(&app, &["in-1", "in-2"]).await;
    let audit = app
        .send(
            json!({"specversion": "1.0", "id": "in-audit", "source": "/a", "type": "Audit.Logged"}),
        )
        .await;
    assert!(audit.status.is_success());
    drained(&app, &["lossy", "other"]).await;
    let until = mark().await;
    send_all(&app, &["after"]).await;
    drained(&app, &["lossy", "other"]).await;
    assert_eq!(lossy.count(), 5);
    assert_eq!(other.count(), 4);

    // Only the route `orders`: the audit event in range stays out.
    let range = json!({"sink": "lossy", "route": "orders", "since": rfc3339(since), "until": rfc3339(until)});
    let (status, body) = replay(&app.admin, range).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["matched"], 2, "{body}");
    let id = body["id"].as_u64().expect("an id");
    let progress = done(&app.admin, id).await;
    assert_eq!(
        (
            &progress["matched"],
            &progress["enqueued"],
            &progress["delivered"],
            &progress["failed"]
        ),
        (&json!(2), &json!(2), &json!(2), &json!(0)),
        "{progress}"
    );
    let mut again = ids(&lossy)[5..].to_vec();
    again.sort();
    assert_eq!(again, ["in-1", "in-2"]);
    let tag = id.to_string();
    assert!(lossy.received()[5..]
        .iter()
        .all(|r| r.header("ce-switchyardreplay") == Some(tag.as_str())));
    assert_eq!(other.count(), 4, "another sink gets nothing");

    // Without a route, with a filter on the type: the audit event alone.
    let audit_only = json!({"sink": "lossy", "since": rfc3339(since), "until": rfc3339(until),
                            "filter": {"type": "Audit.Logged"}});
    let (status, body) = replay(&app.admin, audit_only).await;
    assert_eq!(
        (status, &body["matched"]),
        (StatusCode::ACCEPTED, &json!(1)),
        "{body}"
    );
    done(&app.admin, body["id"].as_u64().expect("id")).await;
    assert_eq!(ids(&lossy).last().map(String::as_str), Some("in-audit"));
    // A replayed delivery is retained too: the same range now holds it twice.
    drained(&app, &["lossy"]).await;
    let sql = json!({"sink": "lossy", "since": rfc3339(since), "until": rfc3339(SystemTime::now() + Duration::from_secs(1)),
                     "filter": {"sql": "id = 'in-1'"}});
    let (_, body) = replay(&app.admin, sql).await;
    assert_eq!(body["matched"], 2, "{body}");
}

#[tokio::test]
async fn bad_requests_say_what_is_wrong_and_retention_off_names_the_setting() {
    let (lossy, other) = (TestSink::start().await, TestSink::start().await);
    let app = TestApp::start(&config(&lossy, &other, "retain_delivered: 1h")).await;
    let now = SystemTime::now();
    let (later, earlier) = (rfc3339(now + Duration::from_secs(1)), rfc3339(now));
    let cases = [
        (
            json!({"sink": "nope", "since": earlier, "until": later}),
            StatusCode::NOT_FOUND,
            "nope",
        ),
        (
            json!({"sink": "lossy", "since": later, "until": earlier}),
            StatusCode::BAD_REQUEST,
            "since must be before until",
        ),
        (
            json!({"sink": "lossy", "since": "yesterday", "until": later}),
            StatusCode::BAD_REQUEST,
            "since",
        ),
        (
            json!({"sink": "lossy", "since": earlier, "until": later, "filter": {"kind": 1}}),
            StatusCode::BAD_REQUEST,
            "kind",
        ),
        (
            json!({"sink": "lossy", "since": earlier, "until": later, "filter": {"sql": "id ="}}),
            StatusCode::BAD_REQUEST,
            "filter.sql",
        ),
    ];
    for (body, want, says) in cases {
        let (status, answer) = replay(&app.admin, body.clone()).await;
        assert_eq!(status, want, "{body} → {answer}");
        assert!(
            answer["error"].as_str().is_some_and(|e| e.contains(says)),
            "{answer}"
        );
    }
    let (status, _) = admin(&app.admin, Method::GET, "/api/v1/replays/12", &Value::Null).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let off = TestApp::start(&config(&lossy, &other, "")).await;
    let (status, answer) = replay(
        &off.admin,
        json!({"sink": "lossy", "since": earlier, "until": later}),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .is_some_and(|e| e.contains("spool.retain_delivered is off")),
        "{answer}"
    );
    assert!(!off.dir.path().join("spool/retained").exists());
}

/// Bytes of the files under `dir`.
fn bytes_in(dir: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum()
}

#[tokio::test]
async fn retained_events_are_purged_once_their_time_is_up() {
    let (lossy, other) = (TestSink::start().await, TestSink::start().await);
    let app = TestApp::start(&config(&lossy, &other, "retain_delivered: 300ms")).await;
    let since = mark().await;
    send_all(&app, &["e-1", "e-2"]).await;
    drained(&app, &["lossy", "other"]).await;
    let store = app.dir.path().join("spool/retained");
    assert!(bytes_in(&store) > 0, "kept at first");
    let until = rfc3339(SystemTime::now() + Duration::from_secs(1));
    let range = json!({"sink": "lossy", "since": rfc3339(since), "until": until});

    wait_until("retained events purged", WAIT, || bytes_in(&store) == 0).await;
    let (status, body) = replay(&app.admin, range).await;
    assert_eq!(
        (status, &body["matched"]),
        (StatusCode::ACCEPTED, &json!(0)),
        "{body}"
    );
    let progress = done(&app.admin, body["id"].as_u64().expect("id")).await;
    assert_eq!(progress["delivered"], 0);
}

#[tokio::test]
async fn retained_events_survive_kill_9_on_the_embedded_spool() {
    let _heavy = crate::support::HEAVY.lock().await;
    let lossy = TestSink::start().await;
    let dir = tempfile::tempdir().expect("dir");
    let (port, admin_port) = (free_port(), free_port());
    let yaml = format!(
        "listen: 127.0.0.1:{port}\nadmin_listen: 127.0.0.1:{admin_port}\n\
         spool: {{ path: {}, retain_delivered: 1h }}\n\
         sinks: {{ lossy: {{ http: {{ url: \"{}\" }} }} }}\n\
         routes: [{{ name: all, to: [lossy] }}]\n",
        dir.path().join("spool").display(),
        lossy.url()
    );
    let config = dir.path().join("routes.yaml");
    std::fs::write(&config, yaml).expect("write config");
    let admin_url = format!("http://127.0.0.1:{admin_port}");
    let url = format!("http://127.0.0.1:{port}/events");
    let ct = [("content-type", "application/cloudevents+json")];

    let mut daemon = Daemon::start(&config, port).await;
    let since = SystemTime::now();
    for id in ["k-1", "k-2", "k-3"] {
        let reply = crate::support::post(&url, &ct, event(id, "T").to_string()).await;
        assert!(reply.status.is_success());
    }
    wait_until("delivered", WAIT, || lossy.count() == 3).await;
    // Acked (the backlog is empty) means retained: the copy is written before the ack.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (_, sinks) = admin(&admin_url, Method::GET, "/api/v1/sinks", &Value::Null).await;
        if sinks.to_string().contains("\"backlog\":0") {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{sinks}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    daemon.kill9();

    let mut daemon = Daemon::start(&config, port).await;
    let until = rfc3339(SystemTime::now());
    let range = json!({"sink": "lossy", "since": rfc3339(since), "until": until});
    let (status, body) = replay(&admin_url, range).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    // At least once: a delivery acked just before the kill may be delivered and kept twice.
    let matched = body["matched"].as_u64().expect("matched");
    assert!(matched >= 3, "{body}");
    done(&admin_url, body["id"].as_u64().expect("id")).await;
    let mut again = ids(&lossy)[3..].to_vec();
    again.sort();
    again.dedup();
    assert_eq!(again, ["k-1", "k-2", "k-3"]);
    daemon.terminate();
}

#[tokio::test]
async fn the_replay_command_starts_and_follows_a_replay() {
    let (lossy, other) = (TestSink::start().await, TestSink::start().await);
    let retain = "backend: memory, retain_delivered: 1h";
    let yaml = format!(
        "admin: {{ token: rp-token }}\n{}",
        config(&lossy, &other, retain)
    );
    let app = TestApp::start(&yaml).await;
    let since = rfc3339(mark().await);
    send_all(&app, &["c-1", "c-2"]).await;
    drained(&app, &["lossy", "other"]).await;
    let until = rfc3339(mark().await);
    let admin = ["--admin", &app.admin, "--token", "rp-token"];

    // The admin API's guards hold: a token, and no cross-site browser request.
    let body = json!({"sink": "lossy", "since": since, "until": until}).to_string();
    let url = format!("{}/api/v1/replay", app.admin);
    let bare = request(Method::POST, &url, &[], body.clone()).await;
    assert_eq!(bare.status, StatusCode::UNAUTHORIZED);
    let browser = [
        ("authorization", "Bearer rp-token"),
        ("origin", "http://evil.example"),
    ];
    let cross_site = request(Method::POST, &url, &browser, body).await;
    assert_eq!(cross_site.status, StatusCode::FORBIDDEN);
    assert_eq!(lossy.count(), 2, "nothing replayed");

    let mut args = vec![
        "replay", "--sink", "lossy", "--since", &since, "--until", &until, "-o", "json",
    ];
    args.extend(admin);
    let (code, out, err) = run(&args).await;
    assert_eq!(code, Some(0), "{err}");
    let started: Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(started["matched"], 2, "{out}");
    let id = started["id"].as_u64().expect("id").to_string();

    let mut args = vec!["replay", "status", &id, "--wait"];
    args.extend(admin);
    let (code, out, err) = run(&args).await;
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("done") && out.contains("delivered 2"), "{out}");
    assert_eq!(lossy.count(), 4);

    let mut args = vec![
        "replay", "--sink", "nope", "--since", &since, "--until", &until,
    ];
    args.extend(admin);
    let (code, _, err) = run(&args).await;
    assert_eq!(code, Some(1));
    assert!(err.contains("404") && err.contains("nope"), "{err}");
}
