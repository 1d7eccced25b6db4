//! What only the embedded backend promises: durability across reopen, atomic multi-row
//! steps, group commit, and refusal of damaged or newer files.

use std::collections::HashSet;
use std::fs;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rusqlite::Connection;

use super::{dead_info, due, event, lease, new_delivery, open, wait_depth};
use crate::spool::{EmbeddedSpool, OpenError, Spool, SpoolError};

fn count(dir: &tempfile::TempDir, table: &str) -> i64 {
    let conn = Connection::open(dir.path().join("spool.db")).unwrap();
    conn.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))
        .unwrap()
}

#[tokio::test]
async fn reopen_resumes_pending_and_leased_deliveries() {
    let dir = tempfile::tempdir().unwrap();
    let ev = event("e1");
    {
        let spool = open(&dir);
        spool.put(vec![due(&ev, "a"), due(&ev, "a")]).await.unwrap();
        let leased = lease(&spool, "a", 1).await;
        assert_eq!(
            leased.len(),
            1,
            "one delivery in flight when the spool goes away"
        );
    }
    let spool = open(&dir);
    assert_eq!(spool.depth("a"), 2);
    let resumed = lease(&spool, "a", 10).await;
    assert_eq!(resumed.len(), 2);
    assert!(resumed.iter().all(|d| *d.event == *ev && d.attempts == 0));
}

#[tokio::test]
async fn nack_keeps_attempts_and_not_before_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let not_before = SystemTime::now() + Duration::from_secs(3600);
    let attempted = SystemTime::now();
    {
        let spool = open(&dir);
        spool.put(vec![due(&event("e1"), "a")]).await.unwrap();
        let mut d = lease(&spool, "a", 1).await.remove(0);
        d.attempts = 3;
        d.last_outcome = Some("TimedOut".into());
        d.last_status = None;
        d.last_attempt_at = Some(attempted);
        spool.nack(d, not_before).await.unwrap();
    }
    let spool = open(&dir);
    let early = tokio::time::timeout(Duration::from_millis(50), spool.lease("a", 1)).await;
    assert!(early.is_err(), "the retry is not due for an hour");

    let conn = Connection::open(spool.path()).unwrap();
    let row: (i64, i64, Option<String>, Option<i64>) = conn
        .query_row(
            "SELECT attempts, not_before, last_outcome, last_attempt_at FROM deliveries",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .unwrap();
    let millis = |t: SystemTime| {
        t.duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_millis()
    };
    assert_eq!(row.0, 3);
    assert_eq!(row.1 as u128, millis(not_before));
    assert_eq!(row.2.as_deref(), Some("TimedOut"));
    assert_eq!(row.3.map(|t| t as u128), Some(millis(attempted)));
}

#[tokio::test]
async fn dead_letter_with_forward_is_one_step() {
    let dir = tempfile::tempdir().unwrap();
    {
        let spool = open(&dir);
        spool.put(vec![due(&event("e1"), "a")]).await.unwrap();
        let d = lease(&spool, "a", 1).await.remove(0);
        let before = spool.commits();
        spool
            .dead_letter(&d, dead_info("BadRequest"), Some(due(&d.event, "dead")))
            .await
            .unwrap();
        wait_depth(&spool, "dead", 1).await;
        assert_eq!(
            spool.commits(),
            before + 1,
            "removal and forward share one commit"
        );
    }
    let spool = open(&dir);
    assert_eq!((spool.depth("a"), spool.depth("dead")), (0, 1));
    assert_eq!(count(&dir, "events"), 1, "the forward reuses the event row");
    assert_eq!(count(&dir, "dead_letters"), 1);
    let forwarded = lease(&spool, "dead", 1).await.remove(0);
    assert_eq!(forwarded.event.id, "e1");
    spool.ack(&forwarded).await.unwrap();
    assert!(spool.purge_dead_letter(1).await.unwrap());
    drop(spool);
    assert_eq!((count(&dir, "deliveries"), count(&dir, "events")), (0, 0));
}

