//! The raw shape of `routes.yaml`: which keys each mapping takes, what each means, and which
//! keys of the contract are reserved for later. Tables only; `validate` reads the YAML tree
//! against them, so an unknown key is reported with the keys allowed in its place.
//!
//! Below the tables, [`Reader`] walks the raw tree (mappings against their shape, lists,
//! required and optional keys) and collects every "expected …, found …" error; its reads of
//! leaf values live in `env`, next to the interpolation they go through.
//!
//! Imports nothing internal outside `config`.

use std::collections::BTreeMap;

use serde_json::Value as Json;

use super::env::{Node, Obj};
use super::{Condition, FieldError};

/// The keys one YAML mapping accepts.
#[derive(Debug)]
pub(super) struct Shape {
    /// Keys read today, separated by spaces.
    pub(super) keys: &'static str,
    /// Keys of the contract not implemented yet ("not supported yet", not "unknown key").
    pub(super) later: &'static str,
}

impl Shape {
    /// Whether `key` is read today.
    pub(super) fn knows(&self, key: &str) -> bool {
        self.keys.split_whitespace().any(|k| k == key)
    }

    /// Whether `key` belongs to a later version of the contract.
    pub(super) fn is_later(&self, key: &str) -> bool {
        self.later.split_whitespace().any(|k| k == key)
    }

    /// The keys read today, for error messages (`listen, spool, …`).
    pub(super) fn allowed(&self) -> String {
        self.keys.replace(' ', ", ")
    }
}

/// The top level: `listen` (ingress address, default 0.0.0.0:8080), `shutdown_grace` (how long
/// shutdown waits for in-flight work, default 30s), `spool`, `ingress`, `sinks` (delivery
/// targets by name), `routes` (the routing table, in order), `schedules` (cron-scheduled
/// events), `admin_listen` and `admin` (the admin server; read in `admin`), `telemetry`
/// (trace export; read in `telemetry`) and `sources` (webhook endpoints by name; read in
/// `sources`), `max_hops` (most replies in a chain, default 8; read in `reply`) and `sagas`
/// (multi-step workflows; read in `sagas`).
pub(super) const ROOT: Shape = Shape {
    keys: "listen shutdown_grace spool ingress sinks routes schedules admin_listen admin \
           telemetry sources max_hops sagas",
    later: "",
};

/// `spool:` — `backend` (embedded, the default, memory or nats), `path` (directory
/// for on-disk state, default ./data), `max_bytes` (most event bytes stored, default 1GiB),
/// `dead_letter_ttl` (how long a dead letter is kept, default 14d, `0` keeps it), `nats`
/// (the NATS backend's settings; read in `nats`), `history_ttl` and `history_max_bytes`
/// (delivery history; read in `history`), `retain_delivered` (how long delivered events
/// are kept for replay; off when absent; not with `nats`), and `saga_retention` (how long a
/// finished saga instance is kept, default 7d; read in `sagas`).
pub(super) const SPOOL: Shape = Shape {
    keys: "backend path max_bytes dead_letter_ttl nats history_ttl history_max_bytes \
           retain_delivered saga_retention",
    later: "",
};

/// `ingress:` — `max_event_bytes` and `max_request_bytes` (sizes, default 1MiB),
/// `max_batch_events` (1..=5000, default 5000), `auth` (a list of credentials of which a request
/// presents one), `allowed_origins` and `allowed_rate` (requests per minute), both granted by
/// the CloudEvents `OPTIONS` handshake, and `dedup_window` (a duration: a repeat of the same
/// `source` and `id` within it is acknowledged and dropped; off when absent), and the limits
/// on what one client may hold: `header_timeout` (default 10s; also closes idle connections),
/// `body_timeout` (default 30s) and `max_connections` (default 1024), and `tls` (TLS
/// termination; read in `server_tls`).
pub(super) const INGRESS: Shape = Shape {
    keys: "max_event_bytes max_request_bytes max_batch_events auth allowed_origins allowed_rate \
           dedup_window header_timeout body_timeout max_connections tls",
    later: "",
};

/// One entry of `ingress.auth`, exactly one of: `sas_key` (an Event Grid access key),
/// `bearer` (a bearer token), `sas_token_key` (the access key that signs Event Grid SAS
/// tokens) or `standard_webhooks` (secrets of signed senders; read in `sign`).
pub(super) const AUTH: Shape = Shape {
    keys: "sas_key bearer sas_token_key standard_webhooks",
    later: "",
};

/// `standard_webhooks:` (of `ingress.auth` or `http.sign`) — `secrets` (`whsec_` + base64 key;
/// several during a rotation).
pub(super) const STANDARD_WEBHOOKS: Shape = Shape {
    keys: "secrets",
    later: "",
};

