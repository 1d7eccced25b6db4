//! A full disk is a state the daemon leaves by itself: with the spool on a small file system
//! behind a failing sink, ingress fills it until it answers 503; the journal's file count
//! stays bounded while it does; once the sink recovers every acknowledged event is delivered
//! and ingress accepts again.
//!
//! It mounts a tmpfs: as root directly; otherwise the test runs itself again inside a user
//! and mount namespace of its own (`unshare --user --map-root-user --mount`), where it may.
//! Where neither works the test fails, saying so.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use tokio::time::Instant;

use bytes::Bytes;

use crate::support::client::{request, try_post};
use crate::support::process::{free_port, Daemon};
use crate::support::{Respond, TestSink};

/// A tmpfs mounted on a temporary directory, unmounted when dropped (a panic included).
pub(crate) struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (`8m`); fails the test when that is not possible.
    pub(crate) fn mount(size: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output();
        match mounted {
            Ok(out) if out.status.success() => Self { dir },
            Ok(out) => panic!(
                "cannot mount a {size} tmpfs on {} — this test needs root to fill a small file system: {}",
                dir.path().display(),
                String::from_utf8_lossy(&out.stderr).trim()
            ),
            Err(e) => panic!("cannot run mount (this test needs root and mount(8)): {e}"),
        }
    }

    pub(crate) fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        match Command::new("umount").arg(self.dir.path()).status() {
            Ok(status) if status.success() => {}
            _ => {
                // Busy (a child still holds a file): detach it so it goes once released.
                if let Err(e) = Command::new("umount")
                    .arg("-l")
                    .arg(self.dir.path())
                    .status()
                {
                    eprintln!("cannot unmount {}: {e}", self.dir.path().display());
                }
            }
        }
    }
}

/// Every file under `dir` with its size, and the free space (`df`), for failure messages.
fn listing(dir: &Path) -> String {
    let mut out = String::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let len = entry.metadata().map_or(0, |m| m.len());
                out.push_str(&format!("{} {len}; ", path.display()));
            }
        }
    }
    if let Ok(df) = Command::new("df").arg("-B1").arg(dir).output() {
        out.push_str(&String::from_utf8_lossy(&df.stdout));
    }
    out
}

/// Files the process `pid` holds open although they were deleted (their blocks stay in use).
fn held_deleted(pid: u32) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .map(|target| target.display().to_string())
        .filter(|target| target.ends_with(" (deleted)"))
        .collect()
}

/// Writes zeros to `path` until the file system refuses more.
fn fill(path: &Path) -> PathBuf {
    use std::io::Write;
    let mut file = std::fs::File::create(path).expect("create filler");
    for chunk in [64 << 10, 4 << 10, 512] {
        let zeros = vec![0u8; chunk];
        while file.write_all(&zeros).is_ok() {}
    }
    path.to_owned()
}

fn journal_files(spool: &Path) -> usize {
    std::fs::read_dir(spool.join("journal")).map_or(0, |d| d.count())
}

/// The daemon's configuration: ingress on `port`, the admin API on `admin` (0: any port),
/// `spool_keys` added to the spool's.
fn config(
    dir: &Path,
    spool: &Path,
    (port, admin): (u16, u16),
    sink: &TestSink,
    spool_keys: &str,
) -> PathBuf {
    let path = dir.join("routes.yaml");
    let yaml = format!(
        r#"
listen: 127.0.0.1:{port}
admin_listen: 127.0.0.1:{admin}
spool: {{ backend: embedded, path: "{}"{spool_keys} }}
sinks:
  hook:
    http: {{ url: "{}", timeout: 2s }}
    concurrency: 16
    retry: {{ schedule: [2s], max_attempts: 100, event_ttl: 1h }}
routes: [{{ name: all, to: [hook] }}]
"#,
        spool.display(),
        sink.url()
    );
    std::fs::write(&path, yaml).expect("write config");
    path
}

