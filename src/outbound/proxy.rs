//! Reaching a target: directly, through an HTTP proxy, or through a CONNECT tunnel.
//!
//! hyper-util decides which proxy serves a target ([`Matcher`]: the curl rules for
//! `HTTP_PROXY`, `HTTPS_PROXY`, `ALL_PROXY` and `NO_PROXY`) and opens tunnels ([`Tunnel`]).
//! What is ours: a plain-HTTP connection to a proxy is marked as proxied (so the client sends
//! absolute-form request targets), an `http://` proxy is the only kind used, and no error or
//! log line carries a proxy's credentials.
//!
//! The decision is made once per new connection; a pooled connection costs nothing more.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::http::{header, Request, Uri};
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy::connect::proxy::Tunnel;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::client::proxy::matcher::{Intercept, Matcher};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::{redacted, BuildError, Proxy};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The variables an environment proxy is read from, in the order curl reads them.
const ENV_NAMES: [&[&str]; 4] = [
    &["HTTP_PROXY", "http_proxy"],
    &["HTTPS_PROXY", "https_proxy"],
    &["ALL_PROXY", "all_proxy"],
    &["NO_PROXY", "no_proxy"],
];

/// Which proxy, if any, serves each target.
#[derive(Debug)]
pub(super) struct Routes {
    matcher: Matcher,
    /// The proxy of plain-HTTP targets takes credentials.
    http_credentials: bool,
}

impl Routes {
    /// The routes `proxy` asks for; `None` when every target is reached directly.
    pub(super) fn new(proxy: &Proxy) -> Result<Option<Self>, BuildError> {
        match proxy {
            Proxy::Environment => Ok(Self::from_vars(|name| std::env::var(name).ok())),
            Proxy::Direct => Ok(None),
            Proxy::Url(uri) => Self::explicit(uri).map(Some),
        }
    }

    /// Every target through `uri`.
    fn explicit(uri: &Uri) -> Result<Self, BuildError> {
        let refused = |reason| BuildError::Proxy {
            proxy: redacted(uri),
            reason,
        };
        if uri.scheme_str() != Some("http") {
            return Err(refused("only http:// proxies are supported"));
        }
        // The matcher reads the URL as text, credentials included, and keeps them out of
        // its `Debug`.
        let matcher = Matcher::builder().all(uri.to_string()).build();
        if matcher
            .intercept(&Uri::from_static("http://target/"))
            .is_none()
        {
            return Err(refused(
                "not a proxy URL (http://[user:password@]host:port)",
            ));
        }
        let http_credentials = has_http_credentials(&matcher);
        Ok(Self {
            matcher,
            http_credentials,
        })
    }

    /// The environment proxies, read through `var`; `None` when none is set.
    pub(super) fn from_vars(var: impl Fn(&str) -> Option<String>) -> Option<Self> {
        // As curl and Go: under CGI, `HTTP_PROXY` may come from a request's `Proxy:` header.
        if var("REQUEST_METHOD").is_some() {
            return None;
        }
        let first = |names: &[&str]| {
            names
                .iter()
                .find_map(|n| var(n).filter(|v| !v.trim().is_empty()))
        };
        let [http, https, all, no] = ENV_NAMES.map(first);
        for (names, value) in ENV_NAMES.iter().zip([&http, &https, &all]) {
            if let Some(value) = value {
                warn_if_unusable(names[0], value);
            }
        }
        if http.is_none() && https.is_none() && all.is_none() {
            return None;
        }
        let (all, http, https, no) = (
            all.as_deref(),
            http.as_deref(),
            https.as_deref(),
            no.as_deref(),
        );
        // Asked without `NO_PROXY`, which could name the probe's host.
        let http_credentials = has_http_credentials(&matcher(all, http, None, None));
        Some(Self {
            matcher: matcher(all, http, https, no),
            http_credentials,
        })
    }

    /// The proxy that serves `dst`, if any.
    pub(super) fn intercept(&self, dst: &Uri) -> Option<Intercept> {
        self.matcher.intercept(dst)
    }

    /// Whether plain-HTTP targets may go through a proxy that wants credentials.
    pub(super) fn http_has_credentials(&self) -> bool {
        self.http_credentials
    }

    /// Adds `Proxy-Authorization` to a plain-HTTP request that goes through a proxy with
    /// credentials (an `https://` request has them in its tunnel's CONNECT instead).
    pub(super) fn authorize<B>(&self, request: &mut Request<B>) {
        if request.uri().scheme_str() != Some("http") {
            return;
        }
        if let Some(auth) = self
            .intercept(request.uri())
            .as_ref()
            .and_then(Intercept::basic_auth)
        {
            request
                .headers_mut()
                .insert(header::PROXY_AUTHORIZATION, auth.clone());
        }
    }
}

