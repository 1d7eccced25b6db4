//! Compiling programs (what is left out, where errors are), running them on events, and the
//! order of a route's and a sink's programs.

use std::path::Path;

use super::{apply, apply_all, steps, Failure, Origin, Program, RunError};
use crate::config::{load_str, Config};
use crate::event::{http, Event, ExtensionValue};

fn event(data: &str) -> Event {
    let text = format!(
        r#"{{"specversion":"1.0","id":"e1","source":"/orders","type":"Order.Created",
            "subject":"o-7","traceid":"t-1","data":{data}}}"#
    );
    http::decode_structured(text.as_bytes()).expect("a valid test event")
}

fn program(source: &str) -> Program {
    Program::compile(source).expect("a valid test program")
}

fn compile_error(source: &str) -> String {
    Program::compile(source)
        .expect_err("the program should not compile")
        .to_string()
}

#[test]
fn reshapes_data_and_keeps_the_rest() {
    let p = program(r#".data = {order: .data.id, total: (.data.items | map(.price) | add)}"#);
    let out = apply(
        &event(r#"{"id":"o-7","items":[{"price":2},{"price":3}]}"#),
        &p,
    )
    .expect("transformed");
    assert_eq!(
        out.data.as_deref(),
        Some(&br#"{"order":"o-7","total":5}"#[..])
    );
    assert_eq!((out.id.as_str(), out.ty.as_str()), ("e1", "Order.Created"));
    assert_eq!(
        out.extension("traceid"),
        Some(&ExtensionValue::String("t-1".into()))
    );
}

#[test]
fn moves_a_field_into_an_extension_and_renames_the_type() {
    let p = program(r#".region = .data.region | del(.data.region) | .type = "order.created.v2""#);
    let out = apply(&event(r#"{"region":"eu","n":1}"#), &p).expect("transformed");
    assert_eq!(
        out.extension("region"),
        Some(&ExtensionValue::String("eu".into()))
    );
    assert_eq!(out.ty, "order.created.v2");
    assert_eq!(out.data.as_deref(), Some(&br#"{"n":1}"#[..]));
}

#[test]
fn binary_data_arrives_as_data_base64() {
    let text = r#"{"specversion":"1.0","id":"b","source":"/s","type":"T",
                   "datacontenttype":"application/octet-stream","data_base64":"AAEC"}"#;
    let e = http::decode_structured(text.as_bytes()).expect("valid");
    let p = program(r#".subject = .data_base64"#);
    assert_eq!(apply(&e, &p).expect("ok").subject.as_deref(), Some("AAEC"));
}

#[test]
fn each_failure_is_reported() {
    let e = event(r#"{"n":1}"#);
    let failure = |source: &str| apply(&e, &program(source)).expect_err("should fail");
    assert!(matches!(
        failure(r#"error("boom")"#),
        Failure::Run(RunError::Failed(m)) if m.contains("boom")
    ));
    assert_eq!(failure("empty"), Failure::Run(RunError::Empty));
    assert_eq!(failure(".,."), Failure::Run(RunError::Several));
    assert_eq!(failure(".data.n"), Failure::NotObject("a number"));
    let invalid = failure("del(.source)").to_string();
    assert!(
        invalid.contains("not a valid event") && invalid.contains("source"),
        "{invalid}"
    );
    for not_json in [".n = nan", ".data = {(1): 2}", ".b = (\"x\" | tobytes)"] {
        let error = failure(not_json).to_string();
        assert!(error.contains("not JSON"), "{not_json}: {error}");
    }
    let bad_ext = failure(r#".Bad_Name = 1"#).to_string();
    assert!(bad_ext.contains("not a valid event"), "{bad_ext}");
}

#[test]
fn reading_the_environment_or_inputs_or_logging_does_not_compile() {
    for (source, name) in [
        ("$ENV", "`$ENV`"),
        (".x = $ENV.HOME", "`$ENV`"),
        ("env", "`env/0`"),
        ("input", "`input/0`"),
        ("[inputs]", "`inputs/0`"),
        ("debug", "`debug/0`"),
        ("debug(\"x\")", "`debug/1`"),
        ("stderr", "`stderr/0`"),
        ("halt_error", "`halt_error/0`"),
        ("halt", "`halt/0`"),
        ("input_filename", "`input_filename/0`"),
        ("now | localtime", "`localtime/0`"),
        ("now | strflocaltime(\"%H\")", "`strflocaltime/1`"),
    ] {
        let error = compile_error(source);
        assert!(error.contains(name), "{source}: {error}");
    }
    let import = compile_error("import \"secrets\" as $s; .");
    assert!(import.contains("not available"), "{import}");
    let include = compile_error("include \"lib\"; .");
    assert!(include.contains("not available"), "{include}");
}

#[test]
fn compile_errors_have_line_and_column() {
    let error = Program::compile(".a |\n  .b | $ENV").expect_err("undefined");
    assert_eq!((error.line, error.column), (2, 8), "{error}");
    let error = Program::compile(".a | {").expect_err("unclosed");
    assert_eq!(error.line, 1, "{error}");
    let syntax = compile_error("if . then 1");
    assert!(syntax.contains("expected"), "{syntax}");
}

#[test]
fn a_program_yielding_forever_is_stopped_at_its_second_value() {
    let p = program("repeat(.)");
    assert_eq!(p.run_one(jaq_json::Val::Null), Err(RunError::Several));
}

fn config(yaml: &str) -> Config {
    load_str(yaml, Path::new("t.yaml"), &Default::default()).expect("a valid test config")
}

#[test]
fn the_route_program_runs_before_the_sink_program() {
    let config = config(
        r#"
sinks:
  a: { log: {}, transform: '.subject = .subject + "-sink"' }
  b: { log: {} }
routes:
  - { name: r, to: [a, b], transform: '.subject = .subject + "-route"' }
  - { name: plain, to: [a] }
"#,
    );
    let e = event("1");
    let run = |route: &str, sink: &str| {
        let steps = steps(&config, route, sink);
        apply_all(&e, &steps)
            .expect("transformed")
            .map(|e| e.subject.unwrap_or_default())
    };
    assert_eq!(run("r", "a").as_deref(), Some("o-7-route-sink"));
    assert_eq!(run("r", "b").as_deref(), Some("o-7-route"));
    assert_eq!(run("plain", "a").as_deref(), Some("o-7-sink"));
    assert_eq!(run("plain", "b"), None);
    // A delivery to a sink its route no longer names (a dead-letter target, say) runs only
    // the sink's program.
    let origins: Vec<Origin<'_>> = steps(&config, "plain", "a")
        .iter()
        .map(|s| s.origin)
        .collect();
    assert_eq!(origins, [Origin::Sink("a")]);
}

#[test]
fn a_failure_names_the_program_that_failed() {
    let config = config(
        r#"
sinks:
  a: { log: {}, transform: 'error("late")' }
routes:
  - { name: r, to: [a], transform: '.' }
"#,
    );
    let error = apply_all(&event("1"), &steps(&config, "r", "a")).expect_err("fails");
    assert_eq!(error.origin, "sink `a`");
    assert!(
        error
            .to_string()
            .starts_with("sink `a` transform: the program failed"),
        "{error}"
    );
}

#[test]
fn check_reports_the_yaml_path_and_position() {
    let yaml = r#"
sinks:
  hook: { log: {}, transform: '.a | env' }
routes:
  - { name: r, to: [hook], transform: ".x = $ENV.PATH" }
  - { name: s, to: [hook], transform: "{" }
"#;
    let error = load_str(yaml, Path::new("t.yaml"), &Default::default())
        .expect_err("invalid")
        .to_string();
    assert!(
        error.contains("sinks.hook.transform: jq: undefined filter `env/0` at line 1, column 6"),
        "{error}"
    );
    assert!(
        error.contains("routes[0].transform: jq: undefined variable `$ENV` at line 1, column 6"),
        "{error}"
    );
    assert!(
        error.contains("routes[1].transform: jq: expected"),
        "{error}"
    );
}
