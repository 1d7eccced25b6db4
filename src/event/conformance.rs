//! Runs every case of the cloudevents/conformance YAML vectors through the HTTP binding:
//! builds the request each case describes, decodes it and compares every attribute,
//! extension and the data; then checks that both encoders round-trip the decoded event.

use std::path::{Path, PathBuf};

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use bytes::Bytes;
use yaml_rust2::{Yaml, YamlLoader};

use super::http::{decode_binary, decode_structured, encode_binary, encode_structured};
use super::{percent, Event, ExtensionValue};

/// The vectors, copied into the repository with their license (`tests/data/conformance`).
const VECTORS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/data/conformance/cloudevents/yaml"
);

/// Cases in the vectors as copied (v1.yaml 2, v03.yaml 1, two minimum files of 6 each).
const EXPECTED_CASES: usize = 15;

/// One conformance case, with YAML scalars in their string form.
#[derive(Debug)]
struct Case {
    origin: String,
    structured: bool,
    attributes: Vec<(String, String)>,
    extensions: Vec<(String, String)>,
    transport: Vec<(String, String)>,
    data: Option<String>,
}

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            yaml_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            out.push(path);
        }
    }
}

fn scalar(yaml: &Yaml) -> String {
    match yaml {
        Yaml::String(s) | Yaml::Real(s) => s.clone(),
        Yaml::Integer(i) => i.to_string(),
        Yaml::Boolean(b) => b.to_string(),
        other => panic!("not a scalar: {other:?}"),
    }
}

fn pairs(yaml: &Yaml, skip: &str) -> Vec<(String, String)> {
    let Some(hash) = yaml.as_hash() else {
        assert!(yaml.is_badvalue() || yaml.is_null(), "not a map: {yaml:?}");
        return Vec::new();
    };
    hash.iter()
        .filter(|(k, _)| k.as_str() != Some(skip))
        .map(|(k, v)| (scalar(k), scalar(v)))
        .collect()
}

fn load_cases() -> Vec<Case> {
    let root = Path::new(VECTORS);
    assert!(root.is_dir(), "conformance vectors missing at {VECTORS}");
    let mut files = Vec::new();
    yaml_files(root, &mut files);
    files.sort();
    let mut cases = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).expect("readable vector file");
        let docs =
            YamlLoader::load_from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        for (n, doc) in docs.iter().enumerate() {
            let context = &doc["ContextAttributes"];
            cases.push(Case {
                origin: format!("{} #{n}", file.display()),
                structured: doc["Mode"].as_str() == Some("structured"),
                attributes: pairs(context, "Extensions"),
                extensions: pairs(&context["Extensions"], ""),
                transport: pairs(&doc["TransportExtensions"], ""),
                data: doc["Data"].as_str().map(str::to_owned),
            });
        }
    }
    cases
}

fn header(headers: &mut HeaderMap, name: &str, value: &str) {
    let name = HeaderName::from_bytes(name.as_bytes()).expect("vector header name");
    headers.insert(
        name,
        HeaderValue::from_str(value).expect("vector header value"),
    );
}

fn send_binary(case: &Case) -> Event {
    let mut headers = HeaderMap::new();
    for (name, value) in &case.attributes {
        match name.as_str() {
            "datacontenttype" => header(&mut headers, "content-type", value),
            _ => header(&mut headers, &format!("ce-{name}"), &percent::encode(value)),
        }
    }
    for (name, value) in &case.extensions {
        header(&mut headers, &format!("ce-{name}"), &percent::encode(value));
    }
    for (name, value) in &case.transport {
        header(&mut headers, name, value);
    }
    let body = Bytes::from(case.data.clone().unwrap_or_default());
    decode_binary(&headers, body).unwrap_or_else(|e| panic!("{}: {e}", case.origin))
}

fn send_structured(case: &Case) -> Event {
    let mut object = serde_json::Map::new();
    for (name, value) in case.attributes.iter().chain(&case.extensions) {
        object.insert(name.clone(), value.clone().into());
    }
    if let Some(data) = &case.data {
        let value = serde_json::from_str(data).unwrap_or_else(|_| data.clone().into());
        object.insert("data".into(), value);
    }
    let body = serde_json::to_vec(&object).expect("serializable");
    decode_structured(&body).unwrap_or_else(|e| panic!("{}: {e}", case.origin))
}

fn attribute<'a>(event: &'a Event, name: &str) -> Option<&'a str> {
    match name {
        "specversion" => Some(&event.specversion),
        "id" => Some(&event.id),
        "source" => Some(&event.source),
        "type" => Some(&event.ty),
        "datacontenttype" => event.datacontenttype.as_deref(),
        "dataschema" | "schemaurl" => event.dataschema.as_deref(),
        "subject" => event.subject.as_deref(),
        "time" => event.time.as_deref(),
        other => panic!("unexpected attribute {other}"),
    }
}

fn check(case: &Case, event: &Event) {
    let origin = &case.origin;
    for (name, value) in &case.attributes {
        assert_eq!(
            attribute(event, name),
            Some(value.as_str()),
            "{origin}: {name}"
        );
    }
    let expected: Vec<_> = case
        .extensions
        .iter()
        .map(|(n, v)| (n.clone(), ExtensionValue::String(v.clone())))
        .collect();
    assert_eq!(event.extensions, expected, "{origin}: extensions");
    let data = event.data.as_deref();
    match (&case.data, case.structured) {
        (None, _) => assert_eq!(data, None, "{origin}: data"),
        (Some(want), false) => assert_eq!(data, Some(want.as_bytes()), "{origin}: data"),
        (Some(want), true) => {
            let want: serde_json::Value = serde_json::from_str(want).expect("JSON data");
            let got: serde_json::Value = serde_json::from_slice(data.expect("data")).expect("JSON");
            assert_eq!(got, want, "{origin}: data");
        }
    }
    let mut headers = HeaderMap::new();
    let body = encode_binary(event, &mut headers);
    assert_eq!(
        &decode_binary(&headers, body).expect("binary round trip"),
        event,
        "{origin}"
    );
    let structured = encode_structured(event);
    let again = decode_structured(&structured).expect("structured round trip");
    if event.data_is_json() && event.data.is_some() {
        let json = |e: &Event| {
            serde_json::from_slice::<serde_json::Value>(e.data.as_deref().unwrap_or_default()).ok()
        };
        assert_eq!(json(&again), json(event), "{origin}: structured data");
        assert_eq!(
            Event {
                data: None,
                ..again
            },
            Event {
                data: None,
                ..event.clone()
            },
            "{origin}"
        );
    } else {
        assert_eq!(&again, event, "{origin}: structured round trip");
    }
}

#[test]
fn every_conformance_vector_decodes_as_described() {
    let cases = load_cases();
    assert_eq!(cases.len(), EXPECTED_CASES, "cases found under {VECTORS}");
    let structured = cases.iter().filter(|c| c.structured).count();
    assert_eq!(structured, 1, "structured cases");
    for case in &cases {
        let event = if case.structured {
            send_structured(case)
        } else {
            send_binary(case)
        };
        check(case, &event);
    }
}
