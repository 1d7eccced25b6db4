//! Sources: providers' webhooks in at `POST /hooks/<name>`, verified over the raw body and
//! turned into CloudEvents that are routed, stored and delivered like any other.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hyper::StatusCode;
use ring::hmac;

use crate::support::client::Reply;
use crate::support::{wait_until, TestApp, TestSink};
use switchyard::telemetry::Counters;

const WAIT: Duration = Duration::from_secs(10);
const GITHUB_SECRET: &str = "It's a Secret to Everybody";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs()
}

fn hex_hmac(secret: &str, message: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    hmac::sign(&key, message)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

const PUSH: &str = r#"{"ref":"refs/heads/main","repository":{"full_name":"octo/hello"}}"#;

async fn github_push(app: &TestApp, delivery: &str, body: &str, signed_over: &str) -> Reply {
    github_push_signed(app, GITHUB_SECRET, delivery, body, signed_over).await
}

async fn github_push_signed(
    app: &TestApp,
    secret: &str,
    delivery: &str,
    body: &str,
    signed_over: &str,
) -> Reply {
    let signature = format!("sha256={}", hex_hmac(secret, signed_over.as_bytes()));
    let headers = [
        ("content-type", "application/json"),
        ("x-github-event", "push"),
        ("x-github-delivery", delivery),
        ("x-hub-signature-256", signature.as_str()),
    ];
    app.post("/hooks/github", &headers, body.to_owned()).await
}

fn github_app(sink: &TestSink, ingress: &str) -> String {
    format!(
        r#"
{ingress}
sources:
  github: {{ preset: github, secret: "{GITHUB_SECRET}" }}
sinks:
  hook: {{ http: {{ url: "{}" }}, concurrency: 1 }}
routes: [{{ name: pushes, match: {{ types: [com.github.push] }}, to: [hook] }}]
"#,
        sink.url()
    )
}

fn message(reply: &Reply) -> String {
    reply.json()["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn a_github_source_routes_a_signed_push_and_refuses_a_tampered_one() {
    let sink = TestSink::start().await;
    let app = TestApp::start(&github_app(&sink, "")).await;
    let delivery = "72d3162e-cc78-11e3-81ab-4c9367dc0958";

    let reply = github_push(&app, delivery, PUSH, PUSH).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    wait_until("the push delivered", WAIT, || sink.count() == 1).await;
    let got = &sink.received()[0];
    assert_eq!(got.header("ce-type"), Some("com.github.push"));
    assert_eq!(got.header("ce-id"), Some(delivery));
    assert_eq!(got.header("ce-source"), Some("https://github.com"));
    assert_eq!(got.header("ce-subject"), Some("octo/hello"));
    assert_eq!(got.header("content-type"), Some("application/json"));
    assert_eq!(got.body, PUSH.as_bytes(), "data is the raw body");

    let tampered = PUSH.replace("main", "evil");
    let reply = github_push(&app, "another-delivery", &tampered, PUSH).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{}", reply.text());
    assert_eq!(message(&reply), "signature mismatch");
    let unsigned = app
        .post("/hooks/github", &[("x-github-event", "push")], PUSH)
        .await;
    assert_eq!(unsigned.status, StatusCode::UNAUTHORIZED);
    assert_eq!(message(&unsigned), "missing X-Hub-Signature-256 header");
    let nowhere = github_push_to(&app, "/hooks/gitlab").await;
    assert_eq!(nowhere.status, StatusCode::NOT_FOUND);

    // Refused requests store nothing: only the first push was ever received.
    let counters = app.running.counters();
    assert_eq!(Counters::get(&counters.events_received), 1);
    assert_eq!(sink.count(), 1);
    // Counted like every ingress request (the recorder is shared by the whole test process,
    // and only sources count in this series, so at least this test's requests are there).
    let metrics = app.admin_get("/metrics", None).await.text();
    for (outcome, least) in [("accepted", 1.0), ("rejected", 3.0)] {
        let series =
            format!("switchyard_events_received_total{{format=\"source\",outcome=\"{outcome}\"}}");
        let value: f64 = metrics
            .lines()
            .find_map(|l| l.strip_prefix(&series)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {series} in\n{metrics}"));
        assert!(value >= least, "{series} {value}");
    }
}

async fn github_push_to(app: &TestApp, path: &str) -> Reply {
    let signature = format!("sha256={}", hex_hmac(GITHUB_SECRET, PUSH.as_bytes()));
    let headers = [("x-hub-signature-256", signature.as_str())];
    app.post(path, &headers, PUSH).await
}

#[tokio::test]
async fn a_redelivery_within_the_dedup_window_is_acknowledged_and_dropped() {
    let sink = TestSink::start().await;
    let app = TestApp::start(&github_app(&sink, "ingress: { dedup_window: 10m }")).await;
    for _ in 0..2 {
        let reply = github_push(&app, "delivery-1", PUSH, PUSH).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    }
    let marker = github_push(&app, "marker", PUSH, PUSH).await;
    assert_eq!(marker.status, StatusCode::OK);
    // One lane, one delivery at a time: the marker comes after anything stored before it.
    wait_until("the marker delivered", WAIT, || {
        sink.received()
            .iter()
            .any(|r| r.header("ce-id") == Some("marker"))
    })
    .await;
    let ids: Vec<String> = sink
        .received()
        .iter()
        .filter_map(|r| r.header("ce-id").map(str::to_owned))
        .collect();
    assert_eq!(ids, ["delivery-1", "marker"]);
}

#[tokio::test]
async fn a_reload_replaces_a_sources_secret() {
    let sink = TestSink::start().await;
    let app = TestApp::start_file(&github_app(&sink, ""), false).await;
    app.rewrite(&github_app(&sink, "").replace(GITHUB_SECRET, "the rotated secret"));
    let url = format!("{}/api/v1/reload", app.admin);
    let reply = crate::support::request(hyper::Method::POST, &url, &[], "").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());

    let old = github_push(&app, "d-old", PUSH, PUSH).await;
    assert_eq!(old.status, StatusCode::UNAUTHORIZED, "{}", old.text());
    let new = github_push_signed(&app, "the rotated secret", "d-new", PUSH, PUSH).await;
    assert_eq!(new.status, StatusCode::OK, "{}", new.text());
    wait_until("the push delivered", WAIT, || sink.count() == 1).await;
    assert_eq!(sink.received()[0].header("ce-id"), Some("d-new"));
}

#[tokio::test]
async fn oversize_bodies_are_refused_with_413() {
    let sink = TestSink::start().await;
    let app = TestApp::start(&github_app(&sink, "ingress: { max_request_bytes: 1KiB }")).await;
    let big = format!(r#"{{"pad":"{}"}}"#, "x".repeat(2048));
    let reply = github_push(&app, "big", &big, &big).await;
    assert_eq!(
        reply.status,
        StatusCode::PAYLOAD_TOO_LARGE,
        "{}",
        reply.text()
    );
}

#[tokio::test]
async fn a_stalled_body_is_answered_408() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    let sink = TestSink::start().await;
    let app = TestApp::start(&github_app(
        &sink,
        "ingress: { body_timeout: 300ms, header_timeout: 30s }",
    ))
    .await;
    let signature = format!("sha256={}", hex_hmac(GITHUB_SECRET, PUSH.as_bytes()));
    let head = format!(
        "POST /hooks/github HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         X-GitHub-Event: push\r\nX-GitHub-Delivery: stalled\r\nX-Hub-Signature-256: {signature}\r\n\
         Content-Length: {}\r\n\r\n",
        PUSH.len()
    );
    let mut stream = tokio::net::TcpStream::connect(app.running.local_addr())
        .await
        .expect("connect");
    stream
        .write_all(format!("{head}{}", &PUSH[..10]).as_bytes())
        .await
        .expect("write");
    let mut answer = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut answer))
        .await
        .expect("the connection is closed")
        .expect("read");
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert_eq!(Counters::get(&app.running.counters().events_received), 0);
}

