//! The check of an event's JSON `data` before it is embedded as is: it must accept exactly
//! what serde_json accepts as one raw value, and give the same text.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::value::RawValue;
use switchyard::fuzzing::json_value_text;

fuzz_target!(|data: &[u8]| {
    let expected = serde_json::from_slice::<&RawValue>(data)
        .ok()
        .map(|raw| raw.get().as_bytes());
    assert_eq!(json_value_text(data), expected);
});
