//! Tests of the outbound client: which proxy serves which target, credentials that never
//! show, and the TLS settings it accepts.

use std::collections::BTreeMap;

use axum::http::{header, Request, Uri};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::proxy::Routes;
use super::test_pki::TestCa;
use super::{tls, BuildError, Client, ClientOptions, Identity, Proxy, SystemRoots};

fn env(pairs: &[(&str, &str)]) -> Option<Routes> {
    let vars: BTreeMap<String, String> = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    Routes::from_vars(|name| vars.get(name).cloned())
}

/// The proxy (without credentials) that serves `target`, if any.
fn via(routes: &Routes, target: &str) -> Option<String> {
    let uri: Uri = target.parse().unwrap();
    routes.intercept(&uri).map(|i| i.uri().to_string())
}

#[test]
fn no_proxy_variable_means_no_routes() {
    assert!(env(&[]).is_none());
    assert!(env(&[("NO_PROXY", "*")]).is_none());
    assert!(env(&[("HTTPS_PROXY", " ")]).is_none());
}

#[test]
fn https_proxy_serves_https_targets_and_http_proxy_http_targets() {
    let routes = env(&[
        ("HTTPS_PROXY", "http://secure.proxy:3128"),
        ("http_proxy", "http://plain.proxy:8080"),
    ])
    .unwrap();
    let secure = Some("http://secure.proxy:3128/".to_owned());
    let plain = Some("http://plain.proxy:8080/".to_owned());
    assert_eq!(via(&routes, "https://hooks.example/in"), secure);
    assert_eq!(via(&routes, "http://hooks.example/in"), plain);
}

#[test]
fn all_proxy_serves_what_the_others_leave() {
    let routes = env(&[
        ("all_proxy", "http://all.proxy:3128"),
        ("HTTP_PROXY", "http://plain.proxy:8080"),
    ])
    .unwrap();
    let all = Some("http://all.proxy:3128/".to_owned());
    assert_eq!(via(&routes, "https://hooks.example/in"), all);
    assert_eq!(
        via(&routes, "http://hooks.example/in"),
        Some("http://plain.proxy:8080/".to_owned())
    );
}

#[test]
fn no_proxy_names_hosts_domains_and_networks_that_bypass() {
    let routes = env(&[
        ("HTTPS_PROXY", "http://proxy:3128"),
        ("no_proxy", "internal.example, .corp.example, 10.0.0.0/8"),
    ])
    .unwrap();
    assert_eq!(via(&routes, "https://internal.example/"), None);
    assert_eq!(via(&routes, "https://api.internal.example/"), None);
    assert_eq!(via(&routes, "https://svc.corp.example/"), None);
    assert_eq!(via(&routes, "https://10.1.2.3/"), None);
    assert!(via(&routes, "https://external.example/").is_some());
    assert!(via(&routes, "https://notinternal.example/").is_some());
}

#[test]
fn loopback_targets_take_the_proxy_unless_no_proxy_names_them() {
    let routes = env(&[("ALL_PROXY", "http://proxy:3128")]).unwrap();
    assert!(via(&routes, "http://localhost:8080/").is_some());
    assert!(via(&routes, "http://127.0.0.1:9001/").is_some());
    let routes = env(&[
        ("ALL_PROXY", "http://proxy:3128"),
        ("NO_PROXY", "localhost,127.0.0.1,::1"),
    ])
    .unwrap();
    assert_eq!(via(&routes, "http://localhost:8080/"), None);
    assert_eq!(via(&routes, "http://127.0.0.1:9001/"), None);
    assert_eq!(via(&routes, "http://[::1]:9001/"), None);
}

#[test]
fn a_cgi_environment_ignores_proxy_variables() {
    // Under CGI, HTTP_PROXY may come from a request's `Proxy:` header.
    let routes = env(&[
        ("REQUEST_METHOD", "GET"),
        ("HTTP_PROXY", "http://attacker:3128"),
    ]);
    assert!(routes.is_none());
}

