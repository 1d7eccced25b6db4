//! Certificates made in the test: a CA, server and client certificates it issues, and
//! rustls clients that trust it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, SerialNumber};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// A test certificate authority.
pub(crate) struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    /// The CA certificate, PEM.
    pub(crate) pem: String,
}

impl std::fmt::Debug for TestCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TestCa")
    }
}

/// A certificate and its key, PEM.
#[derive(Debug, Clone)]
pub(crate) struct Issued {
    pub(crate) cert: String,
    pub(crate) key: String,
}

/// How long before or after now a certificate is valid.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Validity {
    /// From yesterday for a year.
    Current,
    /// Ended yesterday.
    Expired,
    /// Starts next year.
    Future,
}

impl TestCa {
    /// A new CA named `name`.
    pub(crate) fn new(name: &str) -> Self {
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let cert = params.self_signed(&key).expect("CA certificate");
        Self {
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A server certificate for `localhost` and 127.0.0.1 with serial `serial`.
    pub(crate) fn server(&self, serial: u8, validity: Validity) -> Issued {
        self.issue(
            vec!["localhost".into(), "127.0.0.1".into()],
            "switchyard test",
            serial,
            validity,
        )
    }

    /// A client certificate with common name `name` (and no DNS names).
    pub(crate) fn client(&self, name: &str) -> Issued {
        self.issue(Vec::new(), name, 1, Validity::Current)
    }

    fn issue(&self, names: Vec<String>, cn: &str, serial: u8, validity: Validity) -> Issued {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(names).expect("params");
        params.distinguished_name.push(DnType::CommonName, cn);
        params.serial_number = Some(SerialNumber::from(vec![0x12, 0x34, serial]));
        let (from, to) = match validity {
            Validity::Current => (-1, 365),
            Validity::Expired => (-30, -1),
            Validity::Future => (365, 730),
        };
        // Midnight UTC `days` days from today.
        let day = |days: i64| {
            use chrono::Datelike as _;
            let date = chrono::Utc::now().date_naive() + chrono::Duration::days(days);
            let (month, day) = (date.month() as u8, date.day() as u8);
            rcgen::date_time_ymd(date.year(), month, day)
        };
        params.not_before = day(from);
        params.not_after = day(to);
        let cert = params.signed_by(&key, &self.issuer).expect("certificate");
        Issued {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }

    /// A rustls client configuration trusting this CA, presenting `client` when given.
    pub(crate) fn client_config(&self, client: Option<&Issued>) -> rustls::ClientConfig {
        let mut roots = rustls::RootCertStore::empty();
        let ca = CertificateDer::from_pem_slice(self.pem.as_bytes()).expect("CA PEM");
        roots.add(ca).expect("CA added");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_root_certificates(roots);
        match client {
            Some(issued) => {
                let chain = vec![CertificateDer::from_pem_slice(issued.cert.as_bytes())
                    .expect("client certificate PEM")];
                let key = PrivateKeyDer::from_pem_slice(issued.key.as_bytes()).expect("key PEM");
                builder
                    .with_client_auth_cert(chain, key)
                    .expect("client certificate")
            }
            None => builder.with_no_client_auth(),
        }
    }
}

impl Issued {
    /// Writes `cert.pem` and `key.pem` into `dir`; returns their paths.
    pub(crate) fn write(&self, dir: &Path) -> (PathBuf, PathBuf) {
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&cert, &self.cert).expect("write certificate");
        std::fs::write(&key, &self.key).expect("write key");
        (cert, key)
    }
}
