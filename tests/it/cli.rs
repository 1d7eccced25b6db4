//! The compiled binary: `check`, `explain`, and `serve` with a graceful SIGTERM.

use std::process::{Command, Stdio};
use std::time::Duration;

use hyper::StatusCode;

use crate::support::cli::{check_refused, explain, write};
use crate::support::daemon::event;
use crate::support::process::BIN;
use crate::support::{post, wait_until};

#[test]
fn check_prints_a_summary_for_the_default_routes_file() {
    let out = Command::new(BIN)
        .args([
            "check",
            "--config",
            concat!(env!("CARGO_MANIFEST_DIR"), "/routes.yaml"),
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("console") && stdout.contains("archive"),
        "{stdout}"
    );
}

#[test]
fn check_reports_every_error_with_its_path_and_exits_64() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        &dir,
        "bad.yaml",
        r#"
listen: 127.0.0.1:0
sinks:
  hook: { http: { url: "http://127.0.0.1:1/x", timeout: 5 }, colour: blue }
routes:
  - name: r
    to: [hook, nowhere]
"#,
    );
    let stderr = check_refused(&path);
    assert!(stderr.contains("sinks.hook.colour"), "{stderr}");
    assert!(stderr.contains("sinks.hook.http.timeout"), "{stderr}");
    assert!(stderr.contains("routes[0].to[1]"), "{stderr}");
}

#[test]
fn explain_names_the_first_failed_condition_per_route() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        &dir,
        "routes.yaml",
        r#"
sinks: { console: { log: {} } }
routes:
  - name: big-orders
    match:
      types: ["Contoso.Orders.*"]
      advanced: [{ key: data.total, op: NumberGreaterThan, value: 100 }]
    to: [console]
  - name: users
    match: { types: ["Contoso.Users.*"] }
    to: [console]
"#,
    );
    let ev = serde_json::json!({
        "specversion": "1.0", "id": "e1", "source": "/s", "type": "Contoso.Orders.Created",
        "data": {"total": 50}
    });
    let event_file = write(&dir, "event.json", &ev.to_string());
    let stdout = explain(&config, &event_file);
    let big = stdout
        .lines()
        .find(|l| l.starts_with("big-orders"))
        .expect("big-orders line");
    assert!(
        big.contains("data.total") && big.contains("NumberGreaterThan"),
        "{stdout}"
    );
    let users = stdout
        .lines()
        .find(|l| l.starts_with("users"))
        .expect("users line");
    assert!(users.contains("no match"), "{stdout}");
}

#[tokio::test]
async fn serve_delivers_then_exits_zero_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let config = write(
        &dir,
        "routes.yaml",
        &format!(
            "listen: 127.0.0.1:{port}\nadmin_listen: 127.0.0.1:0\nspool: {{ path: \"{d}/spool\" }}\nsinks: {{ out: {{ file: {{ path: \"{d}/out.jsonl\" }} }} }}\nroutes: [{{ name: all, to: [out] }}]\n",
            d = dir.path().display()
        ),
    );
    let mut child = Command::new(BIN)
        .args(["--log-format", "json", "serve", "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}/events");
    let body = event("cli-1", "T").to_string();
    let mut accepted = false;
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            let reply = post(
                &url,
                &[("content-type", "application/cloudevents+json")],
                body.clone(),
            )
            .await;
            assert_eq!(reply.status, StatusCode::ACCEPTED);
            accepted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(accepted, "daemon never listened");
    let out = dir.path().join("out.jsonl");
    wait_until("file sink line", Duration::from_secs(10), || {
        std::fs::read_to_string(&out).is_ok_and(|s| s.contains("cli-1"))
    })
    .await;

    let status = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
    let mut exited = None;
    for _ in 0..200 {
        if let Some(s) = child.try_wait().unwrap() {
            exited = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let status = exited.expect("exited within 10 s of SIGTERM");
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(status.success(), "{status:?}\n{stderr}");
    assert!(stderr.contains("SIGTERM"), "logs name the signal: {stderr}");
    assert!(
        stderr.lines().all(|l| l.starts_with('{')),
        "JSON logs: {stderr}"
    );
}
