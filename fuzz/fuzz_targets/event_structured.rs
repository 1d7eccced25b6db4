//! Structured mode: one CloudEvent as a JSON object.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard::event::http::decode_structured;
use switchyard_fuzz::check_round_trips;

fuzz_target!(|data: &[u8]| {
    if let Ok(event) = decode_structured(data) {
        check_round_trips(&event);
    }
});
