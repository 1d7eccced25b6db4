//! The admin server: probes, the JSON API, its token, and the `send`, `sinks` and `routes`
//! commands against a running daemon. (Metrics and trace context: `telemetry`.)

use std::time::Duration;

use hyper::StatusCode;
use serde_json::{json, Value};

use crate::support::daemon::event;
use crate::support::{wait_until, Respond, TestApp, TestSink};

const WAIT: Duration = Duration::from_secs(10);

/// Polls the admin `path` until `check` holds for its JSON; panics with `what` after [`WAIT`].
async fn poll_json(app: &TestApp, path: &str, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let body = app.admin_get(path, None).await.json();
        if check(&body) {
            return body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn sink<'a>(sinks: &'a Value, name: &str) -> &'a Value {
    let list = sinks["sinks"].as_array().expect("sinks list");
    list.iter()
        .find(|s| s["name"] == name)
        .expect("sink listed")
}

#[tokio::test]
async fn probes_answer_and_readiness_fails_once_shutdown_begins() {
    let slow = TestSink::start().await;
    slow.set_default(Respond::status(200).delay(Duration::from_millis(800)));
    let app = TestApp::start(&format!(
        "shutdown_grace: 5s\nsinks: {{ adm-p-slow: {{ http: {{ url: \"{}\" }} }} }}\nroutes: [{{ name: adm-p, to: [adm-p-slow] }}]\n",
        slow.url()
    ))
    .await;

    assert_eq!(app.admin_get("/healthz", None).await.status, StatusCode::OK);
    let ready = app.admin_get("/readyz", None).await;
    assert_eq!(ready.status, StatusCode::OK, "{}", ready.text());
    assert_eq!(ready.json()["status"], "ready");

    app.send(event("p-1", "T")).await;
    wait_until("delivery in flight", WAIT, || slow.count() == 1).await;
    app.running.shutdown_token().cancel();
    let draining = app.admin_get("/readyz", None).await;
    assert_eq!(draining.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(draining.json()["reason"], "shutting down");
    assert_eq!(app.admin_get("/healthz", None).await.status, StatusCode::OK);
    app.running.wait().await.expect("clean shutdown");
}

#[tokio::test]
async fn the_admin_token_guards_everything_but_the_probes() {
    let app = TestApp::start("admin: { token: s3cret }\nsinks: { adm-t: { log: {} } }\nroutes: [{ name: adm-t, to: [adm-t] }]\n").await;
    for path in ["/metrics", "/api/v1/sinks", "/api/v1/routes"] {
        let missing = app.admin_get(path, None).await;
        assert_eq!(missing.status, StatusCode::UNAUTHORIZED, "{path}");
        assert_eq!(missing.header("www-authenticate"), Some("Bearer"));
        assert_eq!(
            app.admin_get(path, Some("s3cre")).await.status,
            StatusCode::UNAUTHORIZED,
            "{path}"
        );
        assert_eq!(
            app.admin_get(path, Some("s3cret")).await.status,
            StatusCode::OK,
            "{path}"
        );
    }
    for path in ["/healthz", "/readyz"] {
        assert_eq!(app.admin_get(path, None).await.status, StatusCode::OK);
    }
}

#[tokio::test]
async fn the_sinks_api_shows_backlog_last_error_and_in_flight() {
    let (failing, slow) = (TestSink::start().await, TestSink::start().await);
    failing.set_default(Respond::status(500));
    slow.set_default(Respond::status(200).delay(Duration::from_secs(2)));
    let app = TestApp::start(&format!(
        r#"
sinks:
  adm-s-failing: {{ http: {{ url: "{}" }}, concurrency: 4, retry: {{ schedule: [1h] }} }}
  adm-s-slow: {{ http: {{ url: "{}" }} }}
routes: [{{ name: adm-s, to: [adm-s-failing, adm-s-slow] }}]
"#,
        failing.url(),
        slow.url()
    ))
    .await;
    app.send(event("s-1", "T")).await;

    let sinks = poll_json(
        &app,
        "/api/v1/sinks",
        "a failure and an attempt in flight",
        |v| {
            sink(v, "adm-s-failing")["last_error"].is_object()
                && sink(v, "adm-s-slow")["in_flight"] == 1
        },
    )
    .await;
    let failing_status = sink(&sinks, "adm-s-failing");
    assert_eq!(failing_status["kind"], "http");
    assert_eq!(failing_status["concurrency"], 4);
    assert_eq!(failing_status["backlog"], 1);
    assert_eq!(failing_status["in_flight"], 0);
    let message = failing_status["last_error"]["message"].as_str().unwrap();
    assert!(message.contains("500"), "{sinks}");
    assert!(failing_status["last_error"]["at"]
        .as_str()
        .unwrap()
        .ends_with('Z'));
    assert_eq!(sink(&sinks, "adm-s-slow")["backlog"], 1);
    assert!(sink(&sinks, "adm-s-slow")["last_error"].is_null());
}

#[tokio::test]
async fn the_routes_api_lists_each_route_with_its_match_and_targets() {
    let app = TestApp::start(
        r#"
sinks: { adm-r-a: { log: {} }, adm-r-b: { log: {} } }
routes:
  - name: adm-r-orders
    match:
      types: ["Contoso.Orders.*"]
      subject: { begins_with: "/orders/" }
      advanced: [{ key: data.total, op: NumberGreaterThan, value: 100 }]
    to: [adm-r-a, adm-r-b]
  - { name: adm-r-all, to: [adm-r-b] }
"#,
    )
    .await;
    let routes = app.admin_get("/api/v1/routes", None).await.json();
    let list = routes["routes"].as_array().unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(list[0]["name"], "adm-r-orders");
    assert_eq!(list[0]["to"], json!(["adm-r-a", "adm-r-b"]));
    assert_eq!(list[0]["match"]["types"], json!(["Contoso.Orders.*"]));
    assert_eq!(list[0]["match"]["subject"]["begins_with"], "/orders/");
    assert_eq!(
        list[0]["match"]["advanced"],
        json!([{"key": "data.total", "op": "NumberGreaterThan"}])
    );
    assert_eq!(list[1]["match"]["types"], json!([]));
}

/// Runs the compiled binary with whitespace-separated `args`; gives its exit code, stdout
/// and stderr.
async fn run(args: &str) -> (Option<i32>, String, String) {
    crate::support::cli::run(args.split_whitespace()).await
}

async fn cli_app(target: &TestSink) -> TestApp {
    TestApp::start(&format!(
        r#"
admin: {{ token: tok }}
sinks: {{ adm-c-hook: {{ http: {{ url: "{}" }} }} }}
routes: [{{ name: adm-c-route, match: {{ types: ["Cli.*"] }}, to: [adm-c-hook] }}]
"#,
        target.url()
    ))
    .await
}

#[tokio::test]
async fn the_send_command_publishes_one_event_in_either_mode() {
    let target = TestSink::start().await;
    let app = cli_app(&target).await;
    let send = format!(
        "send --url {}/events --type Cli.Sent --source /cli",
        app.base
    );

    let (code, stdout, stderr) = run(&format!(r#"{send} --id c-1 --data {{"n":1}}"#)).await;
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(stdout.starts_with("202"), "{stdout}");
    let (code, stdout, _) = run(&format!("{send} --id c-2 --mode structured")).await;
    assert_eq!(code, Some(0), "{stdout}");
    wait_until("both delivered", WAIT, || target.count() == 2).await;
    let got = target.received();
    let first = got.iter().find(|r| r.header("ce-id") == Some("c-1"));
    let first = first.expect("c-1 delivered");
    assert_eq!(first.header("ce-type"), Some("Cli.Sent"));
    assert_eq!(first.json(), json!({"n": 1}));

    let (code, _, _) = run(&format!("send --url {}/events --source /s", app.base)).await;
    assert_eq!(code, Some(64), "a missing --type is a usage error");
    let (code, _, stderr) = run(&format!("{send} --data @/nonexistent")).await;
    assert_eq!(code, Some(64), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

#[tokio::test]
async fn the_sinks_and_routes_commands_read_the_admin_api() {
    let target = TestSink::start().await;
    let app = cli_app(&target).await;

    let (code, stdout, stderr) = run(&format!("sinks --admin {} --token tok", app.admin)).await;
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.starts_with("NAME"), "{stdout}");
    assert!(
        stdout.contains("adm-c-hook") && stdout.contains("http"),
        "{stdout}"
    );
    let (code, stdout, _) = run(&format!("routes --admin {} --token tok", app.admin)).await;
    assert_eq!(code, Some(0));
    assert!(
        stdout.contains("adm-c-route") && stdout.contains("types Cli.*"),
        "{stdout}"
    );

    let (code, _, stderr) = run(&format!("sinks --admin {}", app.admin)).await;
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains("401") && stderr.lines().count() == 1,
        "{stderr}"
    );
}
