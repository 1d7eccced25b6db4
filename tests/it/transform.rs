//! Transformations through the daemon: a route's and a sink's jq programs reshape what one
//! real sink receives while another sees the original, a retry transforms the stored original
//! again, each way a program can fail dead-letters its delivery after one attempt, a reload
//! swaps a program, and `check` and `explain --transform` of the binary.

use std::process::Command;
use std::time::Duration;

use hyper::{Method, StatusCode};
use serde_json::{json, Value};

use crate::support::cli::{check_refused, write};
use crate::support::process::BIN;
use crate::support::{request, wait_until, Respond, TestApp, TestSink};

const WAIT: Duration = Duration::from_secs(10);
/// The route reshapes `data` and moves `data.region` into an extension; the sink renames
/// the type. `seen` records the order the programs ran in.
const RESHAPING: &str = r#"
spool: { path: "{dir}/spool" }
sinks:
  reshaped:
    http: { url: "RESHAPED_URL", format: cloudevents-structured }
    retry: { schedule: [10ms] }
    transform: '.seen = .seen + ",sink" | .type = "com.example.order.v2"'
  original:
    http: { url: "ORIGINAL_URL", format: cloudevents-structured }
routes:
  - name: tx-reshape
    to: [reshaped]
    transform: |
      .region = .data.region
      | .seen = "route"
      | .data = {order: .data.id, total: (.data.items | map(.price) | add)}
  - name: tx-copy
    to: [original]
"#;

fn order(id: &str) -> Value {
    json!({
        "specversion": "1.0", "id": id, "source": "/shop", "type": "com.example.order",
        "data": {"id": "o-1", "region": "eu", "items": [{"price": 2}, {"price": 3}]}
    })
}

#[tokio::test]
async fn programs_reshape_one_sinks_copy_in_route_then_sink_order_and_retries_start_over() {
    let (reshaped, original) = (TestSink::start().await, TestSink::start().await);
    // The first attempt fails: the retry must transform the stored original again.
    reshaped.script([Respond::status(500)]);
    let yaml = RESHAPING
        .replace("RESHAPED_URL", &reshaped.url())
        .replace("ORIGINAL_URL", &original.url());
    let app = TestApp::start(&yaml).await;

    let reply = app.send(order("t1")).await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.text());
    wait_until("both sinks receive the event", WAIT, || {
        reshaped.count() == 2 && original.count() == 1
    })
    .await;

    let want = json!({
        "specversion": "1.0", "id": "t1", "source": "/shop", "type": "com.example.order.v2",
        "region": "eu", "seen": "route,sink",
        "data": {"order": "o-1", "total": 5}
    });
    for (attempt, got) in reshaped.received().iter().enumerate() {
        assert_eq!(got.json(), want, "attempt {attempt}");
    }
    assert_eq!(original.received()[0].json(), order("t1"));
}

/// One sink per way a program can fail, and one whose program works.
const FAILING: &str = r#"
spool: { path: "{dir}/spool" }
sinks:
  tx-runtime: { http: { url: "FAIL_URL" }, transform: '.data.items[0] + 1' }
  tx-empty: { http: { url: "FAIL_URL" }, transform: 'select(.type == "other")' }
  tx-several: { http: { url: "FAIL_URL" }, transform: '., .' }
  tx-invalid: { http: { url: "FAIL_URL" }, transform: 'del(.source)' }
  tx-ok: { http: { url: "OK_URL" }, transform: '.subject = "fine"' }
routes:
  - name: tx-all
    to: [tx-runtime, tx-empty, tx-several, tx-invalid, tx-ok]
"#;

