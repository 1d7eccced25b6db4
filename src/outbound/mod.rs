//! The one outbound HTTP client. Every `http` sink, the OTLP exporter and the commands that
//! talk to a running daemon build theirs here, from [`ClientOptions`]: whom to trust (the
//! system's roots plus extra CA certificates), which certificate to present when a server
//! asks for one (mTLS), and which proxy to go through.
//!
//! Certificates are always verified: there is no option to skip verification. A private CA
//! or a self-signed server is trusted by adding its certificate to
//! [`ClientOptions::extra_roots`].
//!
//! `tls` builds the rustls configuration; `proxy` the connector that reaches a target
//! directly, through an HTTP proxy in absolute form (`http://` targets) or through a
//! CONNECT tunnel (`https://` targets). Imports nothing internal.

mod proxy;
#[cfg(test)]
pub(crate) mod test_pki;
mod tls;

use std::fmt;
use std::sync::Arc;

use axum::http::{Request, Uri};
use bytes::Bytes;
use http_body_util::Full;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::{Client as Pooled, ResponseFuture};
use hyper_util::rt::TokioExecutor;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

pub use tls::SystemRoots;

/// How a client picks its proxy.
#[derive(Clone, Default, PartialEq, Eq)]
pub enum Proxy {
    /// `HTTPS_PROXY` for `https://` targets, `HTTP_PROXY` for `http://` targets, `ALL_PROXY`
    /// for both when those are unset, and `NO_PROXY` for the hosts that bypass them (the
    /// lowercase names too, curl's rules), read when the client is built.
    #[default]
    Environment,
    /// Always connect directly, whatever the environment says.
    Direct,
    /// Every target through this `http://[user:password@]host:port` proxy; the environment
    /// (`NO_PROXY` included) does not apply.
    Url(Uri),
}

impl fmt::Debug for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Environment => f.write_str("Environment"),
            Self::Direct => f.write_str("Direct"),
            // The URL may carry credentials: show where it goes, never who logs in.
            Self::Url(uri) => write!(f, "Url({})", redacted(uri)),
        }
    }
}

/// A URL as `scheme://host:port`, without the credentials it may carry.
pub(crate) fn redacted(uri: &Uri) -> String {
    let scheme = uri.scheme_str().unwrap_or("http");
    let host = uri.host().unwrap_or("");
    match uri.port_u16() {
        Some(port) => format!("{scheme}://{host}:{port}"),
        None => format!("{scheme}://{host}"),
    }
}

/// The certificate chain and private key a client presents when a server asks (mTLS).
#[derive(PartialEq, Eq)]
pub struct Identity {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl Identity {
    /// The end-entity certificate first, then any intermediates; and its key.
    pub fn new(chain: Vec<CertificateDer<'static>>, key: PrivateKeyDer<'static>) -> Self {
        Self { chain, key }
    }
}

impl Clone for Identity {
    fn clone(&self) -> Self {
        Self {
            chain: self.chain.clone(),
            key: self.key.clone_key(),
        }
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The key never reaches logs.
        write!(f, "Identity({} certificate(s), key ***)", self.chain.len())
    }
}

/// What a client trusts, presents and goes through.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientOptions {
    /// Certificates trusted as roots besides the system's.
    pub extra_roots: Vec<CertificateDer<'static>>,
    /// Presented to a server that asks for a client certificate.
    pub identity: Option<Identity>,
    /// How the proxy is chosen.
    pub proxy: Proxy,
}

/// A client that could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The TLS settings were refused (a key that does not match its certificate, say).
    #[error("TLS settings refused: {0}")]
    Tls(#[from] rustls::Error),
    /// The proxy URL is not one this client can use.
    #[error("proxy {proxy}: {reason}")]
    Proxy {
        /// The proxy, without credentials.
        proxy: String,
        /// Why it cannot be used.
        reason: &'static str,
    },
}

type Connector = HttpsConnector<proxy::ProxyConnector>;

/// A pooled HTTP/1 client for `http://` and `https://` targets; cheap to clone (clones share
/// one connection pool). Redirects are never followed.
#[derive(Clone)]
pub struct Client {
    pool: Pooled<Connector, Full<Bytes>>,
    /// Set only when plain-HTTP requests may go through a proxy that wants credentials:
    /// those requests carry `Proxy-Authorization` (a tunnel carries it in its CONNECT).
    http_proxy_auth: Option<Arc<proxy::Routes>>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client").finish_non_exhaustive()
    }
}

impl Client {
    /// Builds a client trusting `system` plus the options' extra roots.
    pub fn new(options: &ClientOptions, system: &SystemRoots) -> Result<Self, BuildError> {
        let tls = tls::client_config(options, system)?;
        let routes = proxy::Routes::new(&options.proxy)?.map(Arc::new);
        let http_proxy_auth = routes
            .as_ref()
            .filter(|r| r.http_has_credentials())
            .cloned();
        let connector = HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(proxy::ProxyConnector::new(routes));
        Ok(Self {
            pool: Pooled::builder(TokioExecutor::new()).build(connector),
            http_proxy_auth,
        })
    }

    /// Sends a request; the answer's body is left to the caller.
    pub fn send(&self, mut request: Request<Full<Bytes>>) -> ResponseFuture {
        if let Some(routes) = &self.http_proxy_auth {
            routes.authorize(&mut request);
        }
        self.pool.request(request)
    }
}

#[cfg(test)]
mod tests;
