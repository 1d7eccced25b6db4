//! The dead-letter store through the admin API and the `dead-letter` command: list with
//! filters and pages, show, replay, purge, the token, and records that outlive a restart.

use std::time::Duration;

use hyper::{Method, StatusCode};
use serde_json::Value;

use crate::support::cli::run;
use crate::support::daemon::event;
use crate::support::process::{free_port, restart_config, Daemon};
use crate::support::{request, wait_until, Respond, TestApp, TestSink};

const WAIT: Duration = Duration::from_secs(10);
const TOKEN: &str = "dl-token";

/// Two routes to two sinks that answer 400, so every delivery is dead-lettered at once.
async fn start(prefix: &str, orders: &TestSink, audit: &TestSink) -> TestApp {
    orders.set_default(Respond::status(400));
    audit.set_default(Respond::status(400));
    TestApp::start(&format!(
        r#"
admin: {{ token: {TOKEN} }}
sinks:
  {prefix}-orders: {{ http: {{ url: "{}" }} }}
  {prefix}-audit: {{ http: {{ url: "{}" }} }}
routes:
  - {{ name: {prefix}-o, match: {{ types: ["Orders.*"] }}, to: [{prefix}-orders] }}
  - {{ name: {prefix}-a, match: {{ types: ["Audit.*"] }}, to: [{prefix}-audit] }}
"#,
        orders.url(),
        audit.url()
    ))
    .await
}

async fn call(app: &TestApp, method: Method, path: &str) -> (StatusCode, Value) {
    let bearer = format!("Bearer {TOKEN}");
    let url = format!("{}{path}", app.admin);
    let reply = request(method, &url, &[("authorization", bearer.as_str())], "").await;
    let body = serde_json::from_slice(&reply.body).unwrap_or(Value::Null);
    (reply.status, body)
}

