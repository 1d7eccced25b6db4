//! The configuration loader on arbitrary text: a configuration or an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard::fuzzing::load_config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(e) = load_config(text) {
        assert!(!e.to_string().is_empty());
    }
});
