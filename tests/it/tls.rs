//! TLS on ingress and admin with certificates made in the test: ingest end to end, plain
//! HTTP refused, rotation under load, bad files refused at load, client certificates.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rustls::pki_types::ServerName;
use switchyard::config::CertInfo;

use crate::support::certs::{Issued, TestCa, Validity};
use crate::support::process::BIN;
use crate::support::{request, wait_until, TestApp, TestSink};

const WAIT: Duration = Duration::from_secs(10);

type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// A client trusting only the test CA; `reuse: false` opens a connection per request.
fn https_client(config: rustls::ClientConfig, reuse: bool) -> HttpsClient {
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(config)
        .https_only()
        .enable_http1()
        .build();
    let mut builder = Client::builder(TokioExecutor::new());
    if !reuse {
        builder.pool_max_idle_per_host(0);
    }
    builder.build(connector)
}

/// Publishes one binary-mode event; the status, or why no answer came.
async fn publish(client: &HttpsClient, base: &str, id: &str) -> Result<StatusCode, String> {
    let request = Request::builder()
        .method(Method::POST)
        .uri(format!("{base}/events"))
        .header("ce-specversion", "1.0")
        .header("ce-id", id)
        .header("ce-source", "/tls")
        .header("ce-type", "Tls.Tested")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(br#"{"over": "tls"}"#)))
        .map_err(|e| e.to_string())?;
    let response = tokio::time::timeout(WAIT, client.request(request))
        .await
        .map_err(|_| "no answer in time".to_owned())?
        .map_err(|e| format!("{e:?}"))?;
    let status = response.status();
    response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?;
    Ok(status)
}

/// The serial number of the certificate a new connection to `addr` is served.
async fn served_serial(ca: &TestCa, addr: SocketAddr) -> String {
    let connector = tokio_rustls::TlsConnector::from(Arc::new(ca.client_config(None)));
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let name = ServerName::try_from("localhost").expect("name");
    let tls = tokio::time::timeout(WAIT, connector.connect(name, tcp))
        .await
        .expect("handshake in time")
        .expect("handshake");
    let certificates = tls.get_ref().1.peer_certificates().expect("a certificate");
    CertInfo::parse(&certificates[0])
        .expect("a readable certificate")
        .serial_hex()
}

fn https_base(addr: SocketAddr) -> String {
    format!("https://127.0.0.1:{}", addr.port())
}

fn tls_yaml(cert: &Path, key: &Path, extra: &str) -> String {
    format!(
        "tls: {{ cert: \"{}\", key: \"{}\"{extra} }}",
        cert.display(),
        key.display()
    )
}

#[tokio::test]
async fn events_over_tls_reach_the_sink_and_plain_http_is_told_to_use_https() {
    let ca = TestCa::new("switchyard test CA");
    let certs = tempfile::tempdir().expect("temp dir");
    let (cert, key) = ca.server(1, Validity::Current).write(certs.path());
    let sink = TestSink::start().await;
    let tls = tls_yaml(&cert, &key, "");
    let yaml = format!(
        "listen: 127.0.0.1:0\ningress:\n  {tls}\nadmin:\n  {tls}\n\
         sinks:\n  hook:\n    http: {{ url: \"{}\" }}\nroutes:\n  - {{ name: all, to: [hook] }}\n",
        sink.url()
    );
    let app = TestApp::start(&yaml).await;
    let client = https_client(ca.client_config(None), true);
    let base = https_base(app.running.local_addr());

    assert_eq!(
        publish(&client, &base, "tls-1").await,
        Ok(StatusCode::ACCEPTED)
    );
    wait_until("delivery", WAIT, || sink.count() == 1).await;
    assert_eq!(sink.received()[0].header("ce-id"), Some("tls-1"));

    let admin = https_base(app.running.admin_addr());
    let health = Request::get(format!("{admin}/healthz"))
        .body(Full::new(Bytes::new()))
        .expect("request");
    let health = client
        .request(health)
        .await
        .expect("admin answers over TLS");
    assert_eq!(health.status(), StatusCode::OK);

    // Plain HTTP to the TLS port: a clear answer, not a hang or garbage.
    let plain = request(Method::POST, &format!("{}/events", app.base), &[], "{}").await;
    assert_eq!(plain.status, StatusCode::BAD_REQUEST);
    assert!(plain.text().contains("https://"), "{}", plain.text());
    let plain_admin = request(Method::GET, &format!("{}/healthz", app.admin), &[], "").await;
    assert_eq!(plain_admin.status, StatusCode::BAD_REQUEST);
}

/// Replaces the pair the way the kubelet updates a mounted Secret: a new timestamped
/// directory, then a rename of a new `..data` link over the old one.
fn kubelet_swap(dir: &Path, generation: u32, pair: &Issued) {
    let target = format!("..gen_{generation}");
    let generation_dir = dir.join(&target);
    std::fs::create_dir(&generation_dir).expect("generation dir");
    pair.write(&generation_dir);
    let staged = dir.join("..data_tmp");
    std::os::unix::fs::symlink(&target, &staged).expect("link");
    std::fs::rename(&staged, dir.join("..data")).expect("swap ..data");
}

async fn wait_for_serial(ca: &TestCa, addr: SocketAddr, serial: &str) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let served = served_serial(ca, addr).await;
        if served == serial {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "still serving {served}, not {serial}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_certificate_rotated_under_load_fails_no_request_and_new_connections_get_it() {
    let ca = TestCa::new("switchyard test CA");
    let certs = tempfile::tempdir().expect("temp dir");
    let dir = certs.path();
    kubelet_swap(dir, 1, &ca.server(1, Validity::Current));
    for name in ["cert.pem", "key.pem"] {
        std::os::unix::fs::symlink(format!("..data/{name}"), dir.join(name)).expect("link");
    }
    let yaml = format!(
        "listen: 127.0.0.1:0\nspool: {{ backend: memory }}\ningress:\n  {}\n\
         sinks:\n  quiet:\n    log: {{ level: trace }}\nroutes:\n  - {{ name: all, to: [quiet] }}\n",
        tls_yaml(&dir.join("cert.pem"), &dir.join("key.pem"), "")
    );
    let app = TestApp::start(&yaml).await;
    let addr = app.running.local_addr();
    assert_eq!(served_serial(&ca, addr).await, "123401");

    // Load: kept-alive connections and a new connection per request, side by side.
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let mut load = Vec::new();
    for worker in 0..4 {
        let client = https_client(ca.client_config(None), worker % 2 == 0);
        let (stop, ok, failures) = (stop.clone(), ok.clone(), failures.clone());
        let base = https_base(addr);
        load.push(tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                match publish(&client, &base, &format!("w{worker}-{n}")).await {
                    Ok(StatusCode::ACCEPTED) => ok.fetch_add(1, Ordering::Relaxed),
                    other => {
                        failures.lock().expect("lock").push(format!("{other:?}"));
                        0
                    }
                };
            }
        }));
    }

    // Requests go on between every two steps of the rotation.
    let progressed = |from: usize| {
        let ok = ok.clone();
        async move {
            let going = || ok.load(Ordering::Relaxed) >= from + 20;
            wait_until("requests under load", WAIT, going).await;
            ok.load(Ordering::Relaxed)
        }
    };
    let mut done = progressed(0).await;
    kubelet_swap(dir, 2, &ca.server(2, Validity::Current));
    wait_for_serial(&ca, addr, "123402").await;
    done = progressed(done).await;
    // An expired pair is refused and the current one stays in use.
    kubelet_swap(dir, 3, &ca.server(3, Validity::Expired));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(served_serial(&ca, addr).await, "123402");
    done = progressed(done).await;
    kubelet_swap(dir, 4, &ca.server(4, Validity::Current));
    wait_for_serial(&ca, addr, "123404").await;
    done = progressed(done).await;
    // Files replaced in place (a rename over each name) are seen too.
    let fresh = ca.server(5, Validity::Current);
    for (name, text) in [("cert.pem", &fresh.cert), ("key.pem", &fresh.key)] {
        let staged = dir.join(format!("{name}.tmp"));
        std::fs::write(&staged, text).expect("write");
        std::fs::rename(&staged, dir.join(name)).expect("rename");
    }
    wait_for_serial(&ca, addr, "123405").await;
    progressed(done).await;

    stop.store(true, Ordering::Relaxed);
    for worker in load {
        worker.await.expect("load task");
    }
    let failures = failures.lock().expect("lock").clone();
    assert!(failures.is_empty(), "failed requests: {failures:?}");
}

