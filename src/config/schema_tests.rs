//! `schema/routes.schema.json` and the loader agree on every key of `routes.yaml`.
//!
//! The loader has no serde structs to derive a key list from: each mapping is read against a
//! [`Shape`] table, whose `keys` are exactly what it accepts (anything else is "unknown key").
//! So the loader's key list *is* those tables, and [`PLACES`] puts each one at its YAML path.
//! The tests check both directions:
//!
//! - every `const …: Shape` in `src/config/` appears in [`PLACES`] (found by reading the
//!   sources, so a new table cannot be left out), and every closed mapping of the schema
//!   (`additionalProperties: false`) sits at a path of [`PLACES`];
//! - at each path, the schema's `properties` are exactly the shape's keys;
//! - every key, set to the schema's `default` (or its first `examples` value) inside a small
//!   valid document, is accepted by the loader and by the schema: the names are right, and
//!   the values an editor offers really load.
//!
//! That invalid documents are refused by both, and that the shipped configurations pass
//! both, is tested in `tests/it/schema.rs`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde_json::{json, Value};

use super::model::{self, Shape};
use super::{
    admin, delivery, load_str, nats, sagas, schedules, server_tls, sources, telemetry, SCHEMA,
};

/// One mapping of `routes.yaml`: where it is, the loader's table for it, and documents that
/// hold a valid instance of it (`*` is the entry named `s`, `[]` the first item).
struct Place {
    /// YAML path: `sinks.*.http`, `routes[].match`.
    path: &'static str,
    /// The table's name as `module::CONST`.
    name: &'static str,
    shape: &'static Shape,
    /// Valid documents holding the mapping; a key passes when it loads in one of them.
    skeletons: &'static [&'static str],
    /// Keys of which the mapping holds exactly one: the others are removed when one is set.
    exclusive: &'static [&'static str],
}

const fn place(path: &'static str, name: &'static str, shape: &'static Shape) -> Place {
    Place {
        path,
        name,
        shape,
        skeletons: &[],
        exclusive: &[],
    }
}

const SINK_S: &str = r#"{"sinks": {"s": {"log": {}}}}"#;
const HTTP_S: &str = r#"{"sinks": {"s": {"http": {"url": "http://127.0.0.1:9/"}}}}"#;
const NATS_S: &str = r#"{"sinks": {"s": {"nats": {"subject": "events"}}}}"#;
const ROUTE_0: &str = r#"{"routes": [{"name": "r", "to": ["archive"]}]}"#;
const SAGA_0: &str = r#"{"sagas": [{"name": "n", "steps": [{"name": "a", "to": "archive"}]}]}"#;
const SCHEDULE_0: &str = r#"{"schedules": [{"name": "n", "cron": "0 * * * * *",
    "event": {"type": "t", "source": "/s"}}]}"#;

