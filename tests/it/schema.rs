//! `schema/routes.schema.json` against the loader: every configuration the project ships
//! (examples, the root `routes.yaml`, `deploy/`, README blocks) validates and loads; invalid
//! documents are refused by both; `switchyard schema` prints the file.
//!
//! YAML is read with yaml-rust2, as an editor sees the file (before `${VAR}` is read). That
//! the schema's keys equal the loader's is tested in `src/config/schema_tests.rs`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Map, Number, Value};
use yaml_rust2::{Yaml, YamlLoader};

const BIN: &str = env!("CARGO_BIN_EXE_switchyard");

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn validator() -> jsonschema::Validator {
    let schema: Value =
        serde_json::from_str(&read(&repo("schema/routes.schema.json"))).expect("schema is JSON");
    jsonschema::draft7::new(&schema).expect("a valid draft-07 schema")
}

/// A YAML value as JSON, the way the schema sees it.
fn json(yaml: &Yaml) -> Value {
    match yaml {
        Yaml::Null => Value::Null,
        Yaml::Boolean(b) => Value::Bool(*b),
        Yaml::Integer(i) => Value::from(*i),
        Yaml::Real(text) => {
            let real: f64 = text.parse().expect("a YAML real");
            Number::from_f64(real).map_or(Value::Null, Value::Number)
        }
        Yaml::String(s) => Value::String(s.clone()),
        Yaml::Array(items) => Value::Array(items.iter().map(json).collect()),
        Yaml::Hash(hash) => {
            let map: Map<String, Value> = hash
                .iter()
                .map(|(k, v)| {
                    let key = match k {
                        Yaml::String(s) => s.clone(),
                        Yaml::Integer(i) => i.to_string(),
                        other => panic!("unexpected key {other:?}"),
                    };
                    (key, json(v))
                })
                .collect();
            Value::Object(map)
        }
        other => panic!("unexpected YAML value {other:?}"),
    }
}

fn parse(text: &str) -> Value {
    let docs = YamlLoader::load_from_str(text).expect("valid YAML");
    docs.first().map_or(Value::Null, json)
}

/// Values for the `${NAME}`s of `text` that fit how the shipped files use them.
fn variables(text: &str) -> BTreeMap<String, String> {
    text.split("${")
        .skip(1)
        .filter_map(|rest| rest.split_once('}'))
        .map(|(name, _)| name.split(":-").next().unwrap_or(name).to_owned())
        .map(|name| {
            let value = if name.contains("WHSEC") {
                "whsec_MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3"
            } else if name.ends_with("NATS_URL") {
                "nats://127.0.0.1:4222"
            } else if name.ends_with("URL") {
                "http://127.0.0.1:9/events"
            } else {
                "c2VjcmV0LWtleS0wMTIz"
            };
            (name, value.to_owned())
        })
        .collect()
}

fn schema_errors(validator: &jsonschema::Validator, doc: &Value) -> Vec<String> {
    validator
        .iter_errors(doc)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect()
}

fn load(text: &str, origin: &str) -> Result<(), String> {
    switchyard::config::load_str(text, Path::new(origin), &variables(text))
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Every shipped configuration file, as (name, text).
fn shipped_files() -> Vec<(String, String)> {
    let mut names: Vec<String> = std::fs::read_dir(repo("examples/configs"))
        .expect("examples/configs")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .map(|p| {
            format!(
                "examples/configs/{}",
                p.file_name().expect("name").to_string_lossy()
            )
        })
        .collect();
    names.sort();
    names.extend(
        [
            "routes.yaml",
            "deploy/image-routes.yaml",
            "deploy/compose/routes.yaml",
        ]
        .map(String::from),
    );
    let mut files: Vec<(String, String)> = names
        .into_iter()
        .map(|n| (n.clone(), read(&repo(&n))))
        .collect();
    files.extend(configmaps(&repo("deploy/kubernetes")));
    files
}

/// The `routes.yaml` of every Kubernetes ConfigMap under `dir`.
fn configmaps(dir: &Path) -> Vec<(String, String)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).expect("deploy/kubernetes") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            found.extend(configmaps(&path));
        } else if path.file_name().is_some_and(|n| n == "configmap.yaml") {
            let manifest = &YamlLoader::load_from_str(&read(&path)).expect("YAML")[0];
            let text = manifest["data"]["routes.yaml"]
                .as_str()
                .expect("data.routes.yaml");
            let name = path.strip_prefix(repo("")).expect("in the repository");
            found.push((format!("{}", name.display()), text.to_owned()));
        }
    }
    found
}

