//! Routing: the compiled route table. Pure and synchronous: no I/O, no async.
//!
//! Imports `event` and `config`. The table is compiled once per configuration
//! ([`RouteTable::from_config`] cannot fail: `config::validate` already checked everything);
//! matching parses nothing but an event's `data`, once, and only when a filter asks for it.

mod explain;
mod filter;

use std::sync::Arc;

use crate::config::Config;
use crate::event::Event;

pub use explain::{Explanation, RouteVerdict};

/// One delivery an event needs: a route and one of its sinks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The route that matched.
    pub route: Arc<str>,
    /// The sink to deliver to.
    pub sink: Arc<str>,
}

/// The compiled routing table.
#[derive(Debug)]
pub struct RouteTable {
    routes: Vec<filter::CompiledRoute>,
}

impl RouteTable {
    /// Compiles the routes of a validated configuration.
    pub fn from_config(config: &Config) -> Self {
        Self {
            routes: config
                .routes
                .iter()
                .map(filter::CompiledRoute::compile)
                .collect(),
        }
    }

    /// Appends to `out` every (route, sink) the event must be delivered to, in table order.
    pub fn targets(&self, event: &Event, out: &mut Vec<Target>) {
        let mut data = filter::LazyData::new(event);
        for route in &self.routes {
            if route.matches(event, &mut data).is_ok() {
                out.extend(route.targets());
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
