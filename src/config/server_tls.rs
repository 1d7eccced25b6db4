//! TLS termination settings of the ingress and admin servers (`ingress.tls`, `admin.tls`), and
//! the loading of their PEM files, shared by configuration checks and the running servers.
//!
//! A configuration naming files that cannot serve (not PEM, no certificate, a key that does
//! not match, a certificate outside its validity period) is invalid, with the file and the
//! problem named. Imports nothing internal outside `config`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use rustls::RootCertStore;

use super::env::{Node, Obj};
use super::model::{Reader, Shape};
use super::x509::CertInfo;

/// `tls:` (of `ingress` or `admin`) — `cert` (PEM certificate chain, leaf first) and `key`
/// (its PEM private key), both required and re-read when they change; `client_ca` (PEM
/// bundle: clients must present a certificate issued by one of them) and `client_subjects`
/// (with `client_ca`: the client certificate's common name or one of its DNS names must be
/// one of these).
pub(super) const TLS: Shape = Shape {
    keys: "cert key client_ca client_subjects",
    later: "",
};

/// TLS termination for one server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsServerConfig {
    /// The PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// The PEM private key of the leaf certificate.
    pub key: PathBuf,
    /// PEM bundle of the CAs client certificates must chain to; `None` asks for none.
    pub client_ca: Option<PathBuf>,
    /// Client certificate names (common name or DNS name) accepted; empty accepts any
    /// certificate `client_ca` vouches for.
    pub client_subjects: Vec<String>,
}

/// Why a TLS file cannot be used; names the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsFileError {
    /// The file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not PEM, or holds nothing of the kind expected.
    #[error("{}: {problem}", path.display())]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// A certificate that cannot be used.
    #[error("{}: {problem}", path.display())]
    Certificate {
        /// The file.
        path: PathBuf,
        /// What is wrong (expired, not yet valid, malformed).
        problem: String,
    },
    /// The private key cannot be used.
    #[error("{}: {problem}", path.display())]
    Key {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// The private key is not the certificate's.
    #[error("{}: the private key does not match the certificate in {}", key.display(), cert.display())]
    KeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
}

impl TlsFileError {
    /// The file at fault (for a mismatch, the key).
    pub fn file(&self) -> &Path {
        match self {
            Self::Read { path, .. }
            | Self::Pem { path, .. }
            | Self::Certificate { path, .. }
            | Self::Key { path, .. } => path,
            Self::KeyMismatch { key, .. } => key,
        }
    }
}

/// A certificate chain and its key, checked and ready to serve.
#[derive(Debug, Clone)]
pub struct KeyPair {
    /// What rustls serves.
    pub certified: Arc<CertifiedKey>,
    /// What was read from the leaf certificate.
    pub leaf: CertInfo,
    /// SHA-256 of the files' bytes, to tell whether they changed since (the key's bytes are
    /// not kept, so no `Debug` output can show them).
    pub digest: FilesDigest,
}

/// SHA-256 over a certificate file and a key file.
pub type FilesDigest = [u8; 32];

/// The digest of a certificate file's and a key file's bytes.
pub fn files_digest(cert: &[u8], key: &[u8]) -> FilesDigest {
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    context.update(&(cert.len() as u64).to_be_bytes());
    context.update(cert);
    context.update(key);
    let mut digest = [0u8; 32];
    digest.copy_from_slice(context.finish().as_ref());
    digest
}

/// The crypto provider of both servers: ring.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read_file(path: &Path) -> Result<Vec<u8>, TlsFileError> {
    std::fs::read(path).map_err(|source| TlsFileError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Reads the certificates of a PEM file; an error unless it holds at least one.
fn read_certificates(
    path: &Path,
    bytes: &[u8],
) -> Result<Vec<CertificateDer<'static>>, TlsFileError> {
    let pem_error = |problem: String| TlsFileError::Pem {
        path: path.to_path_buf(),
        problem,
    };
    if !contains(bytes, b"-----BEGIN ") {
        return Err(pem_error(
            "not PEM (no \"-----BEGIN CERTIFICATE-----\" line)".to_owned(),
        ));
    }
    let certificates = CertificateDer::pem_slice_iter(bytes)
        .collect::<Result<Vec<_>, pem::Error>>()
        .map_err(|e| pem_error(format!("malformed PEM: {e}")))?;
    if certificates.is_empty() {
        return Err(pem_error(
            "holds no certificate (no \"-----BEGIN CERTIFICATE-----\" section)".to_owned(),
        ));
    }
    Ok(certificates)
}

