//! How an `http` sink reaches its target: `http.tls` (CA certificates trusted besides the
//! system's, and the client certificate for mTLS) and `http.proxy`, each error with its YAML
//! path. The PEM files are read and checked here, so a missing file, a file that is not PEM
//! or a key that does not match its certificate stops `check`, start and reload alike; a
//! reload reads them again.
//!
//! Nothing turns certificate verification off, and a key that looks like such a switch is
//! refused with the reason. Imports nothing internal outside `config`.

use std::fmt;
use std::path::{Path, PathBuf};

use axum::http::Uri;
use rustls::crypto::ring::default_provider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use rustls::{InconsistentKeys, RootCertStore};

use super::env::{Node, Obj};
use super::model::{self, Reader};

/// Why no key turns verification off; given for any key that looks like one.
const NO_SKIP_VERIFY: &str = "certificate verification cannot be turned off: switchyard has no \
     such switch, because an unverified target lets anyone on the network path read and forge \
     deliveries. To trust a private CA or a self-signed certificate, name its PEM file in \
     `http.tls.ca`";

/// `http.tls`: what an `http` sink trusts besides the system's roots, and what it presents.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HttpTlsConfig {
    /// `ca`: certificates trusted besides the system's roots.
    pub ca: Option<Box<PemCertificates>>,
    /// `client_cert` and `client_key`: presented when the target asks for a certificate.
    pub client: Option<Box<ClientCertificate>>,
}

impl HttpTlsConfig {
    /// Whether nothing is set (the system's roots, no client certificate).
    pub fn is_default(&self) -> bool {
        self.ca.is_none() && self.client.is_none()
    }
}

/// The certificates of one PEM file.
#[derive(Clone, PartialEq, Eq)]
pub struct PemCertificates {
    /// The file, as configured.
    pub path: PathBuf,
    /// Its certificates, in file order (at least one).
    pub certs: Vec<CertificateDer<'static>>,
}

impl fmt::Debug for PemCertificates {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({} certificate(s))",
            self.path.display(),
            self.certs.len()
        )
    }
}

/// A client certificate chain and its private key, checked to match. `Debug` never shows
/// the key.
#[derive(PartialEq, Eq)]
pub struct ClientCertificate {
    /// `client_cert`: the certificate first, then any intermediates.
    pub cert: PemCertificates,
    /// `client_key`: the file the key came from.
    pub key_path: PathBuf,
    key: PrivateKeyDer<'static>,
}

impl ClientCertificate {
    /// The private key.
    pub fn key(&self) -> &PrivateKeyDer<'static> {
        &self.key
    }
}

impl Clone for ClientCertificate {
    fn clone(&self) -> Self {
        Self {
            cert: self.cert.clone(),
            key_path: self.key_path.clone(),
            key: self.key.clone_key(),
        }
    }
}

impl fmt::Debug for ClientCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}, key {} (***)", self.cert, self.key_path.display())
    }
}

/// `http.proxy`: how an `http` sink reaches its target.
#[derive(Clone, Default, PartialEq, Eq)]
pub enum ProxySetting {
    /// Absent: `HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY` and `NO_PROXY` decide.
    #[default]
    Environment,
    /// `none`: always connect directly.
    Direct,
    /// `http://[user:password@]host:port`: always through this proxy.
    Url(Box<Uri>),
}

impl ProxySetting {
    /// For `check` output: `none`, or the proxy without its credentials.
    pub fn describe(&self) -> String {
        match self {
            Self::Environment => "environment".to_owned(),
            Self::Direct => "none".to_owned(),
            Self::Url(uri) => {
                let port = uri.port_u16().map_or(String::new(), |p| format!(":{p}"));
                format!("http://{}{port}", uri.host().unwrap_or(""))
            }
        }
    }
}

impl fmt::Debug for ProxySetting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A proxy URL may carry credentials.
        f.write_str(&self.describe())
    }
}

/// A reason to refuse a key that looks like a switch to skip verification, if it does.
pub(super) fn skip_verify_hint(key: &str) -> Option<&'static str> {
    const LOOKALIKES: &[&str] = &[
        "insecure",
        "verif",
        "acceptinvalid",
        "allowinvalid",
        "danger",
        "trustall",
        "ignorecert",
        "nocheck",
    ];
    let squashed: String = key
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .collect::<String>()
        .to_ascii_lowercase();
    LOOKALIKES
        .iter()
        .any(|w| squashed.contains(w))
        .then_some(NO_SKIP_VERIFY)
}

/// Reads `http.tls`.
pub(super) fn read_tls(rd: &mut Reader<'_>, node: &Node<'_>) -> Option<HttpTlsConfig> {
    let o = rd.object_hinted(node, &model::HTTP_TLS, skip_verify_hint)?;
    let ca = rd.or(o.get("ca"), None, |rd, n| {
        let ca = certificates(rd, n)?;
        trust_anchors(rd, n, &ca)?;
        Some(Some(Box::new(ca)))
    });
    let client = client_certificate(rd, &o);
    Some(HttpTlsConfig {
        ca: ca?,
        client: client?,
    })
}

