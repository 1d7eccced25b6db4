//! What the embedded backend adds to the dead-letter store, duplicate suppression and
//! `max_bytes`: they survive reopen, an older file is migrated, and the file stops growing
//! under steady load.

use std::fs;
use std::time::Duration;

use bytes::Bytes;
use rusqlite::Connection;

use super::{dead_info, due, event, lease, open, wait_depth};
use crate::spool::{DeadLetterQuery, EmbeddedSpool, Priority, Spool};

/// The schema switchyard 0.1 wrote (version 1), frozen here to test the migration.
const SCHEMA_V1: &str = "
PRAGMA journal_mode = WAL;
BEGIN;
CREATE TABLE events (id INTEGER PRIMARY KEY, pending INTEGER NOT NULL, record BLOB NOT NULL,
    data BLOB);
CREATE TABLE deliveries (id INTEGER PRIMARY KEY, event INTEGER NOT NULL REFERENCES events (id),
    route TEXT NOT NULL, sink TEXT NOT NULL, attempts INTEGER NOT NULL,
    accepted_at INTEGER NOT NULL, not_before INTEGER NOT NULL, last_outcome TEXT,
    last_status INTEGER, last_attempt_at INTEGER);
CREATE INDEX deliveries_lease ON deliveries (sink, not_before);
INSERT INTO events VALUES (1, 1, CAST('{\"v\":\"1\",\"specversion\":\"1.0\",\"id\":\"old-1\",\"source\":\"/old\",\"ty\":\"Old.Created\"}' AS BLOB), CAST('hello' AS BLOB));
INSERT INTO deliveries VALUES (7, 1, 'orders', 'a', 2, 1700000000000, 1700000000000, 'Busy', 503, 1700000000000);
PRAGMA user_version = 1;
COMMIT;
";

fn user_version(path: &std::path::Path) -> i64 {
    let conn = Connection::open(path).unwrap();
    conn.query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap()
}

#[tokio::test]
async fn a_version_1_file_is_migrated_and_keeps_its_deliveries() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spool.db");
    Connection::open(&path)
        .unwrap()
        .execute_batch(SCHEMA_V1)
        .unwrap();

    let spool = open(&dir);
    assert_eq!(user_version(&path), 5);
    let framing = crate::spool::record::FRAMING;
    assert_eq!(
        spool.stored_bytes(),
        77 + 5 + framing,
        "seeded from the file"
    );
    let d = lease(&spool, "a", 1).await.remove(0);
    assert_eq!((d.id, d.attempts, d.event.id.as_str()), (7, 2, "old-1"));
    assert_eq!(
        (d.priority, d.ordering_key.as_deref()),
        (Priority::Normal, None)
    );
    assert_eq!(d.event.data.as_deref(), Some(&b"hello"[..]));
    spool.dead_letter(&d, dead_info("R"), None).await.unwrap();
    wait_depth(&spool, "a", 0).await;
    let records = spool.dead_letters(&DeadLetterQuery::default()).await;
    assert_eq!(records.unwrap()[0].event.id, "old-1");
}

#[tokio::test]
async fn dead_letters_and_sightings_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let window = Duration::from_secs(600);
    {
        let spool = open(&dir);
        spool.put(vec![due(&event("e1"), "a")]).await.unwrap();
        let d = lease(&spool, "a", 1).await.remove(0);
        spool.dead_letter(&d, dead_info("R"), None).await.unwrap();
        let seen = spool.put_unique(vec![due(&event("u1"), "a")], window);
        assert_eq!(seen.await.unwrap(), 0);
    }
    let spool = open(&dir);
    let records = spool
        .dead_letters(&DeadLetterQuery::default())
        .await
        .unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(
        (records[0].info.reason.as_str(), records[0].info.attempts),
        ("R", 3)
    );
    let again = spool.put_unique(vec![due(&event("u1"), "a")], window);
    assert_eq!(again.await.unwrap(), 1, "the sighting outlived the restart");
    assert_eq!(spool.depth("a"), 1);
}

