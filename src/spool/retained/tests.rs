//! The store of retained events: records read back whole, segments expire and give way to
//! the spool oldest first, a torn tail is cut; replays select by sink, route, time range and
//! filter, and count what became of their deliveries.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;

use super::record::{Decoded, Kept};
use super::store::{cutoff, Store};
use super::*;
use crate::config::Priority;
use crate::event::{Event, ExtensionValue};
use crate::spool::{MemorySpool, NewDelivery};

fn event(id: &str, ty: &str) -> Arc<Event> {
    Arc::new(Event {
        specversion: "1.0".into(),
        id: id.into(),
        source: "/tests".into(),
        ty: ty.into(),
        datacontenttype: Some("application/octet-stream".into()),
        dataschema: None,
        subject: Some(format!("/orders/{id}")),
        time: None,
        extensions: vec![("tenant".into(), ExtensionValue::String("a".into()))],
        data_version: None,
        data: Some(Bytes::from(vec![0u8, 159, 146, 150])),
    })
}

fn delivery(id: &str, sink: &str, accepted_at: SystemTime) -> Delivery {
    Delivery {
        id: 1,
        event: event(id, "Order.Created"),
        route: Arc::from("orders"),
        sink: Arc::from(sink),
        attempts: 1,
        accepted_at,
        not_before: accepted_at,
        last_outcome: None,
        last_status: None,
        last_attempt_at: None,
        priority: Priority::High,
        ordering_key: None,
    }
}

fn encoded(kept: &[Kept]) -> Vec<u8> {
    let mut out = Vec::new();
    for k in kept {
        k.encode(&mut out);
    }
    out
}

fn ids(store: &Store, sink: &str) -> Vec<String> {
    let positions = store.scan(SystemTime::UNIX_EPOCH, |h| h.sink == sink);
    positions
        .into_iter()
        .filter_map(|p| store.read(p))
        .map(|k| k.event.id.clone())
        .collect()
}

#[test]
fn a_record_reads_back_whole_with_its_binary_payload_and_a_torn_one_not_at_all() {
    let now = SystemTime::now();
    let kept = Kept::new(&delivery("e1", "s", now), now);
    let bytes = encoded(std::slice::from_ref(&kept));
    let Some((Decoded::Whole(back), len)) = Kept::decode(&bytes, true) else {
        panic!("whole record expected");
    };
    assert_eq!(len, bytes.len());
    assert_eq!(back, kept);
    assert!(matches!(Kept::decode(&bytes, false), Some((Decoded::Head(h), _)) if h.sink == "s"));
    assert!(Kept::decode(&bytes[..bytes.len() - 1], true).is_none());
}

#[test]
fn past_the_ttl_segments_go_and_room_is_made_oldest_first() {
    let mut store = Store::memory(1 << 20);
    let long_ago = SystemTime::now() - Duration::from_secs(600);
    let old: Vec<Kept> = (0..3)
        .map(|i| Kept::new(&delivery(&format!("old{i}"), "s", long_ago), long_ago))
        .collect();
    store.append(&encoded(&old), long_ago).expect("append");
    // Past the segment size: the next records start a new segment.
    let filler = vec![Kept::new(&delivery("big", "other", long_ago), long_ago); 1];
    let mut big = encoded(&filler);
    while (big.len() as u64) < (64 << 10) {
        big.extend_from_slice(&encoded(&filler));
    }
    store.append(&big, long_ago).expect("append");
    let now = SystemTime::now();
    let fresh: Vec<Kept> = (0..3)
        .map(|i| Kept::new(&delivery(&format!("new{i}"), "s", now), now))
        .collect();
    store.append(&encoded(&fresh), now).expect("append");
    assert_eq!(
        ids(&store, "s"),
        ["old0", "old1", "old2", "new0", "new1", "new2"]
    );
    // A scan leaves out what is past the cutoff, before any segment is dropped.
    let recent = store.scan(cutoff(now, Duration::from_secs(60)), |h| h.sink == "s");
    assert_eq!(recent.len(), 3);

    let freed = store.expire(cutoff(now, Duration::from_secs(60)));
    assert!(freed > 0);
    assert_eq!(ids(&store, "s"), ["new0", "new1", "new2"]);

    let left = store.bytes();
    assert_eq!(store.evict_to(left), 0, "within the budget nothing goes");
    assert_eq!(store.evict_to(left - 1), left);
    assert!(ids(&store, "s").is_empty());
}

#[test]
fn records_survive_reopening_and_a_torn_tail_is_cut() {
    let dir = tempfile::tempdir().expect("dir");
    let now = SystemTime::now();
    let mut store = Store::open(dir.path(), 1 << 20).expect("open");
    let kept: Vec<Kept> = ["a", "b"]
        .iter()
        .map(|id| Kept::new(&delivery(id, "s", now), now))
        .collect();
    store.append(&encoded(&kept), now).expect("append");
    drop(store);
    let file = std::fs::read_dir(dir.path())
        .expect("list")
        .next()
        .expect("one file")
        .expect("entry")
        .path();
    let len = std::fs::metadata(&file).expect("file").len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&file)
        .and_then(|f| f.set_len(len - 2))
        .expect("tear");
    let mut store = Store::open(dir.path(), 1 << 20).expect("reopen");
    assert_eq!(ids(&store, "s"), ["a"]);
    let c = Kept::new(&delivery("c", "s", now), now);
    store.append(&encoded(&[c]), now).expect("append");
    assert_eq!(ids(&store, "s"), ["a", "c"]);

    // A spool that would need more than the disk has: every retained file gives way.
    assert!(!store.make_room(0, u64::MAX / 4));
    assert_eq!(store.bytes(), 0);
    assert!(ids(&store, "s").is_empty());
}

