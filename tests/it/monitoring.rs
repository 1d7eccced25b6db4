//! deploy/monitoring/ kept in step with the daemon: the alert rules and the Grafana
//! dashboard parse, are complete, and name only metrics that a real daemon exports once it
//! has seen some traffic (scraped from its `/metrics`).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;
use yaml_rust2::{Yaml, YamlLoader};

use crate::support::daemon::event;
use crate::support::{Respond, TestApp, TestSink};

const WAIT: Duration = Duration::from_secs(15);

fn read(path: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn yaml(path: &str) -> Yaml {
    let mut docs = YamlLoader::load_from_str(&read(path)).expect("valid YAML");
    docs.remove(0)
}

/// The daemon's own metric names in a PromQL expression: `switchyard_*` and `process_*`.
fn metric_names(expr: &str) -> impl Iterator<Item = String> + '_ {
    expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|t| t.starts_with("switchyard_") || t.starts_with("process_"))
        .map(str::to_owned)
}

/// Every alerting rule of alerts.yaml.
fn alert_rules() -> Vec<Yaml> {
    let doc = yaml("deploy/monitoring/alerts.yaml");
    let groups = doc["groups"].as_vec().expect("groups").clone();
    groups
        .iter()
        .flat_map(|g| g["rules"].as_vec().expect("rules").clone())
        .collect()
}

/// Every `expr` in the dashboard, and the queries of its variables.
fn dashboard_queries(node: &Value, out: &mut Vec<String>) {
    match node {
        Value::Object(map) => {
            for (key, value) in map {
                match (key.as_str(), value) {
                    ("expr" | "query" | "definition", Value::String(q)) => out.push(q.clone()),
                    _ => dashboard_queries(value, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| dashboard_queries(v, out)),
        _ => {}
    }
}

/// Names referenced by the rules, their unit tests' input series, and the dashboard.
fn referenced_names() -> BTreeSet<String> {
    let mut exprs: Vec<String> = alert_rules()
        .iter()
        .map(|r| r["expr"].as_str().expect("expr").to_owned())
        .collect();
    let tests = yaml("deploy/monitoring/alerts.test.yaml");
    for test in tests["tests"].as_vec().expect("tests") {
        for series in test["input_series"].as_vec().expect("input_series") {
            exprs.push(series["series"].as_str().expect("series").to_owned());
        }
    }
    let dashboard: Value =
        serde_json::from_str(&read("deploy/monitoring/grafana-dashboard.json")).expect("JSON");
    dashboard_queries(&dashboard, &mut exprs);
    exprs.iter().flat_map(|e| metric_names(e)).collect()
}

#[test]
fn every_alert_has_a_severity_a_summary_a_description_and_a_unit_test() {
    let tests = read("deploy/monitoring/alerts.test.yaml");
    let rules = alert_rules();
    assert!(rules.len() >= 6, "{} rules", rules.len());
    for rule in &rules {
        let name = rule["alert"].as_str().expect("alerting rules only");
        let severity = rule["labels"]["severity"].as_str();
        assert!(
            matches!(severity, Some("warning" | "critical")),
            "{name}: severity {severity:?}"
        );
        for annotation in ["summary", "description"] {
            let text = rule["annotations"][annotation].as_str().unwrap_or_default();
            assert!(!text.is_empty(), "{name}: no {annotation}");
        }
        let tested = format!("alertname: {name}\n");
        assert!(tests.contains(&tested), "{name} has no promtool test");
    }
}

#[test]
fn the_dashboard_parses_and_every_panel_queries_something() {
    let dashboard: Value =
        serde_json::from_str(&read("deploy/monitoring/grafana-dashboard.json")).expect("JSON");
    assert_eq!(dashboard["uid"], "switchyard");
    let panels = dashboard["panels"].as_array().expect("panels");
    let graphs: Vec<&Value> = panels.iter().filter(|p| p["type"] != "row").collect();
    assert!(graphs.len() >= 15, "{} panels", graphs.len());
    for panel in graphs {
        let targets = panel["targets"].as_array().expect("targets");
        let title = &panel["title"];
        assert!(!targets.is_empty(), "{title} has no query");
        for target in targets {
            let expr = target["expr"].as_str().unwrap_or_default();
            assert!(!expr.is_empty(), "{title}: empty query");
        }
    }
}

#[test]
fn the_compose_kit_loads_the_alert_rules() {
    let prometheus = yaml("deploy/compose/prometheus.yml");
    let files = prometheus["rule_files"].as_vec().expect("rule_files");
    let file = files[0].as_str().expect("a path");
    let compose = yaml("deploy/compose/compose.yaml");
    let volumes = compose["services"]["prometheus"]["volumes"]
        .as_vec()
        .expect("volumes");
    let mount = format!("../monitoring/alerts.yaml:{file}:ro");
    assert!(
        volumes.iter().any(|v| v.as_str() == Some(mount.as_str())),
        "{mount} in {volumes:?}"
    );
}

/// A daemon with a sink that takes everything, one that answers 400 (dead letters) and one
/// whose breaker opens at its first failure.
async fn start_busy_daemon() -> (TestApp, [TestSink; 3]) {
    let (ok, bad, down) = tokio::join!(TestSink::start(), TestSink::start(), TestSink::start());
    bad.set_default(Respond::status(400));
    down.set_default(Respond::status(500));
    let app = TestApp::start(&format!(
        r#"
sinks:
  mon-ok: {{ http: {{ url: "{}" }} }}
  mon-bad: {{ http: {{ url: "{}" }} }}
  mon-down:
    http: {{ url: "{}" }}
    retry: {{ schedule: [10ms] }}
    circuit_breaker: {{ consecutive_failures: 1, open_for: 1h }}
routes:
  - {{ name: mon-all, match: {{ types: ["Mon.*"] }}, to: [mon-ok, mon-bad, mon-down] }}
"#,
        ok.url(),
        bad.url(),
        down.url()
    ))
    .await;
    (app, [ok, bad, down])
}

#[tokio::test]
async fn the_rules_and_the_dashboard_name_only_metrics_the_daemon_exports() {
    let referenced = referenced_names();
    assert!(referenced.len() >= 15, "{referenced:?}");
    let (app, _sinks) = start_busy_daemon().await;
    app.send(event("mon-1", "Mon.Created")).await;
    app.send(event("mon-2", "Other.Unrouted")).await;

    let deadline = tokio::time::Instant::now() + WAIT;
    let missing = loop {
        let text = app.admin_get("/metrics", None).await.text();
        let exported: BTreeSet<&str> = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .filter_map(|l| l.split(['{', ' ']).next())
            .collect();
        let missing: Vec<&String> = referenced
            .iter()
            .filter(|n| !exported.contains(n.as_str()))
            .collect();
        if missing.is_empty() || tokio::time::Instant::now() >= deadline {
            break format!("{missing:?}\nexported: {exported:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(missing.starts_with("[]"), "not exported: {missing}");
}
