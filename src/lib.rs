//! switchyard: an event router.
//!
//! Events flow one way: `ingress` (HTTP) → `event` (normalize) → `routing` (compiled table)
//! → `accept` (store every matched delivery) → `spool` (durable queue) → `dispatch`
//! (per-sink lanes, retry) → `sinks` (http, log, file, exec, registered handlers).
//! `schedule` turns cron ticks into events for `accept`. `config` and `telemetry` stand at the
//! side; `app` wires everything together, and `server` is the accept loop that ingress and
//! the admin server share.

pub mod accept;
mod admin;
mod app;
pub mod config;
pub mod dispatch;
pub mod event;
#[doc(hidden)]
pub mod fuzzing;
pub mod ingress;
mod reload;
pub mod routing;
mod schedule;
mod server;
mod server_tls;
pub mod sinks;
pub mod spool;
pub mod telemetry;

pub use app::{RunError, Running, Switchyard};
pub use config::Config;
pub use server::open_files_wanted;
pub use server_tls::ServerTlsError;
pub use sinks::{Handler, HandlerError};
