//! Bounded state: the duplicate-suppression table shrinks back once its window has passed,
//! dead letters go after `spool.dead_letter_ttl`, and a dead-letter listing ends early at its
//! byte bound with `next`, which the `dead-letter list` command follows.

use std::time::Duration;

use serde_json::{json, Value};

use crate::support::{Respond, TestApp, TestSink};

const WAIT: Duration = Duration::from_secs(15);
const BIN: &str = env!("CARGO_BIN_EXE_switchyard");

/// `switchyard_spool_dedup_entries` as `/metrics` reports it now.
async fn dedup_entries(app: &TestApp) -> u64 {
    let text = app.admin_get("/metrics", None).await.text();
    text.lines()
        .find_map(|line| line.strip_prefix("switchyard_spool_dedup_entries "))
        .and_then(|n| n.trim().parse::<f64>().ok())
        .map_or(0, |n| n as u64)
}

/// `n` events with ids no other call gives, from `first` on.
fn unique_events(prefix: &str, first: usize, n: usize) -> Vec<Value> {
    (first..first + n)
        .map(|i| {
            json!({
                "specversion": "1.0",
                "id": format!("{prefix}-{i}"),
                "source": "/bounded",
                "type": "Bounded.Created",
            })
        })
        .collect()
}

#[tokio::test]
async fn a_dedup_table_of_tens_of_thousands_of_ids_shrinks_back() {
    let sink = TestSink::start().await;
    let app = TestApp::start(&format!(
        r#"
ingress: {{ dedup_window: 1s }}
sinks:
  b-out: {{ http: {{ url: "{}" }}, batch: {{ max_events: 1000 }} }}
routes:
  - {{ name: b-all, match: {{ types: ["Bounded.*"] }}, to: [b-out] }}
"#,
        sink.url()
    ))
    .await;
    const BURSTS: usize = 3;
    const PER_BURST: usize = 10_000;
    const PER_REQUEST: usize = 1000;

    // Three bursts, each 1.5 s after the last: the first burst's window has passed, and the
    // sweep has run, before the third is sent.
    let mut peak = 0;
    for burst in 0..BURSTS {
        if burst > 0 {
            tokio::time::sleep(Duration::from_millis(1500)).await;
        }
        for start in (0..PER_BURST).step_by(PER_REQUEST) {
            let first = burst * PER_BURST + start;
            app.send_batch(unique_events("dd", first, PER_REQUEST))
                .await;
            peak = peak.max(dedup_entries(&app).await);
        }
    }
    assert!(
        peak >= PER_REQUEST as u64,
        "the table held the ids just stored (peak {peak})"
    );
    assert!(
        peak < (BURSTS * PER_BURST) as u64,
        "expired ids were removed while traffic went on (peak {peak})"
    );

    // No traffic now: the table empties all the same.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let left = dedup_entries(&app).await;
        if left == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{left} entries left after the window passed"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Starts a daemon whose one sink answers 400: every delivery is dead-lettered at once.
async fn dead_lettering(sink: &TestSink, spool: &str) -> TestApp {
    sink.set_default(Respond::status(400));
    TestApp::start(&format!(
        r#"
spool: {{ {spool} }}
sinks:
  b-dead: {{ http: {{ url: "{}" }} }}
routes:
  - {{ name: b-dl, match: {{ types: ["Bounded.*"] }}, to: [b-dead] }}
"#,
        sink.url()
    ))
    .await
}

async fn dead_letters(app: &TestApp, query: &str) -> Value {
    let reply = app
        .admin_get(&format!("/api/v1/dead-letters{query}"), None)
        .await;
    assert_eq!(reply.status.as_u16(), 200, "{}", reply.text());
    reply.json()
}

fn listed(page: &Value) -> usize {
    page["dead_letters"].as_array().map_or(0, Vec::len)
}

#[tokio::test]
async fn dead_letters_go_after_their_ttl() {
    let sink = TestSink::start().await;
    let app = dead_lettering(&sink, "dead_letter_ttl: 2s").await;
    app.send_batch(unique_events("ttl", 0, 3)).await;

    let deadline = tokio::time::Instant::now() + WAIT;
    while listed(&dead_letters(&app, "").await) < 3 {
        assert!(tokio::time::Instant::now() < deadline, "not dead-lettered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let left = listed(&dead_letters(&app, "").await);
        if left == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{left} dead letters outlived their TTL"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// An event of about 900 KB, so that four or five fill a listing page's 4 MiB.
fn large_event(i: usize) -> Value {
    json!({
        "specversion": "1.0",
        "id": format!("large-{i}"),
        "source": "/bounded",
        "type": "Bounded.Large",
        "datacontenttype": "text/plain",
        "data": "x".repeat(900_000),
    })
}

#[tokio::test]
async fn a_listing_of_large_dead_letters_ends_early_with_next() {
    const LARGE: usize = 6;
    let sink = TestSink::start().await;
    let app = dead_lettering(&sink, "dead_letter_ttl: 0").await;
    for i in 0..LARGE {
        let reply = app.send(large_event(i)).await;
        assert!(reply.status.is_success(), "{}", reply.text());
    }
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut seen = 0;
    let mut after = String::new();
    // Every record, page by page: none holds them all, each ends with `next`.
    while seen < LARGE {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not all dead-lettered"
        );
        let page = dead_letters(&app, &format!("?limit=100{after}")).await;
        let n = listed(&page);
        if n == 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        assert!(n < LARGE, "one page held {n} records of 900 KB");
        assert!(page.to_string().len() <= 5 << 20, "a page stays a few MiB");
        seen += n;
        if let Some(next) = page["next"].as_u64() {
            after = format!("&after={next}");
        }
    }
    let first = dead_letters(&app, "?limit=100").await;
    assert!(
        listed(&first) < LARGE && first["next"].is_u64(),
        "{}",
        listed(&first)
    );

    // The command follows `next` until it has the records asked for.
    let out = tokio::process::Command::new(BIN)
        .args(["dead-letter", "list", "--limit", "6", "--admin", &app.admin])
        .output()
        .await
        .expect("run the binary");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows = stdout.lines().filter(|l| l.contains("large-")).count();
    assert_eq!(rows, LARGE, "{stdout}");
}
