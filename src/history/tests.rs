//! The history handle: records go through the writer and read back grouped and filtered.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::*;
use crate::config::{HistoryConfig, SpoolBackend, SpoolConfig};
use crate::event::Event;

fn spool() -> SpoolConfig {
    SpoolConfig {
        backend: SpoolBackend::Memory,
        path: ".".into(),
        max_bytes: 1 << 20,
        dead_letter_ttl: None,
        retain_delivered: None,
        nats: None,
    }
}

fn event(id: &str, data: &[u8]) -> Arc<Event> {
    Arc::new(Event {
        specversion: "1.0".into(),
        id: id.into(),
        source: "/src".into(),
        ty: "T".into(),
        datacontenttype: None,
        dataschema: None,
        subject: None,
        time: None,
        extensions: Vec::new(),
        data_version: None,
        data: Some(bytes::Bytes::copy_from_slice(data)),
    })
}

fn attempt(event: &Arc<Event>, sink: &str, n: u32, outcome: AttemptOutcome) -> Attempt {
    Attempt {
        event: event.clone(),
        route: Arc::from("r"),
        sink: Arc::from(sink),
        attempt: n,
        at: SystemTime::now(),
        duration: Some(Duration::from_millis(3)),
        outcome,
        status: (outcome != AttemptOutcome::Delivered).then_some(503),
        detail: (outcome != AttemptOutcome::Delivered).then(|| "Busy: x".repeat(100)),
    }
}

async fn page(history: &History, query: HistoryQuery) -> Page {
    history.events(query).await.expect("history is on")
}

#[tokio::test]
async fn attempts_group_by_event_and_delivery_and_read_back_in_pages() {
    let history = History::open(HistoryConfig::default(), &spool()).expect("open");
    let (a, b) = (event("a", &[b'x'; 5000]), event("b", b"{}"));
    history.record(attempt(&a, "s1", 1, AttemptOutcome::Retrying));
    history.record(attempt(&a, "s2", 1, AttemptOutcome::Delivered));
    history.record(attempt(&a, "s1", 2, AttemptOutcome::Delivered));
    history.record(attempt(&b, "s1", 1, AttemptOutcome::Delivered));
    history.close().await;

    let all = page(
        &history,
        HistoryQuery {
            limit: 10,
            ..Default::default()
        },
    )
    .await;
    let ids: Vec<&str> = all.events.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids, ["b", "a"], "newest first");
    assert_eq!(all.next, None);
    let first = page(
        &history,
        HistoryQuery {
            limit: 1,
            ..Default::default()
        },
    )
    .await;
    let cursor = first.next.expect("a second page");
    let second = page(
        &history,
        HistoryQuery {
            limit: 1,
            cursor: Some(cursor),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(second.events[0].id, "a");
    assert_eq!(second.next, None);
    let retried = HistoryQuery {
        outcome: Some(AttemptOutcome::Retrying),
        limit: 10,
        ..Default::default()
    };
    assert_eq!(page(&history, retried).await.events.len(), 1);

    let shown = history.event(second.events[0].key).await.expect("event a");
    let s1: Vec<_> = shown.deliveries[0]
        .attempts
        .iter()
        .map(|a| (a.attempt, a.outcome))
        .collect();
    assert_eq!(
        s1,
        [
            (1, AttemptOutcome::Retrying),
            (2, AttemptOutcome::Delivered)
        ]
    );
    assert_eq!(shown.deliveries[1].sink, "s2");
    assert_eq!(shown.data_size, 5000);
    assert_eq!(shown.data.as_ref().map(Vec::len), Some(DATA_MAX_BYTES));
    let detail = shown.deliveries[0].attempts[0]
        .detail
        .as_ref()
        .expect("detail");
    assert_eq!(detail.len(), DETAIL_MAX_BYTES);
}

#[tokio::test]
async fn history_off_records_and_answers_nothing() {
    let off = HistoryConfig {
        ttl: Duration::ZERO,
        ..HistoryConfig::default()
    };
    let history = History::open(off, &spool()).expect("open");
    assert!(!history.enabled());
    history.record(attempt(&event("a", b""), "s", 1, AttemptOutcome::Delivered));
    assert!(history.events(HistoryQuery::default()).await.is_none());
}
