//! Why an event matched each route or did not; backs `switchyard explain`.

use crate::event::Event;

use super::filter::{CompiledRoute, LazyData};

/// The verdict of every route for one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explanation {
    /// One verdict per route, in table order.
    pub routes: Vec<RouteVerdict>,
}

/// One route's verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteVerdict {
    /// The route's name.
    pub route: String,
    /// `None` when the event matches; otherwise the first condition that failed.
    pub failed: Option<String>,
    /// The sinks the event goes to through this route (empty when it does not match).
    pub sinks: Vec<String>,
}

pub(super) fn explain(routes: &[CompiledRoute], event: &Event) -> Explanation {
    let mut data = LazyData::new(event);
    Explanation {
        routes: routes
            .iter()
            .map(|r| {
                let failed = r.matches(event, &mut data).err();
                let sinks = if failed.is_none() {
                    r.targets().map(|t| t.sink.to_string()).collect()
                } else {
                    Vec::new()
                };
                RouteVerdict {
                    route: r.name.to_string(),
                    failed,
                    sinks,
                }
            })
            .collect(),
    }
}

impl std::fmt::Display for Explanation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for v in &self.routes {
            match &v.failed {
                None => writeln!(f, "{}: match -> {}", v.route, v.sinks.join(", "))?,
                Some(why) => writeln!(f, "{}: no match: {why}", v.route)?,
            }
        }
        Ok(())
    }
}
