//! Raw tree → validated [`Config`]; every error carries its YAML path, and all are reported.
//!
//! Each function reads all the fields it can before combining them, so one bad value never
//! hides the next. Imports nothing internal outside `config`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::transform::Program;

use super::admin;
use super::env::{Node, Obj};
use super::history;
use super::model::{self, Reader};
use super::nats;
use super::routes;
use super::sagas;
use super::schedules;
use super::server_tls;
use super::sign;
use super::sinks;
use super::sources;
use super::telemetry;
use super::{
    env, AuthRule, Config, ConfigError, ConnectionLimits, IngressConfig, SpoolBackend, SpoolConfig,
    DEFAULT_DEAD_LETTER_TTL,
};

pub(super) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
const MIB: usize = 1 << 20;

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
    let spool_section = rd.section(&top, "spool", &model::SPOOL);
    let spool = spool_section.as_ref().and_then(|o| spool(rd, o));
    let history = spool_section.as_ref().and_then(|o| history::read(rd, o));
    let saga_retention = spool_section.as_ref().and_then(|o| sagas::retention(rd, o));
    let ingress = rd
        .section(&top, "ingress", &model::INGRESS)
        .and_then(|o| ingress(rd, &o));
    let sink_nodes = rd.or(top.get("sinks"), Vec::new(), Reader::entries);
    let names: Vec<String> = sink_nodes
        .iter()
        .flatten()
        .map(|(name, _)| name.clone())
        .collect();
    let sinks = sink_nodes.map(|nodes| sinks::sinks(rd, nodes, &names));
    let routes = rd.or(top.get("routes"), Vec::new(), |rd, n| {
        routes::routes(rd, n, &names)
    });
    let schedules = rd.or(top.get("schedules"), Vec::new(), schedules::read);
    let sagas = sagas::read(rd, &top, &names);
    let admin = admin::read(rd, &top);
    let telemetry = telemetry::read(rd, &top);
    let sources = sources::read(rd, &top);
    let max_hops = rd.or(
        top.get("max_hops"),
        super::DEFAULT_MAX_HOPS,
        super::reply::max_hops,
    );
    let (mut spool, ingress) = (spool?, ingress?);
    if let Some(nats) = &mut spool.nats {
        nats.duplicate_window = ingress
            .dedup_window
            .unwrap_or(nats::DEFAULT_DUPLICATE_WINDOW);
        nats.dead_letter_ttl = spool.dead_letter_ttl;
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
        sources: sources?,
        history: history?,
        max_hops: max_hops?,
        sagas: sagas?,
        saga_retention: saga_retention?,
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
    let dead_letter_ttl = rd.or(
        o.get("dead_letter_ttl"),
        Some(DEFAULT_DEAD_LETTER_TTL),
        |rd, n| {
            // A bare `0` (number or text) keeps dead letters; any other value needs a unit.
            let zero = n.value.as_u64() == Some(0) || n.value.as_str() == Some("0");
            match zero {
                true => Some(None),
                false => rd.duration(n).map(|ttl| Some(ttl).filter(|t| !t.is_zero())),
            }
        },
    );
    let retain_delivered = rd.or(o.get("retain_delivered"), None, |rd, n| {
        match rd.duration(n)? {
            ttl if ttl.is_zero() => rd.fail(
                &n.path,
                "must be longer than 0s (leave it out to keep nothing)",
            ),
            ttl => Some(Some(ttl)),
        }
    });
    let backend = backend?;
    if backend == SpoolBackend::Nats {
        if let Some(node) = o.get("retain_delivered") {
            return rd.fail(
                &node.path,
                "spool.retain_delivered is not supported by the nats spool backend (use embedded or memory)",
            );
        }
    }
    Some(SpoolConfig {
        backend,
        path: path?,
        max_bytes: max_bytes?,
        dead_letter_ttl: dead_letter_ttl?,
        nats: Some(nats?).filter(|_| backend == SpoolBackend::Nats),
        retain_delivered: retain_delivered?,
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
    let connections = connection_limits(rd, o);
    let tls = server_tls::read(rd, o);
    Some(IngressConfig {
        max_event_bytes: max_event_bytes?,
        max_request_bytes: max_request_bytes?,
        max_batch_events: max_batch_events?,
        auth: auth?,
        allowed_origins: allowed_origins?,
        allowed_rate: allowed_rate?,
        dedup_window: dedup_window?,
        connections: connections?,
        tls: tls?,
    })
}

/// The most connections `ingress.max_connections` accepts: far above any file-descriptor
/// limit a process gets, so only a typo reaches it.
const MAX_CONNECTIONS: u64 = 1 << 20;

/// The longest `ingress.header_timeout` and `ingress.body_timeout`.
const MAX_CLIENT_TIMEOUT: Duration = Duration::from_secs(24 * 60 * 60);

fn connection_limits(rd: &mut Reader<'_>, o: &Obj<'_>) -> Option<ConnectionLimits> {
    let defaults = ConnectionLimits::default();
    let positive = |rd: &mut Reader<'_>, n: &Node<'_>| match rd.duration(n)? {
        zero if zero.is_zero() => rd.fail(&n.path, "must be longer than zero"),
        long if long > MAX_CLIENT_TIMEOUT => rd.fail(&n.path, "must be at most 24h"),
        duration => Some(duration),
    };
    let header_timeout = rd.or(o.get("header_timeout"), defaults.header_timeout, positive);
    let body_timeout = rd.or(o.get("body_timeout"), defaults.body_timeout, positive);
    let max_connections = rd.or(
        o.get("max_connections"),
        defaults.max_connections,
        |rd, n| rd.integer(n, 1..=MAX_CONNECTIONS),
    );
    Some(ConnectionLimits {
        header_timeout: header_timeout?,
        body_timeout: body_timeout?,
        max_connections: max_connections?,
    })
}

fn auth_rule(rd: &mut Reader<'_>, node: &Node<'_>) -> Option<AuthRule> {
    let o = rd.object(node, &model::AUTH)?;
    let kinds = ["sas_key", "bearer", "sas_token_key", "standard_webhooks"];
    let present: Vec<&str> = kinds.into_iter().filter(|k| o.has(k)).collect();
    let [kind] = present[..] else {
        return rd.fail(
            &node.path,
            "needs exactly one of sas_key, bearer, sas_token_key, standard_webhooks",
        );
    };
    let value = o.get(kind)?;
    match kind {
        "sas_key" => rd.text(&value).map(AuthRule::SasKey),
        "bearer" => rd.text(&value).map(AuthRule::Bearer),
        "sas_token_key" => sign::sas_token_key(rd, &value).map(AuthRule::SasToken),
        _ => {
            let sw = rd.object(&value, &model::STANDARD_WEBHOOKS)?;
            sign::webhook_secrets(rd, &sw).map(AuthRule::StandardWebhooks)
        }
    }
}

// === Sinks ===

/// Reads a sink name that must be defined under `sinks:`.
pub(super) fn sink_ref(rd: &mut Reader<'_>, node: &Node<'_>, names: &[String]) -> Option<String> {
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

/// Reads a `transform`: a jq program that must compile; its errors give line and column.
pub(super) fn program(rd: &mut Reader<'_>, node: &Node<'_>) -> Option<Program> {
    let text = rd.text(node)?;
    match Program::compile(&text) {
        Ok(program) => Some(program),
        Err(e) => rd.fail(&node.path, format!("jq: {e}")),
    }
}
