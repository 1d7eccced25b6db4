//! The contract of [`Spool::oldest`]: when the oldest stored delivery of a sink was accepted,
//! leased and retried deliveries included, until the last one leaves.

use std::time::{Duration, SystemTime};

use super::{event, lease, new_delivery, wait_depth, PATIENCE};
use crate::spool::record::round_millis;
use crate::spool::Spool;

/// Waits (bounded) until `oldest(sink)` is `want`; acks may commit lazily.
async fn wait_oldest(spool: &impl Spool, sink: &str, want: Option<SystemTime>) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while spool.oldest(sink) != want {
        assert!(
            tokio::time::Instant::now() < deadline,
            "oldest of {sink} stayed {:?} instead of {want:?}",
            spool.oldest(sink)
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

pub(super) async fn oldest_follows_the_earliest_accepted_delivery(spool: &impl Spool) {
    assert!(spool.tells_oldest());
    let now = round_millis(SystemTime::now());
    let (old, young) = (now - Duration::from_secs(30), now - Duration::from_secs(10));
    let mut deliveries = Vec::new();
    for (id, sink, accepted) in [("e1", "a", young), ("e2", "a", old), ("e3", "b", now)] {
        // As the daemon stores them: due when accepted.
        let mut d = new_delivery(&event(id), sink, accepted);
        d.accepted_at = accepted;
        deliveries.push(d);
    }
    spool.put(deliveries).await.unwrap();
    assert_eq!(spool.oldest("a"), Some(old));
    assert_eq!(spool.oldest("b"), Some(now));
    assert_eq!(spool.oldest("c"), None);

    // Leased and then waiting for a retry, the oldest still counts.
    let leased = lease(spool, "a", 2).await;
    assert_eq!(spool.oldest("a"), Some(old));
    let (first, second) = (leased[0].clone(), leased[1].clone());
    let (older, younger) = if first.accepted_at == old {
        (first, second)
    } else {
        (second, first)
    };
    spool.nack(older, SystemTime::now()).await.unwrap();
    spool.ack(&younger).await.unwrap();
    wait_depth(spool, "a", 1).await;
    assert_eq!(spool.oldest("a"), Some(old));

    let retried = lease(spool, "a", 1).await.remove(0);
    spool.ack(&retried).await.unwrap();
    wait_oldest(spool, "a", None).await;
    assert_eq!(spool.oldest("b"), Some(now));
}
