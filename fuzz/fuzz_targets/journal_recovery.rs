//! Journal recovery over segment files of arbitrary bytes (up to three segments, split at
//! `SEG|`), then a read of every delivery it found, as a lease does.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard::fuzzing::{recover_journal, JournalReadFault};

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().expect("temporary directory");
    let mut rest = data;
    for seq in 1..=3u32 {
        let (segment, tail) = match rest.windows(4).position(|w| w == b"SEG|") {
            Some(i) if seq < 3 => (&rest[..i], &rest[i + 4..]),
            _ => (rest, &rest[rest.len()..]),
        };
        std::fs::write(dir.path().join(format!("{seq:010}.log")), segment)
            .expect("segment written");
        rest = tail;
        if rest.is_empty() {
            break;
        }
    }
    // Damage may make recovery fail with an error, never panic.
    let Ok(recovery) = recover_journal(dir.path()) else {
        return;
    };
    for delivery in &recovery.deliveries {
        assert!(delivery.id <= recovery.max_id);
        match &delivery.read {
            Ok(read) => {
                assert_eq!(read.id, delivery.id);
                assert_eq!(&*read.sink, delivery.sink);
            }
            // A record that frames and checks may still hold a bad event.
            Err(JournalReadFault::Event(_)) => {}
            Err(JournalReadFault::Lost(e)) => {
                panic!("recovery found a delivery it cannot read: {e}")
            }
        }
    }
});
