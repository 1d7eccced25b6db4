//! `switchyard health`: asks a running daemon's admin server whether it is ready (`/readyz`)
//! or alive (`/healthz`), for a container `HEALTHCHECK` or a script; the image carries no
//! curl. It connects directly: the environment's proxy settings do not apply.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use bytes::Bytes;
use clap::builder::NonEmptyStringValueParser;
use clap::ValueEnum;
use hyper::{HeaderMap, Method, Uri};
use serde_json::Value;
use switchyard::outbound::Proxy;

/// `switchyard health`.
#[derive(Debug, clap::Args)]
pub(crate) struct HealthArgs {
    /// Admin server URL.
    #[arg(long, env = "SWITCHYARD_ADMIN_URL", default_value_t = super::default_admin_url(),
          value_parser = NonEmptyStringValueParser::new())]
    admin: String,
    /// The admin token; the probes need none, but it is sent when given.
    #[arg(long, env = "SWITCHYARD_ADMIN_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Which probe: `ready` (`/readyz`: serving and able to store) or `live` (`/healthz`:
    /// the process answers).
    #[arg(long, value_enum, default_value_t = Probe::Ready)]
    probe: Probe,
    /// PEM file of CA certificates trusted besides the system's roots (an https:// admin
    /// server with a private or self-signed certificate).
    #[arg(long, value_name = "FILE")]
    ca: Option<PathBuf>,
    /// Longest wait for the answer, in seconds.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=300))]
    timeout: u64,
}

/// The admin server's probe endpoints.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum Probe {
    /// `GET /readyz`.
    Ready,
    /// `GET /healthz`.
    Live,
}

/// Exits 0 when the probe answers 200; otherwise prints why on stderr and exits 1.
pub(crate) fn health(args: &HealthArgs) -> anyhow::Result<ExitCode> {
    let path = match args.probe {
        Probe::Ready => "/readyz",
        Probe::Live => "/healthz",
    };
    let url = format!("{}{path}", args.admin.trim_end_matches('/'));
    let url: Uri = match url.parse() {
        Ok(url) => url,
        Err(e) => {
            return Ok(super::usage(&anyhow::anyhow!(
                "--admin is not a valid URL: {e}"
            )))
        }
    };
    let mut headers = HeaderMap::new();
    super::bearer(args.token.as_deref(), &mut headers)?;
    let timeout = Duration::from_secs(args.timeout);
    // Directly, whatever HTTP_PROXY says: the proxies in a daemon's environment are for its
    // sinks, and a probe that went through one would judge the proxy.
    let answer = super::exchange_within(
        timeout,
        Proxy::Direct,
        Method::GET,
        url,
        headers,
        Bytes::new(),
        args.ca.as_deref(),
    );
    let (status, body) = match answer {
        Ok(answer) => answer,
        Err(e) => {
            eprintln!("switchyard: unhealthy: {e:#}");
            return Ok(ExitCode::FAILURE);
        }
    };
    if status.is_success() {
        println!("{path}: {status}");
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!(
        "switchyard: unhealthy: {path} answered {status}: {}",
        reason(&body)
    );
    Ok(ExitCode::FAILURE)
}

/// The `reason` of a probe's JSON answer, or else its body as text.
fn reason(body: &Bytes) -> String {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v["reason"].as_str().map(str::to_owned))
        .unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_owned())
}
