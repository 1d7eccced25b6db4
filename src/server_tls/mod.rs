//! TLS termination for the ingress and admin servers (`ingress.tls`, `admin.tls`).
//!
//! - The certificate is served by a resolver holding the current pair; the files are watched
//!   (and looked at every minute besides) and a changed pair is loaded and swapped in for new
//!   handshakes. Connections already open keep the session they have, so a rotation drops
//!   nothing. A new pair that cannot serve (mid-write, mismatched, expired) is refused with an
//!   ERROR and the previous one stays.
//! - With `client_ca`, clients must present a certificate chaining to it; with
//!   `client_subjects`, its common name or a DNS name must also be listed. The subject of an
//!   accepted client is logged at DEBUG, a refused one at WARN.
//! - HTTP/1.1 only (ALPN `http/1.1`).
//!
//! The handshake itself runs in each connection's task, after its connection slot is taken
//! (see `server`).

mod watch;

use std::path::PathBuf;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::SystemTime;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::config::{
    files_digest, load_client_roots, load_key_pair, tls_provider, CertInfo, FilesDigest,
    TlsFileError, TlsServerConfig,
};

/// Why TLS could not be set up for a server.
#[derive(Debug, thiserror::Error)]
pub enum ServerTlsError {
    /// A certificate, key or CA file cannot be used.
    #[error(transparent)]
    File(#[from] TlsFileError),
    /// rustls refused the settings.
    #[error("{0}")]
    Rustls(#[from] rustls::Error),
    /// The client certificate verifier could not be built from `client_ca`.
    #[error("client_ca: {0}")]
    ClientCa(#[from] rustls::server::VerifierBuilderError),
}

/// TLS for one server: what accepts handshakes, and the watch that keeps its certificate
/// current (it stops when this is dropped).
pub(crate) struct ServerTls {
    acceptor: TlsAcceptor,
    /// `ingress` or `admin`, for logs.
    name: &'static str,
    _watch: watch::Watch,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl ServerTls {
    /// Loads the files of `config` and starts watching them.
    pub(crate) fn start(
        name: &'static str,
        config: &TlsServerConfig,
    ) -> Result<Self, ServerTlsError> {
        let resolver = Arc::new(CertResolver::load(name, config)?);
        let provider = tls_provider();
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?;
        let builder = match &config.client_ca {
            Some(ca) => {
                let roots = Arc::new(load_client_roots(ca)?);
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(roots, provider).build()?;
                builder.with_client_cert_verifier(Arc::new(SubjectCheck {
                    inner: verifier,
                    allowed: config.client_subjects.clone(),
                    name,
                }))
            }
            None => builder.with_no_client_auth(),
        };
        let mut server = builder.with_cert_resolver(resolver.clone());
        server.alpn_protocols = vec![b"http/1.1".to_vec()];
        let watch = watch::Watch::start(&resolver);
        Ok(Self {
            acceptor: TlsAcceptor::from(Arc::new(server)),
            name,
            _watch: watch,
        })
    }

    /// What one connection's task uses to run its handshake.
    pub(crate) fn handshaker(&self) -> Handshaker {
        Handshaker {
            acceptor: self.acceptor.clone(),
            name: self.name,
        }
    }
}

/// Runs the server side of one TLS handshake.
#[derive(Clone)]
pub(crate) struct Handshaker {
    acceptor: TlsAcceptor,
    name: &'static str,
}

impl std::fmt::Debug for Handshaker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handshaker")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// The first byte of a TLS handshake record.
const TLS_HANDSHAKE: u8 = 0x16;

/// What a client speaking plain HTTP to a TLS port is told before the connection closes.
const PLAIN_HTTP_BODY: &str = "This port serves HTTPS: use https://\n";

impl Handshaker {
    /// Runs the handshake on `stream`; `None` when it failed (logged at DEBUG). A client that
    /// speaks plain HTTP instead is answered 400 in plain text and closed.
    pub(crate) async fn accept(&self, mut stream: TcpStream) -> Option<TlsStream<TcpStream>> {
        let mut first = [0u8; 1];
        match stream.peek(&mut first).await {
            Ok(1..) if first[0] == TLS_HANDSHAKE => {}
            Ok(1..) if first[0].is_ascii_uppercase() => {
                refuse_plain_http(&mut stream).await;
                tracing::debug!(server = self.name, "Plain HTTP on a TLS port refused");
                return None;
            }
            Ok(_) | Err(_) => return None,
        }
        let tls = match self.acceptor.accept(stream).await {
            Ok(tls) => tls,
            Err(error) => {
                tracing::debug!(server = self.name, %error, "TLS handshake failed");
                return None;
            }
        };
        if let Some(client) = tls.get_ref().1.peer_certificates().and_then(|c| c.first()) {
            let subject = CertInfo::parse(client).map(|info| info.subject);
            let subject = subject.as_deref().unwrap_or("(unreadable)");
            tracing::debug!(
                server = self.name,
                client = subject,
                "TLS client authenticated"
            );
        }
        Some(tls)
    }
}

/// Reads what the client sent (so closing does not reset the connection under the answer)
/// and answers that this port speaks TLS.
async fn refuse_plain_http<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S) {
    let mut request = [0u8; 8192];
    let _read = stream.read(&mut request).await;
    let answer = format!(
        "HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain\r\nconnection: close\r\n\
         content-length: {}\r\n\r\n{PLAIN_HTTP_BODY}",
        PLAIN_HTTP_BODY.len()
    );
    let _written = stream.write_all(answer.as_bytes()).await;
    let _closed = stream.shutdown().await;
}

// === impl CertResolver ===

/// The current certificate of one server, swapped when its files change.
#[derive(Debug)]
struct CertResolver {
    name: &'static str,
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<Current>,
}

#[derive(Debug)]
struct Current {
    certified: Arc<CertifiedKey>,
    /// Of the files' bytes it was loaded from.
    digest: FilesDigest,
}

impl CertResolver {
    fn load(name: &'static str, config: &TlsServerConfig) -> Result<Self, TlsFileError> {
        let pair = load_key_pair(&config.cert, &config.key, SystemTime::now())?;
        tracing::info!(
            server = name,
            subject = %pair.leaf.subject,
            serial = %pair.leaf.serial_hex(),
            not_after = %httpdate::fmt_http_date(pair.leaf.not_after),
            "TLS certificate loaded"
        );
        Ok(Self {
            name,
            cert: config.cert.clone(),
            key: config.key.clone(),
            current: RwLock::new(Current {
                certified: pair.certified,
                digest: pair.digest,
            }),
        })
    }

    /// Loads the files again if they changed; a pair that cannot serve is refused and the
    /// current one stays.
    fn reload(&self) {
        if let (Ok(cert), Ok(key)) = (std::fs::read(&self.cert), std::fs::read(&self.key)) {
            let current = self.current.read().unwrap_or_else(PoisonError::into_inner);
            if current.digest == files_digest(&cert, &key) {
                return;
            }
        }
        match load_key_pair(&self.cert, &self.key, SystemTime::now()) {
            Ok(pair) => {
                tracing::info!(
                    server = self.name,
                    subject = %pair.leaf.subject,
                    serial = %pair.leaf.serial_hex(),
                    not_after = %httpdate::fmt_http_date(pair.leaf.not_after),
                    "TLS certificate reloaded; new connections get it"
                );
                let mut current = self.current.write().unwrap_or_else(PoisonError::into_inner);
                *current = Current {
                    certified: pair.certified,
                    digest: pair.digest,
                };
            }
            Err(error) => tracing::error!(
                server = self.name,
                %error,
                "New TLS certificate files refused; the previous certificate stays in use"
            ),
        }
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let current = self.current.read().unwrap_or_else(PoisonError::into_inner);
        Some(current.certified.clone())
    }
}

// === impl SubjectCheck ===

/// Client certificate verification by `client_ca`, then by `client_subjects` when listed.
#[derive(Debug)]
struct SubjectCheck {
    inner: Arc<dyn ClientCertVerifier>,
    /// Accepted common names and DNS names; empty accepts any.
    allowed: Vec<String>,
    name: &'static str,
}

impl SubjectCheck {
    fn allows(&self, info: &CertInfo) -> bool {
        let names = info.common_names.iter().chain(&info.dns_names);
        self.allowed.is_empty()
            || names
                .into_iter()
                .any(|n| self.allowed.iter().any(|a| a.eq_ignore_ascii_case(n)))
    }
}

impl ClientCertVerifier for SubjectCheck {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)
            .inspect_err(|error| {
                tracing::warn!(server = self.name, %error, "Client certificate refused");
            })?;
        let info = CertInfo::parse(end_entity)
            .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadEncoding))?;
        if self.allows(&info) {
            return Ok(verified);
        }
        tracing::warn!(
            server = self.name,
            client = %info.subject,
            "Client certificate refused: none of its names is in tls.client_subjects"
        );
        Err(rustls::Error::InvalidCertificate(
            CertificateError::ApplicationVerificationFailure,
        ))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
