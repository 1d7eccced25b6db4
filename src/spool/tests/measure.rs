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