#[tokio::test]
async fn slack_url_verification_is_answered_with_its_challenge() {
    let secret = "8f742231b10e8888abcd99yyyzzz85a5";
    let sink = TestSink::start().await;
    let app = TestApp::start(&format!(
        r#"
sources:
  slack: {{ preset: slack, secret: "{secret}" }}
sinks:
  hook: {{ http: {{ url: "{}" }} }}
routes: [{{ name: all, to: [hook] }}]
"#,
        sink.url()
    ))
    .await;
    let body = r#"{"token":"Jhj5dZrVaK7ZwHHjRyZWjbDl","challenge":"3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P","type":"url_verification"}"#;
    let t = now().to_string();
    let signature = format!(
        "v0={}",
        hex_hmac(secret, format!("v0:{t}:{body}").as_bytes())
    );
    let headers = [
        ("content-type", "application/json"),
        ("x-slack-request-timestamp", t.as_str()),
        ("x-slack-signature", signature.as_str()),
    ];
    let reply = app.post("/hooks/slack", &headers, body).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(
        reply.text(),
        "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"
    );
    let forged = [headers[0], headers[1], ("x-slack-signature", "v0=00")];
    let reply = app.post("/hooks/slack", &forged, body).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{}", reply.text());
    // The challenge is a handshake, not an event.
    assert_eq!(Counters::get(&app.running.counters().events_received), 0);
}