/// A matcher of the given proxy variables' values.
fn matcher(
    all: Option<&str>,
    http: Option<&str>,
    https: Option<&str>,
    no: Option<&str>,
) -> Matcher {
    let mut builder = Matcher::builder();
    if let Some(all) = all {
        builder = builder.all(all);
    }
    if let Some(http) = http {
        builder = builder.http(http);
    }
    if let Some(https) = https {
        builder = builder.https(https);
    }
    if let Some(no) = no {
        builder = builder.no(no);
    }
    builder.build()
}

/// Whether `matcher` sends plain-HTTP targets to a proxy with credentials.
fn has_http_credentials(matcher: &Matcher) -> bool {
    matcher
        .intercept(&Uri::from_static("http://target/"))
        .is_some_and(|i| i.basic_auth().is_some())
}

/// Logs a proxy variable that is set but unusable (by name only: the value may hold
/// credentials); hyper-util would silently connect directly.
fn warn_if_unusable(variable: &str, value: &str) {
    let matcher = Matcher::builder().all(value).build();
    match matcher.intercept(&Uri::from_static("http://target/")) {
        None => tracing::warn!(
            variable,
            "Proxy variable is not a proxy URL; targets it would serve are reached directly"
        ),
        Some(i) if i.uri().scheme_str() != Some("http") => tracing::warn!(
            variable,
            "Proxy variable names a proxy that is not http://; connections through it fail"
        ),
        Some(_) => {}
    }
}

// === The connector ===

/// Opens TCP connections to targets or their proxies; TLS is layered on top by the caller.
#[derive(Debug, Clone)]
pub(super) struct ProxyConnector {
    http: HttpConnector,
    routes: Option<Arc<Routes>>,
}

impl ProxyConnector {
    pub(super) fn new(routes: Option<Arc<Routes>>) -> Self {
        let mut http = HttpConnector::new();
        // `https://` targets reach this connector too; TLS is added above it.
        http.enforce_http(false);
        Self { http, routes }
    }
}

/// Why a connection through a proxy failed. Names the proxy without its credentials.
#[derive(Debug, thiserror::Error)]
enum ProxyError {
    #[error("proxy {proxy} is not an http:// proxy")]
    Unsupported { proxy: String },
    #[error("cannot reach proxy {proxy}")]
    Connect {
        proxy: String,
        #[source]
        source: BoxError,
    },
    #[error("tunnel through proxy {proxy} failed")]
    Tunnel {
        proxy: String,
        #[source]
        source: BoxError,
    },
}

type Connecting = Pin<Box<dyn Future<Output = Result<ProxyStream, BoxError>> + Send>>;

impl tower_service::Service<Uri> for ProxyConnector {
    type Response = ProxyStream;
    type Error = BoxError;
    type Future = Connecting;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.http.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        let intercept = self.routes.as_ref().and_then(|r| r.intercept(&dst));
        let Some(intercept) = intercept else {
            let connecting = self.http.call(dst);
            return Box::pin(async move {
                let io = connecting.await?;
                Ok(ProxyStream { io, proxied: false })
            });
        };
        let proxy = redacted(intercept.uri());
        if intercept.uri().scheme_str() != Some("http") {
            return Box::pin(async move { Err(ProxyError::Unsupported { proxy }.into()) });
        }
        if dst.scheme_str() == Some("https") {
            let mut tunnel = Tunnel::new(intercept.uri().clone(), self.http.clone());
            if let Some(auth) = intercept.basic_auth() {
                tunnel = tunnel.with_auth(auth.clone());
            }
            let connecting = tunnel.call(dst);
            Box::pin(async move {
                let io = connecting.await.map_err(|e| ProxyError::Tunnel {
                    proxy,
                    source: e.into(),
                })?;
                Ok(ProxyStream { io, proxied: false })
            })
        } else {
            let connecting = self.http.call(intercept.uri().clone());
            Box::pin(async move {
                let io = connecting.await.map_err(|e| ProxyError::Connect {
                    proxy,
                    source: e.into(),
                })?;
                Ok(ProxyStream { io, proxied: true })
            })
        }
    }
}

/// A TCP connection, to the target or to a proxy that forwards plain-HTTP requests.
#[derive(Debug)]
pub(super) struct ProxyStream {
    io: TokioIo<TcpStream>,
    /// Requests on it go to a proxy, in absolute form.
    proxied: bool,
}

impl Connection for ProxyStream {
    fn connected(&self) -> Connected {
        self.io.connected().proxy(self.proxied)
    }
}

impl Read for ProxyStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl Write for ProxyStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }
}
