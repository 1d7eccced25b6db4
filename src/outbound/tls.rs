//! The rustls side of the client: the system's CA roots, loaded once per caller, plus the
//! options' extra roots and client certificate. The ring provider, TLS 1.2 and 1.3.

use std::sync::Arc;

use rustls::{ClientConfig, RootCertStore};

use super::{BuildError, ClientOptions};

/// The system's CA roots (the platform's store, or `SSL_CERT_FILE` / `SSL_CERT_DIR`).
///
/// Loading reads and parses a few hundred KB of certificates, so a caller building several
/// clients loads them once and passes them to each.
#[derive(Debug, Clone)]
pub struct SystemRoots(Arc<RootCertStore>);

impl SystemRoots {
    /// Loads the system's roots. Unreadable ones are skipped; with none at all, `https://`
    /// targets are trusted only through extra roots (logged at WARN).
    pub fn load() -> Self {
        let found = rustls_native_certs::load_native_certs();
        let mut roots = RootCertStore::empty();
        let (_added, ignored) = roots.add_parsable_certificates(found.certs);
        if roots.is_empty() {
            let errors: Vec<String> = found.errors.iter().map(ToString::to_string).collect();
            tracing::warn!(
                errors = %errors.join("; "),
                "No system CA roots could be loaded; https targets are trusted only through a configured CA"
            );
        } else if ignored > 0 {
            tracing::debug!(
                ignored,
                "System CA roots that could not be parsed were skipped"
            );
        }
        Self(Arc::new(roots))
    }

    /// No roots at all: only extra roots are trusted.
    pub fn none() -> Self {
        Self(Arc::new(RootCertStore::empty()))
    }
}

/// The TLS configuration of one client. Certificates are always verified.
pub(super) fn client_config(
    options: &ClientOptions,
    system: &SystemRoots,
) -> Result<ClientConfig, BuildError> {
    let roots = if options.extra_roots.is_empty() {
        system.0.clone()
    } else {
        let mut roots = (*system.0).clone();
        for cert in &options.extra_roots {
            roots.add(cert.clone())?;
        }
        Arc::new(roots)
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    Ok(match &options.identity {
        Some(identity) => {
            builder.with_client_auth_cert(identity.chain.clone(), identity.key.clone_key())?
        }
        None => builder.with_no_client_auth(),
    })
}
