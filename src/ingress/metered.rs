//! Request metrics for everything the ingress server answers: counted by route template
//! (not the raw URI, so the label stays bounded) and status, and timed.
//!
//! Taken by the server around the whole router, not by a layer on each route: a route layer
//! adds a boxed service clone and a boxed future to every request, 1.3–3 µs of CPU per
//! request on an Intel Xeon benchmark machine. The template is therefore found from the
//! request's path here, beside the routes it names.

use std::sync::Arc;
use std::time::Duration;

use crate::telemetry::Counters;

/// The `path` label of a request no route serves.
const OTHER: &str = "other";
/// The route of CloudEvents and Event Grid webhooks.
pub(crate) const EVENTS: &str = "/events";
/// The route of Event Grid topic publishing.
pub(crate) const API_EVENTS: &str = "/api/events";
/// The route of provider webhooks (sources).
pub(crate) const HOOKS: &str = "/hooks/{name}";

/// Records each answer of the ingress server.
#[derive(Debug, Clone)]
pub(crate) struct Meter {
    counters: Arc<Counters>,
}

impl Meter {
    /// A meter recording into `counters`.
    pub(crate) fn new(counters: Arc<Counters>) -> Self {
        Self { counters }
    }

    /// The `path` label of a request for `path` (its URI path): the route template.
    pub(crate) fn label(path: &str) -> &'static str {
        template(path)
    }

    /// Records one answered request under `label`.
    pub(crate) fn record(&self, label: &'static str, status: u16, took: Duration) {
        self.counters.ingress.record(label, status, took);
    }
}

/// The route template that serves `path`, matched as the router matches it (exact paths,
/// one non-empty segment for `{name}`), or [`OTHER`].
fn template(path: &str) -> &'static str {
    match path {
        EVENTS => EVENTS,
        API_EVENTS => API_EVENTS,
        _ if path
            .strip_prefix("/hooks/")
            .is_some_and(|name| !name.is_empty() && !name.contains('/')) =>
        {
            HOOKS
        }
        _ => OTHER,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_path_is_labelled_with_the_template_that_serves_it() {
        assert_eq!(template("/events"), EVENTS);
        assert_eq!(template("/api/events"), API_EVENTS);
        assert_eq!(template("/hooks/github"), HOOKS);
        assert_eq!(template("/hooks/a%2Fb"), HOOKS);
        for unserved in [
            "/",
            "/events/",
            "/events/x",
            "/api/events/",
            "/hooks/",
            "/hooks/a/b",
            "/hooks",
            "/no/such/path/7f3a",
        ] {
            assert_eq!(template(unserved), OTHER, "{unserved}");
        }
    }
}
