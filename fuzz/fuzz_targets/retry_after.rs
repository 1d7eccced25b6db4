//! `Retry-After` values from a busy HTTP sink: delta-seconds or an HTTP-date.
#![no_main]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use libfuzzer_sys::fuzz_target;
use switchyard::fuzzing::retry_after;

fuzz_target!(|data: &[u8]| {
    let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let Some(wait) = retry_after(data, now) else {
        return;
    };
    let text = std::str::from_utf8(data)
        .expect("a read value is text")
        .trim();
    if let Ok(secs) = text.parse::<u64>() {
        assert_eq!(wait, Duration::from_secs(secs));
    } else {
        // An HTTP-date: whole seconds, and no further than the format can reach.
        assert_eq!(wait.subsec_nanos(), 0);
        assert!(now + wait <= SystemTime::UNIX_EPOCH + Duration::from_secs(253_402_300_800));
    }
});