/// Reads, parses and checks a certificate chain and its key at `now`.
pub fn load_key_pair(cert: &Path, key: &Path, now: SystemTime) -> Result<KeyPair, TlsFileError> {
    let cert_bytes = read_file(cert)?;
    let key_bytes = read_file(key)?;
    let chain = read_certificates(cert, &cert_bytes)?;
    let mut leaf = None;
    for (i, certificate) in chain.iter().enumerate() {
        let which = match i {
            0 => String::new(),
            n => format!("certificate {} of the chain: ", n + 1),
        };
        let problem = |p: String| TlsFileError::Certificate {
            path: cert.to_path_buf(),
            problem: format!("{which}{p}"),
        };
        let info = CertInfo::parse(certificate).map_err(|e| problem(e.to_string()))?;
        if let Some(why) = info.invalid_at(now) {
            return Err(problem(why));
        }
        leaf.get_or_insert(info);
    }
    let leaf = leaf.ok_or_else(|| TlsFileError::Pem {
        path: cert.to_path_buf(),
        problem: "holds no certificate".to_owned(),
    })?;
    let key_error = |problem: String| TlsFileError::Key {
        path: key.to_path_buf(),
        problem,
    };
    if !contains(&key_bytes, b"-----BEGIN ") {
        return Err(key_error(
            "not PEM (no \"-----BEGIN PRIVATE KEY-----\" line)".to_owned(),
        ));
    }
    let private = PrivateKeyDer::from_pem_slice(&key_bytes).map_err(|e| match e {
        pem::Error::NoItemsFound => key_error(
            "holds no private key (no PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY section)"
                .to_owned(),
        ),
        e => key_error(format!("malformed PEM: {e}")),
    })?;
    let signing = provider()
        .key_provider
        .load_private_key(private)
        .map_err(|e| key_error(format!("unusable private key: {e}")))?;
    let certified = CertifiedKey::new(chain, signing);
    match certified.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(_) => {
            return Err(TlsFileError::KeyMismatch {
                cert: cert.to_path_buf(),
                key: key.to_path_buf(),
            })
        }
    }
    Ok(KeyPair {
        certified: Arc::new(certified),
        leaf,
        digest: files_digest(&cert_bytes, &key_bytes),
    })
}

/// Reads a PEM bundle of CA certificates for client authentication.
pub fn load_client_roots(path: &Path) -> Result<RootCertStore, TlsFileError> {
    let bytes = read_file(path)?;
    let mut roots = RootCertStore::empty();
    for certificate in read_certificates(path, &bytes)? {
        roots
            .add(certificate)
            .map_err(|e| TlsFileError::Certificate {
                path: path.to_path_buf(),
                problem: format!("not a usable CA certificate: {e}"),
            })?;
    }
    Ok(roots)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    memchr::memmem::find(haystack, needle).is_some()
}

/// Reads `tls:` of `parent` (the `ingress` or `admin` mapping) and checks its files.
pub(super) fn read(rd: &mut Reader<'_>, parent: &Obj<'_>) -> Option<Option<TlsServerConfig>> {
    let Some(node) = parent.get("tls") else {
        return Some(None);
    };
    let o = rd.object(&node, &TLS)?;
    let path = |rd: &mut Reader<'_>, n: &Node<'_>| rd.text(n).map(PathBuf::from);
    let cert = rd.required(&o, "cert", path);
    let key = rd.required(&o, "key", path);
    let client_ca = rd.or(o.get("client_ca"), None, |rd, n| path(rd, n).map(Some));
    let client_subjects = rd.or(o.get("client_subjects"), Vec::new(), |rd, n| {
        rd.some(n, "must list at least one name", Reader::text)
    });
    let config = TlsServerConfig {
        cert: cert?,
        key: key?,
        client_ca: client_ca?,
        client_subjects: client_subjects?,
    };
    if let Err(error) = load_key_pair(&config.cert, &config.key, SystemTime::now()) {
        let key_at_fault = match &error {
            TlsFileError::Key { .. } | TlsFileError::KeyMismatch { .. } => true,
            TlsFileError::Read { path, .. } => *path != config.cert,
            TlsFileError::Pem { .. } | TlsFileError::Certificate { .. } => false,
        };
        let field = if key_at_fault { "key" } else { "cert" };
        return rd.fail(&o.key_path(field), error.to_string());
    }
    match &config.client_ca {
        Some(ca) => {
            if let Err(error) = load_client_roots(ca) {
                return rd.fail(&o.key_path("client_ca"), error.to_string());
            }
        }
        None if !config.client_subjects.is_empty() => {
            return rd.fail(
                &o.key_path("client_subjects"),
                "needs client_ca: client names are checked on certificates it issued",
            );
        }
        None => {}
    }
    Some(Some(config))
}
