//! The queue contract, written once over `impl Spool` and run against every backend.

use std::time::{Duration, SystemTime};

use super::{dead_info, due, event, lease, new_delivery, wait_depth, PATIENCE};
use crate::spool::Spool;

pub(super) async fn put_lease_ack(spool: &impl Spool) {
    let ev = event("e1");
    spool.put(vec![due(&ev, "a")]).await.unwrap();
    assert_eq!(spool.depth("a"), 1);

    let leased = lease(spool, "a", 10).await;
    assert_eq!(leased.len(), 1);
    let d = &leased[0];
    assert_eq!(*d.event, *ev);
    assert_eq!((&*d.sink, &*d.route, d.attempts), ("a", "orders", 0));
    assert_eq!(spool.depth("a"), 1, "a leased delivery is still stored");

    spool.ack(d).await.unwrap();
    wait_depth(spool, "a", 0).await;
    assert_eq!(spool.depth("other"), 0);
}

pub(super) async fn leased_delivery_is_not_leased_again(spool: &impl Spool) {
    let ev = event("e1");
    spool.put(vec![due(&ev, "a"), due(&ev, "a")]).await.unwrap();
    let first = lease(spool, "a", 1).await;
    let second = lease(spool, "a", 1).await;
    assert_eq!((first.len(), second.len()), (1, 1));
    assert_ne!(first[0].id, second[0].id);

    let third = tokio::time::timeout(Duration::from_millis(50), spool.lease("a", 1)).await;
    assert!(third.is_err(), "nothing is left to lease");
}

pub(super) async fn lease_is_oldest_first_and_bounded_by_max(spool: &impl Spool) {
    let now = SystemTime::now();
    for (i, age) in [(1, 10), (2, 30), (3, 20)] {
        let ev = event(&format!("e{i}"));
        let at = now - Duration::from_secs(age);
        spool.put(vec![new_delivery(&ev, "a", at)]).await.unwrap();
    }
    let leased = lease(spool, "a", 2).await;
    let ids: Vec<_> = leased.iter().map(|d| d.event.id.as_str()).collect();
    assert_eq!(ids, ["e2", "e3"]);
    let rest = lease(spool, "a", 10).await;
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0].event.id, "e1");
}

pub(super) async fn nack_requeues_with_attempts_and_not_before(spool: &impl Spool) {
    let ev = event("e1");
    spool.put(vec![due(&ev, "a")]).await.unwrap();
    let mut d = lease(spool, "a", 1).await.remove(0);
    let attempted = SystemTime::now();
    d.attempts += 1;
    d.last_outcome = Some("Busy".into());
    d.last_status = Some(503);
    d.last_attempt_at = Some(attempted);
    let not_before = SystemTime::now() + Duration::from_millis(100);
    spool.nack(d, not_before).await.unwrap();

    let again = lease(spool, "a", 1).await.remove(0);
    assert!(SystemTime::now() >= not_before - Duration::from_millis(1));
    assert_eq!(again.attempts, 1);
    assert_eq!(again.last_outcome.as_deref(), Some("Busy"));
    assert_eq!(again.last_status, Some(503));
    assert!(again.last_attempt_at.is_some());
    assert_eq!(spool.depth("a"), 1);
}

pub(super) async fn dead_letter_moves_to_forward_sink(spool: &impl Spool) {
    let ev = event("e1");
    spool.put(vec![due(&ev, "a")]).await.unwrap();
    let d = lease(spool, "a", 1).await.remove(0);
    spool
        .dead_letter(&d, dead_info("BadRequest"), Some(due(&d.event, "dead")))
        .await
        .unwrap();

    let forwarded = lease(spool, "dead", 1).await.remove(0);
    assert_eq!(*forwarded.event, *ev);
    wait_depth(spool, "a", 0).await;
    assert_eq!(spool.depth("dead"), 1);
}

pub(super) async fn lease_waits_for_put(spool: &impl Spool) {
    let ev = event("e1");
    let waiting = spool.lease("a", 1);
    tokio::pin!(waiting);
    let early = tokio::time::timeout(Duration::from_millis(50), &mut waiting).await;
    assert!(early.is_err(), "nothing to lease yet");

    let put = spool.put(vec![due(&ev, "a")]);
    let (leased, put) = tokio::time::timeout(PATIENCE, async { tokio::join!(waiting, put) })
        .await
        .expect("the put woke the lease");
    put.unwrap();
    assert_eq!(leased.unwrap()[0].event.id, "e1");
}

pub(super) async fn lease_waits_for_future_not_before(spool: &impl Spool) {
    let ev = event("e1");
    let not_before = SystemTime::now() + Duration::from_millis(500);
    spool
        .put(vec![new_delivery(&ev, "a", not_before)])
        .await
        .unwrap();
    let early = tokio::time::timeout(Duration::from_millis(50), spool.lease("a", 1)).await;
    assert!(early.is_err(), "not due yet");

    let leased = lease(spool, "a", 1).await;
    assert!(SystemTime::now() >= not_before - Duration::from_millis(1));
    assert_eq!(leased[0].event.id, "e1");
}

pub(super) async fn released_lease_is_leased_again_at_once_unchanged(spool: &impl Spool) {
    let ev = event("e1");
    spool.put(vec![due(&ev, "a")]).await.unwrap();
    let mut d = lease(spool, "a", 1).await.remove(0);
    d.attempts += 1;
    d.last_outcome = Some("Busy".into());
    spool.nack(d, SystemTime::now()).await.unwrap();
    let leased = lease(spool, "a", 1).await.remove(0);
    assert_eq!(leased.attempts, 1);

    spool.release(leased.clone());
    // Well within the lease timeout of any backend that has one (NATS: `ack_wait` is 5s).
    let again = tokio::time::timeout(Duration::from_secs(2), spool.lease("a", 1))
        .await
        .expect("a released delivery is leasable again at once")
        .expect("lease succeeds");
    assert_eq!(again.len(), 1);
    let again = &again[0];
    assert_eq!((again.id, &*again.event), (leased.id, &*ev));
    assert_eq!(again.attempts, 1, "a release counts no attempt");
    assert_eq!(again.last_outcome.as_deref(), Some("Busy"));
    assert_eq!(spool.depth("a"), 1, "a released delivery is still stored");

    spool.ack(again).await.unwrap();
    wait_depth(spool, "a", 0).await;
}
