//! A damaged journal is loud: a record that fails its check with valid records after it stops
//! start-up, naming the file and the offset; `verify` reports it without changing a byte;
//! `repair` sets it aside, keeps every other record, and counts what was lost.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use super::{due, event, lease, wait_depth};
use crate::spool::{self, EmbeddedSpool, OpenError, Spool, DEFAULT_MAX_BYTES};

fn open_small(dir: &Path) -> Result<EmbeddedSpool, OpenError> {
    EmbeddedSpool::open_with(dir, DEFAULT_MAX_BYTES, 2048)
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir.join("journal"))
        .expect("journal directory")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    files.sort();
    files
}

/// (offset, length) of every record of a segment, read by their frames.
fn records(path: &Path) -> Vec<(usize, usize)> {
    let bytes = fs::read(path).expect("segment");
    let mut found = Vec::new();
    let mut at = 0;
    while at + 8 <= bytes.len() {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize + 8;
        found.push((at, len));
        at += len;
    }
    found
}

/// The segment and record (offset, length) holding the event with this id.
fn record_of(dir: &Path, id: &str) -> (PathBuf, usize, usize) {
    let needle = format!("\"{id}\"");
    for path in segments(dir) {
        let bytes = fs::read(&path).unwrap();
        for (offset, len) in records(&path) {
            if bytes[offset..offset + len]
                .windows(needle.len())
                .any(|w| w == needle.as_bytes())
            {
                return (path, offset, len);
            }
        }
    }
    panic!("no record holds {id}");
}

/// Flips one byte near the end of the record of `id`; returns its segment and offset.
fn damage(dir: &Path, id: &str) -> (PathBuf, usize) {
    let (path, offset, len) = record_of(dir, id);
    let mut bytes = fs::read(&path).unwrap();
    bytes[offset + len - 2] ^= 0x40;
    fs::write(&path, bytes).unwrap();
    (path, offset)
}

/// Every file under `dir` with its bytes.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                files.insert(path.clone(), fs::read(&path).unwrap());
            }
        }
    }
    files
}

async fn put_each(spool: &EmbeddedSpool, n: usize) {
    for i in 0..n {
        spool
            .put(vec![due(&event(&format!("e{i}")), "a")])
            .await
            .unwrap();
    }
}

fn expect_damaged(result: Result<EmbeddedSpool, OpenError>, path: &Path, offset: usize) {
    let error = result.expect_err("a damaged journal is refused");
    let message = error.to_string();
    assert!(
        message.contains(&path.display().to_string())
            && message.contains(&format!("byte offset {offset}")),
        "{message}"
    );
    match error {
        OpenError::JournalDamaged {
            path: p, offset: o, ..
        } => assert_eq!((p.as_path(), o), (path, offset as u64)),
        other => panic!("{other}"),
    }
}

#[tokio::test]
async fn a_damaged_record_in_an_older_segment_stops_start_up() {
    let dir = tempfile::tempdir().unwrap();
    put_each(&open_small(dir.path()).unwrap(), 30).await;
    assert!(segments(dir.path()).len() >= 4);
    let (path, offset) = damage(dir.path(), "e10");
    assert_ne!(Some(&path), segments(dir.path()).last());
    expect_damaged(open_small(dir.path()), &path, offset);
}

#[tokio::test]
async fn a_damaged_record_before_valid_ones_in_the_newest_segment_stops_start_up() {
    let dir = tempfile::tempdir().unwrap();
    put_each(&EmbeddedSpool::open(dir.path()).unwrap(), 10).await;
    let (path, offset) = damage(dir.path(), "e3");
    assert_eq!(Some(&path), segments(dir.path()).last());
    expect_damaged(EmbeddedSpool::open(dir.path()), &path, offset);
}

#[tokio::test]
async fn a_damaged_last_record_is_a_torn_tail_and_start_up_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    put_each(&EmbeddedSpool::open(dir.path()).unwrap(), 5).await;
    damage(dir.path(), "e4");
    let spool = EmbeddedSpool::open(dir.path()).expect("a torn tail is cut off");
    assert_eq!(spool.depth("a"), 4);
    spool.put(vec![due(&event("e5"), "a")]).await.unwrap();
    drop(spool);
    let spool = EmbeddedSpool::open(dir.path()).expect("starts again after more writes");
    assert_eq!(spool.depth("a"), 5);
}

#[tokio::test]
async fn verify_changes_nothing_and_repair_keeps_every_valid_record() {
    let dir = tempfile::tempdir().unwrap();
    {
        let spool = open_small(dir.path()).unwrap();
        put_each(&spool, 30).await;
        // Acks of the first five, so that the journal holds gone records too.
        let first = lease(&spool, "a", 5).await;
        for d in &first {
            spool.ack(d).await.unwrap();
        }
        wait_depth(&spool, "a", 25).await;
    }
    // e2 was acked: its damaged record loses nothing; e12's loses its delivery.
    damage(dir.path(), "e2");
    damage(dir.path(), "e12");
    let before = snapshot(dir.path());

    let verification = spool::verify(dir.path()).expect("verify runs");
    let report = verification.to_string();
    assert!(verification.damaged(), "{report}");
    assert_eq!(
        (
            verification.lost_deliveries,
            verification.lost_acks,
            verification.uncounted
        ),
        (1, 0, 0),
        "{report}"
    );
    assert!(report.contains("DAMAGED at byte offset"), "{report}");
    assert_eq!(snapshot(dir.path()), before, "verify changed a file");

    let repair = spool::repair(dir.path()).expect("repair runs");
    assert_eq!(repair.before.lost_deliveries, 1, "{repair}");
    assert!(!repair.quarantined.is_empty());
    for q in &repair.quarantined {
        assert!(
            before.values().any(|b| *b == fs::read(q).unwrap()),
            "a copy of a segment as it was"
        );
    }
    assert!(!spool::verify(dir.path()).unwrap().damaged(), "repaired");

    let spool = open_small(dir.path()).expect("starts after repair");
    assert_eq!(spool.depth("a"), 24);
    let mut ids: Vec<String> = lease(&spool, "a", 30)
        .await
        .iter()
        .map(|d| d.event.id.clone())
        .collect();
    ids.sort();
    let mut want: Vec<String> = (5..30)
        .filter(|i| *i != 12)
        .map(|i| format!("e{i}"))
        .collect();
    want.sort();
    assert_eq!(ids, want);
}