#[tokio::test]
async fn a_client_that_never_finishes_its_handshake_holds_its_slot_only_until_the_header_timeout() {
    let ca = TestCa::new("switchyard test CA");
    let certs = tempfile::tempdir().expect("temp dir");
    let (cert, key) = ca.server(1, Validity::Current).write(certs.path());
    let yaml = format!(
        "listen: 127.0.0.1:0\nspool: {{ backend: memory }}\ningress:\n  header_timeout: 1s\n  \
         max_connections: 1\n  {}\nsinks:\n  quiet:\n    log: {{ level: trace }}\n\
         routes:\n  - {{ name: all, to: [quiet] }}\n",
        tls_yaml(&cert, &key, "")
    );
    let app = TestApp::start(&yaml).await;
    let addr = app.running.local_addr();
    // Takes the only slot: connects, sends half a TLS record, then nothing.
    let mut silent = tokio::net::TcpStream::connect(addr).await.expect("connect");
    tokio::io::AsyncWriteExt::write_all(&mut silent, &[0x16, 0x03, 0x01])
        .await
        .expect("write");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let client = https_client(ca.client_config(None), false);
    let outcome = publish(&client, &https_base(addr), "after-silent").await;
    assert_eq!(outcome, Ok(StatusCode::ACCEPTED));
    // The silent connection was closed by the server.
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(
        WAIT,
        tokio::io::AsyncReadExt::read_to_end(&mut silent, &mut rest),
    )
    .await;
    assert!(closed.is_ok(), "still open");
}