/// Every mapping with fixed keys. Skeletons left empty mark mappings whose values name files
/// the loader reads at once (TLS); their keys are compared by name only here, and loaded by
/// the TLS tests with real certificates.
const PLACES: &[Place] = &[
    Place {
        skeletons: &["{}"],
        ..place("", "model::ROOT", &model::ROOT)
    },
    Place {
        skeletons: &[r#"{"spool": {}}"#],
        ..place("spool", "model::SPOOL", &model::SPOOL)
    },
    Place {
        skeletons: &[r#"{"spool": {"backend": "nats", "nats": {}}}"#],
        ..place("spool.nats", "nats::SPOOL", &nats::SPOOL)
    },
    Place {
        skeletons: &[r#"{"ingress": {}}"#],
        ..place("ingress", "model::INGRESS", &model::INGRESS)
    },
    place("ingress.tls", "server_tls::TLS", &server_tls::TLS),
    Place {
        skeletons: &[r#"{"ingress": {"auth": [{"bearer": "t"}]}}"#],
        exclusive: &["sas_key", "bearer", "sas_token_key", "standard_webhooks"],
        ..place("ingress.auth[]", "model::AUTH", &model::AUTH)
    },
    Place {
        skeletons: &[r#"{"ingress": {"auth": [{"standard_webhooks":
            {"secrets": ["${INBOUND_WHSEC}"]}}]}}"#],
        ..place(
            "ingress.auth[].standard_webhooks",
            "model::STANDARD_WEBHOOKS",
            &model::STANDARD_WEBHOOKS,
        )
    },
    Place {
        skeletons: &[
            SINK_S,
            r#"{"sinks": {"s": {"log": {}, "circuit_breaker": {}}}}"#,
        ],
        exclusive: model::SINK_KINDS,
        ..place("sinks.*", "model::SINK", &model::SINK)
    },
    Place {
        skeletons: &[r#"{"sinks": {"s": {"log": {}, "concurrency": {}}}}"#],
        ..place("sinks.*.concurrency", "model::ADAPTIVE", &model::ADAPTIVE)
    },
    Place {
        skeletons: &[HTTP_S],
        ..place("sinks.*.http", "model::HTTP", &model::HTTP)
    },
    place("sinks.*.http.tls", "model::HTTP_TLS", &model::HTTP_TLS),
    Place {
        skeletons: &[r#"{"sinks": {"s": {"http": {"url": "http://127.0.0.1:9/",
            "sign": {"hmac": {"header": "X-S", "secret": "k"}}}}}}"#],
        exclusive: &["standard_webhooks", "hmac"],
        ..place("sinks.*.http.sign", "model::SIGN", &model::SIGN)
    },
    Place {
        skeletons: &[r#"{"sinks": {"s": {"http": {"url": "http://127.0.0.1:9/",
            "sign": {"standard_webhooks": {"secrets": ["${PARTNER_WHSEC}"]}}}}}}"#],
        ..place(
            "sinks.*.http.sign.standard_webhooks",
            "model::STANDARD_WEBHOOKS",
            &model::STANDARD_WEBHOOKS,
        )
    },
    Place {
        skeletons: &[r#"{"sinks": {"s": {"http": {"url": "http://127.0.0.1:9/",
            "sign": {"hmac": {"header": "X-S", "secret": "k"}}}}}}"#],
        ..place("sinks.*.http.sign.hmac", "model::HMAC", &model::HMAC)
    },
    Place {
        skeletons: &[SINK_S],
        ..place("sinks.*.log", "model::LOG", &model::LOG)
    },
    Place {
        skeletons: &[r#"{"sinks": {"s": {"file": {"path": "./events.jsonl"}}}}"#],
        ..place("sinks.*.file", "model::FILE", &model::FILE)
    },
    Place {
        skeletons: &[r#"{"sinks": {"s": {"exec": {"command": ["true"]}}}}"#],
        ..place("sinks.*.exec", "model::EXEC", &model::EXEC)
    },
    Place {
        skeletons: &[r#"{"sinks": {"s": {"handler": {"name": "h"}}}}"#],
        ..place("sinks.*.handler", "model::HANDLER", &model::HANDLER)
    },
    Place {
        skeletons: &[NATS_S],
        ..place("sinks.*.nats", "nats::SINK", &nats::SINK)
    },
    Place {
        skeletons: &[r#"{"sinks": {"s": {"log": {}, "retry": {}}}}"#],
        ..place("sinks.*.retry", "model::RETRY", &model::RETRY)
    },
    Place {
        skeletons: &[r#"{"sinks": {"s": {"log": {}, "batch": {}}}}"#],
        ..place("sinks.*.batch", "delivery::BATCH", &delivery::BATCH)
    },
    Place {
        skeletons: &[r#"{"sinks": {"s": {"log": {}, "circuit_breaker": {}}}}"#],
        ..place(
            "sinks.*.circuit_breaker",
            "delivery::BREAKER",
            &delivery::BREAKER,
        )
    },
    Place {
        skeletons: &[ROUTE_0],
        ..place("routes[]", "model::ROUTE", &model::ROUTE)
    },
    Place {
        skeletons: &[r#"{"routes": [{"name": "r", "to": ["archive"], "match": {}}]}"#],
        ..place("routes[].match", "model::MATCH", &model::MATCH)
    },
    Place {
        skeletons: &[r#"{"routes": [{"name": "r", "to": ["archive"],
            "match": {"subject": {"begins_with": "/"}}}]}"#],
        ..place("routes[].match.subject", "model::SUBJECT", &model::SUBJECT)
    },
    Place {
        skeletons: &[
            r#"{"routes": [{"name": "r", "to": ["archive"], "match": {"advanced":
                [{"key": "data.n", "op": "NumberLessThan", "value": 1}]}}]}"#,
            r#"{"routes": [{"name": "r", "to": ["archive"], "match": {"advanced":
                [{"key": "data.s", "op": "StringIn", "values": ["a"]}]}}]}"#,
        ],
        ..place(
            "routes[].match.advanced[]",
            "model::ADVANCED",
            &model::ADVANCED,
        )
    },
    Place {
        skeletons: &[SCHEDULE_0],
        ..place("schedules[]", "schedules::SCHEDULE", &schedules::SCHEDULE)
    },
    Place {
        skeletons: &[SAGA_0],
        ..place("sagas[]", "sagas::SAGA", &sagas::SAGA)
    },
    Place {
        skeletons: &[SAGA_0],
        ..place("sagas[].steps[]", "sagas::STEP", &sagas::STEP)
    },
    Place {
        skeletons: &[
            r#"{"sagas": [{"name": "n", "steps": [{"name": "a", "to": "archive"}],
            "match": {}}]}"#,
        ],
        ..place("sagas[].match", "model::MATCH", &model::MATCH)
    },
    Place {
        skeletons: &[
            r#"{"sagas": [{"name": "n", "steps": [{"name": "a", "to": "archive"}],
            "match": {"subject": {"begins_with": "/"}}}]}"#,
        ],
        ..place("sagas[].match.subject", "model::SUBJECT", &model::SUBJECT)
    },
    Place {
        skeletons: &[
            r#"{"sagas": [{"name": "n", "steps": [{"name": "a", "to": "archive"}],
                "match": {"advanced": [{"key": "data.n", "op": "NumberLessThan", "value": 1}]}}]}"#,
            r#"{"sagas": [{"name": "n", "steps": [{"name": "a", "to": "archive"}],
                "match": {"advanced": [{"key": "data.s", "op": "StringIn", "values": ["a"]}]}}]}"#,
        ],
        ..place(
            "sagas[].match.advanced[]",
            "model::ADVANCED",
            &model::ADVANCED,
        )
    },
    Place {
        skeletons: &[SCHEDULE_0],
        ..place("schedules[].event", "schedules::EVENT", &schedules::EVENT)
    },
    Place {
        skeletons: &[r#"{"admin": {}}"#],
        ..place("admin", "admin::ADMIN", &admin::ADMIN)
    },
    place("admin.tls", "server_tls::TLS", &server_tls::TLS),
    Place {
        skeletons: &[r#"{"telemetry": {}}"#],
        ..place("telemetry", "telemetry::TELEMETRY", &telemetry::TELEMETRY)
    },
    Place {
        skeletons: &[
            r#"{"sources": {"s": {"preset": "stripe", "secret": "k"}}}"#,
            r#"{"sources": {"s": {"preset": "hmac", "hmac": {"header": "X-S", "secret": "k"},
                "event": {"type": "t", "source": "/s"}}}}"#,
        ],
        ..place("sources.*", "sources::SOURCE", &sources::SOURCE)
    },
    Place {
        skeletons: &[
            r#"{"sources": {"s": {"preset": "hmac", "hmac": {"header": "X-S",
            "secret": "k"}, "event": {"type": "t", "source": "/s"}}}}"#,
        ],
        ..place("sources.*.hmac", "model::HMAC", &model::HMAC)
    },
    Place {
        skeletons: &[r#"{"sources": {"s": {"preset": "github", "secret": "k", "event": {}}}}"#],
        ..place("sources.*.event", "sources::EVENT", &sources::EVENT)
    },
];