/// One sink under `sinks:` — exactly one kind from [`SINK_KINDS`], `concurrency` (deliveries in
/// flight, 1..=10000, default 16), `retry`, `dead_letter` (another sink, which receives
/// dead-lettered deliveries), the delivery controls read in `delivery`: `rate_limit`,
/// `batch`, `circuit_breaker` and `fallback`, `transform` (a jq program run on each event at
/// delivery), and `reply` and `max_hops` (read in `reply`).
pub(super) const SINK: Shape = Shape {
    keys: "http log file exec handler nats concurrency retry dead_letter rate_limit batch \
           circuit_breaker fallback transform reply max_hops",
    later: "",
};

/// `concurrency: { min, max }` — an adaptive in-flight limit between the bounds.
pub(super) const ADAPTIVE: Shape = Shape {
    keys: "min max",
    later: "",
};

/// The sink keys that name its kind.
pub(super) const SINK_KINDS: &[&str] = &["http", "log", "file", "exec", "handler", "nats"];

/// `http:` — `url` (absolute http or https, required), `format` (cloudevents-binary, the
/// default, cloudevents-structured or eventgrid), `timeout` (per attempt, default 30s) and
/// `headers` (name → value, sent with every delivery), `sign` (how each request is
/// signed; read in `sign`), `tls` and `proxy` (how the target is reached; read in
/// `outbound`).
pub(super) const HTTP: Shape = Shape {
    keys: "url format timeout headers sign tls proxy",
    later: "",
};

/// `http.tls:` — `ca` (a PEM file of certificates trusted besides the system's roots),
/// `client_cert` and `client_key` (PEM files presented to a target that asks; both or neither).
pub(super) const HTTP_TLS: Shape = Shape {
    keys: "ca client_cert client_key",
    later: "",
};

/// `http.sign:` — exactly one of `standard_webhooks` and `hmac`.
pub(super) const SIGN: Shape = Shape {
    keys: "standard_webhooks hmac",
    later: "",
};

/// `sign.hmac:` — `header` and `secret` (required), `prefix` (default empty) and `encoding`
/// (hex, the default, or base64).
pub(super) const HMAC: Shape = Shape {
    keys: "header secret prefix encoding",
    later: "",
};

/// `log:` — `level`: trace, debug, info (default), warn or error.
pub(super) const LOG: Shape = Shape {
    keys: "level",
    later: "",
};

/// `file:` — `path` (the file events are appended to, required).
pub(super) const FILE: Shape = Shape {
    keys: "path",
    later: "",
};

/// `exec:` — `command` (program and arguments, required), `timeout` (default 30s) and `env`
/// (variables passed through from the daemon's environment, default PATH, HOME and LANG).
pub(super) const EXEC: Shape = Shape {
    keys: "command timeout env",
    later: "",
};

/// `handler:` — `name` (what the embedding program registered, required).
pub(super) const HANDLER: Shape = Shape {
    keys: "name",
    later: "",
};

/// `retry:` — `max_attempts` (the first included, 1..=100, default 30), `event_ttl` (age past
/// which an event is not retried, default 24h) and `schedule` (delays between attempts, the last
/// repeating; default Event Grid's), `max_backoff` (cap on a scheduled delay) and
/// `max_retry_after` (cap on an honoured `Retry-After`).
pub(super) const RETRY: Shape = Shape {
    keys: "max_attempts event_ttl schedule max_backoff max_retry_after",
    later: "",
};

/// One entry of `routes:` — `name` (unique, required), `match` (absent: every event), `to`
/// (sink names, required, non-empty), `priority` (`high | normal | low`, default normal) and
/// `ordering` (`subject`, or absent for none), `sql` (a CESQL v1 filter, AND-ed with `match`)
/// and `transform` (a jq program run on each event delivered through the route).
pub(super) const ROUTE: Shape = Shape {
    keys: "name match to priority ordering sql transform",
    later: "",
};

/// `match:` — `types` and `source` (exact, or ending in `*`; `source` is one or a list),
/// `subject` and `advanced` (Event Grid advanced filters, all of which must hold).
pub(super) const MATCH: Shape = Shape {
    keys: "types source subject advanced",
    later: "",
};

/// `match.subject:` — `begins_with` and/or `ends_with`, and `case_sensitive` (default false).
pub(super) const SUBJECT: Shape = Shape {
    keys: "begins_with ends_with case_sensitive",
    later: "",
};

