//! Throughput and size of the embedded spool, for the record rather than as a check. Run in
//! release mode: `cargo test --release --lib spool::tests::measure -- --ignored --nocapture`.

use std::sync::Arc;

use bytes::Bytes;
use tokio::time::Instant;

use super::{due, event, open};
use crate::event::Event;
use crate::spool::{EmbeddedSpool, Spool};

fn kib_event(i: usize) -> Arc<Event> {
    let mut ev = (*event(&format!("measure-{i}"))).clone();
    ev.data = Some(Bytes::from(vec![b'x'; 1024]));
    Arc::new(ev)
}

async fn put_rate(spool: &Arc<EmbeddedSpool>, putters: usize, per_putter: usize) -> f64 {
    let started = Instant::now();
    let commits = spool.commits();
    let tasks: Vec<_> = (0..putters)
        .map(|p| {
            let spool = spool.clone();
            tokio::spawn(async move {
                for i in 0..per_putter {
                    let ev = kib_event(p * per_putter + i);
                    spool.put(vec![due(&ev, "m")]).await.unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let puts = putters * per_putter;
    let rate = puts as f64 / started.elapsed().as_secs_f64();
    let groups = spool.commits() - commits;
    println!("{putters:>3} putters: {rate:>8.0} deliveries/s, {puts} puts in {groups} commits");
    rate
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement, not a check; run in release mode"]
async fn measure_put_throughput_and_size() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Arc::new(open(&dir));
    put_rate(&spool, 1, 2000).await;
    put_rate(&spool, 64, 500).await;
    put_rate(&spool, 256, 200).await;
    let queued = spool.depth("m");
    drop(spool);
    let bytes = std::fs::metadata(dir.path().join("spool.db"))
        .unwrap()
        .len();
    println!(
        "{queued} queued 1 KiB events: {bytes} bytes on disk, {} bytes per event",
        bytes / queued as u64
    );
}

/// Stores `n` sightings within `window`, in puts of 1000 events.
async fn sightings(spool: &impl Spool, n: usize, window: std::time::Duration) {
    for start in (0..n).step_by(1000) {
        let puts = (start..start + 1000)
            .map(|i| due(&event(&format!("sighting-{i}")), "m"))
            .collect();
        spool.put_unique(puts, window).await.unwrap();
    }
}

/// Resident memory of this process, in KiB (Linux).
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement, not a check; run in release mode"]
async fn measure_sweep_of_100k_sightings() {
    const N: usize = 100_000;
    let window = std::time::Duration::from_secs(600);
    let later = std::time::SystemTime::now() + 2 * window;

    let memory = crate::spool::MemorySpool::new();
    let rss = rss_kib();
    sightings(&memory, N, window).await;
    let (entries, bytes, grown) = (
        memory.dedup_entries(),
        memory.stored_bytes(),
        rss_kib() - rss,
    );
    let started = Instant::now();
    let swept = memory.sweep(later).await.unwrap();
    println!(
        "memory: {entries} entries, {bytes} bytes counted, RSS +{grown} KiB; sweep of {} took {:?}; after: {} entries, {} bytes",
        swept.sightings,
        started.elapsed(),
        memory.dedup_entries(),
        memory.stored_bytes()
    );

    let dir = tempfile::tempdir().unwrap();
    let spool = open(&dir);
    sightings(&spool, N, window).await;
    let db = || std::fs::metadata(dir.path().join("spool.db")).map_or(0, |m| m.len());
    let (entries, bytes) = (spool.dedup_entries(), spool.stored_bytes());
    let cpu = cpu_time();
    let started = Instant::now();
    let swept = spool.sweep(later).await.unwrap();
    println!(
        "embedded: {entries} entries, {bytes} bytes counted; sweep of {} took {:?} ({:?} CPU of this process); after: {} entries, {} bytes",
        swept.sightings,
        started.elapsed(),
        cpu_time().saturating_sub(cpu),
        spool.dedup_entries(),
        spool.stored_bytes()
    );
    println!("embedded: spool.db {} bytes", db());
}

/// CPU time this process has used (user and system), from /proc (Linux; ticks of 10 ms).
fn cpu_time() -> std::time::Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|i| fields.get(*i)?.parse::<u64>().ok())
        .sum();
    std::time::Duration::from_millis(ticks * 10)
}
