//! HTTPS for tests: a throwaway CA (rcgen) and a real HTTPS sink server (tokio-rustls and
//! hyper) that can require a client certificate.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// A CA that signs server and client certificates.
pub(crate) struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A certificate and its key, as PEM.
pub(crate) struct Leaf {
    pub(crate) cert_pem: String,
    pub(crate) key_pem: String,
}

impl TestCa {
    /// A new CA called `name`.
    pub(crate) fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().expect("key");
        let issuer = CertifiedIssuer::self_signed(params, key).expect("CA");
        Self { issuer }
    }

    /// The CA's certificate as PEM.
    pub(crate) fn cert_pem(&self) -> String {
        self.issuer.pem()
    }

    /// Writes the CA's certificate to `path` and returns the path.
    pub(crate) fn write_cert(&self, path: &Path) -> PathBuf {
        std::fs::write(path, self.cert_pem()).expect("write CA");
        path.to_path_buf()
    }

    /// A server certificate for `names` (DNS names or IP addresses).
    pub(crate) fn server(&self, names: &[&str]) -> Leaf {
        self.leaf(names, ExtendedKeyUsagePurpose::ServerAuth)
    }

    /// A client certificate.
    pub(crate) fn client(&self, name: &str) -> Leaf {
        self.leaf(&[name], ExtendedKeyUsagePurpose::ClientAuth)
    }

    fn leaf(&self, names: &[&str], usage: ExtendedKeyUsagePurpose) -> Leaf {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = CertificateParams::new(names).expect("params");
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.issuer).expect("sign");
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }
}

impl Leaf {
    /// Writes `{name}.pem` and `{name}.key` into `dir`; returns their paths.
    pub(crate) fn write(&self, dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let cert = dir.join(format!("{name}.pem"));
        let key = dir.join(format!("{name}.key"));
        std::fs::write(&cert, &self.cert_pem).expect("write cert");
        std::fs::write(&key, &self.key_pem).expect("write key");
        (cert, key)
    }
}

/// One request an HTTPS sink received.
#[derive(Debug, Clone)]
pub(crate) struct TlsHit {
    /// The request target as received (origin form).
    pub(crate) target: String,
    /// Whether the client presented a certificate.
    pub(crate) client_cert: bool,
}

#[derive(Debug, Default)]
struct Log {
    hits: Mutex<Vec<TlsHit>>,
    refused_handshakes: AtomicUsize,
}

/// A real HTTPS server answering 200 to every request, recording what it got.
#[derive(Debug)]
pub(crate) struct TlsSink {
    pub(crate) addr: SocketAddr,
    log: Arc<Log>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TlsSink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TlsSink {
    /// Serves with `leaf` on 127.0.0.1:0; with `client_ca`, a client must present a
    /// certificate issued by it.
    pub(crate) async fn start(leaf: &Leaf, client_ca: Option<&TestCa>) -> Self {
        let acceptor = TlsAcceptor::from(Arc::new(server_config(leaf, client_ca)));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let log = Arc::new(Log::default());
        let task = tokio::spawn(serve(listener, acceptor, log.clone()));
        Self { addr, log, task }
    }

    /// `https://{host}:{port}/hook`.
    pub(crate) fn url(&self, host: &str) -> String {
        format!("https://{host}:{}/hook", self.addr.port())
    }

    /// The requests received so far.
    pub(crate) fn hits(&self) -> Vec<TlsHit> {
        self.log.hits.lock().expect("hits").clone()
    }

    /// Connections whose TLS handshake failed.
    pub(crate) fn refused_handshakes(&self) -> usize {
        self.log.refused_handshakes.load(Ordering::SeqCst)
    }
}

fn server_config(leaf: &Leaf, client_ca: Option<&TestCa>) -> ServerConfig {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("versions");
    let builder = match client_ca {
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(ca.cert_pem().as_bytes()) {
                roots.add(cert.expect("CA cert")).expect("add CA");
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .expect("verifier");
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let chain = CertificateDer::pem_slice_iter(leaf.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .expect("chain");
    let key = PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).expect("key");
    builder.with_single_cert(chain, key).expect("server config")
}

async fn serve(listener: TcpListener, acceptor: TlsAcceptor, log: Arc<Log>) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            return;
        };
        let (acceptor, log) = (acceptor.clone(), log.clone());
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(tcp).await else {
                log.refused_handshakes.fetch_add(1, Ordering::SeqCst);
                return;
            };
            let client_cert = tls.get_ref().1.peer_certificates().is_some();
            let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                let log = log.clone();
                async move {
                    let target = request.uri().to_string();
                    let _body = request.into_body().collect().await;
                    let hit = TlsHit {
                        target,
                        client_cert,
                    };
                    log.hits.lock().expect("hits").push(hit);
                    Ok::<_, hyper::Error>(Response::new(Full::new(Bytes::new())))
                }
            });
            // A client that hangs up ends only its own connection.
            let _served = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tls), service)
                .await;
        });
    }
}
