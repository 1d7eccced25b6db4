//! The process-wide `tracing` subscriber: log lines on stderr, plus the layer that records
//! delivery spans for OTLP export.
//!
//! Imports nothing internal outside `telemetry`.

use tracing_subscriber::layer::{Layer as _, SubscriberExt as _};
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::EnvFilter;

use super::otlp::otlp_layer;

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
///
/// `RUST_LOG` filters the log lines only: delivery spans reach the export layer whatever
/// the log level, once a daemon with `telemetry.otlp_endpoint` starts.
pub fn init_logging(format: LogFormat) -> bool {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let lines = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let lines = match format {
        LogFormat::Text => lines.boxed(),
        LogFormat::Json => lines.json().boxed(),
    };
    tracing_subscriber::registry()
        .with(lines.with_filter(filter))
        .with(otlp_layer())
        .try_init()
        .is_ok()
}
