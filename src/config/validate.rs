//! Raw tree → validated [`Config`]; every error carries its YAML path, and all are reported.
//!
//! Each function reads all the fields it can before combining them, so one bad value never
//! hides the next. Imports nothing internal outside `config`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use axum::http::{HeaderName, HeaderValue, Uri};
use tracing::Level;

use super::admin;
use super::delivery;
use super::env::{Node, Obj};
use super::model::{self, Operand, Reader};
use super::nats;
use super::schedules;
use super::telemetry;
use super::{
    env, AdvancedFilter, AuthRule, Condition, Config, ConfigError, ExecSinkConfig, FileSinkConfig,
    HandlerSinkConfig, HttpFormat, HttpSinkConfig, IngressConfig, LogSinkConfig, MatchConfig,
    RetryPolicy, RouteConfig, SinkConfig, SinkKind, SpoolBackend, SpoolConfig, SubjectFilter,
};
use super::{DeliveryOrder, Priority};

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
const MIB: usize = 1 << 20;

const FORMATS: &[(&str, HttpFormat)] = &[
    ("cloudevents-binary", HttpFormat::CloudEventsBinary),
    ("cloudevents-structured", HttpFormat::CloudEventsStructured),
    ("eventgrid", HttpFormat::EventGrid),
];

const LEVELS: &[(&str, Level)] = &[
    ("trace", Level::TRACE),
    ("debug", Level::DEBUG),
    ("info", Level::INFO),
    ("warn", Level::WARN),
    ("error", Level::ERROR),
];

/// Parses, interpolates, overlays and validates configuration text.
pub(super) fn load(
    text: &str,
    origin: &Path,
    vars: &BTreeMap<String, String>,
) -> Result<Config, ConfigError> {
    let tree = env::merged_tree(text, origin, vars)?;
    let mut rd = Reader::new(vars);
    let config = config(&mut rd, &Node::root(&tree));
    let errors = rd.into_errors();
    // Every `None` records its reason, so a missing config always comes with errors.
    match config {
        Some(config) if errors.is_empty() => Ok(config),
        _ => Err(ConfigError::Invalid(errors)),
    }
}

fn config(rd: &mut Reader<'_>, root: &Node<'_>) -> Option<Config> {
    let top = rd.object(root, &model::ROOT)?;
    let listen = rd.or(
        top.get("listen"),
        SocketAddr::from(([0, 0, 0, 0], 8080)),
        |rd, n| {
            rd.parsed(
                n,
                "socket address (e.g. 0.0.0.0:8080)",
                str::parse::<SocketAddr>,
            )
        },
    );
    let grace = rd.or(top.get("shutdown_grace"), DEFAULT_TIMEOUT, Reader::duration);
    let spool = rd
        .section(&top, "spool", &model::SPOOL)
        .and_then(|o| spool(rd, &o));
    let ingress = rd
        .section(&top, "ingress", &model::INGRESS)
        .and_then(|o| ingress(rd, &o));
    let sink_nodes = rd.or(top.get("sinks"), Vec::new(), Reader::entries);
    let names: Vec<String> = sink_nodes
        .iter()
        .flatten()
        .map(|(name, _)| name.clone())
        .collect();
    let sinks = sink_nodes.map(|nodes| sinks(rd, nodes, &names));
    let routes = rd.or(top.get("routes"), Vec::new(), |rd, n| routes(rd, n, &names));
    let schedules = rd.or(top.get("schedules"), Vec::new(), schedules::read);
    let admin = admin::read(rd, &top);
    let telemetry = telemetry::read(rd, &top);
    let (mut spool, ingress) = (spool?, ingress?);
    if let Some(nats) = &mut spool.nats {
        nats.duplicate_window = ingress
            .dedup_window
            .unwrap_or(nats::DEFAULT_DUPLICATE_WINDOW);
    }
    Some(Config {
        listen: listen?,
        spool,
        ingress,
        sinks: sinks??,
        routes: routes?,
        schedules: schedules?,
        shutdown_grace: grace?,
        admin: admin?,
        telemetry: telemetry?,
    })
}