/// The ```yaml blocks of the README, numbered by their line.
fn readme_blocks() -> Vec<(String, String)> {
    let readme = read(&repo("README.md"));
    let mut blocks = Vec::new();
    let mut open: Option<(usize, String)> = None;
    for (i, line) in readme.lines().enumerate() {
        match (&mut open, line.trim_end()) {
            (None, "```yaml") => open = Some((i + 1, String::new())),
            (Some((at, text)), "```") => {
                blocks.push((format!("README.md:{at}"), std::mem::take(text)));
                open = None;
            }
            (Some((_, text)), _) => {
                text.push_str(line);
                text.push('\n');
            }
            (None, _) => {}
        }
    }
    blocks
}

#[test]
fn every_shipped_configuration_validates_and_loads() {
    let validator = validator();
    let files = shipped_files();
    assert!(files.len() >= 14, "found only {}", files.len());
    for (name, text) in files {
        let errors = schema_errors(&validator, &parse(&text));
        assert!(errors.is_empty(), "{name} against the schema: {errors:#?}");
        assert_eq!(load(&text, &name), Ok(()), "{name} through the loader");
    }
}

/// A README block with both `sinks` and `routes` is a whole configuration and must load; the
/// others are fragments of one (a section, or files the reader provides) and must validate.
#[test]
fn every_readme_yaml_block_validates_and_whole_ones_load() {
    let validator = validator();
    let mut whole = 0;
    for (name, text) in readme_blocks() {
        let doc = parse(&text);
        let errors = schema_errors(&validator, &doc);
        assert!(errors.is_empty(), "{name} against the schema: {errors:#?}");
        if doc.get("sinks").is_some() && doc.get("routes").is_some() {
            assert_eq!(load(&text, &name), Ok(()), "{name} through the loader");
            whole += 1;
        }
    }
    assert!(
        whole >= 6,
        "only {whole} whole configurations in the README"
    );
}

