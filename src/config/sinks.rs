//! Reading `sinks:`: each sink's kind (http, log, file, exec, handler, nats), concurrency,
//! retry policy, dead-letter target, delivery policy and transform, each error with its YAML
//! path.

use std::collections::BTreeMap;
use std::path::PathBuf;

use axum::http::{HeaderName, HeaderValue, Uri};
use tracing::Level;

use super::delivery;
use super::env::{Node, Obj};
use super::model::{self, Reader};
use super::nats;
use super::outbound::{self, HttpTlsConfig, ProxySetting};
use super::sign;
use super::validate::{self, sink_ref, DEFAULT_TIMEOUT};
use super::{
    AdaptiveConcurrency, ExecSinkConfig, FileSinkConfig, HandlerSinkConfig, HttpFormat,
    HttpSinkConfig, LogSinkConfig, RetryPolicy, SinkConfig, SinkKind,
};
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

pub(super) fn sinks(
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
    let concurrency = rd.or(o.get("concurrency"), (16, None), concurrency);
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
    let transform = rd.or(o.get("transform"), None, |rd, n| {
        validate::program(rd, n).map(Some)
    });
    Some(SinkConfig {
        name,
        kind: kind?,
        concurrency: concurrency?.0,
        adaptive: concurrency?.1,
        retry: retry?,
        dead_letter: dead_letter?,
        delivery: delivery?,
        transform: transform?,
    })
}

/// Highest in-flight limit of any sink.
const MAX_CONCURRENCY: u64 = 10_000;
/// The ceiling of `concurrency: adaptive` without bounds.
const ADAPTIVE_MAX: usize = 256;

/// `concurrency:` — a number (a fixed limit), `adaptive`, or `{ min, max }` (adaptive between
/// the bounds); gives the ceiling and, when adaptive, the floor.
fn concurrency(
    rd: &mut Reader<'_>,
    node: &Node<'_>,
) -> Option<(usize, Option<AdaptiveConcurrency>)> {
    match node.value {
        serde_json::Value::Object(_) => {
            let o = rd.object(node, &model::ADAPTIVE)?;
            let min = rd.or(o.get("min"), 1, |rd, n| rd.integer(n, 1..=MAX_CONCURRENCY));
            let max = rd.or(o.get("max"), ADAPTIVE_MAX, |rd, n| {
                rd.integer(n, 1..=MAX_CONCURRENCY)
            });
            let (min, max) = (min?, max?);
            if min > max {
                return rd.fail(
                    &node.path,
                    format!("min ({min}) must not be above max ({max})"),
                );
            }
            Some((max, Some(AdaptiveConcurrency { min })))
        }
        serde_json::Value::String(text) if text == "adaptive" => {
            Some((ADAPTIVE_MAX, Some(AdaptiveConcurrency { min: 1 })))
        }
        serde_json::Value::String(text) if !text.trim().chars().all(|c| c.is_ascii_digit()) => {
            let message = format!(
                "expected an integer in 1..={MAX_CONCURRENCY}, `adaptive` or {{ min, max }}, found the string \"{text}\""
            );
            rd.fail(&node.path, message)
        }
        _ => rd
            .integer(node, 1..=MAX_CONCURRENCY)
            .map(|n: usize| (n, None)),
    }
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
            let o = match o.get(kind) {
                Some(node) => rd.object_hinted(&node, &model::HTTP, outbound::skip_verify_hint)?,
                None => rd.section(o, kind, &model::HTTP)?,
            };
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
    let sign = rd.or(o.get("sign"), None, |rd, n| {
        sign::read_sign(rd, n).map(Some)
    });
    let tls = rd.or(o.get("tls"), HttpTlsConfig::default(), outbound::read_tls);
    let proxy = rd.or(
        o.get("proxy"),
        ProxySetting::default(),
        outbound::read_proxy,
    );
    Some(HttpSinkConfig {
        url: url?,
        format: format?,
        timeout: timeout?,
        headers: headers?,
        sign: sign?,
        tls: tls?,
        proxy: proxy?,
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
        rd.some(n, "must name a program", |rd, n| {
            let text = rd.text(n)?;
            if text.contains('\0') {
                return rd.fail(&n.path, "must not contain a NUL character");
            }
            Some(text)
        })
    });
    let timeout = rd.or(o.get("timeout"), DEFAULT_TIMEOUT, Reader::duration);
    let env = rd.or(o.get("env"), default_exec_env(), |rd, n| {
        rd.each(n, env_name)
    });
    Some(ExecSinkConfig {
        command: command?,
        timeout: timeout?,
        env: env?,
    })
}

/// The variables an `exec` sink passes through when `env` is not set.
fn default_exec_env() -> Vec<String> {
    ["PATH", "HOME", "LANG"].map(str::to_owned).to_vec()
}

/// An environment variable name: not empty, without `=` or NUL.
fn env_name(rd: &mut Reader<'_>, node: &Node<'_>) -> Option<String> {
    let name = rd.text(node)?;
    if name.contains(['=', '\0']) {
        return rd.fail(&node.path, "must be a variable name (no `=` or NUL)");
    }
    Some(name)
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
