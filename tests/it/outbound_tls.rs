//! Outbound TLS and proxies: an https sink trusts a private CA only through `tls.ca`,
//! presents `tls.client_cert` to a server that asks, and reaches its target through the
//! proxy that `HTTPS_PROXY` / `HTTP_PROXY` / `NO_PROXY` (set on the spawned daemon only) or
//! its own `proxy:` names, without its credentials ever reaching a log line.
//!
//! Targets named `sink.test` resolve nowhere but in the test proxy, so a delivery to one
//! that arrives went through the proxy.

use std::path::Path;
use std::time::Duration;

use hyper::Method;

use crate::support::process::{free_port, Daemon};
use crate::support::proxy::TestProxy;
use crate::support::tls::{TestCa, TlsSink};
use crate::support::{json_lines, post, request, wait_until, TestApp, TestSink};

const WAIT: Duration = Duration::from_secs(10);

fn event(id: &str) -> String {
    format!(r#"{{"specversion":"1.0","id":"{id}","source":"/tests","type":"T","data":{{"n":1}}}}"#)
}

/// One http sink `hook` with `http` settings `http`, failing fast into `dlq`.
fn one_sink(http: &str) -> String {
    format!(
        r#"
sinks:
  hook:
    http: {http}
    retry: {{ max_attempts: 2, schedule: [50ms] }}
    dead_letter: dlq
  dlq: {{ file: {{ path: "{{dir}}/dead.jsonl" }} }}
routes: [{{ name: all, to: [hook] }}]
"#
    )
}

async fn send(app: &TestApp, id: &str) {
    let reply = app
        .post(
            "/events",
            &[("content-type", "application/cloudevents+json")],
            event(id),
        )
        .await;
    assert_eq!(reply.status.as_u16(), 202, "{}", reply.text());
}

/// Waits for the one dead letter of `app` and checks it says the target was never reached.
async fn assert_dead_lettered_unreached(app: &TestApp) {
    let path = app.path("dead.jsonl");
    wait_until("a dead letter", WAIT, || json_lines(&path).len() == 1).await;
    let record = &json_lines(&path)[0];
    assert_eq!(
        record["deadletterreason"], "MaxDeliveryAttemptsExceeded",
        "{record}"
    );
    assert_eq!(record["deliveryattempts"], 2, "{record}");
    assert_eq!(record["lastdeliveryoutcome"], "SocketError", "{record}");
}

// === Trust and client certificates (in-process daemon) ===

#[tokio::test]
async fn an_https_sink_delivers_to_a_server_of_its_private_ca() {
    let ca = TestCa::new("Private CA");
    let server = TlsSink::start(&ca.server(&["localhost"]), None).await;
    let dir = tempfile::tempdir().expect("dir");
    let ca_file = ca.write_cert(&dir.path().join("ca.pem"));
    let http = format!(
        r#"{{ url: "{}", tls: {{ ca: "{}" }} }}"#,
        server.url("localhost"),
        ca_file.display()
    );
    let app = TestApp::start(&one_sink(&http)).await;

    send(&app, "trusted-1").await;
    wait_until("the https sink gets the event", WAIT, || {
        server.hits().len() == 1
    })
    .await;
    assert_eq!(server.hits()[0].target, "/hook");
    assert!(
        !server.hits()[0].client_cert,
        "no client certificate was configured"
    );
}

#[tokio::test]
async fn without_its_ca_an_https_sink_is_refused_retried_and_dead_lettered() {
    let ca = TestCa::new("Private CA");
    let server = TlsSink::start(&ca.server(&["localhost"]), None).await;
    let http = format!(r#"{{ url: "{}" }}"#, server.url("localhost"));
    let app = TestApp::start(&one_sink(&http)).await;

    send(&app, "untrusted-1").await;
    assert_dead_lettered_unreached(&app).await;
    assert!(
        server.hits().is_empty(),
        "no request may cross an unverified connection"
    );
    // The server counts a refused handshake when its side of it ends, which may come after
    // the daemon has given up on the connection and written the dead letter.
    wait_until("both attempts reached the handshake", WAIT, || {
        server.refused_handshakes() >= 2
    })
    .await;
}

#[tokio::test]
async fn a_server_that_requires_a_client_certificate_gets_the_configured_one() {
    let (server_ca, client_ca) = (TestCa::new("Server CA"), TestCa::new("Client CA"));
    let server = TlsSink::start(&server_ca.server(&["localhost"]), Some(&client_ca)).await;
    let dir = tempfile::tempdir().expect("dir");
    let ca_file = server_ca.write_cert(&dir.path().join("ca.pem"));
    let (cert, key) = client_ca.client("switchyard").write(dir.path(), "client");
    let http = format!(
        r#"{{ url: "{}", tls: {{ ca: "{}", client_cert: "{}", client_key: "{}" }} }}"#,
        server.url("localhost"),
        ca_file.display(),
        cert.display(),
        key.display()
    );
    let app = TestApp::start(&one_sink(&http)).await;

    send(&app, "mtls-1").await;
    wait_until("the mTLS sink gets the event", WAIT, || {
        server.hits().len() == 1
    })
    .await;
    assert!(server.hits()[0].client_cert);
}

#[tokio::test]
async fn a_server_that_requires_a_client_certificate_refuses_a_sink_without_one() {
    let (server_ca, client_ca) = (TestCa::new("Server CA"), TestCa::new("Client CA"));
    let server = TlsSink::start(&server_ca.server(&["localhost"]), Some(&client_ca)).await;
    let dir = tempfile::tempdir().expect("dir");
    let ca_file = server_ca.write_cert(&dir.path().join("ca.pem"));
    let http = format!(
        r#"{{ url: "{}", tls: {{ ca: "{}" }} }}"#,
        server.url("localhost"),
        ca_file.display()
    );
    let app = TestApp::start(&one_sink(&http)).await;

    send(&app, "no-cert-1").await;
    assert_dead_lettered_unreached(&app).await;
    assert!(server.hits().is_empty());
    wait_until("both attempts reached the handshake", WAIT, || {
        server.refused_handshakes() >= 2
    })
    .await;
}

#[tokio::test]
async fn a_reload_reads_a_replaced_ca_file() {
    let (old_ca, new_ca) = (TestCa::new("Old CA"), TestCa::new("New CA"));
    let server = TlsSink::start(&new_ca.server(&["localhost"]), None).await;
    let pki = tempfile::tempdir().expect("dir");
    let ca_file = old_ca.write_cert(&pki.path().join("ca.pem"));
    let yaml = format!(
        r#"
sinks:
  hook:
    http: {{ url: "{}", tls: {{ ca: "{}" }} }}
    retry: {{ max_attempts: 100, schedule: [50ms] }}
routes: [{{ name: all, to: [hook] }}]
"#,
        server.url("localhost"),
        ca_file.display()
    );
    let app = TestApp::start_file(&yaml, false).await;
    send(&app, "rotated-1").await;
    wait_until("attempts refused under the old CA", WAIT, || {
        server.refused_handshakes() >= 2
    })
    .await;
    assert!(server.hits().is_empty());

    new_ca.write_cert(&ca_file);
    let reply = request(
        Method::POST,
        &format!("{}/api/v1/reload", app.admin),
        &[],
        "",
    )
    .await;
    assert_eq!(reply.status.as_u16(), 200, "{}", reply.text());
    wait_until("delivery under the new CA", WAIT, || {
        server.hits().len() == 1
    })
    .await;
}

#[tokio::test]
async fn the_cli_trusts_a_private_ca_given_with_ca() {
    let ca = TestCa::new("Private CA");
    let server = TlsSink::start(&ca.server(&["localhost"]), None).await;
    let dir = tempfile::tempdir().expect("dir");
    let ca_file = ca.write_cert(&dir.path().join("ca.pem"));
    let send = |ca: Option<&Path>| {
        let mut command = tokio::process::Command::new(crate::support::process::BIN);
        command.args(["send", "--url", &server.url("localhost"), "--type", "T"]);
        command.args(["--source", "/cli"]);
        if let Some(ca) = ca {
            command.arg("--ca").arg(ca);
        }
        command.env_remove("HTTPS_PROXY").env_remove("https_proxy");
        command.env_remove("ALL_PROXY").env_remove("all_proxy");
        command.output()
    };

    let refused = send(None).await.expect("run");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(stderr.contains("certificate"), "{stderr}");
    assert!(server.hits().is_empty());

    let trusted = send(Some(&ca_file)).await.expect("run");
    let stdout = String::from_utf8_lossy(&trusted.stdout);
    assert!(
        trusted.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&trusted.stderr)
    );
    assert!(stdout.starts_with("200"), "{stdout}");
    assert_eq!(server.hits().len(), 1);
}

// === Proxies (spawned daemon: the proxy variables are set on the child only) ===

/// A spawned daemon and the paths of its directory.
struct Spawned {
    _daemon: Daemon,
    dir: tempfile::TempDir,
    ingress: String,
    admin: String,
}

impl Spawned {
    /// Starts `switchyard serve` with `sinks` (YAML text, `{dir}` replaced) routed from
    /// every event, and `env` set on the child.
    async fn start(sinks: &str, env: &[(&str, &str)]) -> Self {
        Self::start_logged(sinks, env, false).await
    }

    async fn start_logged(sinks: &str, env: &[(&str, &str)], logged: bool) -> Self {
        let dir = tempfile::tempdir().expect("dir");
        let (port, admin_port) = (free_port(), free_port());
        let sinks = sinks.replace("{dir}", &dir.path().display().to_string());
        let yaml = format!(
            "listen: 127.0.0.1:{port}\nadmin_listen: 127.0.0.1:{admin_port}\n\
             spool: {{ backend: memory }}\nsinks:\n{sinks}\n\
             routes: [{{ name: all, to: [{names}] }}]\n",
            names = sink_names(&sinks).join(", ")
        );
        let config = dir.path().join("routes.yaml");
        std::fs::write(&config, yaml).expect("write config");
        let log = logged.then(|| dir.path().join("daemon.log"));
        let daemon = Daemon::start_with(&config, port, env, log.as_deref()).await;
        Self {
            _daemon: daemon,
            dir,
            ingress: format!("http://127.0.0.1:{port}/events"),
            admin: format!("http://127.0.0.1:{admin_port}"),
        }
    }

    async fn send(&self, id: &str) {
        let reply = post(
            &self.ingress,
            &[("content-type", "application/cloudevents+json")],
            event(id),
        )
        .await;
        assert_eq!(reply.status.as_u16(), 202, "{}", reply.text());
    }

    fn path(&self, name: &str) -> std::path::PathBuf {
        self.dir.path().join(name)
    }
}

/// The names of the sinks in `sinks` text (keys indented by two spaces), `dlq` left out.
fn sink_names(sinks: &str) -> Vec<String> {
    sinks
        .lines()
        .filter_map(|l| l.strip_prefix("  ")?.split_once(':').map(|(k, _)| k))
        .filter(|k| !k.starts_with(' ') && *k != "dlq")
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn an_https_target_is_reached_through_https_proxy_in_a_connect_tunnel() {
    let ca = TestCa::new("Private CA");
    let server = TlsSink::start(&ca.server(&["sink.test"]), None).await;
    let proxy = TestProxy::start(None).await;
    let pki = tempfile::tempdir().expect("dir");
    let ca_file = ca.write_cert(&pki.path().join("ca.pem"));
    let sinks = format!(
        "  hook: {{ http: {{ url: \"{}\", tls: {{ ca: \"{}\" }} }} }}",
        server.url("sink.test"),
        ca_file.display()
    );
    let daemon = Spawned::start(&sinks, &[("HTTPS_PROXY", &proxy.url())]).await;

    daemon.send("tunnelled-1").await;
    wait_until("delivery through the tunnel", WAIT, || {
        server.hits().len() == 1
    })
    .await;
    let hits = proxy.hits();
    let connect = format!("CONNECT sink.test:{} HTTP/1.1", server.addr.port());
    assert_eq!(hits.len(), 1, "{hits:?}");
    assert_eq!(hits[0].line, connect);
    assert_eq!(hits[0].authorization, None);
}

#[tokio::test]
async fn an_http_target_is_reached_through_http_proxy_in_absolute_form() {
    let sink = TestSink::start().await;
    let proxy = TestProxy::start(None).await;
    let url = format!("http://sink.test:{}/hook", sink.addr.port());
    let sinks = format!("  hook: {{ http: {{ url: \"{url}\" }} }}");
    // The lowercase name is read too.
    let daemon = Spawned::start(&sinks, &[("http_proxy", &proxy.url())]).await;

    daemon.send("forwarded-1").await;
    wait_until("delivery through the proxy", WAIT, || sink.count() == 1).await;
    let hits = proxy.hits();
    assert_eq!(hits.len(), 1, "{hits:?}");
    assert_eq!(hits[0].line, format!("POST {url} HTTP/1.1"));
}

#[tokio::test]
async fn no_proxy_sends_its_hosts_directly() {
    let ca = TestCa::new("Private CA");
    let server = TlsSink::start(&ca.server(&["sink.test", "localhost"]), None).await;
    let proxy = TestProxy::start(None).await;
    let pki = tempfile::tempdir().expect("dir");
    let ca = ca
        .write_cert(&pki.path().join("ca.pem"))
        .display()
        .to_string();
    let sinks = format!(
        "  via: {{ http: {{ url: \"{}\", tls: {{ ca: \"{ca}\" }} }} }}\n  \
         direct: {{ http: {{ url: \"{}\", tls: {{ ca: \"{ca}\" }} }} }}",
        server.url("sink.test"),
        server.url("localhost"),
    );
    let env = [
        ("HTTPS_PROXY", proxy.url()),
        ("NO_PROXY", "localhost".into()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let daemon = Spawned::start(&sinks, &env).await;

    daemon.send("split-1").await;
    wait_until("both sinks get the event", WAIT, || {
        server.hits().len() == 2
    })
    .await;
    let lines: Vec<String> = proxy.hits().into_iter().map(|h| h.line).collect();
    let connect = format!("CONNECT sink.test:{} HTTP/1.1", server.addr.port());
    assert_eq!(lines, [connect], "localhost must bypass the proxy");
}

#[tokio::test]
async fn a_sink_proxy_overrides_the_environment_and_keeps_its_credentials_out_of_logs() {
    let ca = TestCa::new("Private CA");
    let server = TlsSink::start(&ca.server(&["sink.test", "localhost"]), None).await;
    let plain = TestSink::start().await;
    // base64("svc:s3cret-pass")
    let credentials = "Basic c3ZjOnMzY3JldC1wYXNz";
    let own = TestProxy::start(Some(credentials)).await;
    let environment = TestProxy::start(None).await;
    let pki = tempfile::tempdir().expect("dir");
    let ca = ca
        .write_cert(&pki.path().join("ca.pem"))
        .display()
        .to_string();
    let own_port = own.addr.port();
    let forwarded = format!("http://sink.test:{}/hook", plain.addr.port());
    let sinks = format!(
        "  good: {{ http: {{ url: \"{tunnelled}\", tls: {{ ca: \"{ca}\" }}, \
         proxy: \"http://svc:s3cret-pass@127.0.0.1:{own_port}\" }} }}\n  \
         forwarded: {{ http: {{ url: \"{forwarded}\", \
         proxy: \"http://svc:s3cret-pass@127.0.0.1:{own_port}\" }} }}\n  \
         unproxied: {{ http: {{ url: \"{direct}\", tls: {{ ca: \"{ca}\" }}, proxy: none }} }}\n  \
         refused: {{ http: {{ url: \"{tunnelled}\", tls: {{ ca: \"{ca}\" }}, \
         proxy: \"http://svc:wrong-pass@127.0.0.1:{own_port}\" }}, \
         retry: {{ max_attempts: 2, schedule: [50ms] }}, dead_letter: dlq }}\n  \
         dlq: {{ file: {{ path: \"{{dir}}/dead.jsonl\" }} }}",
        tunnelled = server.url("sink.test"),
        direct = server.url("localhost"),
    );
    let env_proxy = environment.url();
    let env = [
        ("HTTPS_PROXY", env_proxy.as_str()),
        ("HTTP_PROXY", env_proxy.as_str()),
    ];
    let daemon = Spawned::start_logged(&sinks, &env, true).await;

    daemon.send("override-1").await;
    let dead = daemon.path("dead.jsonl");
    wait_until(
        "good and unproxied deliver, refused is dead-lettered",
        WAIT,
        || server.hits().len() == 2 && plain.count() == 1 && json_lines(&dead).len() == 1,
    )
    .await;
    assert!(environment.hits().is_empty(), "{:?}", environment.hits());
    let own_hits = own.hits();
    let with = |auth: &str| {
        own_hits
            .iter()
            .filter(|h| h.authorization.as_deref() == Some(auth))
            .count()
    };
    assert_eq!(
        with(credentials),
        2,
        "the tunnel and the forwarded request: {own_hits:?}"
    );
    // base64("svc:wrong-pass"), once per attempt.
    assert!(with("Basic c3ZjOndyb25nLXBhc3M=") >= 2, "{own_hits:?}");
    assert_eq!(json_lines(&dead)[0]["lastdeliveryoutcome"], "SocketError");

    let sinks = request(
        Method::GET,
        &format!("{}/api/v1/sinks", daemon.admin),
        &[],
        "",
    )
    .await;
    let sinks = sinks.text();
    assert!(sinks.contains("proxy authorization required"), "{sinks}");
    let log = std::fs::read_to_string(daemon.path("daemon.log")).expect("log");
    assert!(
        log.contains("proxy authorization required"),
        "the failure is logged"
    );
    for text in [&sinks, &log] {
        assert!(!text.contains("s3cret-pass") && !text.contains("wrong-pass"));
        assert!(!text.contains("c3ZjOnMzY3JldC1wYXNz") && !text.contains("c3ZjOndyb25nLXBhc3M"));
    }
}
