//! The accept loop of both HTTP servers (ingress and admin): HTTP/1 only, over TLS when
//! configured, with limits on what one client can hold.
//!
//! - A connection permit is taken *before* `accept`, so past `max_connections` new
//!   connections wait in the kernel's listen backlog and cost no file descriptor.
//! - hyper's header-read timeout covers a request's headers and also an idle keep-alive
//!   connection waiting for its next request: a silent client is closed after it.
//! - A request body must arrive within `body_timeout` of its headers; past it the body reads
//!   as [`BodyError::TimedOut`], which ingress answers with 408, and the connection closes.
//! - A response must move: a write that has made no progress for `body_timeout` (a client
//!   that stopped reading its answers, so its socket buffers filled) fails and the
//!   connection closes. Without this a client could hold a connection slot forever by
//!   pipelining requests it never reads the answers of: hyper reads no further request while
//!   it cannot write, so no header timeout runs.
//! - A TLS handshake runs in the connection's task, after its slot is taken, and must finish
//!   within the header timeout, so a slow handshake holds a slot no longer than slow headers.
//!
//! Shutdown: cancelling `stop` stops accepting (the listener closes) and lets each connection
//! finish the request it is serving; dropping the [`Server::run`] future closes every
//! connection at once (the caller does that when the grace period runs out).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper::service::{service_fn, Service as _};
use hyper::Request;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{Config, ConnectionLimits};
use crate::ingress::Meter;
use crate::server_tls::{Handshaker, ServerTls};

/// Most connections the admin server holds open: probes, scrapes and operators need few.
pub(crate) const ADMIN_MAX_CONNECTIONS: usize = 64;

/// Descriptors kept for everything besides client connections: the spool's files, sink
/// sockets and pipes, the listeners, logs.
const FD_MARGIN: u64 = 256;

/// How long to wait after an accept error other than a reset connection (such as running
/// out of file descriptors) before accepting again.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_secs(1);

/// How often, at most, reaching the connection cap is logged.
const FULL_WARNING_EVERY: Duration = Duration::from_secs(60);

/// Open files the daemon may need for `config`: both servers' connection caps and a margin
/// for the spool and sinks. The binary raises its file-descriptor limit towards this.
pub fn open_files_wanted(config: &Config) -> u64 {
    let connections = config.ingress.connections.max_connections + ADMIN_MAX_CONNECTIONS;
    let sinks: usize = config.sinks.values().map(|s| s.concurrency).sum();
    (connections + sinks) as u64 + FD_MARGIN
}

/// One HTTP server: a bound listener, the router it serves and its limits.
pub(crate) struct Server<L> {
    /// Where connections come from.
    pub(crate) listener: TcpListener,
    /// What serves each request.
    pub(crate) router: Router,
    /// Records every answer (the ingress server's request metrics); `None` records nothing.
    pub(crate) meter: Option<Meter>,
    /// `ingress` or `admin`, for logs.
    pub(crate) name: &'static str,
    /// Most connections open at once (fixed at start).
    pub(crate) max_connections: usize,
    /// The timeouts for each new connection; read at accept, so a reload applies to new
    /// connections.
    pub(crate) limits: L,
    /// TLS termination; `None` serves plain HTTP.
    pub(crate) tls: Option<ServerTls>,
}

