//! switchyard: an event router.
//!
//! Events flow one way: `ingress` (HTTP) → `event` (normalize) → `routing` (compiled table)
//! → `accept` (store every matched delivery) → `spool` (durable queue) → `dispatch`
//! (per-sink lanes, retry) → `sinks` (http, log, file, exec, registered handlers).
//! `config` and `telemetry` stand at the side; `app` wires everything together.

pub mod config;
pub mod event;
pub mod routing;
pub mod spool;