#[tokio::test]
async fn stored_bytes_follow_puts_acks_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open(&dir);
    assert_eq!(spool.stored_bytes(), 0);
    let ev = event("e1");
    spool.put(vec![due(&ev, "a"), due(&ev, "b")]).await.unwrap();
    let one = spool.stored_bytes();
    assert!(one > 13, "{one}");
    let d = lease(&spool, "a", 1).await.remove(0);
    spool.ack(&d).await.unwrap();
    wait_depth(&spool, "a", 0).await;
    assert_eq!(spool.stored_bytes(), one, "b still refers to the event");
    drop(spool);
    let spool = open(&dir);
    assert_eq!(spool.stored_bytes(), one);
    let d = lease(&spool, "b", 1).await.remove(0);
    spool.ack(&d).await.unwrap();
    wait_depth(&spool, "b", 0).await;
    assert_eq!(spool.stored_bytes(), 0);
}

/// Sizes of the database file and of its WAL.
fn file_bytes(dir: &tempfile::TempDir) -> (u64, u64) {
    let size = |name: &str| fs::metadata(dir.path().join(name)).map_or(0, |m| m.len());
    (size("spool.db"), size("spool.db-wal"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_file_stops_growing_under_steady_put_and_ack() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open(&dir);
    let auto_vacuum: i64 = Connection::open(spool.path())
        .unwrap()
        .query_row("PRAGMA auto_vacuum", [], |r| r.get(0))
        .unwrap();
    assert_eq!(auto_vacuum, 2, "new files use incremental auto-vacuum");
    let mut sizes = Vec::new();
    for round in 0..16 {
        let batch = (0..500)
            .map(|i| {
                let mut ev = (*event(&format!("r{round}-{i}"))).clone();
                ev.data = Some(Bytes::from(vec![b'x'; 4096]));
                due(&std::sync::Arc::new(ev), "a")
            })
            .collect();
        spool.put(batch).await.unwrap();
        let mut left = 500;
        while left > 0 {
            for d in lease(&spool, "a", 100).await {
                spool.ack(&d).await.unwrap();
                left -= 1;
            }
        }
        wait_depth(&spool, "a", 0).await;
        sizes.push(file_bytes(&dir));
    }
    // Freed pages are reused: the database file keeps its early size. The WAL settles at the
    // high-water mark of one checkpoint interval; allow it a little drift.
    let early = sizes[..4].iter().map(|s| s.0).max().unwrap_or(0);
    let late = sizes[8..].iter().map(|s| s.0).max().unwrap_or(0);
    assert!(late <= early, "the database file kept growing: {sizes:?}");
    let early = sizes[..4].iter().map(|s| s.0 + s.1).max().unwrap_or(0);
    let late = sizes[8..].iter().map(|s| s.0 + s.1).max().unwrap_or(0);
    assert!(
        late <= early + early / 10,
        "the files kept growing: {sizes:?}"
    );
    assert_eq!(spool.stored_bytes(), 0);
}

/// 64 senders keep the writer committing back to back while 25 MiB go through the WAL; the
/// checkpointer must still get the WAL started over, or it would grow to the writer's own
/// checkpoint limit (64 MiB) and stay there. (Puts with duplicate suppression are stored in
/// the database, not the journal.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wal_starts_over_while_the_writer_is_busy() {
    let dir = tempfile::tempdir().unwrap();
    let spool = std::sync::Arc::new(open(&dir));
    let senders = (0..64).map(|sender| {
        let spool = spool.clone();
        tokio::spawn(async move {
            for i in 0..100 {
                let mut ev = (*event(&format!("s{sender}-{i}"))).clone();
                ev.data = Some(Bytes::from(vec![b'x'; 4096]));
                let put = vec![due(&std::sync::Arc::new(ev), "a")];
                let window = Duration::from_secs(600);
                assert_eq!(spool.put_unique(put, window).await.unwrap(), 0);
            }
        })
    });
    for sender in senders.collect::<Vec<_>>() {
        sender.await.unwrap();
    }
    wait_depth(&*spool, "a", 6400).await;
    let (db, wal) = file_bytes(&dir);
    assert!(
        db > 25 << 20,
        "the events reached the database file: {db} bytes"
    );
    assert!(
        wal < 16 << 20,
        "the WAL was never started over: {wal} bytes"
    );
    assert_eq!(
        spool.forced_checkpoints(),
        0,
        "the writer had to checkpoint itself"
    );
}

#[tokio::test]
async fn a_full_spool_refuses_without_writing() {
    let dir = tempfile::tempdir().unwrap();
    let spool = EmbeddedSpool::open_bounded(dir.path(), 1).unwrap();
    let before = spool.commits();
    let refused = spool.put(vec![due(&event("e1"), "a")]).await;
    assert!(refused.is_err());
    assert_eq!((spool.commits(), spool.depth("a")), (before, 0));
}
