//! Baseline B of the benchmark (`bench/run.sh`): a bare forwarder. Each `POST` is sent on to
//! a local sink with the client the `http` sink uses (`switchyard::outbound`), nothing is
//! stored, and 202 is answered once the sink has answered.
//!
//! ```sh
//! cargo run --release --example baseline_forward -- [--sink URL] [ADDR]
//! ```
//!
//! The listen address comes from the first argument, else `BASELINE_LISTEN`, else
//! `127.0.0.1:9101`; the sink URL from `--sink`, else `BASELINE_SINK`, else
//! `http://127.0.0.1:9102/events` (for example `baseline_ingest --mode sink 127.0.0.1:9102`).
//!
//! The request's `content-type` and `ce-*` headers and its body are forwarded as they came,
//! as a binary-mode CloudEvent would be; a sink answer outside 200–204, a connection error or
//! no answer within 30 s (the `http` sink's default timeout) gives 502.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, Request, StatusCode, Uri};
use axum::routing::any;
use axum::Router;
use clap::Parser;
use http_body_util::{BodyExt, Full, Limited};
use switchyard::outbound::{Client, ClientOptions, SystemRoots};

/// Per-attempt timeout, as the `http` sink's default.
const TIMEOUT: Duration = Duration::from_secs(30);

/// Most response-body bytes read from the sink, as the `http` sink.
const MAX_RESPONSE_BODY: usize = 64 * 1024;

/// Command line.
#[derive(Debug, Parser)]
#[command(about = "Bare forwarder baseline: axum in, pooled hyper-util client out")]
struct Args {
    /// Where every request is forwarded to.
    #[arg(
        long,
        env = "BASELINE_SINK",
        default_value = "http://127.0.0.1:9102/events"
    )]
    sink: Uri,
    /// Address to listen on.
    #[arg(env = "BASELINE_LISTEN", default_value = "127.0.0.1:9101")]
    listen: SocketAddr,
}

/// Shared by every request.
#[derive(Debug)]
struct Forwarder {
    client: Client,
    sink: Uri,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let state = Arc::new(Forwarder {
        // The client an `http` sink without `tls` or `proxy` settings gets.
        client: Client::new(&ClientOptions::default(), &SystemRoots::load())?,
        sink: args.sink.clone(),
    });
    let app = Router::new().fallback(any(forward)).with_state(state);
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    eprintln!(
        "baseline_forward listening on {}, forwarding to {}",
        args.listen, args.sink
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            // A failed signal handler only means the process is stopped by a harder signal.
            tokio::signal::ctrl_c().await.ok();
        })
        .await
        .context("server failed")
}

async fn forward(
    State(state): State<Arc<Forwarder>>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let mut out = HeaderMap::new();
    for (name, value) in &headers {
        if name == header::CONTENT_TYPE || name.as_str().starts_with("ce-") {
            out.append(name.clone(), value.clone());
        }
    }
    let Ok(mut request) = Request::post(state.sink.clone()).body(Full::new(body)) else {
        return StatusCode::INTERNAL_SERVER_ERROR;
    };
    *request.headers_mut() = out;
    let exchange = async {
        let response = state.client.send(request).await.ok()?;
        let (parts, body) = response.into_parts();
        Limited::new(body, MAX_RESPONSE_BODY).collect().await.ok()?;
        Some(parts.status)
    };
    match tokio::time::timeout(TIMEOUT, exchange).await {
        Ok(Some(status)) if (200..=204).contains(&status.as_u16()) => StatusCode::ACCEPTED,
        _ => StatusCode::BAD_GATEWAY,
    }
}
