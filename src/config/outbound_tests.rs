//! Tests of `sinks.X.http.tls` and `sinks.X.http.proxy`: PEM files read and checked at load,
//! errors naming the YAML path and the file, no way to skip verification, and proxy
//! credentials that never show.

use std::path::Path;

use tempfile::TempDir;

use super::tests::load_text as load;
use super::*;
use crate::outbound::test_pki::TestCa;

/// A directory holding `ca.pem`, `client.pem` and `client.key` (issued by that CA), and
/// `other.key` (a key of another certificate).
fn pki() -> TempDir {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("Test CA");
    let client = ca.client("switchyard");
    let other = ca.client("someone-else");
    write(&dir, "ca.pem", &ca.cert_pem());
    write(&dir, "client.pem", &client.cert_pem);
    write(&dir, "client.key", &client.key_pem);
    write(&dir, "other.key", &other.key_pem);
    dir
}

fn write(dir: &TempDir, name: &str, text: &str) {
    std::fs::write(dir.path().join(name), text).unwrap();
}

/// A configuration with one http sink `web` whose `http` mapping ends with `extra`.
fn yaml(extra: &str) -> String {
    format!(
        "sinks:\n  web:\n    http:\n      url: https://hooks.example/in\n{extra}\
         routes: [ {{ name: all, to: [web] }} ]\n"
    )
}

fn tls_yaml(dir: &TempDir, tls: &str) -> String {
    let tls = tls.replace("{dir}", &dir.path().display().to_string());
    yaml(&format!("      tls: {tls}\n"))
}

fn http(config: &Config) -> &HttpSinkConfig {
    match &config.sinks["web"].kind {
        SinkKind::Http(http) => http,
        other => panic!("not an http sink: {other:?}"),
    }
}

#[test]
fn without_tls_or_proxy_the_defaults_hold() {
    let config = load(&yaml(""), &[]).unwrap();
    assert!(http(&config).tls.is_default());
    assert_eq!(http(&config).proxy, ProxySetting::Environment);
}

#[test]
fn reads_the_ca_and_the_client_certificate() {
    let dir = pki();
    let text = tls_yaml(
        &dir,
        "{ ca: {dir}/ca.pem, client_cert: {dir}/client.pem, client_key: {dir}/client.key }",
    );
    let config = load(&text, &[]).unwrap();
    let tls = &http(&config).tls;
    let ca = tls.ca.as_ref().unwrap();
    assert_eq!(ca.path, dir.path().join("ca.pem"));
    assert_eq!(ca.certs.len(), 1);
    let client = tls.client.as_ref().unwrap();
    assert_eq!(client.cert.path, dir.path().join("client.pem"));
    assert_eq!(client.key_path, dir.path().join("client.key"));
    assert!(!format!("{config:?}").contains("PRIVATE"));
}

#[test]
fn reading_again_picks_up_a_replaced_file() {
    let dir = pki();
    let text = tls_yaml(&dir, "{ ca: {dir}/ca.pem }");
    let first = load(&text, &[]).unwrap();
    write(&dir, "ca.pem", &TestCa::new("Next CA").cert_pem());
    let second = load(&text, &[]).unwrap();
    assert_ne!(http(&first).tls, http(&second).tls);
}

#[test]
fn a_missing_ca_file_names_the_path_and_the_file() {
    let dir = pki();
    let error = load(&tls_yaml(&dir, "{ ca: {dir}/nope.pem }"), &[]).unwrap_err();
    let file = dir.path().join("nope.pem");
    let expected = format!("sinks.web.http.tls.ca: cannot read {}", file.display());
    assert!(error.contains(&expected), "{error}");
}

#[test]
fn a_ca_file_that_is_not_pem_is_refused() {
    let dir = pki();
    write(&dir, "notes.txt", "just some text\n");
    let error = load(&tls_yaml(&dir, "{ ca: {dir}/notes.txt }"), &[]).unwrap_err();
    assert!(
        error.contains("sinks.web.http.tls.ca: ")
            && error.contains("notes.txt holds no certificate"),
        "{error}"
    );
}

#[test]
fn a_ca_file_whose_certificate_is_damaged_is_refused() {
    let dir = pki();
    write(
        &dir,
        "bad.pem",
        "-----BEGIN CERTIFICATE-----\nAAECAwQF\n-----END CERTIFICATE-----\n",
    );
    let error = load(&tls_yaml(&dir, "{ ca: {dir}/bad.pem }"), &[]).unwrap_err();
    assert!(
        error.contains("sinks.web.http.tls.ca: ")
            && error.contains("bad.pem: certificate 1 is not a usable CA certificate"),
        "{error}"
    );
}

#[test]
fn a_client_certificate_needs_its_key_and_the_key_its_certificate() {
    let dir = pki();
    let error = load(&tls_yaml(&dir, "{ client_cert: {dir}/client.pem }"), &[]).unwrap_err();
    assert!(
        error.contains("sinks.web.http.tls.client_key: required with client_cert"),
        "{error}"
    );
    let error = load(&tls_yaml(&dir, "{ client_key: {dir}/client.key }"), &[]).unwrap_err();
    assert!(
        error.contains("sinks.web.http.tls.client_cert: required with client_key"),
        "{error}"
    );
}

