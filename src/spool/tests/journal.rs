//! The embedded spool's journal: what a crash leaves behind is read back without loss,
//! deliveries that move into the database are not brought back twice, and spent segment
//! files are deleted.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::time::SystemTime;

use super::{dead_info, due, event, lease, open, wait_depth};
use crate::spool::{DeadLetterQuery, EmbeddedSpool, Spool, DEFAULT_MAX_BYTES};

/// The journal's segment files, oldest first.
fn segments(dir: &tempfile::TempDir) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir.path().join("journal"))
        .expect("journal directory")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    files.sort();
    files
}

/// Puts `n` events, one per put, with ids `{prefix}0`…, each for `sink`.
async fn put_each(spool: &EmbeddedSpool, prefix: &str, n: usize, sink: &str) {
    for i in 0..n {
        let ev = event(&format!("{prefix}{i}"));
        spool.put(vec![due(&ev, sink)]).await.unwrap();
    }
}

fn small_segments(dir: &tempfile::TempDir) -> EmbeddedSpool {
    EmbeddedSpool::open_with(dir.path(), DEFAULT_MAX_BYTES, 2048).expect("spool opens")
}

#[tokio::test]
async fn a_torn_tail_is_ignored_and_what_came_before_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    {
        let spool = open(&dir);
        put_each(&spool, "e", 3, "a").await;
    }
    // A crash in the middle of a write leaves part of a record at the end of the segment.
    let last = segments(&dir).pop().expect("a segment");
    let mut file = OpenOptions::new().append(true).open(&last).unwrap();
    file.write_all(&[200, 1, 0, 0, 9, 9, 9, 9, 1, 0]).unwrap();
    drop(file);

    let spool = open(&dir);
    assert_eq!(spool.depth("a"), 3);
    spool.put(vec![due(&event("e3"), "a")]).await.unwrap();
    drop(spool);
    let spool = open(&dir);
    assert_eq!(
        spool.depth("a"),
        4,
        "records after the torn one are read too"
    );
    let ids: Vec<String> = lease(&spool, "a", 10)
        .await
        .iter()
        .map(|d| d.event.id.clone())
        .collect();
    assert_eq!(ids, ["e0", "e1", "e2", "e3"]);
}

#[tokio::test]
async fn a_nacked_delivery_moves_to_the_database_and_comes_back_once() {
    let dir = tempfile::tempdir().unwrap();
    {
        let spool = open(&dir);
        spool.put(vec![due(&event("e1"), "a")]).await.unwrap();
        let mut d = lease(&spool, "a", 1).await.remove(0);
        d.attempts = 1;
        d.last_outcome = Some("Busy".into());
        spool.nack(d, SystemTime::now()).await.unwrap();
        let again = lease(&spool, "a", 1).await.remove(0);
        assert_eq!(again.attempts, 1);
    }
    let spool = open(&dir);
    assert_eq!(
        spool.depth("a"),
        1,
        "stored once, not in the journal and the database"
    );
    let resumed = lease(&spool, "a", 10).await;
    assert_eq!(resumed.len(), 1);
    assert_eq!(
        (resumed[0].attempts, resumed[0].last_outcome.as_deref()),
        (1, Some("Busy"))
    );
    spool.ack(&resumed[0]).await.unwrap();
    wait_depth(&spool, "a", 0).await;
    drop(spool);
    assert_eq!(open(&dir).depth("a"), 0);
}

#[tokio::test]
async fn a_dead_lettered_delivery_is_not_brought_back() {
    let dir = tempfile::tempdir().unwrap();
    {
        let spool = open(&dir);
        spool.put(vec![due(&event("e1"), "a")]).await.unwrap();
        let d = lease(&spool, "a", 1).await.remove(0);
        spool.dead_letter(&d, dead_info("R"), None).await.unwrap();
        wait_depth(&spool, "a", 0).await;
    }
    let spool = open(&dir);
    assert_eq!(spool.depth("a"), 0);
    let records = spool
        .dead_letters(&DeadLetterQuery::default())
        .await
        .unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].event.id, "e1");
    assert_eq!(
        spool
            .replay_dead_letters(&DeadLetterQuery::default())
            .await
            .unwrap(),
        1
    );
    assert_eq!(lease(&spool, "a", 10).await.len(), 1);
}

#[tokio::test]
async fn spent_segments_are_deleted_and_live_ones_kept() {
    let dir = tempfile::tempdir().unwrap();
    let spool = small_segments(&dir);
    put_each(&spool, "e", 40, "a").await;
    spool.put(vec![due(&event("kept"), "b")]).await.unwrap();
    assert!(segments(&dir).len() >= 5, "{:?}", segments(&dir));
    let leased = lease(&spool, "a", 40).await;
    assert_eq!(leased.len(), 40);
    for d in &leased {
        spool.ack(d).await.unwrap();
    }
    wait_depth(&spool, "a", 0).await;
    // The segment with b's delivery stays, and the active one; segments after b's hold
    // only acks of a's deliveries in older segments, already deleted, so they go too.
    let left = segments(&dir);
    assert!(left.len() <= 2, "{left:?}");
    drop(spool);

    let spool = small_segments(&dir);
    assert_eq!((spool.depth("a"), spool.depth("b")), (0, 1));
    let d = lease(&spool, "b", 1).await.remove(0);
    assert_eq!(d.event.id, "kept");
    spool.ack(&d).await.unwrap();
    wait_depth(&spool, "b", 0).await;
    spool.put(vec![due(&event("next"), "a")]).await.unwrap();
    drop(spool);
    let spool = small_segments(&dir);
    assert_eq!((spool.depth("a"), spool.depth("b")), (1, 0));
    assert!(segments(&dir).len() <= 3, "{:?}", segments(&dir));
}

