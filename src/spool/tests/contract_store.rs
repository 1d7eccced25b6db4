//! The contract of the dead-letter store, duplicate suppression, `max_bytes` and sink depths,
//! run against every backend.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;

use super::{dead_info, due, event, lease, wait_depth};
use crate::event::Event;
use crate::spool::{DeadLetterQuery, DeadLetterRecord, Spool, SpoolError};

fn kib_event(i: usize) -> Arc<Event> {
    let mut ev = (*event(&format!("big-{i}"))).clone();
    ev.data = Some(Bytes::from(vec![b'x'; 1024]));
    Arc::new(ev)
}

async fn all(spool: &impl Spool, query: DeadLetterQuery) -> Vec<DeadLetterRecord> {
    spool.dead_letters(&query).await.unwrap()
}

/// Dead-letters one delivery of each (event id, sink, reason).
async fn dead_letter_each(spool: &impl Spool, items: &[(&str, &str, &str)]) {
    for (id, sink, reason) in items {
        spool.put(vec![due(&event(id), sink)]).await.unwrap();
        let d = lease(spool, sink, 1).await.remove(0);
        spool
            .dead_letter(&d, dead_info(reason), None)
            .await
            .unwrap();
        wait_depth(spool, sink, 0).await;
    }
}

pub(super) async fn dead_letters_are_kept_listed_and_filtered(spool: &impl Spool) {
    let before = SystemTime::now() - Duration::from_secs(1);
    let items = [
        ("e1", "a", "MaxDeliveryAttemptsExceeded"),
        ("e2", "b", "BadRequest"),
        ("e3", "a", "MaxDeliveryAttemptsExceeded"),
    ];
    dead_letter_each(spool, &items).await;

    let records = all(spool, DeadLetterQuery::default()).await;
    let ids: Vec<_> = records.iter().map(|r| r.event.id.as_str()).collect();
    assert_eq!(ids, ["e1", "e2", "e3"]);
    assert!(records.windows(2).all(|w| w[0].id < w[1].id));
    let first = &records[0];
    assert_eq!(*first.event, *event("e1"), "the original event, unchanged");
    assert_eq!((&*first.route, &*first.sink), ("orders", "a"));
    assert_eq!(
        (first.info.attempts, first.info.last_status),
        (3, Some(400))
    );
    assert_eq!(first.info.last_outcome.as_deref(), Some("BadRequest"));

    let by = |f: fn(&mut DeadLetterQuery)| {
        let mut q = DeadLetterQuery::default();
        f(&mut q);
        q
    };
    assert_eq!(all(spool, by(|q| q.sink = Some("b".into()))).await.len(), 1);
    let reason = by(|q| q.reason = Some("MaxDeliveryAttemptsExceeded".into()));
    assert_eq!(all(spool, reason).await.len(), 2);
    assert_eq!(
        all(spool, by(|q| q.route = Some("nope".into())))
            .await
            .len(),
        0
    );
    let future = SystemTime::now() + Duration::from_secs(3600);
    let since = DeadLetterQuery {
        since: Some(future),
        ..DeadLetterQuery::default()
    };
    assert!(all(spool, since).await.is_empty());
    let since = DeadLetterQuery {
        since: Some(before),
        ..DeadLetterQuery::default()
    };
    assert_eq!(all(spool, since).await.len(), 3);

    let page = all(spool, by(|q| q.limit = 2)).await;
    assert_eq!(page.len(), 2);
    let rest = DeadLetterQuery {
        after: Some(page[1].id),
        ..DeadLetterQuery::default()
    };
    let rest = all(spool, rest).await;
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0].event.id, "e3");
}

pub(super) async fn replay_requeues_with_fresh_attempts(spool: &impl Spool) {
    dead_letter_each(spool, &[("e1", "a", "BadRequest")]).await;
    let record = all(spool, DeadLetterQuery::default()).await.remove(0);
    let replayed_at = SystemTime::now() - Duration::from_millis(1);
    let one = DeadLetterQuery {
        id: Some(record.id),
        limit: 1,
        ..DeadLetterQuery::default()
    };
    assert_eq!(spool.replay_dead_letters(&one).await.unwrap(), 1);

    let again = lease(spool, "a", 1).await.remove(0);
    assert_eq!(*again.event, *event("e1"));
    assert_eq!((again.attempts, &*again.route), (0, "orders"));
    assert!(again.accepted_at >= replayed_at, "the TTL starts afresh");
    assert!(all(spool, DeadLetterQuery::default()).await.is_empty());
    assert_eq!(spool.replay_dead_letters(&one).await.unwrap(), 0);
}