fn spool(rd: &mut Reader<'_>, o: &Obj<'_>) -> Option<SpoolConfig> {
    let backend = rd.or(o.get("backend"), SpoolBackend::Embedded, |rd, n| {
        rd.choice(
            n,
            "backend",
            &[
                ("embedded", SpoolBackend::Embedded),
                ("memory", SpoolBackend::Memory),
                ("nats", SpoolBackend::Nats),
            ],
        )
    });
    let nats = nats::read_spool(rd, o);
    let path = rd.or(o.get("path"), PathBuf::from("./data"), |rd, n| {
        rd.text(n).map(PathBuf::from)
    });
    let max_bytes = rd.or(o.get("max_bytes"), 1 << 30, |rd, n| match rd.size(n)? {
        0 => rd.fail(&n.path, "must be at least 1 byte"),
        size => Some(size),
    });
    let backend = backend?;
    Some(SpoolConfig {
        backend,
        path: path?,
        max_bytes: max_bytes?,
        nats: Some(nats?).filter(|_| backend == SpoolBackend::Nats),
    })
}

fn ingress(rd: &mut Reader<'_>, o: &Obj<'_>) -> Option<IngressConfig> {
    let bytes = |rd: &mut Reader<'_>, n: &Node<'_>| {
        let size = rd.size(n)?;
        match usize::try_from(size) {
            Ok(size) if size > 0 => Some(size),
            _ => rd.fail(&n.path, "must be at least 1 byte and fit in memory"),
        }
    };
    let max_event_bytes = rd.or(o.get("max_event_bytes"), MIB, bytes);
    let max_request_bytes = rd.or(o.get("max_request_bytes"), MIB, bytes);
    let max_batch_events = rd.or(o.get("max_batch_events"), 5000, |rd, n| {
        rd.integer(n, 1..=5000)
    });
    let auth = rd.or(o.get("auth"), Vec::new(), |rd, n| rd.each(n, auth_rule));
    let origins = vec!["*".to_owned()];
    let allowed_origins = rd.or(o.get("allowed_origins"), origins, |rd, n| {
        rd.each(n, Reader::text)
    });
    let allowed_rate = rd.or(o.get("allowed_rate"), None, |rd, n| {
        rd.integer(n, 1..=u64::from(u32::MAX)).map(Some)
    });
    let dedup_window = rd.or(o.get("dedup_window"), None, |rd, n| {
        match rd.duration(n)? {
            window if window.is_zero() => rd.fail(&n.path, "must be longer than zero"),
            window => Some(Some(window)),
        }
    });
    Some(IngressConfig {
        max_event_bytes: max_event_bytes?,
        max_request_bytes: max_request_bytes?,
        max_batch_events: max_batch_events?,
        auth: auth?,
        allowed_origins: allowed_origins?,
        allowed_rate: allowed_rate?,
        dedup_window: dedup_window?,
    })
}

fn auth_rule(rd: &mut Reader<'_>, node: &Node<'_>) -> Option<AuthRule> {
    let o = rd.object(node, &model::AUTH)?;
    match (o.get("sas_key"), o.get("bearer")) {
        (Some(key), None) => rd.text(&key).map(AuthRule::SasKey),
        (None, Some(token)) => rd.text(&token).map(AuthRule::Bearer),
        _ => rd.fail(&node.path, "needs exactly one of sas_key, bearer"),
    }
}

// === Sinks ===

