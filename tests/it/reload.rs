//! Hot reload: by the admin API, by a file change and by SIGHUP; an invalid file is kept
//! out; a reload under a steady stream of events loses and duplicates nothing.

use std::collections::HashMap;
use std::time::Duration;

use hyper::{Method, StatusCode};

use crate::support::daemon::event;
use crate::support::process::{free_port, BIN};
use crate::support::{request, wait_until, TestApp, TestSink};

const WAIT: Duration = Duration::from_secs(10);

fn routes_to(a: &TestSink, b: &TestSink, target: &str, concurrency: u32) -> String {
    format!(
        r#"
spool: {{ path: "{{dir}}/spool" }}
sinks:
  a: {{ http: {{ url: "{}" }}, concurrency: {concurrency} }}
  b: {{ http: {{ url: "{}" }}, concurrency: {concurrency} }}
routes: [{{ name: main, to: [{target}] }}]
"#,
        a.url(),
        b.url()
    )
}

async fn reload(app: &TestApp) -> crate::support::client::Reply {
    request(
        Method::POST,
        &format!("{}/api/v1/reload", app.admin),
        &[],
        "",
    )
    .await
}

#[tokio::test]
async fn the_admin_api_reloads_routes_and_keeps_an_invalid_file_out() {
    let (a, b) = (TestSink::start().await, TestSink::start().await);
    let app = TestApp::start_file(&routes_to(&a, &b, "a", 4), false).await;
    app.send(event("before", "T")).await;
    wait_until("a gets the first event", WAIT, || a.count() == 1).await;

    app.rewrite(&routes_to(&a, &b, "b", 4));
    let reply = reload(&app).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.json()["routes"], 1);
    app.send(event("after", "T")).await;
    wait_until("b gets the second event", WAIT, || b.count() == 1).await;

    app.rewrite("sinks: { a: { http: { url: 12 } } }\nroutes: [{ name: r, to: [nowhere] }]\n");
    let refused = reload(&app).await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY);
    let error = refused.json()["error"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        error.contains("sinks.a.http.url") && error.contains("routes[0].to[0]"),
        "{error}"
    );
    app.send(event("still-b", "T")).await;
    wait_until("b still routed", WAIT, || b.count() == 2).await;
    assert_eq!(a.count(), 1);

    let metrics = request(Method::GET, &format!("{}/metrics", app.admin), &[], "").await;
    assert!(metrics
        .text()
        .contains("switchyard_config_reloads_total{outcome=\"failure\"}"));
}

