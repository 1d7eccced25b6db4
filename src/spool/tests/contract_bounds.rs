//! The bounds every backend keeps whatever the traffic: expired duplicate-suppression entries
//! and dead letters past their TTL are swept with the bytes they held, every event counts its
//! whole size, and a listing stops at its byte bound.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;

use super::{dead_info, due, event, lease, wait_depth};
use crate::event::{Event, ExtensionValue};
use crate::spool::{
    event_size, DeadLetterQuery, EmbeddedSpool, MemorySpool, NewDelivery, Spool, Swept,
};

/// Sightings stored by the sweep checks: tens of thousands of unique ids.
const SIGHTINGS: usize = 20_000;
/// Events per put while storing them.
const PER_PUT: usize = 1000;

/// The byte count `spool.max_bytes` bounds, whatever the backend.
pub(super) trait Stored: Spool {
    fn stored(&self) -> u64;
}

impl Stored for MemorySpool {
    fn stored(&self) -> u64 {
        self.stored_bytes()
    }
}

impl Stored for EmbeddedSpool {
    fn stored(&self) -> u64 {
        self.stored_bytes()
    }
}

fn unique(i: usize) -> NewDelivery {
    due(&event(&format!("unique-{i}")), "a")
}

/// Stores [`SIGHTINGS`] unique events within `window`.
async fn sightings(spool: &impl Stored, window: Duration) {
    for start in (0..SIGHTINGS).step_by(PER_PUT) {
        let puts = (start..start + PER_PUT).map(unique).collect();
        assert_eq!(spool.put_unique(puts, window).await.unwrap(), 0);
    }
    wait_depth(spool, "a", SIGHTINGS).await;
}

