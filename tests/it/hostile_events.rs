//! Hostile events against what the daemon writes: the `file` sink's lines, text and JSON
//! log lines, and what an `exec` sink's process gets (its environment; an id it cannot be
//! given).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use hyper::{Method, StatusCode};
use serde_json::{json, Value};

use crate::support::process::{free_port, BIN};
use crate::support::{post, request, wait_until, TestApp};

const WAIT: Duration = Duration::from_secs(10);
/// What a forged log line would start with.
const FORGED: &str = "2026-12-06T00:00:00Z INFO forged";
/// A secret in the daemon's environment that no sink's process may see.
const SECRET: (&str, &str) = ("DATABASE_PASSWORD", "hunter2-secret");

/// One request: its headers and body.
type Request = (Vec<(&'static str, String)>, Vec<u8>);

/// The requests of one run.
///
/// The context attributes of a 1.0 event refuse control characters at ingress; a 0.3 event,
/// whose specification has no such rule, carries them through to every writer.
fn hostile_requests() -> Vec<Request> {
    let id = format!("s-1\n{FORGED}");
    let attributes = json!({
        "specversion": "0.3",
        "id": id,
        "source": format!("/src\r\n{FORGED}"),
        "type": "T\u{1b}[31m\u{1b}[2J",
        "subject": format!("/s\u{85}{FORGED}"),
        "datacontenttype": "application/json",
    })
    .to_string();
    // Pretty-printed data, whose whitespace plants a complete JSON line.
    let data = "{\n  \"a\":\n{\"forged\":1}\n,\r\n  \"b\": \"x\\ny\"\n}";
    let structured = format!("{},\"data\":{data}}}", attributes.trim_end_matches('}'));
    let ce = |id: &str| {
        vec![
            ("ce-specversion", "0.3".to_owned()),
            ("ce-id", id.to_owned()),
            ("ce-source", "/bin".to_owned()),
            ("ce-type", "T".to_owned()),
        ]
    };
    let mut binary = ce("b-1%0A2026-12-06T00:00:00Z%20INFO%20forged");
    binary.push(("content-type", "application/octet-stream".to_owned()));
    let mut text = ce("t-1");
    text.push(("content-type", "text/plain".to_owned()));
    vec![
        (
            vec![("content-type", "application/cloudevents+json".to_owned())],
            structured.into_bytes(),
        ),
        (binary, b"\x00\n{\"forged\":1}\n\xff\xfe".to_vec()),
        (text, format!("one\n{FORGED}\n").into_bytes()),
    ]
}

/// Runs `switchyard serve` (logs in `format`) with a secret in its environment, sends the
/// hostile requests, waits for the three sinks, stops it with SIGTERM and returns its logs.
async fn serve(dir: &Path, format: &str) -> String {
    let port = free_port();
    let d = dir.display();
    let config = dir.join("routes.yaml");
    std::fs::write(
        &config,
        format!(
            r#"
listen: 127.0.0.1:{port}
admin_listen: 127.0.0.1:0
spool: {{ path: "{d}/spool" }}
sinks:
  archive: {{ file: {{ path: "{d}/events.jsonl" }} }}
  script: {{ exec: {{ command: ["sh", "-c", "env -0 > {d}/env-$$$$.txt"], env: [PATH, SHARED_SETTING] }} }}
  console: {{ log: {{ level: info }} }}
routes: [{{ name: all, to: [archive, script, console] }}]
"#
        ),
    )
    .expect("write config");
    let mut child = Command::new(BIN)
        .args(["--log-format", format, "serve", "--config"])
        .arg(&config)
        .env("RUST_LOG", "info")
        .env(SECRET.0, SECRET.1)
        .env("SHARED_SETTING", "shared")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn daemon");
    wait_until("the daemon listens", WAIT, || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    })
    .await;
    let url = format!("http://127.0.0.1:{port}/events");
    for (headers, body) in hostile_requests() {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let reply = post(&url, &headers, body).await;
        assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.text());
    }
    wait_until("three processes ran", WAIT, || env_files(dir).len() == 3).await;
    wait_until("three events in the file", WAIT, || {
        std::fs::read(dir.join("events.jsonl")).is_ok_and(|b| b.ends_with(b"\n") && b.len() > 500)
    })
    .await;

    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    let status = child.wait().expect("wait for the daemon");
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().expect("piped"), &mut stderr)
        .expect("read logs");
    assert!(status.success(), "{status}\n{stderr}");
    stderr
}

/// The environments the exec sink's processes saw, one map each.
fn env_files(dir: &Path) -> Vec<BTreeMap<String, String>> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("env-"))
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .filter(|text| text.ends_with('\0'))
        .map(|text| {
            text.split_terminator('\0')
                .filter_map(|pair| pair.split_once('='))
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect()
        })
        .collect()
}