#[test]
fn an_explicit_proxy_serves_every_target() {
    let uri: Uri = "http://user:s3cret@proxy.internal:3128".parse().unwrap();
    let routes = Routes::new(&Proxy::Url(uri)).unwrap().unwrap();
    let proxy = Some("http://proxy.internal:3128/".to_owned());
    assert_eq!(via(&routes, "https://hooks.example/"), proxy);
    assert_eq!(via(&routes, "http://127.0.0.1:9001/"), proxy);
    assert!(!format!("{routes:?}").contains("s3cret"));
}

#[test]
fn direct_means_no_routes_whatever_the_environment() {
    assert!(Routes::new(&Proxy::Direct).unwrap().is_none());
}

#[test]
fn an_explicit_proxy_that_is_not_http_is_refused_without_its_credentials() {
    let uri: Uri = "https://user:s3cret@proxy.internal:3128".parse().unwrap();
    let error = Routes::new(&Proxy::Url(uri)).unwrap_err();
    assert!(matches!(error, BuildError::Proxy { .. }));
    let text = error.to_string();
    assert_eq!(
        text,
        "proxy https://proxy.internal:3128: only http:// proxies are supported"
    );
}

#[test]
fn proxy_debug_never_shows_credentials() {
    let uri: Uri = "http://user:s3cret@proxy.internal:3128".parse().unwrap();
    let shown = format!("{:?}", Proxy::Url(uri));
    assert_eq!(shown, "Url(http://proxy.internal:3128)");
}

#[test]
fn plain_http_requests_carry_proxy_credentials_and_https_requests_do_not() {
    let uri: Uri = "http://user:s3cret@proxy.internal:3128".parse().unwrap();
    let routes = Routes::new(&Proxy::Url(uri)).unwrap().unwrap();
    assert!(routes.http_has_credentials());
    let mut plain = Request::post("http://hooks.example/in").body(()).unwrap();
    routes.authorize(&mut plain);
    // base64("user:s3cret")
    assert_eq!(
        plain.headers()[header::PROXY_AUTHORIZATION],
        "Basic dXNlcjpzM2NyZXQ="
    );
    // A tunnel carries them in its CONNECT, never to the target.
    let mut secure = Request::post("https://hooks.example/in").body(()).unwrap();
    routes.authorize(&mut secure);
    assert!(!secure.headers().contains_key(header::PROXY_AUTHORIZATION));
    let anonymous = env(&[("HTTP_PROXY", "http://proxy:3128")]).unwrap();
    assert!(!anonymous.http_has_credentials());
    let bypassing = env(&[
        ("HTTP_PROXY", "http://user:s3cret@proxy:3128"),
        ("NO_PROXY", "target"),
    ])
    .unwrap();
    assert!(bypassing.http_has_credentials(), "whatever NO_PROXY names");
}

fn identity(cert_pem: &str, key_pem: &str) -> Identity {
    let chain = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    Identity::new(
        chain,
        PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap(),
    )
}

#[test]
fn extra_roots_and_a_matching_identity_build_a_client() {
    let ca = TestCa::new("Test CA");
    let client = ca.client("switchyard");
    let options = ClientOptions {
        extra_roots: CertificateDer::pem_slice_iter(ca.cert_pem().as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .unwrap(),
        identity: Some(identity(&client.cert_pem, &client.key_pem)),
        proxy: Proxy::Direct,
    };
    let config = tls::client_config(&options, &SystemRoots::none()).unwrap();
    assert!(config.client_auth_cert_resolver.has_certs());
    assert!(Client::new(&options, &SystemRoots::none()).is_ok());
    assert!(!format!("{options:?}").contains("PRIVATE"));
}

#[test]
fn an_identity_whose_key_does_not_match_is_refused() {
    let ca = TestCa::new("Test CA");
    let (one, two) = (ca.client("one"), ca.server(&["two.example"]));
    let options = ClientOptions {
        identity: Some(identity(&one.cert_pem, &two.key_pem)),
        ..ClientOptions::default()
    };
    let error = Client::new(&options, &SystemRoots::none()).unwrap_err();
    assert!(matches!(error, BuildError::Tls(_)), "{error}");
}