pub(super) async fn expired_sightings_are_swept_with_their_bytes(spool: &impl Stored) {
    let window = Duration::from_secs(600);
    sightings(spool, window).await;
    assert_eq!(spool.dedup_entries(), SIGHTINGS as u64);
    let with_table = spool.stored();

    let now = SystemTime::now();
    assert_eq!(
        spool.sweep(now).await.unwrap(),
        Swept::default(),
        "none expired yet"
    );
    assert_eq!(spool.dedup_entries(), SIGHTINGS as u64);

    let swept = spool
        .sweep(now + window + Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(swept.sightings, SIGHTINGS as u64);
    assert_eq!(spool.dedup_entries(), 0, "the table shrinks back");
    let table = with_table - spool.stored();
    let per_entry = "/tests".len() + "unique-10000".len();
    assert!(
        table >= (SIGHTINGS * per_entry) as u64,
        "the table counted in max_bytes, and its bytes are freed: {table} for {SIGHTINGS} entries"
    );
    assert_eq!(spool.depth("a"), SIGHTINGS, "deliveries are not touched");
}

pub(super) async fn a_swept_sighting_no_longer_suppresses(spool: &impl Stored) {
    let window = Duration::from_millis(200);
    let put = || spool.put_unique(vec![due(&event("again"), "a")], window);
    assert_eq!(put().await.unwrap(), 0);
    assert_eq!(put().await.unwrap(), 1, "a repeat within the window");
    tokio::time::sleep(window + Duration::from_millis(50)).await;
    let swept = spool.sweep(SystemTime::now()).await.unwrap();
    assert_eq!(swept.sightings, 1);
    assert_eq!(spool.dedup_entries(), 0);
    assert_eq!(
        put().await.unwrap(),
        0,
        "stored again once its window ended"
    );
    assert_eq!(spool.depth("a"), 2);
}

/// `spool` keeps dead letters for one hour.
pub(super) async fn dead_letters_expire_after_the_ttl(spool: &impl Stored) {
    for id in ["old-1", "old-2"] {
        spool.put(vec![due(&event(id), "a")]).await.unwrap();
        let d = lease(spool, "a", 1).await.remove(0);
        spool
            .dead_letter(&d, dead_info("BadRequest"), None)
            .await
            .unwrap();
    }
    wait_depth(spool, "a", 0).await;
    assert!(spool.stored() > 0, "dead letters count in max_bytes");

    let now = SystemTime::now();
    assert_eq!(
        spool.sweep(now).await.unwrap().dead_letters,
        0,
        "within the TTL"
    );
    let listed = spool.dead_letters(&DeadLetterQuery::default()).await;
    assert_eq!(listed.unwrap().len(), 2);

    let later = now + Duration::from_secs(3601);
    assert_eq!(spool.sweep(later).await.unwrap().dead_letters, 2);
    let listed = spool.dead_letters(&DeadLetterQuery::default()).await;
    assert!(listed.unwrap().is_empty());
    assert_eq!(spool.stored(), 0, "their bytes are freed");
}

/// `spool` keeps dead letters until they are replayed or purged.
pub(super) async fn dead_letters_without_a_ttl_stay(spool: &impl Stored) {
    spool.put(vec![due(&event("kept"), "a")]).await.unwrap();
    let d = lease(spool, "a", 1).await.remove(0);
    spool
        .dead_letter(&d, dead_info("BadRequest"), None)
        .await
        .unwrap();
    wait_depth(spool, "a", 0).await;
    let years = SystemTime::now() + Duration::from_secs(10 * 365 * 24 * 3600);
    assert_eq!(spool.sweep(years).await.unwrap().dead_letters, 0);
    let listed = spool.dead_letters(&DeadLetterQuery::default()).await;
    assert_eq!(listed.unwrap().len(), 1);
}

fn with_large_extension() -> Arc<Event> {
    let mut ev = (*event("ext")).clone();
    ev.data = None;
    ev.extensions
        .push(("big".into(), ExtensionValue::String("e".repeat(16 * 1024))));
    ev.subject = Some("s".repeat(8 * 1024));
    Arc::new(ev)
}

pub(super) async fn an_event_counts_its_attributes_and_extensions(spool: &impl Stored) {
    let ev = with_large_extension();
    spool.put(vec![due(&ev, "a")]).await.unwrap();
    wait_depth(spool, "a", 1).await;
    assert!(
        spool.stored() >= 24 * 1024,
        "an event without data counts its attributes and extensions: {} bytes",
        spool.stored()
    );
    assert!(event_size(&ev) >= 24 * 1024);
}

pub(super) async fn a_listing_stops_at_its_byte_bound(spool: &impl Spool) {
    for i in 0..3 {
        let mut ev = (*event(&format!("big-{i}"))).clone();
        ev.data = Some(Bytes::from(vec![b'x'; 4096]));
        spool.put(vec![due(&Arc::new(ev), "a")]).await.unwrap();
        let d = lease(spool, "a", 1).await.remove(0);
        spool
            .dead_letter(&d, dead_info("BadRequest"), None)
            .await
            .unwrap();
    }
    wait_depth(spool, "a", 0).await;
    let all = spool
        .dead_letters(&DeadLetterQuery::default())
        .await
        .unwrap();
    assert_eq!(all.len(), 3);
    let one = event_size(&all[0].event);
    let page = |max_bytes| DeadLetterQuery {
        max_bytes,
        ..DeadLetterQuery::default()
    };
    let ids = |records: Vec<crate::spool::DeadLetterRecord>| -> Vec<u64> {
        records.iter().map(|r| r.id).collect()
    };
    let first = spool.dead_letters(&page(1)).await.unwrap();
    assert_eq!(ids(first), [all[0].id], "at least one record");
    let two = spool.dead_letters(&page(one + 1)).await.unwrap();
    assert_eq!(ids(two), [all[0].id, all[1].id]);
    let exact = spool.dead_letters(&page(2 * one)).await.unwrap();
    assert_eq!(
        exact.len(),
        2,
        "the record that reaches the bound is the last"
    );
}

/// Runs one bounds check against a memory spool and an embedded spool, both keeping dead
/// letters for one hour.
macro_rules! bounds_test {
    ($name:ident) => {
        bounds_test!($name, Some(Duration::from_secs(3600)));
    };
    ($name:ident, $ttl:expr) => {
        mod $name {
            use std::time::Duration;

            #[tokio::test]
            async fn memory() {
                let spool = crate::spool::MemorySpool::new().dead_letter_ttl($ttl);
                super::$name(&spool).await;
            }

            #[tokio::test]
            async fn embedded() {
                let dir = tempfile::tempdir().expect("temp dir");
                let spool = crate::spool::EmbeddedSpool::open(dir.path())
                    .expect("spool opens")
                    .dead_letter_ttl($ttl);
                super::$name(&spool).await;
            }
        }
    };
}

bounds_test!(expired_sightings_are_swept_with_their_bytes);
bounds_test!(a_swept_sighting_no_longer_suppresses);
bounds_test!(dead_letters_expire_after_the_ttl);
bounds_test!(dead_letters_without_a_ttl_stay, None::<Duration>);
bounds_test!(an_event_counts_its_attributes_and_extensions);
bounds_test!(a_listing_stops_at_its_byte_bound);

#[tokio::test]
async fn sightings_and_their_bytes_are_read_back_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let spool = EmbeddedSpool::open(dir.path()).unwrap();
    sightings(&spool, Duration::from_secs(600)).await;
    let (entries, bytes) = (spool.dedup_entries(), spool.stored_bytes());
    drop(spool);
    let spool = EmbeddedSpool::open(dir.path()).unwrap();
    assert_eq!(
        (spool.dedup_entries(), spool.stored_bytes()),
        (entries, bytes)
    );
}