#[tokio::test]
async fn put_stores_all_deliveries_or_none() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open(&dir);
    // A trigger makes the third insert fail, as a full disk would.
    Connection::open(spool.path())
        .unwrap()
        .execute_batch(
            "CREATE TRIGGER poison BEFORE INSERT ON deliveries WHEN NEW.sink = 'poison'
             BEGIN SELECT RAISE(ABORT, 'refused'); END;",
        )
        .unwrap();
    let ev = event("e1");
    // Duplicate suppression keeps the put in the database, where the trigger is.
    let window = Duration::from_secs(60);
    let failed = spool
        .put_unique(
            vec![due(&ev, "a"), due(&ev, "b"), due(&ev, "poison")],
            window,
        )
        .await;
    assert!(matches!(failed, Err(SpoolError::Full { .. })), "{failed:?}");
    assert_eq!((spool.depth("a"), spool.depth("b")), (0, 0));
    assert_eq!((count(&dir, "deliveries"), count(&dir, "events")), (0, 0));

    let stored = spool
        .put_unique(vec![due(&ev, "a"), due(&ev, "b"), due(&ev, "c")], window)
        .await;
    assert_eq!(stored.unwrap(), 0, "the failed put left no sighting behind");
    drop(spool);
    let spool = open(&dir);
    let depths = ["a", "b", "c"].map(|s| spool.depth(s));
    assert_eq!(depths, [1, 1, 1]);
    assert_eq!(
        count(&dir, "events"),
        1,
        "one event row for its three deliveries"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_puts_share_commits() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Arc::new(open(&dir));
    let (tasks, per_task) = (64, 8);
    let mut handles = Vec::new();
    for t in 0..tasks {
        let spool = spool.clone();
        handles.push(tokio::spawn(async move {
            for i in 0..per_task {
                let ev = event(&format!("e{t}-{i}"));
                spool.put(vec![due(&ev, "a")]).await.unwrap();
            }
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
    let puts = tasks * per_task;
    assert_eq!(spool.depth("a"), puts);
    assert!(
        spool.commits() < puts as u64,
        "{} commits for {puts} puts",
        spool.commits()
    );
}

/// Leases `n` deliveries of `sink`, checking they come oldest first and never twice.
async fn drain(spool: &EmbeddedSpool, sink: &str, n: usize) {
    let mut seen = HashSet::new();
    let mut last = SystemTime::UNIX_EPOCH;
    while seen.len() < n {
        for d in lease(spool, sink, 100).await {
            assert!(d.not_before >= last, "oldest first");
            last = d.not_before;
            assert!(seen.insert(d.id), "leased twice: {}", d.id);
        }
    }
    let more = tokio::time::timeout(Duration::from_millis(50), spool.lease(sink, 1)).await;
    assert!(more.is_err(), "more than {n} deliveries leased");
}

#[tokio::test]
async fn backlog_larger_than_the_cache_leases_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let total = 1500;
    let start = SystemTime::now() - Duration::from_secs(3600);
    let batch = || {
        (0..total)
            .rev()
            .map(|i| {
                new_delivery(
                    &event(&format!("e{i}")),
                    "a",
                    start + Duration::from_millis(i),
                )
            })
            .collect::<Vec<_>>()
    };
    // Live puts overflow the cache; leases then read the rest from disk.
    let spool = open(&dir);
    spool.put(batch()).await.unwrap();
    drain(&spool, "a", total as usize).await;
    drop(spool);

    // After a restart everything is on disk only, and new puts land behind the horizon.
    let spool = open(&dir);
    spool.put(batch()).await.unwrap();
    assert_eq!(spool.depth("a"), 2 * total as usize);
    drain(&spool, "a", 2 * total as usize).await;
}

fn refused(dir: &tempfile::TempDir) -> String {
    let err = EmbeddedSpool::open(dir.path()).expect_err("a damaged file is refused");
    let path = dir.path().join("spool.db");
    let mut text = err.to_string();
    let mut source = std::error::Error::source(&err);
    while let Some(cause) = source {
        text = format!("{text}: {cause}");
        source = cause.source();
    }
    assert!(text.contains(&path.display().to_string()), "{text}");
    text
}

#[tokio::test]
async fn garbage_file_is_refused_with_its_name() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("spool.db"), vec![0x5a; 8192]).unwrap();
    let text = refused(&dir);
    assert!(text.contains("not a database"), "{text}");
}

#[tokio::test]
async fn truncated_file_is_refused_with_its_name() {
    let dir = tempfile::tempdir().unwrap();
    {
        let spool = open(&dir);
        let batch = (0..200)
            .map(|i| due(&event(&format!("e{i}")), "a"))
            .collect();
        spool.put(batch).await.unwrap();
    }
    let path = dir.path().join("spool.db");
    let len = fs::metadata(&path).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    refused(&dir);

    fs::write(&path, b"").unwrap();
    let text = refused(&dir);
    assert!(text.contains("empty"), "{text}");
}

#[tokio::test]
async fn newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(open(&dir));
    Connection::open(dir.path().join("spool.db"))
        .unwrap()
        .execute_batch("PRAGMA user_version = 99")
        .unwrap();
    let err = EmbeddedSpool::open(dir.path()).unwrap_err();
    assert!(
        matches!(err, OpenError::NewerSchema { found: 99, .. }),
        "{err}"
    );
}

#[tokio::test]
async fn close_commits_queued_work_then_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open(&dir);
    spool.put(vec![due(&event("e1"), "a")]).await.unwrap();
    let d = lease(&spool, "a", 1).await.remove(0);
    spool.ack(&d).await.unwrap();
    spool.close().await.unwrap();
    assert_eq!(spool.depth("a"), 0, "the queued ack was committed");
    assert!(matches!(spool.lease("a", 1).await, Err(SpoolError::Closed)));
    let late = spool.put(vec![due(&event("e2"), "a")]).await;
    assert!(matches!(late, Err(SpoolError::Closed)));
    drop(spool);
    assert_eq!(count(&dir, "deliveries"), 0);
}
