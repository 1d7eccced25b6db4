//! CESQL route filters through the daemon: extension attributes, missing attributes, type
//! coercion and evaluation errors on real routed events delivered to a real sink; a reload
//! with a changed expression; `check` and `explain` of the binary.

use std::collections::BTreeSet;
use std::time::Duration;

use hyper::{Method, StatusCode};
use serde_json::json;

use crate::support::cli::{check_refused, explain, write};
use crate::support::{request, wait_until, TestApp, TestSink};

const WAIT: Duration = Duration::from_secs(10);
/// Route names are unique to this file: the metrics recorder is shared by the whole process.
const ROUTES: &[(&str, &str)] = &[
    (
        "cesql-ext-string",
        "region = 'eu' AND type LIKE 'Contoso.Orders.%'",
    ),
    ("cesql-ext-int", "retries > 2"),
    ("cesql-ext-bool", "urgent = TRUE"),
    ("cesql-guarded", "EXISTS priority AND priority = 'high'"),
    ("cesql-unguarded", "priority = 'high'"),
    ("cesql-cast", "INT(amount) >= 100"),
    ("cesql-math", "100 / retries > 10"),
];

fn config(sink: &TestSink) -> String {
    let mut yaml = format!(
        "spool: {{ path: \"{{dir}}/spool\" }}\nsinks:\n  hook: {{ http: {{ url: \"{}\" }} }}\nroutes:\n",
        sink.url()
    );
    for (name, sql) in ROUTES {
        yaml.push_str(&format!(
            "  - {{ name: {name}, sql: \"{sql}\", to: [hook] }}\n"
        ));
    }
    yaml
}

fn event(id: &str, ty: &str, extensions: serde_json::Value) -> serde_json::Value {
    let mut e = json!({ "specversion": "1.0", "id": id, "source": "/cesql", "type": ty });
    if let (Some(e), serde_json::Value::Object(x)) = (e.as_object_mut(), extensions) {
        e.extend(x);
    }
    e
}

/// The value of one metric line (name and labels exactly as rendered), or 0.
async fn metric(app: &TestApp, series: &str) -> u64 {
    let text = request(Method::GET, &format!("{}/metrics", app.admin), &[], "")
        .await
        .text();
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn sql_routes_real_events_by_extensions_with_coercion_and_counts_errors() {
    let sink = TestSink::start().await;
    let app = TestApp::start(&config(&sink)).await;
    let events = [
        // Typed extensions: a string, an integer, a boolean.
        event(
            "e1",
            "Contoso.Orders.Created",
            json!({"region": "eu", "retries": 3, "urgent": true, "priority": "high", "amount": "150"}),
        ),
        // The same as strings, coerced by the operators; no priority; an amount that is no number.
        event(
            "e2",
            "Contoso.Users.Created",
            json!({"region": "eu", "retries": "5", "urgent": "TRUE", "amount": "lots"}),
        ),
        // Missing attributes and a division by zero.
        event(
            "e3",
            "Contoso.Orders.Created",
            json!({"region": "us", "retries": 0}),
        ),
    ];
    for e in events {
        let reply = app.send(e).await;
        assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.text());
    }

    let expected: BTreeSet<(String, String)> = [
        ("e1", "cesql-ext-string"),
        ("e1", "cesql-ext-int"),
        ("e1", "cesql-ext-bool"),
        ("e1", "cesql-guarded"),
        ("e1", "cesql-unguarded"),
        ("e1", "cesql-cast"),
        ("e1", "cesql-math"),
        ("e2", "cesql-ext-int"),
        ("e2", "cesql-ext-bool"),
        ("e2", "cesql-math"),
    ]
    .into_iter()
    .map(|(e, r)| (e.to_owned(), r.to_owned()))
    .collect();
    wait_until("every matching delivery arrives", WAIT, || {
        sink.count() >= expected.len()
    })
    .await;
    // Counted when stored, before the 202: exact, with nothing left in flight to wait for.
    for (route, want) in [
        ("cesql-ext-string", 1),
        ("cesql-ext-int", 2),
        ("cesql-ext-bool", 2),
        ("cesql-guarded", 1),
        ("cesql-unguarded", 1),
        ("cesql-cast", 1),
        ("cesql-math", 2),
    ] {
        let series = format!("switchyard_events_routed_total{{route=\"{route}\"}}");
        assert_eq!(metric(&app, &series).await, want, "{series}");
    }
    let received: BTreeSet<(String, String)> = sink
        .received()
        .iter()
        .map(|r| {
            let id = r.header("aeg-output-event-id").unwrap_or_default();
            let route = r.header("aeg-subscription-name").unwrap_or_default();
            (id.to_owned(), route.to_ascii_lowercase())
        })
        .collect();
    assert_eq!(received, expected);
    assert_eq!(sink.count(), expected.len(), "no duplicate deliveries");

    for (route, kind, want) in [
        ("cesql-unguarded", "missing_attribute", 2),
        ("cesql-cast", "cast", 1),
        ("cesql-cast", "missing_attribute", 1),
        ("cesql-math", "math", 1),
        ("cesql-ext-bool", "missing_attribute", 1),
        ("cesql-guarded", "missing_attribute", 0),
    ] {
        let series =
            format!("switchyard_route_sql_errors_total{{route=\"{route}\",kind=\"{kind}\"}}");
        assert_eq!(metric(&app, &series).await, want, "{series}");
    }
}