#[tokio::test]
async fn a_backlog_past_the_cache_is_read_back_from_the_journal_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let spool = small_segments(&dir);
    let n = 3000;
    for chunk in 0..(n / 100) {
        let batch = (0..100)
            .map(|i| due(&event(&format!("e{:05}", chunk * 100 + i)), "a"))
            .collect();
        spool.put(batch).await.unwrap();
    }
    let mut seen = Vec::with_capacity(n);
    while seen.len() < n {
        for d in lease(&spool, "a", 500).await {
            seen.push(d.event.id.clone());
            spool.ack(&d).await.unwrap();
        }
    }
    let want: Vec<String> = (0..n).map(|i| format!("e{i:05}")).collect();
    assert_eq!(seen, want);
    wait_depth(&spool, "a", 0).await;
    assert_eq!(spool.stored_bytes(), 0);
}

#[tokio::test]
async fn a_second_process_cannot_open_the_same_spool() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open(&dir);
    let second = EmbeddedSpool::open(dir.path()).expect_err("the spool is in use");
    let message = format!("{second}: {:?}", std::error::Error::source(&second));
    assert!(message.contains("lock"), "{message}");
    assert!(message.contains("another process"), "{message}");
    drop(spool);
    EmbeddedSpool::open(dir.path()).expect("free again once closed");
}

/// One delivery that stays queued while traffic goes by would keep every later segment on
/// disk (their acks retire deliveries around it); it is moved into the database instead.
#[tokio::test]
async fn a_delivery_left_behind_does_not_hold_the_journal_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let spool = small_segments(&dir);
    spool
        .put(vec![due(&event("stuck"), "parked")])
        .await
        .unwrap();
    for round in 0..10 {
        put_each(&spool, &format!("r{round}-"), 20, "a").await;
        for d in lease(&spool, "a", 20).await {
            spool.ack(&d).await.unwrap();
        }
        wait_depth(&spool, "a", 0).await;
    }
    let left = segments(&dir);
    assert!(left.len() <= 6, "spent segments were kept: {left:?}");
    assert_eq!(spool.depth("parked"), 1);
    drop(spool);

    let spool = small_segments(&dir);
    assert_eq!((spool.depth("parked"), spool.depth("a")), (1, 0));
    let d = lease(&spool, "parked", 10).await;
    assert_eq!(d.len(), 1, "stored once");
    assert_eq!(d[0].event.id, "stuck");
    spool.ack(&d[0]).await.unwrap();
    wait_depth(&spool, "parked", 0).await;
    drop(spool);
    assert_eq!(small_segments(&dir).depth("parked"), 0);
}

/// Deliveries of one event need not come together in a put: each event is still one record
/// for all of its deliveries.
#[tokio::test]
async fn a_put_with_interleaved_fan_out_is_stored_per_event() {
    let dir = tempfile::tempdir().unwrap();
    let (one, two) = (event("one"), event("two"));
    let bytes = {
        let spool = open(&dir);
        let put = vec![due(&one, "a"), due(&two, "a"), due(&one, "b")];
        spool.put(put).await.unwrap();
        spool.stored_bytes()
    };
    let single = {
        let dir = tempfile::tempdir().unwrap();
        let spool = open(&dir);
        spool.put(vec![due(&one, "a")]).await.unwrap();
        spool.stored_bytes()
    };
    assert!(
        bytes < 3 * single,
        "each event counted once: {bytes} vs {single} per event"
    );
    let spool = open(&dir);
    assert_eq!(spool.stored_bytes(), bytes, "the same after reopen");
    let ids = |ds: Vec<crate::spool::Delivery>| -> Vec<String> {
        ds.iter().map(|d| d.event.id.clone()).collect()
    };
    assert_eq!(ids(lease(&spool, "a", 10).await), ["one", "two"]);
    let b = lease(&spool, "b", 10).await;
    assert_eq!(ids(b.clone()), ["one"]);
    spool.ack(&b[0]).await.unwrap();
    wait_depth(&spool, "b", 0).await;
    assert_eq!(
        spool.stored_bytes(),
        bytes,
        "a's deliveries still hold both events"
    );
}

/// Deliveries that all went while space was plentiful leave the active segment on disk; once
/// space is short it is closed and deleted, though no later retirement comes for it (puts are
/// refused then, and its deliveries are gone): otherwise its file would keep the disk full.
#[test]
fn a_drained_active_segment_goes_once_space_is_short() {
    use crate::spool::journal::{Journal, SEGMENT_BYTES};
    use crate::spool::record::EncodedEvent;

    let dir = tempfile::tempdir().unwrap();
    let journal_dir = dir.path().join("journal");
    let (mut journal, _) = Journal::open(
        &journal_dir,
        &std::collections::HashSet::new(),
        SEGMENT_BYTES,
        |_| {},
    )
    .unwrap();
    let ev = event("e1");
    let encoded = EncodedEvent::encode(&ev);
    let new = due(&ev, "a");
    let stored = journal.put(&encoded, &[(1, &new)]).unwrap();
    journal.commit().unwrap();
    let segment = stored.first().expect("one delivery").1.segment;
    let file = segments(&dir).pop().expect("the active segment");

    assert_eq!(journal.release(segment), Vec::<u32>::new());
    assert!(
        file.exists(),
        "the active segment stays while space is plentiful"
    );
    assert_eq!(journal.short_of_space(false), Vec::<u32>::new());
    assert!(file.exists());
    assert_eq!(journal.short_of_space(true), vec![segment]);
    assert!(
        !file.exists(),
        "the drained segment is deleted once space is short"
    );
    assert_eq!(segments(&dir).len(), 1, "a new, empty active segment");
    assert_eq!(
        journal.short_of_space(true),
        Vec::<u32>::new(),
        "an empty active segment is not closed"
    );
}