async fn dead_letters(app: &TestApp) -> Vec<Value> {
    let reply = app.admin_get("/api/v1/dead-letters?limit=100", None).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    reply.json()["dead_letters"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[tokio::test]
async fn each_failure_dead_letters_its_delivery_after_one_attempt() {
    let (fail, ok) = (TestSink::start().await, TestSink::start().await);
    let yaml = FAILING
        .replace("FAIL_URL", &fail.url())
        .replace("OK_URL", &ok.url());
    let app = TestApp::start(&yaml).await;

    let reply = app.send(order("f1")).await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.text());
    wait_until("the working sink receives its copy", WAIT, || {
        ok.count() == 1
    })
    .await;
    let mut letters = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    while letters.len() < 4 {
        assert!(tokio::time::Instant::now() < deadline, "{letters:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
        letters = dead_letters(&app).await;
    }

    assert_eq!(ok.received()[0].header("ce-subject"), Some("fine"));
    let mut by_sink: Vec<(String, Value)> = letters
        .into_iter()
        .map(|l| (l["sink"].as_str().unwrap_or_default().to_owned(), l))
        .collect();
    by_sink.sort_by(|a, b| a.0.cmp(&b.0));
    let sinks: Vec<&str> = by_sink.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(
        sinks,
        ["tx-empty", "tx-invalid", "tx-runtime", "tx-several"]
    );
    for (sink, letter) in &by_sink {
        assert_eq!(letter["reason"], "TransformFailed", "{sink}: {letter}");
        assert_eq!(letter["attempts"], 1, "{sink}: {letter}");
        // The spool keeps the original event.
        assert_eq!(letter["event"], order("f1"), "{sink}");
        let outcome = letter["last_outcome"].as_str().unwrap_or_default();
        let expected = match sink.as_str() {
            "tx-runtime" => "the program failed: cannot",
            "tx-empty" => "the program yielded no value",
            "tx-several" => "the program yielded more than one value",
            _ => "not a valid event: source",
        };
        assert!(
            outcome.starts_with(&format!("sink `{sink}` transform: "))
                && outcome.contains(expected),
            "{sink}: {outcome}"
        );
    }
    // Never retried, and nothing reached the failing sinks' target.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let again = dead_letters(&app).await;
    assert_eq!(again.len(), 4);
    assert!(again.iter().all(|l| l["attempts"] == 1));
    assert_eq!(fail.count(), 0);
}

fn reload_config(sink: &TestSink, program: &str) -> String {
    format!(
        "spool: {{ path: \"{{dir}}/spool\" }}\nsinks:\n  hook: {{ http: {{ url: \"{}\" }} }}\n\
         routes:\n  - name: tx-reloaded\n    to: [hook]\n    transform: '{program}'\n",
        sink.url()
    )
}

#[tokio::test]
async fn a_reload_swaps_the_program_and_a_bad_one_is_kept_out() {
    let sink = TestSink::start().await;
    let app = TestApp::start_file(&reload_config(&sink, r#".subject = "one""#), false).await;
    let url = format!("{}/api/v1/reload", app.admin);
    let reload = || request(Method::POST, &url, &[], "");
    app.send(order("r1")).await;
    wait_until("the first event arrives", WAIT, || sink.count() == 1).await;

    app.rewrite(&reload_config(&sink, r#".subject = "two""#));
    let reply = reload().await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    app.send(order("r2")).await;
    wait_until("the second event arrives", WAIT, || sink.count() == 2).await;

    app.rewrite(&reload_config(&sink, ".subject = $ENV.HOME"));
    let refused = reload().await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY);
    let error = refused.json()["error"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        error.contains("routes[0].transform: jq: undefined variable `$ENV` at line 1, column 12"),
        "{error}"
    );
    app.send(order("r3")).await;
    wait_until("the third event arrives", WAIT, || sink.count() == 3).await;
    let subjects: Vec<String> = sink
        .received()
        .iter()
        .map(|r| r.header("ce-subject").unwrap_or_default().to_owned())
        .collect();
    assert_eq!(subjects, ["one", "two", "two"]);
}

#[test]
fn check_names_the_yaml_path_and_position_of_a_bad_program() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = write(
        &dir,
        "bad.yaml",
        r#"
sinks:
  hook: { log: {}, transform: "env.HOME" }
routes:
  - { name: ok, to: [hook], transform: ".data" }
  - name: bad
    to: [hook]
    transform: |
      .a = 1
      | .b = $ENV.PATH
"#,
    );
    let stderr = check_refused(&path);
    assert!(
        stderr.contains("sinks.hook.transform: jq: undefined filter `env/0` at line 1, column 1"),
        "{stderr}"
    );
    assert!(
        stderr.contains("routes[1].transform: jq: undefined variable `$ENV` at line 2, column 8"),
        "{stderr}"
    );
    assert!(!stderr.contains("routes[0]"), "{stderr}");
}

const EXPLAINED: &str = r#"
sinks:
  hook: { log: {}, transform: '.type = "renamed"' }
  broken: { log: {}, transform: 'error("no way")' }
  plain: { log: {} }
routes:
  - { name: all, to: [hook, broken], transform: '.subject = "routed"' }
  - { name: copy, to: [plain] }
"#;

#[test]
fn explain_shows_what_each_matched_sink_receives() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = write(&dir, "routes.yaml", EXPLAINED);
    let event = write(&dir, "event.json", &order("x1").to_string());
    let run = |json: bool| {
        let mut cmd = Command::new(BIN);
        cmd.args(["explain", "--transform", "--config"])
            .arg(&config)
            .arg(&event);
        if json {
            cmd.args(["-o", "json"]);
        }
        let out = cmd.output().expect("run explain");
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };

    let text = run(false);
    assert!(text.contains("all: match -> hook, broken"), "{text}");
    assert!(
        text.contains(r#"hook receives: {"specversion":"1.0","id":"x1","source":"/shop","type":"renamed","subject":"routed""#),
        "{text}"
    );
    assert!(
        text.contains("broken: sink `broken` transform: the program failed: no way"),
        "{text}"
    );
    assert!(
        text.contains(r#"plain receives: {"specversion":"1.0","id":"x1""#),
        "{text}"
    );

    let json: Value = serde_json::from_str(&run(true)).expect("JSON output");
    let sinks = &json["events"][0]["sinks"];
    assert_eq!(sinks[0]["route"], "all");
    assert_eq!(sinks[0]["sink"], "hook");
    assert_eq!(sinks[0]["event"]["type"], "renamed");
    assert_eq!(sinks[0]["event"]["subject"], "routed");
    assert_eq!(sinks[0]["error"], Value::Null);
    assert_eq!(sinks[1]["sink"], "broken");
    assert_eq!(sinks[1]["event"], Value::Null);
    assert!(sinks[1]["error"]
        .as_str()
        .is_some_and(|e| e.contains("no way")));
    assert_eq!(sinks[2]["sink"], "plain");
    assert_eq!(sinks[2]["event"], order("x1"));
}
