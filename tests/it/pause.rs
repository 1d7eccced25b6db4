//! Pausing a sink at runtime: deliveries are accepted and queued but not attempted until it
//! is resumed, then each goes out once; the pause outlives a reload and a restart; the CLI
//! pauses and resumes; an unknown sink is a 404.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use hyper::{Method, StatusCode};

use crate::support::client::Reply;
use crate::support::daemon::event;
use crate::support::process::{free_port, Daemon, BIN};
use crate::support::{metric, post, request, wait_until, TestApp, TestSink};

const WAIT: Duration = Duration::from_secs(10);

/// How long a paused sink is watched for deliveries it must not get.
const QUIET: Duration = Duration::from_millis(1500);

async fn admin_post(admin: &str, path: &str) -> Reply {
    request(Method::POST, &format!("{admin}{path}"), &[], "").await
}

async fn admin_json(admin: &str, path: &str) -> serde_json::Value {
    request(Method::GET, &format!("{admin}{path}"), &[], "")
        .await
        .json()
}

async fn paused_in_list(admin: &str, sink: &str) -> bool {
    let sinks = admin_json(admin, "/api/v1/sinks").await;
    let entry = sinks["sinks"]
        .as_array()
        .and_then(|all| all.iter().find(|s| s["name"] == sink))
        .cloned()
        .unwrap_or_default();
    entry["paused"].as_bool().expect("paused is shown")
}

fn ids(sink: &TestSink) -> Vec<String> {
    sink.received()
        .iter()
        .map(|r| r.header("ce-id").unwrap_or_default().to_owned())
        .collect()
}

fn assert_once_each(sink: &TestSink, expected: &[&str]) {
    let got = ids(sink);
    let distinct: BTreeSet<&str> = got.iter().map(String::as_str).collect();
    let expected: BTreeSet<&str> = expected.iter().copied().collect();
    assert_eq!(distinct, expected, "every event delivered");
    assert_eq!(got.len(), expected.len(), "each exactly once: {got:?}");
}