#[tokio::test]
async fn stripe_refuses_an_old_timestamp_and_takes_a_fresh_one() {
    let secret = "whsec_stripe_test";
    let sink = TestSink::start().await;
    let app = TestApp::start(&format!(
        r#"
sources:
  stripe: {{ preset: stripe, secret: "{secret}" }}
sinks:
  hook: {{ http: {{ url: "{}" }} }}
routes: [{{ name: all, to: [hook] }}]
"#,
        sink.url()
    ))
    .await;
    let body = r#"{"id":"evt_1","type":"invoice.paid","data":{"object":{"id":"in_1"}}}"#;
    let post = |t: u64| {
        let app = &app;
        async move {
            let v1 = hex_hmac(secret, format!("{t}.{body}").as_bytes());
            let header = format!("t={t},v1={v1}");
            let headers = [
                ("content-type", "application/json"),
                ("stripe-signature", header.as_str()),
            ];
            app.post("/hooks/stripe", &headers, body).await
        }
    };
    let old = post(now() - 600).await;
    assert_eq!(old.status, StatusCode::UNAUTHORIZED, "{}", old.text());
    assert_eq!(
        message(&old),
        "Stripe-Signature timestamp outside the tolerance of 300 seconds"
    );
    let fresh = post(now()).await;
    assert_eq!(fresh.status, StatusCode::OK, "{}", fresh.text());
    wait_until("the event delivered", WAIT, || sink.count() == 1).await;
    let got = &sink.received()[0];
    assert_eq!(got.header("ce-type"), Some("com.stripe.invoice.paid"));
    assert_eq!(got.header("ce-id"), Some("evt_1"));
    assert_eq!(got.header("ce-subject"), Some("in_1"));
}

#[tokio::test]
async fn standard_webhooks_signed_by_the_official_library_are_accepted() {
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let sink = TestSink::start().await;
    let app = TestApp::start(&format!(
        r#"
sources:
  billing: {{ preset: standard-webhooks, secret: ["whsec_c2VjcmV0LW9mLWFub3RoZXItc2VuZGVyISE=", "{secret}"] }}
sinks:
  hook: {{ http: {{ url: "{}" }} }}
routes: [{{ name: all, to: [hook] }}]
"#,
        sink.url()
    ))
    .await;
    let body = r#"{"type":"invoice.paid","timestamp":"2026-12-06T07:00:00Z","data":{"id":"in_1"}}"#;
    let t = now();
    let signature = standardwebhooks::Webhook::new(secret)
        .unwrap()
        .sign("msg_2KWPBgLlAfxdpx2AI54pPJ85f4W", t as i64, body.as_bytes())
        .unwrap();
    let t = t.to_string();
    let headers = [
        ("content-type", "application/json"),
        ("webhook-id", "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W"),
        ("webhook-timestamp", t.as_str()),
        ("webhook-signature", signature.as_str()),
    ];
    let reply = app.post("/hooks/billing", &headers, body).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    wait_until("the event delivered", WAIT, || sink.count() == 1).await;
    let got = &sink.received()[0];
    assert_eq!(got.header("ce-type"), Some("invoice.paid"));
    assert_eq!(got.header("ce-id"), Some("msg_2KWPBgLlAfxdpx2AI54pPJ85f4W"));
    assert_eq!(got.header("ce-source"), Some("/hooks/billing"));

    let reply = app.post("/hooks/billing", &headers, "{}").await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(message(&reply), "signature mismatch");
}

