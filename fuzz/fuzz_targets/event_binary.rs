//! Binary mode: `ce-` headers (quoted strings, percent-encoding) and the body.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard::event::http::decode_binary;
use switchyard_fuzz::{check_round_trips, request};

fuzz_target!(|data: &[u8]| {
    let (headers, body) = request(data);
    if let Ok(event) = decode_binary(&headers, body) {
        check_round_trips(&event);
    }
});