/// One entry of `match.advanced:` — `key` (`data.a.b`, `subject`, `type`, …), `op` (an Event
/// Grid operator) and its operand: `value` or `values`, as [`OPERATORS`] says.
pub(super) const ADVANCED: Shape = Shape {
    keys: "key op value values",
    later: "",
};

/// What an advanced-filter operator takes as its operand, and how it becomes a [`Condition`].
#[derive(Debug, Clone)]
pub(super) enum Operand {
    /// `value`: one number.
    Number(fn(f64) -> Condition),
    /// `values`: a list of numbers.
    Numbers(fn(Vec<f64>) -> Condition),
    /// `values`: a list of `[low, high]` pairs.
    Ranges(fn(Vec<(f64, f64)>) -> Condition),
    /// `value`: a boolean.
    Bool(fn(bool) -> Condition),
    /// `values`: a list of strings.
    Strings(fn(Vec<String>) -> Condition),
    /// Neither `value` nor `values`.
    Nothing(Condition),
}

/// The Event Grid advanced-filter operators, by name.
pub(super) const OPERATORS: &[(&str, Operand)] = {
    use Condition as C;
    use Operand as O;
    &[
        ("NumberIn", O::Numbers(C::NumberIn)),
        ("NumberNotIn", O::Numbers(C::NumberNotIn)),
        ("NumberLessThan", O::Number(C::NumberLessThan)),
        ("NumberGreaterThan", O::Number(C::NumberGreaterThan)),
        (
            "NumberLessThanOrEquals",
            O::Number(C::NumberLessThanOrEquals),
        ),
        (
            "NumberGreaterThanOrEquals",
            O::Number(C::NumberGreaterThanOrEquals),
        ),
        ("NumberInRange", O::Ranges(C::NumberInRange)),
        ("NumberNotInRange", O::Ranges(C::NumberNotInRange)),
        ("BoolEquals", O::Bool(C::BoolEquals)),
        ("StringIn", O::Strings(C::StringIn)),
        ("StringNotIn", O::Strings(C::StringNotIn)),
        ("StringContains", O::Strings(C::StringContains)),
        ("StringNotContains", O::Strings(C::StringNotContains)),
        ("StringBeginsWith", O::Strings(C::StringBeginsWith)),
        ("StringNotBeginsWith", O::Strings(C::StringNotBeginsWith)),
        ("StringEndsWith", O::Strings(C::StringEndsWith)),
        ("StringNotEndsWith", O::Strings(C::StringNotEndsWith)),
        ("IsNullOrUndefined", O::Nothing(C::IsNullOrUndefined)),
        ("IsNotNull", O::Nothing(C::IsNotNull)),
    ]
};

// === Reading the raw tree ===

/// Reads the raw tree into typed values, collecting every error instead of stopping.
///
/// Each read returns `None` after recording why, so a caller reads all its fields first and
/// combines them with `?` last.
#[derive(Debug)]
pub(super) struct Reader<'a> {
    /// The environment `${VAR}` takes values from (see `env`, which reads leaf values).
    pub(super) vars: &'a BTreeMap<String, String>,
    errors: Vec<FieldError>,
}

impl<'a> Reader<'a> {
    /// A reader interpolating `${VAR}` from `vars`.
    pub(super) fn new(vars: &'a BTreeMap<String, String>) -> Self {
        Self {
            vars,
            errors: Vec::new(),
        }
    }

    /// The errors recorded, in the order they were found.
    pub(super) fn into_errors(self) -> Vec<FieldError> {
        self.errors
    }

    /// Records an error at `path`.
    pub(super) fn error(&mut self, path: &str, message: impl Into<String>) {
        let path = if path.is_empty() { "(top level)" } else { path };
        self.errors.push(FieldError {
            path: path.to_owned(),
            message: message.into(),
        });
    }

    /// Records an error at `path` and gives up on the value there.
    pub(super) fn fail<T>(&mut self, path: &str, message: impl Into<String>) -> Option<T> {
        self.error(path, message);
        None
    }

    /// Records that `node` is not what was `expected`, saying what it is instead.
    pub(super) fn mismatch(&mut self, node: &Node<'_>, expected: &str) {
        let message = format!("expected {expected}, found {}", describe(node.value));
        self.error(&node.path, message);
    }

