//! What one client can hold of the servers: silent and half-sent requests are closed after
//! `header_timeout`, a stalled body is answered 408 after `body_timeout`, a client that
//! reads no answers is closed after `body_timeout` of stalled writes, and past
//! `max_connections` new connections wait in the backlog without costing a descriptor.

use std::net::SocketAddr;
use std::time::Duration;

use hyper::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::support::daemon::event;
use crate::support::process::{free_port, Daemon};
use crate::support::{wait_until, TestApp, TestSink};

const WAIT: Duration = Duration::from_secs(10);

/// The start of a request whose headers never end.
const HALF_HEADER: &[u8] = b"POST /events HTTP/1.1\r\nHost: x\r\n";

/// A structured event, as raw bytes on the wire.
fn head(body_len: usize, connection: &str) -> String {
    format!(
        "POST /events HTTP/1.1\r\nHost: x\r\nContent-Type: application/cloudevents+json\r\n\
         Content-Length: {body_len}\r\nConnection: {connection}\r\n\r\n"
    )
}

/// Reads until the server closes the connection; panics if it is still open after `limit`.
async fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> Vec<u8> {
    let mut answer = Vec::new();
    let read = tokio::time::timeout(limit, async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "connection still open after {limit:?}");
    answer
}

/// Opens `n` connections; every other one sends half a request head, the rest nothing.
async fn silent_clients(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    let mut clients = Vec::with_capacity(n);
    for i in 0..n {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        if i % 2 == 0 {
            stream.write_all(HALF_HEADER).await.expect("write");
        }
        clients.push(stream);
    }
    clients
}

/// Asserts every client is closed between `at_least` after `since` and `limit`, with no
/// answer or a 408.
async fn assert_all_closed(clients: Vec<TcpStream>, since: Instant, at_least: Duration) {
    for mut client in clients {
        let answer = read_until_closed(&mut client, WAIT).await;
        let closed_after = since.elapsed();
        assert!(
            answer.is_empty() || answer.starts_with(b"HTTP/1.1 408"),
            "{}",
            String::from_utf8_lossy(&answer)
        );
        assert!(
            closed_after >= at_least,
            "closed after only {closed_after:?}"
        );
    }
}

#[tokio::test]
async fn silent_and_half_header_clients_are_closed_after_the_header_timeout() {
    let sink = TestSink::start().await;
    let app = TestApp::start(&format!(
        "ingress: {{ header_timeout: 5s }}\nsinks: {{ conn-a: {{ http: {{ url: \"{}\" }} }} }}\nroutes: [{{ name: conn-a, to: [conn-a] }}]\n",
        sink.url()
    ))
    .await;
    let opened = Instant::now();
    let clients = silent_clients(app.running.local_addr(), 40).await;

    // A client that sends its request is served while the others hold their connections.
    let reply = app.send(event("conn-a-1", "T")).await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.text());
    // Served well before the timeout closes the others (slack for a loaded machine).
    assert!(opened.elapsed() < Duration::from_millis(4500));

    assert_all_closed(clients, opened, Duration::from_millis(4500)).await;
    wait_until("the served event delivered", WAIT, || sink.count() == 1).await;
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_header_timeout() {
    let app = TestApp::start(
        "ingress: { header_timeout: 1s }\nsinks: { conn-k: { log: {} } }\nroutes: [{ name: conn-k, to: [conn-k] }]\n",
    )
    .await;
    let mut stream = TcpStream::connect(app.running.local_addr())
        .await
        .expect("connect");
    let body = event("conn-k-1", "T").to_string();
    let request = head(body.len(), "keep-alive") + &body;
    stream.write_all(request.as_bytes()).await.expect("write");
    let sent = Instant::now();

    let answer = read_until_closed(&mut stream, WAIT).await;
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 202"), "{text}");
    let idle = sent.elapsed();
    assert!(idle >= Duration::from_millis(900), "closed after {idle:?}");
}