pub(super) async fn replay_by_filter_and_purge(spool: &impl Spool) {
    let items = [("e1", "a", "R"), ("e2", "a", "R"), ("e3", "b", "R")];
    dead_letter_each(spool, &items).await;
    let only_a = DeadLetterQuery {
        sink: Some("a".into()),
        limit: usize::MAX,
        ..DeadLetterQuery::default()
    };
    assert_eq!(spool.replay_dead_letters(&only_a).await.unwrap(), 2);
    wait_depth(spool, "a", 2).await;
    assert_eq!(lease(spool, "a", 10).await.len(), 2);

    let left = all(spool, DeadLetterQuery::default()).await;
    assert_eq!(left.len(), 1);
    assert!(spool.purge_dead_letter(left[0].id).await.unwrap());
    assert!(!spool.purge_dead_letter(left[0].id).await.unwrap());
    assert!(all(spool, DeadLetterQuery::default()).await.is_empty());
}

pub(super) async fn put_unique_drops_repeats_within_the_window(spool: &impl Spool) {
    let window = Duration::from_secs(600);
    let ev = event("e1");
    let stored = spool.put_unique(vec![due(&ev, "a"), due(&ev, "b")], window);
    assert_eq!(stored.await.unwrap(), 0);
    // The same (source, id) in a new request, and twice within one request.
    let repeat = spool.put_unique(vec![due(&event("e1"), "a")], window);
    assert_eq!(repeat.await.unwrap(), 1);
    let twice = vec![due(&event("e2"), "a"), due(&event("e2"), "a")];
    assert_eq!(spool.put_unique(twice, window).await.unwrap(), 1);
    let mut other_source = (*event("e1")).clone();
    other_source.source = "/elsewhere".into();
    let other = vec![due(&Arc::new(other_source), "a")];
    assert_eq!(spool.put_unique(other, window).await.unwrap(), 0);
    assert_eq!((spool.depth("a"), spool.depth("b")), (3, 1));

    let short = Duration::from_millis(100);
    let first = spool.put_unique(vec![due(&event("e3"), "a")], short);
    assert_eq!(first.await.unwrap(), 0);
    tokio::time::sleep(Duration::from_millis(150)).await;
    let later = spool.put_unique(vec![due(&event("e3"), "a")], short);
    assert_eq!(later.await.unwrap(), 0, "the window has passed");
    assert_eq!(spool.depth("a"), 5);
}

pub(super) async fn sink_depths_name_every_stored_sink(spool: &impl Spool) {
    assert!(spool.sink_depths().is_empty());
    let ev = event("e1");
    spool
        .put(vec![due(&ev, "b"), due(&ev, "a"), due(&ev, "a")])
        .await
        .unwrap();
    let want = vec![("a".to_owned(), 2), ("b".to_owned(), 1)];
    assert_eq!(spool.sink_depths(), want);
}

/// [`full_refuses_then_drains`], and then a put fits again at once.
pub(super) async fn full_refuses_then_recovers(spool: &impl Spool) {
    full_refuses_then_drains(spool).await;
    put_fits_again(spool).await;
}

/// One more KiB event for `a`, which must be stored.
pub(super) async fn put_fits_again(spool: &impl Spool) {
    spool.put(vec![due(&kib_event(999), "a")]).await.unwrap();
}

/// Puts KiB events for `a` until the spool refuses one as full, checks that nothing stored
/// was harmed, then leases and acks all of them.
pub(super) async fn full_refuses_then_drains(spool: &impl Spool) {
    let mut stored = 0;
    loop {
        match spool.put(vec![due(&kib_event(stored), "a")]).await {
            Ok(()) => stored += 1,
            Err(SpoolError::Full { retry_after }) => {
                assert!(!retry_after.is_zero());
                break;
            }
            Err(e) => panic!("unexpected {e}"),
        }
        assert!(stored < 100, "the bound never applied");
    }
    assert!(stored >= 2, "only {stored} fit");
    assert_eq!(spool.depth("a"), stored, "nothing stored was harmed");
    let leased = lease(spool, "a", 100).await;
    assert_eq!(leased.len(), stored);
    for d in &leased {
        assert_eq!(d.event.data.as_ref().map(Bytes::len), Some(1024));
        spool.ack(d).await.unwrap();
    }
    wait_depth(spool, "a", 0).await;
}