fn reload_config(sink: &TestSink, sql: &str) -> String {
    format!(
        "spool: {{ path: \"{{dir}}/spool\" }}\nsinks:\n  hook: {{ http: {{ url: \"{}\" }} }}\n\
         routes:\n  - name: cesql-reloaded\n    sql: \"{sql}\"\n    to: [hook]\n",
        sink.url()
    )
}

#[tokio::test]
async fn a_reload_swaps_the_expression_and_a_bad_one_is_kept_out() {
    let sink = TestSink::start().await;
    let app = TestApp::start_file(&reload_config(&sink, "region = 'eu'"), false).await;
    let url = format!("{}/api/v1/reload", app.admin);
    let reload = || request(Method::POST, &url, &[], "");
    app.send(event("r1", "T", json!({"region": "us"}))).await;
    app.send(event("r2", "T", json!({"region": "eu"}))).await;
    wait_until("the eu event arrives", WAIT, || sink.count() == 1).await;

    app.rewrite(&reload_config(&sink, "region = 'us'"));
    let reply = reload().await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let routes = app.admin_get("/api/v1/routes", None).await.json();
    assert_eq!(routes["routes"][0]["sql"], "region = 'us'");
    app.send(event("r3", "T", json!({"region": "eu"}))).await;
    app.send(event("r4", "T", json!({"region": "us"}))).await;
    wait_until("the us event arrives", WAIT, || sink.count() == 2).await;

    app.rewrite(&reload_config(&sink, "region = 'us' AND"));
    let refused = reload().await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY);
    let error = refused.json()["error"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        error.contains("routes[0].sql") && error.contains("column 18"),
        "{error}"
    );
    app.send(event("r5", "T", json!({"region": "us"}))).await;
    wait_until("the old expression still routes", WAIT, || {
        sink.count() == 3
    })
    .await;
    let ids: Vec<String> = sink
        .received()
        .iter()
        .map(|r| {
            r.header("aeg-output-event-id")
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    assert_eq!(ids, ["r2", "r4", "r5"]);
}

#[test]
fn check_names_the_path_and_column_of_a_bad_expression() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = write(
        &dir,
        "bad.yaml",
        r#"
sinks: { console: { log: {} } }
routes:
  - { name: ok, sql: "type LIKE 'Contoso.%' AND subject <> ''", to: [console] }
  - { name: bad, sql: "subject <> '' AND (priority = 'high'", to: [console] }
  - { name: unknown, sql: "SHOUT(subject) = 'A'", to: [console] }
"#,
    );
    let stderr = check_refused(&path);
    assert!(
        stderr.contains("routes[1].sql: CESQL column 37: expected `)`"),
        "{stderr}"
    );
    assert!(
        stderr.contains("routes[2].sql: CESQL column 1: no function SHOUT()"),
        "{stderr}"
    );
    assert!(!stderr.contains("routes[0]"), "{stderr}");
}

#[test]
fn explain_prints_each_sql_value_and_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = write(
        &dir,
        "routes.yaml",
        r#"
sinks: { console: { log: {} } }
routes:
  - { name: high, sql: "priority = 'high'", to: [console] }
  - { name: eu, sql: "region = 'eu' AND retries + 1 > 2", to: [console] }
"#,
    );
    let ev = event(
        "x1",
        "Contoso.Orders.Created",
        json!({"region": "eu", "retries": 2}),
    );
    let event_file = write(&dir, "event.json", &ev.to_string());
    let stdout = explain(&config, &event_file);
    assert!(
        stdout.contains(
            "high: no match: sql raised an error (its value does not count)\n  \
             sql `priority = 'high'` = false (error: missing attribute error at column 1 \
             (`priority`): the event has no such attribute)\n"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("eu: match -> console\n  sql `region = 'eu' AND retries + 1 > 2` = true\n"),
        "{stdout}"
    );
}