fn memory_config(max_bytes: u64) -> SpoolConfig {
    SpoolConfig {
        backend: SpoolBackend::Memory,
        path: "./unused".into(),
        max_bytes,
        dead_letter_ttl: None,
        nats: None,
        retain_delivered: Some(Duration::from_secs(3600)),
    }
}

fn request(sink: &str, since: SystemTime, until: SystemTime) -> ReplayRequest {
    ReplayRequest {
        sink: sink.into(),
        route: None,
        since,
        until,
        filter: ReplayFilter::default(),
    }
}

#[tokio::test]
async fn a_replay_queues_the_range_of_one_sink_and_counts_its_outcomes() {
    let spool = Arc::new(SpoolHandle::Memory(MemorySpool::new()));
    let retained = Retained::open(&memory_config(1 << 20), spool.clone()).expect("open");
    let t0 = SystemTime::now() - Duration::from_secs(100);
    let at = |s: u64| t0 + Duration::from_secs(s);
    let delivered = [
        delivery("before", "s", at(0)),
        delivery("in1", "s", at(10)),
        delivery("in2", "s", at(20)),
        delivery("other-sink", "t", at(15)),
        delivery("at-until", "s", at(30)),
    ];
    retained.keep(&delivered, SystemTime::now()).await;

    let status = retained
        .replay(request("s", at(5), at(30)), spool.clone())
        .await
        .expect("replay");
    assert_eq!(status.matched, 2);
    let leased = tokio::time::timeout(Duration::from_secs(5), spool.lease("s", 10))
        .await
        .expect("queued in time")
        .expect("lease");
    let mut got: Vec<&str> = leased.iter().map(|d| d.event.id.as_str()).collect();
    got.sort_unstable();
    assert_eq!(got, ["in1", "in2"]);
    assert!(leased
        .iter()
        .all(|d| d.attempts == 0 && d.priority == Priority::High));
    let tag = ExtensionValue::String(status.id.to_string());
    assert!(leased
        .iter()
        .all(|d| d.event.extension(REPLAY_EXTENSION) == Some(&tag)));

    let mut elsewhere = leased[0].clone();
    elsewhere.sink = Arc::from("dead-letters");
    retained.observe(&elsewhere, true);
    retained.observe(&leased[0], true);
    let running = retained.replay_status(status.id).expect("status");
    assert_eq!(
        (running.enqueued, running.delivered, running.state),
        (2, 1, ReplayState::Running)
    );
    retained.observe(&leased[1], false);
    let done = retained.replay_status(status.id).expect("status");
    assert_eq!(
        (done.delivered, done.failed, done.state),
        (1, 1, ReplayState::Done)
    );

    let filtered = ReplayRequest {
        filter: ReplayFilter {
            sql: Some(Arc::new(
                crate::cesql::Expr::parse("subject = '/orders/in2'").expect("sql"),
            )),
            ..ReplayFilter::default()
        },
        ..request("s", at(0), at(60))
    };
    let status = retained
        .replay(filtered, spool.clone())
        .await
        .expect("replay");
    assert_eq!(status.matched, 1);
    retained.close().await;
}

#[tokio::test]
async fn retained_events_give_way_to_the_spool_and_retention_off_refuses_replays() {
    let spool = Arc::new(SpoolHandle::Memory(MemorySpool::bounded(64 << 10)));
    let retained = Retained::open(&memory_config(64 << 10), spool.clone()).expect("open");
    let now = SystemTime::now();
    let many: Vec<Delivery> = (0..200)
        .map(|i| delivery(&format!("e{i}"), "s", now))
        .collect();
    retained.keep(&many, now).await;
    let kept = retained.bytes().expect("on");
    assert!(kept > 0 && kept <= 64 << 10, "{kept}");
    // The spool fills: retained events make room, and the put is taken.
    let big = Arc::new(Event {
        data: Some(Bytes::from(vec![b'x'; 40 << 10])),
        ..Event::clone(&event("big", "T"))
    });
    let put = NewDelivery {
        event: big,
        route: Arc::from("r"),
        sink: Arc::from("s"),
        accepted_at: now,
        not_before: now,
        priority: Priority::Normal,
        ordering_key: None,
    };
    spool
        .put(vec![put])
        .await
        .expect("a new event is never refused for retained ones");
    retained.keep(&many[..1], now).await;
    let used = spool.used_bytes().unwrap_or(0);
    let kept = retained.bytes().expect("on");
    assert!(used + kept <= 64 << 10, "spool {used} + retained {kept}");
    retained.close().await;

    let off = Retained::off();
    off.keep(&many, now).await;
    let refused = off
        .replay(request("s", now, now + Duration::from_secs(1)), spool)
        .await;
    assert!(matches!(refused, Err(ReplayError::Off)));
}
