//! The embedded spool's event record (an `events` row, a journal put): record text, then
//! after the first 0xFF byte the payload column.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard::fuzzing::{decode_spool_record, encode_spool_record};

fuzz_target!(|data: &[u8]| {
    let (record, payload) = match data.iter().position(|&b| b == 0xff) {
        Some(i) => (&data[..i], Some(&data[i + 1..])),
        None => (data, None),
    };
    let Ok(event) = decode_spool_record(record, payload) else {
        return;
    };
    let (record, payload) = encode_spool_record(&event);
    let back = decode_spool_record(&record, payload.as_deref()).expect("an encoded record decodes");
    assert_eq!(back, event);
});
