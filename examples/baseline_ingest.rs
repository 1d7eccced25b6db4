//! Baseline A of the benchmark (`bench/run.sh`): a bare axum server, and the local sinks the
//! end-to-end and backlog figures deliver to.
//!
//! ```sh
//! cargo run --release --example baseline_ingest -- [--mode parse|sink|stall|slow] [--delay-ms MS] [ADDR]
//! ```
//!
//! The listen address comes from the first argument, else `BASELINE_LISTEN`, else
//! `127.0.0.1:9100`. Every `POST` (any path) is handled according to `--mode`:
//!
//! - `parse` (the default, baseline A): reads the body, parses it into a `serde_json::Value`
//!   and answers 202 (400 when it is not JSON). Nothing is stored or forwarded.
//! - `sink`: reads the body, answers 200 without parsing it and counts the request; `GET /count` answers
//!   the number of requests received so far, so a benchmark can compute a delivered rate.
//! - `stall`: reads the body and never answers, holding the connection open: a sink that takes
//!   one delivery and then lets every other one wait in the spool.
//! - `slow`: reads the body, counts the request and answers 200 after `--delay-ms`
//!   milliseconds (default 5000): a sink that works, slowly.
//!
//! `GET /count` works in every mode.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{any, get};
use axum::Router;
use clap::{Parser, ValueEnum};

/// How the server answers a `POST`.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum Mode {
    /// Parse the body as JSON, answer 202.
    Parse,
    /// Count the request, answer 200 without parsing.
    Sink,
    /// Never answer.
    Stall,
    /// Count the request, answer 200 after `--delay-ms`.
    Slow,
}

/// Command line.
#[derive(Debug, Parser)]
#[command(about = "Bare axum ingest baseline and local benchmark sink")]
struct Args {
    /// What to do with each POST.
    #[arg(long, value_enum, default_value_t = Mode::Parse)]
    mode: Mode,
    /// How long `--mode slow` waits before answering, in milliseconds.
    #[arg(long, default_value_t = 5000)]
    delay_ms: u64,
    /// Address to listen on.
    #[arg(env = "BASELINE_LISTEN", default_value = "127.0.0.1:9100")]
    listen: SocketAddr,
}

/// Requests received, for `GET /count`, and the answer delay of `--mode slow`.
#[derive(Debug, Default)]
struct Counter(AtomicU64, Duration);

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let counter = Arc::new(Counter(
        AtomicU64::new(0),
        Duration::from_millis(args.delay_ms),
    ));
    let post = match args.mode {
        Mode::Parse => any(parse),
        Mode::Sink => any(sink),
        Mode::Stall => any(stall),
        Mode::Slow => any(slow),
    };
    let app = Router::new()
        .route("/count", get(count))
        .fallback(post)
        .with_state(counter);
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    eprintln!(
        "baseline_ingest ({:?}) listening on {}",
        args.mode, args.listen
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            // A failed signal handler only means the process is stopped by a harder signal.
            tokio::signal::ctrl_c().await.ok();
        })
        .await
        .context("server failed")
}

async fn parse(State(counter): State<Arc<Counter>>, body: Bytes) -> StatusCode {
    counter.0.fetch_add(1, Ordering::Relaxed);
    match serde_json::from_slice::<serde_json::Value>(&body) {
        Ok(value) => {
            std::hint::black_box(value);
            StatusCode::ACCEPTED
        }
        Err(_) => StatusCode::BAD_REQUEST,
    }
}

async fn sink(State(counter): State<Arc<Counter>>, body: Bytes) -> StatusCode {
    // The body is read (so the connection stays reusable) but not parsed.
    counter.0.fetch_add(1, Ordering::Relaxed);
    std::hint::black_box(body);
    StatusCode::OK
}

async fn stall(State(counter): State<Arc<Counter>>, body: Bytes) -> StatusCode {
    counter.0.fetch_add(1, Ordering::Relaxed);
    std::hint::black_box(body);
    std::future::pending::<StatusCode>().await
}

async fn slow(State(counter): State<Arc<Counter>>, body: Bytes) -> StatusCode {
    counter.0.fetch_add(1, Ordering::Relaxed);
    std::hint::black_box(body);
    tokio::time::sleep(counter.1).await;
    StatusCode::OK
}

async fn count(State(counter): State<Arc<Counter>>) -> String {
    format!("{}\n", counter.0.load(Ordering::Relaxed))
}
