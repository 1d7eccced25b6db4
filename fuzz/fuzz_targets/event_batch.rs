//! Batched mode: a JSON array of CloudEvents, with the ingress limits.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::value::RawValue;
use switchyard::event::http::{decode_batch, decode_structured, encode_batch};
use switchyard::event::{DecodeErrorKind, Event};
use switchyard_fuzz::{check_round_trips, json_view};

const MAX_EVENT_BYTES: usize = 4096;
const MAX_EVENTS: usize = 16;

fuzz_target!(|data: &[u8]| {
    match decode_batch(data, MAX_EVENT_BYTES, MAX_EVENTS) {
        Ok(events) => {
            same_as_element_by_element(data, &events);
            assert!(events.len() <= MAX_EVENTS);
            assert!(events
                .windows(2)
                .all(|w| w[0].specversion == w[1].specversion));
            let again = decode_batch(&encode_batch(&events), usize::MAX, usize::MAX)
                .expect("an encoded batch decodes");
            let expected: Vec<_> = events.iter().map(json_view).collect();
            assert_eq!(again, expected);
            for event in &events {
                check_round_trips(event);
            }
        }
        Err(e) => {
            refused_element_by_element(data, &e);
            if e.kind == DecodeErrorKind::TooLarge {
                // Over a limit takes a large element or many small ones (`[0,0,…]`).
                assert!(
                    data.len() > MAX_EVENT_BYTES || data.len() > 2 * MAX_EVENTS,
                    "{e}"
                );
            }
        }
    }
});

/// A batch read in one pass holds what reading its elements one by one gives. (A batch
/// nested right at serde_json's depth limit is read in one pass and refused by the
/// element-by-element reading, which counts the array's own level.)
fn same_as_element_by_element(data: &[u8], events: &[Event]) {
    let elements: Vec<&RawValue> = match serde_json::from_slice(data) {
        Ok(elements) => elements,
        Err(e) if e.to_string().contains("recursion limit") => return,
        Err(e) => panic!("an accepted batch is not a JSON array: {e}"),
    };
    assert_eq!(elements.len(), events.len());
    for (raw, event) in elements.iter().zip(events) {
        assert!(raw.get().len() <= MAX_EVENT_BYTES);
        let alone = decode_structured(raw.get().as_bytes()).expect("each element decodes alone");
        assert_eq!(&alone, event);
    }
}

/// A refused batch is refused by reading its elements one by one too.
fn refused_element_by_element(data: &[u8], error: &impl std::fmt::Display) {
    let Ok(elements) = serde_json::from_slice::<Vec<&RawValue>>(data) else {
        return;
    };
    let fits = elements.len() <= MAX_EVENTS
        && elements.iter().all(|raw| raw.get().len() <= MAX_EVENT_BYTES);
    let decoded: Result<Vec<Event>, _> = elements
        .iter()
        .map(|raw| decode_structured(raw.get().as_bytes()))
        .collect();
    let one_version = decoded
        .as_ref()
        .is_ok_and(|events| events.windows(2).all(|w| w[0].specversion == w[1].specversion));
    assert!(
        !(fits && one_version),
        "refused ({error}) a batch whose elements each decode"
    );
}
