//! The compiled daemon against hostile clients: every class of bad input a public address
//! sees, sent as raw bytes over loopback. For each: the right status with a message that
//! says what is wrong, no panic, other clients keep being served, and nothing accepted is
//! lost (every event answered 2xx reaches the `file` sink, one parseable line each).
//!
//! The daemon is the binary `cargo test` built (debug assertions and overflow checks on), or
//! the one `SWITCHYARD_TEST_BIN` names: `.ci/run` runs this suite again on the release build.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::support::process::{free_port, BIN};
use crate::support::wait_until;

/// Bearer token ingress requires.
const TOKEN: &str = "hostile-suite-token";
/// Bearer token the admin API requires.
const ADMIN_TOKEN: &str = "hostile-suite-admin";
/// Longest any one answer may take.
const ANSWER_LIMIT: Duration = Duration::from_secs(10);

/// The daemon under attack: a child process whose log goes to a file.
struct Target {
    child: Child,
    dir: tempfile::TempDir,
    port: u16,
    admin_port: u16,
    /// Ids of the events answered 2xx.
    accepted: BTreeSet<String>,
}

impl Target {
    async fn start() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let (port, admin_port) = (free_port(), free_port());
        let yaml = format!(
            r#"
listen: 127.0.0.1:{port}
admin_listen: 127.0.0.1:{admin_port}
admin: {{ token: {ADMIN_TOKEN} }}
spool: {{ path: "{dir}/spool" }}
ingress: {{ auth: [{{ bearer: {TOKEN} }}], header_timeout: 2s, body_timeout: 2s }}
sinks:
  archive: {{ file: {{ path: "{dir}/events.jsonl" }} }}
  console: {{ log: {{ level: debug }} }}
routes:
  - {{ name: all, to: [archive, console] }}
  - name: by-data
    match: {{ advanced: [{{ key: data.order.total, op: NumberGreaterThan, value: 100 }}] }}
    to: [console]
"#,
            dir = dir.path().display()
        );
        let config = dir.path().join("routes.yaml");
        std::fs::write(&config, yaml).expect("write config");
        let log = std::fs::File::create(dir.path().join("daemon.log")).expect("log file");
        let bin = std::env::var("SWITCHYARD_TEST_BIN").unwrap_or_else(|_| BIN.to_owned());
        let child = Command::new(bin)
            .args(["serve", "--no-watch", "--config"])
            .arg(&config)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn daemon");
        let mut target = Self {
            child,
            dir,
            port,
            admin_port,
            accepted: BTreeSet::new(),
        };
        let addr = ("127.0.0.1", port);
        for _ in 0..400 {
            if std::net::TcpStream::connect(addr).is_ok() {
                return target;
            }
            if let Some(status) = target.child.try_wait().expect("wait") {
                panic!("daemon exited during start-up: {status}\n{}", target.log());
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!(
            "daemon did not listen on {port} within 10 s\n{}",
            target.log()
        );
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default()
    }

    fn events_file(&self) -> PathBuf {
        self.dir.path().join("events.jsonl")
    }

    /// Sends `head` (request line and headers, without the blank line) and `body`.
    async fn raw(&self, head: &str, body: &[u8]) -> Answer {
        raw(self.port, head, body).await
    }

    /// A POST to `path` with the ingress credential, `headers` and `body`.
    async fn post(&self, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Answer {
        let mut head = format!(
            "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\n\
             Content-Length: {}\r\n",
            body.len()
        );
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        self.raw(&head, body).await
    }

    /// A structured-mode event; records its id when it is accepted.
    async fn structured(&mut self, event: &str) -> Answer {
        let answer = self
            .post(
                "/events",
                &[("Content-Type", "application/cloudevents+json")],
                event.as_bytes(),
            )
            .await;
        self.note(&answer, event.as_bytes());
        answer
    }

    /// Records the ids of a 2xx answer's event (one structured event or an array of them).
    fn note(&mut self, answer: &Answer, body: &[u8]) {
        if !answer.is_success() {
            return;
        }
        let ids = match serde_json::from_slice::<IdOnly>(body) {
            Ok(one) => vec![one],
            Err(_) => serde_json::from_slice::<Vec<IdOnly>>(body)
                .unwrap_or_else(|e| panic!("accepted a body that is not JSON ({e}): {answer:?}")),
        };
        self.accepted.extend(ids.into_iter().map(|one| one.id));
    }

    /// A well-formed event is still accepted: the daemon keeps serving others.
    async fn still_serves(&mut self, n: usize) {
        let id = format!("good-{n}");
        let answer = self
            .structured(&format!(
                r#"{{"specversion":"1.0","id":"{id}","source":"/s","type":"T"}}"#
            ))
            .await;
        assert!(
            answer.is_success(),
            "a good event after bad ones: {answer:?}"
        );
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        let _killed = self.child.kill();
        let _reaped = self.child.wait();
    }
}

/// An event's id, every other member skipped unparsed (so data of any depth reads).
#[derive(serde::Deserialize)]
struct IdOnly {
    id: String,
}

/// What came back on a connection.
#[derive(Debug)]
struct Answer {
    /// The status code, or 0 when the server closed without answering.
    status: u16,
    /// The body (after the blank line), as text.
    body: String,
}

impl Answer {
    fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// Asserts `status` and that the body says something containing `says`.
    #[track_caller]
    fn expect(&self, status: u16, says: &str) {
        assert_eq!(self.status, status, "{self:?}");
        assert!(
            self.body.to_lowercase().contains(&says.to_lowercase()),
            "answer {status} should say {says:?}: {self:?}"
        );
    }
}

/// Sends one request with `Connection: close` and reads the whole answer.
async fn raw(port: u16, head: &str, body: &[u8]) -> Answer {
    let exchange = async {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await?;
        let mut request = head.as_bytes().to_vec();
        request.extend_from_slice(b"Connection: close\r\n\r\n");
        request.extend_from_slice(body);
        // The server may answer (413, 401) and close before the body is all sent.
        let _sent = stream.write_all(&request).await;
        let mut answer = Vec::new();
        let _read = stream.read_to_end(&mut answer).await;
        Ok::<_, std::io::Error>(answer)
    };
    let answer = tokio::time::timeout(ANSWER_LIMIT, exchange)
        .await
        .unwrap_or_else(|_| panic!("no answer within {ANSWER_LIMIT:?} to {head:?}"))
        .unwrap_or_else(|e| panic!("cannot reach the daemon: {e}"));
    parse(&answer)
}

fn parse(answer: &[u8]) -> Answer {
    let text = String::from_utf8_lossy(answer);
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    Answer { status, body }
}

fn binary_head(id: &str, extra: &str, length: usize) -> String {
    format!(
        "POST /events HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\n\
         ce-specversion: 1.0\r\nce-id: {id}\r\nce-source: /s\r\nce-type: T\r\n\
         Content-Type: application/json\r\nContent-Length: {length}\r\n{extra}"
    )
}

/// Every line of the `file` sink's output parses as JSON; returns the ids it holds.
fn archived_ids(path: &Path) -> BTreeSet<String> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .map(|line| {
            let one: IdOnly = serde_json::from_str(line).unwrap_or_else(|e| {
                let start: String = line.chars().take(200).collect();
                panic!("an archived line is not a JSON event ({e}): {start}")
            });
            one.id
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_input_gets_a_clear_answer_and_loses_nothing_accepted() {
    let mut t = Target::start().await;
    let mut round = 0;
    let mut next = || {
        round += 1;
        round
    };

    // Oversize by header: refused before the body is read.
    let head = binary_head("big-1", "", 50 << 20);
    t.raw(&head, b"").await.expect(413, "limit");
    // Oversize by stream: a chunked body that never declares its size.
    let chunk = vec![b'x'; 64 << 10];
    let mut body = Vec::new();
    for _ in 0..20 {
        body.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        body.extend_from_slice(&chunk);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(b"0\r\n\r\n");
    let head = format!(
        "POST /events HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\n\
         ce-specversion: 1.0\r\nce-id: big-2\r\nce-source: /s\r\nce-type: T\r\n\
         Transfer-Encoding: chunked\r\n"
    );
    t.raw(&head, &body).await.expect(413, "limit");
    t.still_serves(next()).await;

    // Malformed percent-encoding and bad UTF-8 in binary-mode attributes.
    for subject in ["%ZZ", "%E2%82", "%", "%C0%AF", "abc%0"] {
        let head = binary_head("pct", &format!("ce-subject: {subject}\r\n"), 2);
        let answer = t.raw(&head, b"{}").await;
        answer.expect(400, "subject");
    }
    t.still_serves(next()).await;

    // Control characters in attributes: raw in a header (the HTTP parser refuses the
    // request), percent-encoded in a header, and escaped in structured JSON.
    let head = binary_head("ctl\x01raw", "", 2);
    let answer = t.raw(&head, b"{}").await;
    assert_eq!(
        answer.status, 400,
        "raw control byte in a header: {answer:?}"
    );
    for (id, encoded) in [("nul", "a%00b"), ("newline", "a%0Ab"), ("esc", "%1B[31m")] {
        let head = binary_head(encoded, "", 2);
        let answer = t.raw(&head, b"{}").await;
        answer.expect(400, "id");
        let json = format!(
            r#"{{"specversion":"1.0","id":"{}","source":"/s","type":"T"}}"#,
            encoded
                .replace("%00", "\\u0000")
                .replace("%0A", "\\n")
                .replace("%1B", "\\u001b")
        );
        let answer = t.structured(&json).await;
        assert_eq!(
            answer.status, 400,
            "control character in id ({id}): {answer:?}"
        );
    }
    t.still_serves(next()).await;

    // Megabyte values: one attribute over the event limit, and one header over the parser's.
    let subject = "s".repeat(1100 << 10);
    let json = format!(
        r#"{{"specversion":"1.0","id":"mb-1","source":"/s","type":"T","subject":"{subject}"}}"#
    );
    t.structured(&json).await.expect(413, "limit");
    let head = binary_head(
        "mb-2",
        &format!("ce-subject: {}\r\n", "s".repeat(1 << 20)),
        2,
    );
    let answer = t.raw(&head, b"{}").await;
    assert!(
        matches!(answer.status, 431 | 413 | 400 | 0),
        "a megabyte header: {answer:?}"
    );
    t.still_serves(next()).await;

    // Deeply nested data, valid JSON inside the size limit: carried as it came, never parsed
    // without a depth limit. Structured (its data kept unparsed), and binary (parsed by the
    // route that filters on `data.order.total`).
    let deep = format!("{}1{}", "[".repeat(100_000), "]".repeat(100_000));
    let json =
        format!(r#"{{"specversion":"1.0","id":"deep-1","source":"/s","type":"T","data":{deep}}}"#);
    let answer = t.structured(&json).await;
    assert!(
        answer.is_success() || answer.status == 400,
        "deeply nested structured data: {answer:?}"
    );
    let nested_order = format!(
        r#"{{"order":{}{{"total":1}}{}}}"#,
        "{\"a\":".repeat(50_000),
        "}".repeat(50_000)
    );
    let head = binary_head("deep-2", "", nested_order.len());
    let answer = t.raw(&head, nested_order.as_bytes()).await;
    assert!(
        answer.is_success() || answer.status == 400,
        "deeply nested binary data: {answer:?}"
    );
    if answer.is_success() {
        t.accepted.insert("deep-2".to_owned());
    }
    t.still_serves(next()).await;

    // Duplicate keys and data with data_base64.
    let answer = t
        .structured(r#"{"specversion":"1.0","id":"dup-1","id":"dup-2","source":"/s","type":"T"}"#)
        .await;
    answer.expect(400, "id");
    let answer = t
        .structured(
            r#"{"specversion":"1.0","id":"both","source":"/s","type":"T","data":1,"data_base64":"AQ=="}"#,
        )
        .await;
    answer.expect(400, "data_base64");
    t.still_serves(next()).await;

    // A huge number of extensions, inside the size limit: answered promptly either way.
    let extensions: String = (0..20_000).map(|i| format!(r#","x{i}":"v""#)).collect();
    let json =
        format!(r#"{{"specversion":"1.0","id":"many-ext","source":"/s","type":"T"{extensions}}}"#);
    let answer = t.structured(&json).await;
    assert!(
        answer.is_success() || matches!(answer.status, 400 | 413),
        "20,000 extensions: {answer:?}"
    );
    t.still_serves(next()).await;

    // Event Grid bodies that are not arrays of events.
    for body in ["{}", "\"events\"", "[1, 2]", "[{}]", "null", "[", ""] {
        let answer = t
            .post(
                "/api/events",
                &[("Content-Type", "application/json")],
                body.as_bytes(),
            )
            .await;
        assert_eq!(answer.status, 400, "Event Grid body {body:?}: {answer:?}");
        assert!(
            !answer.body.is_empty(),
            "Event Grid body {body:?}: no message"
        );
    }
    t.still_serves(next()).await;

    // Credential edge cases: each is 401 with a message, never a 5xx or a pass.
    let good = r#"{"specversion":"1.0","id":"cred","source":"/s","type":"T"}"#;
    let long = format!("Bearer {}", "t".repeat(64 << 10));
    let wrong_case = format!("bearer {}", TOKEN.to_uppercase());
    let prefix = format!("Bearer {}", &TOKEN[..TOKEN.len() - 1]);
    let longer = format!("Bearer {TOKEN}x");
    for authorization in [
        None,
        Some("Bearer"),
        Some("Bearer "),
        Some("Basic aGk6dGhlcmU="),
        Some(long.as_str()),
        Some(wrong_case.as_str()),
        Some(prefix.as_str()),
        Some(longer.as_str()),
    ] {
        let mut head = format!(
            "POST /events HTTP/1.1\r\nHost: 127.0.0.1\r\n\
             Content-Type: application/cloudevents+json\r\nContent-Length: {}\r\n",
            good.len()
        );
        if let Some(value) = authorization {
            head.push_str(&format!("Authorization: {value}\r\n"));
        }
        let answer = t.raw(&head, good.as_bytes()).await;
        let shown: String = authorization.unwrap_or("none").chars().take(40).collect();
        assert!(
            matches!(answer.status, 401 | 431),
            "credential {shown:?}: {answer:?}"
        );
        if answer.status == 401 {
            assert!(
                answer.body.contains("credential"),
                "credential {shown:?}: {answer:?}"
            );
        }
    }
    t.still_serves(next()).await;

    // Admin routes without the token: refused with a message; probes stay open.
    for (method, path) in [
        ("GET", "/api/v1/dead-letters"),
        ("POST", "/api/v1/reload"),
        ("GET", "/api/v1/sinks"),
        ("DELETE", "/api/v1/dead-letters"),
    ] {
        let head = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n");
        let answer = raw(t.admin_port, &head, b"").await;
        assert_eq!(
            answer.status, 401,
            "{method} {path} without a token: {answer:?}"
        );
        assert!(!answer.body.is_empty(), "{method} {path}: no message");
    }
    let head = "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n";
    assert_eq!(raw(t.admin_port, head, b"").await.status, 200, "probe");

    // Malformed JSON, truncated bodies, invalid UTF-8, missing required attributes.
    for body in [
        &b"{"[..],
        b"{\"specversion\":\"1.0\",\"id\":\"x\"",
        b"\xff\xfe{}",
        b"{\"specversion\":\"1.0\",\"source\":\"/s\",\"type\":\"T\"}",
        b"{\"specversion\":\"0.1\",\"id\":\"v\",\"source\":\"/s\",\"type\":\"T\"}",
        b"[]",
    ] {
        let answer = t
            .post(
                "/events",
                &[("Content-Type", "application/cloudevents+json")],
                body,
            )
            .await;
        assert_eq!(
            answer.status,
            400,
            "body {:?}: {answer:?}",
            String::from_utf8_lossy(body)
        );
        assert!(!answer.body.is_empty(), "no message: {answer:?}");
    }
    t.still_serves(next()).await;

    // Data that would spread over several lines if written as received.
    let pretty = "{\n  \"order\": {\"total\": 150},\n{\"forged\":1}\n  \"note\": \"a\\nb\"\n}";
    let head = binary_head("pretty-1", "", pretty.len());
    let answer = t.raw(&head, pretty.as_bytes()).await;
    assert!(answer.is_success() || answer.status == 400, "{answer:?}");
    if answer.is_success() {
        t.accepted.insert("pretty-1".to_owned());
    }
    let pretty = "{\n  \"order\": {\"total\": 150},\n  \"note\": \"a\\nb\"\n}";
    let json = format!(
        r#"{{"specversion":"1.0","id":"pretty-2","source":"/s","type":"T","data":{pretty}}}"#
    );
    assert!(t.structured(&json).await.is_success(), "pretty structured");
    let bytes = b"\x00\n{\"forged\":1}\n\xff";
    let head = binary_head("bytes-1", "", bytes.len())
        .replace("application/json", "application/octet-stream");
    assert!(
        t.raw(&head, bytes).await.is_success(),
        "binary data with newlines"
    );
    t.accepted.insert("bytes-1".to_owned());

    // Slow and idle clients: silent, half-sent headers, a stalled body. They are cut off
    // after the configured 2 s while everyone else is served.
    let mut slow = Vec::new();
    for i in 0..50 {
        let mut stream = TcpStream::connect(("127.0.0.1", t.port))
            .await
            .expect("connect");
        if i % 2 == 0 {
            let partial = format!("POST /events HTTP/1.1\r\nHost: x\r\nce-id: slow-{i}\r\n");
            stream
                .write_all(partial.as_bytes())
                .await
                .expect("partial headers");
        }
        slow.push(stream);
    }
    let stalled_head = binary_head("stalled", "Connection: close\r\n", 100);
    let mut stalled = TcpStream::connect(("127.0.0.1", t.port))
        .await
        .expect("connect");
    stalled
        .write_all(format!("{stalled_head}\r\n{{\"a\":").as_bytes())
        .await
        .expect("stalled body");
    t.still_serves(next()).await;
    for mut stream in slow {
        let mut buf = Vec::new();
        let closed =
            tokio::time::timeout(Duration::from_secs(8), stream.read_to_end(&mut buf)).await;
        assert!(
            closed.is_ok(),
            "a silent or half-sent client was not closed"
        );
    }
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(8), stalled.read_to_end(&mut answer))
        .await
        .expect("a stalled body is cut off")
        .expect("read");
    parse(&answer).expect(408, "");
    t.still_serves(next()).await;

    // Nothing accepted is lost: every accepted id is archived, one JSON line each.
    let file = t.events_file();
    let expected = t.accepted.clone();
    wait_until(
        "every accepted event archived",
        Duration::from_secs(20),
        || archived_ids(&file).is_superset(&expected),
    )
    .await;
    let log = t.log();
    assert!(!log.contains("panicked"), "the daemon panicked:\n{log}");
    assert!(
        t.child.try_wait().expect("wait").is_none(),
        "the daemon is still running"
    );
}