/// A batch of `n` events with ids `{prefix}-{i}`, each with about 3 KB of data.
fn batch(prefix: &str, n: usize) -> (Vec<String>, Bytes) {
    let pad = "x".repeat(3000);
    let ids: Vec<String> = (0..n).map(|i| format!("{prefix}-{i}")).collect();
    let events: Vec<serde_json::Value> = ids
        .iter()
        .map(|id| {
            serde_json::json!({
                "specversion": "1.0", "id": id, "source": "/disk", "type": "T",
                "data": {"pad": pad}
            })
        })
        .collect();
    (
        ids,
        Bytes::from(serde_json::Value::Array(events).to_string()),
    )
}

const BATCH: [(&str, &str); 1] = [("content-type", "application/cloudevents-batch+json")];

/// How long every acknowledged event may take to arrive once the sink recovers.
const DRAIN_PATIENCE: Duration = Duration::from_secs(60);

/// Set in the copy of this test that runs inside its own namespaces.
const IN_NAMESPACE: &str = "SWITCHYARD_TEST_IN_NAMESPACE";

/// Runs the test named `name` again inside a user and mount namespace where this process is
/// root (no privilege needed), and fails with its output unless it passes there.
fn rerun_in_namespace(name: &str) {
    let exe = std::env::current_exe().expect("the test binary");
    let out = Command::new("unshare")
        .args(["--user", "--map-root-user", "--mount"])
        .arg(exe)
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(IN_NAMESPACE, "1")
        .output()
        .unwrap_or_else(|e| panic!("cannot run unshare(1) to mount a tmpfs without root: {e}"));
    let output = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && output.contains("1 passed"),
        "{name} in its own user and mount namespace: {}\n{output}",
        out.status
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_puts_then_drains_and_accepts_again() {
    if !rustix::process::geteuid().is_root() && std::env::var_os(IN_NAMESPACE).is_none() {
        rerun_in_namespace("disk_full::a_full_disk_refuses_puts_then_drains_and_accepts_again");
        return;
    }
    let _heavy = crate::support::HEAVY.lock().await;
    // Dropped last but one: the daemon is killed before the file system is unmounted.
    let fs = Tmpfs::mount("8m");
    let dir = tempfile::tempdir().expect("temp dir");
    let spool = fs.path().join("spool");
    let sink = TestSink::start().await;
    sink.set_default(Respond::status(503));
    let port = free_port();
    let config = config(dir.path(), &spool, (port, 0), &sink, "");
    let url = format!("http://127.0.0.1:{port}/events");
    let daemon = Daemon::start(&config, port).await;

    // Fill until ingress refuses, then keep pushing for a while against the full disk.
    let started = Instant::now();
    let mut acked: HashSet<String> = HashSet::new();
    let mut first_refusal: Option<Instant> = None;
    let (mut refused, mut most_files) = (0usize, 0usize);
    for round in 0.. {
        if first_refusal.is_some_and(|at| at.elapsed() > Duration::from_secs(1))
            || started.elapsed() > Duration::from_secs(15)
        {
            break;
        }
        let (ids, body) = batch(&format!("b{round}"), 10);
        match try_post(&url, &BATCH, body).await {
            Some(status) if status.is_success() => acked.extend(ids),
            Some(status) if status.as_u16() == 503 => {
                refused += 1;
                first_refusal.get_or_insert_with(Instant::now);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            other => panic!("unexpected answer while filling: {other:?}"),
        }
        most_files = most_files.max(journal_files(&spool));
    }
    assert!(
        first_refusal.is_some(),
        "ingress never answered 503 on an 8 MiB file system ({} events accepted)",
        acked.len()
    );
    assert!(
        acked.len() >= 300,
        "too few events accepted to prove anything: {}",
        acked.len()
    );
    assert!(
        most_files <= 8,
        "the journal directory held {most_files} files while the disk was full"
    );

    // Another program takes every block left: the spool's own writes now fail, and it hands
    // its reserve back so that deliveries can still be acked.
    let filler = fill(&fs.path().join("filler"));
    let full_since = Instant::now();
    let reserve = || std::fs::metadata(spool.join("reserve")).map_or(0, |m| m.len());
    let mut refused_when_full = 0;
    for round in 0.. {
        // Until a retry's write fails and the reserve is handed back (or 8 s).
        let seconds = full_since.elapsed().as_secs_f64();
        if seconds > 8.0 || (seconds > 1.0 && reserve() == 0) {
            break;
        }
        // What still fits in blocks the spool's files already have is stored and answered.
        let (ids, body) = batch(&format!("full{round}"), 10);
        match try_post(&url, &BATCH, body).await {
            Some(status) if status.is_success() => acked.extend(ids),
            Some(status) if status.as_u16() == 503 => refused_when_full += 1,
            other => panic!("unexpected answer on a full disk: {other:?}"),
        }
        most_files = most_files.max(journal_files(&spool));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        refused_when_full > 0,
        "puts were not refused on a full disk"
    );
    // Whether a write failed meanwhile depends on what needed a new block: reported only.
    let handed_back = reserve() == 0;
    // The other program's file goes.
    std::fs::remove_file(&filler).expect("remove the filler");
    let filled = started.elapsed();
    // The sink recovers: every acknowledged event arrives.
    sink.set_default(Respond::status(200));
    let recovered = Instant::now();
    let delivered = || -> HashSet<String> {
        sink.received()
            .iter()
            .filter(|r| (200..=204).contains(&r.status))
            .filter_map(|r| r.header("ce-id").map(str::to_owned))
            .collect()
    };
    // Checked every 250 ms: reading what the sink received copies all of it.
    let mut missing = acked.len();
    // Alone this takes 2–4 s; the patience is for a machine busy with the rest of the suite.
    while recovered.elapsed() < DRAIN_PATIENCE {
        missing = acked.difference(&delivered()).count();
        if missing == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let arrived = delivered();
    let mut absent: Vec<&String> = acked.difference(&arrived).collect();
    absent.sort();
    absent.truncate(10);
    assert_eq!(
        missing,
        0,
        "acknowledged events not delivered {DRAIN_PATIENCE:?} after the sink recovered (of {}), such as {absent:?}; on the file system: {}; deleted files the daemon holds open: {:?}",
        acked.len(),
        listing(fs.path()),
        held_deleted(daemon.pid())
    );
    let drained = recovered.elapsed();
    // Ingress accepts again by itself.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (_, body) = batch("after", 5);
        let status = try_post(&url, &BATCH, body).await;
        if status.is_some_and(|s| s.is_success()) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "ingress still refuses after the spool drained: {status:?}; on the file system: {}; deleted files the daemon holds open: {:?}",
            listing(fs.path()),
            held_deleted(daemon.pid())
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(reserve() > 0, "the reserve is allocated again");
    let files = journal_files(&spool);
    eprintln!(
        "disk full: {} events acknowledged, {refused} requests refused, at most {most_files} journal files, {files} at the end; filled in {filled:?} (first 503 after {:?}), drained in {drained:?}, accepting again after {:?}",
        acked.len(),
        first_refusal.map(|at| at.duration_since(started)),
        recovered.elapsed()
    );
    eprintln!(
        "sink requests: {}; reserve handed back while the disk was full: {handed_back}",
        sink.received().len()
    );
    assert!(
        files <= 4,
        "journal directory holds {files} files at the end"
    );
    drop(daemon);
}

/// Bytes of the spool's journal segment files.
fn journal_bytes(spool: &Path) -> u64 {
    std::fs::read_dir(spool.join("journal"))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "log"))
        .map(|e| e.metadata().map_or(0, |m| m.len()))
        .sum()
}

/// The `switchyard_spool_bytes` gauge read from the admin API at `admin`.
async fn spool_bytes(admin: &str) -> Option<f64> {
    let reply = request(hyper::Method::GET, &format!("{admin}/metrics"), &[], "").await;
    String::from_utf8_lossy(&reply.body)
        .lines()
        .find_map(|l| l.strip_prefix("switchyard_spool_bytes "))
        .and_then(|v| v.trim().parse().ok())
}

/// Events delivered while space was plentiful leave their journal segment drained but still
/// the active one. When another program then fills the disk, puts are refused and no later
/// delivery comes for that segment: it must go all the same, or its blocks keep the disk full
/// and ingress refuses for good. Its blocks are then enough for ingress to accept again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_journal_segment_does_not_hold_a_full_disk() {
    if !rustix::process::geteuid().is_root() && std::env::var_os(IN_NAMESPACE).is_none() {
        rerun_in_namespace("disk_full::a_drained_journal_segment_does_not_hold_a_full_disk");
        return;
    }
    let _heavy = crate::support::HEAVY.lock().await;
    let fs = Tmpfs::mount("8m");
    let dir = tempfile::tempdir().expect("temp dir");
    let spool = fs.path().join("spool");
    let sink = TestSink::start().await;
    sink.set_default(Respond::status(200));
    let (port, admin) = (free_port(), free_port());
    // The delivery history, which writes beside the spool and gives way on a short disk, is off:
    // only the spool's own files take the space.
    let config = config(dir.path(), &spool, (port, admin), &sink, ", history_ttl: 0");
    let url = format!("http://127.0.0.1:{port}/events");
    let admin = format!("http://127.0.0.1:{admin}");
    let daemon = Daemon::start(&config, port).await;

    // About 1.9 MB of events, each delivered and acked while space is plentiful.
    let mut acked: HashSet<String> = HashSet::new();
    for round in 0..60 {
        let (ids, body) = batch(&format!("b{round}"), 10);
        let status = try_post(&url, &BATCH, body).await;
        assert!(
            status.is_some_and(|s| s.is_success()),
            "not accepted with space to spare: {status:?}"
        );
        acked.extend(ids);
    }
    let deadline = Instant::now() + DRAIN_PATIENCE;
    while spool_bytes(&admin).await != Some(0.0) {
        assert!(
            Instant::now() < deadline,
            "the spool still stores {:?} bytes after every event was delivered",
            spool_bytes(&admin).await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let drained = journal_bytes(&spool);
    assert!(
        drained > 1 << 20,
        "the drained segment stays on disk while space is plentiful: {drained} bytes"
    );

    // The spool trusts a reading of the free space for 100 ms while it admits puts (there is
    // nothing to wait for but the time). Past that, the put after the disk fills reads it
    // again and is refused; one admitted on the old reading would fail its write instead, and
    // the cleanup after that failure would close the segment, which is not what this test is
    // about.
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Another program takes every block left: puts are refused.
    let filler = fill(&fs.path().join("filler"));
    let (_, body) = batch("full", 10);
    let status = try_post(&url, &BATCH, body).await;
    assert!(
        status.is_some_and(|s| s.as_u16() == 503),
        "a put on a full disk: {status:?}"
    );
    // No later delivery comes for the drained segment; it goes all the same.
    let deadline = Instant::now() + Duration::from_secs(15);
    while journal_bytes(&spool) > drained / 2 {
        assert!(
            Instant::now() < deadline,
            "the drained journal segment stays while puts are refused: {} of {drained} bytes; on the file system: {}",
            journal_bytes(&spool),
            listing(fs.path())
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Its blocks let ingress accept again, the other program's file still there.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (ids, body) = batch("after", 5);
        let status = try_post(&url, &BATCH, body).await;
        if status.is_some_and(|s| s.is_success()) {
            acked.extend(ids);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "ingress still refuses with the drained segment gone: {status:?}; on the file system: {}",
            listing(fs.path())
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let deadline = Instant::now() + DRAIN_PATIENCE;
    loop {
        let arrived: HashSet<String> = sink
            .received()
            .iter()
            .filter_map(|r| r.header("ce-id").map(str::to_owned))
            .collect();
        if acked.is_subset(&arrived) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} acknowledged events not delivered",
            acked.difference(&arrived).count()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    std::fs::remove_file(&filler).expect("remove the filler");
    drop(daemon);
}
