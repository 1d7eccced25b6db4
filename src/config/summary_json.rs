//! The machine-readable summary printed by `switchyard check -o json`: the same facts as
//! [`Config::summary`], as a stable JSON shape (documented in docs/operations.md). Secrets never
//! appear, as in the text summary.

use serde::Serialize;

use super::summary::{backend, target};
use super::{Config, DeliveryOrder, RouteConfig, SinkConfig};

/// What `switchyard check -o json` prints for a valid configuration.
#[derive(Debug, Serialize)]
pub struct CheckSummary {
    /// Always true: an invalid configuration prints its errors on stderr instead.
    pub valid: bool,
    /// The ingress address.
    pub listen: String,
    /// The admin server.
    pub admin: AdminSummary,
    /// The spool.
    pub spool: SpoolSummary,
    /// The routes, in table order.
    pub routes: Vec<RouteSummary>,
    /// The sinks, by name.
    pub sinks: Vec<SinkSummary>,
    /// The names of the schedules.
    pub schedules: Vec<String>,
    /// The names of the webhook sources (each served at `POST /hooks/<name>`).
    pub sources: Vec<String>,
}

/// The admin server's address and whether its API asks for a token.
#[derive(Debug, Serialize)]
pub struct AdminSummary {
    /// The admin address.
    pub listen: String,
    /// Whether `admin.token` is set.
    pub token_required: bool,
}

/// Where deliveries are kept.
#[derive(Debug, Serialize)]
pub struct SpoolSummary {
    /// `memory`, `embedded` or `nats`.
    pub backend: &'static str,
    /// `spool.path`.
    pub path: String,
}

/// One route.
#[derive(Debug, Serialize)]
pub struct RouteSummary {
    /// The route's name.
    pub name: String,
    /// The sinks it delivers to.
    pub to: Vec<String>,
    /// `match.types` (empty: any).
    pub types: Vec<String>,
    /// `match.sources` (empty: any).
    pub sources: Vec<String>,
    /// How many advanced filters `match` holds.
    pub advanced_filters: usize,
    /// The CESQL expression, if any.
    pub sql: Option<String>,
    /// The route's priority lane.
    pub priority: &'static str,
    /// Whether deliveries keep the order of each subject.
    pub ordered_by_subject: bool,
}

/// One sink.
#[derive(Debug, Serialize)]
pub struct SinkSummary {
    /// The sink's name.
    pub name: String,
    /// `http`, `log`, `file`, `exec`, `handler` or `nats`.
    pub kind: &'static str,
    /// What it delivers to, as the text summary shows it (no secrets).
    pub target: String,
    /// Deliveries at once (with `concurrency_min`, the adaptive limit's ceiling).
    pub concurrency: usize,
    /// The adaptive limit's floor; absent for a fixed limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub concurrency_min: Option<usize>,
    /// Attempts before dead-lettering.
    pub max_attempts: u32,
    /// The dead-letter sink, if any.
    pub dead_letter: Option<String>,
}

impl Config {
    /// The summary `switchyard check -o json` prints; never holds secrets.
    pub fn check_summary(&self) -> CheckSummary {
        CheckSummary {
            valid: true,
            listen: self.listen.to_string(),
            admin: AdminSummary {
                listen: self.admin.listen.to_string(),
                token_required: self.admin.token.is_some(),
            },
            spool: SpoolSummary {
                backend: backend(self.spool.backend),
                path: self.spool.path.display().to_string(),
            },
            routes: self.routes.iter().map(route).collect(),
            sinks: self.sinks.values().map(sink).collect(),
            schedules: self.schedules.iter().map(|s| s.name.clone()).collect(),
            sources: self.sources.keys().cloned().collect(),
        }
    }
}

fn route(route: &RouteConfig) -> RouteSummary {
    RouteSummary {
        name: route.name.clone(),
        to: route.to.clone(),
        types: route.filter.types.clone(),
        sources: route.filter.sources.clone(),
        advanced_filters: route.filter.advanced.len(),
        sql: route.sql.as_ref().map(|sql| sql.source().to_owned()),
        priority: route.priority.name(),
        ordered_by_subject: route.ordering == DeliveryOrder::Subject,
    }
}

fn sink(sink: &SinkConfig) -> SinkSummary {
    SinkSummary {
        name: sink.name.clone(),
        kind: sink.kind.name(),
        target: target(&sink.kind),
        concurrency: sink.concurrency,
        concurrency_min: sink.adaptive.map(|a| a.min),
        max_attempts: sink.retry.max_attempts,
        dead_letter: sink.dead_letter.clone(),
    }
}