#[tokio::test]
async fn a_stalled_or_trickled_body_is_answered_408_and_accepts_nothing() {
    let sink = TestSink::start().await;
    let app = TestApp::start(&format!(
        "ingress: {{ body_timeout: 1s, header_timeout: 30s }}\nsinks: {{ conn-b: {{ http: {{ url: \"{}\" }} }} }}\nroutes: [{{ name: conn-b, to: [conn-b] }}]\n",
        sink.url()
    ))
    .await;
    let body = event("conn-b-stalled", "T").to_string();
    let addr = app.running.local_addr();

    let mut stalled = TcpStream::connect(addr).await.expect("connect");
    let partial = head(body.len(), "keep-alive") + &body[..10];
    stalled.write_all(partial.as_bytes()).await.expect("write");
    let started = Instant::now();

    // One byte every 200 ms keeps the connection busy but never completes the body in time.
    let mut trickled = TcpStream::connect(addr).await.expect("connect");
    trickled
        .write_all(head(body.len(), "keep-alive").as_bytes())
        .await
        .expect("write");
    let (mut reader, mut writer) = trickled.into_split();
    let trickle = tokio::spawn(async move {
        for byte in body.as_bytes().iter().take(20) {
            if writer.write_all(&[*byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });

    let answer = read_until_closed(&mut stalled, WAIT).await;
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("RequestTimeout"), "{text}");
    assert!(started.elapsed() >= Duration::from_millis(900));
    let mut answer = Vec::new();
    let read = tokio::time::timeout(WAIT, reader.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "trickling connection still open");
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    trickle.abort();

    // Only the event sent whole gets through.
    let reply = app.send(event("conn-b-whole", "T")).await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.text());
    wait_until("the whole event delivered", WAIT, || sink.count() >= 1).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let ids: Vec<String> = sink
        .received()
        .iter()
        .map(|r| r.header("ce-id").unwrap_or_default().to_owned())
        .collect();
    assert_eq!(ids, ["conn-b-whole"]);
}

#[tokio::test]
async fn the_admin_server_closes_half_header_clients_too() {
    let app = TestApp::start(
        "ingress: { header_timeout: 1s }\nsinks: { conn-d: { log: {} } }\nroutes: [{ name: conn-d, to: [conn-d] }]\n",
    )
    .await;
    let opened = Instant::now();
    let clients = silent_clients(app.running.admin_addr(), 10).await;
    assert_eq!(app.admin_get("/healthz", None).await.status, StatusCode::OK);
    assert_all_closed(clients, opened, Duration::from_millis(900)).await;
}

#[tokio::test]
async fn shutdown_is_not_held_by_a_client_that_never_finishes_its_headers() {
    let app = TestApp::start(
        "shutdown_grace: 500ms\ningress: { header_timeout: 60s }\nsinks: { conn-s: { log: {} } }\nroutes: [{ name: conn-s, to: [conn-s] }]\n",
    )
    .await;
    let clients = silent_clients(app.running.local_addr(), 4).await;
    let stop = tokio::time::timeout(Duration::from_secs(5), app.running.stop()).await;
    assert!(stop.is_ok(), "shutdown waited for the silent clients");
    stop.expect("in time").expect("clean shutdown");
    drop(clients);
}

/// Open descriptors of a process.
fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("read /proc/<pid>/fd")
        .count()
}

/// The descriptor count once it has held still for half a second: the start-up probe's
/// connection has closed and the background threads (the file watcher) have opened theirs.
async fn settled_fds(pid: u32) -> usize {
    let deadline = Instant::now() + WAIT;
    let (mut last, mut since) = (open_fds(pid), Instant::now());
    while since.elapsed() < Duration::from_millis(500) {
        assert!(Instant::now() < deadline, "descriptor count never settled");
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = open_fds(pid);
        if now != last {
            (last, since) = (now, Instant::now());
        }
    }
    last
}

