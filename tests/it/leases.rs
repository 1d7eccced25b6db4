//! No lease outlives the worker that took it: reloads that stop a rate-limited sink's worker
//! while it drains a backlog leave nothing stranded, and deliver every event exactly once.
//! On the `nats` backend, where a worker leases ahead of its permits, `ack_wait` is set far
//! beyond the test's wait, so a lease left to expire instead of given back fails it.

use std::collections::HashMap;
use std::time::Duration;

use hyper::{Method, StatusCode};
use serde_json::json;

use crate::support::nats::{unique, url, Streams};
use crate::support::{request, wait_until, TestApp, TestSink};

const EVENTS: usize = 2_000;
/// Subjects of the ordered route: a stranded lease would block its subject's chain for good.
const SUBJECTS: usize = 40;

/// The `spool:` line: `backend`'s, with `stream` on nats.
fn spool(backend: &str, stream: &str) -> String {
    match backend {
        "nats" => format!(
            r#"{{ backend: nats, nats: {{ url: "{}", stream: {stream}, ack_wait: 120s }} }}"#,
            url()
        ),
        _ => format!(r#"{{ backend: {backend}, path: "{{dir}}/spool" }}"#),
    }
}

fn config(sink: &TestSink, spool: &str, concurrency: u32) -> String {
    format!(
        r#"
spool: {spool}
sinks:
  drain:
    http: {{ url: "{}" }}
    rate_limit: 250/s
    concurrency: {concurrency}
routes: [{{ name: leases, to: [drain], ordering: subject }}]
"#,
        sink.url()
    )
}

fn events() -> Vec<serde_json::Value> {
    (0..EVENTS)
        .map(|i| {
            json!({
                "specversion": "1.0", "id": format!("l-{i}"), "source": "/leases",
                "type": "Leases.Drained", "subject": format!("/chain/{}", i % SUBJECTS),
                "datacontenttype": "application/json", "data": { "n": i }
            })
        })
        .collect()
}

async fn reloads_strand_nothing(backend: &str) {
    let stream = unique("sy-it-leases");
    let _streams = (backend == "nats").then(|| Streams::spool(&stream));
    let spool = spool(backend, &stream);
    let sink = TestSink::start().await;
    let app = TestApp::start_file(&config(&sink, &spool, 4), false).await;
    for chunk in events().chunks(500) {
        app.send_batch(chunk.to_vec()).await;
    }
    // Each reload stops the sink's worker wherever it is (most often waiting for rate tokens
    // with a batch in hand) and starts a new one.
    for round in 0..8u32 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        app.rewrite(&config(&sink, &spool, 2 + round % 3));
        let reply = request(
            Method::POST,
            &format!("{}/api/v1/reload", app.admin),
            &[],
            "",
        )
        .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    }
    assert!(
        app.running.spool_depth("drain") > 0,
        "the reloads happened while the backlog drained"
    );
    wait_until("the spool drains", Duration::from_secs(40), || {
        app.running.spool_depth("drain") == 0
    })
    .await;
    // Nothing else may arrive: every delivery is acked.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let received = sink.received();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for r in &received {
        *seen
            .entry(r.header("ce-id").unwrap_or_default().to_owned())
            .or_default() += 1;
    }
    assert_eq!(seen.len(), EVENTS, "every event delivered");
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "delivered more than once: {twice:?}");
    assert_eq!(received.len(), EVENTS, "one request per event");
}

#[tokio::test]
async fn reloads_while_a_rate_limited_sink_drains_strand_no_lease_embedded() {
    reloads_strand_nothing("embedded").await;
}

#[tokio::test]
async fn reloads_while_a_rate_limited_sink_drains_strand_no_lease_memory() {
    reloads_strand_nothing("memory").await;
}

#[tokio::test]
async fn reloads_while_a_rate_limited_sink_drains_strand_no_lease_nats() {
    reloads_strand_nothing("nats").await;
}
