//! Baseline B of the benchmark (`bench/run.sh`): a bare forwarder. Each `POST` is sent on to
//! a local sink with the client the `http` sink uses (`switchyard::outbound`), nothing is
//! stored, and 202 is answered once the sink has answered.
//!
//! ```sh
//! cargo run --release --example baseline_forward -- [--sink URL] [ADDR]
//! cargo run --release --example baseline_forward -- --file PATH [ADDR]
//! cargo run --release --example baseline_forward -- --journal PATH [--sink URL | --file PATH] \
//!     [--concurrency N] [ADDR]
//! ```
//!
//! Three variants measure what durability costs on the machine:
//!
//! - `--file PATH` (baseline B-file): nothing is forwarded; each body is appended to `PATH` as
//!   one line and 202 is answered once it is on disk, as a `file` sink's attempt succeeds. One
//!   thread writes and `fdatasync`s every line that arrived while the last sync ran (a group
//!   commit, as the `file` sink's).
//! - `--journal PATH` (baseline D, a bare durable forwarder): each body is appended to the
//!   journal `PATH` (a 13-byte header and the body, group-committed as above) and 202 is
//!   answered once it is on disk; then it is forwarded to the sink, at most `--concurrency`
//!   at once, and a 9-byte ack record is appended without a sync of its own (it is written
//!   with the next group that is synced). The least a router that keeps what it acknowledged
//!   through a crash does: no routing, no attributes in the record, no retries (a failed
//!   forward is counted and printed at exit), no recovery at start. With `--file` as well
//!   (baseline D-file), the forward is the line appended to that file (synced as above, in
//!   its own group commit) instead of a request to the sink.
//!
//! The listen address comes from the first argument, else `BASELINE_LISTEN`, else
//! `127.0.0.1:9101`; the sink URL from `--sink`, else `BASELINE_SINK`, else
//! `http://127.0.0.1:9102/events` (for example `baseline_ingest --mode sink 127.0.0.1:9102`).
//!
//! The request's `content-type` and `ce-*` headers and its body are forwarded as they came,
//! as a binary-mode CloudEvent would be; a sink answer outside 200–204, a connection error or
//! no answer within 30 s (the `http` sink's default timeout) gives 502.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};

#[path = "support/answer.rs"]
mod answer;

use anyhow::Context as _;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, Request, StatusCode, Uri};
use axum::routing::any;
use axum::Router;
use clap::Parser;
use http_body_util::Full;
use switchyard::outbound::{Client, ClientOptions, SystemRoots};
use tokio::sync::{oneshot, Semaphore};

/// Most bytes of ack records held back for the next synced group before they are written
/// on their own.
const MAX_HELD_BACK: usize = 1 << 20;

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
    /// Append each body as a synced line to this file instead of forwarding it (with
    /// `--journal`: after the answer, else before it).
    #[arg(long)]
    file: Option<PathBuf>,
    /// Store each request in this journal before answering, then forward it and log its ack.
    #[arg(long)]
    journal: Option<PathBuf>,
    /// Forwards at once with `--journal`.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Address to listen on.
    #[arg(env = "BASELINE_LISTEN", default_value = "127.0.0.1:9101")]
    listen: SocketAddr,
}

/// Shared by every request.
#[derive(Debug)]
struct Forwarder {
    client: Client,
    sink: Uri,
    mode: Mode,
}

/// What a request's answer waits for.
#[derive(Debug)]
enum Mode {
    /// The sink's answer (baseline B).
    Forward,
    /// Its body's line on disk (baseline B-file).
    File(Appender),
    /// Its record in the journal; the forward follows (baseline D), to the sink or, with a
    /// file, as a synced line (baseline D-file).
    Journal {
        journal: Appender,
        file: Option<Appender>,
        slots: Arc<Semaphore>,
        next_seq: AtomicU64,
        failed: Arc<AtomicU64>,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let (mode, what) = match (&args.file, &args.journal) {
        (Some(path), None) => (
            Mode::File(Appender::open(path)?),
            format!("appending to {}", path.display()),
        ),
        (file, Some(path)) => (
            Mode::Journal {
                journal: Appender::open(path)?,
                file: file.as_deref().map(Appender::open).transpose()?,
                slots: Arc::new(Semaphore::new(args.concurrency.max(1))),
                next_seq: AtomicU64::new(0),
                failed: Arc::new(AtomicU64::new(0)),
            },
            match file {
                Some(file) => format!(
                    "journal {}, appending to {}",
                    path.display(),
                    file.display()
                ),
                None => format!("journal {}, forwarding to {}", path.display(), args.sink),
            },
        ),
        (None, None) => (Mode::Forward, format!("forwarding to {}", args.sink)),
    };
    let state = Arc::new(Forwarder {
        // The client an `http` sink without `tls` or `proxy` settings gets.
        client: Client::new(&ClientOptions::default(), &SystemRoots::load())?,
        sink: args.sink.clone(),
        mode,
    });
    let app = Router::new()
        .fallback(any(answer))
        .with_state(Arc::clone(&state));
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    eprintln!("baseline_forward listening on {}, {what}", args.listen);
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            // A failed signal handler only means the process is stopped by a harder signal.
            tokio::signal::ctrl_c().await.ok();
        })
        .await
        .context("server failed")?;
    if let Mode::Journal { failed, .. } = &state.mode {
        eprintln!("forwards failed: {}", failed.load(Ordering::Relaxed));
    }
    Ok(())
}