#[test]
fn a_key_of_another_certificate_is_refused() {
    let dir = pki();
    let text = tls_yaml(
        &dir,
        "{ client_cert: {dir}/client.pem, client_key: {dir}/other.key }",
    );
    let error = load(&text, &[]).unwrap_err();
    let expected = format!(
        "sinks.web.http.tls.client_key: {} does not match the certificate in {}",
        dir.path().join("other.key").display(),
        dir.path().join("client.pem").display()
    );
    assert!(error.contains(&expected), "{error}");
}

#[test]
fn a_key_file_without_a_key_is_refused() {
    let dir = pki();
    let text = tls_yaml(
        &dir,
        "{ client_cert: {dir}/client.pem, client_key: {dir}/client.pem }",
    );
    let error = load(&text, &[]).unwrap_err();
    assert!(
        error.contains("sinks.web.http.tls.client_key: ")
            && error.contains("client.pem holds no private key"),
        "{error}"
    );
}

#[test]
fn every_way_of_asking_to_skip_verification_is_refused_with_the_reason() {
    let dir = pki();
    for (tls, key) in [
        ("{ insecure: true }", "sinks.web.http.tls.insecure"),
        ("{ verify: false }", "sinks.web.http.tls.verify"),
        ("{ skip_verify: true }", "sinks.web.http.tls.skip_verify"),
        (
            "{ ca: {dir}/ca.pem, insecure_skip_verify: true }",
            "sinks.web.http.tls.insecure_skip_verify",
        ),
        (
            "{ danger_accept_invalid_certs: true }",
            "sinks.web.http.tls.danger_accept_invalid_certs",
        ),
    ] {
        let error = load(&tls_yaml(&dir, tls), &[]).unwrap_err();
        assert!(
            error.contains(&format!(
                "{key}: unknown key: certificate verification cannot be turned off"
            )) && error.contains("http.tls.ca"),
            "{error}"
        );
    }
    let error = load(&yaml("      tls_verify: false\n"), &[]).unwrap_err();
    assert!(
        error.contains("sinks.web.http.tls_verify: unknown key: certificate verification cannot"),
        "{error}"
    );
}

#[test]
fn another_unknown_tls_key_lists_the_allowed_ones() {
    let dir = pki();
    let error = load(&tls_yaml(&dir, "{ cafile: x }"), &[]).unwrap_err();
    assert!(
        error.contains(
            "sinks.web.http.tls.cafile: unknown key (allowed here: ca, client_cert, client_key)"
        ),
        "{error}"
    );
}

#[test]
fn proxy_none_or_an_http_url() {
    let config = load(&yaml("      proxy: none\n"), &[]).unwrap();
    assert_eq!(http(&config).proxy, ProxySetting::Direct);
    let text = yaml("      proxy: \"${PROXY}\"\n");
    let config = load(&text, &[("PROXY", "http://svc:s3cret@proxy.internal:3128")]).unwrap();
    let ProxySetting::Url(uri) = &http(&config).proxy else {
        panic!("not a proxy URL: {:?}", http(&config).proxy);
    };
    assert_eq!(uri.host(), Some("proxy.internal"));
    assert_eq!(uri.port_u16(), Some(3128));
    assert_eq!(http(&config).proxy.describe(), "http://proxy.internal:3128");
    assert!(!format!("{config:?}").contains("s3cret"));
    assert!(!config.summary().contains("s3cret"));
    assert!(config
        .summary()
        .contains("proxy http://proxy.internal:3128"));
}

#[test]
fn unusable_proxy_urls_are_refused_without_repeating_them() {
    for (value, fragment) in [
        (
            "https://u:s3cret@proxy:3128",
            "https:// proxies are not supported",
        ),
        (
            "socks5://u:s3cret@proxy:1080",
            "SOCKS proxies are not supported",
        ),
        (
            "http://u:s3cret@proxy:3128/path",
            "a proxy URL has no path or query",
        ),
        ("u:s3cret@proxy 3128", "expected `none` or a proxy URL"),
        (
            "ftp://u:s3cret@proxy",
            "expected `none` or an http:// proxy URL",
        ),
    ] {
        let text = yaml("      proxy: \"${PROXY}\"\n");
        let error = load(&text, &[("PROXY", value)]).unwrap_err();
        assert!(
            error.contains(&format!("sinks.web.http.proxy: {fragment}")),
            "{value}: {error}"
        );
        assert!(!error.contains("s3cret"), "{error}");
    }
}

#[test]
fn check_output_names_the_files_and_never_the_key() {
    let dir = pki();
    let text = tls_yaml(
        &dir,
        "{ ca: {dir}/ca.pem, client_cert: {dir}/client.pem, client_key: {dir}/client.key }",
    );
    let summary = load(&text, &[]).unwrap().summary();
    let ca = dir.path().join("ca.pem");
    assert!(
        summary.contains(&format!("ca {}", ca.display())),
        "{summary}"
    );
    let cert = dir.path().join("client.pem");
    assert!(
        summary.contains(&format!("client cert {}", cert.display())),
        "{summary}"
    );
    assert!(!summary.contains("PRIVATE"), "{summary}");
    assert!(!summary.contains(&Path::new("client.key").display().to_string()));
}