/// Keys whose example names files the loader reads at once; loaded by the TLS tests.
const READS_FILES: &[&str] = &["ingress.tls", "admin.tls"];

/// Sinks every skeleton defines, so that examples naming a sink (`to`, `dead_letter`,
/// `fallback`) name a real one.
const EXAMPLE_SINKS: &[&str] = &["orders-api", "archive", "dead-letters", "standby"];

fn schema() -> Value {
    serde_json::from_str(SCHEMA).expect("schema/routes.schema.json is JSON")
}

fn validator(schema: &Value) -> jsonschema::Validator {
    jsonschema::draft7::new(schema).expect("the schema is a valid draft-07 schema")
}

/// Follows `$ref` (local `#/definitions/…` only).
fn deref<'a>(root: &'a Value, mut node: &'a Value) -> &'a Value {
    loop {
        if let Some(target) = node.get("$ref").and_then(Value::as_str) {
            let pointer = target.strip_prefix('#').expect("local reference");
            node = root.pointer(pointer).expect("reference resolves");
            continue;
        }
        // A value that is a scalar or a mapping (`concurrency: 16 | { min, max }`): its
        // mapping form is the one with properties.
        let mapping = node
            .get("anyOf")
            .and_then(Value::as_array)
            .and_then(|forms| forms.iter().find(|f| f.get("properties").is_some()));
        match mapping {
            Some(form) => node = form,
            None => return node,
        }
    }
}

