//! The saga benchmark: how many three-step sagas a daemon starts and completes per second
//! against local sinks that answer at once (the first two with a CloudEvent, which the next
//! step receives).
//!
//! ```sh
//! cargo build --release --example saga_bench
//! target/release/examples/saga_bench [--sagas 5000] [--spool embedded|memory|nats] [--nats-url URL]
//! ```
//!
//! With `--spool nats` the queue and the saga bucket are JetStream's, on the server at
//! `--nats-url`, under a stream prefix of this run's own, deleted at the end.
//!
//! The daemon runs in this process (one runtime with the sinks and the load), started from
//! routes.yaml text; its spool is in a temporary directory. The starting events are posted in
//! batches of 100 as fast as ingress takes them; the run ends when the outcome sink has
//! received one `switchyard.saga.completed` event per saga. Started/s counts from the first
//! post to the last accepted one; completed/s from the first post to the last outcome.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::time::Instant;

/// Command line.
#[derive(Debug, Parser)]
#[command(about = "Three-step sagas started and completed per second")]
struct Args {
    /// Sagas per run.
    #[arg(long, default_value_t = 5000)]
    sagas: usize,
    /// Spool backend: embedded, memory or nats.
    #[arg(long, default_value = "embedded")]
    spool: String,
    /// The NATS server of `--spool nats` (JetStream enabled).
    #[arg(long, default_value = "nats://127.0.0.1:4222")]
    nats_url: String,
}

/// The stream prefix of a `--spool nats` run.
fn prefix() -> String {
    format!("saga-bench-{}", std::process::id())
}

/// Deletes the streams a `--spool nats` run made: the queue, the dead letters, the sagas.
async fn delete_streams(url: &str) -> anyhow::Result<()> {
    let js = async_nats::jetstream::new(async_nats::connect(url).await?);
    let p = prefix();
    for name in [p.clone(), format!("{p}-dlq"), format!("KV_{p}-sagas")] {
        if let Err(error) = js.delete_stream(&name).await {
            eprintln!("stream {name} not deleted: {error}");
        }
    }
    Ok(())
}

/// What the sinks saw.
#[derive(Debug, Default)]
struct Seen {
    completed: AtomicUsize,
    other_outcomes: AtomicUsize,
}

/// One step's sink: `reserve` and `charge` answer with a binary-mode CloudEvent, `ship`
/// answers 200, `outcome` counts the outcome events.
async fn sink(
    State(seen): State<Arc<Seen>>,
    UrlPath(step): UrlPath<String>,
    headers: HeaderMap,
) -> Response {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    match step.as_str() {
        "reserve" | "charge" => {
            let id = format!("{step}-{}", header("ce-id"));
            let ty = format!("Bench.{step}.Done");
            (
                StatusCode::OK,
                [
                    ("ce-specversion", "1.0".to_owned()),
                    ("ce-id", id),
                    ("ce-source", "/bench".to_owned()),
                    ("ce-type", ty),
                    ("content-type", "application/json".to_owned()),
                ],
                r#"{"ok":true}"#,
            )
                .into_response()
        }
        "outcome" => {
            let counter = match header("ce-type").as_str() {
                "switchyard.saga.completed" => &seen.completed,
                _ => &seen.other_outcomes,
            };
            counter.fetch_add(1, Ordering::Relaxed);
            StatusCode::OK.into_response()
        }
        _ => StatusCode::OK.into_response(),
    }
}

fn config(args: &Args, dir: &Path, sinks: SocketAddr) -> String {
    let url = |step: &str| format!("http://{sinks}/{step}");
    let spool = match args.spool.as_str() {
        "nats" => format!(
            "nats, nats: {{ url: \"{}\", stream: {} }}",
            args.nats_url,
            prefix()
        ),
        other => other.to_owned(),
    };
    format!(
        r#"
listen: 127.0.0.1:0
admin_listen: 127.0.0.1:0
spool: {{ backend: {spool}, path: "{dir}", history_ttl: 0 }}
sinks:
  inventory: {{ http: {{ url: "{}" }}, concurrency: 64 }}
  payments: {{ http: {{ url: "{}" }}, concurrency: 64 }}
  shipping: {{ http: {{ url: "{}" }}, concurrency: 64 }}
  outcomes: {{ http: {{ url: "{}" }}, concurrency: 64 }}
routes:
  - {{ name: outcomes, match: {{ types: ["switchyard.saga.*"] }}, to: [outcomes] }}
sagas:
  - name: order
    match: {{ types: ["Bench.Order.Created"] }}
    steps:
      - {{ name: reserve, to: inventory, compensate: inventory }}
      - {{ name: charge, to: payments, compensate: payments }}
      - {{ name: ship, to: shipping }}
"#,
        url("reserve"),
        url("charge"),
        url("ship"),
        url("outcome"),
        dir = dir.display(),
    )
}

/// A batch of 100 starting events as a CloudEvents batch body.
fn batch(first: usize, n: usize) -> Bytes {
    let events: Vec<serde_json::Value> = (first..first + n)
        .map(|i| {
            serde_json::json!({
                "specversion": "1.0", "id": format!("o-{i}"), "source": "/bench",
                "type": "Bench.Order.Created", "datacontenttype": "application/json",
                "data": {"order": i, "total": 120}
            })
        })
        .collect();
    Bytes::from(serde_json::Value::Array(events).to_string())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let seen = Arc::new(Seen::default());
    let app = Router::new()
        .route("/{step}", post(sink))
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let sinks = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });

    let dir = tempfile::tempdir()?;
    let yaml = config(&args, &dir.path().join("spool"), sinks);
    let config = switchyard::config::load_str(&yaml, Path::new("bench.yaml"), &BTreeMap::new())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let ingress = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let running = switchyard::Switchyard::new(config)
        .admin_listener(admin)
        .start_on(ingress)?;
    let url = format!("http://{}/events", running.local_addr());

    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let started = Instant::now();
    let mut sent = 0;
    while sent < args.sagas {
        let n = 100.min(args.sagas - sent);
        let request = hyper::Request::post(&url)
            .header("content-type", "application/cloudevents-batch+json")
            .body(Full::new(batch(sent, n)))?;
        let response = client.request(request).await.context("post")?;
        let status = response.status();
        let _body = response.into_body().collect().await?;
        if status.as_u16() == 503 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        if !status.is_success() {
            bail!("ingress answered {status}");
        }
        sent += n;
    }
    let ingested = started.elapsed();
    let deadline = started + Duration::from_secs(600);
    while seen.completed.load(Ordering::Relaxed) < args.sagas {
        if Instant::now() > deadline {
            bail!(
                "only {} sagas completed",
                seen.completed.load(Ordering::Relaxed)
            );
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let done = started.elapsed();
    let rate = |d: Duration| args.sagas as f64 / d.as_secs_f64();
    println!(
        "spool {}: {} sagas; started {:.0}/s ({:.2} s), completed {:.0}/s ({:.2} s); other outcomes {}",
        args.spool,
        args.sagas,
        rate(ingested),
        ingested.as_secs_f64(),
        rate(done),
        done.as_secs_f64(),
        seen.other_outcomes.load(Ordering::Relaxed)
    );
    running.stop().await?;
    if args.spool == "nats" {
        delete_streams(&args.nats_url).await?;
    }
    Ok(())
}
