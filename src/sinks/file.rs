//! The `file` sink: appends each event as one structured-mode JSON line.
//!
//! Whatever `data` holds, an event is exactly one line: JSON data is embedded (compacted
//! when it spans lines), text becomes a JSON string, anything else (binary, invalid UTF-8,
//! malformed JSON, JSON with a lone surrogate escape) `data_base64`; serde_json escapes
//! every control character in strings.
//!
//! Concurrent attempts share one write and one `fdatasync` (group commit): each attempt
//! queues its line, then takes the file lock; whoever holds the lock writes every queued
//! line, syncs once and answers all of them. An attempt whose line a previous holder
//! already wrote finds its answer waiting and returns at once. A batch is queued as one
//! entry of several lines, so it is written and synced as a whole.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use base64::prelude::{Engine as _, BASE64_STANDARD};
use tokio::sync::oneshot;

use super::{Attempt, BoxFuture, Sink, SinkError};
use crate::event::http::write_structured;
use crate::event::Event;

type Answer = oneshot::Sender<Result<(), String>>;

/// Most bytes reserved ahead for a batch's lines; past it the buffer grows as it is written.
const MAX_RESERVE: usize = 256 * 1024;

/// Appends events to a JSON-lines file; an attempt succeeds once its line is on disk.
#[derive(Debug)]
pub(crate) struct FileSink {
    path: Arc<Path>,
    /// Lines waiting for the next writer, with whom to tell.
    queued: Mutex<Vec<(Vec<u8>, Answer)>>,
    /// The open file (`None` until first use, and after an error so it is reopened).
    file: tokio::sync::Mutex<Option<Arc<File>>>,
}

impl FileSink {
    pub(crate) fn new(path: PathBuf) -> Self {
        Self {
            path: path.into(),
            queued: Mutex::new(Vec::new()),
            file: tokio::sync::Mutex::new(None),
        }
    }

    fn queue(&self) -> MutexGuard<'_, Vec<(Vec<u8>, Answer)>> {
        // The queue is plain data; a panic elsewhere does not make it inconsistent.
        self.queued.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends `line`, which must end with a newline.
    async fn append(&self, line: Vec<u8>) -> Result<(), SinkError> {
        let (tx, mut rx) = oneshot::channel();
        self.queue().push((line, tx));
        let mut file = self.file.lock().await;
        if let Ok(answer) = rx.try_recv() {
            return answer.map_err(io_error);
        }
        let batch = std::mem::take(&mut *self.queue());
        let (mut lines, answers): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
        // A lone entry (the usual case: a batch holds many lines) is written without a copy.
        let bytes = match lines.len() {
            1 => lines.pop().unwrap_or_default(),
            _ => lines.concat(),
        };
        let result = self.write(&mut file, bytes).await;
        if result.is_err() {
            *file = None;
        }
        for answer in answers {
            // A waiter that gave up no longer needs its answer.
            let _unheard = answer.send(result.clone());
        }
        drop(file);
        rx.await
            .unwrap_or_else(|_| Err("the write was abandoned".to_owned()))
            .map_err(io_error)
    }

    async fn write(&self, file: &mut Option<Arc<File>>, bytes: Vec<u8>) -> Result<(), String> {
        let path = self.path.clone();
        let open = file.clone();
        let (opened, result) = tokio::task::spawn_blocking(move || {
            let file = match open {
                Some(f) => f,
                None => Arc::new(open_append(&path).map_err(|e| e.to_string())?),
            };
            let result = append_synced(&file, &bytes).map_err(|e| e.to_string());
            Ok::<_, String>((file, result))
        })
        .await
        .map_err(|e| e.to_string())??;
        *file = Some(opened);
        result
    }
}

fn open_append(path: &Path) -> std::io::Result<File> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    OpenOptions::new().create(true).append(true).open(path)
}

/// Appends `bytes` and syncs; on failure cuts the file back so no partial line remains.
fn append_synced(mut file: &File, bytes: &[u8]) -> std::io::Result<()> {
    let before = file.metadata()?.len();
    let result = file.write_all(bytes).and_then(|()| file.sync_data());
    if result.is_err() {
        let _best_effort = file.set_len(before);
    }
    result
}