/// The schema of the mapping at a YAML path of [`PLACES`].
fn schema_at<'a>(root: &'a Value, path: &str) -> &'a Value {
    let mut node = root;
    for segment in segments(path) {
        node = deref(root, node);
        node = match segment {
            "*" => &node["additionalProperties"],
            "[]" => &node["items"],
            name => &node["properties"][name],
        };
        assert!(
            !node.is_null(),
            "the schema has nothing at {path} ({segment})"
        );
    }
    deref(root, node)
}

/// `sinks.*.http` → `sinks`, `*`, `http`; `routes[].match` → `routes`, `[]`, `match`.
fn segments(path: &str) -> Vec<&str> {
    path.split('.')
        .filter(|s| !s.is_empty())
        .flat_map(|s| match s.strip_suffix("[]") {
            Some(name) => vec![name, "[]"],
            None => vec![s],
        })
        .collect()
}

fn join(path: &str, segment: &str) -> String {
    match (path, segment) {
        (_, "[]") => format!("{path}[]"),
        ("", _) => segment.to_owned(),
        _ => format!("{path}.{segment}"),
    }
}

/// The YAML path of every closed mapping (`additionalProperties: false`) of the schema.
fn closed_mappings(root: &Value, node: &Value, path: &str, out: &mut BTreeSet<String>) {
    let node = deref(root, node);
    if node.get("additionalProperties") == Some(&Value::Bool(false)) {
        out.insert(path.to_owned());
    }
    if let Some(properties) = node.get("properties").and_then(Value::as_object) {
        for (key, child) in properties {
            closed_mappings(root, child, &join(path, key), out);
        }
    }
    if let Some(child) = node.get("additionalProperties").filter(|v| v.is_object()) {
        closed_mappings(root, child, &join(path, "*"), out);
    }
    if let Some(child) = node.get("items") {
        closed_mappings(root, child, &join(path, "[]"), out);
    }
}

/// Every `const NAME: Shape` of `src/config/`, as `module::NAME`.
fn shape_consts_in_sources() -> BTreeSet<String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/config");
    let mut names = BTreeSet::new();
    for entry in std::fs::read_dir(&dir).expect("read src/config") {
        let path = entry.expect("directory entry").path();
        let module = path.file_stem().expect("file name").to_string_lossy();
        let text = std::fs::read_to_string(&path).expect("read source");
        for line in text.lines() {
            let declared = line.split_once("const ").and_then(|(_, rest)| {
                let (name, ty) = rest.split_once(':')?;
                ty.trim_start().starts_with("Shape = Shape").then_some(name)
            });
            if let Some(name) = declared {
                names.insert(format!("{module}::{name}"));
            }
        }
    }
    names
}

#[test]
fn every_shape_of_the_loader_has_a_place() {
    let listed: BTreeSet<String> = PLACES.iter().map(|p| p.name.to_owned()).collect();
    let declared = shape_consts_in_sources();
    assert!(declared.len() > 20, "found only {declared:?}");
    assert_eq!(declared, listed, "Shape tables of src/config vs. PLACES");
}

#[test]
fn every_closed_mapping_of_the_schema_is_a_place() {
    let root = schema();
    let mut closed = BTreeSet::new();
    closed_mappings(&root, &root, "", &mut closed);
    let places: BTreeSet<String> = PLACES.iter().map(|p| p.path.to_owned()).collect();
    assert_eq!(closed, places, "closed mappings of the schema vs. PLACES");
}

#[test]
fn the_schema_names_exactly_the_keys_the_loader_reads() {
    let root = schema();
    for place in PLACES {
        let node = schema_at(&root, place.path);
        let in_schema: BTreeSet<&str> = node["properties"]
            .as_object()
            .unwrap_or_else(|| panic!("{}: no properties", place.path))
            .keys()
            .map(String::as_str)
            .collect();
        let in_loader: BTreeSet<&str> = place.shape.keys.split_whitespace().collect();
        assert_eq!(in_schema, in_loader, "keys at `{}`", place.path);
        assert_eq!(
            place.shape.later, "",
            "{}: a later key needs a schema decision",
            place.name
        );
    }
}

