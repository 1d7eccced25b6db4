//! Ingress request metrics: requests answered by route template and status, and how long
//! they took by route template. Handles are registered at the first request of each (path,
//! status) and cached, so a request costs two map reads and two atomic updates.

use std::sync::Arc;
use std::time::Duration;

use crate::maps::DashMap;
use metrics::{Counter, Histogram, SharedString};

/// Ingress HTTP requests answered, by `path` (the route template, e.g. `/hooks/{name}`, or
/// `other` for a path no route serves) and `status`.
pub const INGRESS_REQUESTS: &str = "switchyard_ingress_requests_total";
/// Time from an ingress request's arrival to its answer's head, by `path`.
pub const INGRESS_DURATION: &str = "switchyard_ingress_request_duration_seconds";

/// The cached handles of the ingress request metrics.
#[derive(Debug, Default)]
pub struct IngressMetrics {
    paths: DashMap<Box<str>, Arc<PathMetrics>>,
}

/// One route template's handles.
#[derive(Debug)]
struct PathMetrics {
    path: SharedString,
    duration: Histogram,
    statuses: DashMap<u16, Counter>,
}

impl IngressMetrics {
    /// Records one answered request of the route template `path`.
    pub fn record(&self, path: &str, status: u16, took: Duration) {
        let metrics = match self.paths.get(path) {
            Some(metrics) => Arc::clone(&metrics),
            None => self.register(path),
        };
        metrics.duration.record(took.as_secs_f64());
        if let Some(counter) = metrics.statuses.get(&status) {
            counter.increment(1);
            return;
        }
        let path = metrics.path.clone();
        let counter =
            metrics::counter!(INGRESS_REQUESTS, "path" => path, "status" => status.to_string());
        counter.increment(1);
        metrics.statuses.insert(status, counter);
    }

    fn register(&self, path: &str) -> Arc<PathMetrics> {
        let label = SharedString::from(path.to_owned());
        let entry = self.paths.entry(Box::from(path)).or_insert_with(|| {
            Arc::new(PathMetrics {
                duration: metrics::histogram!(INGRESS_DURATION, "path" => label.clone()),
                path: label,
                statuses: DashMap::default(),
            })
        });
        Arc::clone(&entry)
    }
}