async fn answer(
    State(state): State<Arc<Forwarder>>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    match &state.mode {
        Mode::Forward => {
            if forward(&state, &headers, body).await {
                StatusCode::ACCEPTED
            } else {
                StatusCode::BAD_GATEWAY
            }
        }
        Mode::File(file) => durable(file.append_durable(line_of(&body)).await),
        Mode::Journal {
            journal,
            file: _,
            slots,
            next_seq,
            failed,
        } => {
            let seq = next_seq.fetch_add(1, Ordering::Relaxed);
            let mut record = Vec::with_capacity(13 + body.len());
            record.push(b'P');
            record.extend_from_slice(&seq.to_le_bytes());
            // Bodies are far below 4 GiB (axum's default body limit is 2 MiB).
            record.extend_from_slice(&u32::try_from(body.len()).unwrap_or(u32::MAX).to_le_bytes());
            record.extend_from_slice(&body);
            if !journal.append_durable(record).await {
                return StatusCode::SERVICE_UNAVAILABLE;
            }
            let (state, slots, failed) =
                (Arc::clone(&state), Arc::clone(slots), Arc::clone(failed));
            tokio::spawn(async move {
                // The semaphore is never closed.
                let Ok(_slot) = slots.acquire_owned().await else {
                    return;
                };
                let Mode::Journal { journal, file, .. } = &state.mode else {
                    return;
                };
                let delivered = match file {
                    Some(file) => file.append_durable(line_of(&body)).await,
                    None => forward(&state, &headers, body).await,
                };
                if delivered {
                    let mut ack = Vec::with_capacity(9);
                    ack.push(b'A');
                    ack.extend_from_slice(&seq.to_le_bytes());
                    journal.append(ack);
                } else {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            });
            StatusCode::ACCEPTED
        }
    }
}

/// `body` and a newline.
fn line_of(body: &[u8]) -> Vec<u8> {
    let mut line = Vec::with_capacity(body.len() + 1);
    line.extend_from_slice(body);
    line.push(b'\n');
    line
}

/// 202 when the write is on disk, else 503.
fn durable(on_disk: bool) -> StatusCode {
    if on_disk {
        StatusCode::ACCEPTED
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
}

/// Sends the request's `content-type` and `ce-*` headers and `body` to the sink; true when
/// it answered 200–204 within the timeout.
async fn forward(state: &Forwarder, headers: &HeaderMap, body: Bytes) -> bool {
    let mut out = HeaderMap::new();
    for (name, value) in headers {
        if name == header::CONTENT_TYPE || name.as_str().starts_with("ce-") {
            out.append(name.clone(), value.clone());
        }
    }
    let Ok(mut request) = Request::post(state.sink.clone()).body(Full::new(body)) else {
        return false;
    };
    *request.headers_mut() = out;
    answer::delivered(&state.client, request).await
}

/// A file that one thread appends to, making each group of records durable with one write
/// and one `fdatasync`: a group is every record that arrived while the last one was synced.
#[derive(Debug)]
struct Appender {
    records: mpsc::Sender<Record>,
}

/// Bytes to append, and whom to tell once they are on disk (none for an ack record).
#[derive(Debug)]
struct Record {
    bytes: Vec<u8>,
    synced: Option<oneshot::Sender<bool>>,
}

impl Appender {
    /// Opens (creating) `path` for appending and starts its writer thread.
    fn open(path: &std::path::Path) -> anyhow::Result<Self> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        let (records, queued) = mpsc::channel();
        std::thread::Builder::new()
            .name("appender".into())
            .spawn(move || write_groups(file, &queued))
            .context("cannot start the writer thread")?;
        Ok(Self { records })
    }

    /// Appends `bytes`; true once they are on disk, false when the write or sync failed.
    async fn append_durable(&self, bytes: Vec<u8>) -> bool {
        let (synced, on_disk) = oneshot::channel();
        let record = Record {
            bytes,
            synced: Some(synced),
        };
        self.records.send(record).is_ok() && on_disk.await.unwrap_or(false)
    }

    /// Appends `bytes` with the next group that is synced, without waiting for it.
    fn append(&self, bytes: Vec<u8>) {
        // The writer thread ends only with the process.
        let _never_fails = self.records.send(Record {
            bytes,
            synced: None,
        });
    }
}

/// The writer thread: groups what `queued` holds, writes and syncs each group.
fn write_groups(mut file: File, queued: &mpsc::Receiver<Record>) {
    let mut buffer = Vec::new();
    let mut waiting = Vec::new();
    while let Ok(first) = queued.recv() {
        let mut next = Some(first);
        while let Some(record) = next {
            buffer.extend_from_slice(&record.bytes);
            waiting.extend(record.synced);
            next = queued.try_recv().ok();
        }
        if waiting.is_empty() && buffer.len() < MAX_HELD_BACK {
            continue;
        }
        let mut on_disk = file.write_all(&buffer).is_ok();
        if !waiting.is_empty() {
            on_disk = on_disk && file.sync_data().is_ok();
        }
        buffer.clear();
        for synced in waiting.drain(..) {
            // The request may have been dropped (its client gone): nothing to tell.
            let _unheard = synced.send(on_disk);
        }
    }
}