/// Runs `switchyard COMMAND --config` on a file with `ingress_tls` and `admin_tls` mappings.
fn run(command: &str, dir: &Path, ingress: &str, admin: &str) -> (Option<i32>, String) {
    let path = dir.join("routes.yaml");
    let yaml = format!(
        "listen: 127.0.0.1:0\nadmin_listen: 127.0.0.1:0\ningress:\n  {ingress}\nadmin:\n  {admin}\n\
         sinks: {{ quiet: {{ log: {{}} }} }}\nroutes: [{{ name: all, to: [quiet] }}]\n"
    );
    std::fs::write(&path, yaml).expect("write");
    let out = Command::new(BIN)
        .args([command, "--config"])
        .arg(&path)
        .env("SWITCHYARD_SPOOL__PATH", dir.join("spool"))
        .output()
        .expect("run");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn unusable_certificate_files_are_configuration_errors_naming_the_file() {
    let ca = TestCa::new("switchyard test CA");
    let dir = tempfile::tempdir().expect("temp dir");
    let file = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("write");
        path
    };
    let good = ca.server(1, Validity::Current);
    let other = ca.server(2, Validity::Current);
    let expired = ca.server(3, Validity::Expired);
    let future = ca.server(4, Validity::Future);
    let (cert, key) = (file("good.crt", &good.cert), file("good.key", &good.key));
    let cases = [
        (
            tls_yaml(
                &file("expired.crt", &expired.cert),
                &file("expired.key", &expired.key),
                "",
            ),
            "ingress.tls.cert",
            "expired.crt: the certificate expired on",
        ),
        (
            tls_yaml(
                &file("future.crt", &future.cert),
                &file("future.key", &future.key),
                "",
            ),
            "ingress.tls.cert",
            "future.crt: the certificate is not valid yet",
        ),
        (
            tls_yaml(&cert, &file("other.key", &other.key), ""),
            "ingress.tls.key",
            "other.key: the private key does not match the certificate in",
        ),
        (
            tls_yaml(&file("text.crt", "hello\n"), &key, ""),
            "ingress.tls.cert",
            "text.crt: not PEM",
        ),
        (
            tls_yaml(&key, &key, ""),
            "ingress.tls.cert",
            "good.key: holds no certificate",
        ),
        (
            tls_yaml(&cert, &cert, ""),
            "ingress.tls.key",
            "good.crt: holds no private key",
        ),
        (
            tls_yaml(&cert, &dir.path().join("missing.key"), ""),
            "ingress.tls.key",
            "cannot read",
        ),
        (
            tls_yaml(&cert, &key, ", client_subjects: [a]"),
            "ingress.tls.client_subjects",
            "needs client_ca",
        ),
        (
            tls_yaml(&cert, &key, ", colour: blue"),
            "ingress.tls.colour",
            "unknown key",
        ),
    ];
    for (ingress, at, message) in cases {
        let (code, stderr) = run("check", dir.path(), &ingress, "token: t");
        assert_eq!(code, Some(64), "{ingress}: {stderr}");
        assert!(
            stderr.contains(&format!("{at}: ")) && stderr.contains(message),
            "{ingress}: expected {at}: …{message}…, got {stderr}"
        );
    }
    // The admin server's files are checked the same way, and `serve` stops on them too.
    let admin = tls_yaml(&file("expired.crt", &expired.cert), &key, "");
    let (code, stderr) = run("serve", dir.path(), "max_connections: 8", &admin);
    assert_eq!(code, Some(64), "{stderr}");
    assert!(
        stderr.contains("admin.tls.cert: ")
            && stderr.contains("expired.crt: the certificate expired"),
        "{stderr}"
    );
}

