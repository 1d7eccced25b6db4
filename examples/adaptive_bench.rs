//! The adaptive-concurrency benchmark (`bench/run.sh --adaptive`): how close
//! `concurrency: adaptive` comes to the best fixed limit against a target that slows down
//! steeply past a number of requests in flight, and to a fixed limit of 64 against a healthy
//! fast target.
//!
//! ```sh
//! cargo build --release --bin switchyard --example adaptive_bench
//! target/release/examples/adaptive_bench [--bin target/release/switchyard] [--events 6000]
//! ```
//!
//! For each setting it starts the daemon (memory spool, one `http` sink) against a sink
//! served here, posts the events in batches of 100 as fast as ingress takes them, and times
//! the deliveries from the first to the last. The "knee" sink takes `base` per request while
//! at most `knee` are in flight and `base × (n / knee)³` with `n` in flight beyond; the healthy
//! sink always takes `base`. Latency is the mean time the sink held a request: for the knee
//! sink, how far past its knee the daemon pushed it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use anyhow::{bail, Context as _};
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use clap::Parser;
use http_body_util::Full;
use switchyard::outbound::{Client, ClientOptions, SystemRoots};

/// Command line.
#[derive(Debug, Parser)]
#[command(about = "Adaptive concurrency against the best fixed limit")]
struct Args {
    /// The daemon binary.
    #[arg(long, default_value = "target/release/switchyard")]
    bin: PathBuf,
    /// Events per run.
    #[arg(long, default_value_t = 6000)]
    events: usize,
    /// The sink's time per request, in milliseconds, below its knee.
    #[arg(long, default_value_t = 5)]
    base_ms: u64,
    /// Requests in flight past which the knee sink slows down.
    #[arg(long, default_value_t = 16)]
    knee: usize,
    /// Fixed limits swept against the knee sink.
    #[arg(long, value_delimiter = ',', default_value = "4,8,12,16,24,32,64")]
    fixed: Vec<usize>,
}

/// The sink's model and what it saw.
#[derive(Debug)]
struct Sink {
    base: Duration,
    /// `None`: the healthy sink.
    knee: Option<usize>,
    in_flight: AtomicUsize,
    received: AtomicUsize,
    held_micros: AtomicU64,
    first: std::sync::Mutex<Option<Instant>>,
    last: std::sync::Mutex<Option<Instant>>,
}

impl Sink {
    fn new(base: Duration, knee: Option<usize>) -> Arc<Self> {
        Arc::new(Self {
            base,
            knee,
            in_flight: AtomicUsize::new(0),
            received: AtomicUsize::new(0),
            held_micros: AtomicU64::new(0),
            first: std::sync::Mutex::new(None),
            last: std::sync::Mutex::new(None),
        })
    }

    fn hold(&self, in_flight: usize) -> Duration {
        match self.knee {
            Some(knee) if in_flight > knee => {
                self.base.mul_f64((in_flight as f64 / knee as f64).powi(3))
            }
            _ => self.base,
        }
    }
}

async fn receive(State(sink): State<Arc<Sink>>) -> StatusCode {
    let now = Instant::now();
    sink.first
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get_or_insert(now);
    let n = sink.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    let hold = sink.hold(n);
    tokio::time::sleep(hold).await;
    sink.in_flight.fetch_sub(1, Ordering::SeqCst);
    sink.held_micros
        .fetch_add(hold.as_micros() as u64, Ordering::Relaxed);
    sink.received.fetch_add(1, Ordering::SeqCst);
    *sink.last.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
    StatusCode::OK
}

/// One run's figures.
#[derive(Debug, Clone, Copy)]
struct Run {
    per_second: f64,
    mean_hold_ms: f64,
    limit: Option<u64>,
}

fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        // Already gone is fine: the run is over either way.
        self.0.kill().ok();
        self.0.wait().ok();
    }
}

