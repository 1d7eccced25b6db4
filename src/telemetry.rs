//! Observability at the side: log setup and the process-wide counters.
//!
//! Imports nothing internal. Counter names live here so they cannot drift between the
//! places that bump them.

use std::sync::atomic::{AtomicU64, Ordering};

/// Log output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines (for a terminal).
    Text,
    /// One JSON object per line (for log collectors).
    Json,
}

/// Installs the global `tracing` subscriber; `RUST_LOG` overrides the default `info` level.
/// Returns false when one was already installed (as in tests that start several daemons).
pub fn init_logging(format: LogFormat) -> bool {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.try_init().is_ok(),
        LogFormat::Json => builder.json().try_init().is_ok(),
    }
}

/// Counters of what happened to events and deliveries since start.
#[derive(Debug, Default)]
pub struct Counters {
    /// Events accepted at ingress (stored, or matched no route).
    pub events_received: AtomicU64,
    /// Events rejected at ingress (bad input, too large, unauthorized, spool full).
    pub events_rejected: AtomicU64,
    /// Events that matched no route and were dropped.
    pub events_unrouted: AtomicU64,
    /// Deliveries confirmed by their sink.
    pub deliveries_succeeded: AtomicU64,
    /// Failed attempts that were scheduled for retry.
    pub deliveries_retried: AtomicU64,
    /// Deliveries dead-lettered (forwarded to a dead-letter sink or dropped).
    pub deliveries_dead_lettered: AtomicU64,
    /// Dead-lettered deliveries with no dead-letter sink to take them (logged at ERROR).
    pub dead_letters_dropped: AtomicU64,
}

impl Counters {
    /// Adds `n` to a counter.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Reads a counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}
