//! Delivery history through the admin API and `switchyard events`: every attempt with its
//! status, filters, pages, the TTL and size bounds, switched off, and kept across a restart.

use std::time::Duration;

use hyper::{Method, StatusCode};
use serde_json::{json, Value};

use crate::support::cli::run;
use crate::support::daemon::event;
use crate::support::process::{free_port, restart_config, Daemon};
use crate::support::{request, wait_until, Respond, TestApp, TestSink};

const WAIT: Duration = Duration::from_secs(10);

/// GETs an admin path; the status and the JSON body.
async fn get(admin: &str, path: &str) -> (StatusCode, Value) {
    let reply = request(Method::GET, &format!("{admin}{path}"), &[], "").await;
    let body = serde_json::from_slice(&reply.body).unwrap_or(Value::Null);
    (reply.status, body)
}

/// The events a listing returns (asserting 200).
async fn events(app: &TestApp, query: &str) -> Vec<Value> {
    let (status, body) = get(&app.admin, &format!("/api/v1/events{query}")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["events"].as_array().expect("a list").clone()
}

/// Polls the listing until `done` holds for it.
async fn wait_for(app: &TestApp, query: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let listed = events(app, query).await;
        if done(&listed) {
            return listed;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "history never showed it: {listed:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn ids(events: &[Value]) -> Vec<&str> {
    events.iter().filter_map(|e| e["id"].as_str()).collect()
}

fn sent(app_event: Value, source: &str) -> Value {
    let mut event = app_event;
    event["source"] = json!(source);
    event
}

#[tokio::test]
async fn a_failing_then_succeeding_delivery_shows_every_attempt() {
    let sink = TestSink::start().await;
    let body = format!("database down {}", "x".repeat(400));
    sink.script([
        Respond::status(500).body(body.clone()),
        Respond::status(503),
    ]);
    let app = TestApp::start(&format!(
        r#"
sinks:
  hook: {{ http: {{ url: "{}" }}, retry: {{ schedule: [10ms] }} }}
routes:
  - {{ name: all, to: [hook] }}
"#,
        sink.url()
    ))
    .await;
    assert!(app
        .send(event("h-1", "Orders.Created"))
        .await
        .status
        .is_success());

    let listed = wait_for(&app, "", |e| {
        e.first()
            .is_some_and(|e| e["deliveries"][0]["outcome"] == "delivered")
    })
    .await;
    assert_eq!(sink.count(), 3);
    let summary = &listed[0];
    assert_eq!(summary["deliveries"][0]["attempts"], 3, "{summary}");
    assert_eq!(summary["deliveries"][0]["sink"], "hook");
    let key = summary["key"].as_u64().expect("a key");

    let (status, shown) = get(&app.admin, &format!("/api/v1/events/{key}")).await;
    assert_eq!(status, StatusCode::OK, "{shown}");
    assert_eq!(shown["event"]["id"], "h-1");
    assert_eq!(shown["event"]["type"], "Orders.Created");
    assert_eq!(shown["event"]["data"], json!({"n": 1}));
    let log = shown["deliveries"][0]["attempt_log"]
        .as_array()
        .expect("attempts");
    let seen: Vec<(u64, &str, Value)> = log
        .iter()
        .map(|a| {
            let n = a["attempt"].as_u64().unwrap_or(0);
            (n, a["outcome"].as_str().unwrap_or(""), a["status"].clone())
        })
        .collect();
    assert_eq!(
        seen,
        [
            (1, "retrying", json!(500)),
            (2, "retrying", json!(503)),
            (3, "delivered", Value::Null)
        ]
    );
    let first_error = log[0]["error"].as_str().unwrap_or_default();
    assert!(
        first_error.contains("500") && first_error.contains("database down"),
        "{shown}"
    );
    assert_eq!(first_error.len(), 256, "the first 256 bytes: {first_error}");
    assert!(log.iter().all(|a| a["duration_ms"].as_f64().is_some()));
    assert_eq!(log[2]["error"], Value::Null);

    let (status, _) = get(&app.admin, "/api/v1/events/999999").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn filters_select_by_sink_outcome_time_identity_and_type() {
    let (good, bad) = (TestSink::start().await, TestSink::start().await);
    bad.set_default(Respond::status(400));
    let app = TestApp::start(&format!(
        r#"
sinks:
  good: {{ http: {{ url: "{}" }} }}
  bad: {{ http: {{ url: "{}" }} }}
routes:
  - {{ name: a, match: {{ types: ["A.*"] }}, to: [good] }}
  - {{ name: b, match: {{ types: ["B.*"] }}, to: [bad] }}
"#,
        good.url(),
        bad.url()
    ))
    .await;
    app.send(event("f-a1", "A.Created")).await;
    app.send(event("f-b1", "B.Created")).await;
    wait_for(&app, "", |e| e.len() == 2).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let middle = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    tokio::time::sleep(Duration::from_millis(20)).await;
    app.send(sent(event("f-a2", "A.Created"), "/other")).await;
    wait_for(&app, "", |e| e.len() == 3).await;

    assert_eq!(ids(&events(&app, "?sink=good").await), ["f-a2", "f-a1"]);
    assert_eq!(ids(&events(&app, "?outcome=dead-lettered").await), ["f-b1"]);
    assert_eq!(
        ids(&events(&app, "?outcome=delivered&sink=bad").await),
        Vec::<&str>::new()
    );
    assert_eq!(ids(&events(&app, "?id=f-a1").await), ["f-a1"]);
    assert_eq!(ids(&events(&app, "?source=%2Fother").await), ["f-a2"]);
    assert_eq!(ids(&events(&app, "?type=B.Created").await), ["f-b1"]);
    let since = format!("?since={}", middle.replace('+', "%2B"));
    assert_eq!(ids(&events(&app, &since).await), ["f-a2"]);
    let until = format!("?until={}", middle.replace('+', "%2B"));
    assert_eq!(ids(&events(&app, &until).await), ["f-b1", "f-a1"]);

    let dead = &events(&app, "?id=f-b1").await[0]["deliveries"][0];
    assert_eq!(dead["status"], 400, "{dead}");
    for bad_query in [
        "?outcome=lost",
        "?since=yesterday",
        "?limit=0",
        "?colour=red",
    ] {
        let (status, body) = get(&app.admin, &format!("/api/v1/events{bad_query}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad_query}: {body}");
    }
}

#[tokio::test]
async fn pages_follow_the_cursor_newest_first() {
    let sink = TestSink::start().await;
    let app = TestApp::start(&format!(
        "sinks: {{ hook: {{ http: {{ url: \"{}\" }} }} }}\nroutes: [{{ name: all, to: [hook] }}]\n",
        sink.url()
    ))
    .await;
    for n in 1..=5 {
        // One at a time, so the history's order is the sending order.
        app.send(event(&format!("p-{n}"), "T")).await;
        wait_for(&app, "", |e| e.len() == n).await;
    }
    let mut seen = Vec::new();
    let mut cursor = String::new();
    let mut pages = 0;
    loop {
        let (status, body) = get(&app.admin, &format!("/api/v1/events?limit=2{cursor}")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        pages += 1;
        seen.extend(
            ids(body["events"].as_array().expect("list"))
                .into_iter()
                .map(str::to_owned),
        );
        match body["next"].as_u64() {
            Some(next) => cursor = format!("&cursor={next}"),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, ["p-5", "p-4", "p-3", "p-2", "p-1"]);
}

fn dir_bytes(path: &std::path::Path) -> u64 {
    std::fs::read_dir(path)
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

#[tokio::test]
async fn a_small_bound_keeps_the_newest_and_the_ttl_empties_the_history() {
    let sink = TestSink::start().await;
    let app = TestApp::start(&format!(
        "spool: {{ history_max_bytes: 16KiB }}\n\
         sinks: {{ hook: {{ http: {{ url: \"{}\" }} }} }}\nroutes: [{{ name: all, to: [hook] }}]\n",
        sink.url()
    ))
    .await;
    let mut big = event("x", "T");
    big["data"] = json!({ "padding": "p".repeat(600) });
    for n in 0..60 {
        let mut e = big.clone();
        e["id"] = json!(format!("b-{n}"));
        app.send(e).await;
    }
    wait_for(&app, "?id=b-59", |e| e.len() == 1).await;
    let kept = events(&app, "?limit=1000").await;
    assert!(kept.len() < 60, "{} kept", kept.len());
    assert!(ids(&kept).contains(&"b-59"));
    assert!(!ids(&kept).contains(&"b-0"));
    let on_disk = dir_bytes(&app.dir.path().join("spool/history"));
    assert!(on_disk <= 16 << 10, "{on_disk} bytes on disk");

    let app = TestApp::start(&format!(
        "spool: {{ history_ttl: 1s }}\n\
         sinks: {{ hook: {{ http: {{ url: \"{}\" }} }} }}\nroutes: [{{ name: all, to: [hook] }}]\n",
        sink.url()
    ))
    .await;
    app.send(event("t-1", "T")).await;
    wait_for(&app, "", |e| e.len() == 1).await;
    wait_for(&app, "", <[Value]>::is_empty).await;
    let history = app.dir.path().join("spool/history");
    wait_until("the expired file is removed", WAIT, || {
        dir_bytes(&history) == 0
    })
    .await;
}

#[tokio::test]
async fn history_off_records_nothing() {
    let sink = TestSink::start().await;
    let app = TestApp::start(&format!(
        "spool: {{ history_ttl: 0 }}\n\
         sinks: {{ hook: {{ http: {{ url: \"{}\" }} }} }}\nroutes: [{{ name: all, to: [hook] }}]\n",
        sink.url()
    ))
    .await;
    app.send(event("o-1", "T")).await;
    wait_until("delivered", WAIT, || sink.count() == 1).await;
    let (status, body) = get(&app.admin, "/api/v1/events").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert!(
        body["error"].as_str().is_some_and(|e| e.contains("off")),
        "{body}"
    );
    assert!(!app.dir.path().join("spool/history").exists());
}

#[tokio::test]
async fn the_events_command_lists_and_shows() {
    let sink = TestSink::start().await;
    sink.script([Respond::status(502)]);
    let app = TestApp::start(&format!(
        "admin: {{ token: ev-token }}\n\
         sinks: {{ hook: {{ http: {{ url: \"{}\" }}, retry: {{ schedule: [10ms] }} }} }}\n\
         routes: [{{ name: all, to: [hook] }}]\n",
        sink.url()
    ))
    .await;
    app.send(event("c-1", "Cli.Tested")).await;
    wait_until("delivered", WAIT, || sink.count() == 2).await;
    let admin = ["--admin", app.admin.as_str(), "--token", "ev-token"];
    let cli = |args: &[&'static str]| [&["events"], args, &admin[..]].concat();

    let deadline = tokio::time::Instant::now() + WAIT;
    let listed: Value = loop {
        let (code, stdout, stderr) = run(&cli(&["list", "-o", "json"])).await;
        assert_eq!(code, Some(0), "{stderr}");
        let listed: Value = serde_json::from_str(&stdout).expect("one JSON document");
        if listed["events"][0]["deliveries"][0]["outcome"] == "delivered" {
            break listed;
        }
        assert!(tokio::time::Instant::now() < deadline, "{listed}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let key = listed["events"][0]["key"]
        .as_u64()
        .expect("key")
        .to_string();

    let (code, stdout, stderr) =
        run(&[cli(&["show"]), vec![key.as_str(), "-o", "json"]].concat()).await;
    assert_eq!(code, Some(0), "{stderr}");
    let shown: Value = serde_json::from_str(&stdout).expect("one JSON document");
    assert_eq!(shown["event"]["id"], "c-1");
    assert_eq!(shown["deliveries"][0]["attempt_log"][0]["status"], 502);

    let (code, stdout, _) = run(&cli(&["list", "--outcome", "retrying"])).await;
    assert_eq!(code, Some(0));
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(
        lines[0].starts_with("KEY") && lines[0].contains("OUTCOME"),
        "{stdout}"
    );
    assert_eq!(lines.len(), 2, "{stdout}");
    assert!(
        lines[1].contains("c-1") && lines[1].contains("delivered"),
        "{stdout}"
    );
    let (code, stdout, _) = run(&[cli(&["show"]), vec![key.as_str()]].concat()).await;
    assert_eq!(code, Some(0));
    assert!(
        stdout.contains("retrying") && stdout.contains("502"),
        "{stdout}"
    );

    let (code, _, stderr) = run(&cli(&["show", "424242"])).await;
    assert_eq!(code, Some(1));
    assert!(stderr.contains("404"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_survives_a_restart_of_the_binary() {
    let dir = tempfile::tempdir().expect("temp dir");
    let sink = TestSink::start().await;
    let (port, admin_port) = (free_port(), free_port());
    let config = restart_config(dir.path(), port, admin_port, &sink);
    let list = format!("http://127.0.0.1:{admin_port}/api/v1/events");
    let url = format!("http://127.0.0.1:{port}/events");
    let ct = [("content-type", "application/cloudevents+json")];
    // The listed ids once `want` events are listed.
    let listed = |want: usize| {
        let list = list.clone();
        async move {
            let deadline = tokio::time::Instant::now() + WAIT;
            loop {
                let body = try_get(&list).await.unwrap_or(Value::Null);
                let events = body["events"].as_array().cloned().unwrap_or_default();
                if events.len() >= want {
                    return ids(&events)
                        .into_iter()
                        .map(str::to_owned)
                        .collect::<Vec<_>>();
                }
                assert!(tokio::time::Instant::now() < deadline, "{body}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };

    let mut daemon = Daemon::start(&config, port).await;
    for (n, id) in ["r-1", "r-2"].into_iter().enumerate() {
        let reply = crate::support::post(&url, &ct, event(id, "T").to_string()).await;
        assert!(reply.status.is_success());
        // One at a time, so the history's order is the sending order.
        listed(n + 1).await;
    }
    assert_eq!(listed(2).await, ["r-2", "r-1"]);
    daemon.kill9();

    let mut daemon = Daemon::start(&config, port).await;
    assert_eq!(listed(2).await, ["r-2", "r-1"]);
    // New attempts follow the kept ones.
    let reply = crate::support::post(&url, &ct, event("r-3", "T").to_string()).await;
    assert!(reply.status.is_success());
    assert_eq!(listed(3).await, ["r-3", "r-2", "r-1"]);
    daemon.terminate();
}

/// GETs JSON, or `None` while the server is not listening yet.
async fn try_get(url: &str) -> Option<Value> {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Full<bytes::Bytes>>();
    let uri: hyper::Uri = url.parse().ok()?;
    let response = client.get(uri).await.ok()?;
    let body = http_body_util::BodyExt::collect(response.into_body())
        .await
        .ok()?;
    serde_json::from_slice(&body.to_bytes()).ok()
}