fn io_error(message: String) -> SinkError {
    SinkError::retryable(super::outcome::GENERIC_ERROR, message)
}

impl Sink for FileSink {
    fn deliver<'a>(&'a self, attempt: Attempt<'a>) -> BoxFuture<'a, Result<(), SinkError>> {
        Box::pin(async move { self.deliver_batch_lines(&[attempt]).await })
    }

    fn batches(&self) -> bool {
        true
    }

    fn deliver_batch<'a>(
        &'a self,
        batch: &'a [Attempt<'a>],
    ) -> BoxFuture<'a, Result<(), SinkError>> {
        Box::pin(self.deliver_batch_lines(batch))
    }
}

impl FileSink {
    async fn deliver_batch_lines(&self, batch: &[Attempt<'_>]) -> Result<(), SinkError> {
        let mut lines = Vec::new();
        for (index, attempt) in batch.iter().enumerate() {
            push_line(&mut lines, attempt.event);
            if index == 0 {
                // Room for the rest if they are like the first (up to a bound, for a batch
                // led by one large event).
                let rest = lines.len().saturating_mul(batch.len() - 1);
                lines.reserve(rest.min(MAX_RESERVE));
            }
        }
        self.append(lines).await
    }
}

/// Appends the event as one line of JSON that any JSON reader accepts, and its newline.
fn push_line(lines: &mut Vec<u8>, event: &Event) {
    let start = lines.len();
    write_structured(event, lines);
    keep_on_one_line(lines, start);
    if may_hold_surrogate_escape(&lines[start..])
        && serde_json::from_slice::<serde_json::Value>(&lines[start..]).is_err()
    {
        lines.truncate(start);
        write_with_base64_data(event, lines);
    }
    lines.push(b'\n');
}

/// Removes the line breaks of the structured-mode JSON object that starts at `start`, so it
/// fills one line.
///
/// serde_json escapes control characters in every string it writes, so a `\n` or `\r` byte
/// can only come from whitespace inside JSON `data`, embedded as received. Valid JSON holds
/// no raw line break inside a string, and a structural character always separates two
/// tokens, so dropping these bytes keeps the same JSON value. Most lines have none and are
/// kept as they are.
fn keep_on_one_line(lines: &mut Vec<u8>, start: usize) {
    if memchr::memchr2(b'\n', b'\r', &lines[start..]).is_none() {
        return;
    }
    let mut kept = start;
    for read in start..lines.len() {
        let byte = lines[read];
        if byte != b'\n' && byte != b'\r' {
            lines[kept] = byte;
            kept += 1;
        }
    }
    lines.truncate(kept);
}

/// True when `json` may hold a `\uD800`–`\uDFFF` escape (a `\\ud…` in a string's text also
/// counts). serde_json writes none; JSON `data` embedded as received may hold a lone one,
/// which strict readers (serde_json among them) refuse, so such a line is checked before it
/// is written. Backslashes are rare in JSON, so this costs one fast scan of most lines.
fn may_hold_surrogate_escape(json: &[u8]) -> bool {
    memchr::memchr_iter(b'\\', json)
        .any(|at| matches!(json.get(at + 1..at + 3), Some([b'u', b'd' | b'D'])))
}

/// Appends the event with its data as Base64 (`data_base64`, or 0.3's
/// `datacontentencoding`), for JSON data that some readers would refuse. Decoding the line
/// gives back the same bytes.
fn write_with_base64_data(event: &Event, json: &mut Vec<u8>) {
    let data = event.data.as_deref().unwrap_or_default();
    let bare = Event {
        data: None,
        ..event.clone()
    };
    write_structured(&bare, json);
    // A structured-mode object always ends with its closing brace.
    json.pop();
    let member = if event.specversion == "0.3" {
        ",\"datacontentencoding\":\"base64\",\"data\":\""
    } else {
        ",\"data_base64\":\""
    };
    json.extend_from_slice(member.as_bytes());
    json.extend_from_slice(BASE64_STANDARD.encode(data).as_bytes());
    json.extend_from_slice(b"\"}");
}