#[test]
fn every_key_has_a_description_and_a_default_or_example() {
    let root = schema();
    for place in PLACES {
        let properties = schema_at(&root, place.path)["properties"]
            .as_object()
            .expect("properties");
        for (key, property) in properties {
            let at = join(place.path, key);
            let description = property["description"].as_str().unwrap_or_default();
            assert!(!description.is_empty(), "{at}: no description");
            assert!(!description.contains('\n'), "{at}: description of one line");
            assert!(sample(property).is_some(), "{at}: no default or examples");
        }
    }
}

/// The value an editor offers for a key: its `default`, else its first example.
fn sample(property: &Value) -> Option<Value> {
    property
        .get("default")
        .or_else(|| property.get("examples").and_then(|e| e.get(0)))
        .cloned()
}

/// `${NAME}` references get a value that fits every use: a Standard Webhooks secret for
/// names with `WHSEC`, else text that is also valid base64 (an Event Grid key).
fn variables(text: &str) -> BTreeMap<String, String> {
    text.split("${")
        .skip(1)
        .filter_map(|rest| rest.split_once('}').map(|(name, _)| name.to_owned()))
        .map(|name| {
            let value = if name.contains("WHSEC") {
                "whsec_MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3"
            } else {
                "c2VjcmV0LWtleS0wMTIz"
            };
            (name, value.to_owned())
        })
        .collect()
}

/// The mapping at `path` inside `doc` (`*` is the entry `s`, `[]` the first item).
fn mapping_at<'a>(doc: &'a mut Value, path: &str) -> &'a mut serde_json::Map<String, Value> {
    let mut node = doc;
    for segment in segments(path) {
        node = match segment {
            "*" => &mut node["s"],
            "[]" => &mut node[0],
            name => &mut node[name],
        };
    }
    node.as_object_mut().expect("skeleton holds the mapping")
}

/// A skeleton with the sinks that examples name.
fn prepared(skeleton: &str) -> Value {
    let mut doc: Value = serde_json::from_str(skeleton).expect("skeleton is JSON");
    let sinks = doc
        .as_object_mut()
        .expect("skeleton is a mapping")
        .entry("sinks")
        .or_insert_with(|| json!({}));
    for name in EXAMPLE_SINKS {
        sinks[*name] = json!({"log": {}});
    }
    doc
}

/// A skeleton with `key` set to its sample (and the keys it depends on set to theirs).
fn with_key(skeleton: &str, place: &Place, node: &Value, key: &str) -> Value {
    let mut doc = prepared(skeleton);
    let mapping = mapping_at(&mut doc, place.path);
    if place.exclusive.contains(&key) {
        mapping.retain(|k, _| !place.exclusive.contains(&k.as_str()));
    }
    let needed = node["dependencies"][key]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let keys = needed.iter().filter_map(Value::as_str).chain([key]);
    for k in keys {
        let value = sample(&node["properties"][k]).expect("a sample");
        mapping.insert(k.to_owned(), value);
    }
    doc
}

/// Whether the loader accepts `doc`, or its errors.
fn load(doc: &Value) -> Result<(), String> {
    let text = doc.to_string();
    load_str(&text, Path::new("schema-test.yaml"), &variables(&text))
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[test]
fn every_key_with_its_default_or_example_loads_and_validates() {
    let root = schema();
    let validator = validator(&root);
    let mut failures = Vec::new();
    for place in PLACES.iter().filter(|p| !p.skeletons.is_empty()) {
        let node = schema_at(&root, place.path);
        for skeleton in place.skeletons {
            let doc = prepared(skeleton);
            assert_eq!(load(&doc), Ok(()), "skeleton of {}: {doc}", place.path);
            assert!(
                validator.is_valid(&doc),
                "skeleton of {}: {doc}",
                place.path
            );
        }
        for key in place.shape.keys.split_whitespace() {
            let at = join(place.path, key);
            if READS_FILES.contains(&at.as_str()) {
                continue;
            }
            let tries: Vec<(Value, Result<(), String>, Vec<String>)> = place
                .skeletons
                .iter()
                .map(|s| {
                    let doc = with_key(s, place, node, key);
                    let loaded = load(&doc);
                    let errors = validator.iter_errors(&doc).map(|e| e.to_string()).collect();
                    (doc, loaded, errors)
                })
                .collect();
            if !tries.iter().any(|(_, l, e)| l.is_ok() && e.is_empty()) {
                failures.push(format!("{at}: {tries:#?}"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
