//! The `nats` sink against a real NATS server (required; see `support::nats_server`), read back by a
//! plain subscriber and from a JetStream stream: structured CloudEvents JSON and `ce-` headers.

use std::time::Duration;

use async_nats::HeaderMap;
use futures_util::StreamExt;
use serde_json::Value;

use crate::support::daemon::event;
use crate::support::nats::{unique, url, Streams};
use crate::support::TestApp;

const WAIT: Duration = Duration::from_secs(10);

async fn start(subject: &str, jetstream: bool) -> TestApp {
    TestApp::start(&format!(
        r#"
sinks:
  bus: {{ nats: {{ url: "{url}", subject: {subject}, jetstream: {jetstream}, timeout: 2s }} }}
routes: [{{ name: all, to: [bus] }}]
"#,
        url = url()
    ))
    .await
}

fn header<'a>(headers: Option<&'a HeaderMap>, name: &str) -> Option<&'a str> {
    headers?.get(name).map(|v| v.as_str())
}

/// The published message is the event as structured JSON, its attributes also as headers.
fn assert_cloudevent(payload: &[u8], headers: Option<&HeaderMap>, id: &str) {
    let body: Value = serde_json::from_slice(payload).expect("JSON body");
    assert_eq!(body["specversion"], "1.0");
    assert_eq!(body["id"], id);
    assert_eq!(body["source"], "/tests");
    assert_eq!(body["type"], "Orders.Created");
    assert_eq!(body["subject"], "/orders/1");
    assert_eq!(body["data"], serde_json::json!({"n": 1}));
    assert_eq!(header(headers, "ce-id"), Some(id));
    assert_eq!(header(headers, "ce-source"), Some("/tests"));
    assert_eq!(header(headers, "ce-type"), Some("Orders.Created"));
    assert_eq!(header(headers, "ce-specversion"), Some("1.0"));
    assert_eq!(header(headers, "ce-subject"), Some("/orders/1"));
    assert_eq!(
        header(headers, "content-type"),
        Some("application/cloudevents+json")
    );
}

#[tokio::test]
async fn core_publish_reaches_a_subscriber() {
    let subject = format!("{}.events", unique("sy-it-core"));
    let client = async_nats::connect(url())
        .await
        .expect("the test NATS server answers");
    let mut subscriber = client.subscribe(subject.clone()).await.expect("subscribe");
    client.flush().await.expect("subscription registered");
    let app = start(&subject, false).await;

    let reply = app.send(event("n-1", "Orders.Created")).await;
    assert!(reply.status.is_success(), "{}", reply.text());
    let message = tokio::time::timeout(WAIT, subscriber.next())
        .await
        .expect("a message within the wait")
        .expect("subscription open");
    assert_eq!(message.subject.as_str(), subject);
    assert_cloudevent(&message.payload, message.headers.as_ref(), "n-1");
    app.running.stop().await.expect("clean shutdown");
}

#[tokio::test]
async fn jetstream_publish_is_stored_in_the_stream() {
    let name = unique("sy-it-js");
    let subject = format!("{name}.events");
    let (_streams, stream) = Streams::create(&name, vec![subject.clone()]).await;
    let app = start(&subject, true).await;

    let reply = app.send(event("n-2", "Orders.Created")).await;
    assert!(reply.status.is_success(), "{}", reply.text());
    let deadline = tokio::time::Instant::now() + WAIT;
    let stored = loop {
        if let Ok(stored) = stream.get_last_raw_message_by_subject(&subject).await {
            break stored;
        }
        assert!(tokio::time::Instant::now() < deadline, "nothing stored");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(stored.sequence, 1, "published once");
    assert_cloudevent(&stored.payload, Some(&stored.headers), "n-2");
    app.running.stop().await.expect("clean shutdown");
}
