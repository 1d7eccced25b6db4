//! Baseline C of the benchmark (`bench/nats_ab.sh`, `bench/run.sh`): a bare JetStream queue
//! between HTTP in and HTTP out, the least any router that keeps its queue in JetStream does.
//! Each `POST` body is published to one work-queue stream (file storage, one replica, as the
//! `nats` spool's) and answered 202 once its PubAck has come; with `--sink`, one durable pull
//! consumer takes the messages, forwards each to the sink with the client the `http` sink
//! uses (`switchyard::outbound`), at most `--concurrency` at once, and acks it (without
//! waiting for the ack's confirmation, as the `nats` spool acks a delivered event) once the
//! sink answered 200–204; any other outcome leaves the message to be redelivered.
//!
//! ```sh
//! cargo run --release --example baseline_jetstream -- [--nats URL] [--stream NAME] \
//!     [--sink URL] [--concurrency N] [ADDR]
//! ```
//!
//! Nothing else is done: no routing, no record around the body (it is published as it came,
//! with the request's `content-type` and `ce-*` headers as message headers), no message id
//! for de-duplication, one lane. The stream is created afresh at start (an existing one of
//! that name is deleted) and deleted again on Ctrl-C or SIGTERM.

use std::net::SocketAddr;
use std::sync::Arc;

#[path = "support/answer.rs"]
mod answer;

use anyhow::Context as _;
use async_nats::jetstream::{self, consumer, stream, Context};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, Request, StatusCode, Uri};
use axum::routing::any;
use axum::Router;
use clap::Parser;
use futures_util::StreamExt;
use http_body_util::Full;
use switchyard::outbound::{Client, ClientOptions, SystemRoots};

/// Command line.
#[derive(Debug, Parser)]
#[command(about = "Bare JetStream baseline: axum in, JetStream queue, pooled client out")]
struct Args {
    /// The NATS server.
    #[arg(
        long,
        env = "BASELINE_NATS_URL",
        default_value = "nats://127.0.0.1:4222"
    )]
    nats: String,
    /// The work stream's name (its subject is `NAME.events`).
    #[arg(long, default_value = "baseline-c")]
    stream: String,
    /// Where every message is forwarded to; without it nothing consumes the stream.
    #[arg(long, env = "BASELINE_SINK")]
    sink: Option<Uri>,
    /// Most forwards in flight at once.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Address to listen on.
    #[arg(env = "BASELINE_LISTEN", default_value = "127.0.0.1:9103")]
    listen: SocketAddr,
}

/// Shared by every request.
#[derive(Debug)]
struct Publisher {
    js: Context,
    subject: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let client = async_nats::connect(&args.nats)
        .await
        .with_context(|| format!("cannot connect to {}", args.nats))?;
    let js = jetstream::new(client);
    // A leftover stream of this name would hold another run's messages.
    js.delete_stream(&args.stream).await.ok();
    let subject = format!("{}.events", args.stream);
    let work = js
        .create_stream(stream::Config {
            name: args.stream.clone(),
            subjects: vec![subject.clone()],
            retention: stream::RetentionPolicy::WorkQueue,
            storage: stream::StorageType::File,
            num_replicas: 1,
            ..stream::Config::default()
        })
        .await
        .context("cannot create the stream")?;
    let forwarding = match &args.sink {
        Some(sink) => {
            let consumer = work
                .create_consumer(consumer::pull::Config {
                    durable_name: Some("forward".to_owned()),
                    ack_policy: consumer::AckPolicy::Explicit,
                    ..consumer::pull::Config::default()
                })
                .await
                .context("cannot create the consumer")?;
            let client = Client::new(&ClientOptions::default(), &SystemRoots::load())?;
            let forward = forward_all(consumer, client, sink.clone(), args.concurrency);
            Some(tokio::spawn(forward))
        }
        None => None,
    };
    let state = Arc::new(Publisher {
        js: js.clone(),
        subject,
    });
    let app = Router::new().fallback(any(publish)).with_state(state);
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    eprintln!(
        "baseline_jetstream listening on {}, stream {} at {}{}",
        args.listen,
        args.stream,
        args.nats,
        args.sink
            .as_ref()
            .map(|s| format!(", forwarding to {s}"))
            .unwrap_or_default()
    );
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown())
        .await
        .context("server failed");
    if let Some(forwarding) = forwarding {
        forwarding.abort();
    }
    js.delete_stream(&args.stream).await.ok();
    served
}

/// Ctrl-C or SIGTERM (the bench scripts stop their servers with it).
async fn shutdown() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    // A failed signal handler only means the process is stopped by a harder signal.
    tokio::signal::ctrl_c().await.ok();
}

/// Publishes the request body and answers once JetStream has stored it.
async fn publish(
    State(state): State<Arc<Publisher>>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let mut out = async_nats::HeaderMap::new();
    for (name, value) in &headers {
        if name == header::CONTENT_TYPE || name.as_str().starts_with("ce-") {
            if let Ok(value) = value.to_str() {
                out.insert(name.as_str(), value);
            }
        }
    }
    let stored = async {
        let ack = state
            .js
            .publish_with_headers(state.subject.clone(), out, body)
            .await
            .ok()?;
        ack.await.ok()
    };
    match stored.await {
        Some(_) => StatusCode::ACCEPTED,
        None => StatusCode::SERVICE_UNAVAILABLE,
    }
}

/// Takes every message of the consumer, forwards it, and acks what the sink took.
async fn forward_all(consumer: consumer::PullConsumer, client: Client, sink: Uri, limit: usize) {
    let messages = match consumer
        .stream()
        .max_messages_per_batch(limit)
        .messages()
        .await
    {
        Ok(messages) => messages,
        Err(error) => {
            eprintln!("baseline_jetstream: cannot pull: {error}");
            return;
        }
    };
    let client = &client;
    let sink = &sink;
    messages
        .for_each_concurrent(limit, |message| async move {
            let Ok(message) = message else { return };
            if forward(client, sink, &message).await {
                // A lost ack means a redelivery, as for the `nats` spool's delivered events.
                message.ack().await.ok();
            }
        })
        .await;
}

/// Sends one message to the sink; true when it answered 200–204.
async fn forward(client: &Client, sink: &Uri, message: &jetstream::Message) -> bool {
    let mut headers = HeaderMap::new();
    for (name, values) in message.headers.iter().flat_map(|h| h.iter()) {
        let (Ok(name), Some(value)) = (
            header::HeaderName::from_bytes(AsRef::<[u8]>::as_ref(name)),
            values.first(),
        ) else {
            continue;
        };
        if let Ok(value) = header::HeaderValue::from_str(value.as_str()) {
            headers.append(name, value);
        }
    }
    let Ok(mut request) = Request::post(sink.clone()).body(Full::new(message.payload.clone()))
    else {
        return false;
    };
    *request.headers_mut() = headers;
    answer::delivered(client, request).await
}
