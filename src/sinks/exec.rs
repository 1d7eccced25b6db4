//! The `exec` sink: runs a command per event with the structured JSON event on stdin.
//!
//! The process gets a cleared environment: only the variables named in `exec.env` (taken
//! from the daemon's environment when the sink is built) and the `SWITCHYARD_*` variables
//! describing the attempt, so the daemon's secrets do not reach it.
//!
//! With `reply: true`, what the process writes to stdout (up to the reply limit) is its
//! reply: one structured-mode CloudEvent JSON document, or nothing.

use std::ffi::OsString;
use std::io::ErrorKind;
use std::process::{ExitStatus, Stdio};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, ChildStdin, Command};

use super::outcome::{GENERIC_ERROR, TIMED_OUT};
use super::reply::{self, Reply};
use super::{Attempt, BoxFuture, Sink, SinkError};
use crate::config::ExecSinkConfig;
use crate::event::http::encode_structured;

/// Bytes of stdout and stderr kept (the last ones) for logs and error messages.
const KEEP_OUTPUT: usize = 1024;

/// The outcome of an event that no process can be started with (a NUL byte where the
/// process would get an attribute): it is dead-lettered without a retry.
pub(crate) const INVALID_INPUT: &str = "InvalidInput";

/// Runs a command per event; exit status 0 confirms the delivery.
#[derive(Debug)]
pub(crate) struct ExecSink {
    config: ExecSinkConfig,
    /// The `exec.env` variables that are set in the daemon's environment, with their values.
    passed_env: Vec<(String, OsString)>,
    /// Most bytes of stdout read as a reply.
    reply_limit: usize,
}

/// What a finished process left behind.
struct Finished {
    status: ExitStatus,
    stderr: Vec<u8>,
    /// Its whole stdout when a reply was asked for: `None` when it was over the limit.
    stdout: Option<Vec<u8>>,
}

impl ExecSink {
    pub(crate) fn new(config: ExecSinkConfig) -> Self {
        let passed_env = config
            .env
            .iter()
            .filter_map(|name| Some((name.clone(), std::env::var_os(name)?)))
            .collect();
        Self {
            config,
            passed_env,
            reply_limit: crate::config::MAX_BATCH_BYTES,
        }
    }

    /// Reads replies of at most `limit` bytes.
    pub(crate) fn with_reply_limit(mut self, limit: usize) -> Self {
        self.reply_limit = limit;
        self
    }

    fn command(&self, attempt: Attempt<'_>) -> Result<Command, SinkError> {
        let (program, args) =
            self.config.command.split_first().ok_or_else(|| {
                SinkError::permanent(GENERIC_ERROR, "exec sink has an empty command")
            })?;
        if attempt.event.id.contains('\0') {
            let message = "event id contains a NUL byte, which SWITCHYARD_EVENT_ID cannot hold";
            return Err(SinkError::permanent(INVALID_INPUT, message));
        }
        let mut command = Command::new(program);
        command
            .args(args)
            .env_clear()
            .envs(self.passed_env.iter().map(|(name, value)| (name, value)))
            .env("SWITCHYARD_ROUTE", attempt.route)
            .env(
                "SWITCHYARD_DELIVERY_COUNT",
                attempt.delivery_count.to_string(),
            )
            .env("SWITCHYARD_EVENT_ID", &attempt.event.id)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Dropping the attempt (shutdown, a panic) must not leave the process behind.
            .kill_on_drop(true);
        Ok(command)
    }

