//! switchyard: an event router.
//!
//! Events flow one way: `ingress` (HTTP) → `event` (normalize) → `routing` (compiled table)
//! → `accept` (store every matched delivery) → `spool` (durable queue) → `dispatch`
//! (per-sink lanes, retry) → `sinks` (http, log, file, exec, registered handlers).
//! `schedule` turns cron ticks into events for `accept`, and `sources` turns providers'
//! webhooks (`POST /hooks/<name>`) into events for it. `config` and `telemetry` stand at the
//! side; `app` wires everything together, and `server` is the accept loop that ingress and
//! the admin server share. `outbound` builds the one HTTP client that sinks, trace export
//! and the CLI use.
//!
//! `control` holds the sinks an operator paused: the admin API sets it, `dispatch` honours it.
//!
//! `history` keeps every delivery attempt for a while: `dispatch` records, `admin` reads.
//!
//! `cesql` is the CloudEvents SQL language, a leaf: `config` parses routes' `sql` filters with
//! it and `routing` evaluates them.
//!
//! `transform` runs the jq programs of routes and sinks (`transform`) at delivery time.

pub mod accept;
mod admin;
mod app;
pub mod cesql;
pub mod config;
pub mod control;
pub mod dispatch;
pub mod event;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub mod history;
pub mod ingress;
mod maps;
pub mod outbound;
mod reload;
pub mod routing;
pub mod saga;
mod schedule;
mod segments;
mod server;
mod server_tls;
pub mod sinks;
mod sources;
pub mod spool;
pub mod telemetry;
pub mod transform;

pub use app::{RunError, Running, Switchyard};
pub use config::Config;
pub use server::open_files_wanted;
pub use server_tls::ServerTlsError;
pub use sinks::{Handler, HandlerError};
