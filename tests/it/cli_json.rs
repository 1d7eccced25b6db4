//! The binary for scripts: `-o json` on every command that reads, `SWITCHYARD_ADMIN_URL`,
//! `SWITCHYARD_ADMIN_TOKEN` and `SWITCHYARD_CONFIG` in place of flags, and shell completions.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::support::daemon::event;
use crate::support::{Respond, TestApp, TestSink};

const BIN: &str = env!("CARGO_BIN_EXE_switchyard");
const TOKEN: &str = "cli-json-token";
const WAIT: Duration = Duration::from_secs(10);
/// The variables under test, removed from every run unless the run sets them.
const ENV: [&str; 3] = [
    "SWITCHYARD_ADMIN_URL",
    "SWITCHYARD_ADMIN_TOKEN",
    "SWITCHYARD_CONFIG",
];

/// What one run of the binary printed.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    /// Stdout as one JSON document; fails the test with what was printed otherwise.
    fn json(&self) -> Value {
        assert_eq!(self.code, Some(0), "{}{}", self.stdout, self.stderr);
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.stdout))
    }
}

/// Runs the binary with `args` and only the variables of `env` set among [`ENV`].
async fn run(args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut command = tokio::process::Command::new(BIN);
    command.args(args).kill_on_drop(true);
    for name in ENV {
        command.env_remove(name);
    }
    command.envs(env.iter().copied());
    let out = tokio::time::timeout(WAIT, command.output())
        .await
        .expect("the binary answers in time")
        .expect("run the binary");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    Run {
        code: out.status.code(),
        stdout: text(&out.stdout),
        stderr: text(&out.stderr),
    }
}

/// A daemon with a token whose one sink answers 400, so every delivery is dead-lettered.
async fn start(sink: &TestSink) -> TestApp {
    sink.set_default(Respond::status(400));
    TestApp::start(&format!(
        r#"
admin: {{ token: {TOKEN} }}
sinks:
  cj-orders: {{ http: {{ url: "{}" }}, concurrency: 3 }}
routes:
  - {{ name: cj-route, match: {{ types: ["Orders.*"] }}, to: [cj-orders] }}
"#,
        sink.url()
    ))
    .await
}

#[tokio::test]
async fn sinks_and_routes_print_the_admin_json_with_the_environment_s_url_and_token() {
    let sink = TestSink::start().await;
    let app = start(&sink).await;
    let env = [
        ("SWITCHYARD_ADMIN_URL", app.admin.as_str()),
        ("SWITCHYARD_ADMIN_TOKEN", TOKEN),
    ];

    let sinks = run(&["sinks", "-o", "json"], &env).await.json();
    let first = &sinks["sinks"][0];
    assert_eq!(first["name"], "cj-orders", "{sinks}");
    assert_eq!(first["kind"], "http", "{sinks}");
    assert_eq!(first["concurrency"], 3, "{sinks}");
    assert!(first.get("backlog").is_some(), "{sinks}");

    let routes = run(&["routes", "--output", "json"], &env).await.json();
    let route = &routes["routes"][0];
    assert_eq!(route["name"], "cj-route", "{routes}");
    assert_eq!(route["to"][0], "cj-orders", "{routes}");

    // The text table is still the default.
    let text = run(&["routes"], &env).await;
    assert_eq!(text.code, Some(0), "{}", text.stderr);
    assert!(text.stdout.starts_with("NAME"), "{}", text.stdout);

    // Without the token: the answer's status on stderr, nothing on stdout, exit 1.
    let refused = run(
        &["sinks", "-o", "json"],
        &[("SWITCHYARD_ADMIN_URL", app.admin.as_str())],
    )
    .await;
    assert_eq!(refused.code, Some(1), "{}", refused.stderr);
    assert!(refused.stdout.is_empty(), "{}", refused.stdout);
    assert!(refused.stderr.contains("401"), "{}", refused.stderr);

    // A flag wins over the environment.
    let flag = run(
        &["sinks", "-o", "json", "--admin", app.admin.as_str()],
        &[
            ("SWITCHYARD_ADMIN_URL", "http://127.0.0.1:1"),
            ("SWITCHYARD_ADMIN_TOKEN", TOKEN),
        ],
    )
    .await;
    assert_eq!(flag.json()["sinks"][0]["name"], "cj-orders");
}

