//! Priority lanes and per-subject ordering, over `impl Spool`, plus their persistence in the
//! embedded backend.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::{dead_info, due, event, lease, open, wait_depth};
use crate::spool::{Delivery, NewDelivery, Priority, Spool};

fn lane(id: &str, priority: Priority, key: Option<&str>) -> NewDelivery {
    NewDelivery {
        priority,
        ordering_key: key.map(Arc::from),
        ..due(&event(id), "a")
    }
}

fn ids(leased: &[Delivery]) -> Vec<&str> {
    leased.iter().map(|d| d.event.id.as_str()).collect()
}

/// Nothing is leasable within a short wait.
async fn nothing_leasable(spool: &impl Spool) {
    let early = tokio::time::timeout(Duration::from_millis(50), spool.lease("a", 10)).await;
    assert!(early.is_err(), "nothing may be leased: {early:?}");
}

pub(super) async fn lease_takes_high_then_normal_then_low(spool: &impl Spool) {
    let puts = [
        lane("low", Priority::Low, None),
        lane("normal", Priority::Normal, None),
        lane("high", Priority::High, None),
    ];
    spool.put(puts.to_vec()).await.unwrap();
    let mut order = Vec::new();
    for _ in 0..3 {
        let d = lease(spool, "a", 1).await.remove(0);
        assert_eq!(d.priority.name(), d.event.id, "the lane is kept");
        order.push(d.event.id.clone());
    }
    assert_eq!(order, ["high", "normal", "low"]);
}

pub(super) async fn low_is_passed_over_at_most_six_times(spool: &impl Spool) {
    let mut puts: Vec<_> = (0..5)
        .map(|i| lane(&format!("low{i}"), Priority::Low, None))
        .collect();
    puts.extend((0..20).map(|i| lane(&format!("high{i}"), Priority::High, None)));
    spool.put(puts).await.unwrap();
    let mut order = Vec::new();
    for _ in 0..16 {
        let d = lease(spool, "a", 1).await.remove(0);
        spool.ack(&d).await.unwrap();
        order.push(d.priority);
    }
    assert_eq!(order[0], Priority::High);
    let lows: Vec<usize> = (0..order.len())
        .filter(|&i| order[i] == Priority::Low)
        .collect();
    assert_eq!(lows, [6, 13], "{order:?}");
}

pub(super) async fn high_overtakes_a_low_backlog(spool: &impl Spool) {
    let lows: Vec<_> = (0..200)
        .map(|i| lane(&format!("low{i}"), Priority::Low, None))
        .collect();
    spool.put(lows).await.unwrap();
    for _ in 0..3 {
        let d = lease(spool, "a", 1).await.remove(0);
        spool.ack(&d).await.unwrap();
    }
    spool
        .put(vec![lane("urgent", Priority::High, None)])
        .await
        .unwrap();
    assert_eq!(ids(&lease(spool, "a", 1).await), ["urgent"]);
}

pub(super) async fn ordering_blocks_a_successor_while_leased_or_nacked(spool: &impl Spool) {
    let puts = vec![
        lane("a1", Priority::Normal, Some("/a")),
        lane("a2", Priority::Normal, Some("/a")),
        lane("b1", Priority::Normal, Some("/b")),
    ];
    spool.put(puts).await.unwrap();
    let first = lease(spool, "a", 10).await;
    assert_eq!(ids(&first), ["a1", "b1"], "a2 waits behind a1");
    nothing_leasable(spool).await;

    let a1 = first[0].clone();
    let retry_at = SystemTime::now() + Duration::from_millis(150);
    spool.nack(a1, retry_at).await.unwrap();
    nothing_leasable(spool).await;
    let again = lease(spool, "a", 10).await;
    assert_eq!(ids(&again), ["a1"], "the retry keeps its place before a2");

    spool.ack(&again[0]).await.unwrap();
    assert_eq!(ids(&lease(spool, "a", 10).await), ["a2"]);
}

pub(super) async fn ordering_releases_after_dead_letter(spool: &impl Spool) {
    let puts = vec![
        lane("a1", Priority::High, Some("/a")),
        lane("a2", Priority::Low, Some("/a")),
    ];
    spool.put(puts).await.unwrap();
    let a1 = lease(spool, "a", 10).await;
    assert_eq!(ids(&a1), ["a1"]);
    spool
        .dead_letter(&a1[0], dead_info("BadRequest"), None)
        .await
        .unwrap();
    assert_eq!(ids(&lease(spool, "a", 10).await), ["a2"]);
    wait_depth(spool, "a", 1).await;
}

pub(super) async fn other_subjects_routes_and_unordered_go_in_parallel(spool: &impl Spool) {
    let other_route = NewDelivery {
        route: Arc::from("audit"),
        ..lane("x2", Priority::Normal, Some("/x"))
    };
    let puts = vec![
        lane("x1", Priority::Normal, Some("/x")),
        other_route,
        lane("u1", Priority::Normal, None),
        lane("u2", Priority::Normal, None),
    ];
    spool.put(puts).await.unwrap();
    let leased = lease(spool, "a", 10).await;
    let mut leased = ids(&leased);
    leased.sort_unstable();
    assert_eq!(leased, ["u1", "u2", "x1", "x2"]);
}

#[tokio::test]
async fn lanes_and_order_survive_reopen() {
    let dir = tempfile::tempdir().expect("temp dir");
    {
        let spool = open(&dir);
        let puts = vec![
            lane("a1", Priority::Low, Some("/a")),
            lane("a2", Priority::Low, Some("/a")),
            lane("low", Priority::Low, None),
            lane("high", Priority::High, None),
        ];
        spool.put(puts).await.unwrap();
        let a1 = lease(&spool, "a", 1).await;
        assert_eq!(ids(&a1), ["high"]);
        spool.close().await.unwrap();
    }
    let spool = open(&dir);
    let leased = lease(&spool, "a", 10).await;
    assert_eq!(
        ids(&leased),
        ["high", "a1", "low"],
        "a2 still waits behind a1"
    );
    assert_eq!(leased[0].priority, Priority::High);
    assert_eq!(leased[1].ordering_key.as_deref(), Some("/a"));
    spool.ack(&leased[1]).await.unwrap();
    assert_eq!(ids(&lease(&spool, "a", 10).await), ["a2"]);
}

pub(super) async fn ordering_a_released_head_keeps_its_place_and_unblocks(spool: &impl Spool) {
    let puts = vec![
        lane("a1", Priority::Normal, Some("/a")),
        lane("a2", Priority::Normal, Some("/a")),
    ];
    spool.put(puts).await.unwrap();
    let first = lease(spool, "a", 10).await;
    assert_eq!(ids(&first), ["a1"]);
    spool.release(first[0].clone());
    let again = lease(spool, "a", 10).await;
    assert_eq!(
        ids(&again),
        ["a1"],
        "the released head leads its chain again"
    );
    assert_eq!(again[0].attempts, 0);
    spool.ack(&again[0]).await.unwrap();
    assert_eq!(ids(&lease(spool, "a", 10).await), ["a2"]);
}
