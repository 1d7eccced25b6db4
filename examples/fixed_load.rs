//! A fixed-count load generator for `bench/instructions.sh`: posts exactly `--events`
//! binary-mode CloudEvents of `--size` bytes of data over `--connections` kept-alive
//! connections, then prints how many got a 2xx.
//!
//! ```sh
//! cargo run --release --example fixed_load -- --events 2000 --connections 8 http://127.0.0.1:8080/events
//! ```
//!
//! Each connection sends its share one request after another (the next once the last was
//! answered), so the daemon sees at most `--connections` requests at a time. Every event has
//! its own `ce-id`. With `--batch N` each request carries N structured events in one
//! `application/cloudevents-batch+json` array instead (`--events` is then rounded up to whole
//! batches). Exits non-zero when any request failed or was not answered with a 2xx.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::{bail, Context as _};
use axum::body::Bytes;
use axum::http::{Request, Uri};
use clap::Parser;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// Command line.
#[derive(Debug, Parser)]
#[command(about = "Posts a fixed number of binary-mode CloudEvents")]
struct Args {
    /// Events to post in all.
    #[arg(long, default_value_t = 2000)]
    events: u64,
    /// Concurrent connections; each posts one request at a time.
    #[arg(long, default_value_t = 8)]
    connections: u64,
    /// Bytes of `data` per event.
    #[arg(long, default_value_t = 1024)]
    size: usize,
    /// Events per request: 1 posts binary mode, more posts batched mode.
    #[arg(long, default_value_t = 1)]
    batch: u64,
    /// Where to post.
    url: Uri,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let client = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(usize::try_from(args.connections).unwrap_or(usize::MAX))
        .build_http::<Full<Bytes>>();
    let data = payload(args.size);
    let batch = args.batch.max(1);
    let requests = args.events.div_ceil(batch);
    let body = Bytes::from(data.clone());
    let data = Arc::new(data);
    let next = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..args.connections.max(1) {
        let (client, body, data, next, failed) = (
            client.clone(),
            body.clone(),
            data.clone(),
            next.clone(),
            failed.clone(),
        );
        let url = args.url.clone();
        tasks.spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= requests {
                    return;
                }
                let sent = if batch > 1 {
                    post_batch(&client, &url, n, batch, &data).await
                } else {
                    post(&client, &url, n, body.clone()).await
                };
                if !sent {
                    failed.fetch_add(batch, Ordering::Relaxed);
                }
            }
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined.context("a sender task failed")?;
    }
    let (events, failed) = (requests * batch, failed.load(Ordering::Relaxed));
    println!("sent={} failed={failed}", events - failed);
    if failed > 0 {
        bail!("{failed} of {events} events were not acknowledged");
    }
    Ok(())
}

/// Posts event number `n`; whether it got a 2xx.
async fn post(
    client: &Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
    url: &Uri,
    n: u64,
    body: Bytes,
) -> bool {
    let request = Request::post(url.clone())
        .header("content-type", "application/json")
        .header("ce-specversion", "1.0")
        .header("ce-id", format!("fixed-load-{n}"))
        .header("ce-source", "/bench/fixed-load")
        .header("ce-type", "com.example.bench.order.created")
        .header("ce-subject", "/orders/1")
        .body(Full::new(body));
    let Ok(request) = request else {
        return false;
    };
    send(client, request).await
}

/// Posts batch number `n`: `batch` structured events with `data` as each one's data.
async fn post_batch(
    client: &Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
    url: &Uri,
    n: u64,
    batch: u64,
    data: &[u8],
) -> bool {
    let mut body = Vec::with_capacity(usize::try_from(batch).unwrap_or(1) * (data.len() + 200));
    body.push(b'[');
    for i in 0..batch {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(
            format!(
                r#"{{"specversion":"1.0","id":"fixed-load-{n}-{i}","source":"/bench/fixed-load","type":"com.example.bench.order.created","subject":"/orders/1","datacontenttype":"application/json","data":"#
            )
            .as_bytes(),
        );
        body.extend_from_slice(data);
        body.push(b'}');
    }
    body.push(b']');
    let request = Request::post(url.clone())
        .header("content-type", "application/cloudevents-batch+json")
        .body(Full::new(Bytes::from(body)));
    let Ok(request) = request else {
        return false;
    };
    send(client, request).await
}

/// Sends one request; whether it got a 2xx, read to the end.
async fn send(
    client: &Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
    request: Request<Full<Bytes>>,
) -> bool {
    match client.request(request).await {
        Ok(response) => {
            let ok = response.status().is_success();
            // Read the answer to the end so the connection goes back to the pool.
            ok && response.into_body().collect().await.is_ok()
        }
        Err(_) => false,
    }
}

/// A JSON object of about `size` bytes.
fn payload(size: usize) -> Vec<u8> {
    let head = br#"{"order":{"id":"o-1","total":123.45},"pad":""#;
    let tail = br#""}"#;
    let pad = size.saturating_sub(head.len() + tail.len());
    let mut body = Vec::with_capacity(size.max(head.len() + tail.len()));
    body.extend_from_slice(head);
    body.resize(head.len() + pad, b'x');
    body.extend_from_slice(tail);
    body
}