    /// Runs the command for one attempt; with `reply_limit`, its stdout is read as a reply.
    async fn run(
        &self,
        attempt: Attempt<'_>,
        reply_limit: Option<usize>,
    ) -> Result<Reply, SinkError> {
        let program = self.config.command.first().map_or("", String::as_str);
        let mut child = self.command(attempt)?.spawn().map_err(|e| {
            let message = format!("cannot start {program:?}: {e}");
            match e.kind() {
                // What the process would be given cannot be passed to it; no retry changes that.
                ErrorKind::InvalidInput => SinkError::permanent(INVALID_INPUT, message),
                _ => SinkError::retryable(GENERIC_ERROR, message),
            }
        })?;
        let input = encode_structured(attempt.event);
        let conversation = converse(&mut child, input, reply_limit);
        let finished = tokio::time::timeout(self.config.timeout, conversation).await;
        let Ok(finished) = finished else {
            let _already_gone = child.start_kill();
            let _reaped = child.wait().await;
            let after = self.config.timeout;
            let message = format!("{program:?} did not finish within {after:?}; killed");
            return Err(SinkError::retryable(TIMED_OUT, message));
        };
        let finished = finished.map_err(|e| {
            SinkError::retryable(GENERIC_ERROR, format!("waiting for {program:?}: {e}"))
        })?;
        if finished.status.success() {
            return Ok(match (finished.stdout, reply_limit) {
                (Some(stdout), Some(_)) => reply::from_json(&stdout),
                (None, Some(limit)) => reply::too_large(limit),
                (_, None) => Reply::None,
            });
        }
        let stderr = String::from_utf8_lossy(&finished.stderr);
        let message = format!(
            "{program:?} failed ({}): {}",
            finished.status,
            stderr.trim()
        );
        Err(SinkError::retryable(GENERIC_ERROR, message))
    }
}

/// Feeds stdin, drains stdout and stderr (keeping their tails, or with `reply_limit` all of
/// stdout up to it) and waits for the exit.
async fn converse(
    child: &mut Child,
    input: Vec<u8>,
    reply_limit: Option<usize>,
) -> std::io::Result<Finished> {
    let stdin = child.stdin.take();
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let out = async {
        match reply_limit {
            Some(limit) => head(stdout, limit).await,
            None => tail(stdout).await.map(Some),
        }
    };
    let (fed, out, err) = tokio::join!(feed(stdin, input), out, tail(stderr));
    fed?;
    let status = child.wait().await?;
    let out = out?;
    if reply_limit.is_none() {
        if let Some(out) = out.as_ref().filter(|o| !o.is_empty()) {
            tracing::debug!(stdout = %String::from_utf8_lossy(out), "Exec sink output");
        }
    }
    Ok(Finished {
        status,
        stderr: err?,
        stdout: out,
    })
}

/// Reads a pipe to its end, keeping all of it while it is at most `limit` bytes; `None` when
/// it is longer (the rest is read and dropped, so the process is never blocked writing).
async fn head(
    pipe: Option<impl AsyncRead + Unpin>,
    limit: usize,
) -> std::io::Result<Option<Vec<u8>>> {
    let Some(mut pipe) = pipe else {
        return Ok(Some(Vec::new()));
    };
    let mut kept = Vec::new();
    let mut over = false;
    let mut buf = [0u8; 4096];
    loop {
        let n = pipe.read(&mut buf).await?;
        if n == 0 {
            return Ok((!over).then_some(kept));
        }
        over |= kept.len() + n > limit;
        if !over {
            kept.extend_from_slice(&buf[..n]);
        }
    }
}

/// Writes the event and closes stdin. A process that exits without reading it is not an
/// error here: its exit status decides.
async fn feed(stdin: Option<ChildStdin>, input: Vec<u8>) -> std::io::Result<()> {
    let Some(mut stdin) = stdin else {
        return Ok(());
    };
    match stdin.write_all(&input).await {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}

/// Reads a pipe to its end, keeping only the last [`KEEP_OUTPUT`] bytes.
async fn tail(pipe: Option<impl AsyncRead + Unpin>) -> std::io::Result<Vec<u8>> {
    let Some(mut pipe) = pipe else {
        return Ok(Vec::new());
    };
    let mut kept = Vec::with_capacity(KEEP_OUTPUT);
    let mut buf = [0u8; 4096];
    loop {
        let n = pipe.read(&mut buf).await?;
        if n == 0 {
            return Ok(kept);
        }
        kept.extend_from_slice(&buf[..n]);
        let excess = kept.len().saturating_sub(KEEP_OUTPUT);
        kept.drain(..excess);
    }
}

impl Sink for ExecSink {
    fn deliver<'a>(&'a self, attempt: Attempt<'a>) -> BoxFuture<'a, Result<(), SinkError>> {
        Box::pin(async move { self.run(attempt, None).await.map(|_| ()) })
    }

    fn deliver_for_reply<'a>(
        &'a self,
        attempt: Attempt<'a>,
    ) -> BoxFuture<'a, Result<Reply, SinkError>> {
        Box::pin(self.run(attempt, Some(self.reply_limit)))
    }
}