impl<L: Fn() -> ConnectionLimits> Server<L> {
    /// Serves until `stop` is cancelled, then waits for the connections to finish the
    /// requests they are serving.
    pub(crate) async fn run(self, stop: CancellationToken) {
        let connections = TaskTracker::new();
        let close = CancellationToken::new();
        // Dropping this future (the grace period ran out) closes what is still open.
        let _close_on_drop = close.clone().drop_guard();
        let permits = Arc::new(Semaphore::new(self.max_connections));
        let mut warned_full: Option<Instant> = None;
        loop {
            let permit = tokio::select! {
                biased;
                () = stop.cancelled() => break,
                permit = permits.clone().acquire_owned() => permit,
            };
            // The semaphore is never closed.
            let Ok(permit) = permit else { break };
            let stream = tokio::select! {
                biased;
                () = stop.cancelled() => break,
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    Err(error) => {
                        self.accept_failed(&error).await;
                        continue;
                    }
                },
            };
            if permits.available_permits() == 0 {
                self.warn_full(&mut warned_full);
            }
            let connection = Connection {
                router: self.router.clone(),
                meter: self.meter.clone(),
                limits: (self.limits)(),
                tls: self.tls.as_ref().map(ServerTls::handshaker),
                _permit: permit,
            };
            connections.spawn(connection.serve(stream, stop.clone(), close.clone()));
        }
        // Closing the listener refuses what waits in the backlog.
        drop(self.listener);
        connections.close();
        connections.wait().await;
    }

    async fn accept_failed(&self, error: &std::io::Error) {
        use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
        // A client that went away before we accepted it is no fault of ours.
        if matches!(
            error.kind(),
            ConnectionAborted | ConnectionRefused | ConnectionReset
        ) {
            return;
        }
        tracing::error!(server = self.name, %error, "Cannot accept connections; retrying in 1s");
        tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
    }

    fn warn_full(&self, last: &mut Option<Instant>) {
        let now = Instant::now();
        if last.is_some_and(|at| now < at + FULL_WARNING_EVERY) {
            return;
        }
        *last = Some(now);
        tracing::warn!(
            server = self.name,
            max_connections = self.max_connections,
            "Connection limit reached; new connections wait until one closes"
        );
    }
}

/// One accepted connection and what it holds.
struct Connection {
    router: Router,
    meter: Option<Meter>,
    limits: ConnectionLimits,
    tls: Option<Handshaker>,
    /// Returned to the server's cap when the connection ends.
    _permit: OwnedSemaphorePermit,
}

impl Connection {
    async fn serve(self, stream: TcpStream, stop: CancellationToken, close: CancellationToken) {
        let Some(tls) = &self.tls else {
            return self.serve_http(stream, stop, close).await;
        };
        // Nothing is in flight yet: stopping closes the connection at once.
        let handshake = tokio::time::timeout(self.limits.header_timeout, tls.accept(stream));
        let stream = tokio::select! {
            handshake = handshake => match handshake {
                Ok(Some(stream)) => stream,
                Ok(None) => return,
                Err(_elapsed) => {
                    tracing::debug!("TLS handshake not finished within the header timeout");
                    return;
                }
            },
            () = close.cancelled() => return,
            () = stop.cancelled() => return,
        };
        self.serve_http(stream, stop, close).await;
    }

    async fn serve_http<I>(self, stream: I, stop: CancellationToken, close: CancellationToken)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let body_timeout = self.limits.body_timeout;
        let router = TowerToHyperService::new(self.router);
        let meter = self.meter;
        let service = service_fn(move |request: Request<Incoming>| {
            // Only the ingress server is metered; the admin server reads no clock here.
            let metered = meter.as_ref().map(|m| {
                let label = Meter::label(request.uri().path());
                (m.clone(), label, tokio::time::Instant::now())
            });
            let answer = router.call(request.map(|body| DeadlineBody::new(body, body_timeout)));
            async move {
                let answer = answer.await;
                if let (Some((meter, label, started)), Ok(response)) = (metered, &answer) {
                    meter.record(label, response.status().as_u16(), started.elapsed());
                }
                answer
            }
        });
        let mut builder = http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(self.limits.header_timeout);
        let stream = WriteDeadline::new(stream, body_timeout);
        let connection = builder.serve_connection(TokioIo::new(stream), service);
        tokio::pin!(connection);
        let result = tokio::select! {
            result = connection.as_mut() => result,
            () = close.cancelled() => return,
            () = stop.cancelled() => {
                // Finish the request in flight, if any; an idle connection closes now.
                connection.as_mut().graceful_shutdown();
                tokio::select! {
                    result = connection => result,
                    () = close.cancelled() => return,
                }
            }
        };
        if let Err(error) = result {
            // Timeouts, resets and malformed requests: the client's doing, not ours.
            tracing::debug!(%error, "Connection closed with an error");
        }
    }
}