#[tokio::test]
async fn client_certificates_are_required_from_the_ca_and_checked_against_the_subjects() {
    let ca = TestCa::new("switchyard test CA");
    let clients = TestCa::new("client CA");
    let stranger = TestCa::new("some other CA");
    let certs = tempfile::tempdir().expect("temp dir");
    let (cert, key) = ca.server(1, Validity::Current).write(certs.path());
    let client_ca = certs.path().join("clients.pem");
    std::fs::write(&client_ca, &clients.pem).expect("write");
    let extra = format!(
        ", client_ca: \"{}\", client_subjects: [publisher.example]",
        client_ca.display()
    );
    let yaml = format!(
        "listen: 127.0.0.1:0\nspool: {{ backend: memory }}\ningress:\n  {}\n\
         sinks:\n  quiet:\n    log: {{ level: trace }}\nroutes:\n  - {{ name: all, to: [quiet] }}\n",
        tls_yaml(&cert, &key, &extra)
    );
    let app = TestApp::start(&yaml).await;
    let base = https_base(app.running.local_addr());
    let publisher = clients.client("publisher.example");
    let accepted = https_client(ca.client_config(Some(&publisher)), false);
    assert_eq!(
        publish(&accepted, &base, "m-1").await,
        Ok(StatusCode::ACCEPTED)
    );

    let refused = [
        ("no client certificate", None),
        (
            "a subject not listed",
            Some(clients.client("intruder.example")),
        ),
        ("another CA", Some(stranger.client("publisher.example"))),
    ];
    for (what, client) in refused {
        let client = https_client(ca.client_config(client.as_ref()), false);
        let outcome = publish(&client, &base, "m-2").await;
        assert!(outcome.is_err(), "{what}: {outcome:?}");
    }
    assert_eq!(
        app.running
            .counters()
            .events_received
            .load(Ordering::Relaxed),
        1
    );
}
