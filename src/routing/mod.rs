//! Routing: the compiled route table. Pure and synchronous: no I/O, no async.
//!
//! Imports `event` and `config`. The table is compiled once per configuration
//! ([`RouteTable::from_config`] cannot fail: `config::validate` already checked everything);
//! matching parses nothing but an event's `data`, once, and only when a filter asks for it.
//!
//! `filter` checks one route; `advanced` holds Event Grid's advanced operators and `key` the
//! values they test; `sql` gives CESQL filters the event's attributes; `index` narrows an
//! event to the routes that can match it; `explain` puts verdicts into words; `text` compares
//! strings ignoring case.

mod advanced;
mod explain;
mod filter;
mod index;
mod key;
mod sql;
#[cfg(test)]
mod tests;
mod text;

use std::sync::Arc;

use crate::config::{Config, DeliveryOrder, Priority, RouteConfig, SagaConfig};
use crate::event::Event;

pub use explain::{Explanation, RouteVerdict, SqlVerdict};
pub use sql::SqlError;

/// One delivery an event needs: a route and one of its sinks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The route that matched.
    pub route: Arc<str>,
    /// The sink to deliver to.
    pub sink: Arc<str>,
    /// The route's lane at the sink.
    pub priority: Priority,
    /// Whether the route keeps per-subject order at the sink.
    pub ordering: DeliveryOrder,
}

/// A saga's trigger compiled as a route to its first step's sink (the route's targets are
/// not used: the saga store makes the deliveries).
fn compile_saga(saga: &SagaConfig) -> (Arc<SagaConfig>, filter::CompiledRoute) {
    let route = RouteConfig {
        name: format!("saga:{}", saga.name),
        filter: saga.filter.clone(),
        sql: saga.sql.clone(),
        to: Vec::new(),
        priority: Priority::Normal,
        ordering: DeliveryOrder::Any,
        transform: None,
    };
    (
        Arc::new(saga.clone()),
        filter::CompiledRoute::compile(&route),
    )
}

/// The compiled routing table.
#[derive(Debug)]
pub struct RouteTable {
    routes: Vec<filter::CompiledRoute>,
    index: index::RouteIndex,
    /// Each saga with its `match` and `sql`, compiled as a route's.
    sagas: Vec<(Arc<SagaConfig>, filter::CompiledRoute)>,
}

impl RouteTable {
    /// Compiles the routes of a validated configuration.
    pub fn from_config(config: &Config) -> Self {
        let mut table = Self::from_routes(&config.routes);
        table.sagas = config.sagas.iter().map(compile_saga).collect();
        table
    }

    /// Compiles a list of validated routes, in table order.
    pub(crate) fn from_routes(routes: &[RouteConfig]) -> Self {
        let routes: Vec<_> = routes.iter().map(filter::CompiledRoute::compile).collect();
        let index = index::RouteIndex::build(&routes);
        Self {
            routes,
            index,
            sagas: Vec::new(),
        }
    }

    /// Appends to `out` every saga the event starts an instance of, in file order. A saga's
    /// filter that raises a CESQL error does not match.
    pub fn sagas(&self, event: &Event, out: &mut Vec<Arc<SagaConfig>>) {
        if self.sagas.is_empty() {
            return;
        }
        let data = key::LazyData::new(event);
        for (saga, filter) in &self.sagas {
            if filter.check(event, &data).is_ok() {
                out.push(saga.clone());
            }
        }
    }

    /// Appends to `out` every (route, sink) the event must be delivered to, in table order.
    pub fn targets(&self, event: &Event, out: &mut Vec<Target>) {
        self.targets_reporting(event, out, &mut Vec::new());
    }

    /// As [`Self::targets`], and appends to `errors` the evaluation error of every route whose
    /// CESQL filter raised one (such a route does not match).
    pub fn targets_reporting(
        &self,
        event: &Event,
        out: &mut Vec<Target>,
        errors: &mut Vec<SqlError>,
    ) {
        let mut candidates = Vec::new();
        self.index.candidates(event, &mut candidates);
        let data = key::LazyData::new(event);
        for route in candidates.iter().filter_map(|&i| self.routes.get(i)) {
            match route.check(event, &data) {
                Ok(()) => out.extend_from_slice(route.targets()),
                Err(filter::Failure::SqlError(kind, column, detail)) => errors.push(SqlError {
                    route: route.name.clone(),
                    kind,
                    column,
                    detail,
                }),
                Err(_) => {}
            }
        }
    }

    /// Says, per route, whether the event matches or which condition failed first.
    pub fn explain(&self, event: &Event) -> Explanation {
        explain::explain(&self.routes, event)
    }

    /// Number of routes.
    pub fn len(&self) -> usize {
        self.routes.len()
    }

    /// True when the table has no routes.
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }
}