#[tokio::test]
async fn past_max_connections_clients_wait_in_the_backlog_and_are_served_when_slots_free() {
    const CAP: usize = 4;
    const EXTRA: usize = 6;
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let config = dir.path().join("routes.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: 127.0.0.1:{port}\nadmin_listen: 127.0.0.1:0\nspool: {{ backend: memory }}\n\
             ingress: {{ max_connections: {CAP}, header_timeout: 30s }}\n\
             sinks: {{ out: {{ log: {{}} }} }}\nroutes: [{{ name: all, to: [out] }}]\n"
        ),
    )
    .expect("write config");
    let daemon = Daemon::start(&config, port).await;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let baseline = settled_fds(daemon.pid()).await;

    let held = silent_clients(addr, CAP).await;
    wait_until("the held connections accepted", WAIT, || {
        open_fds(daemon.pid()) == baseline + CAP
    })
    .await;

    let body = event("conn-c", "T").to_string();
    let request = head(body.len(), "close") + &body;
    let mut waiting = Vec::with_capacity(EXTRA);
    for _ in 0..EXTRA {
        let mut stream = TcpStream::connect(addr).await.expect("connect (backlog)");
        stream.write_all(request.as_bytes()).await.expect("write");
        waiting.push(stream);
    }
    // Nothing answers them while the cap is held, and they cost the daemon no descriptor.
    let mut buf = [0u8; 64];
    for stream in &mut waiting {
        let read = tokio::time::timeout(Duration::from_millis(100), stream.read(&mut buf)).await;
        assert!(read.is_err(), "a connection past the cap was served");
    }
    for _ in 0..10 {
        assert_eq!(open_fds(daemon.pid()), baseline + CAP);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    drop(held);
    let served = tokio::spawn(async move {
        let mut answers = Vec::new();
        for mut stream in waiting {
            answers.push(read_until_closed(&mut stream, WAIT).await);
        }
        answers
    });
    let mut most = 0;
    while !served.is_finished() {
        most = most.max(open_fds(daemon.pid()));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for answer in served.await.expect("readers") {
        let text = String::from_utf8_lossy(&answer);
        assert!(text.starts_with("HTTP/1.1 202"), "{text}");
    }
    assert!(
        most <= baseline + CAP,
        "{most} descriptors open, cap {CAP} over {baseline}"
    );
}

#[tokio::test]
async fn a_reload_applies_new_timeouts_to_new_connections() {
    let config = |timeout: &str| {
        format!("ingress: {{ header_timeout: {timeout} }}\nsinks: {{ conn-r: {{ log: {{}} }} }}\nroutes: [{{ name: conn-r, to: [conn-r] }}]\n")
    };
    let app = TestApp::start_file(&config("60s"), false).await;
    let addr = app.running.local_addr();
    let before = silent_clients(addr, 2).await;

    app.rewrite(&config("1s"));
    let trigger = app.running.reload_trigger().expect("reloadable");
    trigger.reload("test").await.expect("reloaded");
    let opened = Instant::now();
    let after = silent_clients(addr, 2).await;
    assert_all_closed(after, opened, Duration::from_millis(900)).await;

    // Connections opened before the reload keep the timeout they started with.
    let mut buf = [0u8; 16];
    for mut client in before {
        let read = tokio::time::timeout(Duration::from_millis(200), client.read(&mut buf)).await;
        assert!(
            read.is_err(),
            "a connection from before the reload was closed"
        );
    }
}

#[tokio::test]
async fn a_client_that_never_reads_its_answers_is_closed_after_the_body_timeout() {
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let config = dir.path().join("routes.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: 127.0.0.1:{port}\nadmin_listen: 127.0.0.1:0\nspool: {{ backend: memory }}\n\
             ingress: {{ body_timeout: 1s, header_timeout: 60s }}\n\
             sinks: {{ out: {{ log: {{}} }} }}\nroutes: [{{ name: all, to: [out] }}]\n"
        ),
    )
    .expect("write config");
    let daemon = Daemon::start(&config, port).await;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let baseline = settled_fds(daemon.pid()).await;

    // Pipelined requests whose answers are never read: once the socket buffers are full the
    // daemon cannot write, so it stops reading too; neither header timeout applies then.
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    let stream = socket.connect(addr).await.expect("connect");
    let (_reader, mut writer) = stream.into_split();
    let requests = "GET /no-such-path HTTP/1.1\r\nHost: x\r\n\r\n".repeat(1000);
    let flood = tokio::spawn(async move {
        // Ends when the daemon closes the connection (or after far more than it buffers).
        for _ in 0..2_000 {
            if writer.write_all(requests.as_bytes()).await.is_err() {
                return;
            }
        }
    });
    wait_until("the flooding connection accepted", WAIT, || {
        open_fds(daemon.pid()) > baseline
    })
    .await;
    // A client that does read is still served meanwhile.
    let body = event("conn-w", "T").to_string();
    let mut other = TcpStream::connect(addr).await.expect("connect");
    other
        .write_all((head(body.len(), "close") + &body).as_bytes())
        .await
        .expect("write");
    let answer = read_until_closed(&mut other, WAIT).await;
    assert!(
        answer.starts_with(b"HTTP/1.1 202"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    wait_until(
        "the connection that never reads closed",
        Duration::from_secs(20),
        || open_fds(daemon.pid()) <= baseline,
    )
    .await;
    flood.abort();
}