/// Every certificate in the PEM file named at `node` must serve as a trust anchor.
fn trust_anchors(rd: &mut Reader<'_>, node: &Node<'_>, ca: &PemCertificates) -> Option<()> {
    let mut store = RootCertStore::empty();
    for (i, cert) in ca.certs.iter().enumerate() {
        if let Err(e) = store.add(cert.clone()) {
            let path = ca.path.display();
            return rd.fail(
                &node.path,
                format!(
                    "{path}: certificate {} is not a usable CA certificate: {e}",
                    i + 1
                ),
            );
        }
    }
    Some(())
}

/// Reads `client_cert` and `client_key`: both or neither, the key matching the certificate.
fn client_certificate(rd: &mut Reader<'_>, o: &Obj<'_>) -> Option<Option<Box<ClientCertificate>>> {
    let (cert_node, key_node) = match (o.get("client_cert"), o.get("client_key")) {
        (None, None) => return Some(None),
        (Some(_), None) => return rd.fail(&o.key_path("client_key"), "required with client_cert"),
        (None, Some(_)) => return rd.fail(&o.key_path("client_cert"), "required with client_key"),
        (Some(c), Some(k)) => (c, k),
    };
    let cert = certificates(rd, &cert_node);
    let key = private_key(rd, &key_node);
    let (cert, (key_path, key)) = (cert?, key?);
    let provider = default_provider();
    match CertifiedKey::from_der(cert.certs.clone(), key.clone_key(), &provider) {
        Ok(_) => Some(Some(Box::new(ClientCertificate {
            cert,
            key_path,
            key,
        }))),
        Err(rustls::Error::InconsistentKeys(InconsistentKeys::KeyMismatch)) => rd.fail(
            &key_node.path,
            format!(
                "{} does not match the certificate in {}",
                key_path.display(),
                cert.path.display()
            ),
        ),
        Err(e) => rd.fail(
            &key_node.path,
            format!("{} cannot be used: {e}", key_path.display()),
        ),
    }
}

/// Reads a PEM file of certificates named at `node`: at least one `CERTIFICATE` block.
fn certificates(rd: &mut Reader<'_>, node: &Node<'_>) -> Option<PemCertificates> {
    let (path, bytes) = read_file(rd, node)?;
    let certs: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(&bytes).collect();
    match certs {
        Ok(certs) if !certs.is_empty() => Some(PemCertificates { path, certs }),
        Ok(_) => rd.fail(
            &node.path,
            format!(
                "{} holds no certificate (expected PEM: -----BEGIN CERTIFICATE-----)",
                path.display()
            ),
        ),
        Err(e) => rd.fail(
            &node.path,
            format!("{} is not a valid PEM file: {e}", path.display()),
        ),
    }
}

/// Reads the PEM private key named at `node` (PKCS#8, PKCS#1 or SEC1; the first one).
fn private_key(rd: &mut Reader<'_>, node: &Node<'_>) -> Option<(PathBuf, PrivateKeyDer<'static>)> {
    let (path, bytes) = read_file(rd, node)?;
    match PrivateKeyDer::from_pem_slice(&bytes) {
        Ok(key) => Some((path, key)),
        // The parser's reasons never quote the file, but keep to our own words anyway.
        Err(_) => rd.fail(
            &node.path,
            format!(
                "{} holds no private key (expected PEM: -----BEGIN PRIVATE KEY-----, RSA PRIVATE \
                 KEY or EC PRIVATE KEY; an encrypted key must be decrypted first)",
                path.display()
            ),
        ),
    }
}

/// Reads the file named at `node` (relative paths from the working directory).
fn read_file(rd: &mut Reader<'_>, node: &Node<'_>) -> Option<(PathBuf, Vec<u8>)> {
    let path = PathBuf::from(rd.text(node)?);
    match std::fs::read(&path) {
        Ok(bytes) => Some((path, bytes)),
        Err(e) => rd.fail(
            &node.path,
            format!("cannot read {}: {e}", Path::display(&path)),
        ),
    }
}

/// Reads `http.proxy`: `none`, or an `http://` proxy URL. Errors never repeat the value: it
/// may hold credentials.
pub(super) fn read_proxy(rd: &mut Reader<'_>, node: &Node<'_>) -> Option<ProxySetting> {
    let text = rd.text(node)?;
    if text == "none" {
        return Some(ProxySetting::Direct);
    }
    let Ok(uri) = text.parse::<Uri>() else {
        return rd.fail(
            &node.path,
            "expected `none` or a proxy URL such as http://proxy.internal:3128",
        );
    };
    let refusal = match uri.scheme_str() {
        Some("http") if uri.host().is_some_and(|h| !h.is_empty()) => None,
        Some("http") | None => {
            Some("expected `none` or a proxy URL such as http://proxy.internal:3128")
        }
        Some("https") => Some(
            "https:// proxies are not supported; use the proxy's http:// address (https:// \
             targets are still encrypted end to end, through a CONNECT tunnel)",
        ),
        Some(s) if s.starts_with("socks") => {
            Some("SOCKS proxies are not supported; use an http:// proxy")
        }
        Some(_) => Some("expected `none` or an http:// proxy URL"),
    };
    if let Some(reason) = refusal {
        return rd.fail(&node.path, reason);
    }
    let bare = uri.path_and_query().is_none_or(|p| p.as_str() == "/");
    if !bare {
        return rd.fail(&node.path, "a proxy URL has no path or query");
    }
    Some(ProxySetting::Url(Box::new(uri)))
}