#[tokio::test]
async fn an_hmac_source_builds_its_event_from_templates() {
    let sink = TestSink::start().await;
    let app = TestApp::start(&format!(
        r#"
sources:
  orders:
    preset: hmac
    hmac: {{ header: X-Signature, prefix: "sha256=", encoding: hex, secret: s3cret }}
    event: {{ type: "com.example.{{header:X-Event-Type}}", source: "https://shop.example", id: "{{json:/id}}", subject: "{{json:/order/number}}" }}
sinks:
  hook: {{ http: {{ url: "{}" }} }}
routes: [{{ name: all, to: [hook] }}]
"#,
        sink.url()
    ))
    .await;
    let body = r#"{"id":"o-77","order":{"number":1042}}"#;
    let signature = format!("sha256={}", hex_hmac("s3cret", body.as_bytes()));
    let signed = |ty: Option<&'static str>| {
        let mut headers = vec![("x-signature", signature.clone())];
        headers.extend(ty.map(|t| ("x-event-type", t.to_owned())));
        headers
    };
    let send = |headers: Vec<(&'static str, String)>| {
        let app = &app;
        async move {
            let pairs: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
            app.post("/hooks/orders", &pairs, body).await
        }
    };
    let untyped = send(signed(None)).await;
    assert_eq!(
        untyped.status,
        StatusCode::BAD_REQUEST,
        "{}",
        untyped.text()
    );
    assert_eq!(
        message(&untyped),
        "cannot build the event's type: header x-event-type is missing"
    );
    let reply = send(signed(Some("order.paid"))).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    wait_until("the event delivered", WAIT, || sink.count() == 1).await;
    let got = &sink.received()[0];
    assert_eq!(got.header("ce-type"), Some("com.example.order.paid"));
    assert_eq!(got.header("ce-id"), Some("o-77"));
    assert_eq!(got.header("ce-subject"), Some("1042"));
}

#[test]
fn check_lists_each_source_without_its_secret() {
    let vars = BTreeMap::new();
    let yaml = "sources: { github: { preset: github, secret: [first-secret, second-secret] } }";
    let config = switchyard::config::load_str(yaml, Path::new("routes.yaml"), &vars).unwrap();
    let summary = config.summary();
    assert!(
        summary.contains("github  POST /hooks/github, preset github, 2 secret(s)"),
        "{summary}"
    );
    assert!(!summary.contains("-secret"), "{summary}");
}

fn config_errors(yaml: &str) -> Vec<String> {
    let vars = BTreeMap::new();
    match switchyard::config::load_str(yaml, Path::new("routes.yaml"), &vars) {
        Err(switchyard::config::ConfigError::Invalid(errors)) => {
            errors.iter().map(ToString::to_string).collect()
        }
        other => panic!("expected an invalid configuration, got {other:?}"),
    }
}

#[test]
fn configuration_errors_name_their_yaml_path() {
    let errors = config_errors(
        r#"
sources:
  a: { preset: gitlab, secret: x }
  b: { preset: github }
  c: { preset: hmac, hmac: { header: X-Sig, secret: k }, event: { type: "t.{header:X", source: "/c" } }
  d: { preset: hmac, hmac: { header: X-Sig, secret: k } }
  e: { preset: stripe, secret: k, colour: blue }
  f: { preset: standard-webhooks, secret: not-whsec }
  "bad name": { preset: github, secret: k }
"#,
    );
    let has = |path: &str, fragment: &str| {
        assert!(
            errors
                .iter()
                .any(|e| e.starts_with(&format!("{path}: ")) && e.contains(fragment)),
            "no error at `{path}` mentioning `{fragment}` in {errors:#?}"
        );
    };
    has("sources.a.preset", "unknown preset `gitlab`");
    has("sources.b.secret", "required");
    has("sources.c.event.type", "bad template: unclosed");
    has("sources.d.event.type", "required for the hmac preset");
    has("sources.e.colour", "unknown key");
    has("sources.f.secret", "whsec_");
    has("sources.bad name", "URL path segment");
    // A secret never appears in a message.
    assert!(
        errors.iter().all(|e| !e.contains("not-whsec")),
        "{errors:#?}"
    );
}