    /// Reads a mapping, reporting keys its shape does not take.
    pub(super) fn object<'v>(&mut self, node: &Node<'v>, shape: &Shape) -> Option<Obj<'v>> {
        self.object_hinted(node, shape, |_| None)
    }

    /// Like [`Reader::object`], but `hint` may give a better reason than "unknown key" for a
    /// key the shape does not take.
    pub(super) fn object_hinted<'v>(
        &mut self,
        node: &Node<'v>,
        shape: &Shape,
        hint: fn(&str) -> Option<&'static str>,
    ) -> Option<Obj<'v>> {
        let map = match node.value {
            Json::Object(map) => Some(map),
            Json::Null => None,
            _ => {
                self.mismatch(node, "a mapping");
                return None;
            }
        };
        let obj = Obj {
            path: node.path.clone(),
            map,
        };
        let mut keys: Vec<&String> = map.map(|m| m.keys().collect()).unwrap_or_default();
        keys.sort();
        for key in keys.into_iter().filter(|k| !shape.knows(k)) {
            let message = if shape.is_later(key) {
                "not supported yet".to_owned()
            } else if let Some(reason) = hint(key) {
                format!("unknown key: {reason}")
            } else {
                format!("unknown key (allowed here: {})", shape.allowed())
            };
            self.error(&obj.key_path(key), message);
        }
        Some(obj)
    }

    /// Reads the mapping under `key` of `parent`; absent reads as empty.
    pub(super) fn section<'v>(
        &mut self,
        parent: &Obj<'v>,
        key: &str,
        shape: &Shape,
    ) -> Option<Obj<'v>> {
        match parent.get(key) {
            Some(node) => self.object(&node, shape),
            None => Some(Obj {
                path: parent.key_path(key),
                map: None,
            }),
        }
    }

    /// Reads a mapping with free-form keys (sink names, header names), sorted by key.
    pub(super) fn entries<'v>(&mut self, node: &Node<'v>) -> Option<Vec<(String, Node<'v>)>> {
        let Json::Object(map) = node.value else {
            self.mismatch(node, "a mapping");
            return None;
        };
        let mut entries: Vec<(String, Node<'v>)> = map
            .iter()
            .map(|(k, value)| {
                (
                    k.clone(),
                    Node {
                        path: node.key_path(k),
                        value,
                    },
                )
            })
            .collect();
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        Some(entries)
    }

    /// Reads a list.
    pub(super) fn list<'v>(&mut self, node: &Node<'v>) -> Option<Vec<Node<'v>>> {
        let Json::Array(items) = node.value else {
            self.mismatch(node, "a list");
            return None;
        };
        let path = |i: usize| format!("{}[{i}]", node.path);
        Some(
            items
                .iter()
                .enumerate()
                .map(|(i, value)| Node {
                    path: path(i),
                    value,
                })
                .collect(),
        )
    }

    /// Reads a list and every item of it with `read`, reporting the errors of all items.
    pub(super) fn each<'v, T>(
        &mut self,
        node: &Node<'v>,
        mut read: impl FnMut(&mut Self, &Node<'v>) -> Option<T>,
    ) -> Option<Vec<T>> {
        let items: Vec<Option<T>> = self.list(node)?.iter().map(|n| read(self, n)).collect();
        items.into_iter().collect()
    }

    /// Like [`Reader::each`], but an empty list is an error saying `empty`.
    pub(super) fn some<'v, T>(
        &mut self,
        node: &Node<'v>,
        empty: &str,
        read: impl FnMut(&mut Self, &Node<'v>) -> Option<T>,
    ) -> Option<Vec<T>> {
        let items = self.each(node, read)?;
        if items.is_empty() {
            return self.fail(&node.path, empty);
        }
        Some(items)
    }

    /// Reads `node` with `read`, or gives `default` when it is absent.
    pub(super) fn or<'v, T>(
        &mut self,
        node: Option<Node<'v>>,
        default: T,
        read: impl FnOnce(&mut Self, &Node<'v>) -> Option<T>,
    ) -> Option<T> {
        match node {
            Some(node) => read(self, &node),
            None => Some(default),
        }
    }

    /// Reads `key` of `obj` with `read`, reporting it missing when absent.
    pub(super) fn required<'v, T>(
        &mut self,
        obj: &Obj<'v>,
        key: &str,
        read: impl FnOnce(&mut Self, &Node<'v>) -> Option<T>,
    ) -> Option<T> {
        match obj.get(key) {
            Some(node) => read(self, &node),
            None => {
                self.error(&obj.key_path(key), "required");
                None
            }
        }
    }
}

/// What a value is, for "expected …, found …" messages.
fn describe(value: &Json) -> String {
    match value {
        Json::Null => "nothing".to_owned(),
        Json::Bool(b) => format!("{b}"),
        Json::Number(n) => format!("the number {n}"),
        Json::String(s) if s.chars().count() > 40 => {
            format!("the string \"{}…\"", s.chars().take(40).collect::<String>())
        }
        Json::String(s) => format!("the string \"{s}\""),
        Json::Array(_) => "a list".to_owned(),
        Json::Object(_) => "a mapping".to_owned(),
    }
}
