//! A damaged journal stops the daemon with an error naming the file and offset;
//! `switchyard spool verify` reports it without changing a byte; `switchyard spool repair`
//! sets it aside and counts the lost delivery; the daemon then starts and delivers every
//! other acknowledged event.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use tokio::time::Instant;

use crate::support::process::{embedded_config, free_port, Daemon, BIN};
use crate::support::{post, wait_until, Respond, TestSink};

const EVENTS: usize = 30;

/// One sink, `hook`, that takes one event at a time.
fn spool_config(dir: &Path, port: u16, sink: &TestSink) -> PathBuf {
    let spool = dir.join("spool");
    embedded_config(dir, &spool, port, sink, "60s", &["concurrency: 1"])
}

/// The journal segment and offset of the record holding `"{id}"`.
fn record_of(journal: &Path, id: &str) -> (PathBuf, usize, usize) {
    let needle = format!("\"{id}\"");
    let mut files: Vec<PathBuf> = std::fs::read_dir(journal)
        .expect("journal")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    files.sort();
    for path in files {
        let bytes = std::fs::read(&path).expect("segment");
        let mut at = 0;
        while at + 8 <= bytes.len() {
            let len = u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes")) as usize;
            let record = &bytes[at..(at + 8 + len).min(bytes.len())];
            if record.windows(needle.len()).any(|w| w == needle.as_bytes()) {
                return (path, at, 8 + len);
            }
            at += 8 + len;
        }
    }
    panic!("no journal record holds {id}");
}

fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
            } else {
                files.insert(path.clone(), std::fs::read(&path).expect("read"));
            }
        }
    }
    files
}

fn switchyard(args: &[&str], config: &Path) -> Output {
    Command::new(BIN)
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .expect("run switchyard")
}

/// Runs `serve`, which must exit (not start) within 15 s; returns its exit code and stderr.
async fn serve_exits(config: &Path) -> (Option<i32>, String) {
    let mut child = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            let mut stderr = String::new();
            std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut stderr)
                .expect("read stderr");
            return (status.code(), stderr);
        }
        if Instant::now() > deadline {
            child.kill().expect("kill");
            child.wait().expect("reap");
            panic!("switchyard started on a damaged journal");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_journal_stops_start_up_until_repaired() {
    let dir = tempfile::tempdir().expect("temp dir");
    let spool = dir.path().join("spool");
    // The sink holds its first request, so every event stays queued in the journal.
    let held = TestSink::start().await;
    held.set_default(Respond::status(200).delay(Duration::from_secs(30)));
    let port = free_port();
    let first = spool_config(dir.path(), port, &held);
    let mut daemon = Daemon::start(&first, port).await;
    let pad = "p".repeat(200);
    for i in 0..EVENTS {
        let body = serde_json::json!({
            "specversion": "1.0", "id": format!("ev-{i}"), "source": "/repair", "type": "T",
            "data": {"pad": pad}
        });
        let reply = post(
            &format!("http://127.0.0.1:{port}/events"),
            &[("content-type", "application/cloudevents+json")],
            body.to_string(),
        )
        .await;
        assert_eq!(reply.status.as_u16(), 202, "{}", reply.text());
    }
    daemon.kill9();

    // One byte flipped a third of the way in: the record of ev-10.
    let (segment, offset, len) = record_of(&spool.join("journal"), "ev-10");
    let mut bytes = std::fs::read(&segment).expect("segment");
    assert!(
        offset + len < bytes.len(),
        "valid records follow the damaged one"
    );
    bytes[offset + len - 2] ^= 0x20;
    std::fs::write(&segment, bytes).expect("write segment");
    let named = format!("{} is damaged at byte offset {offset}", segment.display());

    let (code, stderr) = serve_exits(&first).await;
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains(&named), "{stderr}");

    let before = snapshot(&spool);
    let verify = switchyard(&["spool", "verify"], &first);
    let report = String::from_utf8_lossy(&verify.stdout);
    assert_eq!(verify.status.code(), Some(1), "{report}");
    assert!(
        report.contains(&segment.display().to_string())
            && report.contains(&format!("DAMAGED at byte offset {offset}"))
            && report.contains("deliveries lost: 1;"),
        "{report}"
    );
    assert_eq!(snapshot(&spool), before, "verify changed the spool");

    let repair = switchyard(&["spool", "repair"], &first);
    let report = String::from_utf8_lossy(&repair.stdout);
    assert_eq!(repair.status.code(), Some(0), "{report}");
    assert!(report.contains("repaired: deliveries lost: 1;"), "{report}");
    assert!(
        spool
            .join("quarantine")
            .read_dir()
            .expect("quarantine")
            .count()
            > 0
    );
    let verify = switchyard(&["spool", "verify"], &first);
    assert_eq!(
        verify.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&verify.stdout)
    );

    // Started again against a healthy sink: every other event arrives, ev-10 does not.
    let sink = TestSink::start().await;
    let second = spool_config(dir.path(), port, &sink);
    let daemon = Daemon::start(&second, port).await;
    let delivered = || -> HashSet<String> {
        sink.received()
            .iter()
            .filter_map(|r| r.header("ce-id").map(str::to_owned))
            .collect()
    };
    wait_until(
        "every kept event delivered",
        Duration::from_secs(20),
        || delivered().len() >= EVENTS - 1,
    )
    .await;
    let want: HashSet<String> = (0..EVENTS)
        .filter(|i| *i != 10)
        .map(|i| format!("ev-{i}"))
        .collect();
    assert_eq!(delivered(), want);
    drop(daemon);
}
