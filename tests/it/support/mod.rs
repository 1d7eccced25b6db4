//! Test helpers: the daemon, a programmable sink server, an HTTPS sink server and its CA, a
//! forward proxy, an HTTP client and bounded waits.

pub(crate) mod certs;
pub(crate) mod cli;
pub(crate) mod client;
pub(crate) mod daemon;
pub(crate) mod nats;
#[allow(dead_code, unreachable_pub)]
pub(crate) mod nats_server;
pub(crate) mod process;
pub(crate) mod proxy;
pub(crate) mod sink;
pub(crate) mod tls;
pub(crate) mod wait;
pub(crate) mod webdriver;

pub(crate) use client::{post, request};
pub(crate) use daemon::TestApp;
pub(crate) use sink::{Respond, TestSink};
pub(crate) use wait::wait_until;

/// Held by the tests that load the machine most (kill -9 rounds, a full disk), so that they
/// never run at the same time and starve each other.
pub(crate) static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Held by a test while its in-process daemon exports spans (the exporter is process-wide),
/// and by a test whose daemon must export none while it runs.
pub(crate) static EXPORTING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