async fn records(app: &TestApp, query: &str) -> Vec<Value> {
    let (status, body) = call(app, Method::GET, &format!("/api/v1/dead-letters{query}")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["dead_letters"].as_array().expect("a list").clone()
}

/// Sends the events (id, type) and waits until all are dead-lettered.
async fn dead_letter(app: &TestApp, events: &[(&str, &str)]) {
    let before = records(app, "?limit=1000").await.len();
    for (id, ty) in events {
        let reply = app.send(event(id, ty)).await;
        assert!(reply.status.is_success(), "{}", reply.text());
    }
    let want = before + events.len();
    let deadline = tokio::time::Instant::now() + WAIT;
    while records(app, "?limit=1000").await.len() < want {
        assert!(tokio::time::Instant::now() < deadline, "not dead-lettered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn ids(records: &[Value]) -> Vec<String> {
    records
        .iter()
        .map(|r| r["event"]["id"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test]
async fn list_filters_pages_and_shows_dead_letters() {
    let (orders, audit) = (TestSink::start().await, TestSink::start().await);
    let app = start("dl-l", &orders, &audit).await;
    dead_letter(&app, &[("o1", "Orders.Created"), ("a1", "Audit.Logged")]).await;
    dead_letter(&app, &[("o2", "Orders.Created")]).await;

    let all = records(&app, "").await;
    assert_eq!(ids(&all), ["o1", "a1", "o2"]);
    let first = &all[0];
    assert_eq!(
        (first["route"].as_str(), first["sink"].as_str()),
        (Some("dl-l-o"), Some("dl-l-orders"))
    );
    assert!(
        first["reason"].as_str().is_some_and(|r| !r.is_empty()),
        "{first}"
    );
    assert_eq!(
        (first["attempts"].as_u64(), first["last_status"].as_u64()),
        (Some(1), Some(400))
    );
    for key in [
        "publish_time",
        "last_attempt_time",
        "dead_lettered_time",
        "last_outcome",
    ] {
        assert!(first[key].is_string(), "{key}: {first}");
    }
    assert_eq!(first["event"]["specversion"], "1.0");
    assert_eq!(first["event"]["data"], serde_json::json!({"n": 1}));

    assert_eq!(ids(&records(&app, "?sink=dl-l-audit").await), ["a1"]);
    assert_eq!(ids(&records(&app, "?route=dl-l-o").await), ["o1", "o2"]);
    let reason = first["reason"].as_str().expect("a reason");
    assert_eq!(records(&app, &format!("?reason={reason}")).await.len(), 3);
    assert!(records(&app, "?reason=Nope").await.is_empty());
    assert!(records(&app, "?since=2999-01-01T00:00:00Z")
        .await
        .is_empty());
    assert_eq!(records(&app, "?since=2000-01-01T00:00:00Z").await.len(), 3);

    let (_, page) = call(&app, Method::GET, "/api/v1/dead-letters?limit=2").await;
    let page_ids = ids(page["dead_letters"].as_array().expect("a list"));
    assert_eq!(page_ids, ["o1", "a1"]);
    let next = page["next"].as_u64().expect("a cursor");
    let rest = records(&app, &format!("?limit=2&after={next}")).await;
    assert_eq!(ids(&rest), ["o2"]);

    let id = first["id"].as_u64().expect("an id");
    let (status, shown) = call(&app, Method::GET, &format!("/api/v1/dead-letters/{id}")).await;
    assert_eq!((status, &shown), (StatusCode::OK, first));
    let (status, _) = call(&app, Method::GET, "/api/v1/dead-letters/999999").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = call(&app, Method::GET, "/api/v1/dead-letters?limit=0").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = call(&app, Method::GET, "/api/v1/dead-letters?since=yesterday").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn replay_one_by_filter_and_purge() {
    let (orders, audit) = (TestSink::start().await, TestSink::start().await);
    let app = start("dl-r", &orders, &audit).await;
    dead_letter(&app, &[("o1", "Orders.Created"), ("o2", "Orders.Created")]).await;
    dead_letter(&app, &[("a1", "Audit.Logged")]).await;
    let all = records(&app, "").await;
    let id = |n: usize| all[n]["id"].as_u64().expect("an id");

    orders.set_default(Respond::status(200));
    let path = format!("/api/v1/dead-letters/{}/replay", id(0));
    let (status, body) = call(&app, Method::POST, &path).await;
    assert_eq!(
        (status, body["replayed"].as_u64()),
        (StatusCode::OK, Some(1))
    );
    wait_until("o1 redelivered", WAIT, || {
        orders.received().iter().any(|r| r.status == 200)
    })
    .await;
    let redelivered = orders.received().into_iter().find(|r| r.status == 200);
    let redelivered = redelivered.expect("a 200 answer");
    assert_eq!(redelivered.header("ce-id"), Some("o1"));
    assert_eq!(redelivered.header("aeg-delivery-count"), Some("0"));
    assert_eq!(ids(&records(&app, "").await), ["o2", "a1"]);
    let (status, _) = call(&app, Method::POST, &path).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "already replayed");

    let (status, body) = call(
        &app,
        Method::POST,
        "/api/v1/dead-letters/replay?sink=dl-r-orders",
    )
    .await;
    assert_eq!(
        (status, body["replayed"].as_u64()),
        (StatusCode::OK, Some(1))
    );
    wait_until("o2 redelivered", WAIT, || {
        orders.received().iter().filter(|r| r.status == 200).count() == 2
    })
    .await;

    let purge = format!("/api/v1/dead-letters/{}", id(2));
    let (status, _) = call(&app, Method::DELETE, &purge).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = call(&app, Method::DELETE, &purge).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(records(&app, "").await.is_empty());
}

#[tokio::test]
async fn the_token_guards_the_dead_letter_api() {
    let (orders, audit) = (TestSink::start().await, TestSink::start().await);
    let app = start("dl-t", &orders, &audit).await;
    let url = format!("{}/api/v1/dead-letters", app.admin);
    for (method, path) in [
        (Method::GET, ""),
        (Method::GET, "/1"),
        (Method::POST, "/1/replay"),
        (Method::POST, "/replay"),
        (Method::DELETE, "/1"),
    ] {
        let reply = request(method.clone(), &format!("{url}{path}"), &[], "").await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{method} {path}");
        let wrong = [("authorization", "Bearer nope")];
        let reply = request(method.clone(), &format!("{url}{path}"), &wrong, "").await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{method} {path}");
    }
}

#[tokio::test]
async fn the_dead_letter_command_lists_replays_and_purges() {
    let (orders, audit) = (TestSink::start().await, TestSink::start().await);
    let app = start("dl-c", &orders, &audit).await;
    dead_letter(&app, &[("c1", "Orders.Created"), ("c2", "Audit.Logged")]).await;
    let admin = ["--admin", app.admin.as_str(), "--token", TOKEN];
    let cli = |args: &[&str]| -> Vec<String> {
        let all = [&["dead-letter"], args, &admin[..]].concat();
        all.into_iter().map(str::to_owned).collect()
    };

    let (code, stdout, stderr) = run(&cli(&["list"])).await;
    assert_eq!(code, Some(0), "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(
        lines[0].starts_with("ID") && lines[0].contains("REASON"),
        "{stdout}"
    );
    assert_eq!(lines.len(), 3, "{stdout}");
    assert!(
        lines[1].contains("dl-c-orders") && lines[1].contains("c1"),
        "{stdout}"
    );
    let id = lines[1]
        .split_whitespace()
        .next()
        .expect("an id")
        .to_owned();

    let (code, stdout, _) = run(&cli(&["list", "--sink", "dl-c-audit"])).await;
    assert_eq!((code, stdout.lines().count()), (Some(0), 2), "{stdout}");
    let (code, stdout, _) = run(&cli(&["show", &id])).await;
    assert_eq!(code, Some(0));
    assert!(stdout.contains("\"c1\""), "{stdout}");

    orders.set_default(Respond::status(200));
    let (code, stdout, stderr) = run(&cli(&["replay", &id])).await;
    assert_eq!((code, stdout.trim()), (Some(0), "replayed 1"), "{stderr}");
    wait_until("c1 redelivered", WAIT, || {
        orders.received().iter().any(|r| r.status == 200)
    })
    .await;
    let (_, stdout, _) = run(&cli(&["list"])).await;
    assert!(
        !stdout.contains("c1"),
        "replayed records leave the list: {stdout}"
    );

    let (code, _, stderr) = run(&cli(&["purge", &id])).await;
    assert_eq!(code, Some(1));
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("404"), "{stderr}");
    let (code, stdout, _) = run(&cli(&["replay", "--sink", "dl-c-audit"])).await;
    assert_eq!((code, stdout.trim()), (Some(0), "replayed 1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_survive_a_restart_of_the_binary() {
    let dir = tempfile::tempdir().expect("temp dir");
    let sink = TestSink::start().await;
    sink.set_default(Respond::status(400));
    let (port, admin_port) = (free_port(), free_port());
    let config = restart_config(dir.path(), port, admin_port, &sink);
    let list = format!("http://127.0.0.1:{admin_port}/api/v1/dead-letters");
    let count = |body: &Value| body["dead_letters"].as_array().map_or(0, Vec::len);

    let mut daemon = Daemon::start(&config, port).await;
    let url = format!("http://127.0.0.1:{port}/events");
    let body = event("r1", "T").to_string();
    let ct = [("content-type", "application/cloudevents+json")];
    assert!(crate::support::post(&url, &ct, body)
        .await
        .status
        .is_success());
    let deadline = tokio::time::Instant::now() + WAIT;
    while count(&request(Method::GET, &list, &[], "").await.json()) == 0 {
        assert!(tokio::time::Instant::now() < deadline, "not dead-lettered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    daemon.kill9();

    let _daemon = Daemon::start(&config, port).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    let body = loop {
        if let Some(body) = try_get(&list).await {
            break body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "admin never answered"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(count(&body), 1, "{body}");
    assert_eq!(body["dead_letters"][0]["event"]["id"], "r1");
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