fn assert_one_json_line_per_event(dir: &Path) {
    let text = std::fs::read_to_string(dir.join("events.jsonl")).expect("the file sink wrote");
    let mut ids: Vec<String> = text
        .lines()
        .map(|line| {
            let value: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
            value["id"].as_str().expect("an id").to_owned()
        })
        .collect();
    ids.sort();
    assert_eq!(
        ids,
        [
            format!("b-1\n{FORGED}"),
            format!("s-1\n{FORGED}"),
            "t-1".to_owned()
        ],
        "{text}"
    );
}

fn assert_only_passed_variables(dir: &Path) {
    for env in env_files(dir) {
        let mut names: Vec<&str> = env.keys().map(String::as_str).collect();
        // dash sets PWD itself.
        names.retain(|name| *name != "PWD");
        assert_eq!(
            names,
            [
                "PATH",
                "SHARED_SETTING",
                "SWITCHYARD_DELIVERY_COUNT",
                "SWITCHYARD_EVENT_ID",
                "SWITCHYARD_ROUTE"
            ]
        );
        assert_eq!(env["SHARED_SETTING"], "shared");
        assert!(env.values().all(|v| !v.contains(SECRET.1)), "{env:?}");
    }
}

#[tokio::test]
async fn text_logs_file_lines_and_exec_environments_hold_against_hostile_events() {
    let dir = tempfile::tempdir().expect("temp dir");
    let logs = serve(dir.path(), "text").await;

    assert_eq!(logs.matches("Event received").count(), 3, "{logs}");
    for line in logs.lines() {
        assert!(!line.starts_with(FORGED), "forged line: {line:?}\n{logs}");
        assert!(!line.starts_with('/'), "a line split by \\u85: {line:?}");
        assert!(!line.contains(['\r', '\u{85}']), "{line:?}");
        assert!(
            !line.contains("\u{1b}[31m") && !line.contains("\u{1b}[2J"),
            "{line:?}"
        );
    }
    assert!(logs.contains(&format!("s-1\\n{FORGED}")), "{logs}");
    assert_one_json_line_per_event(dir.path());
    assert_only_passed_variables(dir.path());
}

#[tokio::test]
async fn json_logs_stay_one_object_per_line_against_hostile_events() {
    let dir = tempfile::tempdir().expect("temp dir");
    let logs = serve(dir.path(), "json").await;

    let received: Vec<Value> = logs
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line:?}")))
        .filter(|v: &Value| v["fields"]["message"] == "Event received")
        .collect();
    let mut ids: Vec<&str> = received
        .iter()
        .filter_map(|v| v["fields"]["id"].as_str())
        .collect();
    ids.sort_unstable();
    let (b, s) = (format!("b-1\n{FORGED}"), format!("s-1\n{FORGED}"));
    assert_eq!(ids, [b.as_str(), s.as_str(), "t-1"], "{logs}");
    assert_one_json_line_per_event(dir.path());
}

#[tokio::test]
async fn an_event_id_with_a_nul_byte_is_dead_lettered_after_one_attempt() {
    // A 1.0 event with a NUL in its id is refused at ingress; 0.3 has no such rule.
    let app = TestApp::start(
        r#"
admin: { token: hx-token }
sinks:
  script:
    exec: { command: ["sh", "-c", "touch {dir}/ran-$$$$"] }
    retry: { schedule: [10ms] }
routes: [{ name: all, to: [script] }]
"#,
    )
    .await;
    let structured = json!({
        "specversion": "0.3", "id": "a\u{0}b", "source": "/s", "type": "T", "data": {"n": 1}
    });
    assert_eq!(app.send(structured).await.status, StatusCode::ACCEPTED);
    let binary = [
        ("ce-specversion", "0.3"),
        ("ce-id", "c%00d"),
        ("ce-source", "/s"),
        ("ce-type", "T"),
    ];
    let reply = app.post("/events", &binary, "{}").await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.text());

    let url = format!("{}/api/v1/dead-letters", app.admin);
    let records = || async {
        let reply = request(
            Method::GET,
            &url,
            &[("authorization", "Bearer hx-token")],
            "",
        )
        .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        reply.json()["dead_letters"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    };
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut letters = records().await;
    while letters.len() < 2 {
        assert!(tokio::time::Instant::now() < deadline, "not dead-lettered");
        tokio::time::sleep(Duration::from_millis(20)).await;
        letters = records().await;
    }
    let mut ids = Vec::new();
    for letter in &letters {
        assert_eq!(letter["attempts"], 1, "{letter}");
        assert_eq!(
            letter["reason"], "UndeliverableDueToClientError",
            "{letter}"
        );
        assert_eq!(letter["last_outcome"], "InvalidInput", "{letter}");
        ids.push(
            letter["event"]["id"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        );
    }
    ids.sort();
    assert_eq!(ids, ["a\0b", "c\0d"]);
    let counters = app.running.counters();
    assert_eq!(
        switchyard::telemetry::Counters::get(&counters.deliveries_retried),
        0
    );
    let ran = std::fs::read_dir(app.dir.path())
        .expect("the test directory")
        .filter_map(Result::ok)
        .any(|e| e.file_name().to_string_lossy().starts_with("ran-"));
    assert!(!ran, "no process was started");
}