/// Invalid documents: (what, YAML, the path the loader names).
const INVALID: &[(&str, &str, &str)] = &[
    ("unknown top-level key", "listn: 0.0.0.0:8080\n", "listn"),
    ("unknown spool key", "spool: { backend: memory, pth: ./x }\n", "spool.pth"),
    ("unknown key in spool.nats", "spool: { backend: nats, nats: { urls: nats://a:4222 } }\n", "spool.nats.urls"),
    ("unknown ingress key", "ingress: { max_body: 1MiB }\n", "ingress.max_body"),
    ("unknown key in an auth entry", "ingress: { auth: [ { token: t } ] }\n", "ingress.auth[0]"),
    ("unknown sink key", "sinks: { s: { log: {}, retries: {} } }\n", "sinks.s.retries"),
    ("unknown http key", "sinks: { s: { http: { url: \"http://h/\", insecure: true } } }\n", "sinks.s.http.insecure"),
    ("unknown key in http.sign.hmac", "sinks: { s: { http: { url: \"http://h/\", sign: { hmac: { header: X, secret: k, algo: sha1 } } } } }\n", "sinks.s.http.sign.hmac.algo"),
    ("unknown retry key", "sinks: { s: { log: {}, retry: { max_attempt: 3 } } }\n", "sinks.s.retry.max_attempt"),
    ("unknown nats sink key", "sinks: { s: { nats: { subject: e, stream: x } } }\n", "sinks.s.nats.stream"),
    ("unknown route key", "sinks: { s: { log: {} } }\nroutes: [ { name: r, to: [s], filter: {} } ]\n", "routes[0].filter"),
    ("unknown key in an advanced filter", "sinks: { s: { log: {} } }\nroutes: [ { name: r, to: [s], match: { advanced: [ { key: data.n, op: NumberLessThan, value: 1, vaule: 2 } ] } } ]\n", "routes[0].match.advanced[0].vaule"),
    ("unknown key in a schedule event", "schedules: [ { name: n, cron: \"0 * * * * *\", event: { type: t, source: s, time: now } } ]\n", "schedules[0].event.time"),
    ("unknown key in a source event", "sources: { gh: { preset: github, secret: k, event: { kind: x } } }\n", "sources.gh.event.kind"),
    ("unknown admin key", "admin: { colour: blue }\n", "admin.colour"),
    ("unknown telemetry key", "telemetry: { sampler: all }\n", "telemetry.sampler"),
    ("address as a number", "listen: 8080\n", "listen"),
    ("duration without a unit", "shutdown_grace: 30\n", "shutdown_grace"),
    ("size with a bad unit", "spool: { max_bytes: 1MiBs }\n", "spool.max_bytes"),
    ("routes as a mapping", "routes: { r: {} }\n", "routes"),
    ("sinks as a list", "sinks: [ s ]\n", "sinks"),
    ("concurrency as a word", "sinks: { s: { log: {}, concurrency: many } }\n", "sinks.s.concurrency"),
    ("concurrency out of range", "sinks: { s: { log: {}, concurrency: 0 } }\n", "sinks.s.concurrency"),
    ("schedule as one string", "sinks: { s: { log: {}, retry: { schedule: 30s } } }\n", "sinks.s.retry.schedule"),
    ("types as one string", "sinks: { s: { log: {} } }\nroutes: [ { name: r, to: [s], match: { types: Contoso } } ]\n", "routes[0].match.types"),
    ("case_sensitive as yes", "sinks: { s: { log: {} } }\nroutes: [ { name: r, to: [s], match: { subject: { begins_with: a, case_sensitive: yes } } } ]\n", "routes[0].match.subject.case_sensitive"),
    ("rate without a unit", "sinks: { s: { log: {}, rate_limit: 500 } }\n", "sinks.s.rate_limit"),
    ("unknown spool backend", "spool: { backend: disk }\n", "spool.backend"),
    ("unknown http format", "sinks: { s: { http: { url: \"http://h/\", format: json } } }\n", "sinks.s.http.format"),
    ("unknown log level", "sinks: { s: { log: { level: verbose } } }\n", "sinks.s.log.level"),
    ("unknown priority", "sinks: { s: { log: {} } }\nroutes: [ { name: r, to: [s], priority: urgent } ]\n", "routes[0].priority"),
    ("unknown ordering", "sinks: { s: { log: {} } }\nroutes: [ { name: r, to: [s], ordering: fifo } ]\n", "routes[0].ordering"),
    ("unknown operator", "sinks: { s: { log: {} } }\nroutes: [ { name: r, to: [s], match: { advanced: [ { key: k, op: NumberEquals, value: 1 } ] } } ]\n", "routes[0].match.advanced[0].op"),
    ("unknown preset", "sources: { gl: { preset: gitlab, secret: k } }\n", "sources.gl.preset"),
    ("unknown hmac encoding", "sinks: { s: { http: { url: \"http://h/\", sign: { hmac: { header: X, secret: k, encoding: base32 } } } } }\n", "sinks.s.http.sign.hmac.encoding"),
    ("a sink of two kinds", "sinks: { s: { log: {}, file: { path: ./x } } }\n", "sinks.s"),
    ("a sink of no kind", "sinks: { s: { concurrency: 2 } }\n", "sinks.s"),
    ("an auth entry with two credentials", "ingress: { auth: [ { bearer: a, sas_key: b } ] }\n", "ingress.auth[0]"),
    ("a route to no sink", "sinks: { s: { log: {} } }\nroutes: [ { name: r, to: [] } ]\n", "routes[0].to"),
    ("a route without a name", "sinks: { s: { log: {} } }\nroutes: [ { to: [s] } ]\n", "routes[0].name"),
    ("a single-value operator given values", "sinks: { s: { log: {} } }\nroutes: [ { name: r, to: [s], match: { advanced: [ { key: k, op: NumberLessThan, values: [1] } ] } } ]\n", "routes[0].match.advanced[0].values"),
    ("an hmac source with a secret", "sources: { h: { preset: hmac, secret: k, hmac: { header: X, secret: k }, event: { type: t, source: s } } }\n", "sources.h.secret"),
    ("a tolerance for github", "sources: { gh: { preset: github, secret: k, tolerance: 5m } }\n", "sources.gh.tolerance"),
    ("a fallback without a breaker", "sinks: { s: { log: {}, fallback: t }, t: { log: {} } }\n", "sinks.s.fallback"),
    ("user without password", "sinks: { s: { nats: { subject: e, user: u } } }\n", "sinks.s.nats.password"),
];

#[test]
fn invalid_documents_are_refused_by_the_loader_and_the_schema() {
    let validator = validator();
    for (what, text, path) in INVALID {
        let error = load(text, "invalid.yaml").expect_err(what);
        assert!(
            error.contains(&format!("{path}: ")) || error.contains(&format!("{path}.")),
            "{what}: the loader names {path}:\n{error}"
        );
        let doc = parse(text);
        assert!(
            !validator.is_valid(&doc),
            "{what}: the schema accepts {doc}"
        );
    }
}

#[test]
fn the_schema_command_prints_the_schema_file() {
    let out = Command::new(BIN)
        .arg("schema")
        .output()
        .expect("run switchyard schema");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = String::from_utf8(out.stdout).expect("UTF-8");
    assert_eq!(printed, read(&repo("schema/routes.schema.json")));
    let schema: Value = serde_json::from_str(&printed).expect("JSON");
    assert!(
        jsonschema::draft7::meta::is_valid(&schema),
        "not a draft-07 schema"
    );
    assert_eq!(schema["$schema"], "http://json-schema.org/draft-07/schema#");
}

/// The README tells editors where the schema is, and lists the command.
#[test]
fn the_readme_names_the_schema_for_editors() {
    let readme = read(&repo("README.md"));
    assert!(
        readme.contains("# yaml-language-server: $schema="),
        "modeline"
    );
    assert!(readme.contains("`switchyard schema`"), "command list");
}