#[tokio::test]
async fn a_paused_sink_queues_and_attempts_nothing_until_resumed() {
    let hook = TestSink::start().await;
    let yaml = format!(
        "sinks: {{ pausable: {{ http: {{ url: \"{}\" }} }} }}\nroutes: [{{ name: all, to: [pausable] }}]\n",
        hook.url()
    );
    let app = TestApp::start(&yaml).await;
    let attempts = r#"switchyard_deliveries_total{sink="pausable""#;
    let gauge = r#"switchyard_sink_paused{sink="pausable"}"#;

    let reply = admin_post(&app.admin, "/api/v1/sinks/pausable/pause").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.json()["paused"], true);
    assert!(paused_in_list(&app.admin, "pausable").await);
    assert_eq!(metric(&app.admin, gauge).await, 1.0);
    let before = metric(&app.admin, attempts).await;

    for id in ["p-1", "p-2", "p-3"] {
        let accepted = app.send(event(id, "T")).await;
        assert_eq!(accepted.status.as_u16(), 202, "{}", accepted.text());
    }
    tokio::time::sleep(QUIET).await;
    assert_eq!(hook.count(), 0, "a paused sink gets nothing");
    assert_eq!(app.running.spool_depth("pausable"), 3, "queued");
    assert_eq!(
        metric(&app.admin, attempts).await,
        before,
        "no attempt counted"
    );

    let reply = admin_post(&app.admin, "/api/v1/sinks/pausable/resume").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    wait_until("all delivered", WAIT, || hook.count() >= 3).await;
    wait_until("spool drained", WAIT, || {
        app.running.spool_depth("pausable") == 0
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_once_each(&hook, &["p-1", "p-2", "p-3"]);
    assert!(!paused_in_list(&app.admin, "pausable").await);
    assert_eq!(metric(&app.admin, gauge).await, 0.0);
}

#[tokio::test]
async fn pausing_an_unknown_sink_is_a_404() {
    let hook = TestSink::start().await;
    let yaml = format!(
        "sinks: {{ known: {{ http: {{ url: \"{}\" }} }} }}\nroutes: [{{ name: all, to: [known] }}]\n",
        hook.url()
    );
    let app = TestApp::start(&yaml).await;
    for action in ["pause", "resume"] {
        let reply = admin_post(&app.admin, &format!("/api/v1/sinks/nope/{action}")).await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND);
        let error = reply.json()["error"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(error.contains("\"nope\""), "{error}");
    }
}

fn cli(admin: &str, args: &[&str]) -> (bool, String, String) {
    let output = Command::new(BIN)
        .arg("sinks")
        .args(args)
        .args(["--admin", admin])
        .output()
        .expect("run the CLI");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn write_config(dir: &Path, port: u16, admin: u16, hook: &TestSink, other: &str) {
    let yaml = format!(
        "listen: 127.0.0.1:{port}\nadmin_listen: 127.0.0.1:{admin}\nspool: {{ path: \"{}/spool\" }}\nsinks:\n  hook: {{ http: {{ url: \"{}\" }} }}\n  {other}: {{ log: {{}} }}\nroutes: [{{ name: all, to: [hook] }}]\n",
        dir.display(),
        hook.url()
    );
    std::fs::write(dir.join("routes.yaml"), yaml).expect("write routes.yaml");
}

async fn send(port: u16, id: &str) {
    let reply = post(
        &format!("http://127.0.0.1:{port}/events"),
        &[("content-type", "application/cloudevents+json")],
        event(id, "T").to_string(),
    )
    .await;
    assert_eq!(reply.status.as_u16(), 202, "{}", reply.text());
}

#[tokio::test]
async fn a_pause_by_the_cli_survives_a_reload_and_a_restart() {
    let hook = TestSink::start().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let (port, admin_port) = (free_port(), free_port());
    let admin = format!("http://127.0.0.1:{admin_port}");
    write_config(dir.path(), port, admin_port, &hook, "first");
    let config = dir.path().join("routes.yaml");
    let mut daemon = Daemon::start(&config, port).await;
    wait_until("admin server up", WAIT, || {
        std::net::TcpStream::connect(("127.0.0.1", admin_port)).is_ok()
    })
    .await;

    let (ok, stdout, stderr) = cli(&admin, &["pause", "hook"]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("hook paused"), "{stdout}");
    let (ok, _, stderr) = cli(&admin, &["pause", "missing"]);
    assert!(!ok, "an unknown sink fails");
    assert!(stderr.contains("404"), "{stderr}");
    send(port, "r-1").await;

    // A reload rebuilds every sink's worker: the new one starts paused.
    write_config(dir.path(), port, admin_port, &hook, "second");
    let reloaded = admin_post(&admin, "/api/v1/reload").await;
    assert_eq!(reloaded.status, StatusCode::OK, "{}", reloaded.text());
    send(port, "r-2").await;
    tokio::time::sleep(QUIET).await;
    assert_eq!(hook.count(), 0, "still paused after the reload");

    daemon.terminate();
    let mut daemon = Daemon::start(&config, port).await;
    wait_until("admin server up", WAIT, || {
        std::net::TcpStream::connect(("127.0.0.1", admin_port)).is_ok()
    })
    .await;
    assert!(paused_in_list(&admin, "hook").await, "paused after restart");
    let (ok, table, stderr) = cli(&admin, &[]);
    assert!(ok, "{stderr}");
    assert!(table.contains("PAUSED"), "{table}");
    send(port, "r-3").await;
    tokio::time::sleep(QUIET).await;
    assert_eq!(hook.count(), 0, "still paused after the restart");

    let (ok, stdout, stderr) = cli(&admin, &["resume", "hook"]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("hook delivering"), "{stdout}");
    wait_until("all delivered", WAIT, || hook.count() >= 3).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_once_each(&hook, &["r-1", "r-2", "r-3"]);
    assert!(!paused_in_list(&admin, "hook").await);
    daemon.terminate();
}
