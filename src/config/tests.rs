//! Tests of loading `routes.yaml`: valid files, every class of error with its path, `${VAR}`
//! interpolation and the `SWITCHYARD_*` overlay.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use super::*;

const MINIMAL: &str = "
sinks: { console: { log: {} } }
routes: [ { name: all, to: [console] } ]
";

fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn load_with(yaml: &str, pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
    load_str(yaml, Path::new("test.yaml"), &vars(pairs))
}

/// Loads `yaml` with the given environment; an error as its text (for the per-section tests).
pub(super) fn load_text(yaml: &str, pairs: &[(&str, &str)]) -> Result<Config, String> {
    load_with(yaml, pairs).map_err(|e| e.to_string())
}

fn load_ok(yaml: &str) -> Config {
    load_with(yaml, &[]).unwrap()
}

/// Every error of an invalid file as `path: message`.
fn errors_with(yaml: &str, pairs: &[(&str, &str)]) -> Vec<String> {
    match load_with(yaml, pairs) {
        Err(ConfigError::Invalid(errors)) => errors.iter().map(ToString::to_string).collect(),
        other => panic!("expected invalid configuration, got {other:?}"),
    }
}

fn errors(yaml: &str) -> Vec<String> {
    errors_with(yaml, &[])
}

/// Asserts that one error sits at exactly `path` and mentions `fragment`.
#[track_caller]
fn assert_error(errors: &[String], path: &str, fragment: &str) {
    let prefix = format!("{path}: ");
    assert!(
        errors
            .iter()
            .any(|e| e.starts_with(&prefix) && e.contains(fragment)),
        "no error at `{path}` mentioning `{fragment}` in {errors:#?}"
    );
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

// === Valid files ===

#[test]
fn the_repository_routes_yaml_is_valid() {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/routes.yaml")).unwrap();
    let config = load_ok(&text);
    assert_eq!(config.listen.to_string(), "0.0.0.0:8080");
    assert_eq!(
        config.spool,
        SpoolConfig {
            backend: SpoolBackend::Embedded,
            path: "./data".into(),
            max_bytes: 1 << 30,
            dead_letter_ttl: Some(crate::config::DEFAULT_DEAD_LETTER_TTL),
            retain_delivered: None,
            nats: None,
        }
    );
    assert!(matches!(config.sinks["console"].kind, SinkKind::Log(_)));
    let SinkKind::File(archive) = &config.sinks["archive"].kind else {
        panic!("archive is a file sink")
    };
    assert_eq!(archive.path, Path::new("./data/events.jsonl"));
    assert_eq!(config.routes.len(), 1);
    assert_eq!(config.routes[0].name, "all");
    assert_eq!(config.routes[0].filter.types, ["*"]);
    assert_eq!(config.routes[0].to, ["console", "archive"]);
}

#[test]
fn defaults_fill_everything_left_out() {
    let config = load_ok(MINIMAL);
    assert_eq!(config.listen.to_string(), "0.0.0.0:8080");
    assert_eq!(config.shutdown_grace, secs(30));
    assert_eq!(config.spool.path, Path::new("./data"));
    assert_eq!(config.ingress.max_event_bytes, 1 << 20);
    assert_eq!(config.ingress.max_request_bytes, 1 << 20);
    assert_eq!(config.ingress.max_batch_events, 5000);
    assert!(config.ingress.auth.is_empty());
    assert_eq!(config.ingress.allowed_origins, ["*"]);
    assert_eq!(config.ingress.allowed_rate, None);
    let console = &config.sinks["console"];
    assert_eq!(console.concurrency, 16);
    assert_eq!(console.retry, RetryPolicy::default());
    assert_eq!(console.dead_letter, None);
    assert!(matches!(&console.kind, SinkKind::Log(l) if l.level == tracing::Level::INFO));
    assert_eq!(config.routes[0].filter, MatchConfig::default());
}

#[test]
fn an_empty_file_is_an_empty_configuration() {
    let config = load_ok("# nothing yet\n");
    assert!(config.sinks.is_empty() && config.routes.is_empty());
}

const FULL: &str = r#"
listen: 127.0.0.1:9000
shutdown_grace: 1m30s
spool: { backend: memory, path: /var/lib/switchyard }
ingress:
  max_event_bytes: 64KiB
  max_request_bytes: 1048576
  max_batch_events: 100
  auth: [ { sas_key: "${SAS}" }, { bearer: "tok-$$1" } ]
  allowed_origins: [ "eventgrid.azure.net", "*.example.com" ]
  allowed_rate: 120
sinks:
  orders-api:
    http:
      url: "https://orders.example.com:8443/events"
      format: eventgrid
      timeout: 5s
      headers: { x-api-key: "${KEY:-fallback}" }
    concurrency: 4
    retry: { max_attempts: 5, event_ttl: 2h, schedule: [200ms, 1s, 1m] }
    dead_letter: dead-letters
  dead-letters: { file: { path: ./data/dead.jsonl } }
  notify: { exec: { command: ["./notify.sh", "-q"], timeout: 10s } }
  quiet: { log: { level: debug } }
  embedded: { handler: { name: audit } }
routes:
  - name: orders
    match:
      types: ["Contoso.Orders.OrderCreated", "Contoso.Orders.*"]
      source: ["/shop/*"]
      subject: { begins_with: "/orders/", ends_with: ".json", case_sensitive: true }
      advanced:
        - { key: data.total, op: NumberGreaterThan, value: 100 }
        - { key: data.total, op: NumberInRange, values: [[1, 5], [10, 20.5]] }
        - { key: data.region, op: StringIn, values: [eu, us] }
        - { key: data.code, op: NumberIn, value: 7 }
        - { key: data.gift, op: BoolEquals, value: true }
        - { key: data.note, op: IsNullOrUndefined }
    to: [orders-api, notify]
  - name: rest
    match: { source: "/other" }
    to: [quiet, embedded]
"#;

#[test]
fn a_full_configuration_reads_every_key() {
    let config = load_with(FULL, &[("SAS", "sas-secret")]).unwrap();
    assert_eq!(config.listen.to_string(), "127.0.0.1:9000");
    assert_eq!(config.shutdown_grace, secs(90));
    assert_eq!(config.spool.path, Path::new("/var/lib/switchyard"));
    let ingress = &config.ingress;
    assert_eq!(
        (ingress.max_event_bytes, ingress.max_request_bytes),
        (65_536, 1_048_576)
    );
    assert_eq!(ingress.max_batch_events, 100);
    assert_eq!(
        ingress.auth,
        [
            AuthRule::SasKey("sas-secret".into()),
            AuthRule::Bearer("tok-$1".into())
        ]
    );
    assert_eq!(
        ingress.allowed_origins,
        ["eventgrid.azure.net", "*.example.com"]
    );
    assert_eq!(ingress.allowed_rate, Some(120));

    let api = &config.sinks["orders-api"];
    let SinkKind::Http(http) = &api.kind else {
        panic!("orders-api is an http sink")
    };
    assert_eq!(
        http.url.to_string(),
        "https://orders.example.com:8443/events"
    );
    assert_eq!(http.format, HttpFormat::EventGrid);
    assert_eq!(http.timeout, secs(5));
    assert_eq!(http.headers.len(), 1);
    assert_eq!(
        (
            http.headers[0].0.as_str(),
            http.headers[0].1.to_str().unwrap()
        ),
        ("x-api-key", "fallback")
    );
    assert_eq!(api.concurrency, 4);
    let schedule = vec![Duration::from_millis(200), secs(1), secs(60)];
    assert_eq!(
        api.retry,
        RetryPolicy {
            max_attempts: 5,
            event_ttl: secs(7200),
            schedule,
            ..RetryPolicy::default()
        }
    );
    assert_eq!(api.dead_letter.as_deref(), Some("dead-letters"));
    let SinkKind::Exec(exec) = &config.sinks["notify"].kind else {
        panic!("notify is exec")
    };
    assert_eq!(
        (exec.command.clone(), exec.timeout),
        (vec!["./notify.sh".into(), "-q".into()], secs(10))
    );
    assert_eq!(
        exec.env,
        ["PATH", "HOME", "LANG"],
        "the default pass-through"
    );
    assert!(
        matches!(&config.sinks["quiet"].kind, SinkKind::Log(l) if l.level == tracing::Level::DEBUG)
    );
    assert!(matches!(&config.sinks["embedded"].kind, SinkKind::Handler(h) if h.name == "audit"));

    let orders = &config.routes[0].filter;
    assert_eq!(
        orders.types,
        ["Contoso.Orders.OrderCreated", "Contoso.Orders.*"]
    );
    assert_eq!(orders.sources, ["/shop/*"]);
    let subject = SubjectFilter {
        begins_with: Some("/orders/".into()),
        ends_with: Some(".json".into()),
        case_sensitive: true,
    };
    assert_eq!(orders.subject, Some(subject));
    let conditions: Vec<&Condition> = orders.advanced.iter().map(|f| &f.condition).collect();
    assert_eq!(
        conditions,
        [
            &Condition::NumberGreaterThan(100.0),
            &Condition::NumberInRange(vec![(1.0, 5.0), (10.0, 20.5)]),
            &Condition::StringIn(vec!["eu".into(), "us".into()]),
            &Condition::NumberIn(vec![7.0]),
            &Condition::BoolEquals(true),
            &Condition::IsNullOrUndefined,
        ]
    );
    assert_eq!(orders.advanced[2].key, "data.region");
    assert_eq!(config.routes[1].filter.sources, ["/other"]);
}

#[test]
fn the_summary_lists_routes_and_sinks_without_secrets() {
    let config = load_with(FULL, &[("SAS", "sas-secret"), ("KEY", "header-secret")]).unwrap();
    let summary = config.summary();
    for expected in [
        "127.0.0.1:9000",
        "memory",
        "orders",
        "orders-api, notify",
        "6 advanced filter(s)",
        "https://orders.example.com:8443/events",
        "eventgrid",
        "x-api-key",
        "max_attempts 5",
        "horizon 2m 1s",
        "200ms, 1s, 1m",
        "dead_letter   dead-letters",
        "2 credential(s): sas_key, bearer",
    ] {
        assert!(
            summary.contains(expected),
            "`{expected}` missing from:\n{summary}"
        );
    }
    for secret in ["sas-secret", "header-secret", "tok-"] {
        assert!(
            !summary.contains(secret),
            "summary shows `{secret}`:\n{summary}"
        );
    }
    let default = load_ok(MINIMAL).summary();
    assert!(default.contains("horizon 1d 0h"), "{default}");
    assert!(
        default.contains("admin           127.0.0.1:9090; no token (loopback only)"),
        "{default}"
    );
}

#[test]
fn routes_take_a_priority_and_an_ordering() {
    let config = load_ok(
        "
sinks: { a: { log: {} } }
routes:
  - { name: fast, priority: high, ordering: subject, to: [a] }
  - { name: slow, priority: low, to: [a] }
  - { name: plain, to: [a] }
",
    );
    let lanes: Vec<_> = config
        .routes
        .iter()
        .map(|r| (r.priority, r.ordering))
        .collect();
    assert_eq!(
        lanes,
        [
            (Priority::High, DeliveryOrder::Subject),
            (Priority::Low, DeliveryOrder::Any),
            (Priority::Normal, DeliveryOrder::Any),
        ]
    );
    let summary = config.summary();
    for expected in [
        "lane   priority high, ordered by subject",
        "lane   priority low, unordered",
        "lane   priority normal, unordered",
    ] {
        assert!(
            summary.contains(expected),
            "`{expected}` missing:\n{summary}"
        );
    }
}

// === Errors ===

#[test]
fn yaml_syntax_errors_name_the_file() {
    for text in [
        "sinks: [unclosed",
        "- just\n- a list\n",
        "a: 1\n---\nb: 2\n",
    ] {
        match load_with(text, &[]) {
            Err(ConfigError::Syntax { path, message }) => {
                assert_eq!(path, Path::new("test.yaml"));
                assert!(!message.is_empty());
            }
            other => panic!("expected a syntax error for {text:?}, got {other:?}"),
        }
    }
}

#[test]
fn unknown_keys_are_reported_with_the_allowed_ones() {
    let errors = errors(
        "
lisen: 0.0.0.0:1
spool: { bakend: memory }
sinks:
  console: { log: { levle: info }, concurency: 2, retry: { attempts: 3 } }
  web: { http: { url: 'http://x', header: {} } }
routes: [ { name: all, to: [console], match: { type: [a], subject: { begins: x } } } ]
",
    );
    assert_error(
        &errors,
        "lisen",
        "unknown key (allowed here: listen, shutdown_grace, spool",
    );
    assert_error(&errors, "spool.bakend", "allowed here: backend, path");
    assert_error(&errors, "sinks.console.log.levle", "allowed here: level");
    assert_error(&errors, "sinks.console.concurency", "concurrency");
    assert_error(
        &errors,
        "sinks.console.retry.attempts",
        "max_attempts, event_ttl, schedule",
    );
    assert_error(
        &errors,
        "sinks.web.http.header",
        "url, format, timeout, headers",
    );
    assert_error(
        &errors,
        "routes[0].match.type",
        "types, source, subject, advanced",
    );
    assert_error(&errors, "routes[0].match.subject.begins", "begins_with");
    // The subject has neither begins_with nor ends_with either.
    assert_error(
        &errors,
        "routes[0].match.subject",
        "needs begins_with, ends_with or both",
    );
    assert_eq!(errors.len(), 9, "{errors:#?}");
}

#[test]
fn bad_choices_and_bad_sql_are_errors_at_their_path() {
    let errors = errors(
        "
sinks:
  a:
    log: {}
  b: { log: {} }
routes: [ { name: r, priority: urgent, ordering: fifo, sql: 'x AND', to: [a] } ]
",
    );
    assert_error(&errors, "routes[0].sql", "CESQL column 6: unexpected end");
    assert_error(&errors, "routes[0].priority", "unknown priority `urgent`");
    assert_error(&errors, "routes[0].ordering", "unknown ordering `fifo`");
    assert_eq!(errors.len(), 3, "{errors:#?}");
    assert_error(
        &errors_with("spool: { backend: disk }", &[]),
        "spool.backend",
        "unknown backend `disk`",
    );
}

#[test]
fn sql_must_parse_call_known_functions_and_yield_a_boolean() {
    let errors = errors(
        r#"
sinks: { a: { log: {} } }
routes:
  - { name: ok, sql: "type LIKE 'Contoso.%' AND subject <> '' AND EXISTS priority", to: [a] }
  - { name: unknown, sql: "NOPE(type) = 1", to: [a] }
  - { name: arity, sql: "LEFT(type) = 'a'", to: [a] }
  - { name: number, sql: "1 + 1", to: [a] }
  - { name: bad, sql: "type = 'a' AND subject LIKE 3", to: [a] }
  - { name: text, sql: 42, to: [a] }
"#,
    );
    assert_error(
        &errors,
        "routes[1].sql",
        "column 1: no function NOPE() with 1 argument(s)",
    );
    assert_error(
        &errors,
        "routes[2].sql",
        "no function LEFT() with 1 argument(s)",
    );
    assert_error(
        &errors,
        "routes[3].sql",
        "yields a integer, a filter needs a boolean",
    );
    assert_error(
        &errors,
        "routes[4].sql",
        "column 29: LIKE needs a string literal pattern",
    );
    assert_error(&errors, "routes[5].sql", "");
    assert_eq!(errors.len(), 5, "{errors:#?}");
    let config = load_ok(
        r#"
sinks: { a: { log: {} } }
routes: [ { name: r, match: { types: [A] }, sql: "myext = 1", to: [a] } ]
"#,
    );
    let sql = config.routes[0].sql.as_ref().map(|e| e.source());
    assert_eq!(sql, Some("myext = 1"));
}

#[test]
fn wrong_types_say_what_was_expected_and_found() {
    let errors = errors(
        "
listen: [1]
shutdown_grace: 30
spool: nope
ingress: { max_event_bytes: -1, max_batch_events: 5001, allowed_rate: 0, allowed_origins: [''] }
sinks:
  a: { log: {}, concurrency: many, retry: { max_attempts: 0, event_ttl: 0s, schedule: [] } }
  b: { log: {}, concurrency: 10001, retry: { schedule: [10s, 1x, 5] } }
routes: [ { name: r, to: [a], match: { subject: { begins_with: x, case_sensitive: maybe } } } ]
",
    );
    assert_error(&errors, "listen", "expected a string, found a list");
    assert_error(&errors, "shutdown_grace", "`30` needs a unit, e.g. 30s");
    assert_error(
        &errors,
        "spool",
        "expected a mapping, found the string \"nope\"",
    );
    assert_error(
        &errors,
        "ingress.max_event_bytes",
        "expected an integer in 0..=",
    );
    assert_error(
        &errors,
        "ingress.max_batch_events",
        "expected an integer in 1..=5000, found the number 5001",
    );
    assert_error(
        &errors,
        "ingress.allowed_rate",
        "expected an integer in 1..=",
    );
    assert_error(&errors, "ingress.allowed_origins[0]", "must not be empty");
    assert_error(
        &errors,
        "sinks.a.concurrency",
        "expected an integer in 1..=10000, `adaptive` or { min, max }, found the string \"many\"",
    );
    assert_error(&errors, "sinks.a.retry.max_attempts", "1..=100");
    assert_error(&errors, "sinks.a.retry.event_ttl", "longer than 0s");
    assert_error(&errors, "sinks.a.retry.schedule", "at least one delay");
    assert_error(&errors, "sinks.b.concurrency", "found the number 10001");
    assert_error(
        &errors,
        "sinks.b.retry.schedule[1]",
        "invalid duration: `1x` has an unknown unit `x`",
    );
    assert_error(&errors, "sinks.b.retry.schedule[2]", "needs a unit");
    assert_error(
        &errors,
        "routes[0].match.subject.case_sensitive",
        "expected true or false",
    );
    assert_eq!(errors.len(), 15, "{errors:#?}");
}

#[test]
fn sizes_accept_numbers_and_units() {
    let config = load_ok("ingress: { max_event_bytes: 2048, max_request_bytes: 2MB }");
    assert_eq!(
        (
            config.ingress.max_event_bytes,
            config.ingress.max_request_bytes
        ),
        (2048, 2_000_000)
    );
    let errors = errors("ingress: { max_event_bytes: 1XB, max_request_bytes: 0 }");
    assert_error(
        &errors,
        "ingress.max_event_bytes",
        "invalid size: `1XB` has an unknown unit `XB`",
    );
    assert_error(&errors, "ingress.max_request_bytes", "at least 1 byte");
}

#[test]
fn connection_limits_are_read_with_their_defaults() {
    let defaults = load_ok("sinks: {}").ingress.connections;
    assert_eq!(defaults.header_timeout, secs(10));
    assert_eq!(defaults.body_timeout, secs(30));
    assert_eq!(defaults.max_connections, 1024);
    let config = load_ok("ingress: { header_timeout: 2s, body_timeout: 1m, max_connections: 16 }");
    let limits = config.ingress.connections;
    assert_eq!(limits.header_timeout, secs(2));
    assert_eq!(limits.body_timeout, secs(60));
    assert_eq!(limits.max_connections, 16);
    let summary = config.summary();
    assert!(
        summary.contains("connections     at most 16; headers within 2s; body within 1m"),
        "{summary}"
    );
}

#[test]
fn connection_limits_report_every_bad_value() {
    let zero = errors("ingress: { header_timeout: 0s, body_timeout: 5, max_connections: 0 }");
    assert_error(&zero, "ingress.header_timeout", "longer than zero");
    assert_error(&zero, "ingress.body_timeout", "unit");
    assert_error(&zero, "ingress.max_connections", "1..=1048576");
    let wrong = errors("ingress: { header_timeout: 2d, body_timeout: -1s, max_connections: x }");
    assert_error(&wrong, "ingress.header_timeout", "at most 24h");
    assert_error(&wrong, "ingress.body_timeout", "duration");
    assert_error(&wrong, "ingress.max_connections", "integer");
    let env = errors_with(
        "sinks: {}",
        &[("SWITCHYARD_INGRESS__MAX_CONNECTIONS", "-3")],
    );
    assert_error(&env, "ingress.max_connections", "integer");
    let env = load_with("sinks: {}", &[("SWITCHYARD_INGRESS__BODY_TIMEOUT", "5s")])
        .expect("valid override");
    assert_eq!(env.ingress.connections.body_timeout, secs(5));
}

#[test]
fn spool_max_bytes_and_dedup_window_are_read() {
    let config = load_ok("spool: { max_bytes: 64KiB }\ningress: { dedup_window: 10m }");
    assert_eq!(config.spool.max_bytes, 64 * 1024);
    assert_eq!(config.ingress.dedup_window, Some(Duration::from_secs(600)));
    let defaults = load_ok("sinks: {}");
    assert_eq!(defaults.spool.max_bytes, 1 << 30);
    assert_eq!(defaults.ingress.dedup_window, None);
    let errors = errors("spool: { max_bytes: 0 }\ningress: { dedup_window: 10 }");
    assert_error(&errors, "spool.max_bytes", "at least 1 byte");
    assert_error(&errors, "ingress.dedup_window", "unit");
}

#[test]
fn spool_dead_letter_ttl_defaults_to_14_days_and_0_keeps_them() {
    let defaults = load_ok("sinks: {}");
    assert_eq!(
        defaults.spool.dead_letter_ttl,
        Some(Duration::from_secs(14 * 24 * 3600))
    );
    let set = load_ok("spool: { dead_letter_ttl: 36h }");
    assert_eq!(
        set.spool.dead_letter_ttl,
        Some(Duration::from_secs(36 * 3600))
    );
    let kept = load_ok("spool: { dead_letter_ttl: 0 }");
    assert_eq!(kept.spool.dead_letter_ttl, None);
    let nats = load_ok("spool: { backend: nats, dead_letter_ttl: 1d }");
    let ttl = nats.spool.nats.map(|n| n.dead_letter_ttl);
    assert_eq!(ttl, Some(Some(Duration::from_secs(24 * 3600))));
    let errors = errors("spool: { dead_letter_ttl: soon }");
    assert_error(&errors, "spool.dead_letter_ttl", "duration");
}

#[test]
fn spool_retain_delivered_is_off_by_default_and_refused_with_nats() {
    assert_eq!(load_ok("sinks: {}").spool.retain_delivered, None);
    let set = load_ok("spool: { retain_delivered: 24h }");
    assert_eq!(
        set.spool.retain_delivered,
        Some(Duration::from_secs(24 * 3600))
    );
    let memory = load_ok("spool: { backend: memory, retain_delivered: 10m }");
    assert_eq!(
        memory.spool.retain_delivered,
        Some(Duration::from_secs(600))
    );
    assert_error(
        &errors("spool: { retain_delivered: soon }"),
        "spool.retain_delivered",
        "duration",
    );
    assert_error(
        &errors("spool: { retain_delivered: 0s }"),
        "spool.retain_delivered",
        "longer than 0s",
    );
    let nats = errors("spool: { backend: nats, retain_delivered: 1h }");
    assert_error(
        &nats,
        "spool.retain_delivered",
        "not supported by the nats spool backend",
    );
    assert_error(
        &errors("spool: { retain_deliverd: 1h }"),
        "spool.retain_deliverd",
        "unknown",
    );
}

#[test]
fn sink_kinds_and_their_settings_are_checked() {
    let errors = errors(
        "
sinks:
  none: { concurrency: 1 }
  two: { log: {}, file: { path: x } }
  no-url: { http: {} }
  ftp: { http: { url: 'ftp://example.com/x' } }
  relative: { http: { url: '/events', format: xml, headers: { 'bad header': v, ok: \"a\\nb\" } } }
  loud: { log: { level: shout } }
  nofile: { file: {} }
  noprog: { exec: { command: [] } }
  blank: { exec: { command: ['./x', ''] } }
  nul: { exec: { command: [\"./x\\0\"], env: [PATH, 'A=B', '', 3] } }
  anon: { handler: { name: '' } }
  kind: { log: 3 }
",
    );
    assert_error(
        &errors,
        "sinks.none",
        "needs exactly one of http, log, file, exec, handler, nats (found none)",
    );
    assert_error(&errors, "sinks.two", "(found log and file)");
    assert_error(&errors, "sinks.no-url.http.url", "required");
    assert_error(
        &errors,
        "sinks.ftp.http.url",
        "expected an absolute http:// or https:// URL",
    );
    assert_error(&errors, "sinks.relative.http.url", "http:// or https://");
    assert_error(
        &errors,
        "sinks.relative.http.format",
        "unknown format `xml` (expected cloudevents-binary",
    );
    assert_error(
        &errors,
        "sinks.relative.http.headers.bad header",
        "invalid header name",
    );
    assert_error(
        &errors,
        "sinks.relative.http.headers.ok",
        "invalid header value",
    );
    assert_error(&errors, "sinks.loud.log.level", "unknown level `shout`");
    assert_error(&errors, "sinks.nofile.file.path", "required");
    assert_error(&errors, "sinks.noprog.exec.command", "must name a program");
    assert_error(&errors, "sinks.blank.exec.command[1]", "must not be empty");
    assert_error(
        &errors,
        "sinks.nul.exec.command[0]",
        "must not contain a NUL",
    );
    assert_error(&errors, "sinks.nul.exec.env[1]", "must be a variable name");
    assert_error(&errors, "sinks.nul.exec.env[2]", "must not be empty");
    assert_error(&errors, "sinks.nul.exec.env[3]", "expected a string");
    assert_error(&errors, "sinks.anon.handler.name", "must not be empty");
    assert_error(
        &errors,
        "sinks.kind.log",
        "expected a mapping, found the number 3",
    );
    assert_eq!(errors.len(), 18, "{errors:#?}");
}

#[test]
fn references_to_sinks_must_exist() {
    let errors = errors(
        "
sinks:
  a: { log: {}, dead_letter: nowhere }
  b: { log: {}, dead_letter: b }
routes:
  - { name: one, to: [a] }
  - { name: two, to: [a, ghost] }
  - { name: one, to: [] }
  - { to: [a, a] }
",
    );
    assert_error(
        &errors,
        "sinks.a.dead_letter",
        "unknown sink `nowhere` (defined sinks: a, b)",
    );
    assert_error(&errors, "sinks.b.dead_letter", "another sink");
    assert_error(
        &errors,
        "routes[1].to[1]",
        "unknown sink `ghost` (defined sinks: a, b)",
    );
    assert_error(
        &errors,
        "routes[2].name",
        "duplicate route name `one` (first at routes[0].name)",
    );
    assert_error(&errors, "routes[2].to", "needs at least one sink");
    assert_error(&errors, "routes[3].name", "required");
    assert_error(&errors, "routes[3].to", "names a sink twice");
    assert_eq!(errors.len(), 7, "{errors:#?}");
    let none = errors_with("routes: [ { name: r, to: [x] } ]", &[]);
    assert_error(
        &none,
        "routes[0].to[0]",
        "unknown sink `x` (defined sinks: none)",
    );
}

#[test]
fn type_and_source_patterns_allow_a_trailing_star_only() {
    let config = load_ok("sinks: { s: { log: {} } }\nroutes: [ { name: r, to: [s], match: { types: ['*', 'A.*'], source: '/x*' } } ]");
    assert_eq!(config.routes[0].filter.types, ["*", "A.*"]);
    assert_eq!(config.routes[0].filter.sources, ["/x*"]);
    let errors = errors(
        "sinks: { s: { log: {} } }
routes: [ { name: r, to: [s], match: { types: ['A.*.B', ''], source: ['*/x', 3], subject: {} } } ]",
    );
    assert_error(
        &errors,
        "routes[0].match.types[0]",
        "`*` is allowed only as the last character",
    );
    assert_error(&errors, "routes[0].match.types[1]", "must not be empty");
    assert_error(&errors, "routes[0].match.source[0]", "last character");
    assert_error(
        &errors,
        "routes[0].match.source[1]",
        "expected a string, found the number 3",
    );
    assert_error(
        &errors,
        "routes[0].match.subject",
        "needs begins_with, ends_with or both",
    );
    assert_eq!(errors.len(), 5, "{errors:#?}");
}

#[test]
fn advanced_filters_check_operators_and_operands() {
    let errors = errors(
        "
sinks: { s: { log: {} } }
routes:
  - name: r
    to: [s]
    match:
      advanced:
        - { key: data.a, op: NumberIn, values: [1, 2] }
        - { key: data.a, op: NumberBiggerThan, value: 1 }
        - { key: data.a, op: NumberLessThan, values: [1] }
        - { key: data.a, op: StringIn, value: a, values: [b] }
        - { key: data.a, op: StringIn }
        - { key: data.a, op: IsNotNull, value: 1 }
        - { key: '', op: BoolEquals, value: 1 }
        - { key: data.a, op: NumberInRange, values: [[5, 1], [1, 2, 3], [a, 2]] }
        - { key: data.a, op: NumberIn, values: [1, x] }
        - { key: data.a, op: StringContains, values: [] }
        - { op: IsNotNull }
",
    );
    let at = |i: usize, rest: &str| format!("routes[0].match.advanced[{i}]{rest}");
    assert_error(
        &errors,
        &at(1, ".op"),
        "unknown operator `NumberBiggerThan` (expected one of NumberIn, NumberNotIn",
    );
    assert_error(&errors, &at(1, ".op"), "IsNotNull");
    assert_error(
        &errors,
        &at(2, ".values"),
        "NumberLessThan takes one `value`, not `values`",
    );
    assert_error(
        &errors,
        &at(3, ".values"),
        "give `value` or `values`, not both",
    );
    assert_error(&errors, &at(4, ""), "StringIn needs `values`");
    assert_error(&errors, &at(5, ".value"), "IsNotNull takes no value");
    assert_error(&errors, &at(6, ".key"), "must not be empty");
    assert_error(
        &errors,
        &at(6, ".value"),
        "expected true or false, found the number 1",
    );
    assert_error(&errors, &at(7, ".values[0]"), "range [5, 1] has low > high");
    assert_error(
        &errors,
        &at(7, ".values[1]"),
        "expected a range [low, high]",
    );
    assert_error(
        &errors,
        &at(7, ".values[2][0]"),
        "expected a number, found the string \"a\"",
    );
    assert_error(&errors, &at(8, ".values[1]"), "expected a number");
    assert_error(&errors, &at(9, ".values"), "needs at least one value");
    assert_error(&errors, &at(10, ".key"), "required");
    assert_eq!(errors.len(), 13, "{errors:#?}");
}

#[test]
fn single_operands_count_as_lists() {
    let config = load_ok(
        "sinks: { s: { log: {} } }
routes:
  - name: r
    to: [s]
    match:
      advanced:
        - { key: subject, op: StringBeginsWith, value: /a }
        - { key: data.n, op: NumberNotInRange, value: [1, 2] }
        - { key: data.n, op: NumberLessThanOrEquals, value: 2.5 }",
    );
    let conditions: Vec<Condition> = config.routes[0]
        .filter
        .advanced
        .iter()
        .map(|f| f.condition.clone())
        .collect();
    assert_eq!(
        conditions,
        [
            Condition::StringBeginsWith(vec!["/a".into()]),
            Condition::NumberNotInRange(vec![(1.0, 2.0)]),
            Condition::NumberLessThanOrEquals(2.5),
        ]
    );
}

#[test]
fn several_errors_are_reported_at_once_in_a_stable_order() {
    let yaml = "
listen: nowhere
sinks:
  orders-api:
    http: { url: 'http://127.0.0.1:9001/events' }
    retry: { schedule: [10s, 30s, 1q] }
routes:
  - { name: a, to: [orders-api] }
  - { name: b, to: [missing] }
  - { name: c, to: [orders-api], match: { advanced: [ { key: k, op: IsNotNull }, { key: k, op: Nope } ] } }
";
    let expected = [
        "listen: invalid socket address (e.g. 0.0.0.0:8080): invalid socket address syntax",
        "sinks.orders-api.retry.schedule[2]: invalid duration: `1q` has an unknown unit `q` (expected one of ms, s, m, h, d)",
        "routes[1].to[0]: unknown sink `missing` (defined sinks: orders-api)",
    ];
    let errors = errors(yaml);
    assert_eq!(errors[..3], expected, "{errors:#?}");
    assert!(errors[3].starts_with("routes[2].match.advanced[1].op: unknown operator `Nope`"));
    assert_eq!(errors.len(), 4);
    assert_eq!(
        errors_with(yaml, &[]),
        errors,
        "the same file gives the same errors"
    );
}

// === Environment ===

#[test]
fn interpolation_replaces_escapes_and_defaults() {
    let vars = vars(&[("A", "1"), ("EMPTY", "")]);
    let run = |text: &str| env::interpolate(text, &vars).map_err(|e| e.to_string());
    assert_eq!(run("x${A}y"), Ok("x1y".into()));
    assert_eq!(run("${B:-two}"), Ok("two".into()));
    assert_eq!(run("${EMPTY:-d}"), Ok("d".into()));
    assert_eq!(run("${EMPTY}"), Ok(String::new()));
    assert_eq!(run("$${A} costs $5"), Ok("${A} costs $5".into()));
    assert_eq!(run("${B:-}"), Ok(String::new()));
    assert_eq!(
        run("${NOPE}"),
        Err("environment variable NOPE is not set".into())
    );
    assert!(run("${OPEN").unwrap_err().starts_with("unterminated"));
    assert!(run("${}").unwrap_err().starts_with("empty variable name"));
}

#[test]
fn variables_are_interpolated_with_defaults_and_escapes() {
    let yaml = "
spool: { path: '${DATA_DIR:-/tmp/sy}/spool' }
ingress: { auth: [ { bearer: '${TOKEN}' } ] }
sinks: { s: { file: { path: '$${HOME}/${NAME}.jsonl' } } }
";
    let config = load_with(yaml, &[("TOKEN", "t0k"), ("NAME", "events")]).unwrap();
    assert_eq!(config.spool.path, Path::new("/tmp/sy/spool"));
    assert_eq!(config.ingress.auth, [AuthRule::Bearer("t0k".into())]);
    let SinkKind::File(file) = &config.sinks["s"].kind else {
        panic!("s is a file sink")
    };
    assert_eq!(file.path, Path::new("${HOME}/events.jsonl"));
    assert_eq!(format!("{:?}", config.ingress.auth), "[Bearer(***)]");
}

#[test]
fn missing_variables_are_errors_at_their_value() {
    let yaml = "
ingress: { auth: [ { sas_key: '${SWITCHYARD_SAS_KEY}' }, { bearer: '${EMPTY:-}' }, { sas_key: a, bearer: b } ] }
sinks: { s: { http: { url: 'http://${HOST}/x', timeout: '${T:-5s}' } } }
";
    let errors = errors(yaml);
    assert_error(
        &errors,
        "ingress.auth[0].sas_key",
        "environment variable SWITCHYARD_SAS_KEY is not set",
    );
    assert_error(&errors, "ingress.auth[1].bearer", "must not be empty");
    assert_error(
        &errors,
        "ingress.auth[2]",
        "needs exactly one of sas_key, bearer",
    );
    assert_error(
        &errors,
        "sinks.s.http.url",
        "environment variable HOST is not set",
    );
    assert_eq!(errors.len(), 4, "{errors:#?}");
    let unterminated = errors_with("spool: { path: '${OPEN' }", &[]);
    assert_error(&unterminated, "spool.path", "unterminated");
}

#[test]
fn a_top_level_key_with_a_subscript_is_unknown_and_allocates_nothing() {
    // Found by the `config` fuzz target: the crate filled a list of 43 million entries.
    for text in [
        "-[43333333]:\n",
        "routes[99999999]: x\n",
        "sinks: {}\n'a[-99999999]': 1\n",
    ] {
        let errors = errors_with(text, &[]);
        assert_eq!(errors.len(), 1, "{text}: {errors:#?}");
        let (path, message) = errors[0].split_once(": ").unwrap_or_default();
        assert!(path.contains('['), "{text}: {errors:#?}");
        assert!(
            message.starts_with("unknown key (allowed here: "),
            "{errors:#?}"
        );
    }
}

#[test]
fn an_overlay_variable_with_a_huge_list_index_is_refused() {
    let error = load_with(MINIMAL, &[("SWITCHYARD_ROUTES__123456789__NAME", "x")]).unwrap_err();
    let message = error.to_string();
    assert!(
        message.contains(
            "SWITCHYARD_ROUTES__123456789__NAME: list index 123456789 has more than 5 digits"
        ),
        "{message}"
    );
    let config = load_with(MINIMAL, &[("SWITCHYARD_ROUTES__0__NAME", "renamed")]).unwrap();
    assert_eq!(config.routes[0].name, "renamed");
}

#[test]
fn switchyard_variables_override_the_file() {
    let config = load_with(
        MINIMAL,
        &[
            ("SWITCHYARD_LISTEN", "127.0.0.1:9000"),
            ("SWITCHYARD_SPOOL__PATH", "/x"),
            ("SWITCHYARD_SHUTDOWN_GRACE", "5s"),
            ("SWITCHYARD_INGRESS__MAX_BATCH_EVENTS", "10"),
            ("SWITCHYARD_SINKS__CONSOLE__CONCURRENCY", "3"),
            ("SWITCHYARD_SINKS__CONSOLE__LOG__LEVEL", "warn"),
            ("SWITCHYARD_ROUTES__0__NAME", "renamed"),
        ],
    )
    .unwrap();
    assert_eq!(config.listen.to_string(), "127.0.0.1:9000");
    assert_eq!(config.spool.path, Path::new("/x"));
    assert_eq!(config.shutdown_grace, secs(5));
    assert_eq!(config.ingress.max_batch_events, 10);
    let console = &config.sinks["console"];
    assert_eq!(console.concurrency, 3);
    assert!(matches!(&console.kind, SinkKind::Log(l) if l.level == tracing::Level::WARN));
    assert_eq!(config.routes[0].name, "renamed");
    assert_eq!(config.routes[0].to, ["console"]);
}

#[test]
fn overrides_reach_names_written_with_capitals() {
    let yaml = "
sinks: { Orders: { http: { url: 'http://a/x', headers: { X-Api-Key: k } } } }
routes: [ { name: r, to: [Orders] } ]
";
    let config = load_with(
        yaml,
        &[
            ("SWITCHYARD_SINKS__ORDERS__CONCURRENCY", "2"),
            ("SWITCHYARD_SINKS__ORDERS__HTTP__TIMEOUT", "3s"),
        ],
    )
    .unwrap();
    assert_eq!(config.sinks.keys().collect::<Vec<_>>(), ["Orders"]);
    let orders = &config.sinks["Orders"];
    assert_eq!(orders.concurrency, 2);
    let SinkKind::Http(http) = &orders.kind else {
        panic!("Orders is an http sink")
    };
    assert_eq!((http.timeout, http.headers.len()), (secs(3), 1));
}

#[test]
fn unrelated_switchyard_variables_are_ignored() {
    let config = load_with(
        MINIMAL,
        &[
            ("SWITCHYARD_LOG_FORMAT", "json"),
            ("SWITCHYARD_SAS_KEY", "secret"),
            ("SWITCHYARD_TOKEN", "secret"),
            ("SWITCHYARD", "x"),
            ("LISTEN", "1.2.3.4:5"),
        ],
    )
    .unwrap();
    assert_eq!(config.listen.to_string(), "0.0.0.0:8080");
}

#[test]
fn bad_overrides_are_reported_at_the_overridden_key() {
    let errors = errors_with(
        MINIMAL,
        &[
            ("SWITCHYARD_LISTEN", "not-an-address"),
            ("SWITCHYARD_SINKS__CONSOLE__CONCURRENCY", "lots"),
        ],
    );
    assert_error(&errors, "listen", "invalid socket address");
    assert_error(
        &errors,
        "sinks.console.concurrency",
        "expected an integer in 1..=10000",
    );
    let endpoint = errors_with(
        MINIMAL,
        &[("SWITCHYARD_TELEMETRY__OTLP_ENDPOINT", "127.0.0.1:4318")],
    );
    assert_error(
        &endpoint,
        "telemetry.otlp_endpoint",
        "expected an absolute http:// or https:// URL",
    );
}

#[test]
fn delivery_controls_are_read_with_their_defaults() {
    let config = load_ok(
        "
sinks:
  a:
    http: { url: 'http://127.0.0.1:1/x' }
    rate_limit: 30/m
    batch: { max_events: 100, max_bytes: 64KiB, linger: 20ms }
    circuit_breaker: { consecutive_failures: 3, open_for: 10s }
    fallback: b
    retry: { max_backoff: 1m, max_retry_after: 100ms, schedule: [10m] }
  b: { log: {} }
routes: [ { name: r, to: [a] } ]
",
    );
    let a = &config.sinks["a"];
    let d = &a.delivery;
    assert_eq!(d.rate_limit.map(RateLimit::per_second), Some(0.5));
    assert_eq!(
        d.batch,
        BatchPolicy {
            max_events: 100,
            max_bytes: 64 << 10,
            linger: Duration::from_millis(20)
        }
    );
    assert_eq!(
        d.breaker,
        Some(BreakerPolicy {
            consecutive_failures: 3,
            open_for: Duration::from_secs(10)
        })
    );
    assert_eq!(d.fallback.as_deref(), Some("b"));
    assert_eq!(a.retry.max_backoff, Some(Duration::from_secs(60)));
    assert_eq!(a.retry.delay_after(1), Duration::from_secs(60));
    assert_eq!(a.retry.max_retry_after, Some(Duration::from_millis(100)));
    let b = &config.sinks["b"].delivery;
    assert_eq!(b, &DeliveryPolicy::default());
    assert_eq!(b.batch.max_events, 1);
    let summary = config.summary();
    assert!(summary.contains("rate 0.5/s; batch 100 events / 64KiB / linger 20ms; breaker open after 3 failures for 10s; fallback b; max_backoff 1m; max_retry_after 100ms"), "{summary}");
}

#[test]
fn a_file_sink_batches_what_is_already_leased_unless_told_otherwise() {
    let config = load_ok(
        "
sinks:
  plain: { file: { path: out.jsonl } }
  single: { file: { path: one.jsonl }, batch: { max_events: 1 } }
  lingering: { file: { path: slow.jsonl }, batch: { linger: 5ms } }
  api: { http: { url: 'http://127.0.0.1:1/x' } }
routes: [ { name: r, to: [plain, single, lingering, api] } ]
",
    );
    let batch = |name: &str| config.sinks[name].delivery.batch;
    assert_eq!(
        batch("plain"),
        BatchPolicy {
            max_events: crate::config::FILE_BATCH_EVENTS,
            ..BatchPolicy::default()
        },
        "a file sink with no batch takes up to FILE_BATCH_EVENTS, with no linger"
    );
    assert_eq!(batch("single").max_events, 1, "an explicit batch is kept");
    assert_eq!(
        batch("lingering").max_events,
        1,
        "a batch without max_events is 1"
    );
    assert_eq!(
        batch("api"),
        BatchPolicy::default(),
        "other kinds do not batch"
    );
    let summary = config.summary();
    assert!(summary.contains("batch 64 events"), "{summary}");
}

#[test]
fn delivery_controls_report_every_bad_value() {
    let errors = errors(
        "
sinks:
  a:
    log: {}
    rate_limit: fast
    batch: { max_events: 5001, max_bytes: 2MiB, linger: 2m, size: 3 }
    circuit_breaker: { consecutive_failures: 0, open_for: 0s }
    fallback: a
    retry: { max_backoff: 0s, max_retry_after: soon }
  b: { log: {}, rate_limit: 0/s, fallback: nowhere, circuit_breaker: {} }
  c: { log: {}, fallback: b }
routes: [ { name: r, to: [a] } ]
",
    );
    assert_error(&errors, "sinks.a.rate_limit", "invalid rate");
    assert_error(&errors, "sinks.a.batch.max_events", "1..=5000");
    assert_error(&errors, "sinks.a.batch.max_bytes", "between 1B and 1MiB");
    assert_error(&errors, "sinks.a.batch.linger", "at most 1m");
    assert_error(&errors, "sinks.a.batch.size", "unknown key");
    assert_error(
        &errors,
        "sinks.a.circuit_breaker.consecutive_failures",
        "1..=10000",
    );
    assert_error(
        &errors,
        "sinks.a.circuit_breaker.open_for",
        "longer than 0s",
    );
    assert_error(&errors, "sinks.a.fallback", "not the sink itself");
    assert_error(&errors, "sinks.a.retry.max_backoff", "longer than 0s");
    assert_error(&errors, "sinks.a.retry.max_retry_after", "invalid duration");
    assert_error(&errors, "sinks.b.rate_limit", "invalid rate");
    assert_error(&errors, "sinks.b.fallback", "unknown sink `nowhere`");
    assert_error(&errors, "sinks.c.fallback", "needs a circuit_breaker");
    assert_eq!(errors.len(), 13, "{errors:#?}");
}

#[test]
fn the_nats_spool_and_sink_are_read_with_their_defaults() {
    let config = load_ok(
        "
spool:
  backend: nats
  nats: { url: 'nats://a:4222, nats://u:p@b:4222', stream: sy-test, token: t }
ingress: { dedup_window: 5m }
sinks:
  bus: { nats: { subject: orders.created } }
routes: [ { name: r, to: [bus] } ]
",
    );
    let nats = config.spool.nats.expect("nats settings");
    assert_eq!(nats.connection.urls, ["nats://a:4222", "nats://u:p@b:4222"]);
    assert_eq!(nats.connection.servers(), "nats://a:4222,nats://b:4222");
    assert_eq!(nats.connection.auth, NatsAuth::Token("t".into()));
    assert_eq!((nats.stream.as_str(), nats.replicas), ("sy-test", 1));
    assert_eq!(nats.duplicate_window, Duration::from_secs(300));
    let SinkKind::Nats(sink) = &config.sinks["bus"].kind else {
        panic!("bus is a nats sink")
    };
    assert_eq!(
        (sink.subject.as_str(), sink.jetstream),
        ("orders.created", false)
    );
    assert_eq!(sink.connection.urls, ["nats://127.0.0.1:4222"]);
}

#[test]
fn bad_nats_settings_are_reported_with_their_paths() {
    let errors = errors_with(
        "
spool:
  backend: nats
  nats: { url: 'http://x', stream: 'a.b', user: u, replicas: 9 }
sinks:
  bus: { nats: { subject: 'orders.*' } }
routes: [ { name: r, to: [bus] } ]
",
        &[],
    );
    assert_error(&errors, "spool.nats.url", "not a nats://");
    assert_error(&errors, "spool.nats.stream", "only letters");
    assert_error(&errors, "spool.nats.password", "required with user");
    assert_error(&errors, "spool.nats.replicas", "");
    assert_error(&errors, "sinks.bus.nats.subject", "without wildcards");
}

// === Admin exposure ===

#[test]
fn a_non_loopback_admin_listen_without_a_token_is_an_error_naming_the_fix() {
    for addr in ["0.0.0.0:9090", "[::]:9090", "10.1.2.3:9090"] {
        let yaml = format!("{MINIMAL}admin_listen: \"{addr}\"\n");
        let errors = errors(&yaml);
        assert_error(&errors, "admin_listen", "admin.token is not set");
        assert_error(&errors, "admin_listen", "allow_unauthenticated: true");
        assert_error(&errors, "admin_listen", "127.0.0.1");
    }
}

#[test]
fn the_overlay_counts_like_the_file_for_the_admin_address_and_token() {
    let exposed = errors_with(MINIMAL, &[("SWITCHYARD_ADMIN_LISTEN", "0.0.0.0:9090")]);
    assert_error(&exposed, "admin_listen", "admin.token is not set");
    let guarded = load_with(
        MINIMAL,
        &[
            ("SWITCHYARD_ADMIN_LISTEN", "0.0.0.0:9090"),
            ("SWITCHYARD_ADMIN__TOKEN", "s3cret"),
        ],
    )
    .unwrap();
    assert_eq!(guarded.admin.token, Some(AdminToken::new("s3cret")));
}

#[test]
fn a_token_or_an_explicit_opt_out_allows_a_non_loopback_admin_listen() {
    let with_token = format!("{MINIMAL}admin_listen: 0.0.0.0:9090\nadmin: {{ token: t }}\n");
    assert!(load_ok(&with_token).admin.token.is_some());
    let opted_out =
        format!("{MINIMAL}admin_listen: 0.0.0.0:9090\nadmin: {{ allow_unauthenticated: true }}\n");
    let config = load_ok(&opted_out);
    assert!(config.admin.allow_unauthenticated && config.admin.token.is_none());
    assert!(
        config
            .summary()
            .contains("0.0.0.0:9090; no token (allow_unauthenticated)"),
        "{}",
        config.summary()
    );
    for loopback in ["127.0.0.1:9090", "127.0.0.2:9090", "[::1]:9090"] {
        let yaml = format!("{MINIMAL}admin_listen: \"{loopback}\"\n");
        assert!(!load_ok(&yaml).admin.allow_unauthenticated, "{loopback}");
    }
}

#[test]
fn allow_unauthenticated_must_be_a_boolean() {
    let yaml = format!("{MINIMAL}admin: {{ allow_unauthenticated: maybe }}\n");
    assert_error(
        &errors(&yaml),
        "admin.allow_unauthenticated",
        "true or false",
    );
}

const SIGNED: &str = r#"
ingress:
  auth:
    - sas_token_key: "VXbGWce53249Mt8wuotr0GPmyJ/nDT4hgdEj9DpBeRr38arnnm5OFg=="
    - standard_webhooks: { secrets: ["${OLD}", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"] }
sinks:
  hook:
    http:
      url: http://127.0.0.1:9/hook
      sign: { standard_webhooks: { secrets: ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"] } }
  github:
    http:
      url: http://127.0.0.1:9/gh
      sign: { hmac: { header: X-Hub-Signature-256, secret: "${GH}", prefix: "sha256=" } }
routes: [ { name: all, to: [hook, github] } ]
"#;

#[test]
fn signing_and_signed_credentials_are_read_and_never_shown() {
    let old = "whsec_c2VjcmV0LW9mLWFub3RoZXItc2VuZGVyISE=";
    let config = load_with(SIGNED, &[("OLD", old), ("GH", "gh-secret-value")]).unwrap();
    let [AuthRule::SasToken(key), AuthRule::StandardWebhooks(secrets)] = &config.ingress.auth[..]
    else {
        panic!("{:?}", config.ingress.auth)
    };
    assert_eq!(key.bytes().len(), 40);
    assert_eq!(secrets.len(), 2);
    let SinkKind::Http(hook) = &config.sinks["hook"].kind else {
        panic!("hook is an http sink")
    };
    assert!(
        matches!(&hook.sign, Some(SignConfig::StandardWebhooks { secrets }) if secrets.len() == 1)
    );
    let SinkKind::Http(github) = &config.sinks["github"].kind else {
        panic!("github is an http sink")
    };
    let Some(SignConfig::Hmac(hmac)) = &github.sign else {
        panic!("{:?}", github.sign)
    };
    assert_eq!(hmac.header.as_str(), "x-hub-signature-256");
    assert_eq!(hmac.secret.bytes(), b"gh-secret-value");
    assert_eq!(
        (hmac.prefix.as_str(), hmac.encoding),
        ("sha256=", DigestEncoding::Hex)
    );

    let summary = config.summary();
    let debug = format!("{config:?}");
    for shown in [&summary, &debug] {
        for secret in ["gh-secret-value", "MfKQ9r8G", "c2VjcmV0", "VXbGWce5"] {
            assert!(!shown.contains(secret), "`{secret}` shown in:\n{shown}");
        }
    }
    for expected in [
        "sas_token_key, standard_webhooks",
        "signed: standard_webhooks (1 secret(s))",
        "signed: hmac in x-hub-signature-256",
    ] {
        assert!(
            summary.contains(expected),
            "`{expected}` missing from:\n{summary}"
        );
    }
}

#[test]
fn bad_signing_settings_name_their_path() {
    let yaml = r#"
ingress:
  auth:
    - standard_webhooks: { secrets: ["MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"] }
    - standard_webhooks: { secrets: [] }
    - sas_token_key: "not base64!"
    - { sas_key: a, bearer: b }
sinks:
  a:
    http:
      url: http://127.0.0.1:9/a
      sign: { standard_webhooks: { secrets: ["whsec_%%%"] } }
  b:
    http:
      url: http://127.0.0.1:9/b
      sign: { hmac: { header: "bad header", secret: s, encoding: base32 } }
  c:
    http:
      url: http://127.0.0.1:9/c
      sign: { hmac: { secret: s }, standard_webhooks: { secrets: [] } }
  d:
    http:
      url: http://127.0.0.1:9/d
      sign: { hmac: { header: x-sig, secret: s, extra: 1 } }
routes: [ { name: all, to: [a] } ]
"#;
    let errors = errors(yaml);
    assert_error(
        &errors,
        "ingress.auth[0].standard_webhooks.secrets[0]",
        "whsec_",
    );
    assert_error(
        &errors,
        "ingress.auth[1].standard_webhooks.secrets",
        "at least one",
    );
    assert_error(&errors, "ingress.auth[2].sas_token_key", "base64");
    assert_error(&errors, "ingress.auth[3]", "exactly one of");
    assert_error(
        &errors,
        "sinks.a.http.sign.standard_webhooks.secrets[0]",
        "base64",
    );
    assert_error(
        &errors,
        "sinks.b.http.sign.hmac.header",
        "invalid header name",
    );
    assert_error(&errors, "sinks.b.http.sign.hmac.encoding", "hex | base64");
    assert_error(
        &errors,
        "sinks.c.http.sign",
        "exactly one of standard_webhooks, hmac",
    );
    assert_error(&errors, "sinks.d.http.sign.hmac.extra", "unknown key");
}

#[test]
fn concurrency_is_a_number_adaptive_or_bounds() {
    let config = load_ok(
        r#"
sinks:
  fixed: { log: {}, concurrency: "12" }
  auto: { log: {}, concurrency: adaptive }
  bounded: { log: {}, concurrency: { min: 2, max: 40 } }
  floor: { log: {}, concurrency: { min: 3 } }
routes: [{ name: r, to: [fixed, auto, bounded, floor] }]
"#,
    );
    let sink = |name: &str| &config.sinks[name];
    assert_eq!(
        (sink("fixed").concurrency, sink("fixed").adaptive),
        (12, None)
    );
    assert_eq!(sink("auto").concurrency, 256);
    assert_eq!(sink("auto").adaptive, Some(AdaptiveConcurrency { min: 1 }));
    assert_eq!(sink("bounded").concurrency, 40);
    assert_eq!(
        sink("bounded").adaptive,
        Some(AdaptiveConcurrency { min: 2 })
    );
    assert_eq!(sink("floor").concurrency, 256);
    assert_eq!(sink("floor").adaptive, Some(AdaptiveConcurrency { min: 3 }));

    let errors = errors(
        r#"
sinks:
  a: { log: {}, concurrency: { min: 5, max: 2 } }
  b: { log: {}, concurrency: { min: 0 } }
  c: { log: {}, concurrency: { most: 4 } }
  d: { log: {}, concurrency: adaptively }
routes: [{ name: r, to: [a, b, c, d] }]
"#,
    );
    assert_error(
        &errors,
        "sinks.a.concurrency",
        "min (5) must not be above max (2)",
    );
    assert_error(
        &errors,
        "sinks.b.concurrency.min",
        "expected an integer in 1..=10000",
    );
    assert_error(
        &errors,
        "sinks.c.concurrency.most",
        "unknown key (allowed here: min, max)",
    );
    assert_error(&errors, "sinks.d.concurrency", "`adaptive` or { min, max }");
}