#[tokio::test]
async fn a_changed_file_is_picked_up_by_the_watcher() {
    let (a, b) = (TestSink::start().await, TestSink::start().await);
    let app = TestApp::start_file(&routes_to(&a, &b, "a", 4), true).await;
    app.rewrite(&routes_to(&a, &b, "b", 4));
    let routes_url = format!("{}/api/v1/routes", app.admin);
    let mut switched = false;
    for _ in 0..200 {
        let routes = request(Method::GET, &routes_url, &[], "").await.json();
        if routes["routes"][0]["to"][0] == "b" {
            switched = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(switched, "the watcher did not reload within 5 s");
    app.send(event("watched", "T")).await;
    wait_until("b gets the event", WAIT, || b.count() == 1).await;
    assert_eq!(a.count(), 0);
}

#[tokio::test]
async fn reloading_under_a_steady_stream_loses_and_duplicates_nothing() {
    let (a, b) = (TestSink::start().await, TestSink::start().await);
    let app = TestApp::start_file(&routes_to(&a, &b, "a", 2), false).await;
    let sending = async {
        for i in 0..300 {
            let reply = app.send(event(&format!("s-{i}"), "T")).await;
            assert_eq!(reply.status, StatusCode::ACCEPTED);
        }
    };
    let reloading = async {
        for round in 0..6u32 {
            tokio::time::sleep(Duration::from_millis(40)).await;
            app.rewrite(&routes_to(&a, &b, "a", 2 + round % 3));
            assert_eq!(reload(&app).await.status, StatusCode::OK);
        }
    };
    tokio::join!(sending, reloading);
    wait_until("all 300 delivered", WAIT, || a.count() >= 300).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut seen: HashMap<String, usize> = HashMap::new();
    for r in a.received() {
        *seen
            .entry(r.header("ce-id").unwrap_or_default().to_owned())
            .or_default() += 1;
    }
    assert_eq!(seen.len(), 300, "every event delivered");
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "delivered more than once: {twice:?}");
}

#[tokio::test]
async fn sighup_reloads_the_binary() {
    let (a, b) = (TestSink::start().await, TestSink::start().await);
    let dir = tempfile::tempdir().expect("temp dir");
    let (port, admin) = (free_port(), free_port());
    let write = |target: &str| {
        let yaml = format!(
            "listen: 127.0.0.1:{port}\nadmin_listen: 127.0.0.1:{admin}\n{}",
            routes_to(&a, &b, target, 4).replace("{dir}", &dir.path().display().to_string())
        );
        std::fs::write(dir.path().join("routes.yaml"), yaml).expect("write");
    };
    write("a");
    let mut child = std::process::Command::new(BIN)
        .args(["serve", "--no-watch", "--config"])
        .arg(dir.path().join("routes.yaml"))
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    let routes_url = format!("http://127.0.0.1:{admin}/api/v1/routes");
    for _ in 0..400 {
        if std::net::TcpStream::connect(("127.0.0.1", admin)).is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    write("b");
    let hup = std::process::Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .expect("kill -HUP");
    assert!(hup.success());
    let mut switched = false;
    for _ in 0..200 {
        let routes = request(Method::GET, &routes_url, &[], "").await.json();
        if routes["routes"][0]["to"][0] == "b" {
            switched = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    child.kill().expect("kill");
    child.wait().expect("reap");
    assert!(switched, "SIGHUP did not reload within 5 s");
}

/// A daemon whose reload removed sink `a` while it held 3 failing deliveries; `b` stays.
async fn with_an_orphaned_sink() -> (TestApp, TestSink, TestSink) {
    let (a, b) = (TestSink::start().await, TestSink::start().await);
    a.set_default(crate::support::Respond::status(503));
    let config = |target: &str, with_a: bool| {
        let a_sink = if with_a {
            format!(
                "  a: {{ http: {{ url: \"{}\" }}, retry: {{ schedule: [1h] }} }}\n",
                a.url()
            )
        } else {
            String::new()
        };
        format!(
            "spool: {{ path: \"{{dir}}/spool\" }}\nsinks:\n{a_sink}  b: {{ http: {{ url: \"{}\" }} }}\nroutes: [{{ name: main, to: [{target}] }}]\n",
            b.url()
        )
    };
    let app = TestApp::start_file(&config("a", true), false).await;
    for i in 0..3 {
        app.send(event(&format!("o-{i}"), "T")).await;
    }
    wait_until("three failed first attempts", WAIT, || a.count() == 3).await;
    app.rewrite(&config("b", false));
    assert_eq!(reload(&app).await.status, StatusCode::OK);
    (app, a, b)
}

#[tokio::test]
async fn deliveries_for_a_removed_sink_are_kept_and_reported_as_orphaned() {
    let (app, _a, _b) = with_an_orphaned_sink().await;
    let sinks = request(Method::GET, &format!("{}/api/v1/sinks", app.admin), &[], "")
        .await
        .json();
    let orphan = sinks["sinks"]
        .as_array()
        .and_then(|all| all.iter().find(|s| s["name"] == "a"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(orphan["orphaned"], true, "{sinks}");
    assert_eq!(orphan["backlog"], 3, "{sinks}");
    assert_eq!(app.running.spool_depth("a"), 3, "kept, not dropped");
}

#[tokio::test]
async fn an_operator_purges_the_deliveries_of_a_removed_sink() {
    let (app, _a, _b) = with_an_orphaned_sink().await;
    let sinks_url = format!("{}/api/v1/sinks", app.admin);
    let listed = |sinks: &serde_json::Value, name: &str| {
        let all = sinks["sinks"].as_array().cloned().unwrap_or_default();
        all.into_iter().find(|s| s["name"] == name)
    };
    let sinks = request(Method::GET, &sinks_url, &[], "").await.json();
    let orphan = listed(&sinks, "a").unwrap_or_default();
    assert_eq!(
        (&orphan["orphaned"], &orphan["backlog"]),
        (&true.into(), &3.into())
    );

    let purge = |sink: &str| format!("{}/api/v1/sinks/{sink}/deliveries", app.admin);
    let purged = request(Method::DELETE, &purge("a"), &[], "").await;
    assert_eq!(purged.status, StatusCode::OK, "{}", purged.text());
    assert_eq!(purged.json()["purged"], 3);
    assert_eq!(app.running.spool_depth("a"), 0);
    let sinks = request(Method::GET, &sinks_url, &[], "").await.json();
    assert!(listed(&sinks, "a").is_none(), "{sinks}");

    let again = request(Method::DELETE, &purge("a"), &[], "").await;
    assert_eq!(again.status, StatusCode::NOT_FOUND, "{}", again.text());
    let configured = request(Method::DELETE, &purge("b"), &[], "").await;
    assert_eq!(
        configured.status,
        StatusCode::CONFLICT,
        "{}",
        configured.text()
    );
    let error = configured.json()["error"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(error.contains("configured"), "{error}");
}
