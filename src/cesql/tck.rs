//! Runs every case of the CESQL v1 test compatibility kit (copied with its license into
//! `tests/data/conformance/cesql`): parse errors, values and evaluation errors.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::Path;

use yaml_rust2::parser::{Event, EventReceiver, Parser};
use yaml_rust2::{Yaml, YamlLoader};

use super::value::parse_bool;
use super::{Attributes, CompileErrorKind, ErrorKind, Expr, Value};

const KIT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/conformance/cesql");

/// Cases in the kit as copied (18 files).
const EXPECTED_CASES: usize = 275;

/// An event as the kit describes it: attribute names to values.
struct Attrs(BTreeMap<String, Value<'static>>);

impl Attributes for Attrs {
    fn attribute(&self, name: &str) -> Option<Value<'_>> {
        self.0.get(name).cloned()
    }
}

fn value(yaml: &Yaml) -> Value<'static> {
    match yaml {
        Yaml::Boolean(b) => Value::Bool(*b),
        Yaml::Integer(i) => Value::Int(i32::try_from(*i).expect("32-bit integer in the kit")),
        Yaml::String(s) | Yaml::Real(s) => Value::Str(Cow::Owned(s.clone())),
        other => panic!("not a scalar: {other:?}"),
    }
}

fn attributes(map: &Yaml) -> BTreeMap<String, Value<'static>> {
    let Some(hash) = map.as_hash() else {
        return BTreeMap::new();
    };
    hash.iter()
        .map(|(k, v)| (k.as_str().expect("attribute name").to_owned(), value(v)))
        .collect()
}

/// The kit lets a runner pick any valid event when a case gives none.
fn event(case: &Yaml) -> Attrs {
    if !case["event"].is_badvalue() {
        return Attrs(attributes(&case["event"]));
    }
    let mut attrs: BTreeMap<String, Value<'static>> = [
        ("specversion", "1.0"),
        ("id", "123"),
        ("source", "/tck/source"),
        ("type", "io.tck.event"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), Value::Str(Cow::Borrowed(v))))
    .collect();
    attrs.extend(attributes(&case["eventOverrides"]));
    Attrs(attrs)
}

#[derive(Debug, PartialEq, Eq)]
enum Expected {
    Compile(CompileErrorKind),
    Eval(ErrorKind),
}

fn expected_error(case: &Yaml) -> Option<Expected> {
    let name = case["error"].as_str()?;
    Some(match name {
        "parse" => Expected::Compile(CompileErrorKind::Parse),
        "missingFunction" => Expected::Compile(CompileErrorKind::MissingFunction),
        "math" => Expected::Eval(ErrorKind::Math),
        "cast" => Expected::Eval(ErrorKind::Cast),
        "missingAttribute" => Expected::Eval(ErrorKind::MissingAttribute),
        "functionEvaluation" => Expected::Eval(ErrorKind::FunctionEvaluation),
        other => panic!("unknown error kind {other}"),
    })
}

/// Compares a value with the expected one; an unquoted `FALSE` in the kit is a boolean.
fn same(actual: &Value<'_>, expected: &Value<'_>) -> bool {
    match (actual, expected) {
        (Value::Bool(a), Value::Str(e)) => parse_bool(e) == Some(*a),
        _ => actual == expected,
    }
}

/// The `expression` values of a file as written: a plain scalar such as `TRUE` loads as a
/// boolean, which would lose its spelling.
#[derive(Default)]
struct RawExpressions {
    key: bool,
    values: Vec<String>,
}

impl EventReceiver for RawExpressions {
    fn on_event(&mut self, event: Event) {
        if let Event::Scalar(text, ..) = event {
            if std::mem::take(&mut self.key) {
                self.values.push(text);
            } else {
                self.key = text == "expression";
            }
        }
    }
}

fn raw_expressions(text: &str) -> Vec<String> {
    let mut raw = RawExpressions::default();
    Parser::new_from_str(text)
        .load(&mut raw, false)
        .expect("valid YAML");
    raw.values
}

/// Runs one case; `Err` says how it failed.
fn run(case: &Yaml, source: &str) -> Result<(), String> {
    let expected = expected_error(case);
    let expr = match Expr::parse(source) {
        Err(e) if expected == Some(Expected::Compile(e.kind)) => return Ok(()),
        Err(e) => {
            return Err(format!(
                "compile error {e} ({:?}), expected {expected:?}",
                e.kind
            ))
        }
        Ok(expr) => expr,
    };
    let attrs = event(case);
    let done = expr.evaluate(&attrs);
    let got = done.error.map(|e| Expected::Eval(e.kind));
    if got != expected {
        return Err(format!(
            "error {got:?} ({:?}), expected {expected:?}; value {}",
            done.error.map(|e| e.to_string()),
            done.value
        ));
    }
    if !case["result"].is_badvalue() {
        let want = value(&case["result"]);
        if !same(&done.value, &want) {
            return Err(format!("value {}, expected {want}", done.value));
        }
    }
    Ok(())
}

#[test]
fn every_case_of_the_test_kit_passes() {
    let mut files: Vec<_> = std::fs::read_dir(Path::new(KIT))
        .expect("the test kit is in tests/data/conformance/cesql")
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    let mut cases = 0;
    let mut failures = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).expect("readable kit file");
        let docs = YamlLoader::load_from_str(&text).expect("valid YAML");
        let tests = docs[0]["tests"].as_vec().expect("a tests list");
        let sources = raw_expressions(&text);
        assert_eq!(sources.len(), tests.len(), "one expression per case");
        for (case, expr) in tests.iter().zip(&sources) {
            cases += 1;
            if let Err(why) = run(case, expr) {
                let name = case["name"].as_str().unwrap_or("?");
                let file = file.file_name().unwrap_or_default().to_string_lossy();
                failures.push(format!("{file}: {name}: `{expr}`: {why}"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {cases} failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert_eq!(cases, EXPECTED_CASES, "cases run");
}