fn sinks(
    rd: &mut Reader<'_>,
    nodes: Vec<(String, Node<'_>)>,
    names: &[String],
) -> Option<BTreeMap<String, SinkConfig>> {
    let sinks: Vec<_> = nodes
        .into_iter()
        .map(|(name, n)| sink(rd, name, &n, names))
        .collect();
    sinks
        .into_iter()
        .map(|s| s.map(|s| (s.name.clone(), s)))
        .collect()
}

fn sink(
    rd: &mut Reader<'_>,
    name: String,
    node: &Node<'_>,
    names: &[String],
) -> Option<SinkConfig> {
    if name.trim().is_empty() {
        return rd.fail(&node.path, "a sink name must not be empty");
    }
    let o = rd.object(node, &model::SINK)?;
    let kind = sink_kind(rd, &o);
    let concurrency = rd.or(o.get("concurrency"), 16, |rd, n| rd.integer(n, 1..=10_000));
    let retry = rd
        .section(&o, "retry", &model::RETRY)
        .and_then(|o| retry(rd, &o));
    let dead_letter = rd.or(o.get("dead_letter"), None, |rd, n| {
        let target = sink_ref(rd, n, names)?;
        if target == name {
            return rd.fail(&n.path, "must name another sink, not the sink itself");
        }
        Some(Some(target))
    });
    let delivery = delivery::read(rd, &o, &name, names);
    Some(SinkConfig {
        name,
        kind: kind?,
        concurrency: concurrency?,
        retry: retry?,
        dead_letter: dead_letter?,
        delivery: delivery?,
    })
}

fn sink_kind(rd: &mut Reader<'_>, o: &Obj<'_>) -> Option<SinkKind> {
    let kinds: Vec<&str> = model::SINK_KINDS
        .iter()
        .copied()
        .filter(|k| o.has(k))
        .collect();
    let [kind] = kinds[..] else {
        let found = if kinds.is_empty() {
            "none".to_owned()
        } else {
            kinds.join(" and ")
        };
        let expected = model::SINK_KINDS.join(", ");
        return rd.fail(
            &o.path,
            format!("needs exactly one of {expected} (found {found})"),
        );
    };
    match kind {
        "http" => {
            let o = rd.section(o, kind, &model::HTTP)?;
            http_sink(rd, &o).map(SinkKind::Http)
        }
        "log" => {
            let o = rd.section(o, kind, &model::LOG)?;
            log_sink(rd, &o).map(SinkKind::Log)
        }
        "file" => {
            let o = rd.section(o, kind, &model::FILE)?;
            let path = rd.required(&o, "path", Reader::text)?;
            Some(SinkKind::File(FileSinkConfig {
                path: PathBuf::from(path),
            }))
        }
        "exec" => {
            let o = rd.section(o, kind, &model::EXEC)?;
            exec_sink(rd, &o).map(SinkKind::Exec)
        }
        "nats" => nats::read_sink(rd, o).map(SinkKind::Nats),
        _ => {
            let o = rd.section(o, kind, &model::HANDLER)?;
            let name = rd.required(&o, "name", Reader::text)?;
            Some(SinkKind::Handler(HandlerSinkConfig { name }))
        }
    }
}

fn http_sink(rd: &mut Reader<'_>, o: &Obj<'_>) -> Option<HttpSinkConfig> {
    let url = rd.required(o, "url", |rd, n| {
        let uri = rd.parsed(n, "URL", str::parse::<Uri>)?;
        let web = matches!(uri.scheme_str(), Some("http" | "https")) && uri.host().is_some();
        if web {
            Some(uri)
        } else {
            rd.fail(&n.path, "expected an absolute http:// or https:// URL")
        }
    });
    let format = rd.or(o.get("format"), HttpFormat::CloudEventsBinary, |rd, n| {
        rd.choice(n, "format", FORMATS)
    });
    let timeout = rd.or(o.get("timeout"), DEFAULT_TIMEOUT, Reader::duration);
    let headers = rd.or(o.get("headers"), Vec::new(), |rd, n| {
        let headers: Vec<_> = rd
            .entries(n)?
            .iter()
            .map(|(k, n)| header(rd, k, n))
            .collect();
        headers.into_iter().collect()
    });
    Some(HttpSinkConfig {
        url: url?,
        format: format?,
        timeout: timeout?,
        headers: headers?,
    })
}

fn header(rd: &mut Reader<'_>, name: &str, node: &Node<'_>) -> Option<(HeaderName, HeaderValue)> {
    let Ok(name) = HeaderName::try_from(name) else {
        return rd.fail(&node.path, "invalid header name");
    };
    let value = rd.string(node)?;
    match HeaderValue::try_from(value) {
        Ok(value) => Some((name, value)),
        // The value may hold an interpolated secret, so it is not repeated here.
        Err(_) => rd.fail(&node.path, "invalid header value (control characters?)"),
    }
}

fn log_sink(rd: &mut Reader<'_>, o: &Obj<'_>) -> Option<LogSinkConfig> {
    let level = rd.or(o.get("level"), Level::INFO, |rd, n| {
        rd.choice(n, "level", LEVELS)
    });
    Some(LogSinkConfig { level: level? })
}

fn exec_sink(rd: &mut Reader<'_>, o: &Obj<'_>) -> Option<ExecSinkConfig> {
    let command = rd.required(o, "command", |rd, n| {
        rd.some(n, "must name a program", Reader::text)
    });
    let timeout = rd.or(o.get("timeout"), DEFAULT_TIMEOUT, Reader::duration);
    Some(ExecSinkConfig {
        command: command?,
        timeout: timeout?,
    })
}

fn retry(rd: &mut Reader<'_>, o: &Obj<'_>) -> Option<RetryPolicy> {
    let defaults = RetryPolicy::default();
    let max_attempts = rd.or(o.get("max_attempts"), defaults.max_attempts, |rd, n| {
        rd.integer(n, 1..=100)
    });
    let event_ttl = rd.or(o.get("event_ttl"), defaults.event_ttl, |rd, n| {
        let ttl = rd.duration(n)?;
        if ttl.is_zero() {
            rd.fail(&n.path, "must be longer than 0s")
        } else {
            Some(ttl)
        }
    });
    let schedule = rd.or(o.get("schedule"), defaults.schedule, |rd, n| {
        rd.some(n, "needs at least one delay", Reader::duration)
    });
    let some = |rd: &mut Reader<'_>, n: &Node<'_>| delivery::positive(rd, n).map(Some);
    let max_backoff = rd.or(o.get("max_backoff"), None, some);
    let max_retry_after = rd.or(o.get("max_retry_after"), None, some);
    Some(RetryPolicy {
        max_attempts: max_attempts?,
        event_ttl: event_ttl?,
        schedule: schedule?,
        max_backoff: max_backoff?,
        max_retry_after: max_retry_after?,
    })
}

/// Reads a sink name that must be defined under `sinks:`.
fn sink_ref(rd: &mut Reader<'_>, node: &Node<'_>, names: &[String]) -> Option<String> {
    let name = rd.text(node)?;
    if names.contains(&name) {
        return Some(name);
    }
    let defined = if names.is_empty() {
        "none".to_owned()
    } else {
        names.join(", ")
    };
    rd.fail(
        &node.path,
        format!("unknown sink `{name}` (defined sinks: {defined})"),
    )
}

// === Routes ===

fn routes(rd: &mut Reader<'_>, node: &Node<'_>, names: &[String]) -> Option<Vec<RouteConfig>> {
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    rd.each(node, |rd, n| route(rd, n, names, &mut seen))
}

fn route(
    rd: &mut Reader<'_>,
    node: &Node<'_>,
    names: &[String],
    seen: &mut BTreeMap<String, String>,
) -> Option<RouteConfig> {
    let o = rd.object(node, &model::ROUTE)?;
    let name = rd.required(&o, "name", |rd, n| {
        let name = rd.text(n)?;
        match seen.get(&name) {
            Some(first) => rd.fail(
                &n.path,
                format!("duplicate route name `{name}` (first at {first})"),
            ),
            None => {
                seen.insert(name.clone(), n.path.clone());
                Some(name)
            }
        }
    });
    let filter = rd
        .section(&o, "match", &model::MATCH)
        .and_then(|o| filter(rd, &o));
    let to = rd.required(&o, "to", |rd, n| {
        let targets = rd.some(n, "needs at least one sink", |rd, n| sink_ref(rd, n, names))?;
        let unique: BTreeSet<&String> = targets.iter().collect();
        if unique.len() < targets.len() {
            return rd.fail(&n.path, "names a sink twice");
        }
        Some(targets)
    });
    let priority = rd.or(o.get("priority"), Priority::Normal, |rd, n| {
        let choices = Priority::ALL.map(|p| (p.name(), p));
        rd.choice(n, "priority", &choices)
    });
    let ordering = rd.or(o.get("ordering"), DeliveryOrder::Any, |rd, n| {
        rd.choice(n, "ordering", &[("subject", DeliveryOrder::Subject)])
    });
    Some(RouteConfig {
        name: name?,
        filter: filter?,
        to: to?,
        priority: priority?,
        ordering: ordering?,
    })
}

fn filter(rd: &mut Reader<'_>, o: &Obj<'_>) -> Option<MatchConfig> {
    let types = rd.or(o.get("types"), Vec::new(), |rd, n| rd.each(n, pattern));
    let sources = rd.or(o.get("source"), Vec::new(), |rd, n| {
        match n.value.is_string() {
            true => pattern(rd, n).map(|s| vec![s]),
            false => rd.each(n, pattern),
        }
    });
    let subject = rd.or(o.get("subject"), None, |rd, n| subject(rd, n).map(Some));
    let advanced = rd.or(o.get("advanced"), Vec::new(), |rd, n| rd.each(n, advanced));
    Some(MatchConfig {
        types: types?,
        sources: sources?,
        subject: subject?,
        advanced: advanced?,
    })
}

/// Reads a type or source pattern: exact, or with `*` as its last character.
fn pattern(rd: &mut Reader<'_>, node: &Node<'_>) -> Option<String> {
    let text = rd.text(node)?;
    match text.find('*') {
        Some(at) if at + 1 != text.len() => rd.fail(
            &node.path,
            format!("`{text}`: `*` is allowed only as the last character"),
        ),
        _ => Some(text),
    }
}

fn subject(rd: &mut Reader<'_>, node: &Node<'_>) -> Option<SubjectFilter> {
    let o = rd.object(node, &model::SUBJECT)?;
    let begins_with = rd.or(o.get("begins_with"), None, |rd, n| rd.text(n).map(Some));
    let ends_with = rd.or(o.get("ends_with"), None, |rd, n| rd.text(n).map(Some));
    let case_sensitive = rd.or(o.get("case_sensitive"), false, Reader::boolean);
    if o.get("begins_with").is_none() && o.get("ends_with").is_none() {
        return rd.fail(&node.path, "needs begins_with, ends_with or both");
    }
    Some(SubjectFilter {
        begins_with: begins_with?,
        ends_with: ends_with?,
        case_sensitive: case_sensitive?,
    })
}

// === Advanced filters ===

fn advanced(rd: &mut Reader<'_>, node: &Node<'_>) -> Option<AdvancedFilter> {
    let o = rd.object(node, &model::ADVANCED)?;
    let key = rd.required(&o, "key", Reader::text);
    let op = rd.required(&o, "op", |rd, n| {
        let name = rd.string(n)?;
        if let Some((op, operand)) = model::OPERATORS.iter().find(|(op, _)| *op == name) {
            return Some((*op, operand));
        }
        let valid: Vec<&str> = model::OPERATORS.iter().map(|(op, _)| *op).collect();
        let valid = valid.join(", ");
        rd.fail(
            &n.path,
            format!("unknown operator `{name}` (expected one of {valid})"),
        )
    });
    let condition = op.and_then(|(op, operand)| condition(rd, &o, op, operand));
    Some(AdvancedFilter {
        key: key?,
        condition: condition?,
    })
}

fn condition(rd: &mut Reader<'_>, o: &Obj<'_>, op: &str, operand: &Operand) -> Option<Condition> {
    let single = matches!(operand, Operand::Number(_) | Operand::Bool(_));
    let node = match (o.get("value"), o.get("values")) {
        (None, None) => None,
        (Some(n), None) | (None, Some(n)) if matches!(operand, Operand::Nothing(_)) => {
            return rd.fail(&n.path, format!("{op} takes no value"));
        }
        (_, Some(n)) if single => {
            return rd.fail(&n.path, format!("{op} takes one `value`, not `values`"));
        }
        (Some(_), Some(n)) => return rd.fail(&n.path, "give `value` or `values`, not both"),
        (Some(n), None) | (None, Some(n)) => Some(n),
    };
    let Some(node) = node else {
        let wanted = if single { "value" } else { "values" };
        return match operand {
            Operand::Nothing(condition) => Some(condition.clone()),
            _ => rd.fail(&o.path, format!("{op} needs `{wanted}`")),
        };
    };
    let scalar = !node.value.is_array();
    match operand {
        Operand::Number(make) => rd.number(&node).map(make),
        Operand::Bool(make) => rd.boolean(&node).map(make),
        Operand::Numbers(make) => operands(rd, &node, scalar, Reader::number).map(make),
        Operand::Strings(make) => operands(rd, &node, scalar, Reader::string).map(make),
        Operand::Ranges(make) => {
            let pair = node
                .value
                .as_array()
                .is_some_and(|a| a.iter().all(|v| v.is_number()));
            operands(rd, &node, pair, range).map(make)
        }
        Operand::Nothing(condition) => Some(condition.clone()),
    }
}

/// Reads the operands of a list or range operator; `single` reads one operand as a list of one.
fn operands<'a, 'v, T>(
    rd: &mut Reader<'a>,
    node: &Node<'v>,
    single: bool,
    read: impl FnMut(&mut Reader<'a>, &Node<'v>) -> Option<T>,
) -> Option<Vec<T>> {
    let mut read = read;
    if single {
        return read(rd, node).map(|one| vec![one]);
    }
    rd.some(node, "needs at least one value", read)
}

/// Reads one `[low, high]` range of a range operator.
fn range(rd: &mut Reader<'_>, node: &Node<'_>) -> Option<(f64, f64)> {
    let bounds = rd.list(node)?;
    let [low, high] = &bounds[..] else {
        return rd.fail(&node.path, "expected a range [low, high]");
    };
    let (low, high) = (rd.number(low), rd.number(high));
    let (low, high) = (low?, high?);
    if low > high {
        return rd.fail(&node.path, format!("range [{low}, {high}] has low > high"));
    }
    Some((low, high))
}
