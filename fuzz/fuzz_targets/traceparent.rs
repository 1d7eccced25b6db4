//! W3C `traceparent` values, as a span field carries them in from an event.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard::fuzzing::parse_traceparent;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Some((trace, parent, sampled)) = parse_traceparent(text) else {
        return;
    };
    assert_eq!((trace.len(), parent.len()), (32, 16));
    assert!(
        text.contains(&trace) && text.contains(&parent),
        "ids come from the value"
    );
    let canonical = format!("00-{trace}-{parent}-0{}", u8::from(sampled));
    assert_eq!(
        parse_traceparent(&canonical),
        Some((trace, parent, sampled))
    );
});
