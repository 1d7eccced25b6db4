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

/// The whole lines of a JSON-lines file, parsed (none while it does not exist; a last line
/// still being written is left out).
pub(crate) fn json_lines(path: &std::path::Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.split_inclusive('\n')
        .filter(|line| line.ends_with('\n'))
        .map(|line| serde_json::from_str(line).expect("one JSON object per line"))
        .collect()
}

/// The sum of the `/metrics` samples of the admin server `admin` whose line starts with
/// `prefix` (0 when there is none).
pub(crate) async fn metric(admin: &str, prefix: &str) -> f64 {
    let text = request(hyper::Method::GET, &format!("{admin}/metrics"), &[], "")
        .await
        .text();
    text.lines()
        .filter(|line| line.starts_with(prefix))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
