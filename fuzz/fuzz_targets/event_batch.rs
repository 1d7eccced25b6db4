//! Batched mode: a JSON array of CloudEvents, with the ingress limits.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard::event::http::{decode_batch, encode_batch};
use switchyard::event::DecodeErrorKind;
use switchyard_fuzz::{check_round_trips, json_view};

const MAX_EVENT_BYTES: usize = 4096;
const MAX_EVENTS: usize = 16;

fuzz_target!(|data: &[u8]| {
    match decode_batch(data, MAX_EVENT_BYTES, MAX_EVENTS) {
        Ok(events) => {
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
