//! Purging a sink's stored deliveries: the contract run against every backend, the stored
//! bytes and event rows it frees, and what the embedded backend keeps of it across a reopen.

use std::sync::Arc;
use std::time::Duration;

use rusqlite::Connection;

use super::{dead_info, due, event, lease, open, wait_depth};
use crate::spool::{EmbeddedSpool, MemorySpool, Spool};

fn rows(dir: &tempfile::TempDir, table: &str) -> i64 {
    let conn = Connection::open(dir.path().join("spool.db")).unwrap();
    conn.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))
        .unwrap()
}

async fn nothing_to_lease(spool: &impl Spool, sink: &str) {
    let leased = tokio::time::timeout(Duration::from_millis(50), spool.lease(sink, 10)).await;
    assert!(leased.is_err(), "nothing of {sink} is left to lease");
}

pub(super) async fn purge_spares_leased_and_other_sinks(spool: &impl Spool) {
    let events = [event("e1"), event("e2"), event("e3")];
    let gone = events.iter().map(|ev| due(ev, "gone")).collect();
    spool.put(gone).await.unwrap();
    spool.put(vec![due(&events[2], "kept")]).await.unwrap();
    let leased = lease(spool, "gone", 1).await.remove(0);

    assert_eq!(spool.purge_sink("gone").await.unwrap(), 2);
    assert_eq!(spool.depth("gone"), 1, "the leased delivery stays");
    assert_eq!(spool.depth("kept"), 1);
    nothing_to_lease(spool, "gone").await;

    let kept = lease(spool, "kept", 10).await;
    assert_eq!(kept.len(), 1);
    assert_eq!(
        *kept[0].event, *events[2],
        "a shared event outlives the purge"
    );
    spool.ack(&kept[0]).await.unwrap();
    spool.ack(&leased).await.unwrap();
    wait_depth(spool, "gone", 0).await;
    wait_depth(spool, "kept", 0).await;
    assert!(spool.sink_depths().is_empty());
    assert_eq!(spool.purge_sink("gone").await.unwrap(), 0);
    assert_eq!(spool.purge_sink("never-stored").await.unwrap(), 0);
}

pub(super) async fn purge_takes_an_ordered_chain_behind_a_leased_head(spool: &impl Spool) {
    let chain: Vec<_> = ["o1", "o2", "o3"]
        .iter()
        .map(|id| {
            let mut d = due(&event(id), "gone");
            d.ordering_key = Some(Arc::from("/orders/1"));
            d
        })
        .collect();
    spool.put(chain).await.unwrap();
    let head = lease(spool, "gone", 10).await;
    assert_eq!(head.len(), 1, "one of the chain at a time");

    assert_eq!(spool.purge_sink("gone").await.unwrap(), 2);
    spool.ack(&head[0]).await.unwrap();
    wait_depth(spool, "gone", 0).await;
    nothing_to_lease(spool, "gone").await;
}

/// An event shared with a dead letter stays until the record goes; then nothing is left.
async fn purge_frees_what_no_one_refers_to(spool: &impl Spool) {
    let shared = event("shared");
    spool
        .put(vec![
            due(&shared, "x"),
            due(&shared, "gone"),
            due(&event("own"), "gone"),
        ])
        .await
        .unwrap();
    let d = lease(spool, "x", 1).await.remove(0);
    spool
        .dead_letter(&d, dead_info("BadRequest"), None)
        .await
        .unwrap();
    wait_depth(spool, "x", 0).await;

    assert_eq!(spool.purge_sink("gone").await.unwrap(), 2);
    let records = spool.dead_letters(&Default::default()).await.unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(
        *records[0].event, *shared,
        "the dead letter keeps its event"
    );
    assert!(spool.purge_dead_letter(records[0].id).await.unwrap());
}

mod purge_frees_bytes {
    use super::*;

    #[tokio::test]
    async fn memory() {
        let spool = MemorySpool::new();
        purge_frees_what_no_one_refers_to(&spool).await;
        assert_eq!(spool.stored_bytes(), 0);
    }

    #[tokio::test]
    async fn embedded() {
        let dir = tempfile::tempdir().unwrap();
        let spool = open(&dir);
        purge_frees_what_no_one_refers_to(&spool).await;
        assert_eq!(spool.stored_bytes(), 0);
        assert_eq!((rows(&dir, "deliveries"), rows(&dir, "events")), (0, 0));
    }
}

#[tokio::test]
async fn embedded_purge_leaves_no_rows_behind() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open(&dir);
    purge_spares_leased_and_other_sinks(&spool).await;
    assert_eq!((rows(&dir, "deliveries"), rows(&dir, "events")), (0, 0));
    assert_eq!(spool.stored_bytes(), 0);
}

#[tokio::test]
async fn embedded_purged_deliveries_stay_gone_after_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let kept_event = event("in-flight");
    {
        let spool = open(&dir);
        let gone = vec![due(&kept_event, "gone"), due(&event("e2"), "gone")];
        spool.put(gone).await.unwrap();
        spool.put(vec![due(&event("e3"), "gone")]).await.unwrap();
        let leased = lease(&spool, "gone", 1).await.remove(0);
        assert_eq!(*leased.event, *kept_event);
        assert_eq!(spool.purge_sink("gone").await.unwrap(), 2);
    }
    let spool: EmbeddedSpool = open(&dir);
    assert_eq!(spool.depth("gone"), 1);
    let resumed = lease(&spool, "gone", 10).await;
    assert_eq!(resumed.len(), 1, "only the delivery in flight came back");
    assert_eq!(*resumed[0].event, *kept_event);
    spool.ack(&resumed[0]).await.unwrap();
    wait_depth(&spool, "gone", 0).await;
    assert_eq!((rows(&dir, "deliveries"), rows(&dir, "events")), (0, 0));
}