#[tokio::test]
async fn dead_letter_list_and_show_print_the_admin_json() {
    let sink = TestSink::start().await;
    let app = start(&sink).await;
    let reply = app.send(event("cj-1", "Orders.Created")).await;
    assert!(reply.status.is_success(), "{}", reply.text());
    let admin = ["--admin", app.admin.as_str(), "--token", TOKEN];
    let list_args = [&["dead-letter", "list", "-o", "json"], &admin[..]].concat();

    let deadline = tokio::time::Instant::now() + WAIT;
    let listed = loop {
        let listed = run(&list_args, &[]).await.json();
        if listed["dead_letters"]
            .as_array()
            .is_some_and(|l| !l.is_empty())
        {
            break listed;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never dead-lettered"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let record = &listed["dead_letters"][0];
    assert_eq!(record["sink"], "cj-orders", "{listed}");
    assert_eq!(record["event"]["id"], "cj-1", "{listed}");
    assert!(listed.get("next").is_some(), "{listed}");

    let id = record["id"].as_u64().expect("a numeric id").to_string();
    let show_args = [&["dead-letter", "show", "-o", "json", &id], &admin[..]].concat();
    let shown = run(&show_args, &[]).await;
    assert_eq!(
        shown.stdout.lines().count(),
        1,
        "one line: {}",
        shown.stdout
    );
    let shown = shown.json();
    assert_eq!(shown["id"], record["id"], "{shown}");
    assert_eq!(shown["event"]["type"], "Orders.Created", "{shown}");

    let missing = [&["dead-letter", "show", "-o", "json", "999999"], &admin[..]].concat();
    let missing = run(&missing, &[]).await;
    assert_eq!(missing.code, Some(1), "{}", missing.stderr);
    assert!(missing.stdout.is_empty(), "{}", missing.stdout);
    assert!(missing.stderr.contains("404"), "{}", missing.stderr);
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write a test file");
    path.display().to_string()
}

const CONFIG: &str = r#"
listen: 127.0.0.1:0
admin_listen: 127.0.0.1:0
admin: { token: "s3cret-token" }
sinks:
  console: { log: {} }
  hook: { http: { url: "http://127.0.0.1:1/in?key=hidden" }, dead_letter: console }
routes:
  - name: orders
    match: { types: ["Orders.*"], source: ["/shop"] }
    sql: "subject LIKE '/eu/%'"
    to: [hook]
  - name: users
    match: { types: ["Users.*"] }
    to: [console]
"#;

#[tokio::test]
async fn check_prints_a_json_summary_of_the_file_the_environment_names() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let config = write(dir.path(), "routes.yaml", CONFIG);

    let summary = run(&["check", "-o", "json"], &[("SWITCHYARD_CONFIG", &config)])
        .await
        .json();
    assert_eq!(summary["valid"], true, "{summary}");
    assert_eq!(summary["admin"]["token_required"], true, "{summary}");
    assert_eq!(summary["spool"]["backend"], "embedded", "{summary}");
    let routes = summary["routes"].as_array().expect("routes");
    assert_eq!(routes.len(), 2, "{summary}");
    assert_eq!(routes[0]["name"], "orders");
    assert_eq!(routes[0]["types"][0], "Orders.*");
    assert_eq!(routes[0]["sql"], "subject LIKE '/eu/%'");
    assert_eq!(routes[1]["to"][0], "console");
    let sinks = summary["sinks"].as_array().expect("sinks");
    let hook = sinks.iter().find(|s| s["name"] == "hook").expect("hook");
    assert_eq!(hook["kind"], "http", "{summary}");
    assert_eq!(hook["dead_letter"], "console", "{summary}");
    let printed = summary.to_string();
    assert!(
        !printed.contains("s3cret") && !printed.contains("hidden"),
        "no secrets: {printed}"
    );

    // An invalid file: the errors on stderr, nothing on stdout, exit 64.
    let bad = write(
        dir.path(),
        "bad.yaml",
        "sinks: {}\nroutes: [{ name: r, to: [nowhere] }]\n",
    );
    let refused = run(&["check", "-o", "json"], &[("SWITCHYARD_CONFIG", &bad)]).await;
    assert_eq!(refused.code, Some(64), "{}", refused.stderr);
    assert!(refused.stdout.is_empty(), "{}", refused.stdout);
    assert!(
        refused.stderr.contains("routes[0].to[0]"),
        "{}",
        refused.stderr
    );

    // A bare `switchyard` serves the file the environment names: this one it refuses.
    let serve = run(&[], &[("SWITCHYARD_CONFIG", &bad)]).await;
    assert_eq!(serve.code, Some(64), "{}", serve.stderr);
    assert!(serve.stderr.contains("bad.yaml"), "{}", serve.stderr);

    // An empty variable is an empty value: a usage error, not the default.
    let empty = run(&["sinks"], &[("SWITCHYARD_ADMIN_URL", "")]).await;
    assert_eq!(empty.code, Some(64), "{}", empty.stderr);
    assert!(empty.stderr.contains("--admin"), "{}", empty.stderr);
}

#[tokio::test]
async fn explain_prints_each_route_s_verdict_and_sql_value_as_json() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let config = write(dir.path(), "routes.yaml", CONFIG);
    let event = serde_json::json!({
        "specversion": "1.0", "id": "x1", "source": "/shop", "type": "Orders.Created",
        "subject": "/eu/42"
    });
    let event = write(dir.path(), "event.json", &event.to_string());

    let explained = run(
        &["explain", "-o", "json", &event],
        &[("SWITCHYARD_CONFIG", &config)],
    )
    .await
    .json();
    let one = &explained["events"][0];
    assert_eq!(
        (&one["id"], &one["type"], &one["source"]),
        (&"x1".into(), &"Orders.Created".into(), &"/shop".into()),
        "{explained}"
    );
    let orders = &one["routes"][0];
    assert_eq!(orders["route"], "orders", "{explained}");
    assert_eq!(orders["matched"], true, "{explained}");
    assert_eq!(orders["reason"], Value::Null, "{explained}");
    assert_eq!(orders["sinks"][0], "hook", "{explained}");
    assert_eq!(orders["sql"]["expression"], "subject LIKE '/eu/%'");
    assert_eq!(orders["sql"]["value"], true, "{explained}");
    assert_eq!(orders["sql"]["error"], Value::Null, "{explained}");
    let users = &one["routes"][1];
    assert_eq!(users["matched"], false, "{explained}");
    assert!(
        users["reason"]
            .as_str()
            .is_some_and(|r| r.contains("Users.*")),
        "{explained}"
    );
    assert_eq!(users["sinks"].as_array().map(Vec::len), Some(0));
    assert_eq!(users["sql"], Value::Null, "{explained}");

    let unreadable = run(
        &[
            "explain",
            "-o",
            "json",
            "--config",
            &config,
            "/nonexistent/event.json",
        ],
        &[],
    )
    .await;
    assert_eq!(unreadable.code, Some(1), "{}", unreadable.stderr);
    assert!(unreadable.stdout.is_empty(), "{}", unreadable.stdout);
    assert!(
        unreadable.stderr.contains("cannot read"),
        "{}",
        unreadable.stderr
    );
}

#[tokio::test]
async fn completions_are_printed_for_bash_zsh_and_fish() {
    for shell in ["bash", "zsh", "fish"] {
        let out = run(&["completions", shell], &[]).await;
        assert_eq!(out.code, Some(0), "{shell}: {}", out.stderr);
        assert!(out.stdout.contains("switchyard"), "{shell}: {}", out.stdout);
        assert!(
            out.stdout.contains("dead-letter"),
            "{shell}: {}",
            out.stdout
        );
    }
    let unknown = run(&["completions", "tcsh"], &[]).await;
    assert_eq!(unknown.code, Some(64), "{}", unknown.stderr);
}