// === impl WriteDeadline ===

/// A connection whose writes fail with `TimedOut` once one has waited `timeout` without any
/// progress. The timer is made only when a write first has to wait and armed only while it
/// waits, so a client that reads its answers costs none.
struct WriteDeadline<I> {
    io: I,
    timeout: Duration,
    /// When the waiting write gives up; `None` while writes make progress.
    deadline: Option<Pin<Box<Sleep>>>,
    /// Whether `deadline` counts for the write now waiting.
    armed: bool,
}

impl<I> WriteDeadline<I> {
    fn new(io: I, timeout: Duration) -> Self {
        Self {
            io,
            timeout,
            deadline: None,
            armed: false,
        }
    }
}

impl<I: AsyncWrite + Unpin> WriteDeadline<I> {
    /// Runs one write-side poll of the connection under the deadline.
    fn poll_deadline<T>(
        &mut self,
        cx: &mut Context<'_>,
        poll: impl FnOnce(Pin<&mut I>, &mut Context<'_>) -> Poll<std::io::Result<T>>,
    ) -> Poll<std::io::Result<T>> {
        if let Poll::Ready(result) = poll(Pin::new(&mut self.io), cx) {
            self.armed = false;
            return Poll::Ready(result);
        }
        // The clock is read once per wait, not on every poll of a waiting write.
        let timeout = self.timeout;
        let deadline = match self.deadline.as_mut() {
            Some(deadline) if self.armed => deadline,
            Some(deadline) => {
                deadline.as_mut().reset(Instant::now() + timeout);
                deadline
            }
            None => self.deadline.insert(Box::pin(tokio::time::sleep(timeout))),
        };
        self.armed = true;
        match deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("the client took no data for {:?}", self.timeout),
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for WriteDeadline<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for WriteDeadline<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.poll_deadline(cx, |io, cx| io.poll_write(cx, buf))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        self.poll_deadline(cx, |io, cx| io.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.poll_deadline(cx, AsyncWrite::poll_flush)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.poll_deadline(cx, AsyncWrite::poll_shutdown)
    }
}

// === impl DeadlineBody ===

/// Why a request body could not be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BodyError {
    /// The body did not arrive within the body timeout.
    #[error("the request body did not arrive within {0:?}")]
    TimedOut(Duration),
    /// The connection failed while reading it.
    #[error(transparent)]
    Read(#[from] hyper::Error),
}

impl BodyError {
    /// The body timeout, when `error` or one of its causes is a body that did not arrive
    /// in time.
    pub(crate) fn timed_out(error: &(dyn std::error::Error + 'static)) -> Option<Duration> {
        let mut cause = Some(error);
        while let Some(error) = cause {
            if let Some(Self::TimedOut(timeout)) = error.downcast_ref() {
                return Some(*timeout);
            }
            cause = error.source();
        }
        None
    }
}

pin_project_lite::pin_project! {
    /// A request body that fails with [`BodyError::TimedOut`] once its deadline passes.
    ///
    /// The timer lives inline (axum boxes the body once anyway) and is registered only if a
    /// read has to wait, so a body that has already arrived costs no timer.
    struct DeadlineBody {
        #[pin]
        body: Incoming,
        #[pin]
        deadline: Sleep,
        timeout: Duration,
    }
}

impl DeadlineBody {
    fn new(body: Incoming, timeout: Duration) -> Self {
        Self {
            body,
            deadline: tokio::time::sleep(timeout),
            timeout,
        }
    }
}

impl Body for DeadlineBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.project();
        if let Poll::Ready(frame) = this.body.poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(BodyError::Read)));
        }
        match this.deadline.poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(BodyError::TimedOut(*this.timeout)))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
