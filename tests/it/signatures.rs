//! Signatures at both ends: an http sink signing its deliveries (Standard Webhooks, checked
//! with the `standardwebhooks` crate), and ingress verifying signed senders.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hyper::StatusCode;

use crate::support::daemon::event;
use crate::support::{wait_until, Respond, TestApp, TestSink};

const WAIT: Duration = Duration::from_secs(10);
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const NEXT_SECRET: &str = "whsec_c2VjcmV0LW9mLWFub3RoZXItc2VuZGVyISE=";

#[tokio::test]
async fn signed_deliveries_verify_and_keep_their_webhook_id_across_a_retry() {
    let sink = TestSink::start().await;
    sink.script([Respond::status(503)]);
    let app = TestApp::start(&format!(
        r#"
sinks:
  hook:
    http:
      url: "{}"
      format: cloudevents-structured
      sign: {{ standard_webhooks: {{ secrets: ["{SECRET}", "{NEXT_SECRET}"] }} }}
    retry: {{ schedule: [1100ms] }}
routes: [{{ name: all, to: [hook] }}]
"#,
        sink.url()
    ))
    .await;
    assert_eq!(
        app.send(event("w-1", "T")).await.status,
        StatusCode::ACCEPTED
    );
    wait_until("a retry after the 503", WAIT, || sink.count() == 2).await;
    let got = sink.received();
    assert_eq!((got[0].status, got[1].status), (503, 200));
    for request in &got {
        // Both secrets of the rotation sign; a receiver holding either verifies.
        for secret in [SECRET, NEXT_SECRET] {
            standardwebhooks::Webhook::new(secret)
                .unwrap()
                .verify(&request.body, &request.headers)
                .unwrap_or_else(|e| panic!("{secret}: {e:?}"));
        }
        assert_eq!(request.json()["id"], "w-1");
    }
    assert_eq!(got[0].header("webhook-id"), got[1].header("webhook-id"));
    // The retry came over a second later: a new timestamp, so new signatures.
    assert_ne!(
        got[0].header("webhook-timestamp"),
        got[1].header("webhook-timestamp")
    );
    assert_ne!(
        got[0].header("webhook-signature"),
        got[1].header("webhook-signature")
    );
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs()
}

/// Headers of a request signed by the `standardwebhooks` crate.
fn signed(id: &str, timestamp: u64, body: &str) -> Vec<(String, String)> {
    let signature = standardwebhooks::Webhook::new(SECRET)
        .expect("a valid secret")
        .sign(id, timestamp as i64, body.as_bytes())
        .expect("a UTF-8 body");
    vec![
        ("content-type".into(), "application/cloudevents+json".into()),
        ("webhook-id".into(), id.into()),
        ("webhook-timestamp".into(), timestamp.to_string()),
        ("webhook-signature".into(), signature),
    ]
}

#[tokio::test]
async fn ingress_verifies_standard_webhooks_senders() {
    let app = TestApp::start(&format!(
        r#"
ingress:
  auth: [ {{ standard_webhooks: {{ secrets: ["{NEXT_SECRET}", "{SECRET}"] }} }} ]
sinks:
  archive: {{ file: {{ path: "{{dir}}/events.jsonl" }} }}
routes: [{{ name: all, to: [archive] }}]
"#
    ))
    .await;
    let post = |headers: Vec<(String, String)>, body: String| {
        let app = &app;
        async move {
            let headers: Vec<(&str, &str)> = headers
                .iter()
                .map(|(n, v)| (n.as_str(), v.as_str()))
                .collect();
            app.post("/events", &headers, body).await
        }
    };
    let body = event("in-1", "T").to_string();
    let good = signed("msg_in_1", now(), &body);
    let reply = post(good.clone(), body.clone()).await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.text());

    let refused = |reply: crate::support::client::Reply| {
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{}", reply.text());
        reply.json()["error"]["message"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(
        refused(post(good, body.clone()).await),
        "replayed webhook-id"
    );
    let tampered = event("in-2", "T").to_string();
    let for_body = signed("msg_in_2", now(), &body);
    assert_eq!(
        refused(post(for_body, tampered).await),
        "signature mismatch"
    );
    let old = signed("msg_in_3", now() - 6 * 60, &body);
    assert_eq!(
        refused(post(old, body.clone()).await),
        "webhook-timestamp outside the tolerance of 5 minutes"
    );
    let mut unsigned = signed("msg_in_4", now(), &body);
    unsigned.retain(|(n, _)| n != "webhook-signature");
    assert_eq!(
        refused(post(unsigned, body.clone()).await),
        "missing webhook-signature header"
    );

    let counters = app.running.counters();
    wait_until("one delivery", WAIT, || {
        switchyard::telemetry::Counters::get(&counters.deliveries_succeeded) == 1
    })
    .await;
    let lines = std::fs::read_to_string(app.path("events.jsonl")).unwrap();
    assert_eq!(lines.lines().count(), 1, "{lines}");
}

#[tokio::test]
async fn a_sender_that_hangs_up_cannot_replay_its_request() {
    use tokio::io::AsyncWriteExt as _;

    let app = TestApp::start(&format!(
        r#"
ingress:
  auth: [ {{ standard_webhooks: {{ secrets: ["{SECRET}"] }} }} ]
sinks:
  archive: {{ file: {{ path: "{{dir}}/events.jsonl" }} }}
routes: [{{ name: all, to: [archive] }}]
"#
    ))
    .await;
    let body = event("hang-1", "T").to_string();
    let headers = signed("msg_hang_1", now(), &body);
    let mut request = format!(
        "POST /events HTTP/1.1\r\nHost: 127.0.0.1\r\n\
         Content-Type: application/cloudevents+json\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in &headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(&body);
    // Send the whole request and hang up at once, without waiting for the answer.
    let mut stream = tokio::net::TcpStream::connect(app.running.local_addr())
        .await
        .expect("connect");
    stream.write_all(request.as_bytes()).await.expect("send");
    drop(stream);

    let archive = app.path("events.jsonl");
    wait_until("the event stored and delivered", WAIT, || {
        std::fs::read_to_string(&archive).is_ok_and(|t| t.contains("hang-1"))
    })
    .await;
    let pairs: Vec<(&str, &str)> = headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    let replay = app.post("/events", &pairs, body.clone()).await;
    assert_eq!(replay.status, StatusCode::UNAUTHORIZED, "{}", replay.text());
    assert!(replay.text().contains("replayed"), "{}", replay.text());
}
