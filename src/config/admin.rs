//! The admin server's settings: top-level `admin_listen` and
//! `admin: { token, allow_unauthenticated, tls }`.
//!
//! An admin API that anyone on the network can reach without a token is refused: it can
//! replay, purge and read dead letters and reload the configuration. Imports nothing internal
//! outside `config`.

use std::net::SocketAddr;

use super::env::Obj;
use super::model::{Reader, Shape};
use super::server_tls::{self, TlsServerConfig};

/// `admin:` — `token` (optional): when set, every admin endpoint except `/healthz` and
/// `/readyz` requires `Authorization: Bearer <token>`; `allow_unauthenticated` (default
/// false): accept a non-loopback `admin_listen` without a token; `tls` (TLS termination, read
/// in `server_tls`; it changes nothing of the token rules).
pub(super) const ADMIN: Shape = Shape {
    keys: "token allow_unauthenticated tls",
    later: "",
};

/// Where the admin server listens when `admin_listen` is absent.
pub const DEFAULT_ADMIN_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 9090);

/// Settings of the admin server (health, readiness, metrics and the admin API).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminConfig {
    /// Address the admin server listens on.
    pub listen: SocketAddr,
    /// Bearer token the admin API requires; `None` leaves it open.
    pub token: Option<AdminToken>,
    /// Whether a non-loopback `listen` without a token was asked for explicitly.
    pub allow_unauthenticated: bool,
    /// TLS termination (`admin.tls`); `None` serves plain HTTP.
    pub tls: Option<TlsServerConfig>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            listen: DEFAULT_ADMIN_LISTEN,
            token: None,
            allow_unauthenticated: false,
            tls: None,
        }
    }
}

/// The admin bearer token; its `Debug` output never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminToken(String);

impl AdminToken {
    /// A token from its text.
    pub fn new(token: impl Into<String>) -> Self {
        Self(token.into())
    }

    /// The token's bytes, for comparing with what a request presents.
    pub fn expose(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(***)")
    }
}

/// Reads `admin_listen` and `admin:` from the top-level mapping.
pub(super) fn read(rd: &mut Reader<'_>, top: &Obj<'_>) -> Option<AdminConfig> {
    let listen = rd.or(top.get("admin_listen"), DEFAULT_ADMIN_LISTEN, |rd, n| {
        rd.parsed(
            n,
            "socket address (e.g. 127.0.0.1:9090)",
            str::parse::<SocketAddr>,
        )
    });
    let section = rd.section(top, "admin", &ADMIN);
    let token = section.as_ref().and_then(|o| {
        rd.or(o.get("token"), None, |rd, n| {
            rd.text(n).map(|t| Some(AdminToken(t)))
        })
    });
    let open = section
        .as_ref()
        .and_then(|o| rd.or(o.get("allow_unauthenticated"), false, Reader::boolean));
    let tls = match &section {
        Some(o) => server_tls::read(rd, o),
        None => Some(None),
    };
    let config = AdminConfig {
        listen: listen?,
        token: token?,
        allow_unauthenticated: open?,
        tls: tls?,
    };
    if !config.listen.ip().is_loopback() && config.token.is_none() && !config.allow_unauthenticated
    {
        let message = format!(
            "{} is reachable from other hosts but admin.token is not set, so anyone who can \
             connect could read, replay and purge dead letters and reload the configuration; \
             set admin.token (e.g. admin: {{ token: \"${{SWITCHYARD_ADMIN_TOKEN}}\" }}), listen \
             on 127.0.0.1, or set admin.allow_unauthenticated: true",
            config.listen
        );
        return rd.fail("admin_listen", message);
    }
    Some(config)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::load_text as load;

    #[test]
    fn defaults_to_localhost_9090_without_a_token() {
        let config = load("sinks: {}\n", &[]).unwrap();
        assert_eq!(config.admin, AdminConfig::default());
        assert_eq!(config.admin.listen.to_string(), "127.0.0.1:9090");
    }

    #[test]
    fn reads_the_address_and_an_interpolated_token() {
        let yaml = "admin_listen: 0.0.0.0:9999\nadmin: { token: \"${ADMIN_TOKEN}\" }\n";
        let config = load(yaml, &[("ADMIN_TOKEN", "s3cret")]).unwrap();
        assert_eq!(config.admin.listen.port(), 9999);
        assert_eq!(config.admin.token, Some(AdminToken::new("s3cret")));
        assert!(!format!("{:?}", config.admin).contains("s3cret"));
    }

    #[test]
    fn reports_a_bad_address_an_empty_token_and_unknown_keys() {
        let yaml = "admin_listen: nowhere\nadmin: { token: \"\", colour: blue }\n";
        let error = load(yaml, &[]).unwrap_err();
        assert!(
            error.contains("admin_listen: invalid socket address"),
            "{error}"
        );
        assert!(error.contains("admin.token: must not be empty"), "{error}");
        assert!(error.contains("admin.colour: unknown key"), "{error}");
    }
}