async fn run(
    args: &Args,
    client: &Client,
    knee: Option<usize>,
    concurrency: &str,
) -> anyhow::Result<Run> {
    let sink = Sink::new(Duration::from_millis(args.base_ms), knee);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let sink_addr: SocketAddr = listener.local_addr()?;
    let app = Router::new()
        .route("/", post(receive))
        .with_state(sink.clone());
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let dir = tempfile_dir()?;
    let (port, admin) = (free_port()?, free_port()?);
    let config = dir.join("routes.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: 127.0.0.1:{port}\nadmin_listen: 127.0.0.1:{admin}\nspool: {{ backend: memory }}\n\
             sinks:\n  target:\n    http: {{ url: \"http://{sink_addr}/\" }}\n    concurrency: {concurrency}\n\
             routes: [{{ name: all, to: [target] }}]\n"
        ),
    )?;
    let daemon = Daemon(
        Command::new(&args.bin)
            .args(["serve", "--config"])
            .arg(&config)
            .env(
                "RUST_LOG",
                std::env::var("BENCH_DAEMON_LOG").unwrap_or_else(|_| "error".into()),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {}", args.bin.display()))?,
    );
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if started.elapsed() > Duration::from_secs(10) {
            bail!("the daemon did not listen within 10 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let url: axum::http::Uri = format!("http://127.0.0.1:{port}/events").parse()?;
    for chunk in 0..args.events.div_ceil(100) {
        let n = 100.min(args.events - chunk * 100);
        let events: Vec<serde_json::Value> = (0..n)
            .map(|i| {
                serde_json::json!({"specversion": "1.0", "id": format!("{chunk}-{i}"),
                    "source": "/bench", "type": "bench", "data": {"n": i}})
            })
            .collect();
        let body = serde_json::to_vec(&events)?;
        let request = axum::http::Request::post(url.clone())
            .header("content-type", "application/cloudevents-batch+json")
            .body(Full::new(axum::body::Bytes::from(body)))?;
        let response = client.send(request).await?;
        if !response.status().is_success() {
            bail!("ingress answered {}", response.status());
        }
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while sink.received.load(Ordering::SeqCst) < args.events {
        if Instant::now() > deadline {
            bail!(
                "only {} of {} delivered in 120 s",
                sink.received.load(Ordering::SeqCst),
                args.events
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let limit = sink_limit(client, admin).await;
    drop(daemon);
    server.abort();
    std::fs::remove_dir_all(&dir).ok();
    let first = sink
        .first
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .unwrap_or(started);
    let last = sink
        .last
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .unwrap_or(first);
    let seconds = last.duration_since(first).as_secs_f64().max(1e-6);
    Ok(Run {
        per_second: args.events as f64 / seconds,
        mean_hold_ms: sink.held_micros.load(Ordering::Relaxed) as f64 / args.events as f64 / 1000.0,
        limit,
    })
}

/// The sink's `concurrency_limit` from the admin API.
async fn sink_limit(client: &Client, admin: u16) -> Option<u64> {
    use http_body_util::BodyExt;
    let uri: axum::http::Uri = format!("http://127.0.0.1:{admin}/api/v1/sinks")
        .parse()
        .ok()?;
    let request = axum::http::Request::get(uri)
        .body(Full::new(axum::body::Bytes::new()))
        .ok()?;
    let response = client.send(request).await.ok()?;
    let body = response.into_body().collect().await.ok()?.to_bytes();
    let value: serde_json::Value = serde_json::from_slice(&body).ok()?;
    value["sinks"][0]["concurrency_limit"].as_u64()
}

fn tempfile_dir() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!(
        "adaptive-bench-{}-{}",
        std::process::id(),
        free_port()?
    ));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let client = Client::new(&ClientOptions::default(), &SystemRoots::load())
        .context("building the HTTP client")?;
    println!(
        "knee sink: {} ms per request up to {} in flight, × (n/{})³ past it; {} events per run",
        args.base_ms, args.knee, args.knee, args.events
    );
    println!("| concurrency | events/s | mean time at the sink (ms) | limit at the end |");
    println!("|---|---:|---:|---:|");
    let mut best = (String::new(), 0.0f64);
    for fixed in &args.fixed {
        let r = run(&args, &client, Some(args.knee), &fixed.to_string()).await?;
        println!(
            "| {fixed} | {:.0} | {:.1} | {} |",
            r.per_second, r.mean_hold_ms, fixed
        );
        if r.per_second > best.1 {
            best = (fixed.to_string(), r.per_second);
        }
    }
    let adaptive = run(&args, &client, Some(args.knee), "{ min: 1, max: 256 }").await?;
    println!(
        "| adaptive | {:.0} | {:.1} | {} |",
        adaptive.per_second,
        adaptive.mean_hold_ms,
        adaptive.limit.map_or("?".into(), |l| l.to_string())
    );
    println!(
        "adaptive / best fixed ({}): {:.2} (target ≥ 0.90); mean time at the sink {:.2}× unloaded (target ≤ 2)",
        best.0,
        adaptive.per_second / best.1,
        adaptive.mean_hold_ms / args.base_ms as f64
    );
    println!();
    println!(
        "healthy sink: {} ms per request whatever is in flight",
        args.base_ms
    );
    let fixed64 = run(&args, &client, None, "64").await?;
    let healthy = run(&args, &client, None, "adaptive").await?;
    println!("| concurrency | events/s | limit at the end |");
    println!("|---|---:|---:|");
    println!("| 64 | {:.0} | 64 |", fixed64.per_second);
    println!(
        "| adaptive | {:.0} | {} |",
        healthy.per_second,
        healthy.limit.map_or("?".into(), |l| l.to_string())
    );
    println!(
        "adaptive / fixed 64: {:.2} (target ≥ 0.90)",
        healthy.per_second / fixed64.per_second
    );
    Ok(())
}
